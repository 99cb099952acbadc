"""The symbolic Tensor that forward() runs on, and the tracing context.

Every operation on a Tensor appends a node to the GraphBuilder being traced;
nothing is computed. Operators follow PyTorch's type promotion (an int tensor
times 0.5 is float32, int / int is float32), so that model code written for
torch traces to the graph torch would have computed. The methods with more
than a line of logic live in tensor_ops.py."""
import numpy as np
import onnx

from nutshell.compiler.errors import InputError, ShapeError, UnsupportedOpError
from nutshell.compiler.ir.types import DType, TensorType

from . import tensor_ops as ops
from .trace_context import (TraceContext, active_builder, eager_builder, param_value,  # noqa: F401
                            traced_param)


def onnx_code(dtype):
    return int(onnx.helper.np_dtype_to_tensor_dtype(dtype.numpy))


def as_dtype(dtype):
    """A DType from a DType, a NumPy dtype, a name or a torch dtype."""
    if isinstance(dtype, DType):
        return dtype
    if dtype in (float, "float"):
        return DType.float32
    if dtype in (int, "long"):
        return DType.int64
    if dtype is bool:
        return DType.bool
    text = str(dtype)
    if text.startswith("torch."):
        text = text[len("torch."):]
    return DType.from_numpy({"float": "float32", "long": "int64", "int": "int32",
                             "double": "float64", "half": "float16"}.get(text, text))


def _result_dtype(a, b):
    """PyTorch's promotion of two dtypes of the same category rank."""
    order = [DType.bool, DType.uint8, DType.int8, DType.int16, DType.int32, DType.int64,
             DType.float16, DType.float32, DType.float64]
    return max(a, b, key=order.index)


def _scalar_dtype(value, tensor_dtype):
    if isinstance(value, (bool, np.bool_)):
        return tensor_dtype
    if isinstance(value, (int, np.integer)):
        return DType.int64 if tensor_dtype == DType.bool else tensor_dtype
    return tensor_dtype if tensor_dtype.is_float else DType.float32


def value_of(t):
    """The NumPy value of a tensor known without running the graph (an eager
    tensor, or a constant of a trace)."""
    array = t.builder.constants.get(t.name)
    if array is None:
        raise InputError("a traced tensor has no value while tracing (.item(), .numpy(), "
                         "float(), if/while on a tensor); return it from forward instead")
    return array


def _is_tensor(v):
    return isinstance(v, Tensor) or hasattr(v, "_traced")


def tensor_of(value, builder=None, dtype=None):
    """`value` as a Tensor of `builder` (default: the active trace, else a new
    eager one): Tensors pass (a constant of another builder is copied in),
    Parameters resolve, numbers and arrays become constants (of `dtype` when given)."""
    if isinstance(value, Tensor):
        if builder is None or value.builder is builder:
            return value
        if value.name not in value.builder.constants:
            raise InputError(f"tensor '{value.name}' belongs to another trace")
        return constant(builder, value.builder.constants[value.name])
    if hasattr(value, "_traced"):
        return value._traced()
    builder = builder or active_builder() or eager_builder()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":      # None, strings, ragged lists: not a number
        raise TypeError(f"cannot use {type(value).__name__} {value!r:.40} as a tensor operand "
                        "(only tensors, numbers and numeric arrays)")
    if dtype is not None:
        array = array.astype(as_dtype(dtype).numpy)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    return constant(builder, array)


def common_builder(tensors):
    """Where an op on these tensors goes: a trace's builder wins over eager ones."""
    builders = [t.builder for t in tensors]
    traced = [b for b in builders if not getattr(b, "eager", False)]
    return (traced or builders or [active_builder() or eager_builder()])[0]


