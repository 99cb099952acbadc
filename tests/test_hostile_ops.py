"""Hostile values and attributes through single ops (issue 14; BAD_INPUTS rows 9-13,
21, 27, 28): each case compiles one ONNX node and checks the result against the
op's NumPy reference and onnxruntime, or checks the clean refusal. Floats within
rtol 1e-6 (a few ulp: float32 rounding order), NaN where the reference has NaN;
integers exact."""
import platform
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nutshell as ns
from nutshell.compiler.ops.registry import get_op
from conftest import single_op_graph
from onnx_models import init, make_model, vi

ort = pytest.importorskip("onnxruntime")

NAN, INF = np.float32("nan"), np.float32("inf")
_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
         np.dtype(np.int32): TensorProto.INT32}


def one_node(op, feeds, attrs=None, consts=None, opset=13, outputs=1):
    """An ONNX model of one `op` node: `feeds` are graph inputs, `consts` initializers
    (both name -> array, in the node's input order: feeds first)."""
    consts = consts or {}
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, list(feeds) + list(consts), outs, name=f"the_{op.lower()}", **(attrs or {}))
    inputs = [vi(k, list(v.shape), _ELEM[v.dtype]) for k, v in feeds.items()]
    m = make_model([node], inputs, [], [init(k, v) for k, v in consts.items()], opset)
    try:
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m, strict_mode=True).graph.value_info}
        m.graph.output.extend([inferred[o] for o in outs])
    except Exception:      # a model onnx itself refuses: any output type lets nutshell judge it
        m.graph.output.extend([helper.make_tensor_value_info(o, TensorProto.FLOAT, ["?"]) for o in outs])
    return m.SerializeToString()


def run_ours(model, feeds):
    return list(ns.compile(ns.load_onnx(model), threads=1).run(feeds).values())


def run_ort(model, feeds):
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)


def reference(op, feeds, attrs=None, consts=None):
    opdef = get_op(op)
    arrays = list(feeds.values()) + list((consts or {}).values())
    out = opdef.reference(opdef.normalize_attrs(dict(attrs or {}), len(arrays)), *arrays)
    return list(out) if isinstance(out, tuple) else [out]


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == np.shape(w) and g.dtype == np.asarray(w).dtype
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=0)      # NaN matches NaN


# ---- row 28 (issue 14 item 6): NaN and Inf propagate --------------------------------
ROW = np.array([NAN, -INF, INF, -1.5, 0.0, 2.5, 0.25, NAN, -0.75, 3.0, -2.0, 1.0, NAN, 0.5, -3.0,
                4.0, -0.5, NAN, 1.5], np.float32)                   # NaN first, inside, in a tail
GRID = np.array([[NAN, 1, 2, 0, -1], [1, NAN, 0, 2, -1], [3, 2, 1, 0, NAN], [1, 2, 3, -INF, INF],
                 [-INF, -INF, -INF, -INF, -INF]], np.float32)       # NaN first, middle, last, none
PLANE = np.arange(2 * 36, dtype=np.float32).reshape(1, 2, 6, 6)
PLANE[0, 0, 0, 1], PLANE[0, 0, 3, 3], PLANE[0, 1, 5, 5], PLANE[0, 1, 2, 0] = NAN, NAN, NAN, INF
WIDE = np.tile(GRID, (1, 13))                                         # 65 columns: vector loops

