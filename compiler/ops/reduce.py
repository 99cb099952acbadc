"""ReduceSum, ReduceMean and Maxout: nested Reduce expressions over merged axes."""
import numpy as np

from ..ir.types import DType
from ..lower.loop_ir import Call, Reduce, Select, cast
from ..lower.nests import column_sums, strides
from .common import const_ints, fail, norm_axis, tt
from .registry import gradient, non_differentiable, register


def reduce_axes(node, attrs, types, consts):
    rank = types[0].rank
    if len(types) > 1 and types[1] is not None:
        axes = const_ints(node, consts[1], "axes")
    else:
        axes = attrs.get("axes")
    if not axes:
        return () if attrs.get("noop_with_empty_axes", 0) else tuple(range(rank))
    axes = tuple(sorted({norm_axis(node, a, rank, "axes") for a in axes}))
    if len(axes) != len(tuple(attrs.get("axes") or axes)):
        fail(node, f"repeated axes {list(axes)}")
    return axes


def _infer(attrs, types, consts, node):
    for flag in ("keepdims", "noop_with_empty_axes"):     # ONNX Runtime reads 2 as 0: refuse it
        if attrs.get(flag, 0) not in (0, 1):
            fail(node, f"{flag} must be 0 or 1, got {attrs[flag]}")
    axes = reduce_axes(node, attrs, types, consts)
    shape = types[0].shape
    if attrs.get("keepdims", 1):
        out = tuple(1 if i in axes else d for i, d in enumerate(shape))
    else:
        out = tuple(d for i, d in enumerate(shape) if i not in axes)
    return [tt(types[0].dtype, out)]


def _reference(fn):
    def reference(attrs, x, axes_input=None):
        axes = reduce_axes("ref", attrs, [_T(x.shape), None if axes_input is None else _T(())],
                           [None, axes_input])
        return np.asarray(fn(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)))).astype(x.dtype)
    return reference


class _T:
    def __init__(self, shape):
        self.shape, self.rank = tuple(shape), len(shape)


# A float32 sum of more terms than this accumulates in float64: each lane adds its
# terms in sequence, and a million equal terms drift by 1e-3 in float32.
LONG_SUM = 1 << 16


def reduce_nest(ctx, x_shape, reduced, op, scale=None, pre=None, post=None):
    """out[kept] = post(op over reduced axes of pre(x)). Adjacent axes of the same
    kind are merged; the innermost axis is vectorised whether kept or reduced."""
    dims, kinds = [], []
    for axis, d in enumerate(x_shape):
        red = axis in reduced
        if dims and kinds[-1] == red:
            dims[-1] *= d
        else:
            dims.append(d)
            kinds.append(red)
    xs = strides(dims)
    kept = [d for d, red in zip(dims, kinds) if not red]
    os_ = strides(kept)
    xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
    lanes = ctx.lanes(out.dtype)
    total = int(np.prod(x_shape, dtype=np.int64))
    if op == "sum" and post is None and kinds[-1] is False and kinds[:-1] == [True] and \
            out.dtype == DType.float32 and total // dims[-1] <= LONG_SUM:
        load = lambda rows, c: xb[rows[0] * xs[0] + c]                  # noqa: E731
        return column_sums(nb, out, dims[:1], dims[-1], (lambda r, c: pre(load(r, c))) if pre else load,
                           lanes, total, scale)
    scopes, kept_vars, red_vars = [], [], []
    for i, (d, red) in enumerate(zip(dims, kinds)):
        if red:
            red_vars.append((nb.var("k"), d, i))
            continue
        last = i == len(dims) - 1
        scope = nb.loop(d, "vector", lanes) if last else \
            nb.loop(d, parallel_candidate=("map", total) if not kept_vars else None)
        kept_vars.append((scope.__enter__(), i))
        scopes.append(scope)
    index = sum((v * xs[i] for v, i in kept_vars), 0) + sum((v * xs[i] for v, _, i in red_vars), 0)
    body = pre(xb[index]) if pre else xb[index]
    count = int(np.prod([d for _, d, _ in red_vars], dtype=np.int64))
    wide = op == "sum" and body.dtype == DType.float32 and count > LONG_SUM
    if wide:
        body = cast(body, DType.float64)
    for n, (v, d, i) in enumerate(reversed(red_vars)):
        vector = n == 0 and kinds[-1] and i == len(dims) - 1
        body = Reduce(op, v, d, body, lanes if vector else 1)
    if wide:
        body = cast(body, DType.float32)
    if scale is not None:
        body = body * scale
    if post is not None:
        body = post(body)
    nb.store(out, sum((v * os_[j] for j, (v, _) in enumerate(kept_vars)), 0), body)
    for scope in reversed(scopes):
        scope.__exit__(None, None, None)


