"""torch.Tensor's methods on traced tensors: views, layout and reductions here,
element-wise ones in tensor_math.py, indexing in indexing.py.

Shapes are static, so every view (reshape, squeeze, flatten, unsqueeze) is a
Reshape to a shape computed here, and -1 is resolved here with a clear error."""
import builtins
from collections import namedtuple

import numpy as np

from nutshell.compiler.errors import ShapeError
from nutshell.compiler.ir.types import DType

from . import tensor as T
from .tensor_math import *  # noqa: F401,F403  (the element-wise methods, for Tensor's delegation)
from .tensor_math import (_sizes, abs, axis, exp, log, maximum, minimum, power, sqrt)  # noqa: A004

MinMax = namedtuple("MinMax", ["values", "indices"])     # torch.return_types.max

METHODS = [
    "reshape", "view", "view_as", "reshape_as", "permute", "transpose", "t", "unsqueeze", "squeeze",
    "flatten", "unflatten", "expand", "expand_as", "repeat", "chunk", "split", "unbind",
    "sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "var", "std", "logsumexp", "norm",
    "clamp", "clip", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "neg", "tanh", "sigmoid",
    "relu", "floor", "ceil", "sign", "erf", "reciprocal", "square", "pow", "softmax", "log_softmax",
    "masked_fill", "where", "matmul", "mm", "bmm", "add", "sub", "mul", "div", "maximum", "minimum",
    "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or", "logical_not", "triu", "tril",
    "new_zeros", "new_ones", "new_full", "new_tensor", "narrow", "index_select", "flip", "gather",
    "cumsum", "sin", "cos", "tan", "any", "all",
]


def _ints(builder, values):
    return T.constant(builder, np.asarray(values, dtype=np.int64).reshape(-1))


# views and layout -------------------------------------------------------------------------

def reshape(x, *shape):
    shape = [int(d) for d in _sizes(shape)]
    total = x.numel()
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape {shape}: only one dimension can be -1")
    known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
    if -1 in shape:
        if known == 0 or total % known:
            raise ShapeError(f"cannot reshape {x.shape} to {tuple(shape)}")
        shape[shape.index(-1)] = total // known
    if int(np.prod(shape, dtype=np.int64)) != total or builtins.any(d < 0 for d in shape):
        raise ShapeError(f"cannot reshape {x.shape} ({total} elements) to {tuple(shape)}")
    if tuple(shape) == x.shape:
        return x
    return T.apply("Reshape", [x, _ints(x.builder, shape)])


view = reshape


def view_as(x, other):
    return reshape(x, other.shape)


reshape_as = view_as


def permute(x, *dims):
    perm = [axis(d, x.ndim) for d in _sizes(dims)]
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"permute {perm} is not a permutation of {x.ndim} dimensions")
    return x if perm == list(range(x.ndim)) else T.apply("Transpose", [x], perm=perm)


def transpose(x, dim0, dim1):
    perm = list(range(x.ndim))
    a, b = axis(dim0, x.ndim), axis(dim1, x.ndim)
    perm[a], perm[b] = perm[b], perm[a]
    return permute(x, perm)


def t(x):
    if x.ndim > 2:
        raise ShapeError(f"t() expects a tensor of at most 2 dimensions, got {x.ndim}")
    return permute(x, list(reversed(range(x.ndim))))


