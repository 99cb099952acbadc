"""Pooling gradients (nutshell domain), as gathers: each input pixel sums over the
windows that cover it, so threads never share an output element.

MaxPoolGrad(dY, Indices) routes each window's gradient to its first maximum (as
PyTorch does); AveragePoolGrad(dY) spreads it over the window, divided by the
window's element count (a table computed at compile time)."""
import numpy as np

from ..lower.loop_ir import Reduce, Select
from .common import tt
from .conv_grad import _source
from .pool import POOL_ATTRS, _T, _geometry
from .registry import non_differentiable, register


def _infer(attrs, types, consts, node):
    return [tt(types[0].dtype, attrs["input_shape"])]


def _maxpool_grad_reference(attrs, dy, indices):
    dx = np.zeros(int(np.prod(attrs["input_shape"])), dtype=np.float64)
    np.add.at(dx, indices.reshape(-1), dy.reshape(-1).astype(np.float64))
    return dx.reshape(attrs["input_shape"]).astype(dy.dtype)


def _window_count(attrs, shape):
    """The element count each average window divides by (AveragePool's rule)."""
    begin, end, strides, dil, out = _geometry("ref", attrs, _T(shape), "AveragePool")
    limit = [s + e for s, e in zip(shape[2:], end)] if attrs.get("count_include_pad", 0) else shape[2:]
    low = [-b for b in begin] if attrs.get("count_include_pad", 0) else [0, 0]
    count = np.zeros(out)
    for oy, ox in np.ndindex(*out):
        for i, j in np.ndindex(*attrs["kernel_shape"]):
            iy = oy * strides[0] + i * dil[0] - begin[0]
            ix = ox * strides[1] + j * dil[1] - begin[1]
            count[oy, ox] += low[0] <= iy < limit[0] and low[1] <= ix < limit[1]
    return count


def _avgpool_grad_reference(attrs, dy):
    shape = tuple(attrs["input_shape"])
    plain = {k: v for k, v in attrs.items() if k != "input_shape"}
    begin, _, strides, dil, out = _geometry("ref", plain, _T(shape), "AveragePool")
    scale = 1.0 / _window_count(plain, shape)
    dx = np.zeros(shape, dtype=np.float64)
    kernel = attrs["kernel_shape"]
    for oy, ox in np.ndindex(*out):
        g = dy[:, :, oy, ox].astype(np.float64) * scale[oy, ox]
        for i, j in np.ndindex(*kernel):
            iy, ix = oy * strides[0] + i * dil[0] - begin[0], ox * strides[1] + j * dil[1] - begin[1]
            if 0 <= iy < shape[2] and 0 <= ix < shape[3]:
                dx[:, :, iy, ix] += g
    return dx.astype(dy.dtype)


def _lower(pool):
    def lower(ctx):
        shape = tuple(ctx.attrs["input_shape"])
        plain = {k: v for k, v in ctx.attrs.items() if k != "input_shape"}
        (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = _geometry(ctx.node.name, plain, _T(shape), pool)
        kh, kw = plain["kernel_shape"]
        n, c, h, w = shape
        dyb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
        if pool == "AveragePool":
            scale = ctx.table((1.0 / _window_count(plain, shape)).astype(out.dtype.numpy).reshape(-1))
        split = ("map", n * c * h * w)       # the planes may run in parallel
        if pool == "MaxPool" and (kh, kw) == (sh, sw) and (pt, pl, dh, dw) == (0, 0, 1, 1) and \
                not any(plain.get("pads") or ()):
            exact = (oh * kh, ow * kw) == (h, w)
            return (_phased_maxpool_grad if exact else _tiled_maxpool_grad)(ctx, shape, (kh, kw), (oh, ow), split)
        with nb.loop(n * c, hint="nc", parallel_candidate=split) as p:
            with nb.loop(h, hint="y") as iy:
                with nb.loop(w, "vector", ctx.lanes(out.dtype), hint="x") as ix:
                    i, j = nb.var("ki"), nb.var("kj")
                    oy, ok_y = _source(iy + (pt - i * dh), sh, oh)
                    ox, ok_x = _source(ix + (pl - j * dw), sw, ow)
                    ok = ok_y & ok_x
                    at = p * (oh * ow) + oy * ow + ox
                    grad = dyb.load(at, mask=ok)
                    if pool == "MaxPool":
                        mine = ctx.inputs[1].load(at, mask=ok).eq(p * (h * w) + iy * w + ix)
                        grad = Select(ok & mine, grad, 0.0)
                    else:
                        grad = grad * scale.load(oy * ow + ox, mask=ok)
                    nb.store(out, p * (h * w) + iy * w + ix,
                             Reduce("sum", i, kh, Reduce("sum", j, kw, grad)))
    return lower


def _tiled_maxpool_grad(ctx, shape, kernel, out, split):
    """Windows that tile the input (kernel == stride, no padding: the usual 2x2/2):
    each input pixel lies in at most one window, so it reads one gradient, not kh x kw
    masked ones."""
    n, c, h, w = shape
    (kh, kw), (oh, ow) = kernel, out
    dyb, indices, out_buf, nb = ctx.inputs[0], ctx.inputs[1], ctx.outputs[0], ctx.nb
    with nb.loop(n * c, hint="nc", parallel_candidate=split) as p:
        with nb.loop(h, hint="y") as iy:
            with nb.loop(w, "vector", ctx.lanes(out_buf.dtype), hint="x") as ix:
                oy, ox = iy // kh, ix // kw
                ok = (oy < oh) & (ox < ow)
                at = p * (oh * ow) + oy * ow + ox
                here = p * (h * w) + iy * w + ix
                mine = ok & indices.load(at, mask=ok).eq(here)
                nb.store(out_buf, here, Select(mine, dyb.load(at, mask=ok), 0.0))


def _phased_maxpool_grad(ctx, shape, kernel, out, split):
    """Windows that tile the input exactly (the U-Net's 2x2/2 on even maps), by
    phases: phase (py, px) writes the input pixels (kh qy + py, kw qx + px), so dY and
    Indices are read contiguously along qx (not a gather through ix // kw per lane)
    and the pixels stored at stride kw (a shuffle and masked store); the kh rows of
    one window row are written while its dY and Indices are in L1."""
    n, c, h, w = shape
    (kh, kw), (oh, ow) = kernel, out
    dyb, indices, out_buf, nb = ctx.inputs[0], ctx.inputs[1], ctx.outputs[0], ctx.nb
    with nb.loop(n * c, hint="nc", parallel_candidate=split) as p:
        with nb.loop(oh, hint="qy") as qy:
            for py in range(kh):
                for px in range(kw):
                    with nb.loop(ow, "vector", ctx.lanes(out_buf.dtype), hint="qx") as qx:
                        at = p * (oh * ow) + qy * ow + qx
                        here = p * (h * w) + (qy * kh + py) * w + qx * kw + px
                        mine = indices.load(at).eq(here)
                        nb.store(out_buf, here, Select(mine, dyb.load(at), 0.0))


register("MaxPoolGrad", inputs=(2, 2), attrs=dict(POOL_ATTRS, storage_order=0, input_shape=None),
         infer=_infer, reference=_maxpool_grad_reference, lower=_lower("MaxPool"), domain="nutshell")
register("AveragePoolGrad", inputs=(1, 1), attrs=dict(POOL_ATTRS, count_include_pad=0, input_shape=None),
         infer=_infer, reference=_avgpool_grad_reference, lower=_lower("AveragePool"), domain="nutshell")
non_differentiable("a backward op: second-order gradients are not supported", "MaxPoolGrad", "AveragePoolGrad")
