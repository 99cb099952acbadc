"""The schedule step (compiler/schedule/kernels.py): lowerings emit algorithm-only
loop nests, loops that may run in parallel marked as candidates, and one pure
function chooses the parallel loops from the target's table. Results of the
scheduled code are test_ops.py's and test_threads.py's; these check the split."""
import ast
import os

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler import ir
from nutshell.compiler.codegen.model import build_model
from nutshell.compiler.lower.loop_ir import Buffer, For, NestBuilder, Kernel
from nutshell.compiler.lower.target import host_target
from nutshell.compiler.passes.pipeline import optimize_graph
from nutshell.compiler.schedule.kernels import schedule_kernel
from nutshell.compiler.schedule.loops import FAMILIES, splits, worth_parallel
from nutshell.compiler.schedule.tables import table_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loops(stmts):
    for s in stmts:
        if isinstance(s, For):
            yield s
            yield from _loops(s.body)


def _nest(work):
    nb, buf = NestBuilder(), Buffer("out0", ir.DType.float32, 64)
    with nb.loop(4, hint="a", parallel_candidate=("map", work)) as a:
        with nb.loop(4, hint="b"):
            with nb.loop(4, "vector", 4, hint="c") as c:
                nb.store(buf, a * 16 + c, 1.0)
    return Kernel("k", [buf], nb.body())


def test_the_step_makes_a_candidate_parallel_where_its_work_pays():
    target = host_target(2)
    least = table_for(target).parallel_min_work
    kinds = lambda k: [loop.kind for loop in _loops(k.body)]
    assert kinds(schedule_kernel(_nest(least), target)) == ["parallel", "serial", "vector"]
    assert kinds(schedule_kernel(_nest(least - 1), target)) == ["serial", "serial", "vector"]


def test_splits_answers_ahead_what_the_step_decides():
    """A lowering sizing per-thread scratch asks `splits`: it must agree with the step."""
    target = host_target(2)
    for work in (1, table_for(target).parallel_min_work - 1, table_for(target).parallel_min_work, 1 << 30):
        outer = next(_loops(schedule_kernel(_nest(work), target).body))
        assert splits(target, ("map", work)) == (outer.kind == "parallel")


def test_the_step_is_pure():
    kernel = _nest(1 << 30)
    scheduled = schedule_kernel(kernel, host_target(2))
    assert [loop.kind for loop in _loops(kernel.body)] == ["serial", "serial", "vector"]
    assert scheduled is not kernel and scheduled.params == kernel.params


def test_every_family_has_a_threshold_in_every_table():
    target = host_target(1)
    for family in FAMILIES:
        assert worth_parallel(target, 1 << 40, family)


def test_a_lowering_cannot_make_a_loop_parallel_itself():
    with pytest.raises(ValueError, match="schedule step"):
        with NestBuilder().loop(8, "parallel"):
            pass


def _sources(*folders):
    for folder in folders:
        for here, _, files in os.walk(os.path.join(ROOT, "compiler", folder)):
            for f in files:
                if f.endswith(".py"):
                    yield os.path.relpath(os.path.join(here, f), ROOT), ast.parse(open(os.path.join(here, f)).read())


def test_the_schedule_step_is_the_only_place_loops_become_parallel():
    """No lowering names the 'parallel' kind or asks loop_kind / worth_parallel (one
    that sizes per-thread scratch asks `splits`, the step's own rule), and only the
    schedule step assigns a loop's kind (codegen and the CUDA grid mapping read it)."""
    bad = []
    for path, tree in _sources("ops", "lower", "cuda", "passes", "codegen", "schedule"):
        lowering = not path.startswith(("compiler/codegen", "compiler/schedule")) and \
            not path.endswith(("cuda/grid.py", "cuda/warp.py", "lower/loop_ir.py"))
        for node in ast.walk(tree):
            if lowering and isinstance(node, ast.Constant) and node.value == "parallel":
                bad.append(f"{path}:{node.lineno} names the 'parallel' kind")
            if isinstance(node, ast.Name) and node.id in ("loop_kind", "worth_parallel") and "schedule" not in path:
                bad.append(f"{path}:{node.lineno} asks {node.id}")
            if isinstance(node, ast.alias) and node.name in ("loop_kind", "worth_parallel") and "schedule" not in path:
                bad.append(f"{path} imports {node.name}")
            if isinstance(node, ast.Attribute) and node.attr == "kind" and isinstance(node.ctx, ast.Store):
                bad.append(f"{path}:{node.lineno} assigns a loop kind")
    assert not bad, "\n".join(bad)


