"""MaxPool, AveragePool (2-D, padding, ceil mode, dilations) and GlobalAveragePool."""
from functools import reduce

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.types import DType
from ..lower.loop_ir import THREAD_INDEX, Reduce, Select, maximum
from ..lower.nests import strides
from ..schedule.loops import splits
from .common import fail, require_float, tt
from .conv_common import window_geometry
from .reduce import nan_equal
from .registry import gradient, register

POOL_ATTRS = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None, "kernel_shape": None,
              "pads": None, "strides": None}


def _geometry(node, attrs, x, pool):
    if attrs.get("kernel_shape") is None:
        fail(node, f"{pool} needs kernel_shape")
    if x.rank < 3:
        fail(node, f"{pool} needs an input of rank >= 3, got {x.shape}")
    if 0 in x.shape[2:]:      # windows of padding alone: nothing to take the max or mean of
        fail(node, f"{pool} over an empty spatial axis: input {x.shape}")
    geometry = window_geometry(node, attrs, x.shape[2:], attrs["kernel_shape"],
                               ceil_mode=bool(attrs.get("ceil_mode", 0)))
    for k, b, e in zip(attrs["kernel_shape"], geometry[0], geometry[1]):
        if b >= k or e >= k:     # a window of padding alone (ONNX Runtime refuses it too)
            fail(node, f"{pool} pads {list(geometry[0] + geometry[1])} must be smaller than "
                       f"kernel_shape {list(attrs['kernel_shape'])}")
    return geometry


def _pool_infer(pool):
    def infer(attrs, types, consts, node):
        x = types[0]
        if pool != "MaxPool":
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
        lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        pad_value = lowest if pool == "MaxPool" else 0.0
        extra = [max((o - 1) * s + (k - 1) * d + 1 - (xs + b + e), 0)
                 for o, s, k, d, xs, b, e in zip(out, strides, kernel, dil, x.shape[2:], begin, end)]
        widths = [(0, 0), (0, 0)] + [(b, e + ex) for b, e, ex in zip(begin, end, extra)]
        xp = np.pad(x.astype(np.float64), widths, constant_values=float(pad_value))
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
                # strict: the first maximum keeps its index; a NaN is the maximum
                better = (patch > acc) | (np.isnan(patch) & ~np.isnan(acc))
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
        begin, end, st, dil, out = _geometry(ctx.node.name, ctx.attrs, x, pool)
        kernel = ctx.attrs["kernel_shape"]
        spatial = x.shape[2:]
        nc = x.shape[0] * x.shape[1]
        plane, out_plane = int(np.prod(spatial)), int(np.prod(out))
        xb, out_buf, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
        # (a GPU would run a per-thread-scratch loop on one thread: cuda/grid.py)
        if pool == "MaxPool" and len(ctx.outputs) == 1 and max(kernel) <= SEPARABLE_MAX_TAPS \
                and not ctx.target.triple.startswith("nvptx") and _rows_shape(x, kernel, begin, end, st, dil):
            return _max_by_rows(ctx, (begin, st, dil, out), kernel[:2])
        with nb.loop(nc, hint="nc", parallel_candidate=("map", nc * out_plane * int(np.prod(kernel)))) as p:
            scopes, ys = [], []
            for axis, d in enumerate(out):
                last = axis == len(out) - 1
                scope = nb.loop(d, "vector" if last else "serial", ctx.lanes(x.dtype) if last else 1)
                ys.append(scope.__enter__())
                scopes.append(scope)
            ks = [nb.var("k") for _ in kernel]
            pos = [y * s + (k * d - b) for y, s, k, d, b in zip(ys, st, ks, dil, begin)]
            inside = None
            for q, n in zip(pos, spatial):
                ok = (q >= 0) & (q < n)
                inside = ok if inside is None else inside & ok
            flat = p * plane + sum((q * s for q, s in zip(pos, strides(spatial))), 0)
            value = xb.load(flat, mask=inside)
            at = p * out_plane + sum((y * s for y, s in zip(ys, strides(out))), 0)

            def over_window(op, body):
                for k, size in reversed(list(zip(ks, kernel))):
                    body = Reduce(op, k, size, body)
                return body
            if pool == "MaxPool":
                lowest = float("-inf") if x.dtype.is_float else int(np.iinfo(x.dtype.numpy).min)
                nb.store(out_buf, at, over_window("max", Select(inside, value, lowest)))
                if len(ctx.outputs) > 1:       # Indices: the first maximum, row-major
                    hit = inside & nan_equal(value, out_buf[at])
                    nb.store(ctx.outputs[1], at, over_window("min", Select(hit, flat, 1 << 62)))
            else:
                if ctx.attrs.get("count_include_pad", 0):
                    counted = None
                    for q, n, e in zip(pos, spatial, end):
                        ok = q < n + e
                        counted = ok if counted is None else counted & ok
                else:
                    counted = inside
                count = over_window("sum", Select(counted, 1.0, 0.0))
                nb.store(out_buf, at, over_window("sum", value) / count)
            for scope in reversed(scopes):
                scope.__exit__(None, None, None)
    return lower


