"""Expand and Slice: broadcasting copies and strided windows (gradient rules of
the reductions and of Concat use them)."""
import numpy as np

from ..lower.nests import map_nest, strided_map, strides
from .common import broadcast, const_ints, fail, norm_axis, tt
from .registry import register


def _expand_infer(attrs, types, consts, node):
    target = const_ints(node, consts[1], "shape")
    return [tt(types[0].dtype, broadcast(node, types[0].shape, target))]


register("Expand", inputs=(2, 2), infer=_expand_infer,
         reference=lambda attrs, x, s: np.broadcast_to(x, broadcast("ref", x.shape, tuple(s))).copy(),
         lower=lambda ctx: map_nest(ctx, ctx.outputs[0], ctx.out_types[0].shape, ctx.inputs[:1],
                                    [ctx.in_types[0].shape], lambda v: v))


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
