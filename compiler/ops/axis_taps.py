"""AxisTaps (nutshell domain): a sparse linear map along one axis,
out[.., i, ..] = sum_t weight[i, t] * x[.., index[i, t], ..], index and weight
constant tables [out_len, taps]. Gradient rules emit it for the transpose of a
per-axis map (Resize's interpolation, a reflecting or edge Pad): each output element
gathers its few taps, so no two threads write one element and the sum's order is
fixed, and the cost is taps per element, not a dense matrix's full row."""
import numpy as np

from ..lower.loop_ir import Reduce
from ..lower.nests import flat_index, output_loops
from .common import fail, norm_axis, tt
from .registry import non_differentiable, register


def sparse_columns(matrix):
    """(index, weight) tables [in, taps] of matrix^T for a dense [out, in] matrix:
    row i lists the outputs o that read input i and the weights they read it with."""
    matrix = np.asarray(matrix, np.float64)
    columns = [np.nonzero(matrix[:, i])[0] for i in range(matrix.shape[1])]
    taps = max(1, max((len(c) for c in columns), default=1))
    index = np.zeros((matrix.shape[1], taps), np.int64)
    weight = np.zeros((matrix.shape[1], taps), np.float64)
    for i, rows in enumerate(columns):
        index[i, :len(rows)], weight[i, :len(rows)] = rows, matrix[rows, i]
    return index, weight


def _plan(node, attrs, x_shape, index_shape, weight_shape):
    axis = norm_axis(node, attrs["axis"], len(x_shape))
    if len(index_shape) != 2 or tuple(index_shape) != tuple(weight_shape):
        fail(node, f"AxisTaps tables {tuple(index_shape)} and {tuple(weight_shape)} must be one [out, taps] shape")
    out = tuple(x_shape[:axis]) + (index_shape[0],) + tuple(x_shape[axis + 1:])
    return axis, out


def _infer(attrs, types, consts, node):
    x, index, weight = types
    if consts[1] is None:
        fail(node, "AxisTaps index table must be a constant")
    if consts[1].size and (consts[1].min() < 0 or consts[1].max() >= x.shape[norm_axis(node, attrs["axis"], x.rank)]):
        fail(node, "AxisTaps index table points outside the axis")
    return [tt(x.dtype, _plan(node, attrs, x.shape, index.shape, weight.shape)[1])]


def _reference(attrs, x, index, weight):
    axis = attrs["axis"] % x.ndim
    taken = np.take(x.astype(np.float64), index, axis=axis)         # [.., out, taps, ..]
    w = weight.reshape((1,) * axis + weight.shape + (1,) * (x.ndim - axis - 1))
    return (taken * w).sum(axis=axis + 1).astype(x.dtype)


def _lower(ctx):
    x_t, index_t, _ = ctx.in_types
    axis, out = _plan(ctx.node.name, ctx.attrs, x_t.shape, index_t.shape, index_t.shape)
    taps, length = index_t.shape[1], x_t.shape[axis]
    inner = int(np.prod(x_t.shape[axis + 1:], dtype=np.int64))
    xb, ib, wb = ctx.inputs
    view = (int(np.prod(x_t.shape[:axis], dtype=np.int64)), out[axis]) + ((inner,) if inner > 1 else ())
    with output_loops(ctx, view, x_t.dtype) as vars_:
        o, i = vars_[0], vars_[1]
        n = vars_[2] if inner > 1 else 0
        t = ctx.nb.var("t")
        source = (o * length + ib[i * taps + t]) * inner + n
        body = Reduce("sum", t, taps, wb[i * taps + t] * xb[source])
        ctx.nb.store(ctx.outputs[0], flat_index(vars_, view), body)


register("AxisTaps", inputs=(3, 3), attrs={"axis": None}, infer=_infer, reference=_reference, lower=_lower,
         domain="nutshell")
non_differentiable("a backward op: second-order gradients are not supported", "AxisTaps")
