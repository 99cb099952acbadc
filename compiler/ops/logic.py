"""Comparisons and Where: the primitives that gradient rules (ReLU's mask, Huber's
branches) and losses (one-hot labels) are composed from."""
import numpy as np

from ..ir.types import DType
from ..lower.loop_ir import Select
from ..lower.nests import map_nest
from .common import broadcast, fail, same_dtype, tt
from .registry import gradient, register, zero_gradient

COMPARE = {"Greater": (np.greater, lambda a, b: a > b), "Less": (np.less, lambda a, b: a < b),
           "Equal": (np.equal, lambda a, b: a.eq(b)),
           "GreaterOrEqual": (np.greater_equal, lambda a, b: a >= b),
           "LessOrEqual": (np.less_equal, lambda a, b: a <= b)}


def _compare_infer(attrs, types, consts, node):
    same_dtype(node, types)
    return [tt(DType.bool, broadcast(node, types[0].shape, types[1].shape))]


def _map_lower(fn):
    def lower(ctx):
        map_nest(ctx, ctx.outputs[0], ctx.out_types[0].shape, ctx.inputs,
                 [t.shape for t in ctx.in_types], fn)
    return lower


for _name, (_np, _expr) in COMPARE.items():
    register(_name, inputs=(2, 2), infer=_compare_infer, lower=_map_lower(_expr),
             expr=(lambda f: lambda attrs, a, b: f(a, b))(_expr),
             reference=(lambda f: lambda attrs, a, b: f(a, b))(_np))
gradient(*COMPARE)(zero_gradient)


def _where_infer(attrs, types, consts, node):
    if types[0].dtype != DType.bool:
        fail(node, f"Where condition must be bool, got {types[0].dtype.value}")
    dtype = same_dtype(node, types[1:])
    return [tt(dtype, broadcast(node, types[0].shape, types[1].shape, types[2].shape))]


register("Where", inputs=(3, 3), infer=_where_infer, lower=_map_lower(lambda c, a, b: Select(c, a, b)),
         expr=lambda attrs, c, a, b: Select(c, a, b),
         reference=lambda attrs, c, a, b: np.where(c, a, b))


@gradient("Where")
def _where_grad(g, node, dys, wanted):
    (c, a, b), dy = node.inputs, dys[0]
    zero = g.zero_like(dy)
    return [None, g.unbroadcast(g.where(c, dy, zero), g.shape(a)) if wanted[1] else None,
            g.unbroadcast(g.where(c, zero, dy), g.shape(b)) if wanted[2] else None]
