"""Resize, nearest mode: index maps per axis computed at compile time, then a gather."""
import math

import numpy as np

from ..errors import UnsupportedOpError
from ..lower.loop_ir import Load
from ..lower.nests import strides
from .common import fail, tt
from .registry import register

ATTRS = {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
         "nearest_mode": "round_prefer_floor", "cubic_coeff_a": -0.75, "exclude_outside": 0,
         "extrapolation_value": 0.0, "antialias": 0, "axes": None, "keep_aspect_ratio_policy": "stretch"}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _plan(node, attrs, shape, consts):
    """(output shape, per-axis scales) from the scales or sizes input."""
    if _s(attrs["mode"]) != "nearest":
        raise UnsupportedOpError("Resize", node=node, detail=f"mode '{_s(attrs['mode'])}'")
    if attrs.get("axes") is not None or attrs.get("antialias"):
        raise UnsupportedOpError("Resize", node=node, detail="axes / antialias")
    scales = consts[2] if len(consts) > 2 and consts[2] is not None and consts[2].size else None
    sizes = consts[3] if len(consts) > 3 and consts[3] is not None and consts[3].size else None
    if (scales is None) == (sizes is None):
        fail(node, "Resize needs exactly one of scales and sizes, as a constant")
    if sizes is not None:
        out = tuple(int(v) for v in sizes)
        if len(out) != len(shape) or min(out) <= 0:
            fail(node, f"Resize sizes {list(out)} do not fit input {shape}")
        return out, [o / i for o, i in zip(out, shape)]
    scales = [float(v) for v in scales]
    if len(scales) != len(shape) or min(scales) <= 0:
        fail(node, f"Resize scales {scales} do not fit input {shape}")
    return tuple(int(math.floor(d * s)) for d, s in zip(shape, scales)), scales


def source_index(attrs, in_len, out_len, scale):
    mode = _s(attrs["coordinate_transformation_mode"])
    x = np.arange(out_len, dtype=np.float64)
    if mode == "half_pixel":
        orig = (x + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        orig = (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
    elif mode == "align_corners":
        orig = x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(x)
    elif mode == "asymmetric":
        orig = x / scale
    elif mode == "tf_half_pixel_for_nn":
        orig = (x + 0.5) / scale
    else:
        raise UnsupportedOpError("Resize", detail=f"coordinate_transformation_mode '{mode}'")
    nearest = _s(attrs["nearest_mode"])
    if nearest == "floor":
        idx = np.floor(orig)
    elif nearest == "ceil":
        idx = np.ceil(orig)
    elif nearest == "round_prefer_ceil":
        idx = np.floor(orig + 0.5)
    else:   # round_prefer_floor
        idx = np.ceil(orig - 0.5)
    return np.clip(idx, 0, in_len - 1).astype(np.int64)


def _infer(attrs, types, consts, node):
    return [tt(types[0].dtype, _plan(node, attrs, types[0].shape, consts)[0])]


def _reference(attrs, x, roi=None, scales=None, sizes=None):
    out, sc = _plan("ref", attrs, x.shape, [x, roi, scales, sizes])
    for axis, (i, o, s) in enumerate(zip(x.shape, out, sc)):
        x = np.take(x, source_index(attrs, i, o, s), axis=axis)
    return x


def _lower(ctx):
    shape = ctx.in_types[0].shape
    out, sc = _plan(ctx.node.name, ctx.attrs, shape, ctx.consts)
    tables = [ctx.table(source_index(ctx.attrs, i, o, s)) for i, o, s in zip(shape, out, sc)]
    in_strides, out_strides = strides(shape), strides(out)
    nb, scopes, vars_ = ctx.nb, [], []
    for axis, d in enumerate(out):
        last = axis == len(out) - 1
        scope = nb.loop(d, "vector" if last else "serial", ctx.lanes() if last else 1)
        vars_.append(scope.__enter__())
        scopes.append(scope)
    src = sum((Load(t, v) * s for t, v, s in zip(tables, vars_, in_strides)), 0)
    nb.store(ctx.outputs[0], sum((v * s for v, s in zip(vars_, out_strides)), 0), ctx.inputs[0][src])
    for scope in reversed(scopes):
        scope.__exit__(None, None, None)


register("Resize", inputs=(1, 4), attrs=ATTRS, infer=_infer, reference=_reference, lower=_lower)
