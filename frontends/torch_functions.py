"""The `nutshell.*` functions torch code calls as `torch.*`.

Constructors (zeros, ones, full, arange, eye, tensor, triu/tril of a shape)
give a constant of the graph when called inside forward() and an eager tensor
outside it (in __init__): every operation on eager tensors is computed at once
(folded through the ops' NumPy references), and register_buffer, Parameter
and `.numpy()` take their values. The rest take traced or eager tensors."""
import contextlib

import numpy as np

from nutshell.compiler.ir.types import DType

from . import tensor as T
from . import tensor_ops as ops
from .tensor_math import (abs, clamp, clip, cos, erf, exp, log, log1p, log_softmax, matmul,  # noqa: F401,A004
                          maximum, minimum, power as pow, relu, rsqrt, sigmoid, sin, softmax, sqrt, square,
                          tan, tanh)
from .tensor_ops import (amax, amin, argmax, argmin, chunk, flatten, logsumexp, max, mean, min,  # noqa: F401
                         permute, reshape, split, squeeze, std, sum, transpose, unbind, unsqueeze, var)

from .random import *  # noqa: F401,F403,E402
from .random import __all__ as _RANDOM  # noqa: E402

mm = bmm = matmul


def _made(array):
    """A constant of the trace in progress, or an eager tensor outside one."""
    return T.constant(T.active_builder() or T.eager_builder(), np.ascontiguousarray(array))


def _np_dtype(dtype, default=DType.float32):
    return (T.as_dtype(dtype) if dtype is not None else default).numpy


def _shape(size):
    return tuple(int(s) for s in ops._sizes(size))


def zeros(*size, dtype=None, **_):
    return _made(np.zeros(_shape(size), _np_dtype(dtype)))


def ones(*size, dtype=None, **_):
    return _made(np.ones(_shape(size), _np_dtype(dtype)))


empty = zeros


def full(size, fill_value, dtype=None, **_):
    default = DType.bool if isinstance(fill_value, bool) else \
        DType.int64 if isinstance(fill_value, int) else DType.float32
    return _made(np.full(_shape((size,)), fill_value, _np_dtype(dtype, default)))


def _like(x, value, dtype):
    dtype = T.as_dtype(dtype) if dtype is not None else T.as_dtype(x.dtype)
    array = np.full(tuple(x.shape), value, dtype.numpy)
    return T.constant(x.builder, array) if isinstance(x, T.Tensor) else _made(array)


def zeros_like(x, dtype=None, **_):
    return _like(x, 0, dtype)


def ones_like(x, dtype=None, **_):
    return _like(x, 1, dtype)


def full_like(x, fill_value, dtype=None, **_):
    return _like(x, fill_value, dtype)


def arange(start, end=None, step=1, dtype=None, **_):
    start, end = (0, start) if end is None else (start, end)
    integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    default = DType.int64 if integral else DType.float32
    return _made(np.arange(start, end, step).astype(_np_dtype(dtype, default)))


def linspace(start, end, steps, dtype=None, **_):
    return _made(np.linspace(start, end, steps).astype(_np_dtype(dtype)))


def eye(n, m=None, dtype=None, **_):
    return _made(np.eye(n, m, dtype=_np_dtype(dtype)))


def tensor(data, dtype=None, **_):
    array = np.asarray(data)
    if dtype is None and array.dtype == np.float64:
        dtype = DType.float32
    return _made(array.astype(_np_dtype(dtype, DType.from_numpy(array.dtype))))


as_tensor = tensor


def triu(x, diagonal=0):
    return ops.triu(T.tensor_of(x), diagonal)


def tril(x, diagonal=0):
    return ops.tril(T.tensor_of(x), diagonal)


def where(condition, x, y):
    return ops.where_(condition, x, y)


def cat(tensors, dim=0):
    tensors = list(tensors)
    tensors = T.promote(*tensors)
    if len(tensors) == 1:
        return tensors[0]
    return T.apply("Concat", tensors, axis=ops.axis(dim, tensors[0].ndim))


concat = concatenate = cat


def stack(tensors, dim=0):
    tensors = list(tensors)
    tensors = T.promote(*tensors)
    d = ops.axis(dim, tensors[0].ndim + 1)
    return cat([ops.unsqueeze(t, d) for t in tensors], d)


def einsum(equation, *operands):
    if len(operands) == 1 and isinstance(operands[0], (tuple, list)):
        operands = tuple(operands[0])
    return T.apply("Einsum", list(T.promote(*operands)), equation=equation.replace(" ", ""))


def is_tensor(x):
    return isinstance(x, T.Tensor)


def numel(x):
    return x.numel()


@contextlib.contextmanager
def no_grad():
    """Gradients exist only inside compiled training steps; nothing to switch off."""
    yield


inference_mode = enable_grad = no_grad

__all__ = ["zeros", "ones", "empty", "full", "zeros_like", "ones_like", "full_like", "arange",
           "linspace", "eye", "tensor", "as_tensor", "triu", "tril", "where", "cat", "concat",
           "concatenate", "stack", "einsum", "is_tensor", "numel", "no_grad", "inference_mode",
           "enable_grad", "abs", "clamp", "clip", "erf", "exp", "log", "log1p", "log_softmax", "matmul",
           "mm", "bmm", "maximum", "minimum", "pow", "relu", "rsqrt", "sigmoid", "softmax", "sqrt",
           "square", "tanh", "sin", "cos", "tan", "amax", "amin", "argmax", "argmin", "chunk", "flatten", "logsumexp", "max",
           "mean", "min", "permute", "reshape", "split", "squeeze", "std", "sum", "transpose", "unbind",
           "unsqueeze", "var"] + list(_RANDOM)
