"""Reverse-mode autodiff as a pass: the backward graph is ordinary IR, built from
the per-op VJP rules in the registry (each declared beside its op with @gradient,
or listed in NON_DIFFERENTIABLE with a reason), then fused, planned and compiled
like the forward graph (tinygrad's gradient table, Glow's differentiate)."""
import numpy as np

from ..errors import CompileError
from ..ir.graph import GraphBuilder
from ..ir.types import DType
from ..ops import NON_DIFFERENTIABLE, get_op
from .expand import expand_composites


class GradContext:
    """What a VJP rule uses to emit IR: ops, constants, shapes, un-broadcasting."""

    def __init__(self, builder):
        self.b = builder

    def op(self, name, inputs, outputs=1, **attrs):
        return self.b.add_node(name, list(inputs), attrs, num_outputs=outputs)

    def const(self, value, dtype=DType.float32):
        return self.b.add_constant(np.asarray(value, dtype=dtype.numpy))

    def shape(self, name):
        return self.b.types[name].shape

    def dtype(self, name):
        return self.b.types[name].dtype

    def scalar(self, value, like):
        return self.const(value, self.dtype(like))

    def add(self, a, b): return self.op("Add", [a, b])
    def sub(self, a, b): return self.op("Sub", [a, b])
    def mul(self, a, b): return self.op("Mul", [a, b])
    def div(self, a, b): return self.op("Div", [a, b])
    def neg(self, a): return self.op("Neg", [a])

    def scale(self, a, factor):
        return a if factor == 1.0 else self.mul(a, self.scalar(factor, a))

    def where(self, cond, a, b):
        return self.op("Where", [cond, a, b])

    def zero_like(self, name):
        return self.scalar(0.0, name)

    def cmp(self, op, a, value):
        """a <op> scalar (op: Greater, Less, GreaterOrEqual, ...)."""
        return self.op(op, [a, value if isinstance(value, str) else self.scalar(value, a)])

    def keep(self, cond, a):
        """a where cond holds, else 0."""
        return self.where(cond, a, self.zero_like(a))

    def unary(self, name, x, **attrs):
        return self.op(name, [x], **attrs)

    def i64(self, values):
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1), DType.int64)

    def axis_linear(self, a, axis, matrix):
        """out[.., i, ..] = sum_o a[.., o, ..] * matrix[o, i] along `axis`: the transpose
        of a per-axis linear map (Resize, a reflecting Pad), as a sparse AxisTaps."""
        from ..ops.axis_taps import sparse_columns
        index, weight = sparse_columns(matrix)
        return self.op("AxisTaps", [a, self.const(index, DType.int64), self.const(weight, self.dtype(a))],
                       axis=axis)

    def zeros(self, shape, like):
        return self.op("Expand", [self.zero_like(like), self.i64(shape)])

    def cast_like(self, a, like):
        """`a` (a mask, an integer tensor) converted to `like`'s float type."""
        if self.dtype(a) == self.dtype(like):
            return a
        from onnx import helper
        return self.op("Cast", [a], to=helper.np_dtype_to_tensor_dtype(self.dtype(like).numpy))

    def slice(self, a, starts, ends, axes, steps=None):
        ins = [a, self.i64(starts), self.i64(ends), self.i64(axes)] + ([self.i64(steps)] if steps else [])
        return self.op("Slice", ins)

    def share_ties(self, hit, dy, count):
        """dy where a max/min was hit, split evenly among tied elements (as PyTorch)."""
        return self.mul(self.cast_like(hit, dy), self.div(dy, count))

    def reshape(self, a, shape):
        if tuple(self.shape(a)) == tuple(shape):
            return a
        return self.op("Reshape", [a, self.const(np.asarray(shape, dtype=np.int64), DType.int64)])

    def expand(self, a, shape):
        if tuple(self.shape(a)) == tuple(shape):
            return a
        return self.op("Expand", [a, self.const(np.asarray(shape, dtype=np.int64), DType.int64)])

    def reduce_sum(self, a, axes, keepdims=1):
        return self.op("ReduceSum", [a, self.const(np.asarray(axes, dtype=np.int64), DType.int64)],
                       keepdims=keepdims)

    def unbroadcast(self, grad, shape):
        """Sum `grad` (of the broadcast shape) down to `shape`."""
        gshape = self.shape(grad)
        if tuple(gshape) == tuple(shape):
            return grad
        lead = len(gshape) - len(shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == 1 and gshape[lead + i] != 1]
        summed = self.reduce_sum(grad, axes) if axes else grad
        return self.reshape(summed, shape)


def differentiate(graph, loss, wrt, stop=()):
    """Append the gradient of scalar `loss` with respect to each name in `wrt`;
    no gradient flows through the values in `stop` (torch's .detach()).
    Returns (builder holding forward + backward, {name: gradient value name})."""
    graph = expand_composites(graph)     # LSTM & co. differentiate through their primitives
    b = GraphBuilder(graph.name)
    b.inputs, b.nodes = list(graph.inputs), list(graph.nodes)
    b.constants, b.types = dict(graph.constants), dict(graph.types)
    g = GradContext(b)
    needs = set(wrt)
    for node in graph.nodes:           # values that depend on what we differentiate
        if any(i in needs for i in node.inputs if i):
            needs.update(o for o in node.outputs if o and o not in stop)
    if loss not in needs:
        raise CompileError(f"the loss '{loss}' does not depend on {sorted(wrt)}")
    grads = {loss: g.const(np.ones(graph.types[loss].shape), graph.types[loss].dtype)}
    for node in reversed(graph.nodes):
        dys = [grads.get(o) if o else None for o in node.outputs]
        wanted = [bool(i) and i in needs for i in node.inputs]
        if all(d is None for d in dys) or not any(wanted):
            continue
        rule = get_op(node.op).grad
        if rule is None:
            why = NON_DIFFERENTIABLE.get(node.op, "no rule yet")
            raise CompileError(f"no gradient for op {node.op} (node '{node.name}'): {why}")
        dxs = rule(g, node, dys, wanted)
        for name, dx, want in zip(node.inputs, dxs, wanted):
            if want and dx is not None:
                grads[name] = g.add(grads[name], dx) if name in grads else dx
    missing = [w for w in wrt if w not in grads]
    for w in missing:       # a parameter the loss ignores: zero gradient
        grads[w] = g.op("Expand", [g.scalar(0.0, w),
                                   g.const(np.asarray(graph.types[w].shape, np.int64), DType.int64)])
    return b, {w: grads[w] for w in wrt}
