"""Generated code: SIMD width per CPU, verified modules, thread-count invariance."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.models import lenet5
from nutshell.compiler.ir.graph import GraphBuilder
from nutshell.compiler.ir.types import DType


@pytest.fixture(scope="module")
def lenet_graph():
    ns.manual_seed(0)
    return lenet5().trace((8, 1, 28, 28))


def test_conv_net_uses_avx512_registers(lenet_graph):
    model = ns.compile(lenet_graph, threads=1)
    if model.target.vector_bits < 512:
        pytest.skip("this CPU has no AVX-512")
    asm = model.source("asm")
    assert "zmm" in asm and "vfmadd" in asm


def test_avx2_code_uses_ymm_only(lenet_graph):
    asm = ns.compile(lenet_graph, threads=1, vector_cap=256).source("asm")
    assert "ymm" in asm and "zmm" not in asm


def test_llvm_source_shows_vector_fma(lenet_graph):
    ir = ns.compile(lenet_graph, threads=1).source("llvm")
    assert "llvm.fma.v" in ir and "define i32 @" in ir


@pytest.mark.parametrize("threads", [2, 3])
def test_thread_count_does_not_change_results(lenet_graph, threads, rng):
    """Splits over independent iterations: bit-identical for any thread count."""
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    one = ns.compile(lenet_graph, threads=1)(x)
    many = ns.compile(lenet_graph, threads=threads)(x)
    np.testing.assert_array_equal(one, many)


def test_dynamic_schedule_gives_the_same_bits_every_run(rng):
    """Threads take chunks of a parallel loop from a shared counter (the schedule
    differs run to run): GEMM column blocks, a batch's images, depthwise planes and
    element-wise chunks each compute their outputs alone, so every run at 2 and 3
    threads equals the 1-thread result bit for bit."""
    from nutshell.compiler.ir import GraphBuilder
    b = GraphBuilder("schedule", fold=False)
    x = b.add_input("x", "float32", (4, 8, 20, 20))
    y = b.add_node("Conv", [x, b.add_constant(rng.standard_normal((16, 8, 3, 3)).astype(np.float32))],
                   {"strides": (2, 2), "pads": (1,) * 4})
    y = b.add_node("Conv", [y, b.add_constant(rng.standard_normal((16, 1, 5, 5)).astype(np.float32))],
                   {"group": 16, "pads": (2,) * 4})
    z = b.add_node("MatMul", [b.add_node("Reshape", [y, b.add_constant(np.array([16, 400]))]),
                              b.add_constant(rng.standard_normal((400, 2048)).astype(np.float32))])
    b.set_outputs([b.add_node("Tanh", [z])])
    g = b.build()
    feeds = {"x": rng.standard_normal((4, 8, 20, 20)).astype(np.float32)}
    want = ns.compile(g, threads=1).run(feeds)
    for threads in (2, 3):
        model = ns.compile(g, threads=threads)
        assert "atomicrmw add" in model.source("llvm")
        for _ in range(10):
            for name, value in model.run(feeds).items():
                np.testing.assert_array_equal(value, want[name])


def test_arena_is_planned_by_liveness(lenet_graph):
    plan = ns.compile(lenet_graph, threads=1).code.plan
    total = sum(lenet_graph.types[n.outputs[0]].nbytes for n in lenet_graph.nodes)
    assert plan.lower_bound <= plan.arena_size < total


def test_concat_parts_are_written_in_place(rng):
    """Concats of batch-1 parts read only by them (nested too) cost no copy: each part
    lives at its offset in the result; a part read twice, or by another op, is copied."""
    from nutshell.compiler.ir import GraphBuilder
    b = GraphBuilder("cat", fold=False)
    x = b.add_input("x", "float32", (1, 3, 5, 5))
    inner = b.add_node("Concat", [b.add_node("Relu", [x]), b.add_node("Exp", [x])], {"axis": 1})
    outer = b.add_node("Concat", [b.add_node("Concat", [inner, b.add_node("Sigmoid", [x])], {"axis": 1}),
                                  b.add_node("Neg", [x])], {"axis": 1})
    twice = b.add_node("Concat", [outer, outer], {"axis": 1})
    b.set_outputs([twice, b.add_node("Tanh", [outer])])
    g = b.build()
    model = ns.compile(g, threads=2)
    concats = {i for i, n in enumerate(g.nodes) if n.op == "Concat"}
    assert model.code.plan.elided == concats - {max(concats)}
    feeds = {"x": rng.standard_normal((1, 3, 5, 5)).astype(np.float32)}
    want, got = ns.run_reference(g, feeds), model.run(feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_prefix_concats_share_the_longest_ones_storage(rng):
    """DenseNet's block: layer i concatenates the block's input and every earlier
    layer's output. Each Concat is a prefix of the last one, so all of them live in
    its storage and none copies; a part also read by another op keeps the copies."""
    from nutshell.compiler.ir import GraphBuilder

    def block(extra_reader):
        b = GraphBuilder("dense", fold=False)
        x = b.add_input("x", "float32", (1, 2, 4, 4))
        parts, results = [b.add_node("Relu", [x])], []
        for layer in range(3):
            cat = b.add_node("Concat", list(parts), {"axis": 1})
            parts.append(b.add_node("ReduceMean", [b.add_node("Tanh", [cat])], {"axes": [1], "keepdims": 1}))
        results.append(b.add_node("Sigmoid", [b.add_node("Concat", list(parts), {"axis": 1})]))
        if extra_reader:
            results.append(b.add_node("Exp", [parts[1]]))
        b.set_outputs(results)
        return b.build()

    feeds = {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    for extra_reader in (False, True):
        g = block(extra_reader)
        model = ns.compile(g, threads=2)
        assert len(model.code.plan.elided) == (0 if extra_reader else 4)     # of 4 Concats
        want, got = ns.run_reference(g, feeds), model.run(feeds)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_concurrent_runs_from_python_threads(lenet_graph, rng):
    from concurrent.futures import ThreadPoolExecutor
    model = ns.compile(lenet_graph, threads=1)
    xs = [rng.random((8, 1, 28, 28)).astype(np.float32) for _ in range(4)]
    want = [model(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(model, xs))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_disk_cache_reuses_machine_code(lenet_graph, tmp_path, monkeypatch, rng):
    monkeypatch.setenv("NUTSHELL_CACHE_DIR", str(tmp_path))
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    first = ns.compile(lenet_graph, threads=1)
    assert not first.jit.from_cache and list(tmp_path.rglob("*.o"))
    second = ns.compile(lenet_graph, threads=1)
    assert second.jit.from_cache
    np.testing.assert_array_equal(first(x), second(x))
    assert second.code.llvm_ir is None          # the graph-keyed entry: no lowering at all
    assert "zmm" in second.source("asm") or second.target.vector_bits < 512
    assert "kernel" in second.source("loops")   # lowered again on request
    for f in tmp_path.rglob("*.*"):          # a damaged entry is ignored, never run
        f.write_bytes(b"\0" * 64)
    third = ns.compile(lenet_graph, threads=1)
    assert not third.jit.from_cache
    np.testing.assert_array_equal(third(x), first(x))


def test_model_cache_keys_on_weights(tmp_path, monkeypatch, rng):
    """Same graph text, other weights: a miss, never the other model's answer."""
    monkeypatch.setenv("NUTSHELL_CACHE_DIR", str(tmp_path))
    x = rng.random((2, 3)).astype(np.float32)
    results = []
    for scale in (1.0, 2.0, 1.0):
        b = GraphBuilder("same_name")
        y = b.add_node("Mul", [b.add_input("x", DType.float32, (2, 3)),
                               b.add_constant(np.full((3,), scale, np.float32), "w")])
        b.set_outputs([y])
        model = ns.compile(b.build(), threads=1)
        results.append((model.code.llvm_ir is None, model(x)))
    assert [hit for hit, _ in results] == [False, False, True]
    np.testing.assert_array_equal(results[1][1], 2 * x)
    np.testing.assert_array_equal(results[2][1], x)