SEPARABLE_MAX_TAPS = 8       # larger windows take the general nest (its taps are loops, not unrolled)


def _rows_shape(x, kernel, begin, end, strides, dil):
    """A 2-D window: NCHW, or the blocked layout's NCHW16c (ops/blocked.py) whose lane
    axis has a window of 1."""
    return len(kernel) == 2 or len(kernel) == 3 and x.rank == 5 and kernel[2] == strides[2] == dil[2] == 1 \
        and begin[2] == end[2] == 0


def _max_by_rows(ctx, geometry, kernel):
    """A 2-D MaxPool in two passes per plane: the max down each output row's window
    rows into a per-thread plane padded with the lowest value (contiguous loads, the
    only masked ones), then the max along those rows at the stride (unmasked loads of
    rows stored a while ago: a row read right after its store stalls on forwarding).
    kh + kw loads per output instead of kh x kw masked, often strided, ones: GoogLeNet's
    3x3 pools took 1.2-1.9x ONNX Runtime's time with the general nest, now 0.5-1.0x.
    In the blocked layout a pixel is a vector of `group` channels (every load whole)."""
    x = ctx.in_types[0]
    (pt, pl), (sh, sw), (dh, dw), (oh, ow) = geometry[0][:2], geometry[1][:2], geometry[2][:2], geometry[3][:2]
    (kh, kw), (h, w) = kernel, x.shape[2:4]
    group = x.shape[4] if x.rank == 5 else 1
    planes = x.shape[0] * x.shape[1]
    wp = (ow - 1) * sw + (kw - 1) * dw + 1          # the input columns the windows reach
    lowest = float("-inf") if x.dtype.is_float else int(np.iinfo(x.dtype.numpy).min)
    xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
    split = ("map", planes * oh * ow * group * (kh + kw))
    rows = ctx.scratch(oh * wp * group * (min(ctx.threads, planes) if splits(ctx.target, split) else 1), x.dtype)

    def pixels(count, hint, body):      # body(column, lane) over a row's pixels, vectorised
        if group == 1:
            with nb.loop(count, "vector", ctx.lanes(x.dtype), hint=hint) as col:
                body(col, 0)
        else:
            with nb.loop(count, hint=hint) as col:
                with nb.loop(group, "vector", ctx.lanes(x.dtype), hint="l") as lane:
                    body(col, lane)

    # per thread when the schedule splits the planes
    with nb.loop(planes, hint="nc", parallel_candidate=split) as p:
        base = THREAD_INDEX * (oh * wp * group)
        with nb.loop(oh, hint="y") as y:
            def down(px, lane):
                ix = px - pl
                taps = []
                for i in range(kh):
                    iy = y * sh + (i * dh - pt)
                    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
                    taps.append(Select(ok, xb.load(((p * h + iy) * w + ix) * group + lane, mask=ok), lowest))
                nb.store(rows, base + (y * wp + px) * group + lane, reduce(maximum, taps))
            pixels(wp, "px", down)
        with nb.loop(oh, hint="y") as y:
            def along(ox, lane):
                taps = [rows[base + (y * wp + ox * sw + j * dw) * group + lane] for j in range(kw)]
                nb.store(out, ((p * oh + y) * ow + ox) * group + lane, reduce(maximum, taps))
            pixels(ow, "x", along)


