"""Resize (every mode: nearest, linear, cubic; antialias, axes, aspect-ratio policy,
tf_crop_and_resize) and its deprecated form Upsample.

The resize is separable, so each resized axis is a small matrix of interpolation
weights: row o lists the input positions (taps) output o reads and their weights.
Those matrices are computed at compile time by running onnx's own reference
implementation on identity inputs, so every coordinate rule and filter is exactly
the specification's; the kernel then gathers the taps and sums their products."""
import functools

import numpy as np
import onnx
from onnx import helper

from ..lower.loop_ir import Const, Load, Reduce, Select
from ..lower.nests import flat_index, output_loops, strides
from ..errors import ShapeError
from .common import fail, norm_axis, tt
from .registry import gradient, register

ATTRS = {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
         "nearest_mode": "round_prefer_floor", "cubic_coeff_a": -0.75, "exclude_outside": 0,
         "extrapolation_value": 0.0, "antialias": 0, "axes": None, "keep_aspect_ratio_policy": "stretch"}
_ONNX_ATTRS = [k for k in ATTRS if k != "axes"]


def _onnx_resize(x, roi, scales, sizes, attrs):
    """onnx's reference Resize (the specification's own NumPy code)."""
    from onnx.reference import ReferenceEvaluator
    names = ["x", "roi" if roi is not None else "", "scales" if scales is not None else "",
             "sizes" if sizes is not None else ""]
    kw = {k: attrs[k] for k in _ONNX_ATTRS if attrs.get(k) is not None}
    if attrs.get("axes") is not None:
        kw["axes"] = list(attrs["axes"])
    node = helper.make_node("Resize", names, ["y"], **kw)
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    inputs = [helper.make_tensor_value_info(n, t, None) for n, t in
              zip(names, [elem, onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT, onnx.TensorProto.INT64]) if n]
    graph = helper.make_graph([node], "resize", inputs, [helper.make_tensor_value_info("y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    feeds = {n: v for n, v in zip(names, [x, roi, scales, sizes]) if n}
    return ReferenceEvaluator(model).run(None, feeds)[0]


def _inputs(consts):
    get = lambda i: consts[i] if len(consts) > i and consts[i] is not None and np.size(consts[i]) else None
    return get(1), get(2), get(3)


CHOICES = {"mode": ("nearest", "linear", "cubic"),
           "coordinate_transformation_mode": ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                              "align_corners", "asymmetric", "tf_half_pixel_for_nn",
                                              "tf_crop_and_resize"),
           "nearest_mode": ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"),
           "keep_aspect_ratio_policy": ("stretch", "not_larger", "not_smaller")}


def _plan(node, attrs, shape, consts):
    for name, allowed in CHOICES.items():     # onnx's reference raises ValueError on others
        if attrs.get(name) not in allowed:
            fail(node, f"Resize {name} '{attrs.get(name)}' is not one of {', '.join(allowed)}")
    roi, scales, sizes = _inputs(consts)
    if (scales is None) == (sizes is None):
        fail(node, "Resize needs exactly one of scales and sizes, as a constant")
    rank = len(shape)
    axes = [norm_axis(node, a, rank, "axes") for a in attrs["axes"]] if attrs.get("axes") is not None \
        else list(range(rank))
    given = scales if scales is not None else sizes
    if roi is not None and np.size(roi) != 2 * len(axes):
        fail(node, f"Resize roi has {np.size(roi)} values, not 2 x {len(axes)} axes")
    if len(given) != len(axes) or (scales is not None and min(scales) <= 0) or \
            (sizes is not None and any(z < 0 or z == 0 < shape[a] for z, a in zip(sizes, axes))):
        fail(node, f"Resize {'scales' if sizes is None else 'sizes'} {list(given)} do not fit input {shape}")
    if 0 in tuple(shape):
        out = _empty_out(node, attrs, tuple(shape), axes, roi, scales, sizes)
    else:
        out = _out_shape(tuple(shape), _key(roi), _key(scales), _key(sizes), _akey(attrs))
    return out, axes, roi, scales, sizes


def _empty_out(node, attrs, shape, axes, roi, scales, sizes):
    """An empty input gives an empty output: a length-0 axis scales to length 0 and
    cannot be sized to more (ONNX Runtime refuses that too); the other axes' lengths
    are those of a probe with 1 in place of each 0."""
    for k, a in enumerate(axes):
        if shape[a] == 0 and sizes is not None and sizes[k]:
            fail(node, f"Resize cannot size axis {a} of length 0 to {int(sizes[k])}")
    probe = tuple(d or 1 for d in shape)
    out = _out_shape(probe, _key(roi), _key(scales), _key(sizes), _akey(attrs))
    return tuple(0 if d == 0 else o for d, o in zip(shape, out))


def _key(a):
    return None if a is None else (a.dtype.str, tuple(np.asarray(a).reshape(-1).tolist()))


def _akey(attrs):
    return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in sorted(attrs.items()))


def _unkey(k):
    return None if k is None else np.asarray(k[1], dtype=np.dtype(k[0]))


PROBE_LIMIT = 1 << 20     # elements; a larger input's output shape is worked out without a probe
TAPS_LIMIT = 1 << 27      # entries of one axis's tap table (1 GiB of float64)


def _formula_shape(shape, scales, sizes, attrs):
    """The reference's own output-shape arithmetic (onnx op_resize._interpolate_nd),
    without allocating the input: a hostile 2**31-long axis must not cost 256 GiB."""
    rank = len(shape)
    axes = [a % rank for a in attrs["axes"]] if attrs.get("axes") is not None else list(range(rank))
    if sizes is None:
        factors = [1.0] * rank
        for i, a in enumerate(axes):
            factors[a] = float(scales[i])
        return tuple(int(np.float64(f) * d) for f, d in zip(factors, shape))
    out = list(shape)
    for i, a in enumerate(axes):
        out[a] = int(sizes[i])
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return tuple(out)
    ratios = [out[a] / shape[a] for a in axes]
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    return tuple(int(scale * d + 0.5) if i in axes else d for i, d in enumerate(shape))


@functools.lru_cache(maxsize=256)
def _out_shape(shape, roi, scales, sizes, akey):
    if int(np.prod(shape, dtype=object)) > PROBE_LIMIT:
        return _formula_shape(shape, _unkey(scales), _unkey(sizes), dict(akey))
    probe = np.zeros(shape, np.float32)
    return tuple(_onnx_resize(probe, _unkey(roi), _unkey(scales), _unkey(sizes), dict(akey)).shape)


def _infer(attrs, types, consts, node):
    return [tt(types[0].dtype, _plan(node, attrs, types[0].shape, consts)[0])]


def _reference(attrs, x, roi=None, scales=None, sizes=None):
    if x.size == 0:
        return np.zeros(_plan("Resize", attrs, x.shape, [x, roi, scales, sizes])[0], x.dtype)
    return _onnx_resize(x, roi, scales, sizes, attrs).astype(x.dtype)


def axis_taps(attrs, in_len, out_len, axis_roi, scale=None):
    """(indices [out, T], weights [out, T], valid [out]) of one resized axis; `scale`
    is the axis's scale factor where the coordinate rule needs it (not out/in)."""
    if in_len * max(in_len, out_len) > TAPS_LIMIT:      # the taps come from resizing an identity
        raise ShapeError(f"Resize of an axis of {in_len} to {out_len} needs a {in_len} x "
                         f"{max(in_len, out_len)} tap table, over the limit of {TAPS_LIMIT} entries")
    eye = np.eye(in_len, dtype=np.float64)
    kw = dict(attrs, axes=None, keep_aspect_ratio_policy="stretch")
    roi = np.asarray([axis_roi[0], 0.0, axis_roi[1], 1.0], np.float32) if axis_roi is not None else None
    sizes = np.asarray([out_len, in_len], np.int64)
    run = lambda x: _onnx_resize(x, roi, None, sizes, kw)
    if scale is not None:
        scales = np.asarray([scale, 1.0], np.float32)
        probe = _onnx_resize(eye, roi, scales, None, kw)
        if probe.shape[0] == out_len:
            run = lambda x: _onnx_resize(x, roi, scales, None, kw)
    matrix = run(eye)                                                  # [out, in]
    extrap = float(attrs.get("extrapolation_value", 0.0))
    valid = np.ones(out_len, bool)
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize" and extrap != 0.0:
        zeros = run(np.zeros_like(eye))
        valid = ~np.all(zeros == extrap, axis=1)
        matrix[~valid] = 0.0
    taps = max(1, int((np.abs(matrix) > 0).sum(axis=1).max()))
    index = np.zeros((out_len, taps), np.int64)
    weight = np.zeros((out_len, taps), np.float64)
    for o in range(out_len):
        nz = np.nonzero(matrix[o])[0]
        index[o, :len(nz)], weight[o, :len(nz)] = nz, matrix[o, nz]
    return index, weight, valid


def _axis_scale(attrs, axis, axes, shape, scales, sizes):
    if axis not in axes:
        return 1.0
    k = axes.index(axis)
    if scales is not None:
        return float(scales[k])
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return None
    ratios = [float(sizes[i]) / shape[a] for i, a in enumerate(axes)]
    return min(ratios) if policy == "not_larger" else max(ratios)


def _lower(ctx):
    shape, dtype = ctx.in_types[0].shape, ctx.out_types[0].dtype
    out, axes, roi, scales, sizes = _plan(ctx.node.name, ctx.attrs, shape, ctx.consts)
    if 0 in out:      # nothing to write (and no taps to read)
        return
    with output_loops(ctx, out, dtype) as vars_:
        _resize_body(ctx, vars_, shape, out, axes, roi, scales, sizes, dtype)


def _resize_body(ctx, vars_, shape, out, axes, roi, scales, sizes, dtype):
    rank, in_st, nb = len(shape), strides(shape), ctx.nb
    index, weight, valid, taps = 0, None, None, []
    for axis in range(rank):
        v = vars_[axis]
        if out[axis] == shape[axis] and axis not in axes:
            index = index + v * in_st[axis]
            continue
        axis_roi = None
        if roi is not None and ctx.attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
            k = axes.index(axis) if axis in axes else None
            axis_roi = (roi[k], roi[k + len(axes)]) if k is not None else (0.0, 1.0)
        idx, w, ok = axis_taps(ctx.attrs, shape[axis], out[axis], axis_roi, _axis_scale(
            ctx.attrs, axis, axes, shape, scales, sizes))
        t = nb.var("t")
        count = idx.shape[1]
        it = ctx.table(idx.reshape(-1))
        wt = ctx.table(w.reshape(-1).astype(dtype.numpy if dtype.is_float else np.float32))
        index = index + Load(it, v * count + t) * in_st[axis]
        term = Load(wt, v * count + t)
        weight = term if weight is None else weight * term
        taps.append((t, count))
        if not ok.all():
            vt = ctx.table(ok.astype(np.int32))
            flag = Load(vt, v).eq(Const(1, vt.dtype))
            valid = flag if valid is None else valid & flag
    value = ctx.inputs[0][index]
    body = value * weight if weight is not None else value
    for t, count in reversed(taps):
        body = Reduce("sum", t, count, body)
    if valid is not None:
        body = Select(valid, body, float(ctx.attrs.get("extrapolation_value", 0.0)))
    nb.store(ctx.outputs[0], flat_index(vars_, out), body)


register("Resize", inputs=(1, 4), attrs=ATTRS, infer=_infer, reference=_reference, lower=_lower)


@gradient("Resize")
def _resize_grad(g, node, dys, wanted):
    """Resize is linear and separable: per resized axis, dy times the transpose of
    the axis's interpolation matrix (the taps the lowering gathers, made dense)."""
    x = node.inputs[0]
    shape = g.shape(x)
    consts = [None] + [g.b.constants.get(i) if i else None for i in node.inputs[1:]]
    out, axes, roi, scales, sizes = _plan(node.name, node.attrs, shape, consts)
    dx = dys[0]
    for axis in range(len(shape)):
        if out[axis] == shape[axis] and axis not in axes:
            continue
        axis_roi = None
        if roi is not None and node.attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
            k = axes.index(axis) if axis in axes else None
            axis_roi = (roi[k], roi[k + len(axes)]) if k is not None else (0.0, 1.0)
        idx, w, _ = axis_taps(node.attrs, shape[axis], out[axis], axis_roi,
                              _axis_scale(node.attrs, axis, axes, shape, scales, sizes))
        matrix = np.zeros((out[axis], shape[axis]))
        np.add.at(matrix, (np.arange(out[axis])[:, None], idx), w)
        dx = g.axis_linear(dx, axis, matrix)
    return [dx] + [None] * (len(node.inputs) - 1)
