"""Kernels a Transformer's training step leans on: sums over rows above a kept
innermost axis (bias and LayerNorm gradients, lower/nests.py's column_sums) and
LogSoftmax's one log per row."""
import numpy as np
import pytest

import nutshell as ns

from conftest import assert_close, single_op_graph

F = "float32"


def _rows_summed(x):
    """The column sums as the kernel adds them: rows in order, from zero, in float32."""
    acc = np.zeros(x.shape[-1], np.float32)
    for row in x.reshape(-1, x.shape[-1]):
        acc = acc + row
    return acc


@pytest.mark.parametrize("shape", [(32, 32, 128), (4, 8, 512), (5, 3, 40), (7, 1000), (6, 9)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_column_sums_add_rows_in_order(shape, threads, rng):
    """Every thread count gives the bits of one float32 chain per column."""
    g = single_op_graph("ReduceSum", [(F, shape)], {"axes": tuple(range(len(shape) - 1)), "keepdims": 0})
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    got = ns.compile(g, threads=threads).run({"x0": x})
    np.testing.assert_array_equal(list(got.values())[0], _rows_summed(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_column_mean_and_fused_norm_gradient(threads, rng):
    """ReduceMean (the sum, then one multiply) and a FusedReduce reading per-row
    statistics and a per-column weight (a LayerNorm's gamma gradient)."""
    x = rng.uniform(-2, 2, (32, 32, 128)).astype(np.float32)
    g = single_op_graph("ReduceMean", [(F, x.shape)], {"axes": (0, 1), "keepdims": 1})
    got = list(ns.compile(g, threads=threads).run({"x0": x}).values())[0]
    np.testing.assert_array_equal(got.reshape(-1), _rows_summed(x) * np.float32(1 / 1024))
    program = (("Sub", (), ("i0", "i1")), ("Mul", (), ("s0", "i2")), ("Mul", (), ("i3", "s1")))
    specs = [(F, (32, 32, 128)), (F, (32, 32, 1)), (F, (32, 32, 1)), (F, (32, 32, 128))]
    g = single_op_graph("FusedReduce", specs, {"axes": (0, 1), "keepdims": 1, "mean": 0, "shape": (32, 32, 128),
                                               "program": program})
    feeds = {f"x{i}": rng.uniform(-2, 2, s).astype(np.float32) for i, (_, s) in enumerate(specs)}
    got = list(ns.compile(g, threads=threads).run(feeds).values())[0]
    terms = (feeds["x0"] - feeds["x1"]) * feeds["x2"] * feeds["x3"]
    np.testing.assert_array_equal(got.reshape(-1), _rows_summed(terms))


@pytest.mark.parametrize("shape,axis", [((32, 1000, 32), 1), ((64, 1000), -1), ((3, 7, 5), 1)])
def test_log_softmax_rows_and_columns(shape, axis, rng):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    g = single_op_graph("LogSoftmax", [(F, shape)], {"axis": axis})
    z = x - x.max(axis=axis, keepdims=True)
    want = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    assert_close(list(ns.compile(g, threads=2).run({"x0": x}).values())[0], want, 1e-5, 1e-5)
