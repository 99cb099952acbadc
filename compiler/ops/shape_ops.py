"""Shape and data-movement ops. Reshape-like ops are aliases (no kernel, no copy);
Shape folds from the static type; Transpose and Concat are strided copies."""
import numpy as np
import onnx.helper

from ..errors import ShapeError, UnsupportedTypeError
from ..ir.types import DType, checked_size
from ..lower.loop_ir import cast
from ..lower.nests import permute_nest, strided_map, strides
from .common import const_ints, fail, norm_axis, same_dtype, tt
from .registry import gradient, non_differentiable, register, zero_gradient


def copy_lower(ctx):
    """Copy input 0 to output 0 (an alias that must materialise, e.g. into a graph output)."""
    size = ctx.out_types[0].size
    strided_map(ctx, ctx.outputs[0], (size,), [ctx.inputs[0]], [(1,)], lambda v: v)


def _reshape_target(node, shape, target, allowzero):
    target = list(target)
    if target.count(-1) > 1:
        fail(node, f"Reshape target {target} has more than one -1")
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                fail(node, f"Reshape target {target}: 0 at axis {i} copies no input dim")
            d = shape[i]
        elif d < -1:
            fail(node, f"Reshape target {target} has a negative dimension")
        out.append(d)
    known = checked_size([d for d in out if d != -1])
    total = checked_size(shape)
    if -1 in out:
        if known == 0 or total % known:
            fail(node, f"cannot reshape {tuple(shape)} to {target}")
        out[out.index(-1)] = total // known
    if checked_size(out) != total:
        fail(node, f"cannot reshape {tuple(shape)} ({total} elements) to {target}")
    return tuple(out)


def _reshape_infer(attrs, types, consts, node):
    target = const_ints(node, consts[1], "shape")
    return [tt(types[0].dtype, _reshape_target(node, types[0].shape, target, attrs["allowzero"]))]


register("Reshape", inputs=(2, 2), attrs={"allowzero": 0}, alias=True, infer=_reshape_infer,
         lower=copy_lower, reference=lambda attrs, x, s: x.reshape(
             _reshape_target("ref", x.shape, [int(v) for v in s], attrs["allowzero"])))


def _flatten_shape(node, shape, axis):
    if not -len(shape) <= axis <= len(shape):
        fail(node, f"Flatten axis {axis} is out of range for rank {len(shape)}")
    axis = axis + len(shape) if axis < 0 else axis
    return (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))


register("Flatten", attrs={"axis": 1}, alias=True, lower=copy_lower,
         infer=lambda attrs, types, consts, node: [
             tt(types[0].dtype, _flatten_shape(node, types[0].shape, attrs["axis"]))],
         reference=lambda attrs, x: x.reshape(_flatten_shape("ref", x.shape, attrs["axis"])))

register("Identity", alias=True, lower=copy_lower,
         infer=lambda attrs, types, consts, node: [types[0]],
         reference=lambda attrs, x: x.copy())

register("Dropout", inputs=(1, 3), attrs={"seed": None, "ratio": None}, alias=True,
         lower=copy_lower, infer=lambda attrs, types, consts, node: [types[0]],
         reference=lambda attrs, x, *rest: x.copy())


@gradient("Reshape", "Flatten", "Identity", "Dropout")
def _same_data_grad(g, node, dys, wanted):
    """The same elements in another shape: dx is dy reshaped back."""
    return [g.reshape(dys[0], g.shape(node.inputs[0]))] + [None] * (len(node.inputs) - 1)


def _axes(node, attrs, types, consts):
    if len(types) > 1 and types[1] is not None:
        return const_ints(node, consts[1], "axes")
    return tuple(attrs.get("axes") or ())