def promote(*values):
    """The operands as Tensors of one builder and their common dtype (PyTorch's
    rules: tensors decide over Python numbers unless the number is of a higher
    category)."""
    tensors = [tensor_of(v) for v in values if _is_tensor(v)]
    builder = common_builder(tensors)
    dtype = None
    for t in tensors:
        dtype = t.dtype if dtype is None else _result_dtype(dtype, t.dtype)
    for v in values:
        if not _is_tensor(v):
            if dtype is None:
                dtype = tensor_of(v, builder).dtype
            elif isinstance(v, np.ndarray) and v.dtype != np.float64:
                dtype = _result_dtype(dtype, DType.from_numpy(v.dtype))
            elif not isinstance(v, np.ndarray):
                dtype = _result_dtype(dtype, _scalar_dtype(v, dtype))
    out = []
    for v in values:
        t = tensor_of(tensor_of(v), builder) if _is_tensor(v) else tensor_of(v, builder, dtype)
        out.append(t if t.dtype == dtype else t.to(dtype))
    return out


def constant(builder, array, name=None):
    return Tensor(builder, builder.add_constant(array, name))


def apply(op, inputs, outputs=1, **attrs):
    """Append `op` to the graph being traced (or fold it, on eager tensors);
    returns the output Tensor(s)."""
    given = [tensor_of(t) if t is not None else None for t in inputs]
    builder = common_builder([t for t in given if t is not None])
    inputs = [tensor_of(t, builder) if t is not None else None for t in given]
    names = builder.add_node(op, [t.name if t is not None else "" for t in inputs], attrs,
                             num_outputs=outputs)
    if isinstance(names, tuple):
        return tuple(Tensor(builder, n) for n in names)
    return Tensor(builder, names)


def _binary(op, reverse=False, float_result=False):
    def method(self, other):
        a, b = promote(self, other) if not reverse else promote(other, self)
        if float_result and not a.dtype.is_float:
            a, b = a.float(), b.float()
        return apply(op, [a, b])
    method.__name__ = f"__{'r' if reverse else ''}{op.lower()}__"
    return method


def _compare(op, swap=False):
    def method(self, other):
        if other is None:
            return NotImplemented
        a, b = promote(self, other)
        return apply(op, [b, a] if swap else [a, b])
    return method