# (op, feeds, attrs, consts, opset, onnxruntime agrees): ONNX Runtime's ReduceMax,
# ArgMax, MaxPool and GlobalMaxPool keep a NaN only in the first position; NumPy, PyTorch and IEEE
# maximum propagate it wherever it is, as nutshell does, so those compare to NumPy.
NAN_CASES = [
    ("Relu", {"x": ROW}, {}, {}, 13, True),
    ("HardSigmoid", {"x": ROW}, {}, {}, 13, True),
    ("HardSwish", {"x": ROW}, {}, {}, 14, True),
    ("Celu", {"x": ROW}, {}, {}, 13, True),
    ("Sign", {"x": ROW}, {}, {}, 13, True),
    ("LeakyRelu", {"x": ROW}, {"alpha": 0.1}, {}, 13, True),
    ("Clip", {"x": ROW}, {}, {"lo": np.float32(-1), "hi": np.float32(1)}, 13, True),
    # an absent bound is no bound (IEEE, NumPy, onnx's reference): ORT clamps inf to FLT_MAX
    ("Clip", {"x": ROW, "lo": np.array(-1, np.float32)}, {}, {}, 13, False),
    ("Max", {"a": ROW, "b": ROW[::-1].copy()}, {}, {}, 13, True),
    ("Min", {"a": ROW, "b": ROW[::-1].copy()}, {}, {}, 13, True),
    ("Max", {"a": ROW}, {}, {"b": np.float32(0)}, 13, True),
    ("Min", {"a": np.float32(1)[None]}, {}, {"b": ROW}, 13, True),
    ("ReduceMax", {"x": GRID}, {"axes": [1], "keepdims": 0}, {}, 13, False),
    ("ReduceMin", {"x": GRID}, {"axes": [1], "keepdims": 0}, {}, 13, False),
    ("ReduceMax", {"x": GRID}, {"axes": [0]}, {}, 13, False),
    ("ReduceMax", {"x": WIDE}, {"axes": [1]}, {}, 13, False),
    ("ReduceMin", {"x": WIDE.T.copy()}, {"axes": [0]}, {}, 13, False),
    ("ArgMax", {"x": GRID}, {"axis": 1}, {}, 13, False),
    ("ArgMin", {"x": GRID}, {"axis": 1, "keepdims": 0}, {}, 13, False),
    ("ArgMax", {"x": GRID}, {"axis": 0, "select_last_index": 1}, {}, 13, False),
    ("ArgMax", {"x": WIDE}, {"axis": 1}, {}, 13, False),
    ("MaxPool", {"x": PLANE}, {"kernel_shape": [2, 2], "strides": [2, 2]}, {}, 13, False),
    ("MaxPool", {"x": PLANE}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, {}, 13, False),
    ("GlobalMaxPool", {"x": PLANE}, {}, {}, 13, False),
    ("Softmax", {"x": GRID}, {"axis": 1}, {}, 13, True),
]


def _id(case):
    return f"{case[0]}-{'-'.join(f'{k}{v}' for k, v in case[2].items())}-{len(case[1])}in"


@pytest.mark.parametrize("case", NAN_CASES, ids=_id)
def test_nan_and_inf_propagate(case):
    op, feeds, attrs, consts, opset, ort_agrees = case
    model = one_node(op, feeds, attrs, consts, opset, outputs=2 if op == "MaxPool" else 1)
    got = run_ours(model, feeds)
    want = reference(op, feeds, attrs, consts)
    assert_same(got, want)
    if ort_agrees:
        np.testing.assert_allclose(got[0], run_ort(model, feeds)[0], rtol=1e-6, atol=0)


def test_relu_epilogue_keeps_nan():
    """Conv + Relu fused: the epilogue's max keeps a NaN activation (and stays one vmaxps)."""
    x = np.ones((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 2] = NAN
    node = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    w = np.full((2, 1, 1, 1), -1.0, np.float32)
    m = make_model(node, [vi("x", [1, 1, 4, 4])], [vi("y", [1, 2, 4, 4])], [init("w", w)]).SerializeToString()
    got = run_ours(m, {"x": x})[0]
    np.testing.assert_array_equal(got, np.maximum(-x, 0).repeat(2, axis=1))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instructions")
def test_nan_propagation_keeps_the_vector_code():
    """ReLU (and the GEMM/conv epilogues, the same expression) stays one vmaxps per vector:
    a constant bound needs no NaN test; MaxPool's max stays vector code, vmaxps plus
    the NaN test."""
    relu = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [64, 256])], [vi("y", [64, 256])])
    asm = ns.compile(ns.load_onnx(relu.SerializeToString()), threads=1).source("asm")
    assert "vmaxps" in asm and "vcmpunordps" not in asm and "blend" not in asm
    pool = make_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2])],
                      [vi("x", [1, 8, 33, 33])], [vi("y", [1, 8, 16, 16])])
    asm = ns.compile(ns.load_onnx(pool.SerializeToString()), threads=1).source("asm")
    assert re.search(r"vmaxps\s+%[yz]mm", asm) and "vcmpunordps" in asm


# ---- issue 14 item 8: int32 index tensors, as ONNX allows -----------------------------
GRID34 = np.arange(12, dtype=np.float32).reshape(3, 4)
I32 = lambda *v: np.array(v, np.int32)

