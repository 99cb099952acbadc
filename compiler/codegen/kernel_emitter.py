"""Emit one loop-IR Kernel as LLVM functions.

Scalar code is the default; inside a `vector` For every expression is evaluated
for `lanes` consecutive values of the loop variable: loads whose index moves by
1 per lane become (masked) vector loads, invariant ones stay scalar and are
splatted, others become per-lane gathers. `parallel` loops are outlined into a
worker run by nutshell's thread pool (parallel.py, thread_pool.py), taking chunks of
iterations; each iteration is the same code whoever runs it, so results do not
depend on the thread count or the schedule.
"""

from llvmlite import ir

from ..errors import CompileError
from ..ir.types import DType
from ..lower.loop_ir import (THREAD_INDEX, Bin, Call, Const, For, Load, Reduce, Select, Store, Transpose,
                             Var, affine_coeff)
from . import llvm_helpers as H
from .memory_access import MAX_SHUFFLE_STRIDE, MemoryAccess, VecCtx
from .parallel import ParallelLoops
from .reductions import Reductions
from .vector_math import VECTOR_MATH, nan_extreme


LOCAL_PAD = 64          # elements: one vector of the narrowest type at the widest ISA


class KernelEmitter(MemoryAccess, ParallelLoops, Reductions):
    def __init__(self, module, kernel, threads=1, workers=None, masked_stores_slow=False):
        self.module, self.kernel = module, kernel
        self.threads = threads
        self.masked_stores_slow = masked_stores_slow     # the target's table (schedule/tables.py)
        self.workers = workers   # find_worker(module, key), add_worker(key, fn): shared across kernels
        self.builder = None
        self.env = {}            # loop var name -> i64 value
        self.bufs = {}           # buffer name -> ptr value (params and locals)
        self._memo = {}          # id(expr) -> [(vec, value)] within one statement
        self._workers = 0
        self.in_worker = False   # a parallel loop inside a worker runs serially

    # ---- functions -------------------------------------------------------------
    def emit(self):
        # (buffer pointers..., i32 threads): the thread count is a run-time argument
        fnty = ir.FunctionType(H.VOID, [H.PTR] * len(self.kernel.params) + [H.I32])
        fn = ir.Function(self.module, fnty, name=self.kernel.name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")   # a kernel called per time step (an LSTM's) was inlined
        #                                 at every call: 32 steps compiled in 20 s, now 1 s
        for arg, buf in zip(fn.args, self.kernel.params):
            arg.add_attribute("noalias")
        self.nthreads = fn.args[-1]
        self._begin(fn, {b.name: a for b, a in zip(self.kernel.params, fn.args)})
        self.env[THREAD_INDEX.name] = ir.Constant(H.I64, 0)
        self.stmts(self.kernel.body, None)
        self.builder.ret_void()
        return fn

    def _begin(self, fn, params):
        fn.attributes.add("nounwind")
        self.builder = ir.IRBuilder(fn.append_basic_block("entry"))
        self.bufs = dict(params)
        for buf in self.kernel.locals:   # every function gets its own stack buffers,
            # padded by a vector so a tail reads and writes them whole, unmasked: a
            # masked access would keep LLVM from promoting accumulators to registers
            ty = ir.ArrayType(H.memory_type(buf.dtype), buf.size + LOCAL_PAD)
            self.bufs[buf.name] = H.alloca(self.builder, ty, name=buf.name)

    # ---- statements ------------------------------------------------------------
    def stmts(self, stmts, vec):
        i = 0
        while i < len(stmts):
            s = stmts[i]
            group = self._interleaved(stmts, i, vec) if isinstance(s, Store) else None
            i += len(group) if group else 1
            if group:
                self.store_interleaved(group, vec)
            elif isinstance(s, Store):
                self.store(s, vec)
            elif isinstance(s, For):
                self.loop(s, vec)
            elif isinstance(s, Transpose) and vec is None:
                self.transpose(s)
            else:
                raise CompileError(f"unknown loop IR statement {s!r}")

    def loop(self, s, vec):
        """Emit one For; its variable is in scope only inside it (parallel workers
        capture every variable in scope)."""
        saved = dict(self.env)
        self._loop(s, vec)
        self.env = saved

    def _loop(self, s, vec):
        name = s.var.name
        if s.kind == "vector" and s.lanes > 1:
            if vec is not None:
                raise CompileError(f"nested vector loop '{name}'")
            return self.vector_loop(s)
        if s.kind == "unroll":
            for i in range(s.extent):
                self.env[name] = ir.Constant(H.I64, i)
                self.stmts(s.body, vec)
            return
        if s.kind == "parallel" and self.threads > 1 and vec is None \
                and s.extent > 1 and not self.in_worker:
            return self.parallel_loop(s)

        def body(i, _):
            self.env[name] = i
            self.stmts(s.body, vec)
        count = s.extent
        if s.limit is not None:       # min(extent, max(limit, 0)), computed at run time
            self._memo = {}
            b, limit = self.builder, self.expr(s.limit, None)
            count = b.select(b.icmp_signed("<", limit, ir.Constant(H.I64, s.extent)), limit,
                             ir.Constant(H.I64, s.extent))
            count = b.select(b.icmp_signed("<", count, ir.Constant(H.I64, 0)), ir.Constant(H.I64, 0), count)
        H.counted_loop(self.builder, count, body, name=name)

    def vector_loop(self, s):
        lanes, full, rem = s.lanes, s.extent // s.lanes, s.extent % s.lanes
        name = s.var.name
        if 0 < full <= 4:          # short: unroll, so accumulators stay in registers
            for j in range(full):
                self.stmts(s.body, VecCtx(name, ir.Constant(H.I64, j * lanes), lanes))
        elif full > 4:
            def body(i, _):
                base = self.builder.mul(i, ir.Constant(H.I64, lanes))
                self.stmts(s.body, VecCtx(name, base, lanes))
            H.counted_loop(self.builder, full, body, name=name)
        if rem:
            self.stmts(s.body, VecCtx(name, ir.Constant(H.I64, full * lanes), lanes,
                                      H.lane_mask(rem, lanes)))

    def store(self, s, vec):
        b = self.builder
        self._memo = {}      # per statement: values computed in its own blocks only
        value = self.expr(s.value, vec)
        mask = self._mask(s.mask, vec, s.buf)
        if vec is not None and isinstance(value.type, ir.VectorType) or \
                (vec is not None and affine_coeff(s.index, Var(vec.var)) != 0):
            coeff = affine_coeff(s.index, Var(vec.var))
            if not isinstance(value.type, ir.VectorType):
                value = H.splat(b, value, vec.lanes)
            ptr = self._ptr(s.buf, self.expr(s.index, self._lane0(vec)))
            value = self._to_memory(value, s.buf.dtype)
            if isinstance(coeff, int) and 2 <= coeff <= MAX_SHUFFLE_STRIDE:
                return self._strided_store(value, ptr, mask, vec.lanes, coeff, s.buf.dtype.itemsize)
            if coeff != 1:
                raise CompileError(f"store to {s.buf.name} is not contiguous in vector loop "
                                   f"'{vec.var}'")
            return self._checked_store(value, ptr, mask, s.buf.dtype.itemsize, vec, s.buf)
        if mask is not None and vec is None:    # scalar code's edge tiles: store under a branch
            with b.if_then(mask):
                b.store(self._to_memory(value, s.buf.dtype), self._ptr(s.buf, self.expr(s.index, None)))
            return None
        if mask is not None:
            raise CompileError("masked store of a loop-invariant value")
        b.store(self._to_memory(value, s.buf.dtype), self._ptr(s.buf, self.expr(s.index, None)))

    # ---- expressions -----------------------------------------------------------
    def _lane0(self, vec):
        """Evaluate an index at lane 0: the loop var stands for its base."""
        return ("lane0", vec)

    def _mask(self, cond, vec, buf=None):
        """Combine an optional predicate with the tail mask of `vec` (none for a
        padded local buffer)."""
        tail = vec.mask if vec is not None and not (buf is not None and buf.local) else None
        if cond is None:
            return tail
        m = self.expr(cond, vec)
        if vec is not None and not isinstance(m.type, ir.VectorType):
            m = H.splat(self.builder, m, vec.lanes)
        return m if tail is None else self.builder.and_(m, tail)

    def expr(self, e, vec):
        lane0 = isinstance(vec, tuple)   # an index evaluated at lane 0 of `vec`
        if isinstance(e, Const):
            value = e.value
            if not e.dtype.is_float and e.dtype != DType.bool:
                bits = 8 * e.dtype.itemsize      # two's complement (hash constants, uint64 values)
                value = int(value) % (1 << bits)
                value = value - (1 << bits) if value >= 1 << (bits - 1) else value
            return ir.Constant(H.llvm_type(e.dtype), value)
        if isinstance(e, Var):
            return self._var(e, vec)
        # shared subtrees (x * sigmoid(x), a fused loop's DAG) are emitted once
        for seen_vec, value in self._memo.get(id(e), ()):
            if seen_vec is vec:
                return value
        value = self._compound(e, vec, lane0)
        self._memo.setdefault(id(e), []).append((vec, value))
        return value

    def _compound(self, e, vec, lane0):
        if isinstance(e, Bin):
            return self._bin(e, vec)
        if isinstance(e, Call):
            return self._call(e, vec)
        if isinstance(e, Reduce):
            return self._reduce_expr(e, vec, lane0)
        if isinstance(e, Select):
            c, a, x = self._unify([self.expr(e.cond, vec), self.expr(e.a, vec), self.expr(e.b, vec)])
            return self.builder.select(c, a, x)
        if isinstance(e, Load):
            return self._load(e, vec)
        raise CompileError(f"unknown loop IR expression {e!r}")

    def _reduce_expr(self, e, vec, lane0):
        if lane0:
            raise CompileError("a reduction inside an index expression")
        outer = self._memo
        self._memo = dict(outer)     # values made inside the reduction's loop stay there
        try:
            return self._reduce(e, vec)
        finally:
            self._memo = outer

    def _var(self, e, vec):
        if isinstance(vec, tuple):
            ctx = vec[1]
            return ctx.base if e.name == ctx.var else self.env[e.name]
        if vec is not None and e.name == vec.var:
            return self._lanes_of(vec)
        if e.name not in self.env:
            raise CompileError(f"loop variable '{e.name}' used outside its loop")
        return self.env[e.name]

    def _lanes_of(self, vec):
        """<base, base + 1, ...>: once per statement (a vector index names its loop
        variable many times), a constant in unrolled loops."""
        for seen_vec, value in self._memo.get("lanes", ()):
            if seen_vec is vec:
                return value
        vty = ir.VectorType(H.I64, vec.lanes)
        if type(vec.base) is ir.Constant:
            value = ir.Constant(vty, [vec.base.constant + i for i in range(vec.lanes)])
        else:
            value = self.builder.add(H.splat(self.builder, vec.base, vec.lanes),
                                     ir.Constant(vty, list(range(vec.lanes))))
        self._memo.setdefault("lanes", []).append((vec, value))
        return value

    def _unify(self, values):
        lanes = max((v.type.count for v in values if isinstance(v.type, ir.VectorType)), default=0)
        if not lanes:
            return values
        return [v if isinstance(v.type, ir.VectorType) else H.splat(self.builder, v, lanes)
                for v in values]

    def _bin(self, e, vec):
        b = self.builder
        x, y = self._unify([self.expr(e.a, vec), self.expr(e.b, vec)])
        is_float, unsigned = e.a.dtype.is_float, e.a.dtype.is_unsigned
        if e.op in ("<", "<=", ">", ">=", "==", "!="):
            if is_float:     # IEEE: NaN != NaN holds, every other comparison with NaN fails
                return (b.fcmp_unordered if e.op == "!=" else b.fcmp_ordered)(e.op, x, y)
            return (b.icmp_unsigned if unsigned else b.icmp_signed)(e.op, x, y)
        if e.op in ("and", "xor", "lshr"):
            return {"and": b.and_, "xor": b.xor, "lshr": b.lshr}[e.op](x, y)
        ops = {"+": ("fadd", "add"), "-": ("fsub", "sub"), "*": ("fmul", "mul"),
               "/": ("fdiv", "sdiv"), "//": (None, "sdiv"), "%": ("frem", "srem")}
        name = ops[e.op][0 if is_float else 1]
        if not is_float and e.op in ("/", "//", "%"):
            if unsigned:
                name = "udiv" if name == "sdiv" else "urem"
            return self._safe_int_division(name, x, y)
        if is_float:
            return getattr(b, name)(x, y)
        folded = _fold_int(name, x, y)
        return folded if folded is not None else self._int_op(name, x, y, vec)

    def _int_op(self, name, x, y, vec):
        """Integer add/sub/mul, once per statement and vector context: the index
        expressions of a statement's loads repeat the same products (CSE that LLVM
        would do, done before the IR is built and printed)."""
        key = (name, _operand_key(x), _operand_key(y), id(vec[1] if isinstance(vec, tuple) else vec))
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = (x, y, getattr(self.builder, name)(x, y))   # x, y kept: their ids stay theirs
        return hit[2]

    def _safe_int_division(self, name, x, y):
        """Integer x / 0 and MIN / -1 trap on x86 (SIGFPE): give 0 and -x instead
        (constant divisors, as in index arithmetic, fold the guards away)."""
        b = self.builder
        if H.constant_int(y) not in (None, 0, -1):      # a constant divisor: nothing to guard
            return getattr(b, name)(x, y)
        zero, minus_one = H.zero(y.type), ir.Constant(y.type, [-1] * y.type.count) \
            if isinstance(y.type, ir.VectorType) else ir.Constant(y.type, -1)
        one = ir.Constant(y.type, [1] * y.type.count) if isinstance(y.type, ir.VectorType) \
            else ir.Constant(y.type, 1)
        bad = b.icmp_signed("==", y, zero)
        if name.startswith("s"):
            bad = b.or_(bad, b.icmp_signed("==", y, minus_one))
        result = getattr(b, name)(x, b.select(bad, one, y))
        fixed = b.select(b.icmp_signed("==", y, zero), zero, zero if name == "srem" else b.neg(x))
        return b.select(bad, fixed, result)

    def _call(self, e, vec):
        b, fn = self.builder, e.fn
        args = self._unify([self.expr(a, vec) for a in e.args])
        x = args[0]
        is_float = e.args[0].dtype.is_float
        if fn == "cast":
            return self._cast(x, e.args[0].dtype, e.dtype)
        if fn == "neg":
            return b.fneg(x) if is_float else b.neg(x)
        if fn in ("max", "min"):
            op = ">" if fn == "max" else "<"
            if is_float:
                number = [isinstance(a, Const) and a.value == a.value for a in e.args]
                if number[0] and not number[1]:     # the constant second: one instruction
                    return nan_extreme(b, self.module, op, args[1], x, True)
                return nan_extreme(b, self.module, op, x, args[1], number[1])
            cmp = (b.icmp_unsigned if e.args[0].dtype.is_unsigned else b.icmp_signed)(op, x, args[1])
            return b.select(cmp, x, args[1])
        if fn in VECTOR_MATH and isinstance(x.type, ir.VectorType) and x.type.element == H.F32 and \
                (fn != "recip" or self.module.triple.startswith("x86_64")):
            return VECTOR_MATH[fn](b, self.module, x)
        if fn == "recip":
            return b.fdiv(ir.Constant(x.type, [1.0] * x.type.count) if isinstance(x.type, ir.VectorType)
                          else ir.Constant(x.type, 1.0), x)
        names = {"abs": "llvm.fabs", "exp": "llvm.exp", "log": "llvm.log", "sqrt": "llvm.sqrt",
                 "tanh": "llvm.tanh", "sin": "llvm.sin", "cos": "llvm.cos", "fma": "llvm.fma", "floor": "llvm.floor",
                 "ceil": "llvm.ceil", "pow": "llvm.pow"}
        if fn not in names or not is_float:
            raise CompileError(f"no code generation for {fn} on {e.args[0].dtype.value}")
        return b.call(H.overloaded(self.module, names[fn], x.type, len(args)), args)

    def _cast(self, x, src, dst):
        b = self.builder
        ty = H.llvm_type(dst)
        if isinstance(x.type, ir.VectorType):
            ty = ir.VectorType(ty, x.type.count)
        if src == dst:
            return x
        if dst == DType.bool:
            return b.fcmp_unordered("!=", x, H.zero(x.type)) if src.is_float else \
                b.icmp_signed("!=", x, H.zero(x.type))
        if src == DType.float64 and dst == DType.float16:   # via float32: no libcall (F16C)
            x, src = self._cast(x, src, DType.float32), DType.float32
        if src.is_float and dst.is_float:
            return b.fpext(x, ty) if dst.itemsize > src.itemsize else b.fptrunc(x, ty)
        if src.is_float:
            return b.fptoui(x, ty) if dst.is_unsigned else b.fptosi(x, ty)
        if dst.is_float:
            return b.uitofp(x, ty) if src.is_unsigned else b.sitofp(x, ty)
        if src == DType.bool:
            return b.zext(x, ty)
        if dst.itemsize > src.itemsize:
            return b.zext(x, ty) if src.is_unsigned else b.sext(x, ty)
        return b.trunc(x, ty) if dst.itemsize < src.itemsize else x


def _fold_int(name, x, y):
    """Scalar integer add/sub/mul with constants, folded here (index arithmetic such as
    ((c * 3) + 0) * 3 in unrolled loops): exact, as LLVM would fold them, only sooner."""
    const_x, const_y = type(x) is ir.Constant, type(y) is ir.Constant
    if not (const_x or const_y) or not isinstance(x.type, ir.IntType):
        return None
    if const_x and const_y:
        bits = x.type.width
        value = {"add": int.__add__, "sub": int.__sub__, "mul": int.__mul__}[name](x.constant, y.constant)
        value %= 1 << bits
        return ir.Constant(x.type, value - (1 << bits) if value >= 1 << (bits - 1) else value)
    if const_y and y.constant == 0 and name in ("add", "sub") or const_y and y.constant == 1 and name == "mul":
        return x
    if const_x and x.constant == 0 and name == "add" or const_x and x.constant == 1 and name == "mul":
        return y
    return None


def _operand_key(value):
    number = H.constant_int(value)
    return ("const", str(value.type), number) if number is not None else id(value)
