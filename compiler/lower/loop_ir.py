"""Loop IR: the algorithm of a kernel as loop nests over flat buffers.

Expressions are trees (Var, Const, Bin, Call, Load, Select, Reduce); statements
are For loops and Stores. A For loop's `kind` carries its schedule: 'serial',
'unroll', 'parallel' (split across threads) or 'vector' (`lanes` wide, tail
masked). Lowerings build nests with Python operators (`y[i] = x[i] * 2`);
codegen turns them into LLVM IR. Indices are int64 element offsets.

Which loops run in parallel is not the lowering's choice: it names a loop that
may (`parallel_candidate=(family, work)`) and the schedule step
(compiler/schedule/kernels.py, run on every finished kernel) decides from the
target's table.
"""
from dataclasses import dataclass, field
from typing import Optional

from ..ir.types import DType

INDEX = DType.int64


class Expr:
    dtype: DType

    def _bin(self, op, other, swap=False):
        other = as_expr(other, self.dtype)
        return Bin(op, other, self) if swap else Bin(op, self, other)

    def __add__(self, o): return self._bin("+", o)
    def __radd__(self, o): return self._bin("+", o, True)
    def __sub__(self, o): return self._bin("-", o)
    def __rsub__(self, o): return self._bin("-", o, True)
    def __mul__(self, o): return self._bin("*", o)
    def __rmul__(self, o): return self._bin("*", o, True)
    def __truediv__(self, o): return self._bin("/", o)
    def __rtruediv__(self, o): return self._bin("/", o, True)
    def __floordiv__(self, o): return self._bin("//", o)
    def __mod__(self, o): return self._bin("%", o)
    def __neg__(self): return Call("neg", (self,))
    def __lt__(self, o): return self._bin("<", o)
    def __le__(self, o): return self._bin("<=", o)
    def __gt__(self, o): return self._bin(">", o)
    def __ge__(self, o): return self._bin(">=", o)
    def eq(self, o): return self._bin("==", o)
    def ne(self, o): return self._bin("!=", o)
    def __and__(self, o): return self._bin("and", o)      # logical on bool, bitwise on ints
    def __xor__(self, o): return self._bin("xor", o)
    def __rshift__(self, o): return self._bin("lshr", o)   # logical: the hash works on bits
    __hash__ = object.__hash__


def as_expr(value, dtype=DType.float32):
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool):
        return Const(value, DType.bool)
    if isinstance(value, int) and not dtype.is_float:
        return Const(value, dtype)
    return Const(float(value) if dtype.is_float else value, dtype)


@dataclass(eq=False)
class Const(Expr):
    value: object
    dtype: DType = DType.float32


@dataclass(eq=False)
class Var(Expr):
    name: str
    dtype: DType = INDEX


# The running thread's index inside a parallel loop (0 outside one): a per-thread
# scratch slot when a parallel loop has more iterations than threads.
THREAD_INDEX = Var("thread")

COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


@dataclass(eq=False)
class Bin(Expr):
    op: str            # + - * / // %, comparisons, and xor lshr
    a: Expr
    b: Expr

    def __post_init__(self):
        if isinstance(self.a, Const) and not isinstance(self.b, Const):
            self.a = Const(self.a.value, self.b.dtype)
        elif isinstance(self.b, Const) and not isinstance(self.a, Const):
            self.b = Const(self.b.value, self.a.dtype)
        self.dtype = DType.bool if self.op in COMPARISONS else self.a.dtype


@dataclass(eq=False)
class Call(Expr):
    fn: str            # neg abs exp log sqrt tanh fma max min erf floor ...
    args: tuple
    dtype: Optional[DType] = None

    def __post_init__(self):
        self.args = tuple(as_expr(a, self.args[0].dtype if isinstance(self.args[0], Expr)
                                  else DType.float32) for a in self.args)
        if self.dtype is None:
            self.dtype = self.args[0].dtype


def cast(x, dtype):
    return Call("cast", (x,), dtype)


def maximum(a, b):
    a = as_expr(a, b.dtype if isinstance(b, Expr) else DType.float32)
    return Call("max", (a, as_expr(b, a.dtype)))


def sigmoid(x):
    """1 / (1 + e^-x). In float32 the division is the reciprocal estimate refined by
    a Newton step ("recip", within 2 ulp): SiLU layers spent as long dividing as in exp."""
    d = 1.0 + Call("exp", (-x,))
    return Call("recip", (d,)) if x.dtype == DType.float32 else 1.0 / d


def minimum(a, b):
    a = as_expr(a, b.dtype if isinstance(b, Expr) else DType.float32)
    return Call("min", (a, as_expr(b, a.dtype)))


def fma(a, b, c):
    return Call("fma", (a, b, c))


@dataclass(eq=False)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr

    def __post_init__(self):
        ref = self.a if isinstance(self.a, Expr) else self.b
        dtype = ref.dtype if isinstance(ref, Expr) else DType.float32
        self.a, self.b = as_expr(self.a, dtype), as_expr(self.b, dtype)
        self.dtype = self.a.dtype


@dataclass(eq=False)
class Load(Expr):
    buf: "Buffer"
    index: Expr
    mask: Optional[Expr] = None   # lanes where it is false read nothing and give 0

    def __post_init__(self):
        self.index = as_expr(self.index, INDEX)
        self.dtype = self.buf.dtype


@dataclass(eq=False)
class Reduce(Expr):
    """op(body for var in range(extent)), op in sum/max/min. With lanes > 1 the
    reduction itself is vectorised (when not already inside a vector loop)."""
    op: str
    var: Var
    extent: int
    body: Expr
    lanes: int = 1

    def __post_init__(self):
        self.dtype = self.body.dtype


