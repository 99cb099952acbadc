"""Row reductions on a warp: softmax, layer norm, mean/variance, reduce ops.

The generic mapping gives a row-wise kernel one thread per row, each summing its
row serially: a [197, 768] layer norm is 197 threads. A warp launch gives each
row 32 lanes: a Reduce at the top of a statement is summed by lane l over
k = l, l + 32, ... and the 32 partial sums combined by a butterfly of
shfl.sync.bfly (every lane ends with the same value); a top-level loop whose
iterations are independent (independence.py) is shared out, iteration j on lane
j % 32. A launch qualifies when its row body is only such statements and no
statement reads what an earlier shared-out loop wrote (lanes do not wait for
one another).

Emulated, the lanes of a row run one after another, so a lane cannot take its
partners' partial sums from registers: the row's first lane computes all 32
partial sums, in the same order, and combines them in the butterfly's order,
which gives the value the shuffles give (bit for bit: each butterfly step adds
the same two operands on both lanes of a pair); it leaves the value in a slot
of the launch's row cache, where the other 31 lanes read it."""
from llvmlite import ir

from ..codegen import llvm_helpers as H
from ..lower.loop_ir import Bin, Call, For, Load, Reduce, Select, Store
from .independence import independent

LANES = 32
MIN_EXTENT = 64        # a shorter reduction stays on one thread


def warp_worthy(body, row_vars):
    """True when `body` (the statements of one row) can run on a warp."""
    written, long_reduce = set(), False
    for s in body:
        if any(_loads(e) & written for e in _exprs(s)):
            return False
        if isinstance(s, Store):
            long_reduce |= any(r.extent >= MIN_EXTENT for r in _reduces(s.value))
        elif isinstance(s, For) and s.limit is None and s.kind != "parallel" and independent(s, row_vars):
            written |= _stored(s.body)
        else:
            return False
    return long_reduce


def _exprs(s):
    if isinstance(s, Store):
        return [e for e in (s.index, s.value, s.mask) if e is not None]
    if isinstance(s, For):
        return [e for t in s.body for e in _exprs(t)]
    return []


def _stored(stmts):
    out = set()
    for s in stmts:
        if isinstance(s, Store) and not s.buf.local:
            out.add(s.buf.name)
        elif isinstance(s, For):
            out |= _stored(s.body)
    return out


def _children(e):
    if isinstance(e, Bin):
        return (e.a, e.b)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, Load):
        return (e.index,) + ((e.mask,) if e.mask is not None else ())
    if isinstance(e, Reduce):
        return (e.body,)
    return ()


def _loads(e):
    found = {e.buf.name} if isinstance(e, Load) and not e.buf.local else set()
    for c in _children(e):
        found |= _loads(c)
    return found


def _reduces(e):
    found = [e] if isinstance(e, Reduce) else []
    for c in _children(e):
        found += _reduces(c)
    return found


def _c(v):
    return ir.Constant(H.I64, v)


