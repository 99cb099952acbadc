"""Data movement ops from ONNX: Pad, Gather (run-time, bounds-checked), DepthToSpace,
SpaceToDepth, and the compile-time generators ConstantOfShape and Range."""
import numpy as np

from ..ir.types import DType
from ..lower.loop_ir import Const, Select, cast, maximum, minimum
from ..lower.nests import flat_index, output_loops, strided_map, strides
from .common import const_ints, fail, norm_axis, tt
from .registry import gradient, non_differentiable, register

STATUS_BAD_INDEX = 7


# ---- Pad ----------------------------------------------------------------------------
def _pad_args(node, attrs, types, consts):
    rank = types[0].rank
    pads = const_ints(node, consts[1], "pads") if len(consts) > 1 and consts[1] is not None \
        else tuple(attrs.get("pads") or ())
    axes = tuple(norm_axis(node, a, rank, "axes") for a in const_ints(node, consts[3], "axes")) \
        if len(consts) > 3 and consts[3] is not None else tuple(range(rank))
    if len(pads) != 2 * len(axes):
        fail(node, f"Pad has {len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    value = consts[2] if len(consts) > 2 and consts[2] is not None else attrs.get("value", 0.0)
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        fail(node, f"unknown Pad mode '{mode}'")
    return begin, end, float(np.asarray(value).reshape(-1)[0]) if np.size(value) else 0.0, mode


def _pad_infer(attrs, types, consts, node):
    if len(types) > 1 and types[1] is not None and consts[1] is None:
        fail(node, "Pad pads must be a constant")
    begin, end, _, mode = _pad_args(node, attrs, types, consts)
    shape = [d + b + e for d, b, e in zip(types[0].shape, begin, end)]
    if min(shape, default=1) < 0:
        fail(node, f"Pad removes more than the input has: {shape}")
    _check_source_pads(node, mode, types[0].shape, begin, end)
    return [tt(types[0].dtype, shape)]


def _check_source_pads(node, mode, shape, begin, end):
    """edge, wrap and reflect read their pads from the input (after any cropping by
    negative pads): an empty axis has nothing to read, and reflect needs pads
    shorter than the axis (ONNX Runtime refuses both)."""
    for axis, (d, b, e) in enumerate(zip(shape, begin, end)):
        kept = d - max(-b, 0) - max(-e, 0)
        pad = max(b, e, 0)
        if mode != "constant" and pad and kept == 0:
            fail(node, f"Pad mode '{mode}' cannot pad axis {axis} of length 0")
        if mode == "reflect" and pad and pad >= kept:
            fail(node, f"Pad reflect pads {max(b, 0)}, {max(e, 0)} of axis {axis} must be less "
                       f"than its length {kept}")


def _pad_reference(attrs, x, pads=None, value=None, axes=None):
    from ..ir.types import TensorType
    types = [TensorType(DType.from_numpy(x.dtype), x.shape)]
    begin, end, val, mode = _pad_args("ref", attrs, types, [x, pads, value, axes])
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for d, b, e in zip(x.shape, begin, end))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=np.asarray(val, x.dtype))
    return np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _source(mode, i, n):
    """Index into an axis of length n for output position i (already shifted)."""
    if mode == "edge":
        return maximum(minimum(i, n - 1), 0)
    if mode == "wrap":
        return ((i % n) + n) % n
    if mode == "reflect":          # ... 2 1 | 0 1 2 ... n-1 | n-2 ...
        period = max(2 * n - 2, 1)
        r = ((i % period) + period) % period
        return Select(r < n, r, period - r)
    return i


def _pad_lower(ctx):
    begin, end, value, mode = _pad_args(ctx.node.name, ctx.attrs, ctx.in_types, ctx.consts)
    shape, out_shape = ctx.in_types[0].shape, ctx.out_types[0].shape
    with output_loops(ctx, out_shape, ctx.out_types[0].dtype) as vars_:
        _pad_body(ctx, vars_, begin, end, value, mode, shape, out_shape)