@dataclass(eq=False)
class Buffer:
    name: str
    dtype: DType
    size: int
    local: bool = False      # a stack buffer of the kernel (accumulators)

    def __getitem__(self, index):
        return Load(self, as_expr(index, INDEX))

    def load(self, index, mask=None):
        return Load(self, as_expr(index, INDEX), mask)


@dataclass(eq=False)
class Store:
    buf: Buffer
    index: Expr
    value: Expr
    mask: Optional[Expr] = None
    # (q, k): the q-th of k consecutive stores that write index + q, each moving by k
    # per lane of the vector loop (a stride-2 output's even and odd columns). Only a
    # promise the lowering makes: the CPU emitter may store them as one interleaved
    # vector instead of k strided ones (schedule table: masked_stores_slow).
    interleave: Optional[tuple] = None

    def __post_init__(self):
        self.index = as_expr(self.index, INDEX)
        self.value = as_expr(self.value, self.buf.dtype)


@dataclass(eq=False)
class Transpose:
    """dst[dst_index + c * dst_stride + r] = src[src_index + r * src_stride + c] for
    r < rows, c < cols (both at most `lanes`): a tile moved through registers, one
    vector load per row and one vector store per column, instead of a gather per
    element (the blocked layout's reorders, NCHW <-> NHWC). Lanes rows..store_rows
    of each stored column are written as zeros (a blocked tensor's padding)."""
    src: Buffer
    src_index: Expr
    src_stride: Expr
    dst: Buffer
    dst_index: Expr
    dst_stride: Expr
    rows: int
    cols: int
    lanes: int
    store_rows: int = 0          # 0: rows

    def __post_init__(self):
        for name in ("src_index", "src_stride", "dst_index", "dst_stride"):
            setattr(self, name, as_expr(getattr(self, name), INDEX))
        self.store_rows = max(self.store_rows, self.rows)


@dataclass(eq=False)
class For:
    var: Var
    extent: int
    body: list
    kind: str = "serial"     # serial | unroll | parallel | vector
    lanes: int = 1
    limit: Optional[Expr] = None   # serial only: run min(extent, max(limit, 0)) trips,
                                   # a thread's share of a split its index decides
    parallel_candidate: Optional[tuple] = None   # (family, work): the schedule may make it parallel


@dataclass(eq=False)
class Kernel:
    name: str
    params: list             # [Buffer], in call order
    body: list
    locals: list = field(default_factory=list)   # [Buffer] on the stack


class NestBuilder:
    """Collects statements with `with nb.loop(...) as i:` blocks."""

    def __init__(self):
        self.stack = [[]]
        self._n = 0

    def var(self, hint="i"):
        self._n += 1
        return Var(f"{hint}{self._n}")

    def loop(self, extent, kind="serial", lanes=1, hint="i", limit=None, parallel_candidate=None):
        """A loop over range(extent). parallel_candidate=(family, work): the iterations
        are independent and `work` (the family's unit, schedule/loops.py) runs under
        the loop; the schedule step decides whether it is split across threads."""
        builder = self
        if kind == "parallel":
            raise ValueError("lowerings emit serial loops: the schedule step makes loops parallel "
                             "(pass parallel_candidate=(family, work))")
        if limit is not None and (kind != "serial" or parallel_candidate is not None):
            raise ValueError("only serial loops take a run-time limit")

        class _Scope:
            def __enter__(self_inner):
                self_inner.var = builder.var(hint)
                builder.stack.append([])
                return self_inner.var

            def __exit__(self_inner, *exc):
                body = builder.stack.pop()
                if exc[0] is None and int(extent) > 0:
                    builder.emit(For(self_inner.var, int(extent), body, kind, lanes,
                                     None if limit is None else as_expr(limit, INDEX),
                                     parallel_candidate))
                return False
        return _Scope()

    def emit(self, stmt):
        self.stack[-1].append(stmt)

    def store(self, buf, index, value, mask=None, interleave=None):
        self.emit(Store(buf, as_expr(index, INDEX), value, mask, interleave))

    def transpose(self, *args, **kw):
        self.emit(Transpose(*args, **kw))

    def body(self):
        assert len(self.stack) == 1
        return self.stack[0]


def affine_coeff(expr, var):
    """Coefficient of `var` in `expr` if expr is affine in it (0: invariant), else None."""
    if isinstance(expr, Var):
        return 1 if expr.name == var.name else 0
    if isinstance(expr, Const):
        return 0
    if isinstance(expr, Bin) and expr.dtype == INDEX:
        ca, cb = affine_coeff(expr.a, var), affine_coeff(expr.b, var)
        if ca is None or cb is None:
            return None
        if expr.op == "+":
            return ca + cb
        if expr.op == "-":
            return ca - cb
        if expr.op == "*":
            if ca == 0 and isinstance(expr.a, Const):
                return cb * int(expr.a.value)
            if cb == 0 and isinstance(expr.b, Const):
                return ca * int(expr.b.value)
            return 0 if ca == 0 and cb == 0 else None
        return 0 if ca == 0 and cb == 0 else None
    return None if depends_on(expr, var) else 0


def depends_on(expr, var):
    if isinstance(expr, Var):
        return expr.name == var.name
    if isinstance(expr, Const):
        return False
    if isinstance(expr, Load):
        return depends_on(expr.index, var) or (expr.mask is not None and depends_on(expr.mask, var))
    if isinstance(expr, Reduce):
        return depends_on(expr.body, var)
    return any(depends_on(child, var) for child in children(expr))


def children(expr):
    if isinstance(expr, Bin):
        return (expr.a, expr.b)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Select):
        return (expr.cond, expr.a, expr.b)
    if isinstance(expr, Load):
        return (expr.index,) + ((expr.mask,) if expr.mask is not None else ())
    if isinstance(expr, Reduce):
        return (expr.body,)
    return ()