class Tensor:
    """A symbolic value during tracing, with torch.Tensor's methods."""
    __array_ufunc__ = None       # numpy_array + tensor defers to Tensor.__radd__
    __hash__ = object.__hash__   # == builds a graph node, identity still hashes

    def __init__(self, builder, name):
        self.builder, self.name = builder, name

    def __repr__(self):
        if getattr(self.builder, "eager", False):
            return f"tensor({value_of(self)!r}, dtype={self.dtype.value})"
        return f"Tensor('{self.name}', shape={self.shape}, dtype={self.dtype.value})"

    def __bool__(self):
        if self.name not in self.builder.constants:
            raise InputError("a traced tensor has no value: Python control flow on tensor values "
                             "(if/while on a tensor) cannot be traced; use ns.where")
        return bool(value_of(self))

    def numpy(self):
        """The value of an eager tensor (or a trace's constant); traced values have none."""
        return value_of(self)

    def __array__(self, dtype=None, copy=None):
        array = value_of(self)
        return array if dtype is None else array.astype(dtype)

    def item(self):
        return value_of(self).item()

    def tolist(self):
        return value_of(self).tolist()

    def __float__(self):
        return float(value_of(self).item())

    def __int__(self):
        return int(value_of(self).item())

    def __index__(self):
        return int(value_of(self).item())

    @property
    def type(self) -> TensorType:
        return self.builder.types[self.name]

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def device(self):
        return "cpu"

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[ops.axis(dim, self.ndim)]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return iter(self.unbind(0))

    def is_floating_point(self):
        return self.dtype.is_float

    # arithmetic, with PyTorch's promotion
    __add__, __radd__ = _binary("Add"), _binary("Add", reverse=True)
    __sub__, __rsub__ = _binary("Sub"), _binary("Sub", reverse=True)
    __mul__, __rmul__ = _binary("Mul"), _binary("Mul", reverse=True)
    __truediv__ = _binary("Div", float_result=True)
    __rtruediv__ = _binary("Div", reverse=True, float_result=True)
    __matmul__, __rmatmul__ = _binary("MatMul"), _binary("MatMul", reverse=True)
    __lt__, __gt__ = _compare("Less"), _compare("Greater")
    __le__, __ge__ = _compare("LessOrEqual"), _compare("GreaterOrEqual")

    def __eq__(self, other):
        return NotImplemented if other is None else apply("Equal", promote(self, other))

    def __ne__(self, other):
        return NotImplemented if other is None else ~(self == other)

    def __neg__(self):
        return apply("Neg", [self])

    def __pos__(self):
        return self

    def __abs__(self):
        return apply("Abs", [self])

    def __pow__(self, exponent):
        return ops.power(self, exponent)

    def __rpow__(self, base):
        return ops.power(base, self)

    def __floordiv__(self, other):
        return ops.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return ops.floor_divide(other, self)

    def __mod__(self, other):
        return ops.remainder(self, other)

    def __rmod__(self, other):
        return ops.remainder(other, self)

    def __and__(self, other):
        return ops.logical_and(self, other)

    __rand__ = __and__

    def __or__(self, other):
        return ops.logical_or(self, other)

    __ror__ = __or__

    def __invert__(self):
        return ops.logical_not(self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    def __setitem__(self, index, value):
        from .indexing import setitem
        self.name = setitem(self, index, value).name

    # dtype and device
    def to(self, *args, **kwargs):
        dtype = kwargs.get("dtype")
        for a in args:
            if isinstance(a, Tensor):
                dtype = a.dtype
            elif not (isinstance(a, str) or type(a).__name__ == "device"):
                dtype = a
        if dtype is None or as_dtype(dtype) == self.dtype:
            return self
        return apply("Cast", [self], to=onnx_code(as_dtype(dtype)))

    def type_as(self, other):
        return self.to(other.dtype)

    def float(self):
        return self.to(DType.float32)

    def double(self):
        return self.to(DType.float64)

    def long(self):
        return self.to(DType.int64)

    def int(self):
        return self.to(DType.int32)

    def bool(self):
        return self.to(DType.bool)

    def contiguous(self, *args, **kwargs):
        return self

    def clone(self, *args, **kwargs):
        return Tensor(self.builder, self.name)     # its own object, for in-place methods

    def cpu(self):
        return self

    def cuda(self, *args, **kwargs):
        return self

    def detach(self):
        """Identity in the graph; the node's output is listed in the trace's
        `detached` values, where gradients must stop."""
        out = apply("Identity", [self])
        self.builder.trace.detached.append(out.name)
        return out


def _in_place(name):
    """x.add_(y) and x += y: the Python object now names the new value (the graph
    stays pure; other views of the old value do not change, unlike torch)."""
    def method(self, *args, **kwargs):
        out = getattr(self, name)(*args, **kwargs) if name else \
            ops.new_full(self, self.shape, args[0]) if args else ops.new_zeros(self, self.shape)
        if out.shape != self.shape:
            raise ShapeError(f"in-place {name or 'fill'} would change the shape {self.shape} to {out.shape}")
        self.name = out.to(self.dtype).name
        return self
    return method


for _name in ("add", "sub", "mul", "div", "clamp", "masked_fill", "relu", "sigmoid", "tanh", "exp",
              "log", "pow", "neg", "abs", "sqrt", "clip"):
    setattr(Tensor, _name + "_", _in_place(_name))
for _name, _op in (("iadd", "__add__"), ("isub", "__sub__"), ("imul", "__mul__"), ("itruediv", "__truediv__")):
    setattr(Tensor, f"__{_name}__", _in_place(_op))
Tensor.fill_ = _in_place(None)
Tensor.zero_ = lambda self: Tensor.fill_(self, 0)


def _delegate(name):
    def method(self, *args, **kwargs):
        return getattr(ops, name)(self, *args, **kwargs)
    method.__name__ = name
    return method


for _name in ops.METHODS:
    setattr(Tensor, _name, _delegate(_name))
