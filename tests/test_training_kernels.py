"""Kernels a Transformer's training step leans on: sums over rows above a kept
innermost axis (bias and LayerNorm gradients, lower/nests.py's column_sums), a
Linear's bias folded into its GEMM (passes/fusion.py's fold_matmul_bias) and
LogSoftmax's one log per row."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder, verify
from nutshell.api import optimize_graph

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


def _linear(weight_constant):
    b = GraphBuilder("linear", fold=False)
    x = b.add_input("x", F, (4, 6, 24))
    w = b.add_constant(np.linspace(-1, 1, 24 * 40, dtype=np.float32).reshape(24, 40), "w") \
        if weight_constant else b.add_input("w", F, (24, 40))
    bias = b.add_input("b", F, (40,))
    b.set_outputs([b.add_node("Add", [b.add_node("MatMul", [x, w]), bias])])
    return verify(b.build())


def test_matmul_bias_becomes_a_gemm_bias(rng):
    """A run-time weight (training's): one Gemm seeded with the bias, no Add;
    a constant one stays a MatMul that prepack_weights may pack."""
    g = _linear(False)
    ops = [n.op for n in optimize_graph(g).nodes]
    assert "Gemm" in ops and "Add" not in ops and "MatMul" not in ops, ops
    feeds = {"x": rng.standard_normal((4, 6, 24)).astype(np.float32),
             "w": rng.standard_normal((24, 40)).astype(np.float32), "b": rng.standard_normal(40).astype(np.float32)}
    for threads in (1, 2):
        got = list(ns.compile(g, threads=threads).run(feeds).values())[0]
        assert_close(got, feeds["x"] @ feeds["w"] + feeds["b"], 1e-5, 1e-5)
    assert "Gemm" not in [n.op for n in optimize_graph(_linear(True)).nodes]


@pytest.mark.parametrize("shape,axis", [((32, 1000, 32), 1), ((64, 1000), -1), ((3, 7, 5), 1)])
def test_log_softmax_rows_and_columns(shape, axis, rng):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    g = single_op_graph("LogSoftmax", [(F, shape)], {"axis": axis})
    z = x - x.max(axis=axis, keepdims=True)
    want = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    assert_close(list(ns.compile(g, threads=2).run({"x0": x}).values())[0], want, 1e-5, 1e-5)


def _heads_graph():
    """Attention's products over heads: q, v read through (0, 2, 1, 3), k's scores
    transposed as A, the result written back as (0, 2, 1, 3)."""
    b = GraphBuilder("heads", fold=False)
    q, v = (b.add_input(n, F, (2, 5, 3, 8)) for n in ("q", "v"))
    s = b.add_input("s", F, (2, 3, 5, 5))
    heads = lambda x: b.add_node("Transpose", [x], {"perm": (0, 2, 1, 3)})       # noqa: E731
    qh, vh = heads(q), heads(v)
    st = b.add_node("Transpose", [s], {"perm": (0, 1, 3, 2)})
    y = b.add_node("MatMul", [st, b.add_node("MatMul", [b.add_node("Softmax", [s], {"axis": -1}), vh])])
    z = b.add_node("MatMul", [qh, b.add_node("Transpose", [vh], {"perm": (0, 1, 3, 2)})])
    b.set_outputs([b.add_node("Transpose", [y], {"perm": (0, 2, 1, 3)}), z])
    return verify(b.build())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_heads_products_read_and_write_through_transposes(threads, rng):
    g = _heads_graph()
    opt = optimize_graph(g)
    folded = [n.attrs for n in opt.nodes if n.op == "MatMul" and n.attrs]
    assert len(folded) == 3 and sum("perm_out" in a for a in folded) == 1, folded
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in
             (("q", (2, 5, 3, 8)), ("v", (2, 5, 3, 8)), ("s", (2, 3, 5, 5)))}
    y, z = ns.compile(g, threads=threads).run(feeds).values()
    e = np.exp(feeds["s"] - feeds["s"].max(-1, keepdims=True))
    vh = feeds["v"].transpose(0, 2, 1, 3)
    want_y = (feeds["s"].transpose(0, 1, 3, 2) @ (e / e.sum(-1, keepdims=True) @ vh)).transpose(0, 2, 1, 3)
    assert_close(y, want_y, 1e-5, 1e-5)
    assert_close(z, feeds["q"].transpose(0, 2, 1, 3) @ vh.transpose(0, 1, 3, 2), 1e-5, 1e-5)


def test_optimizer_update_of_a_mid_sized_weight_splits(rng):
    """Adam on a 384 x 128 weight (49 Ki elements, seven streams) runs in parallel at
    two threads (nests.py's map_nest weighs every stream) with one thread's bits."""
    x = rng.standard_normal((16, 128)).astype(np.float32)
    y = rng.integers(0, 384, 16)
    params = []
    for threads in (1, 2):
        ns.manual_seed(0)
        net = ns.nn.Linear(128, 384)
        trainer = ns.compile_training(net, example_inputs=x, example_targets=y, optimizer=ns.optim.Adam(lr=1e-2),
                                      threads=threads)
        for _ in range(3):
            trainer.step(x, y)
        params.append(trainer.parameters())
        if threads == 2:
            src = trainer.model.source("llvm")
            assert any("fusedelementwise.par" in line for line in src.splitlines() if line.startswith("define"))
    for name in params[0]:
        np.testing.assert_array_equal(params[0][name], params[1][name])