def test_cache_off(lenet_graph, tmp_path, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    ns.compile(lenet_graph, threads=1)
    assert not list(tmp_path.rglob("*.o"))


@pytest.mark.parametrize("vector_cap", [512, 256])
@pytest.mark.parametrize("op, ref, positive", [("Exp", np.exp, False), ("Tanh", np.tanh, False),
                                               ("Log", np.log, True),
                                               ("Sigmoid", lambda v: 1 / (1 + np.exp(-v)), False)])
def test_vector_math_within_two_ulp(op, ref, positive, vector_cap):
    """The float32 vector polynomials (compiler/codegen/vector_math.py) against float64
    NumPy rounded to float32: within 2 ulp on normal results, and the IEEE edge cases
    (inf, -inf, NaN, 0, overflow, underflow to 0) as libm gives them."""
    from conftest import single_op_graph
    xs = np.concatenate([np.linspace(-100, 100, 20001), np.linspace(-1, 1, 2001), np.linspace(-20, 20, 200001),
                         [0.0, np.inf, -np.inf, np.nan, 1e-30, 88.7, 88.73, -87.3, -87.4, -103.0]])
    if positive:
        xs = np.concatenate([np.abs(xs), np.logspace(-45, 38, 3000), [-1.0, 1e-40]])
    xs = xs.astype(np.float32)
    got = ns.compile(single_op_graph(op, [("float32", xs.shape)]), threads=1, vector_cap=vector_cap)(xs)
    with np.errstate(all="ignore"):
        want = ref(xs.astype(np.float64)).astype(np.float32)
    normal = np.isfinite(want) & (np.abs(want) > np.finfo(np.float32).tiny)
    ulp = np.abs(got[normal].astype(np.float64) - want[normal]) / np.spacing(np.abs(want[normal]))
    assert ulp.max() <= 2
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])


def test_process_exits_cleanly_with_spinning_workers():
    """The pool's workers spin a while after a run; the exit must stop them before
    their code is freed (libgomp's segfaulted there before an atexit join)."""
    import os
    import subprocess
    import sys
    script = ("import numpy as np, nutshell as ns\n"
              "from nutshell.compiler.ir import GraphBuilder\n"
              "b = GraphBuilder('t', fold=False)\n"
              "x = b.add_input('x', 'float32', (1 << 18,))\n"
              "b.set_outputs([b.add_node('Exp', [x])])\n"
              "ns.compile(b.build(), threads=2).run({'x': np.ones(1 << 18, np.float32)})\n")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, OMP_WAIT_POLICY="active"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