register("MaxPool", attrs=dict(POOL_ATTRS, storage_order=0), infer=_pool_infer("MaxPool"),
         reference=_pool_reference("MaxPool"), lower=_pool_lower("MaxPool"))
register("AveragePool", attrs=dict(POOL_ATTRS, count_include_pad=0),
         infer=_pool_infer("AveragePool"), reference=_pool_reference("AveragePool"),
         lower=_pool_lower("AveragePool"))


def _as_2d(g, node):
    """(x, attrs) of a 1-D pooling viewed as 2-D with a unit first axis: the
    gradient ops are written for 2-D windows. 3-D pooling has no gradient yet."""
    x, attrs = node.inputs[0], dict(node.attrs)
    shape = g.shape(x)
    if len(shape) == 4:
        return x, attrs
    if len(shape) != 3:
        from ..errors import CompileError
        raise CompileError(f"no gradient for {len(shape) - 2}-D {node.op} yet (node '{node.name}')")
    for key, unit in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)):
        if attrs.get(key) is not None:
            attrs[key] = (unit,) + tuple(attrs[key])
    if attrs.get("pads") is not None:
        attrs["pads"] = (0, attrs["pads"][0], 0, attrs["pads"][1])
    return g.reshape(x, _lift(shape)), attrs


def _lift(shape):
    return shape[:2] + (1,) + shape[2:] if len(shape) == 3 else shape


@gradient("MaxPool")
def _maxpool_grad(g, node, dys, wanted):
    x, attrs = _as_2d(g, node)
    dy = g.reshape(dys[0], _lift(g.shape(node.outputs[0])))
    indices = g.reshape(node.outputs[1], g.shape(dy)) if len(node.outputs) > 1 and node.outputs[1] else \
        g.op("MaxPool", [x], outputs=2, **attrs)[1]
    dx = g.op("MaxPoolGrad", [dy, indices], input_shape=g.shape(x), **attrs)
    return [g.reshape(dx, g.shape(node.inputs[0]))]


@gradient("AveragePool")
def _avgpool_grad(g, node, dys, wanted):
    x, attrs = _as_2d(g, node)
    dy = g.reshape(dys[0], _lift(g.shape(node.outputs[0])))
    return [g.reshape(g.op("AveragePoolGrad", [dy], input_shape=g.shape(x), **attrs), g.shape(node.inputs[0]))]


def _global_infer(attrs, types, consts, node):
    x = types[0]
    require_float(node, x)
    if x.rank < 3 or 0 in x.shape[2:]:
        fail(node, f"GlobalAveragePool needs rank >= 3 and a non-empty map, got {x.shape}")
    return [tt(x.dtype, x.shape[:2] + (1,) * (x.rank - 2))]


def _global_lower(ctx):
    x = ctx.in_types[0]
    nc, hw = x.shape[0] * x.shape[1], x.size // (x.shape[0] * x.shape[1])
    xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
    with nb.loop(nc, hint="nc", parallel_candidate=("map", x.size)) as p:
        k = nb.var("k")
        nb.store(out, p, Reduce("sum", k, hw, xb[p * hw + k], ctx.lanes(x.dtype)) * (1.0 / hw))


register("GlobalAveragePool", infer=_global_infer, lower=_global_lower,
         reference=lambda attrs, x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True))


@gradient("GlobalAveragePool")
def _global_avg_grad(g, node, dys, wanted):
    shape = g.shape(node.inputs[0])
    return [g.expand(g.scale(dys[0], 1.0 / int(np.prod(shape[2:]))), shape)]
