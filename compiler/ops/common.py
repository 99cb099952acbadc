"""Helpers shared by the ops' shape rules."""
import numpy as np

from ..errors import ShapeError, UnsupportedTypeError
from ..ir.types import DType, TensorType


def fail(node, msg):
    raise ShapeError(f"{node}: {msg}")


def broadcast(node, *shapes):
    """NumPy/ONNX multidirectional broadcasting of static shapes."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            fail(node, f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def norm_axis(node, axis, rank, name="axis"):
    axis = int(axis)
    if not -rank <= axis < rank:
        fail(node, f"{name} {axis} is out of range for rank {rank}")
    return axis % rank


def same_dtype(node, types):
    dtypes = {t.dtype for t in types if t is not None}
    if len(dtypes) > 1:
        fail(node, f"inputs mix element types {sorted(d.value for d in dtypes)}")
    return dtypes.pop()


def require_float(node, ttype):
    if not ttype.dtype.is_float:
        raise UnsupportedTypeError(f"{node}: needs a float input, got {ttype.dtype.value}")
    return ttype.dtype


def positive_ints(node, values, name, allow_zero=False):
    values = tuple(int(v) for v in values)
    lo = 0 if allow_zero else 1
    if any(v < lo for v in values):
        fail(node, f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {list(values)}")
    return values


def const_ints(node, array, name):
    if array is None:
        fail(node, f"input '{name}' must be a constant known at compile time")
    return tuple(int(v) for v in np.asarray(array).reshape(-1))


def tt(dtype, shape):
    return TensorType(dtype, tuple(shape))


def f32(shape):
    return TensorType(DType.float32, tuple(shape))
