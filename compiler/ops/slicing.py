"""Expand and Slice: broadcasting copies and strided windows (gradient rules of
the reductions and of Concat use them)."""
import numpy as np

from ..lower.nests import flat_index, map_nest, output_loops, strided_map, strides
from .common import broadcast, const_ints, fail, norm_axis, tt
from .registry import gradient, register


def _expand_infer(attrs, types, consts, node):
    target = const_ints(node, consts[1], "shape")
    return [tt(types[0].dtype, broadcast(node, types[0].shape, target))]


register("Expand", inputs=(2, 2), infer=_expand_infer,
         reference=lambda attrs, x, s: np.broadcast_to(x, broadcast("ref", x.shape, tuple(s))).copy(),
         lower=lambda ctx: map_nest(ctx, ctx.outputs[0], ctx.out_types[0].shape, ctx.inputs[:1],
                                    [ctx.in_types[0].shape], lambda v: v))


@gradient("Expand")
def _expand_grad(g, node, dys, wanted):
    return [g.unbroadcast(dys[0], g.shape(node.inputs[0])), None]


def slice_plan(node, shape, starts, ends, axes=None, steps=None):
    """Per-axis (start, step, count) with ONNX's clamping rules."""
    rank = len(shape)
    axes = [norm_axis(node, a, rank, "axes") for a in (axes if axes is not None else range(len(starts)))]
    steps = list(steps) if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        fail(node, "Slice starts, ends, axes and steps differ in length")
    if len(set(axes)) != len(axes):
        fail(node, f"Slice repeats axes {axes}")
    plan = [(0, 1, d) for d in shape]
    for start, end, axis, step in zip(starts, ends, axes, steps):
        d = shape[axis]
        if step == 0:
            fail(node, "Slice step 0")
        start = start + d if start < 0 else start
        end = end + d if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), d), min(max(end, 0), d)
            count = max(0, -(-(end - start) // step))
        else:
            start, end = min(max(start, -1), d - 1), min(max(end, -1), d - 1)
            count = max(0, -(-(start - end) // -step))
        plan[axis] = (start, step, count)
    return plan


def _slice_args(attrs, consts):
    if consts and len(consts) > 1:      # opset >= 10: inputs
        vals = [None if c is None else [int(v) for v in np.asarray(c).reshape(-1)] for c in consts[1:]]
        vals += [None] * (4 - len(vals))
        return vals
    return [attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None]


def _slice_infer(attrs, types, consts, node):
    if len(types) > 1 and any(c is None for t, c in zip(types[1:], consts[1:]) if t is not None):
        fail(node, "Slice starts/ends/axes/steps must be constants")
    starts, ends, axes, steps = _slice_args(attrs, consts)
    plan = slice_plan(node, types[0].shape, starts, ends, axes, steps)
    return [tt(types[0].dtype, [c for _, _, c in plan])]


def _slice_reference(attrs, x, *rest):
    starts, ends, axes, steps = _slice_args(attrs, [x, *rest])
    plan = slice_plan("ref", x.shape, starts, ends, axes, steps)
    index = tuple(slice(s, s + st * c, st) if c else slice(0, 0) for s, st, c in plan)
    out = x[tuple(np.arange(s, s + st * c, st) if st < 0 else ix for (s, st, c), ix in zip(plan, index))] \
        if any(st < 0 for _, st, _ in plan) else x[index]
    return np.ascontiguousarray(out)


def _slice_lower(ctx):
    starts, ends, axes, steps = _slice_args(ctx.attrs, ctx.consts)
    shape = ctx.in_types[0].shape
    plan = slice_plan(ctx.node.name, shape, starts, ends, axes, steps)
    st = strides(shape)
    offset = sum(s * stride for (s, _, _), stride in zip(plan, st))
    strided_map(ctx, ctx.outputs[0], ctx.out_types[0].shape, ctx.inputs[:1],
                [tuple(step * stride for (_, step, _), stride in zip(plan, st))], lambda v: v,
                in_offsets=[offset])


register("Slice", inputs=(1, 5), attrs={"starts": None, "ends": None, "axes": None},
         infer=_slice_infer, reference=_slice_reference, lower=_slice_lower)


@gradient("Slice")
def _slice_grad(g, node, dys, wanted):
    """dy put back where it was read, zeros elsewhere: per axis, reverse a negative
    step, spread a step s by interleaving s - 1 zeros, then pad to the input's size."""
    x, dy = node.inputs[0], dys[0]
    shape = g.shape(x)
    consts = [None] + [g.b.constants.get(i) if i else None for i in node.inputs[1:]]
    plan = slice_plan(node.name, shape, *_slice_args(node.attrs, consts))
    if any(count == 0 for _, _, count in plan):
        return [g.zeros(shape, dy)] + [None] * (len(node.inputs) - 1)
    for axis, ((start, step, count), d) in enumerate(zip(plan, shape)):
        if step < 0:
            dy = g.slice(dy, [-1], [-count - 1], [axis], [-1])
            start, step = start + (count - 1) * step, -step
        if step > 1:
            cur = g.shape(dy)
            spread = g.reshape(dy, cur[:axis + 1] + (1,) + cur[axis + 1:])
            spread = _pad_axis(g, spread, axis + 1, 0, step - 1)
            dy = g.reshape(spread, cur[:axis] + (count * step,) + cur[axis + 1:])
        length = g.shape(dy)[axis]
        if start + length > d:
            dy, length = g.slice(dy, [0], [d - start], [axis]), d - start
        dy = _pad_axis(g, dy, axis, start, d - start - length)
    return [dy] + [None] * (len(node.inputs) - 1)


def _pad_axis(g, a, axis, before, after):
    if before == 0 and after == 0:
        return a
    rank = len(g.shape(a))
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    return g.op("Pad", [a, g.i64(pads)], mode="constant")


def _split_sizes(node, attrs, types, consts, num_outputs):
    shape = types[0].shape
    axis = norm_axis(node, attrs["axis"], len(shape))
    if len(types) > 1 and types[1] is not None:
        sizes = const_ints(node, consts[1], "split")
    elif attrs.get("split") is not None:
        sizes = tuple(attrs["split"])
    else:
        n = attrs.get("num_outputs") or num_outputs
        if not n or n <= 0:
            fail(node, "Split needs split sizes or num_outputs")
        chunk = -(-shape[axis] // n)
        sizes = tuple(min(chunk, shape[axis] - i * chunk) for i in range(n))
    if sum(sizes) != shape[axis] or any(s < 0 for s in sizes):
        fail(node, f"Split sizes {list(sizes)} do not add up to {shape[axis]} on axis {axis}")
    return axis, sizes


def _split_infer(attrs, types, consts, node):
    axis, sizes = _split_sizes(node, attrs, types, consts, attrs.get("_outputs"))
    shape = list(types[0].shape)
    return [tt(types[0].dtype, shape[:axis] + [s] + shape[axis + 1:]) for s in sizes]


def _split_reference(attrs, x, split=None):
    from ..ir.types import TensorType, DType
    types = [TensorType(DType.from_numpy(x.dtype), x.shape)] + ([None] if split is None else
                                                               [TensorType(DType.int64, split.shape)])
    axis, sizes = _split_sizes("ref", attrs, types, [x, split], attrs.get("_outputs"))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _split_lower(ctx):
    axis, sizes = _split_sizes(ctx.node.name, ctx.attrs, ctx.in_types, ctx.consts, len(ctx.outputs))
    shape = ctx.in_types[0].shape
    st = strides(shape)
    start = 0
    for out, t, size in zip(ctx.outputs, ctx.out_types, sizes):
        if size:
            strided_map(ctx, out, t.shape, ctx.inputs[:1], [st], lambda v: v, in_offsets=[start * st[axis]])
        start += size


register("Split", inputs=(1, 2), attrs={"axis": 0, "split": None, "num_outputs": None, "_outputs": None},
         infer=_split_infer, reference=_split_reference, lower=_split_lower)


@gradient("Split")
def _split_grad(g, node, dys, wanted):
    x = node.inputs[0]
    types = [g.b.types[i] if i else None for i in node.inputs]
    consts = [g.b.constants.get(i) if i else None for i in node.inputs]
    axis, sizes = _split_sizes(node.name, node.attrs, types, consts, len(node.outputs))
    shape = g.shape(x)
    parts = [dy if dy is not None else g.zeros(shape[:axis] + (size,) + shape[axis + 1:], x)
             for dy, size in zip(dys, sizes)]
    return [g.op("Concat", parts, axis=axis) if len(parts) > 1 else parts[0]] + [None] * (len(node.inputs) - 1)


def _tile_infer(attrs, types, consts, node):
    reps = const_ints(node, consts[1], "repeats")
    if len(reps) != types[0].rank or min(reps, default=1) < 0:
        fail(node, f"Tile repeats {list(reps)} do not fit rank {types[0].rank}")
    return [tt(types[0].dtype, [d * r for d, r in zip(types[0].shape, reps)])]


def _tile_lower(ctx):
    from ..lower.loop_ir import Load
    shape, out_shape = ctx.in_types[0].shape, ctx.out_types[0].shape
    with output_loops(ctx, out_shape, ctx.out_types[0].dtype) as vars_:
        src = sum(((v % d) * s for v, d, s in zip(vars_, shape, strides(shape))), 0)
        ctx.nb.store(ctx.outputs[0], flat_index(vars_, out_shape), Load(ctx.inputs[0], src))


register("Tile", inputs=(2, 2), infer=_tile_infer, lower=_tile_lower,
         reference=lambda attrs, x, r: np.tile(x, tuple(int(v) for v in r)))


@gradient("Tile")
def _tile_grad(g, node, dys, wanted):
    """Output index r * d + i reads x[i]: view dy as (r0, d0, r1, d1, ...), sum the r's."""
    x = node.inputs[0]
    shape = g.shape(x)
    reps = [int(v) for v in g.b.constants[node.inputs[1]].reshape(-1)]
    view = [v for r, d in zip(reps, shape) for v in (r, d)]
    summed = g.reduce_sum(g.reshape(dys[0], view), list(range(0, 2 * len(shape), 2)), keepdims=0)
    return [g.reshape(summed, shape), None]