class WarpEmitter:
    """Mixed into GpuKernelEmitter (needs builder, env, module, expr, stmts,
    _combine, _identity, ptx). `lane` is set while a warp launch's row is emitted."""
    lane = None
    serial_reduce = False
    reduce_depth = 0       # enclosing serial reductions: a warp reduction inside one runs per trip

    def warp_statements(self, body):
        for s in body:
            if isinstance(s, For):
                self._shared_out(s)
            else:
                self.stmts([s], None)

    def _shared_out(self, s):
        """for j in range(extent): iterations lane, lane + 32, ... on this lane."""
        b = self.builder
        count = b.udiv(b.sub(_c(s.extent + LANES - 1), self.lane), _c(LANES))
        saved, self.serial_reduce = self.serial_reduce, True

        def body(i, _):
            self.env[s.var.name] = b.add(self.lane, b.mul(i, _c(LANES)))
            self.stmts(s.body, None)
        H.counted_loop(b, count, body, name=s.var.name)
        self.serial_reduce = saved

    def warp_reduce(self, e, fallback):
        b = self.builder
        width = e.dtype.itemsize * 8
        if self.lane is None or self.serial_reduce or e.extent < MIN_EXTENT or width not in (32, 64):
            return fallback()
        combine = self._combine(e.op, e.dtype)
        if self.ptx:
            value = self._partial(e, self.lane, combine)
            for offset in (16, 8, 4, 2, 1):
                value = combine(value, self._shuffle(value, offset))
            return value
        ty = H.llvm_type(e.dtype)
        if ty not in self.partials:          # one slot array per type and function
            self.partials[ty] = self._entry_alloca(ir.ArrayType(ty, LANES))
        partials = self.partials[ty]

        def butterfly():
            def each(lane, _):
                b.store(self._partial(e, lane, combine), b.gep(partials, [lane], source_etype=ty))
            H.counted_loop(b, LANES, each, name="lane")
            values = [b.load(b.gep(partials, [_c(i)], source_etype=ty), typ=ty) for i in range(LANES)]
            while len(values) > 1:            # the butterfly's order, as lane 0 sees it
                half = len(values) // 2
                values = [combine(values[i], values[i + half]) for i in range(half)]
            return values[0]
        if self.reduce_depth:                 # inside a loop: every lane computes it, each trip
            return butterfly()
        slot = b.gep(self.row_cache, [_c(8 * self.cache_slots)], source_etype=H.I8)
        self.cache_slots += 1
        with b.if_then(b.icmp_unsigned("==", self.lane, _c(0))):     # the row's first lane computes it
            b.store(butterfly(), slot)
        return b.load(slot, typ=ty)

    def _partial(self, e, lane, combine):
        b = self.builder
        count = b.udiv(b.sub(_c(e.extent + LANES - 1), lane), _c(LANES))
        saved_env, saved_flag = dict(self.env), self.serial_reduce
        self.serial_reduce = True

        def body(i, carried):
            self.env[e.var.name] = b.add(lane, b.mul(i, _c(LANES)))
            return [combine(carried[0], self.expr(e.body, None))]
        outer = self._memo
        self._memo = dict(outer)
        result = H.counted_loop(b, count, body, [self._identity(e.op, e.dtype)], name=e.var.name)[0]
        self._memo, self.env, self.serial_reduce = outer, saved_env, saved_flag
        return result

    def _shuffle(self, value, offset):
        """shfl.sync.bfly of a 32- or 64-bit value (64: as two 32-bit halves)."""
        b = self.builder
        fn = H.intrinsic(self.module, "llvm.nvvm.shfl.sync.bfly.i32", H.I32, [H.I32, H.I32, H.I32, H.I32])
        args = lambda v: [ir.Constant(H.I32, -1), v, ir.Constant(H.I32, offset), ir.Constant(H.I32, 31)]
        bits = 64 if value.type in (H.F64, H.I64) else 32
        if bits == 32:
            as_int = value if value.type == H.I32 else b.bitcast(value, H.I32)
            out = b.call(fn, args(as_int))
            return out if value.type == H.I32 else b.bitcast(out, value.type)
        pair = b.bitcast(value, ir.VectorType(H.I32, 2))
        halves = [b.call(fn, args(b.extract_element(pair, ir.Constant(H.I32, i)))) for i in range(2)]
        joined = b.insert_element(b.insert_element(ir.Constant(pair.type, ir.Undefined), halves[0],
                                                   ir.Constant(H.I32, 0)), halves[1], ir.Constant(H.I32, 1))
        return b.bitcast(joined, value.type)

    def _entry_alloca(self, ty):
        """A stack slot made in the function's entry block (not once per loop trip)."""
        b = self.builder
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            if entry.is_terminated:
                b.position_before(entry.terminator)
            return H.alloca(b, ty)
