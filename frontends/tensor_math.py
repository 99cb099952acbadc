"""torch's element-wise functions and Tensor methods on traced tensors:
arithmetic helpers, activations, clamp, comparisons, logic on bools, where,
triu/tril and the new_* constructors, each composed from registry ops."""
import builtins

import numpy as np

from nutshell.compiler.errors import UnsupportedOpError
from nutshell.compiler.ir.types import DType

from . import tensor as T


def axis(dim, rank):
    d = int(dim)
    if not -builtins.max(rank, 1) <= d < builtins.max(rank, 1):
        raise IndexError(f"dimension {dim} out of range for a tensor of rank {rank}")
    return d % builtins.max(rank, 1)


def _sizes(args):
    """reshape(2, 3) and reshape((2, 3)) alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


# element-wise -----------------------------------------------------------------------------

def _unary(op, float_only=False):
    def fn(x):
        x = T.tensor_of(x)
        if float_only and not x.dtype.is_float:
            x = x.float()
        return T.apply(op, [x])
    fn.__name__ = op.lower()
    return fn


exp, log, sqrt = _unary("Exp", True), _unary("Log", True), _unary("Sqrt", True)
tanh, sigmoid, erf = _unary("Tanh", True), _unary("Sigmoid", True), _unary("Erf", True)
abs, neg, relu = _unary("Abs"), _unary("Neg"), _unary("Relu")    # noqa: A001
floor, ceil, sign, reciprocal = _unary("Floor"), _unary("Ceil"), _unary("Sign"), _unary("Reciprocal", True)


def _values_only(name, fn):
    """A function with no graph op yet: computed on tensors with values (eager
    tensors, constants), refused on traced ones."""
    def method(x):
        x = T.tensor_of(x)
        if x.name not in x.builder.constants:
            raise UnsupportedOpError(name.capitalize(), detail=f"{name} of a traced tensor (no graph op); "
                                     "compute it outside forward() or on constants")
        value = fn(T.value_of(x))
        return T.constant(x.builder, value.astype(x.dtype.numpy if x.dtype.is_float else np.float32))
    method.__name__ = name
    return method


sin, cos, tan = _unary("Sin", True), _unary("Cos", True), _values_only("tan", np.tan)


def log1p(x):
    return log(x + 1.0)


def expm1(x):
    return exp(x) - 1.0


def rsqrt(x):
    return reciprocal(sqrt(x))


def square(x):
    return x * x


def power(base, exponent):
    """base ** exponent; small integer exponents become products (exact, and
    differentiable with the Mul rule)."""
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
        base = T.tensor_of(base)
        if exponent == 1:
            return base
        if exponent == 2:
            return base * base
        if exponent == 0.5:
            return sqrt(base)
        if exponent == -1:
            return 1.0 / base
    a, b = T.promote(base, exponent)
    return T.apply("Pow", [a, b])


pow = power     # noqa: A001


def floor_divide(a, b):
    a, b = T.promote(a, b)
    if a.dtype.is_float:
        return floor(a / b)
    return floor(a.float() / b.float()).to(a.dtype)


def remainder(a, b):
    """Python's (and torch's) modulo: the sign of the divisor."""
    a, b = T.promote(a, b)
    return a - floor_divide(a, b) * b


def clamp(x, min=None, max=None):                # noqa: A002
    x = T.tensor_of(x)
    if isinstance(min, T.Tensor) or isinstance(max, T.Tensor):
        out = x if min is None else maximum(x, min)
        return out if max is None else minimum(out, max)
    if min is None and max is None:
        raise ValueError("clamp needs min or max")
    if max is None and min == 0 and not isinstance(min, bool):      # max(x, 0): the Relu op
        return T.apply("Relu", [x])
    bound = [None if v is None else T.constant(x.builder, np.asarray(v, x.dtype.numpy)) for v in (min, max)]
    return T.apply("Clip", [x] + bound)


clip = clamp


def maximum(a, b):
    # the Max op: its gradient splits ties evenly between the two, as torch.maximum's does
    return T.apply("Max", T.promote(a, b))


def minimum(a, b):
    return T.apply("Min", T.promote(a, b))


def softmax(x, dim=-1, dtype=None):
    x = T.tensor_of(x).to(dtype) if dtype is not None else T.tensor_of(x)
    return T.apply("Softmax", [x], axis=axis(dim, x.ndim))


def log_softmax(x, dim=-1, dtype=None):
    x = T.tensor_of(x).to(dtype) if dtype is not None else T.tensor_of(x)
    return T.apply("LogSoftmax", [x], axis=axis(dim, x.ndim))


def where_(condition, x, y):
    """ns.where(condition, x, y), numbers allowed for x and y."""
    if isinstance(condition, T.Tensor) and condition.dtype != DType.bool:
        condition = condition.bool()
    x, y = T.promote(x, y)
    return T.apply("Where", [T.tensor_of(condition, x.builder), x, y])


def where(x, condition, y):
    """Tensor.where(condition, y): x where condition holds, else y."""
    return where_(condition, x, y)


def masked_fill(x, mask, value):
    value = T.tensor_of(value, x.builder, x.dtype) if not isinstance(value, T.Tensor) else value.to(x.dtype)
    return where_(mask, value, x)


def matmul(a, b):
    a, b = T.promote(a, b)
    return T.apply("MatMul", [a, b])


mm = bmm = matmul


def add(a, b, alpha=1):
    return a + (b * alpha if alpha != 1 else b)


def sub(a, b, alpha=1):
    return a - (b * alpha if alpha != 1 else b)


def mul(a, b):
    return a * b


def div(a, b, rounding_mode=None):
    if rounding_mode == "floor":
        return floor_divide(a, b)
    if rounding_mode == "trunc":
        q = T.tensor_of(a).float() / b
        return where_(q < 0, ceil(q), floor(q)).to(T.promote(a, b)[0].dtype)
    return T.tensor_of(a) / b


def eq(a, b): return a == b                     # noqa: E704
def ne(a, b): return a != b                     # noqa: E704
def lt(a, b): return a < b                      # noqa: E704
def gt(a, b): return a > b                      # noqa: E704
def le(a, b): return a <= b                     # noqa: E704
def ge(a, b): return a >= b                     # noqa: E704


def _as_bool(v, builder):
    t = T.tensor_of(v, builder)
    return t if t.dtype == DType.bool else t != 0


def logical_and(a, b):
    if T.tensor_of(a).dtype != DType.bool:      # ints: bitwise and is out of scope
        raise UnsupportedOpError("And", detail="& on non-bool tensors")
    a = T.tensor_of(a)
    return where_(a, _as_bool(b, a.builder), False)


def logical_or(a, b):
    a = T.tensor_of(a)
    if a.dtype != DType.bool:
        raise UnsupportedOpError("Or", detail="| on non-bool tensors")
    return where_(a, True, _as_bool(b, a.builder))


def logical_not(a):
    a = T.tensor_of(a)
    if a.dtype != DType.bool:
        raise UnsupportedOpError("Not", detail="~ on non-bool tensors")
    return where_(a, False, True)


def _band(rows, cols, diagonal, upper):
    i, j = np.arange(rows)[:, None], np.arange(cols)[None, :]
    return (j - i >= diagonal) if upper else (j - i <= diagonal)


def triu(x, diagonal=0):
    keep = _band(x.shape[-2], x.shape[-1], diagonal, True)
    return where_(T.constant(x.builder, keep), x, T.tensor_of(0, x.builder, x.dtype))


def tril(x, diagonal=0):
    keep = _band(x.shape[-2], x.shape[-1], diagonal, False)
    return where_(T.constant(x.builder, keep), x, T.tensor_of(0, x.builder, x.dtype))


def new_full(x, size, fill_value, dtype=None, **_):
    dtype = T.as_dtype(dtype) if dtype is not None else x.dtype
    return T.constant(x.builder, np.full(tuple(_sizes((size,))), fill_value, dtype.numpy))


def new_zeros(x, *size, dtype=None, **_):
    return new_full(x, _sizes(size), 0, dtype)


def new_ones(x, *size, dtype=None, **_):
    return new_full(x, _sizes(size), 1, dtype)


def new_tensor(x, data, dtype=None, **_):
    return T.tensor_of(data, x.builder, dtype if dtype is not None else x.dtype)


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("builtins", "np", "T", "DType",
                                                                  "UnsupportedOpError")]