def _lower(op, mean=False):
    def lower(ctx):
        t = ctx.in_types[0]
        axes = reduce_axes(ctx.node.name, ctx.attrs, ctx.in_types, ctx.consts)
        count = int(np.prod([t.shape[a] for a in axes], dtype=np.int64))
        reduce_nest(ctx, t.shape, set(axes), op, (1.0 / count) if mean and count else None)
    return lower


ATTRS = {"axes": None, "keepdims": 1, "noop_with_empty_axes": 0}
_SQUARE = (lambda v: v * v)
COMPOSED = {   # name: (NumPy reference, pre, post) around a sum
    "ReduceSumSquare": (lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims), _SQUARE, None),
    "ReduceL2": (lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)), _SQUARE,
                 lambda v: Call("sqrt", (v,))),
    "ReduceL1": (lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
                 lambda v: Call("abs", (v,)), None),
    "ReduceLogSumExp": (lambda x, axis, keepdims: np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims)),
                        lambda v: Call("exp", (v,)), lambda v: Call("log", (v,))),
}


def _composed_lower(pre, post):
    def lower(ctx):
        axes = reduce_axes(ctx.node.name, ctx.attrs, ctx.in_types, ctx.consts)
        reduce_nest(ctx, ctx.in_types[0].shape, set(axes), "sum", None, pre, post)
    return lower


for _name, (_fn, _pre, _post) in COMPOSED.items():
    register(_name, inputs=(1, 2), attrs=ATTRS, infer=_infer, reference=_reference(_fn),
             lower=_composed_lower(_pre, _post))
def _extreme(fn, pick):
    """max/min that give the identity (-inf / +inf, the integer limits) over an empty axis."""
    def reduce(x, axis, keepdims):
        if x.dtype == np.bool_:
            initial = pick == "min"
        elif x.dtype.kind == "f":
            initial = -np.inf if pick == "max" else np.inf
        else:
            info = np.iinfo(x.dtype)
            initial = info.min if pick == "max" else info.max
        return fn(x, axis=axis, keepdims=keepdims, initial=initial)
    return reduce


for _name, _fn, _op, _mean in (("ReduceSum", np.sum, "sum", False), ("ReduceMean", np.mean, "sum", True),
                               ("ReduceMax", _extreme(np.max, "max"), "max", False),
                               ("ReduceMin", _extreme(np.min, "min"), "min", False)):
    register(_name, inputs=(1, 2), attrs=ATTRS, infer=_infer, reference=_reference(_fn),
             lower=_lower(_op, _mean))


# name: dx from (GradContext, x, y and dy with the reduced axes kept as 1s, axes)
REDUCE_GRADS = {
    "ReduceSum": lambda g, x, y, dy, axes: g.expand(dy, g.shape(x)),
    "ReduceMean": lambda g, x, y, dy, axes: g.expand(g.scale(dy, 1.0 / max(1, int(np.prod(
        [g.shape(x)[a] for a in axes])))), g.shape(x)),
    "ReduceSumSquare": lambda g, x, y, dy, axes: g.mul(dy, g.scale(x, 2.0)),
    "ReduceL1": lambda g, x, y, dy, axes: g.mul(dy, g.unary("Sign", x)),
    "ReduceL2": lambda g, x, y, dy, axes: g.mul(dy, g.div(x, g.where(  # 0 where the norm is 0
        g.cmp("Greater", y, 0.0), y, g.scalar(1.0, y)))),
    "ReduceLogSumExp": lambda g, x, y, dy, axes: g.mul(dy, g.unary("Exp", g.sub(x, y))),
    "ReduceMax": lambda g, x, y, dy, axes: _to_extremes(g, x, y, dy, axes),
    "ReduceMin": lambda g, x, y, dy, axes: _to_extremes(g, x, y, dy, axes),
}


def _to_extremes(g, x, y, dy, axes):
    """dy to the elements that were the max (min), ties sharing it evenly."""
    if not axes:
        return g.expand(dy, g.shape(x))
    hit = g.op("Equal", [x, y])
    return g.share_ties(hit, dy, g.reduce_sum(g.cast_like(hit, dy), list(axes)))


@gradient(*REDUCE_GRADS)
def _reduce_grad(g, node, dys, wanted):
    x = node.inputs[0]
    shape = g.shape(x)
    types = [g.b.types[i] if i else None for i in node.inputs]
    consts = [g.b.constants.get(i) if i else None for i in node.inputs]
    axes = reduce_axes(node.name, node.attrs, types, consts)
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    dy, y = g.reshape(dys[0], kept), g.reshape(node.outputs[0], kept)
    return [REDUCE_GRADS[node.op](g, x, y, dy, axes)] + [None] * (len(node.inputs) - 1)