# (op, feeds, attrs, consts, opset)
INT32_CASES = [
    ("Gather", {"x": GRID34, "i": I32(2, -1, 0, 1)}, {"axis": 0}, {}, 13),
    ("Gather", {"x": GRID34, "i": I32(3, -4, 0).reshape(1, 3)}, {"axis": 1}, {}, 13),
    ("Gather", {"x": GRID34}, {"axis": -1}, {"i": I32(-1, 2)}, 13),
    ("Gather", {"x": GRID34, "i": np.array(-2, np.int32)}, {"axis": 0}, {}, 13),
    ("Slice", {"x": GRID34}, {}, {"s": I32(1, 0), "e": I32(3, -1), "a": I32(1, 0), "t": I32(1, 2)}, 13),
    ("Slice", {"x": GRID34}, {}, {"s": I32(-1), "e": I32(-2 ** 31), "a": I32(1), "t": I32(-1)}, 13),
    ("Pad", {"x": GRID34}, {"mode": "edge"}, {"p": np.array([1, 0, 0, 2], np.int64)}, 13),
    ("Gather", {"x": np.arange(12).reshape(3, 4), "i": I32(2, 0).reshape(1, 2)}, {"axis": 1}, {}, 13),
    ("Gather", {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "i": I32(1, -1, 0, 2).reshape(2, 2)},
     {"axis": 1}, {}, 13),
    ("Range", {}, {}, {"a": np.array(1, np.int32), "b": np.array(9, np.int32), "c": np.array(3, np.int32)}, 13),
]


@pytest.mark.parametrize("case", INT32_CASES, ids=_id)
def test_int32_indices(case):
    op, feeds, attrs, consts, opset = case
    model = one_node(op, feeds, attrs, consts, opset)
    got = run_ours(model, feeds)
    assert_same(got, reference(op, feeds, attrs, consts))
    assert_same(got, run_ort(model, feeds))


# ---- row 21: Gather indices out of range at run time: an error, no access --------------
@pytest.mark.parametrize("index", [np.array([0, 3], np.int64), np.array([-4], np.int64), I32(2, 7),
                                   I32(-4), np.array([2 ** 40], np.int64)], ids=repr)
def test_gather_index_out_of_range_is_an_error(index):
    feeds = {"x": GRID34[:3, :3].copy(), "i": index}
    model = one_node("Gather", feeds, {"axis": 0})
    with pytest.raises(Exception, match="out of"):
        run_ort(model, feeds)
    with pytest.raises(ns.InputError, match="index is out of range"):
        run_ours(model, feeds)


# ---- row 27: length-0 axes: the correct empty result or a clean refusal ----------------
EMPTY_COLS = np.zeros((3, 0), np.float32)
PADS = lambda *v: np.array(v, np.int64)


@pytest.mark.parametrize("mode", ["edge", "reflect", "wrap"])
def test_pad_from_an_empty_axis_is_refused(mode):
    feeds = {"x": EMPTY_COLS}
    model = one_node("Pad", feeds, {"mode": mode}, {"p": PADS(0, 2, 0, 1)}, opset=19)
    with pytest.raises(ns.ShapeError, match=rf"the_pad.*'{mode}'.*axis 1 of length 0"):
        run_ours(model, feeds)


# (op, feeds, attrs, consts, opset): results that are empty, or read nothing
EMPTY_CASES = [
    ("Pad", {"x": EMPTY_COLS}, {"mode": "edge"}, {"p": PADS(1, 0, 1, 0)}, 13),
    ("Pad", {"x": EMPTY_COLS}, {"mode": "reflect"}, {"p": PADS(1, 0, 0, 0)}, 13),
    ("Pad", {"x": EMPTY_COLS}, {"mode": "constant"}, {"p": PADS(0, 2, 0, 1)}, 13),
    ("Gather", {"x": EMPTY_COLS, "i": np.zeros((2, 0), np.int64)}, {"axis": 1}, {}, 13),
    ("Gather", {"x": np.zeros((0, 4), np.float32), "i": I32(3, -1)}, {"axis": 1}, {}, 13),
    ("Resize", {"x": np.zeros((1, 1, 0, 4), np.float32)}, {"mode": "linear"},
     {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 2], np.float32)}, 13),
    ("Resize", {"x": np.zeros((1, 0, 2, 4), np.float32)}, {"mode": "cubic"},
     {"r": np.zeros(0, np.float32), "s": np.zeros(0, np.float32), "z": PADS(1, 0, 3, 8)}, 13),
]