def _pad_body(ctx, vars_, begin, end, value, mode, shape, out_shape):
    inside, index = None, 0
    for v, b, e, n, s in zip(vars_, begin, end, shape, strides(shape)):
        i = v - b if b else v
        if mode == "constant":
            ok = (i >= 0) & (i < n)
            inside = ok if inside is None else inside & ok
        elif b or e:      # edge, wrap, reflect: over the axis left after negative pads crop it
            lo = max(-b, 0)
            i = _source(mode, v - max(b, 0), n - lo - max(-e, 0)) + lo
        index = index + i * s
    x = ctx.inputs[0]
    dtype = ctx.out_types[0].dtype
    fill = value if dtype.is_float else int(value)
    result = Select(inside, x.load(index, mask=inside), fill) if inside is not None else x[index]
    ctx.nb.store(ctx.outputs[0], flat_index(vars_, out_shape), result)


register("Pad", inputs=(1, 4), attrs={"mode": "constant", "pads": None, "value": None},
         infer=_pad_infer, reference=_pad_reference, lower=_pad_lower)


@gradient("Pad")
def _pad_grad(g, node, dys, wanted):
    """Constant mode: dx is dy cropped by the pads (a Pad by minus them). Other modes
    read some inputs several times: per padded axis, the transpose of the one-hot
    source matrix the reference gives on an identity."""
    x, dy = node.inputs[0], dys[0]
    types = [g.b.types[i] if i else None for i in node.inputs]
    consts = [g.b.constants.get(i) if i else None for i in node.inputs]
    begin, end, _, mode = _pad_args(node.name, node.attrs, types, consts)
    rest = [None] * (len(node.inputs) - 1)
    if mode == "constant":
        return [g.op("Pad", [dy, g.i64([-p for p in begin + end])], mode="constant")] + rest
    for axis, (b, e, n) in enumerate(zip(begin, end, g.shape(x))):
        if b or e:
            eye = np.eye(n)
            matrix = _pad_reference({"mode": mode}, eye, np.asarray([b, 0, e, 0], np.int64))
            dy = g.axis_linear(dy, axis, matrix)
    return [dy] + rest


# ---- Gather -------------------------------------------------------------------------
def _gather_lower(ctx):
    """out[o, j.., i] = data[o, idx[j..], i]; indices are checked first (a bad one sets
    the run's status, so the call fails cleanly) and clamped, so no access leaves data."""
    data, idx_t = ctx.in_types
    axis = norm_axis(ctx.node.name, ctx.attrs["axis"], data.rank)
    n = data.shape[axis]
    outer = int(np.prod(data.shape[:axis], dtype=np.int64))
    inner = int(np.prod(data.shape[axis + 1:], dtype=np.int64))
    count = idx_t.size
    xb, ib = ctx.inputs
    out, nb, status = ctx.outputs[0], ctx.nb, ctx.status()
    index = lambda j: cast(ib[j], DType.int64)        # int32 indices too
    with nb.loop(count, hint="j") as j:
        k = index(j)
        code, ok = Const(STATUS_BAD_INDEX, DType.int32), Const(0, DType.int32)
        flag = Select(k < -n, code, Select(k >= n, code, ok))
        nb.store(status, 0, maximum(status[0], flag))
    if n == 0:        # every index is out of range: the status says so, and nothing is read
        return
    with nb.loop(outer, hint="o") as o:
        with nb.loop(count, hint="j") as j:
            k = index(j)
            k = Select(k < 0, k + n, k)
            k = maximum(minimum(k, n - 1), 0)
            with nb.loop(inner, "vector", ctx.lanes(out.dtype), hint="i") as i:
                nb.store(out, (o * count + j) * inner + i, xb[(o * n + k) * inner + i])


def _attach_gather_lowering():
    from .registry import get_op
    get_op("Gather").lower = _gather_lower


_attach_gather_lowering()


