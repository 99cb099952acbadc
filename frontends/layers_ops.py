"""Small graph-building helpers the layers share (registry ops with their ONNX
inputs spelled out), so layer code reads like the PyTorch it mirrors."""
import numpy as np

from .dsl import Tensor, apply, constant


def ints(x, values):
    """An int64 constant in x's graph (shapes, axes, slice bounds)."""
    return constant(x.builder, np.asarray(values, dtype=np.int64))


def like(x, value):
    """A constant of x's dtype (a scalar, or an array to broadcast against x)."""
    return constant(x.builder, np.asarray(value, dtype=x.dtype.numpy))


def as_tensor(ref, value, dtype=None):
    """A traced Tensor as is; a NumPy array (or scalar) as a constant in ref's graph."""
    if value is None or isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    return constant(ref.builder, array.astype(dtype) if dtype is not None else array)


def reshape(x, shape):
    return apply("Reshape", [x, ints(x, list(shape))])


def transpose(x, perm):
    return apply("Transpose", [x], perm=tuple(perm))


def narrow(x, axis, start, end):
    """x[..., start:end, ...] along `axis` (PyTorch's Tensor.narrow, end exclusive)."""
    return apply("Slice", [x, ints(x, [start]), ints(x, [end]), ints(x, [axis])])
