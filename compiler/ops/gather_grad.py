"""GatherGrad (nutshell domain), emitted by Gather's VJP rule: the embedding
backward. dData = zeros(data_shape), then each row of dY is added into the row of
dData its index read. Indices repeat (a token seen twice), so the adds run in a
fixed serial order over the indices (deterministic sums, no two threads on one
row); the rows themselves are vectorised. An out-of-range index (the forward
Gather already failed the run for it) contributes nothing and writes nowhere."""
import numpy as np

from ..ir.types import DType
from ..lower.loop_ir import Const, Select, cast, maximum, minimum
from .common import fail, norm_axis, tt
from .registry import non_differentiable, register


def _plan(node, attrs, dy_shape, idx_shape):
    data_shape = tuple(int(d) for d in attrs["data_shape"])
    axis = norm_axis(node, attrs["axis"], len(data_shape))
    want = data_shape[:axis] + tuple(idx_shape) + data_shape[axis + 1:]
    if tuple(dy_shape) != want:
        fail(node, f"GatherGrad dY {tuple(dy_shape)} does not fit data {data_shape} and indices {tuple(idx_shape)}")
    outer = int(np.prod(data_shape[:axis], dtype=np.int64))
    inner = int(np.prod(data_shape[axis + 1:], dtype=np.int64))
    return data_shape, outer, data_shape[axis], inner


def _infer(attrs, types, consts, node):
    dy, idx = types
    if idx.dtype not in (DType.int64, DType.int32):
        fail(node, f"GatherGrad indices must be int32 or int64, got {idx.dtype.value}")
    return [tt(dy.dtype, _plan(node, attrs, dy.shape, idx.shape)[0])]


def _reference(attrs, dy, idx):
    data_shape, outer, n, inner = _plan("ref", attrs, dy.shape, idx.shape)
    k = idx.reshape(-1).astype(np.int64)
    k = np.where(k < 0, k + n, k)
    valid = (k >= 0) & (k < n)
    out = np.zeros((outer, n, inner), dy.dtype)
    np.add.at(out, (slice(None), k[valid]), dy.reshape(outer, k.size, inner)[:, valid])
    return out.reshape(data_shape)


def _lower(ctx):
    dy_t, idx_t = ctx.in_types
    _, outer, n, inner = _plan(ctx.node.name, ctx.attrs, dy_t.shape, idx_t.shape)
    count = idx_t.size
    dyb, ib = ctx.inputs
    out, nb = ctx.outputs[0], ctx.nb
    lanes = ctx.lanes(out.dtype)
    with nb.loop(out.size, "vector", lanes, hint="z") as z:
        nb.store(out, z, Const(0.0, out.dtype))
    with nb.loop(outer, hint="o") as o:
        with nb.loop(count, hint="j") as j:
            k = cast(ib[j], DType.int64)        # int32 indices too
            k = Select(k < 0, k + n, k)
            zero, one = Const(0.0, out.dtype), Const(1.0, out.dtype)
            inside = Select(k < 0, zero, Select(k >= n, zero, one))
            row = (o * n + maximum(minimum(k, n - 1), 0)) * inner
            with nb.loop(inner, "vector", lanes, hint="i") as i:
                nb.store(out, row + i, out[row + i] + dyb[(o * count + j) * inner + i] * inside)


register("GatherGrad", inputs=(2, 2), attrs={"axis": 0, "data_shape": None}, infer=_infer,
         reference=_reference, lower=_lower, domain="nutshell")
non_differentiable("a backward op: second-order gradients are not supported", "GatherGrad")