def _squeeze_shape(node, shape, axes):
    axes = {norm_axis(node, a, len(shape), "axes") for a in axes} if axes else \
        {i for i, d in enumerate(shape) if d == 1}
    for a in axes:
        if shape[a] != 1:
            fail(node, f"cannot squeeze axis {a} of size {shape[a]}")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _unsqueeze_shape(node, shape, axes):
    rank = len(shape) + len(axes)
    axes = sorted(norm_axis(node, a, rank, "axes") for a in axes)
    if len(set(axes)) != len(axes):
        fail(node, f"repeated axes {axes}")
    out, it = [], iter(shape)
    for i in range(rank):
        out.append(1 if i in axes else next(it))
    return tuple(out)


for _name, _fn in (("Squeeze", _squeeze_shape), ("Unsqueeze", _unsqueeze_shape)):
    register(_name, inputs=(1, 2), attrs={"axes": None}, alias=True, lower=copy_lower,
             infer=(lambda f: lambda attrs, types, consts, node: [
                 tt(types[0].dtype, f(node, types[0].shape, _axes(node, attrs, types, consts)))])(_fn),
             reference=(lambda f: lambda attrs, x, axes=None: x.reshape(
                 f("ref", x.shape, tuple(int(a) for a in np.reshape(axes, -1)) if axes is not None
                   else tuple(attrs.get("axes") or ()))))(_fn))
gradient("Squeeze", "Unsqueeze")(_same_data_grad)


def _perm(node, attrs, rank):
    perm = tuple(attrs.get("perm") or reversed(range(rank)))
    if sorted(perm) != list(range(rank)):
        fail(node, f"perm {list(perm)} is not a permutation of {rank} axes")
    return perm


def _transpose_lower(ctx):
    t = ctx.in_types[0]
    perm = _perm(ctx.node.name, ctx.attrs, t.rank)
    in_strides = strides(t.shape)
    permute_nest(ctx, ctx.outputs[0], ctx.out_types[0].shape, ctx.inputs[0], tuple(in_strides[p] for p in perm))


register("Transpose", attrs={"perm": None}, lower=_transpose_lower,
         infer=lambda attrs, types, consts, node: [tt(types[0].dtype, tuple(
             types[0].shape[p] for p in _perm(node, attrs, types[0].rank)))],
         reference=lambda attrs, x: np.transpose(x, _perm("ref", attrs, x.ndim)).copy())


@gradient("Transpose")
def _transpose_grad(g, node, dys, wanted):
    perm = _perm(node.name, node.attrs, len(g.shape(node.inputs[0])))
    return [g.op("Transpose", [dys[0]], perm=tuple(int(i) for i in np.argsort(perm)))]