@pytest.mark.parametrize("case", EMPTY_CASES, ids=_id)
def test_empty_axes_give_empty_results(case):
    op, feeds, attrs, consts, opset = case
    model = one_node(op, feeds, attrs, consts, opset)
    got = run_ours(model, feeds)
    assert_same(got, reference(op, feeds, attrs, consts))
    assert_same(got, run_ort(model, feeds))


def test_gather_from_an_empty_axis_reads_nothing():
    """Every index is out of range: the status says so and no load of the data is emitted
    (it clamped to index 0 of an empty buffer: a read outside the input)."""
    feeds = {"x": EMPTY_COLS, "i": np.array([0], np.int64)}
    compiled = ns.compile(ns.load_onnx(one_node("Gather", feeds, {"axis": 1})), threads=1)
    assert "in0[" not in compiled.source("loops")
    with pytest.raises(ns.InputError, match="index is out of range"):
        compiled.run(feeds)


EMPTY_MAP = np.zeros((1, 1, 0, 4), np.float32)


@pytest.mark.parametrize("op,feeds,attrs,message", [
    ("ArgMax", {"x": EMPTY_COLS}, {"axis": 1}, "axis 1 .* is empty"),
    ("ArgMin", {"x": EMPTY_COLS}, {"axis": -1}, "axis 1 .* is empty"),
    ("MaxPool", {"x": EMPTY_MAP}, {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1]}, "empty spatial axis"),
    ("AveragePool", {"x": EMPTY_MAP}, {"kernel_shape": [1, 1]}, "empty spatial axis"),
    ("GlobalMaxPool", {"x": EMPTY_MAP}, {}, "non-empty map"),
    ("GlobalAveragePool", {"x": EMPTY_MAP}, {}, "non-empty map"),     # was a ZeroDivisionError
], ids=lambda v: v if isinstance(v, str) else "")
def test_reducing_an_empty_axis_to_an_answer_is_refused(op, feeds, attrs, message):
    """ONNX Runtime fails these at run time; a max, mean or index of nothing is refused here."""
    with pytest.raises(ns.ShapeError, match=rf"the_{op.lower()}.*{message}"):
        ns.load_onnx(one_node(op, feeds, attrs))


def test_resize_cannot_size_an_empty_axis():
    feeds = {"x": np.zeros((1, 1, 0, 4), np.float32)}
    model = one_node("Resize", feeds, {"mode": "linear"}, {"r": np.zeros(0, np.float32), "s": np.zeros(0, np.float32),
                                                           "z": PADS(1, 1, 3, 8)})
    with pytest.raises(ns.ShapeError, match="the_resize.*axis 2 of length 0"):
        run_ours(model, feeds)


# negative pads crop first; edge, wrap and reflect then read the axis that is left
@pytest.mark.parametrize("mode,pads", [("wrap", (0, -1, 0, 2)), ("wrap", (0, 3, 0, -2)), ("reflect", (0, -1, 0, 2)),
                                       ("reflect", (1, 2, -1, -1)), ("edge", (0, -2, 0, 3))], ids=str)
def test_pad_after_cropping(mode, pads):
    feeds = {"x": GRID34}
    model = one_node("Pad", feeds, {"mode": mode}, {"p": PADS(*pads)}, opset=19)
    got = run_ours(model, feeds)
    assert_same(got, reference("Pad", feeds, {"mode": mode}, {"p": PADS(*pads)}))
    assert_same(got, run_ort(model, feeds))


# ---- rows 9-13 (issue 14 item 7): out-of-range attributes are refused in shape inference,
# naming the node and the attribute ----------------------------------------------------
NCHW = np.zeros((1, 2, 4, 4), np.float32)
W3 = np.ones((2, 2, 3, 3), np.float32)
T234 = np.zeros((2, 3, 4), np.float32)
ONES4 = np.ones(4, np.float32)
NO_ROI = np.zeros(0, np.float32)
SCALE2 = np.array([1, 1, 2, 2], np.float32)

