"""FusedElementwise: a DAG of element-wise ops evaluated in one loop nest.

Built by passes/elementwise_fusion.py. `program` lists the steps in order, each
(op, attrs as pairs, args) where an arg "i<k>" is the node's k-th input and "s<j>"
step j's value; the last step is the result, broadcast to `shape`. Intermediates
live in registers: one pass over memory instead of one per op. Each step is the
registered op itself (its shape rule, NumPy reference and `expr`), so nothing
about an op is declared twice."""
import numpy as np

from ..lower.nests import map_nest
from .common import broadcast, fail, tt
from .registry import get_op, register


def run_program(attrs, inputs, apply):
    """Evaluate the steps on `inputs` (types, arrays or loop-IR values);
    apply(opdef, attrs, args) evaluates one step."""
    values = []
    for op, items, args in attrs["program"]:
        vals = [inputs[int(a[1:])] if a[0] == "i" else values[int(a[1:])] for a in args]
        values.append(apply(get_op(op), dict(items), vals))
    return values[-1]


def _infer(attrs, types, consts, node):
    shape = tuple(attrs["shape"])
    last = run_program(attrs, types, lambda d, at, ts: d.infer(at, ts, [None] * len(ts), node)[0])
    if broadcast(node, last.shape, shape) != shape:
        fail(node, f"fused result {last.shape} does not broadcast to {shape}")
    return [tt(last.dtype, shape)]


def _reference(attrs, *xs):
    y = run_program(attrs, xs, lambda d, at, vs: np.asarray(d.reference(at, *vs)))
    return np.broadcast_to(y, tuple(attrs["shape"])).copy()


def _lower(ctx):
    map_nest(ctx, ctx.outputs[0], ctx.out_types[0].shape, ctx.inputs, [t.shape for t in ctx.in_types],
             lambda *loads: run_program(ctx.attrs, loads, lambda d, at, vs: d.expr(at, *vs)))


register("FusedElementwise", inputs=(1, 1 << 16), attrs={"program": None, "shape": None},
         infer=_infer, reference=_reference, lower=_lower, domain="nutshell")