def _concat_infer(attrs, types, consts, node):
    if any(t is None for t in types):        # an empty input name (found by the fuzzer)
        fail(node, "Concat inputs cannot be omitted")
    dtype = same_dtype(node, types)
    rank = types[0].rank
    axis = norm_axis(node, attrs["axis"], rank)
    for t in types:
        if t.rank != rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, types[0].shape))
                                 if i != axis):
            fail(node, f"Concat inputs {[t.shape for t in types]} differ off axis {axis}")
    shape = list(types[0].shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return [tt(dtype, shape)]


def _concat_lower(ctx):
    out_t = ctx.out_types[0]
    axis = norm_axis(ctx.node.name, ctx.attrs["axis"], out_t.rank)
    out_strides = strides(out_t.shape)
    offset = 0
    for buf, t in zip(ctx.inputs, ctx.in_types):
        strided_map(ctx, ctx.outputs[0], t.shape, [buf], [strides(t.shape)], lambda v: v,
                    out_offset=offset * out_strides[axis], out_strides=out_strides)
        offset += t.shape[axis]


register("Concat", inputs=(1, 1 << 16), attrs={"axis": None}, infer=_concat_infer,
         lower=_concat_lower, reference=lambda attrs, *xs: np.concatenate(xs, axis=attrs["axis"]))


@gradient("Concat")
def _concat_grad(g, node, dys, wanted):
    axis = node.attrs["axis"] % len(g.shape(node.outputs[0]))
    out, start = [], 0
    for name, want in zip(node.inputs, wanted):
        size = g.shape(name)[axis]
        out.append(g.slice(dys[0], [start], [start + size], [axis]) if want else None)
        start += size
    return out


def constant_value(attrs, node="Constant"):
    """The tensor a Constant node's attributes describe."""
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if attrs.get(key) is not None:
            value = attrs[key]
            if isinstance(value, np.ndarray):
                return value
            dtype = np.float32 if "float" in key else np.int64
            return np.asarray(value, dtype=dtype)
    raise UnsupportedTypeError(f"{node}: Constant without a supported value attribute")


register("Constant", inputs=(0, 0),
         attrs={k: None for k in ("value", "value_float", "value_floats", "value_int",
                                  "value_ints", "sparse_value", "value_string", "value_strings")},
         infer=lambda attrs, types, consts, node: [tt(DType.from_numpy(constant_value(attrs, node).dtype),
                                                      constant_value(attrs, node).shape)],
         reference=lambda attrs: constant_value(attrs).copy())
non_differentiable("no inputs", "Constant")


def _shape_slice(attrs, shape):
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end")
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = rank if end is None else max(0, min(rank, end + rank if end < 0 else end))
    return np.asarray(shape[start:end], dtype=np.int64)


register("Shape", attrs={"start": 0, "end": None},
         infer=lambda attrs, types, consts, node: [tt(DType.int64, _shape_slice(attrs, types[0].shape).shape)],
         reference=lambda attrs, x: _shape_slice(attrs, x.shape),
         type_fold=lambda attrs, types: _shape_slice(attrs, types[0].shape))
gradient("Shape")(zero_gradient)


def _gather_infer(attrs, types, consts, node):
    data, idx = types
    axis = norm_axis(node, attrs["axis"], data.rank)
    if idx.dtype not in (DType.int64, DType.int32):
        fail(node, f"Gather indices must be int32 or int64, got {idx.dtype.value}")
    return [tt(data.dtype, data.shape[:axis] + idx.shape + data.shape[axis + 1:])]


def _gather_reference(attrs, data, idx):
    axis = attrs["axis"] % data.ndim
    n = data.shape[axis]
    if np.any((idx < -n) | (idx >= n)):
        raise ShapeError(f"Gather index out of range [{-n}, {n})")
    return np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)


register("Gather", inputs=(2, 2), attrs={"axis": 0}, infer=_gather_infer,
         reference=_gather_reference)   # folded at compile time (shape subgraphs) for now


@gradient("Gather")
def _gather_grad(g, node, dys, wanted):
    """Embedding backward: dy's rows added into the rows they were read from."""
    data, idx = node.inputs
    return [g.op("GatherGrad", [dys[0], idx], axis=node.attrs["axis"], data_shape=g.shape(data)), None]


def _cast_dtype(attrs, node="Cast"):
    try:
        np_type = onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
    except (KeyError, ValueError, TypeError):
        raise UnsupportedTypeError(f"{node}: unsupported Cast target {attrs.get('to')}") from None
    return DType.from_numpy(np_type)


register("Cast", attrs={"to": None, "saturate": 1, "round_mode": None},
         infer=lambda attrs, types, consts, node: [tt(_cast_dtype(attrs, node), types[0].shape)],
         reference=lambda attrs, x: x.astype(_cast_dtype(attrs).numpy),
         lower=lambda ctx: strided_map(ctx, ctx.outputs[0], ctx.out_types[0].shape, [ctx.inputs[0]],
                                       [strides(ctx.in_types[0].shape)],
                                       lambda v: cast(v, ctx.out_types[0].dtype)),
         expr=lambda attrs, v: cast(v, _cast_dtype(attrs)))


@gradient("Cast")
def _cast_grad(g, node, dys, wanted):
    x = node.inputs[0]
    return [g.cast_like(dys[0], x) if g.dtype(x).is_float else None]