def _reduce_model(rows, threads):
    b = ir.GraphBuilder("r", fold=False)
    x = b.add_input("x", "float32", (rows, 256))
    b.set_outputs([b.add_node("ReduceSum", [x], {"axes": (1,), "keepdims": 0})])
    target = host_target(threads)
    return build_model(optimize_graph(b.build(), target=target), target)


@pytest.mark.parametrize("rows, kind", [(512, "parallel"), (8, "serial")])
def test_compiled_kernels_are_the_scheduled_ones(rows, kind):
    code = _reduce_model(rows, 2)
    outer = [next(_loops(k.body)) for k in code.kernels]
    assert [loop.kind for loop in outer] == [kind] and outer[0].parallel_candidate[0] == "map"


def test_scheduled_reduction_matches_numpy(rng):
    x = rng.standard_normal((512, 256)).astype(np.float32)
    b = ir.GraphBuilder("r", fold=False)
    xi = b.add_input("x", "float32", x.shape)
    y = b.add_node("ReduceSum", [xi], {"axes": (1,), "keepdims": 0})
    b.set_outputs([y])
    got = ns.compile(b.build(), threads=2).run({"x": x})[y]
    np.testing.assert_allclose(got, x.sum(axis=1), rtol=1e-4, atol=1e-3)


EVERY_LOOP = dict(parallel_min_work=1, depthwise_parallel_min_work=1, winograd_parallel_min_tiles=1,
                  col2im_parallel_min_work=1, gemm_parallel_min_macs=1)


def _every_candidate_parallel(monkeypatch, target):
    """Patch the target's table so the step makes every candidate loop parallel."""
    from dataclasses import replace
    from nutshell.compiler.schedule import tables
    table = table_for(target)
    name = next(k for k, v in vars(tables).items() if v is table)
    monkeypatch.setattr(tables, name, replace(table, **EVERY_LOOP))


def _net(m):
    ns.nn.manual_seed(0)
    return m.Sequential(m.Conv2d(3, 16, 3, padding=1), m.ReLU(), m.Conv2d(16, 16, 3, padding=1), m.ReLU(),
                        m.Conv2d(16, 16, 3, stride=2, padding=1), m.MaxPool2d(2), m.Conv2d(16, 16, 3, padding=1,
                                                                                           groups=16),
                        m.Conv2d(16, 32, 1), m.ReLU(), m.AvgPool2d(2), m.Flatten(), m.Linear(32 * 2 * 2, 10))


def test_every_candidate_made_parallel_still_matches_the_reference(rng, monkeypatch):
    """A candidate mark promises independent iterations: with every candidate parallel
    (thresholds 1) an inference net (Winograd, depthwise, pools, GEMMs, reductions)
    still matches the reference at 2 threads."""
    net = _net(ns.nn)
    net.eval()
    graph = ns.to_graph(net, (2, 3, 16, 16))
    parallel = lambda model: sum(loop.kind == "parallel" for k in model.code.kernels for loop in _loops(k.body))
    default = parallel(ns.compile(graph, threads=2))
    _every_candidate_parallel(monkeypatch, host_target(2))
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    model = ns.compile(graph, threads=2)
    assert parallel(model) > default and "WinogradConv" in {n.op for n in model.graph.nodes}
    got = model.run({graph.inputs[0].name: x})
    want = ns.run_reference(graph, {graph.inputs[0].name: x})
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5)


def test_every_candidate_made_parallel_trains_as_the_default_schedule(rng, monkeypatch):
    """The training step's gradients (col2im, Winograd weight gradients, pool gradients)
    with every candidate parallel: the same losses as the default schedule's."""
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 4)

    def losses():
        trainer = ns.compile_training(_net(ns.nn), input_shape=x.shape, optimizer="sgd", threads=2)
        return [trainer.step(x, y) for _ in range(3)]
    want = losses()
    _every_candidate_parallel(monkeypatch, host_target(2))
    np.testing.assert_allclose(losses(), want, rtol=1e-5)
