"""IR: golden text of the printer, the verifier, each pass's structure and numbers."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder, verify
from nutshell.compiler.passes.pipeline import INFERENCE_PIPELINE, run_pipeline
from nutshell.compiler.passes.simplify import (eliminate_dead_code, fold_constants,
                                               pretranspose_weights, remove_identities)

GOLDEN = """\
graph tiny(%x: float32[2, 4]) {
  const %w: float32[3, 4]
  const %b: float32[3]
  %gemm_1: float32[2, 3] = Gemm(%x, %w, %b) {alpha=1.0, beta=1.0, transA=0, transB=1}
  %relu_2: float32[2, 3] = Relu(%gemm_1)
  %softmax_3: float32[2, 3] = Softmax(%relu_2) {axis=-1}
  return %softmax_3
}"""


def tiny():
    b = GraphBuilder("tiny")
    x = b.add_input("x", "float32", (2, 4))
    w = b.add_constant(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "w")
    bias = b.add_constant(np.ones(3, np.float32), "b")
    y = b.add_node("Softmax", [b.add_node("Relu", [b.add_node("Gemm", [x, w, bias], {"transB": 1})])])
    b.set_outputs([y])
    return b.build()


def test_printer_golden():
    assert str(tiny()) == GOLDEN


def test_pretranspose_golden_and_numbers(rng):
    g = tiny()
    after = verify(pretranspose_weights(g))
    text = str(after)
    assert "const %w.T: float32[4, 3]" in text and "transB=0" in text and "%w:" not in text
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(ns.run_reference(after, {"x": x})["softmax_3"],
                               ns.run_reference(g, {"x": x})["softmax_3"], rtol=1e-6)


def test_identity_and_dead_code_removed(rng):
    b = GraphBuilder("g", fold=False)
    x = b.add_input("x", "float32", (3,))
    i = b.add_node("Identity", [x])
    d = b.add_node("Dropout", [i])
    b.add_node("Exp", [x])                            # dead
    y = b.add_node("Relu", [d])
    b.set_outputs([y])
    g = verify(b.build())
    out = run_pipeline(g, [remove_identities, eliminate_dead_code], verify_each=True)
    assert [n.op for n in out.nodes] == ["Relu"]
    assert out.nodes[0].inputs == ("x",)


def test_fold_constants_pass(rng):
    b = GraphBuilder("g", fold=False)
    x = b.add_input("x", "float32", (2, 3))
    c = b.add_constant(np.ones((2, 3), np.float32), "c")
    s = b.add_node("Shape", [x])
    e = b.add_node("Exp", [c])
    y = b.add_node("Add", [x, e])
    b.set_outputs([y, s])
    g = verify(b.build())
    out = verify(fold_constants(g))
    assert sorted(n.op for n in out.nodes) == ["Add", "Identity"]     # the folded output keeps a writer
    np.testing.assert_array_equal(out.constants[s + "/folded"], [2, 3])
    np.testing.assert_allclose(out.constants[e], np.e * np.ones((2, 3)), rtol=1e-6)


def test_pipeline_verifies_after_every_pass():
    out = run_pipeline(tiny(), INFERENCE_PIPELINE, verify_each=True)
    assert [n.op for n in out.nodes] == ["Gemm", "Softmax"]          # the ReLU is Gemm's epilogue
    assert out.nodes[0].attrs["activation"] == "Relu"


def test_print_after(capsys):
    ns.compile(tiny(), print_after=["pretranspose_weights"])
    assert "IR after pretranspose_weights" in capsys.readouterr().out


def test_verifier_rejects_use_before_definition():
    g = tiny()
    g.nodes.reverse()
    with pytest.raises(ns.GraphError, match="not defined before"):
        verify(g)


def test_verifier_rejects_wrong_type():
    from nutshell.compiler.ir.types import TensorType, DType
    g = tiny()
    g.types["relu_2"] = TensorType(DType.float32, (2, 4))
    with pytest.raises(ns.GraphError, match="infers"):
        verify(g)


def test_loop_ir_is_printed():
    model = ns.compile(tiny(), threads=1)
    loops = model.source("loops")
    assert "kernel tiny_k0_gemm" in loops and "vector(" in loops and "fma(" in loops


def test_parser_round_trip():
    from nutshell.compiler.ir.parser import parse_graph
    g = tiny()
    back = verify(parse_graph(str(g), g.constants))
    assert str(back) == GOLDEN
    after = parse_graph(str(pretranspose_weights(g)), pretranspose_weights(g).constants)
    assert str(after) == str(pretranspose_weights(g))


def test_fusion_rewrites_structure_and_numbers(rng):
    """Conv -> BN -> ReLU becomes one Conv with folded weights and a ReLU epilogue."""
    from nutshell.compiler.passes.fusion import fuse
    b = GraphBuilder("cbr", fold=False)
    x = b.add_input("x", "float32", (2, 3, 6, 6))
    w = b.add_constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    stats = [b.add_constant(v.astype(np.float32), n) for n, v in
             (("s", rng.uniform(0.5, 2, 4)), ("t", rng.standard_normal(4)), ("m", rng.standard_normal(4)),
              ("v", rng.uniform(0.5, 2, 4)))]
    y = b.add_node("Relu", [b.add_node("BatchNormalization", [b.add_node("Conv", [x, w], {"pads": (1, 1, 1, 1)})]
                                       + stats, {"epsilon": 1e-3})])
    b.set_outputs([y])
    g = verify(b.build())
    fused = verify(fuse(g))
    assert [n.op for n in fused.nodes] == ["Conv"] and fused.nodes[0].attrs["activation"] == "Relu"
    feeds = {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(ns.run_reference(fused, feeds)[y], ns.run_reference(g, feeds)[y], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ns.compile(g, threads=1).run(feeds)[y], ns.run_reference(g, feeds)[y],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("swap", [False, True])
def test_silu_fusion_structure_and_numbers(rng, swap):
    """Conv -> y; Mul(y, Sigmoid(y)) (EfficientNet's swish) becomes one Conv with a SiLU
    epilogue; a second user of y keeps the pattern unfused."""
    from nutshell.compiler.passes.fusion import fuse
    for extra_user in (False, True):
        b = GraphBuilder("swish", fold=False)
        x = b.add_input("x", "float32", (2, 3, 6, 6))
        w = b.add_constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
        y = b.add_node("Conv", [x, w], {"pads": (1, 1, 1, 1)})
        s = b.add_node("Sigmoid", [y])
        out = b.add_node("Mul", [s, y] if swap else [y, s])
        b.set_outputs([out, b.add_node("Relu", [y])] if extra_user else [out])
        g = verify(b.build())
        fused = verify(fuse(g))
        want_ops = ["Conv", "Sigmoid", "Mul", "Relu"] if extra_user else ["Conv"]
        assert [n.op for n in fused.nodes] == want_ops
        feeds = {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)}
        want = ns.run_reference(g, feeds)[out]
        np.testing.assert_allclose(ns.run_reference(fused, feeds)[out], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ns.compile(g, threads=1).run(feeds)[out], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("depthwise", [False, True])
def test_residual_fusion_structure_and_numbers(rng, depthwise):
    """Relu(Add(Conv(x), r)) (ResNet's block end) becomes one Conv reading r in its
    epilogue, even when r is computed after the Conv."""
    from nutshell.compiler.passes.fusion import fuse
    b = GraphBuilder("residual", fold=False)
    x = b.add_input("x", "float32", (2, 4, 6, 6))
    w = b.add_constant(rng.standard_normal((4, 1 if depthwise else 4, 3, 3)).astype(np.float32), "w")
    y = b.add_node("Conv", [x, w], {"pads": (1, 1, 1, 1), "group": 4 if depthwise else 1})
    r = b.add_node("Sigmoid", [x])                       # the skip branch, after the Conv
    out = b.add_node("Relu", [b.add_node("Add", [r, y])])
    b.set_outputs([out])
    g = verify(b.build())
    fused = verify(fuse(g))
    assert [n.op for n in fused.nodes] == ["Sigmoid", "Conv"]
    conv = fused.nodes[1]
    assert conv.inputs[3] == r and conv.attrs["activation"] == "Relu"
    feeds = {"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32)}
    want = ns.run_reference(g, feeds)[out]
    np.testing.assert_allclose(ns.run_reference(fused, feeds)[out], want, rtol=1e-5, atol=1e-6)
    for threads in (1, 2):
        np.testing.assert_allclose(ns.compile(g, threads=threads).run(feeds)[out], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act, attrs, bounds", [("Clip", {}, (0.0, 6.0)), ("Clip", {}, (None, 0.5)),
                                                 ("HardSwish", {}, None), ("LeakyRelu", {"alpha": 0.2}, None)])
@pytest.mark.parametrize("depthwise", [False, True])
def test_activation_epilogue_structure_and_numbers(rng, act, attrs, bounds, depthwise):
    """Conv -> Clip (ReLU6) / HardSwish / LeakyRelu becomes one Conv whose epilogue is
    the activation's own loop expression (Clip's constant bounds as attributes)."""
    from nutshell.compiler.passes.fusion import fuse
    b = GraphBuilder("act", fold=False)
    x = b.add_input("x", "float32", (2, 4, 6, 6))
    w = b.add_constant(rng.standard_normal((4, 1 if depthwise else 4, 3, 3)).astype(np.float32), "w")
    y = b.add_node("Conv", [x, w], {"pads": (1, 1, 1, 1), "group": 4 if depthwise else 1})
    extra = [b.add_constant(np.array(v, np.float32), f"bound{i}") if v is not None else ""
             for i, v in enumerate(bounds)] if bounds else []
    out = b.add_node(act, [y] + extra, attrs)
    b.set_outputs([out])
    g = verify(b.build())
    fused = verify(fuse(g))
    assert [n.op for n in fused.nodes] == ["Conv"] and fused.nodes[0].attrs["activation"][0] == act
    feeds = {"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32)}
    want = ns.run_reference(g, feeds)[out]
    np.testing.assert_allclose(ns.run_reference(fused, feeds)[out], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ns.compile(g, threads=1).run(feeds)[out], want, rtol=1e-5, atol=1e-5)


def test_elementwise_fusion_structure_and_numbers(rng):
    """A chain with a shared operand, an Expand read as its broadcast source, and a
    value used outside the chain: one FusedElementwise for the private part only."""
    from nutshell.compiler.passes.elementwise_fusion import fuse_elementwise
    b = GraphBuilder("chain", fold=False)
    x = b.add_input("x", "float32", (3, 4, 5))
    s = b.add_input("s", "float32", (1, 4, 1))
    shape = b.add_constant(np.array([3, 4, 5], np.int64), "shape")
    d = b.add_node("Sub", [x, b.add_node("Expand", [s, shape])])
    sq = b.add_node("Mul", [d, d])                      # d used twice by one node
    kept = b.add_node("Exp", [x])                      # a second user below: stays a value
    z = b.add_node("Add", [b.add_node("Sqrt", [b.add_node("Add", [sq, kept])]), kept])
    b.set_outputs([z, b.add_node("ReduceSum", [kept])])
    g = verify(b.build())
    fused = verify(fuse_elementwise(g))
    ops = [n.op for n in fused.nodes]
    assert ops.count("FusedElementwise") == 1 and "Sub" not in ops and "Exp" in ops
    node = next(n for n in fused.nodes if n.op == "FusedElementwise")
    assert s in node.inputs and [p[0] for p in node.attrs["program"]] == ["Sub", "Mul", "Add", "Sqrt", "Add"]
    feeds = {"x": rng.standard_normal((3, 4, 5)).astype(np.float32),
             "s": rng.standard_normal((1, 4, 1)).astype(np.float32)}
    want = ns.run_reference(g, feeds)
    np.testing.assert_allclose(ns.run_reference(fused, feeds)[z], want[z], rtol=1e-6)
    for threads in (1, 2):
        np.testing.assert_allclose(ns.compile(g, threads=threads).run(feeds)[z], want[z], rtol=1e-5, atol=1e-6)


def test_winograd_pass_structure_and_numbers(rng):
    """A 3x3 stride-1 Conv with constant weights becomes a WinogradConv over G w G^T
    (16 x M x C), its epilogue kept; the reference recovers w exactly enough."""
    from nutshell.compiler.passes.fusion import fuse
    from nutshell.compiler.passes.winograd import winograd_weights
    b = GraphBuilder("wino", fold=False)
    x = b.add_input("x", "float32", (2, 16, 9, 10))
    w = b.add_constant(rng.standard_normal((24, 16, 3, 3)).astype(np.float32), "w")
    bias = b.add_constant(rng.standard_normal(24).astype(np.float32), "b")
    out = b.add_node("Relu", [b.add_node("Conv", [x, w, bias], {"pads": (1, 0, 1, 2)})])
    b.set_outputs([out])
    g = verify(b.build())
    wino = verify(winograd_weights(fuse(g)))
    node = wino.nodes[0]
    assert node.op == "WinogradConv" and node.attrs["activation"] == "Relu"
    assert wino.types[node.inputs[1]].shape == (16, 24, 16)
    feeds = {"x": rng.standard_normal((2, 16, 9, 10)).astype(np.float32)}
    want = ns.run_reference(g, feeds)[out]
    np.testing.assert_allclose(ns.run_reference(wino, feeds)[out], want, rtol=1e-4, atol=1e-4)
    for threads in (1, 2):
        np.testing.assert_allclose(ns.compile(g, threads=threads).run(feeds)[out], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op, axes, keepdims", [("ReduceMean", (0, 2, 3), 1), ("ReduceSum", (1,), 0),
                                                ("ReduceSum", (3,), 1)])
def test_reduction_fusion_structure_and_numbers(rng, op, axes, keepdims):
    """A reduction of an element-wise value used nowhere else (BatchNorm's variance:
    ReduceMean((x - mean)^2)) becomes one FusedReduce: the squares are never stored."""
    from nutshell.compiler.passes.elementwise_fusion import fuse_elementwise
    b = GraphBuilder("stats", fold=False)
    x = b.add_input("x", "float32", (4, 6, 5, 7))
    mean = b.add_input("mean", "float32", (1, 6, 1, 1))
    d = b.add_node("Sub", [x, mean])
    axes_c = b.add_constant(np.array(axes, np.int64), "axes")
    out = b.add_node(op, [b.add_node("Mul", [d, d]), axes_c], {"keepdims": keepdims})
    b.set_outputs([out])
    g = verify(b.build())
    fused = verify(fuse_elementwise(g))
    assert [n.op for n in fused.nodes] == ["FusedReduce"]
    feeds = {"x": rng.standard_normal((4, 6, 5, 7)).astype(np.float32),
             "mean": rng.standard_normal((1, 6, 1, 1)).astype(np.float32)}
    want = ns.run_reference(g, feeds)[out]
    np.testing.assert_allclose(ns.run_reference(fused, feeds)[out], want, rtol=1e-5)
    for threads in (1, 2):
        np.testing.assert_allclose(ns.compile(g, threads=threads).run(feeds)[out], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, k, n, vector_cap", [((49,), 768, 300, 512), ((2, 25), 1000, 33, 256),
                                                   ((26,), 64, 300, 32)])
def test_prepacked_matmul_structure_and_numbers(rng, rows, k, n, vector_cap):
    """A MatMul by a constant B becomes MatMulPacked over B in the target's GEMM panels
    (k blocks of about 512, panels as wide as its tile: 32 columns with AVX-512, 16
    with AVX2, zero edges); the reference unpacks it. Panels packed for one width
    run on another (a graph optimised for AVX2 compiled for AVX-512, and back)."""
    from nutshell.compiler.lower.target import host_target
    from nutshell.compiler.passes.simplify import prepack_weights
    from nutshell.compiler.schedule.gemm import k_blocking
    from nutshell.compiler.schedule.tables import table_for
    b = GraphBuilder("mm", fold=False)
    x = b.add_input("x", "float32", rows + (k,))
    y = b.add_node("MatMul", [x, b.add_constant(rng.standard_normal((k, n)).astype(np.float32), "w")])
    b.set_outputs([y])
    g = verify(b.build())
    target = host_target(1, vector_cap)
    packed = verify(prepack_weights(g, target))
    node = packed.nodes[0]
    kc, k_blocks = k_blocking(k, target)
    panel = table_for(target).prepack_panel
    assert panel == {512: 32, 256: 16, 32: 4}[target.vector_bits]     # the cap, or the host's width below it
    assert node.op == "MatMulPacked" and packed.types[node.inputs[1]].shape == (k_blocks, -(-n // panel), kc, panel)
    feeds = {"x": rng.standard_normal(rows + (k,)).astype(np.float32)}
    want = ns.run_reference(g, feeds)[y]
    np.testing.assert_allclose(ns.run_reference(packed, feeds)[y], want, rtol=1e-5, atol=1e-5)
    for threads in (1, 2):
        got = ns.compile(g, threads=threads, vector_cap=vector_cap).run(feeds)[y]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if vector_cap != 32:       # the other vector width's panels, lowered for this one
        other = host_target(2, 768 - vector_cap)
        ours = ns.compile(verify(prepack_weights(g, other)), threads=2, vector_cap=vector_cap).run(feeds)[y]
        np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-4)