def _maxout_infer(attrs, types, consts, node):
    x, k = types[0], attrs["pool_size"]
    if k <= 0 or x.rank < 2 or x.shape[1] % k:
        fail(node, f"Maxout pool_size {k} must divide the features of {x.shape}")
    return [tt(x.dtype, (x.shape[0], x.shape[1] // k) + x.shape[2:])]


def _maxout_reference(attrs, x):
    k = attrs["pool_size"]
    return x.reshape((x.shape[0], x.shape[1] // k, k) + x.shape[2:]).max(axis=2)


def _maxout_lower(ctx):
    x, k = ctx.in_types[0], ctx.attrs["pool_size"]
    shape = (x.shape[0], x.shape[1] // k, k) + x.shape[2:]
    reduce_nest(ctx, shape, {2}, "max")


register("Maxout", attrs={"pool_size": None}, infer=_maxout_infer, reference=_maxout_reference,
         lower=_maxout_lower, domain="nutshell")


@gradient("Maxout")
def _maxout_grad(g, node, dys, wanted):
    x, y = node.inputs[0], node.outputs[0]
    k = node.attrs["pool_size"]
    shape = g.shape(x)
    grouped = (shape[0], shape[1] // k, k) + tuple(shape[2:])
    one = (shape[0], shape[1] // k, 1) + tuple(shape[2:])
    spread = _to_extremes(g, g.reshape(x, grouped), g.reshape(y, one), g.reshape(dys[0], one), [2])
    return [g.reshape(spread, shape)]


def _arg_infer(attrs, types, consts, node):
    t = types[0]
    axis = norm_axis(node, attrs["axis"], t.rank)
    if t.shape[axis] == 0 and 0 not in t.shape[:axis] + t.shape[axis + 1:]:
        fail(node, f"axis {axis} of {t.shape} is empty: there is no index to give")
    shape = tuple(1 if i == axis else d for i, d in enumerate(t.shape)) if attrs["keepdims"] else \
        tuple(d for i, d in enumerate(t.shape) if i != axis)
    from ..ir.types import DType
    return [tt(DType.int64, shape)]


def _arg_reference(fn):
    def reference(attrs, x):
        axis = attrs["axis"] % x.ndim
        if attrs["select_last_index"]:
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        return np.expand_dims(idx, axis).astype(np.int64) if attrs["keepdims"] else idx.astype(np.int64)
    return reference


def _arg_lower(op):
    def lower(ctx):
        from ..ir.types import DType
        t = ctx.in_types[0]
        axis = norm_axis(ctx.node.name, ctx.attrs["axis"], t.rank)
        outer = int(np.prod(t.shape[:axis], dtype=np.int64))
        e = t.shape[axis]
        inner = int(np.prod(t.shape[axis + 1:], dtype=np.int64))
        xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
        best = ctx.scratch(outer * inner, t.dtype)
        last = ctx.attrs["select_last_index"]
        with nb.loop(outer, hint="o") as o:
            with nb.loop(inner, "vector", ctx.lanes(DType.int64), hint="i") as i:
                k = nb.var("k")
                at = lambda kk: xb[(o * e + kk) * inner + i]
                nb.store(best, o * inner + i, Reduce(op, k, e, at(k)))
                hit = Select(nan_equal(at(k), best[o * inner + i]), k, -1 if last else e)
                nb.store(out, o * inner + i, Reduce("max" if last else "min", k, e, hit))
    return lower


def nan_equal(value, best):
    """value == best, where a NaN best (max and min propagate it) is hit by a NaN:
    the index of the first NaN, as NumPy and PyTorch give."""
    return Select(best.ne(best), value.ne(value), value.eq(best))


ARG_ATTRS = {"axis": 0, "keepdims": 1, "select_last_index": 0}
register("ArgMax", attrs=ARG_ATTRS, infer=_arg_infer, reference=_arg_reference(np.argmax), lower=_arg_lower("max"))
register("ArgMin", attrs=ARG_ATTRS, infer=_arg_infer, reference=_arg_reference(np.argmin), lower=_arg_lower("min"))
non_differentiable("integer output (an index)", "ArgMax", "ArgMin")


def _global_max_infer(attrs, types, consts, node):
    x = types[0]
    if x.rank < 3 or 0 in x.shape[2:]:
        fail(node, f"GlobalMaxPool needs rank >= 3 and a non-empty map, got {x.shape}")
    return [tt(x.dtype, x.shape[:2] + (1,) * (x.rank - 2))]


register("GlobalMaxPool", infer=_global_max_infer,
         reference=lambda attrs, x: x.max(axis=tuple(range(2, x.ndim)), keepdims=True),
         lower=lambda ctx: reduce_nest(ctx, ctx.in_types[0].shape, set(range(2, ctx.in_types[0].rank)), "max"))


@gradient("GlobalMaxPool")
def _global_max_grad(g, node, dys, wanted):
    x = node.inputs[0]
    return [_to_extremes(g, x, node.outputs[0], dys[0], list(range(2, len(g.shape(x)))))]
