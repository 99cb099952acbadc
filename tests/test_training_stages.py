"""The distributed step's `grads` half cut into stages (nutshell/training_stages.py):
gradient buckets in the order the backward completes them, cuts after each
bucket and at each AllReduceSum, every node after its inputs; and the staged
step run in one process (MPI's one-rank world, no mpiexec) gives the losses and
parameters of the one-function step (rel 1e-5: separately compiled stages fuse
differently)."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.frontends.batch_stats import shared_by_ranks
from nutshell.training import Recipe
from nutshell.training_split import build_grads_graph
from nutshell.training_stages import SYNC_OP, buckets, split_stages

nn = ns.nn


def _net(bn=True):
    ns.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 36, 16), nn.ReLU(), nn.Linear(16, 3))


def _grads_graph(ranks=1):
    recipe = Recipe(_net(), (8, 1, 8, 8), None, None, "cross_entropy", {})
    with shared_by_ranks(ranks):
        return build_grads_graph(recipe)


def test_buckets_follow_the_backward_and_cut_the_step():
    graph, layout = _grads_graph()
    order, groups, cuts = buckets(graph, layout, cap_bytes=100)
    names = [v.name for v in graph.outputs]
    grads = [names[i] for i in order if 1 <= i <= len(layout["params"])]
    assert grads[:2] == [names[1 + layout["params"].index(p)] for p in ("6.bias", "6.weight")] or \
        grads[:2] == [names[1 + layout["params"].index(p)] for p in ("6.weight", "6.bias")]
    assert sorted(i for g in groups for i in g) == sorted(order) and groups[0][0] == 0
    assert len(groups) > 2 and len(cuts) == len(groups) - 1
    plan = split_stages(graph, cuts)
    stage_of = {o: s for s, g in enumerate(plan.stages) if g for o in g.output_names()}
    finished = [max(plan.ready[plan.graph.outputs[i].name] for i in g) for g in groups]
    assert finished == sorted(finished) and len(set(finished)) == len(finished)
    for s, g in enumerate(plan.stages):        # a stage reads only what earlier stages made
        for v in g.input_names() if g else ():
            assert stage_of.get(v, -1) < s
    one = split_stages(graph, [])
    assert sum(g is not None for g in one.stages) == 1 and not any(one.syncs)


def test_sync_batchnorm_makes_one_all_reduce_each_way():
    graph, _ = _grads_graph(ranks=2)
    assert [n.op for n in graph.nodes].count(SYNC_OP) == 2
    plan = split_stages(graph)
    assert sum(len(s) for s in plan.syncs) == 2 and all(len(s) <= 1 for s in plan.syncs)
    assert all(graph.types[src].dtype.numpy == np.float64 for s in plan.syncs for src, _ in s)


@pytest.mark.parametrize("bn", [False, True])
def test_staged_step_in_one_process_matches_the_single_function_step(bn, rng):
    pytest.importorskip("mpi4py")
    plain = ns.compile_training(_net(bn), (8, 1, 8, 8), optimizer=ns.optim.Adam(lr=0.01), threads=1)
    staged = ns.compile_training(_net(bn), (8, 1, 8, 8), optimizer=ns.optim.Adam(lr=0.01), threads=1,
                                 distributed="mpi", bucket_cap_mb=1e-4, sync_batchnorm=True)
    assert len(staged._staged.buckets) > 2
    for _ in range(3):
        x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 3, 8)
        np.testing.assert_allclose(staged.step(x, y), plain.step(x, y), rtol=1e-5)
    want = plain.state()
    for name, value in staged.state().items():
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_distributed_options_are_checked():
    pytest.importorskip("mpi4py")
    with pytest.raises(ValueError, match="bucket_cap_mb must be a positive"):
        ns.compile_training(_net(False), (8, 1, 8, 8), distributed="mpi", bucket_cap_mb=0)