# ---- DepthToSpace / SpaceToDepth ---------------------------------------------------
def _d2s_plan(node, attrs, shape, to_depth):
    b = int(attrs["blocksize"])
    n, c, h, w = shape
    if b <= 0 or (to_depth and (h % b or w % b)) or (not to_depth and c % (b * b)):
        fail(node, f"blocksize {b} does not fit {shape}")
    if to_depth:     # in (n, c, h', i, w', j) -> out (n, i, j, c, h', w'), CRD: (n, c, i, j, h', w')
        view = (n, c, h // b, b, w // b, b)
        order = (0, 1, 3, 5, 2, 4) if attrs.get("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    elif attrs.get("mode", "DCR") == "CRD":     # in (n, c', i, j, h, w) -> out (n, c', h, i, w, j)
        view = (n, c // (b * b), b, b, h, w)
        order = (0, 1, 4, 2, 5, 3)
    else:                                       # DCR: in (n, i, j, c', h, w)
        view = (n, b, b, c // (b * b), h, w)
        order = (0, 3, 4, 1, 5, 2)
    out_view = tuple(view[a] for a in order)
    out = (n, c * b * b, h // b, w // b) if to_depth else (n, c // (b * b), h * b, w * b)
    return view, order, out_view, out


def _d2s(to_depth):
    def infer(attrs, types, consts, node):
        if types[0].rank != 4:
            fail(node, "needs a 4-D input")
        return [tt(types[0].dtype, _d2s_plan(node, attrs, types[0].shape, to_depth)[3])]

    def reference(attrs, x):
        view, order, _, out = _d2s_plan("ref", attrs, x.shape, to_depth)
        return np.ascontiguousarray(x.reshape(view).transpose(order)).reshape(out)

    def lower(ctx):
        view, order, out_view, _ = _d2s_plan(ctx.node.name, ctx.attrs, ctx.in_types[0].shape, to_depth)
        st = strides(view)
        strided_map(ctx, ctx.outputs[0], out_view, ctx.inputs, [tuple(st[a] for a in order)], lambda v: v)
    return infer, reference, lower


for _name, _to_depth, _attrs in (("DepthToSpace", False, {"blocksize": None, "mode": "DCR"}),
                                 ("SpaceToDepth", True, {"blocksize": None, "mode": "DCR"})):
    _i, _r, _l = _d2s(_to_depth)
    register(_name, attrs=_attrs, infer=_i, reference=_r, lower=_l)


@gradient("DepthToSpace", "SpaceToDepth")
def _d2s_grad(g, node, dys, wanted):
    """Both are permutations, each the other's inverse (same blocksize and mode)."""
    inverse = "SpaceToDepth" if node.op == "DepthToSpace" else "DepthToSpace"
    return [g.op(inverse, [dys[0]], **node.attrs)]


# ---- compile-time generators --------------------------------------------------------
def _cos_value(attrs):
    value = attrs.get("value")
    return np.asarray(value).reshape(-1)[:1] if value is not None else np.zeros(1, np.float32)


register("ConstantOfShape", attrs={"value": None},
         infer=lambda attrs, types, consts, node: [tt(DType.from_numpy(_cos_value(attrs).dtype),
                                                      const_ints(node, consts[0], "shape"))],
         reference=lambda attrs, shape: np.full(tuple(int(d) for d in shape), _cos_value(attrs)[0]))
non_differentiable("its input is a shape", "ConstantOfShape")


def _range_count(node, start, limit, delta):
    if delta == 0:
        fail(node, "Range delta is 0")
    return max(int(np.ceil((limit - start) / delta)), 0)


def _range_infer(attrs, types, consts, node):
    if any(c is None for c in consts):
        fail(node, "Range start, limit and delta must be constants")
    start, limit, delta = (np.asarray(c).reshape(-1)[0] for c in consts)
    return [tt(types[0].dtype, (_range_count(node, start, limit, delta),))]


register("Range", inputs=(3, 3), infer=_range_infer,
         reference=lambda attrs, s, l, d: (s + np.arange(_range_count("ref", s, l, d)) * d).astype(s.dtype))
non_differentiable("its inputs are compile-time scalars", "Range")
