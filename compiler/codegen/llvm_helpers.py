"""Small llvmlite helpers: types, intrinsics, splats, loops with carried values."""
import functools

from llvmlite import ir

from ..errors import UnsupportedTypeError
from ..ir.types import DType

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

I16 = ir.IntType(16)
_SCALAR = {DType.float32: F32, DType.float64: F64, DType.float16: ir.HalfType(),
           DType.int8: I8, DType.int16: I16, DType.int32: I32, DType.int64: I64,
           DType.uint8: I8, DType.uint16: I16, DType.uint32: I32, DType.uint64: I64, DType.bool: I1}


def llvm_type(dtype):
    """Register type of a dtype (bool is i1 in registers, i8 in memory)."""
    try:
        return _SCALAR[dtype]
    except KeyError:
        raise UnsupportedTypeError(f"no code generation for dtype {dtype}") from None


def memory_type(dtype):
    return I8 if dtype == DType.bool else llvm_type(dtype)


def mangle(ty):
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{mangle(ty.element)}"
    if isinstance(ty, ir.PointerType):
        return "p0"
    if ty == F32:
        return "f32"
    if ty == F64:
        return "f64"
    if isinstance(ty, ir.HalfType):
        return "f16"
    return f"i{ty.width}"


def intrinsic(module, name, ret, args):
    """Get or declare `name` (already mangled) with the given signature."""
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
    return fn


def overloaded(module, base, ty, nargs=1):
    """An intrinsic overloaded on one type: llvm.exp.v16f32 and friends."""
    return intrinsic(module, f"{base}.{mangle(ty)}", ty, [ty] * nargs)


def alloca(builder, ty, name=""):
    """Stack slot typed as an opaque `ptr` (llvmlite types allocas as typed pointers)."""
    slot = builder.alloca(ty, name=name)
    slot.type = PTR
    return slot


def splat(builder, value, lanes):
    vty = ir.VectorType(value.type, lanes)
    if type(value) is ir.Constant and value.constant is not ir.Undefined:
        # a constant: `splat (T c)`, no instructions to build, print and fold away
        return SplatConstant(vty, value)
    undef = ir.Constant(vty, ir.Undefined)
    first = builder.insert_element(undef, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(first, undef, _broadcast_mask(lanes))


class SplatConstant(ir.Constant):
    """`splat (T c)`: a vector constant whose lanes are all `c`, as short as one lane."""

    def __init__(self, vty, scalar):     # (ir.Constant would wrap the text per lane)
        self.type, self.constant = vty, f"splat ({scalar.type} {scalar.get_reference()})"
        self.scalar = scalar

    def _to_string(self):
        return f"{self.type} {self.constant}"

    def _get_reference(self):
        return self.constant


@functools.lru_cache(maxsize=None)
def _broadcast_mask(lanes):
    # zeroinitializer, not `lanes` i32 zeros: one constant shared by every splat, built
    # and printed once (the per-element form cost seconds on a ResNet training step)
    return ir.Constant(ir.VectorType(I32, lanes), None)


def constant_int(value):
    """The integer a scalar or splat constant holds, else None."""
    value = getattr(value, "scalar", value)
    if type(value) is ir.Constant and isinstance(value.type, ir.IntType) and isinstance(value.constant, int):
        return value.constant
    return None


def lane_mask(count, lanes):
    """Constant <lanes x i1> true on the first `count` lanes."""
    return ir.Constant(ir.VectorType(I1, lanes), [1 if i < count else 0 for i in range(lanes)])


def zero(ty):
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [zero(ty.element).constant] * ty.count)
    return ir.Constant(ty, 0.0 if isinstance(ty, (ir.FloatType, ir.DoubleType, ir.HalfType)) else 0)


def counted_loop(builder, count, body, carried=(), name="loop"):
    """for i in range(count): carried = body(i, carried). `count` is an i64 value
    or int; returns the final carried values. The body may create blocks."""
    count = ir.Constant(I64, count) if isinstance(count, int) else count
    pre = builder.block
    header = builder.append_basic_block(f"{name}.head")
    loop_body = builder.append_basic_block(f"{name}.body")
    exit_block = builder.append_basic_block(f"{name}.exit")
    builder.branch(header)
    builder.position_at_end(header)
    index = builder.phi(I64, name=f"{name}.i")
    index.add_incoming(ir.Constant(I64, 0), pre)
    phis = []
    for value in carried:
        phi = builder.phi(value.type)
        phi.add_incoming(value, pre)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", index, count), loop_body, exit_block)
    builder.position_at_end(loop_body)
    new = list(body(index, list(phis)) or [])
    latch = builder.block
    index.add_incoming(builder.add(index, ir.Constant(I64, 1)), latch)
    for phi, value in zip(phis, new):
        phi.add_incoming(value, latch)
    builder.branch(header)
    builder.position_at_end(exit_block)
    return phis


def horizontal(builder, vector, combine):
    """Tree-reduce a vector with `combine(a, b)` using shuffles; returns a scalar."""
    lanes = vector.type.count
    while lanes > 1:
        half = lanes // 2
        undef = ir.Constant(vector.type, ir.Undefined)
        idx_ty = ir.VectorType(I32, half)
        lo = builder.shuffle_vector(vector, undef, ir.Constant(idx_ty, list(range(half))))
        hi = builder.shuffle_vector(vector, undef, ir.Constant(idx_ty, list(range(half, lanes))))
        vector, lanes = combine(lo, hi), half
    return builder.extract_element(vector, ir.Constant(I32, 0))