def unsqueeze(x, dim):
    d = axis(dim, x.ndim + 1)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def squeeze(x, dim=None):
    if dim is None:
        dims = {i for i, n in enumerate(x.shape) if n == 1}
    else:
        dims = {axis(d, x.ndim) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        dims = {d for d in dims if x.shape[d] == 1}       # torch leaves other sizes alone
    return reshape(x, [n for i, n in enumerate(x.shape) if i not in dims])


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    s, e = axis(start_dim, x.ndim), axis(end_dim, x.ndim)
    merged = int(np.prod(x.shape[s:e + 1], dtype=np.int64))
    return reshape(x, x.shape[:s] + (merged,) + x.shape[e + 1:])


def unflatten(x, dim, sizes):
    d = axis(dim, x.ndim)
    sizes = list(sizes)
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[d] // int(np.prod([s for s in sizes if s != -1]))
    return reshape(x, x.shape[:d] + tuple(sizes) + x.shape[d + 1:])


def expand(x, *sizes):
    sizes = _sizes(sizes)
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise ShapeError(f"expand to {sizes}: fewer dimensions than the tensor's {x.shape}")
    target = [x.shape[i - lead] if s == -1 else int(s) for i, s in enumerate(sizes)]
    if tuple(target) == x.shape:
        return x
    return T.apply("Expand", [x, _ints(x.builder, target)])


def expand_as(x, other):
    return expand(x, other.shape)


def repeat(x, *sizes):
    sizes = _sizes(sizes)
    if len(sizes) < x.ndim:
        raise ShapeError(f"repeat {sizes}: fewer repeats than dimensions {x.shape}")
    x = reshape(x, (1,) * (len(sizes) - x.ndim) + x.shape)
    return T.apply("Tile", [x, _ints(x.builder, sizes)])


def _split_sizes(x, sizes, dim):
    d = axis(dim, x.ndim)
    if builtins.sum(sizes) != x.shape[d]:
        raise ShapeError(f"split sizes {list(sizes)} do not add up to {x.shape[d]}")
    if len(sizes) == 1:
        return (x,)
    outs = T.apply("Split", [x], outputs=len(sizes), axis=d, split=[int(s) for s in sizes])
    return tuple(outs)


def split(x, split_size_or_sections, dim=0):
    n = x.shape[axis(dim, x.ndim)]
    if isinstance(split_size_or_sections, (tuple, list)):
        return _split_sizes(x, list(split_size_or_sections), dim)
    size = int(split_size_or_sections)
    return _split_sizes(x, [builtins.min(size, n - i) for i in range(0, n, size)] or [0], dim)


def chunk(x, chunks, dim=0):
    n = x.shape[axis(dim, x.ndim)]
    return split(x, builtins.max(1, -(-n // int(chunks))), dim)


def unbind(x, dim=0):
    d = axis(dim, x.ndim)
    return tuple(squeeze(p, d) for p in split(x, 1, d))


# reductions -------------------------------------------------------------------------------

def _dims(x, dim):
    if dim is None:
        return list(range(x.ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return sorted({axis(d, x.ndim) for d in dims})


def _reduce(op, x, dim, keepdim):
    if x.ndim == 0:
        return x
    return T.apply(op, [x, _ints(x.builder, _dims(x, dim))], keepdims=int(bool(keepdim)))


def sum(x, dim=None, keepdim=False, dtype=None):       # noqa: A001 (torch's name)
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype == DType.bool:
        x = x.long()
    return _reduce("ReduceSum", x, dim, keepdim)


def mean(x, dim=None, keepdim=False, dtype=None):
    return _reduce("ReduceMean", x.to(dtype) if dtype is not None else x, dim, keepdim)


def amax(x, dim=None, keepdim=False):
    return _reduce("ReduceMax", x, dim, keepdim)


def amin(x, dim=None, keepdim=False):
    return _reduce("ReduceMin", x, dim, keepdim)


def _arg(op, x, dim, keepdim):
    if dim is None:
        return T.apply(op, [flatten(x)], axis=0, keepdims=0)
    return T.apply(op, [x], axis=axis(dim, x.ndim), keepdims=int(bool(keepdim)))


def argmax(x, dim=None, keepdim=False):
    return _arg("ArgMax", x, dim, keepdim)


def argmin(x, dim=None, keepdim=False):
    return _arg("ArgMin", x, dim, keepdim)


def max(x, dim=None, keepdim=False):                     # noqa: A001
    """max(): the largest value; max(dim): (values, indices); max(tensor): maximum."""
    if dim is None:
        return amax(x)
    if not isinstance(dim, (int, np.integer)):
        return maximum(x, dim)
    return MinMax(amax(x, dim, keepdim), argmax(x, dim, keepdim))


def min(x, dim=None, keepdim=False):                     # noqa: A001
    if dim is None:
        return amin(x)
    if not isinstance(dim, (int, np.integer)):
        return minimum(x, dim)
    return MinMax(amin(x, dim, keepdim), argmin(x, dim, keepdim))


def var(x, dim=None, unbiased=True, keepdim=False, correction=None):
    if not isinstance(unbiased, bool):          # var(x, 0): dim given positionally as torch allows
        dim, unbiased = unbiased, True
    correction = (1 if unbiased else 0) if correction is None else correction
    count = int(np.prod([x.shape[d] for d in _dims(x, dim)], dtype=np.int64))
    centered = x - mean(x, dim, keepdim=True)
    return sum(centered * centered, dim, keepdim) * (1.0 / np.maximum(count - correction, 0))


def std(x, dim=None, unbiased=True, keepdim=False, correction=None):
    return sqrt(var(x, dim, unbiased, keepdim, correction))


def logsumexp(x, dim, keepdim=False):
    """log(sum(exp(x))) with the maximum subtracted first, so it never overflows."""
    top = amax(x, dim, keepdim=True)
    out = log(sum(exp(x - top), dim, keepdim=True)) + top
    return out if keepdim else squeeze(out, dim)


def any(x, dim=None, keepdim=False):                     # noqa: A001
    return amax((x != 0).float(), dim, keepdim) > 0


def all(x, dim=None, keepdim=False):                     # noqa: A001
    return amin((x != 0).float(), dim, keepdim) > 0


def norm(x, p="fro", dim=None, keepdim=False):
    if p in ("fro", 2, 2.0):
        return sqrt(sum(x * x, dim, keepdim))
    if p in (1, 1.0):
        return sum(abs(x), dim, keepdim)
    if p in (float("inf"), "inf"):
        return amax(abs(x), dim, keepdim)
    return power(sum(power(abs(x), p), dim, keepdim), 1.0 / p)


def _numpy_names(fn):
    """torch also takes numpy's spellings: axis= for dim=, keepdims= for keepdim=."""
    def reduction(x, *args, **kwargs):
        if "axis" in kwargs:
            kwargs["dim"] = kwargs.pop("axis")
        if "keepdims" in kwargs:
            kwargs["keepdim"] = kwargs.pop("keepdims")
        return fn(x, *args, **kwargs)
    reduction.__name__, reduction.__doc__ = fn.__name__, fn.__doc__
    return reduction


for _fn in (sum, mean, amax, amin, max, min, argmax, argmin, var, std, logsumexp, norm, any, all):
    globals()[_fn.__name__] = _numpy_names(_fn)


def narrow(x, dim, start, length):
    d = axis(dim, x.ndim)
    return getitem(x, (slice(None),) * d + (slice(start, start + length),))


def index_select(x, dim, index):
    from .indexing import take
    return take(x, index, dim)


def flip(x, *dims):
    for d in sorted({axis(d, x.ndim) for d in _sizes(dims)}):      # one reversed axis per Slice
        x = T.apply("Slice", [x, _ints(x.builder, [-1]), _ints(x.builder, [-(1 << 62)]),
                              _ints(x.builder, [d]), _ints(x.builder, [-1])])
    return x


def gather(x, dim, index):
    """torch.gather: out[..i..] = x[..index[..i..]..] along `dim`, as a one-hot
    product summed over x's `dim` (static shapes, and MatMul-free gradients)."""
    d = axis(dim, x.ndim)
    index = T.tensor_of(index, x.builder, DType.int64).long()
    if index.ndim != x.ndim or builtins.any(index.shape[i] > x.shape[i] for i in range(x.ndim) if i != d):
        raise ShapeError(f"gather index of shape {index.shape} does not fit input {x.shape} on dim {d}")
    x = getitem(x, tuple(slice(0, index.shape[i]) if i != d else slice(None) for i in range(x.ndim)))
    n = x.shape[d]
    index = T.apply("Where", [index < 0, index + n, index])
    classes = np.arange(n, dtype=np.int64).reshape([n if i == d + 1 else 1 for i in range(x.ndim + 1)])
    data = x if x.dtype.is_float else x.float()
    hit = (unsqueeze(index, d + 1) == T.constant(x.builder, classes)).to(data.dtype)
    return sum(unsqueeze(data, d) * hit, d + 1).to(x.dtype)


def cumsum(x, dim, dtype=None):
    """Running sum along `dim`: a product with an upper-triangular matrix of ones."""
    d = axis(dim, x.ndim)
    x = x.to(dtype) if dtype is not None else (x if x.dtype.is_float else x.long())
    n = x.shape[d]
    data = x if x.dtype.is_float else x.float()
    ones = T.constant(x.builder, np.triu(np.ones((n, n), data.dtype.numpy)))
    return transpose(transpose(data, d, -1) @ ones, d, -1).to(x.dtype)


def getitem(x, index):
    from .indexing import getitem as _getitem
    return _getitem(x, index)
