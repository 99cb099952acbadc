"""passes/gemm_transpose.py: Transposes folded into Gemm flags, a sum of
Gemm(a_i, b_i, transA=1) as one GEMM, Transpose(Gemm) as the swapped Gemm;
each rewritten graph checked against the NumPy reference of the original."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder, verify
from nutshell.compiler.passes.gemm_transpose import simplify_gemm_transposes
from nutshell.compiler.passes.pipeline import run_pipeline

TOL = dict(rtol=1e-5, atol=1e-5)     # float32 sums of up to 60 products


def _check(b, outs, rng):
    g = verify(b.build())
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs}
    want = ns.run_reference(g, feeds)
    rewritten = verify(simplify_gemm_transposes(g))
    got_ref = ns.run_reference(rewritten, feeds)
    run_pipeline(g, verify_each=True)
    for threads in (1, 2):
        got = ns.compile(g, threads=threads).run(feeds)
        for o in outs:
            np.testing.assert_allclose(got_ref[o], want[o], **TOL)
            np.testing.assert_allclose(got[o], want[o], **TOL)
    return rewritten


def test_transposed_b_and_a_fold_into_flags(rng):
    b = GraphBuilder("fold", fold=False)
    w, x, y = (b.add_input(n, "float32", s) for n, s in (("w", (8, 12)), ("x", (5, 8)), ("y", (5, 12))))
    wt = b.add_node("Transpose", [w])
    dx = b.add_node("Gemm", [x, wt], {"transB": 1})                      # x @ (w^T)^T
    keep = b.add_node("Gemm", [y, wt])                                     # transB=0: left alone
    dw = b.add_node("MatMul", [b.add_node("Transpose", [y]), x])           # y^T @ x
    b.set_outputs([dx, keep, dw])
    g = _check(b, [dx, keep, dw], rng)
    made = g.producers()
    assert made[dx].inputs[1] == w and made[dx].attrs["transB"] == 0
    assert made[keep].inputs[1] == wt
    assert made[dw].op == "Gemm" and made[dw].attrs["transA"] == 1 and made[dw].inputs[0] == y


@pytest.mark.parametrize("with_other_term", [False, True])
def test_gradient_sum_becomes_one_gemm(rng, with_other_term):
    """Per-step Gemm(h_t, g_t, transA=1) summed, as autodiff leaves a shared weight's
    gradient; an existing Concat of the g_t (after the sum) is moved up and reused;
    the sum's Transpose becomes the swapped Gemm."""
    b = GraphBuilder("sum", fold=False)
    hs = [b.add_input(f"h{t}", "float32", (4, 6)) for t in range(3)]
    gs = [b.add_input(f"g{t}", "float32", (4, 7)) for t in range(3)]
    terms = [b.add_node("Gemm", [h, g], {"transA": 1}) for h, g in zip(hs, gs)]
    if with_other_term:
        terms.append(b.add_node("Exp", [b.add_input("o", "float32", (6, 7))]))
    total = terms[0]
    for t in terms[1:]:
        total = b.add_node("Add", [t, total])
    dw = b.add_node("Transpose", [total])
    cat = b.add_node("Concat", list(reversed(gs)), {"axis": 0})
    bias = b.add_node("ReduceSum", [cat, b.add_constant(np.array([0], np.int64))], {"keepdims": 0})
    b.set_outputs([dw, bias])
    g = _check(b, [dw, bias], rng)
    ops = [n.op for n in g.nodes]
    assert ops.count("Gemm") == 1 and "Add" not in ops
    assert ("Transpose" in ops) == with_other_term      # a Gemm with a C keeps its Transpose
    assert ops.count("Concat") == 2         # the g_t's (reused) and the h_t's


def test_broadcasting_or_multiply_read_terms_stay(rng):
    b = GraphBuilder("keep", fold=False)
    h, g = b.add_input("h", "float32", (4, 6)), b.add_input("g", "float32", (4, 7))
    p1, p2 = (b.add_node("Gemm", [h, g], {"transA": 1}) for _ in range(2))
    total = b.add_node("Add", [p1, p2])
    b.set_outputs([total, p1])              # p1 read twice: not a private term
    g2 = _check(b, [total, p1], rng)
    assert [n.op for n in g2.nodes].count("Gemm") == 2


def test_transpose_of_transpose_composes(rng):
    """Autodiff's inverse permutations: W^T^T is W (an Identity where it is an
    output), attention's heads-then-K^T one Transpose; the inner one stays for its
    other reader."""
    b = GraphBuilder("tt", fold=False)
    w, k = b.add_input("w", "float32", (3, 5)), b.add_input("k", "float32", (2, 3, 4, 5))
    wt = b.add_node("Transpose", [w])
    back = b.add_node("Transpose", [wt])
    y = b.add_node("MatMul", [b.add_input("x", "float32", (2, 3)), back])
    heads = b.add_node("Transpose", [k], {"perm": (0, 2, 1, 3)})
    kt = b.add_node("Transpose", [heads], {"perm": (0, 1, 3, 2)})
    b.set_outputs([y, kt, heads, b.add_node("Transpose", [wt])])
    g = _check(b, [y, kt, heads], rng)
    made = g.producers()
    assert made[y].inputs[1] == w
    assert made[kt].inputs[0] == k and tuple(made[kt].attrs["perm"]) == (0, 2, 3, 1)
    assert [n.op for n in g.nodes].count("Identity") == 1
