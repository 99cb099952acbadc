"""Shared-memory tiled GEMM on the GPU: C[b, r, c] = finish(sum_k A[b, r, k] B[b, k, c]).

A block of 256 threads computes a 64 x 64 tile of C; each thread a 4 x 4
register tile (rows ty + 16 i, columns tx + 16 j: the shared-memory reads of a
warp hit distinct banks and its stores to C are coalesced). Per step of 16 k,
the block stages A's 64 x 16 and B's 16 x 64 tiles in shared memory (4 elements
per thread each, consecutive threads reading consecutive addresses), waits at
a barrier, accumulates 16 rank-1 updates from shared memory, and waits again.
At the end the threads park their sums in a 64 x 64 tile of C in the same
shared memory (16 KB in all) and, after a barrier, finish it in row order: the
epilogue is emitted once and consecutive threads store consecutive columns.
A and B are loop-IR expressions of (batch, row, k) and (batch, k, column), so
an implicit-GEMM convolution gathers its input patches straight into the tile
(no im2col buffer); reads outside the matrix give 0, stores outside are skipped.

The phases (stage, accumulate, park, store) are emitted by the same code for
both targets. PTX: one thread per phase, __syncthreads between them, the
accumulators in registers. Emulated: each phase run for all 256 threads of the
block in turn (which is what the barriers guarantee), the accumulators of each
thread in an array, so the kernel runs correctly on a CPU."""
from dataclasses import dataclass

from llvmlite import ir

from ..codegen import llvm_helpers as H
from ..ir.types import DType
from ..lower.loop_ir import Var

BM = BN = 64            # the block's tile of C
BK = 16                 # k per shared-memory stage
THREADS = 256           # 16 x 16, each a TM x TN register tile
TM = TN = 4
SIDE = 16


@dataclass(eq=False)
class TiledGemm:
    """A loop-IR statement (top level only) grid.py turns into a tiled launch."""
    m: int
    n: int
    k: int
    batch: int
    b: Var                # batch index
    r: Var                # row of C (A)
    c: Var                # column of C (B)
    kk: Var               # reduction index
    a: object             # Expr of (b, r, kk)
    bmat: object          # Expr of (b, kk, c)
    out: object           # Buffer
    out_index: object     # Expr of (b, r, c)
    finish: object        # Expr of (b, r, c, ACC)


ACC = Var("acc", DType.float32)       # the accumulated sum, inside `finish`


def describe(s):
    """The statement as text, for source("loops")."""
    from ..lower.loop_printer import expr_str
    return (f"tiled_gemm {s.m} x {s.n} x {s.k} (batch {s.batch}; {s.b.name}, {s.r.name}, {s.c.name}, "
            f"{s.kk.name}):\n    A = {expr_str(s.a)}\n    B = {expr_str(s.bmat)}\n"
            f"    {s.out.name}[{expr_str(s.out_index)}] = {expr_str(s.finish)}")


