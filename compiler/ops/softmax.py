"""Softmax and LogSoftmax along one axis (opset 13 semantics), numerically stable."""
import numpy as np

from ..lower.loop_ir import Call, Reduce
from .common import norm_axis, require_float
from .registry import gradient, register


def _infer(attrs, types, consts, node):
    require_float(node, types[0])
    norm_axis(node, attrs["axis"], types[0].rank)
    return [types[0]]


def _reference(log):
    def reference(attrs, x):
        axis = attrs["axis"]
        z = x - x.max(axis=axis, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=axis, keepdims=True))
        return (z - lse if log else np.exp(z - lse)).astype(x.dtype)
    return reference


def _lower(log):
    def lower(ctx):
        t = ctx.in_types[0]
        axis = norm_axis(ctx.node.name, ctx.attrs["axis"], t.rank)
        e = t.shape[axis]
        outer = int(np.prod(t.shape[:axis], dtype=np.int64))
        inner = int(np.prod(t.shape[axis + 1:], dtype=np.int64))
        xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
        lanes = ctx.lanes(t.dtype)
        split = ("map", t.size)     # rows (columns) may run in parallel
        k = nb.var("k")
        # LogSoftmax keeps log(sum) where Softmax keeps the sum: one log per row or
        # column, not one per element (the same value either way)
        total = (lambda v: Call("log", (v,))) if log else (lambda v: v)
        if inner == 1:        # rows: vectorised reductions along the row
            mx, sm = ctx.local(1, t.dtype), ctx.local(1, t.dtype)
            with nb.loop(outer, hint="r", parallel_candidate=split) as r:
                nb.store(mx, 0, Reduce("max", k, e, xb[r * e + k], lanes))
                nb.store(sm, 0, total(Reduce("sum", k, e, Call("exp", (xb[r * e + k] - mx[0],)), lanes)))
                with nb.loop(e, "vector", lanes, hint="j") as j:
                    z = xb[r * e + j] - mx[0]
                    nb.store(out, r * e + j, z - sm[0] if log else Call("exp", (z,)) / sm[0])
            return
        mx, sm = ctx.scratch(outer * inner, t.dtype), ctx.scratch(outer * inner, t.dtype)
        with nb.loop(outer, hint="o", parallel_candidate=split) as o:     # columns: vectorised across `inner`
            with nb.loop(inner, "vector", lanes, hint="i") as i:
                at = lambda kk: xb[(o * e + kk) * inner + i]
                nb.store(mx, o * inner + i, Reduce("max", k, e, at(k)))
                nb.store(sm, o * inner + i,
                         total(Reduce("sum", k, e, Call("exp", (at(k) - mx[o * inner + i],)))))
            with nb.loop(e, hint="j") as j:
                with nb.loop(inner, "vector", lanes, hint="i") as i:
                    z = xb[(o * e + j) * inner + i] - mx[o * inner + i]
                    s = sm[o * inner + i]
                    nb.store(out, (o * e + j) * inner + i, z - s if log else Call("exp", (z,)) / s)
    return lower


register("Softmax", attrs={"axis": -1}, infer=_infer, reference=_reference(False), lower=_lower(False))
register("LogSoftmax", attrs={"axis": -1}, infer=_infer, reference=_reference(True), lower=_lower(True))


@gradient("Softmax")
def _softmax_grad(g, node, dys, wanted):
    y, dy, axis = node.outputs[0], dys[0], node.attrs["axis"]
    return [g.mul(y, g.sub(dy, g.reduce_sum(g.mul(dy, y), [axis])))]


@gradient("LogSoftmax")
def _log_softmax_grad(g, node, dys, wanted):
    y, dy, axis = node.outputs[0], dys[0], node.attrs["axis"]
    return [g.sub(dy, g.mul(g.unary("Exp", y), g.reduce_sum(dy, [axis])))]