# (op, feeds, attrs, consts, opset, what the message must say)
REFUSALS = [
    # row 9: zero strides, dilations, kernel, group, block size, channels
    ("Conv", {"x": NCHW}, {"dilations": [1, 0]}, {"w": W3}, 13, "dilations must be > 0"),
    ("Conv", {"x": NCHW}, {}, {"w": np.ones((0, 2, 3, 3), np.float32)}, 13, "channels"),
    ("ConvTranspose", {"x": NCHW}, {"strides": [0, 1]}, {"w": W3}, 13, "strides"),
    ("ConvTranspose", {"x": NCHW}, {"group": 0}, {"w": W3}, 13, "do not fit"),
    ("AveragePool", {"x": NCHW}, {"kernel_shape": [0, 2]}, {}, 13, "kernel_shape must be > 0"),
    ("MaxPool", {"x": NCHW}, {"kernel_shape": [2, 2], "dilations": [0, 1]}, {}, 13, "dilations"),
    ("DepthToSpace", {"x": NCHW}, {"blocksize": 0}, {}, 13, "blocksize 0"),
    ("LRN", {"x": NCHW}, {"size": 0}, {}, 13, "size must be > 0"),
    # row 10: values out of range
    ("MaxPool", {"x": NCHW}, {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, {}, 13, "pads .* smaller than kernel"),
    ("AveragePool", {"x": NCHW}, {"kernel_shape": [3, 3], "pads": [1, 1, 3, 1]}, {}, 13, "pads .* smaller"),
    ("ConvTranspose", {"x": NCHW}, {"output_padding": [2, 2], "strides": [2, 2]}, {"w": W3}, 13, "output_padding"),
    ("Pad", {"x": T234}, {"mode": "reflect"}, {"p": PADS(0, 0, 4, 0, 0, 0)}, 13, "reflect pads .* axis 2"),
    ("Mod", {"a": T234, "b": T234}, {"fmod": 0}, {}, 13, "fmod=1"),
    ("MaxPool", {"x": NCHW}, {"kernel_shape": [2, 2], "ceil_mode": 2}, {}, 13, "ceil_mode must be 0 or 1"),
    ("AveragePool", {"x": NCHW}, {"kernel_shape": [2, 2], "count_include_pad": 7}, {}, 13, "count_include_pad"),
    ("ReduceMax", {"x": T234}, {"axes": [1], "keepdims": 5}, {}, 13, "keepdims must be 0 or 1"),
    ("ReduceSum", {"x": T234}, {"noop_with_empty_axes": -1}, {}, 13, "noop_with_empty_axes"),
    ("ArgMax", {"x": T234}, {"select_last_index": 3}, {}, 13, "select_last_index"),
    ("Reshape", {"x": T234}, {"allowzero": 2}, {"s": PADS(24)}, 14, "allowzero"),
    ("Gemm", {"a": T234[0], "b": T234[0]}, {"transB": 2}, {}, 13, "transB"),
    ("Resize", {"x": NCHW}, {"exclude_outside": 2, "mode": "cubic"}, {"r": NO_ROI, "s": SCALE2}, 13,
     "exclude_outside"),
    ("Resize", {"x": NCHW}, {"antialias": 3}, {"r": NO_ROI, "s": SCALE2}, 18, "antialias"),
    # row 11: axes out of range, never wrapped modulo the rank
    ("Softmax", {"x": T234}, {"axis": 3}, {}, 11, "axis 3 is out of range"),
    ("LogSoftmax", {"x": T234}, {"axis": -4}, {}, 12, "axis -4 is out of range"),
    ("Softmax", {"x": T234}, {"axis": -100000}, {}, 13, "out of range"),
    ("LayerNormalization", {"x": T234}, {"axis": 3}, {"s": ONES4}, 17, "axis 3 is out of range"),
    ("LayerNormalization", {"x": T234}, {"axis": -4}, {"s": ONES4}, 17, "axis -4 is out of range"),
    ("Resize", {"x": NCHW}, {"axes": [4]}, {"r": NO_ROI, "s": np.array([2], np.float32)}, 18, "axes 4"),
    ("Concat", {"x": T234, "y": T234}, {"axis": 3}, {}, 13, "axis 3"),
    ("Flatten", {"x": T234}, {"axis": 4}, {}, 13, "axis 4"),
    ("ArgMin", {"x": T234}, {"axis": -4}, {}, 13, "axis -4"),
    ("Gather", {"x": T234, "i": PADS(0)}, {"axis": 3}, {}, 13, "axis 3"),
    ("Unsqueeze", {"x": T234}, {}, {"a": PADS(5)}, 13, "axes 5"),
    ("Slice", {"x": T234}, {}, {"s": PADS(0), "e": PADS(1), "a": PADS(3)}, 13, "axes 3"),
    ("Transpose", {"x": T234}, {"perm": [0, 1, 3]}, {}, 13, "perm"),
    # row 12: lengths that disagree
    ("ConvTranspose", {"x": NCHW}, {"dilations": [1, 1, 1]}, {"w": W3}, 13, "dilations has 3 values"),
    ("ConvTranspose", {"x": NCHW}, {"output_padding": [1]}, {"w": W3}, 13, "output_padding has 1"),
    ("AveragePool", {"x": NCHW}, {"kernel_shape": [2, 2], "strides": [1, 1, 1]}, {}, 13, "strides has 3"),
    ("Slice", {"x": T234}, {}, {"s": PADS(0, 0), "e": PADS(1), "a": PADS(0)}, 13, "differ in length"),
    ("Pad", {"x": T234}, {}, {"p": PADS(1, 1)}, 13, "2 pads for 3 axes"),
    ("Transpose", {"x": T234}, {"perm": [1, 0]}, {}, 13, "perm"),
    # row 13: Reshape to another element count, two -1s, a -2
    ("Reshape", {"x": T234}, {}, {"s": PADS(5, -1)}, 13, "cannot reshape"),
    ("Reshape", {"x": T234}, {}, {"s": PADS(-1, 4, -1)}, 13, "more than one -1"),
    ("Reshape", {"x": T234}, {}, {"s": PADS(-2, 12)}, 13, "negative"),
    ("Reshape", {"x": T234}, {"allowzero": 1}, {"s": PADS(0, -1)}, 14, "cannot reshape"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: f"{c[0]}-{c[5]}")
def test_out_of_range_attributes_are_refused(case):
    op, feeds, attrs, consts, opset, message = case
    model = one_node(op, feeds, attrs, consts, opset)
    with pytest.raises(ns.ShapeError, match=rf"the_{op.lower()}.*{message}"):
        ns.load_onnx(model)


@pytest.mark.parametrize("axis,opset", [(-3, 11), (2, 11), (0, 12), (-1, 13)])
def test_softmax_axes_in_range_still_work(axis, opset):
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    model = one_node("Softmax", feeds, {"axis": axis}, opset=opset)
    np.testing.assert_allclose(run_ours(model, feeds)[0], run_ort(model, feeds)[0], rtol=1e-5, atol=1e-7)


# ---- issue 14 item 11: Winograd only where its rounding matches the direct sum's ------
@pytest.mark.parametrize("big,pruned", [(None, False), (None, True), (1e6, False), (1e27, True), (-3e38, False)])
def test_winograd_falls_back_on_extreme_weights(big, pruned):
    """One weight far above its channel's others, meeting only zeros (input channel 0 is
    nonzero on the last row alone, which tap (0, 0) never reads): the direct sum stays
    exact; Winograd's F(2x2, 3x3) gave errors near eps * |w| (1.3 on outputs of 2)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    x = np.abs(rng.standard_normal((1, 16, 8, 8))).astype(np.float32)
    x[0, 0] = 0
    x[0, 0, 7, :] = 1.0
    if pruned:            # zeros are not small weights: a pruned layer keeps Winograd
        w[np.abs(w) < 0.1] = 0
    if big is not None:
        w[0, 0, 0, 0] = big
    feeds, attrs, consts = {"x": x}, {"pads": [1, 1, 1, 1]}, {"w": w}
    model = one_node("Conv", feeds, attrs, consts)
    compiled = ns.compile(ns.load_onnx(model), threads=1)
    got = compiled(x)
    want = reference("Conv", feeds, attrs, consts)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(got, run_ort(model, feeds)[0], rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert ("kernel test_k0_winogradconv" in compiled.source("loops")) == (big is None)


@pytest.mark.parametrize("shape,axes", [((1 << 21,), [0]), ((1 << 19, 4), [0]), ((1, 3, 1 << 17, 8), [0, 2, 3])])
def test_long_float32_sums_do_not_drift(shape, axes):
    """A million equal float32 terms added in sequence drift by 1e-3 (found by the
    loader fuzzer in a ReduceMean after a huge padded Conv); long sums accumulate
    in float64, so the mean of equal values is exact to float32 rounding."""
    graph = single_op_graph("ReduceMean", [("float32", shape)], {"keepdims": 0, "axes": axes})
    x = np.full(shape, 0.3, np.float32)
    got = next(iter(ns.compile(graph, threads=1).run({"x0": x}).values()))
    np.testing.assert_allclose(got, np.float32(0.3), rtol=1e-7)