def grid_of(s):
    return (-(-s.n // BN), -(-s.m // BM), s.batch)


def _c(v):
    return ir.Constant(H.I64, v)


class TiledGemmEmitter:
    """Mixed into GpuKernelEmitter (needs builder, env, bufs, module, expr)."""

    def _eval(self, e, bindings):
        self.env.update(bindings)
        self._memo = {}
        return self.expr(e, None)

    def _stage(self, s, tid, kt, block, a_tile, b_tile):
        """Thread `tid` copies its 4 elements of A's and of B's tiles for step kt (a
        loop, not unrolled: the operand expressions are emitted once)."""
        b = self.builder
        bz, by, bx = block
        k0 = b.mul(kt, _c(BK))

        def element(q, _):
            e = b.add(tid, b.mul(q, _c(THREADS)))
            # A: consecutive threads walk k (A rows are contiguous in k)
            kl, rl = b.urem(e, _c(BK)), b.udiv(e, _c(BK))
            self._stage_one(s.a, a_tile, b.add(b.mul(kl, _c(BM)), rl), bz,
                            (s.r, b.add(b.mul(by, _c(BM)), rl), s.m), (s.kk, b.add(k0, kl), s.k))
            # B: consecutive threads walk the columns
            cl, kl = b.urem(e, _c(BN)), b.udiv(e, _c(BN))
            self._stage_one(s.bmat, b_tile, b.add(b.mul(kl, _c(BN)), cl), bz,
                            (s.kk, b.add(k0, kl), s.k), (s.c, b.add(b.mul(bx, _c(BN)), cl), s.n))
        H.counted_loop(b, BM * BK // THREADS, element, name="q")

    def _stage_one(self, e, tile, at, bz, first, second):
        b = self.builder
        inside = b.and_(b.icmp_unsigned("<", first[1], _c(first[2])), b.icmp_unsigned("<", second[1], _c(second[2])))
        safe = lambda v: b.select(inside, v, _c(0))      # read a valid element, then drop it
        value = self._eval(e, {self.tg.b.name: bz, first[0].name: safe(first[1]), second[0].name: safe(second[1])})
        value = b.select(inside, value, ir.Constant(value.type, 0.0))
        b.store(value, b.gep(tile, [at], source_etype=H.F32))

    def _accumulate(self, tid, acc, a_tile, b_tile):
        """16 rank-1 updates of the thread's 4 x 4 sums, carried in registers."""
        b = self.builder
        tx, ty = b.urem(tid, _c(SIDE)), b.udiv(tid, _c(SIDE))
        fma = H.overloaded(self.module, "llvm.fma", H.F32, 3)
        slots = [b.gep(acc, [_c(i)], source_etype=H.F32) for i in range(TM * TN)]

        def update(kl, sums):
            a = [b.load(b.gep(a_tile, [b.add(b.add(b.mul(kl, _c(BM)), ty), _c(SIDE * i))], source_etype=H.F32),
                        typ=H.F32) for i in range(TM)]
            bb = [b.load(b.gep(b_tile, [b.add(b.add(b.mul(kl, _c(BN)), tx), _c(SIDE * j))], source_etype=H.F32),
                         typ=H.F32) for j in range(TN)]
            return [b.call(fma, [a[i], bb[j], sums[i * TN + j]]) for i in range(TM) for j in range(TN)]
        sums = H.counted_loop(b, BK, update, [b.load(p, typ=H.F32) for p in slots], name="kl")
        for p, v in zip(slots, sums):
            b.store(v, p)

    def _park(self, tid, acc, c_tile):
        """The thread's 4 x 4 sums into the block's 64 x 64 tile of C in shared memory."""
        b = self.builder
        tx, ty = b.urem(tid, _c(SIDE)), b.udiv(tid, _c(SIDE))
        for i in range(TM):
            for j in range(TN):
                at = b.add(b.mul(b.add(ty, _c(SIDE * i)), _c(BN)), b.add(tx, _c(SIDE * j)))
                value = b.load(b.gep(acc, [_c(i * TN + j)], source_etype=H.F32), typ=H.F32)
                b.store(value, b.gep(c_tile, [at], source_etype=H.F32))

    def _store(self, s, tid, c_tile, block):
        """Thread tid finishes elements tid, tid + 256, ... of the C tile (consecutive
        threads, consecutive columns: coalesced stores), the epilogue emitted once."""
        b = self.builder
        bz, by, bx = block

        def element(q, _):
            e = b.add(tid, b.mul(q, _c(THREADS)))
            r = b.add(b.mul(by, _c(BM)), b.udiv(e, _c(BN)))
            c = b.add(b.mul(bx, _c(BN)), b.urem(e, _c(BN)))
            ok = b.and_(b.icmp_unsigned("<", r, _c(s.m)), b.icmp_unsigned("<", c, _c(s.n)))
            with b.if_then(ok):
                total = b.load(b.gep(c_tile, [e], source_etype=H.F32), typ=H.F32)
                names = {s.b.name: bz, s.r.name: r, s.c.name: c, ACC.name: total}
                value = self._eval(s.finish, names)
                index = self._eval(s.out_index, names)
                b.store(self._to_memory(value, s.out.dtype), self._ptr(s.out, index))
        H.counted_loop(b, BM * BN // THREADS, element, name="e")

    # ---- the two wrappers ------------------------------------------------------------
    def emit_tiled(self, fn, s):
        self.tg = s
        b = self.builder = ir.IRBuilder(fn.append_basic_block("entry"))
        self.bufs = {p.name: a for p, a in zip(self.kernel.params, fn.args)}
        self.env = {}
        steps = -(-s.k // BK)
        if self.ptx:
            return self._tiled_ptx(fn, s, steps)
        return self._tiled_emulated(fn, s, steps)

    def _tiled_ptx(self, fn, s, steps):
        b = self.builder

        def sreg(name):
            f = H.intrinsic(self.module, f"llvm.nvvm.read.ptx.sreg.{name}", H.I32, [])
            return b.zext(b.call(f, []), H.I64)
        shared = self._shared(f"{fn.name}_tiles", BM * BN)      # A's and B's tiles; C's at the end
        tiles = [shared, b.gep(shared, [_c(BK * BM)], source_etype=H.F32)]
        acc = H.alloca(b, ir.ArrayType(H.F32, TM * TN))
        b.store(ir.Constant(ir.ArrayType(H.F32, TM * TN), None), acc)
        tid, block = sreg("tid.x"), (sreg("ctaid.z"), sreg("ctaid.y"), sreg("ctaid.x"))
        barrier = H.intrinsic(self.module, "llvm.nvvm.barrier0", H.VOID, [])

        def step(kt, _):
            self._stage(s, tid, kt, block, *tiles)
            b.call(barrier, [])
            self._accumulate(tid, acc, *tiles)
            b.call(barrier, [])
        H.counted_loop(b, steps, step, name="kt")
        self._park(tid, acc, shared)
        b.call(barrier, [])
        self._store(s, tid, shared, block)
        b.ret_void()

    def _shared(self, name, size):
        gv = ir.GlobalVariable(self.module, ir.ArrayType(H.F32, size), name, addrspace=3)
        gv.linkage, gv.align = "internal", 16
        gv.initializer = ir.Constant(ir.ArrayType(H.F32, size), ir.Undefined)
        return self.builder.addrspacecast(gv, H.PTR)

    def _tiled_emulated(self, fn, s, steps):
        b = self.builder
        shared = H.alloca(b, ir.ArrayType(H.F32, BM * BN))
        tiles = [shared, b.gep(shared, [_c(BK * BM)], source_etype=H.F32)]
        accs = H.alloca(b, ir.ArrayType(H.F32, THREADS * TM * TN))
        gx, gy, gz = grid_of(s)
        memset = H.intrinsic(self.module, "llvm.memset.p0.i64", H.VOID, [H.PTR, H.I8, H.I64, H.I1])

        def each_thread(phase):
            def body(t, _):
                phase(t, b.gep(accs, [b.mul(t, _c(TM * TN))], source_etype=H.F32))
            H.counted_loop(b, THREADS, body, name="tid")

        def block(bz, by, bx):
            b.call(memset, [accs, ir.Constant(H.I8, 0), _c(THREADS * TM * TN * 4), ir.Constant(H.I1, 0)])

            def step(kt, _):
                each_thread(lambda t, acc: self._stage(s, t, kt, (bz, by, bx), *tiles))
                each_thread(lambda t, acc: self._accumulate(t, acc, *tiles))
            H.counted_loop(b, steps, step, name="kt")
            each_thread(lambda t, acc: self._park(t, acc, shared))
            each_thread(lambda t, acc: self._store(s, t, shared, (bz, by, bx)))
        H.counted_loop(b, gz, lambda z, _: H.counted_loop(
            b, gy, lambda y, _: H.counted_loop(b, gx, lambda x, _: block(z, y, x), name="bx"), name="by"),
            name="bz")
        b.ret_void()
