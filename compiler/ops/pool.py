"""MaxPool, AveragePool (2-D, padding, ceil mode, dilations) and GlobalAveragePool."""
import numpy as np

from ..errors import UnsupportedOpError
from ..ir.types import DType
from ..lower.loop_ir import Reduce, Select
from ..lower.nests import PARALLEL_MIN_WORK
from .common import fail, require_float, tt
from .conv import window_geometry
from .registry import register

POOL_ATTRS = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None,
              "pads": None, "strides": None}


def _geometry(node, attrs, x, pool):
    if attrs.get("kernel_shape") is None:
        fail(node, f"{pool} needs kernel_shape")
    if x.rank < 3:
        fail(node, f"{pool} needs an input of rank >= 3, got {x.shape}")
    return window_geometry(node, attrs, x.shape[2:], attrs["kernel_shape"],
                           ceil_mode=bool(attrs.get("ceil_mode", 0)))


def _pool_infer(pool):
    def infer(attrs, types, consts, node):
        x = types[0]
        require_float(node, x)
        if pool == "MaxPool" and attrs.get("storage_order", 0) != 0:
            raise UnsupportedOpError("MaxPool", node=node, detail="storage_order=1")
        out = _geometry(node, attrs, x, pool)[4]
        shape = x.shape[:2] + out
        return [tt(x.dtype, shape)] + ([tt(DType.int64, shape)] if pool == "MaxPool" else [])
    return infer


def _pool_reference(pool):
    def reference(attrs, x):
        begin, end, strides, dil, out = _geometry("ref", attrs, _T(x.shape), pool)
        kernel = attrs["kernel_shape"]
        pad_value = -np.inf if pool == "MaxPool" else 0.0
        extra = [max((o - 1) * s + (k - 1) * d + 1 - (xs + b + e), 0)
                 for o, s, k, d, xs, b, e in zip(out, strides, kernel, dil, x.shape[2:], begin, end)]
        widths = [(0, 0), (0, 0)] + [(b, e + ex) for b, e, ex in zip(begin, end, extra)]
        xp = np.pad(x.astype(np.float64), widths, constant_values=pad_value)
        valid = np.pad(np.ones(x.shape[2:]), widths[2:])                      # real input
        padded = np.pad(np.ones([s + b + e for s, b, e in zip(x.shape[2:], begin, end)]),
                        [(0, ex) for ex in extra])                             # input + pads
        acc = np.full(x.shape[:2] + out, pad_value)
        count = np.zeros(out)
        flat = np.pad(np.arange(x.size, dtype=np.int64).reshape(x.shape), widths, constant_values=-1)
        index = np.full(acc.shape, -1, dtype=np.int64)
        for kidx in np.ndindex(*kernel):
            sl = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                       for k, d, o, s in zip(kidx, dil, out, strides))
            patch = xp[(slice(None), slice(None)) + sl]
            if pool == "MaxPool":
                better = patch > acc            # strict: the first maximum keeps its index
                index = np.where(better, flat[(slice(None), slice(None)) + sl], index)
                acc = np.maximum(acc, patch)
            else:
                acc = acc + patch
                count = count + (padded[sl] if attrs.get("count_include_pad", 0) else valid[sl])
        if pool == "MaxPool":
            return acc.astype(x.dtype), index
        return (acc / count).astype(x.dtype)
    return reference


class _T:   # the part of a TensorType that _geometry reads
    def __init__(self, shape):
        self.shape, self.rank = tuple(shape), len(shape)


def _pool_lower(pool):
    def lower(ctx):
        x = ctx.in_types[0]
        if x.rank != 4:
            raise UnsupportedOpError(pool, detail=f"{x.rank - 2}-D pooling is not lowered yet")
        (pt, pl), (pb, pr), (sh, sw), (dh, dw), (oh, ow) = _geometry(ctx.node.name, ctx.attrs, x, pool)
        kh, kw = ctx.attrs["kernel_shape"]
        n, c, h, w = x.shape
        xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
        big = n * c * oh * ow * kh * kw >= PARALLEL_MIN_WORK
        with nb.loop(n * c, "parallel" if big else "serial", hint="nc") as p:
            with nb.loop(oh, hint="y") as y:
                with nb.loop(ow, "vector", ctx.lanes(x.dtype), hint="x") as xx:
                    i, j = nb.var("ki"), nb.var("kj")
                    iy = y * sh + (i * dh - pt)
                    ix = xx * sw + (j * dw - pl)
                    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                    value = xb.load(p * (h * w) + iy * w + ix, mask=inside)
                    at = p * (oh * ow) + y * ow + xx
                    if pool == "MaxPool":
                        body = Select(inside, value, float("-inf"))
                        nb.store(out, at, Reduce("max", i, kh, Reduce("max", j, kw, body)))
                        if len(ctx.outputs) > 1:       # Indices: the first maximum, row-major
                            flat = p * (h * w) + iy * w + ix
                            hit = inside & value.eq(out[at])
                            first = Select(hit, flat, 1 << 62)
                            nb.store(ctx.outputs[1], at, Reduce("min", i, kh, Reduce("min", j, kw, first)))
                    else:
                        total = Reduce("sum", i, kh, Reduce("sum", j, kw, value))
                        if ctx.attrs.get("count_include_pad", 0):
                            counted = (iy < h + pb) & (ix < w + pr)
                        else:
                            counted = inside
                        count = Reduce("sum", i, kh, Reduce("sum", j, kw,
                                                            Select(counted, 1.0, 0.0)))
                        nb.store(out, at, total / count)
    return lower


register("MaxPool", attrs=dict(POOL_ATTRS, storage_order=0), infer=_pool_infer("MaxPool"),
         reference=_pool_reference("MaxPool"), lower=_pool_lower("MaxPool"))
register("AveragePool", attrs=dict(POOL_ATTRS, count_include_pad=0),
         infer=_pool_infer("AveragePool"), reference=_pool_reference("AveragePool"),
         lower=_pool_lower("AveragePool"))


def _global_infer(attrs, types, consts, node):
    x = types[0]
    require_float(node, x)
    if x.rank < 3:
        fail(node, f"GlobalAveragePool needs rank >= 3, got {x.shape}")
    return [tt(x.dtype, x.shape[:2] + (1,) * (x.rank - 2))]


def _global_lower(ctx):
    x = ctx.in_types[0]
    nc, hw = x.shape[0] * x.shape[1], x.size // (x.shape[0] * x.shape[1])
    xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
    with nb.loop(nc, "parallel" if x.size >= PARALLEL_MIN_WORK else "serial", hint="nc") as p:
        k = nb.var("k")
        nb.store(out, p, Reduce("sum", k, hw, xb[p * hw + k], ctx.lanes(x.dtype)) * (1.0 / hw))


register("GlobalAveragePool", infer=_global_infer, lower=_global_lower,
         reference=lambda attrs, x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True))
