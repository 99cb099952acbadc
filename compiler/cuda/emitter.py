"""Emit a kernel's launches (grid.py) as LLVM functions, one per launch.

Every launch's per-thread code is one function `LAUNCH_thread(buffers..., i64 gid)`:
the flat thread id split into the launch's loop variables, then the loop body,
scalar (one lane). Two wrappers call it:
- PTX: a `ptx_kernel` `LAUNCH(buffers...)` computing gid = ctaid.x * ntid.x + tid.x,
  guarded by the launch's extent;
- emulated: a host `LAUNCH(buffers...)` looping over blocks and the threads of each
  block, so the CPU runs exactly the code each GPU thread runs.
Transcendentals are the float32 polynomials of vector_math.py (NVPTX has no libm:
llvm.exp.f32 is a fatal "no libcall" in LLVM); float64 ones go through float32."""
from llvmlite import ir

from ..codegen import llvm_helpers as H
from ..codegen.kernel_emitter import KernelEmitter
from ..codegen.vector_math import VECTOR_MATH
from ..ir.types import DType
from ..lower.loop_ir import THREAD_INDEX
from .target import BLOCK_THREADS
from .tiled import TiledGemmEmitter
from .warp import LANES, WarpEmitter

_VIA_FLOAT32 = ("exp", "log", "tanh", "sin", "cos")


class GpuKernelEmitter(WarpEmitter, TiledGemmEmitter, KernelEmitter):
    def __init__(self, module, kernel, ptx):
        super().__init__(module, kernel, threads=1)
        self.ptx = ptx

    def emit_launch(self, launch):
        fnty = ir.FunctionType(H.VOID, [H.PTR] * len(self.kernel.params))
        fn = ir.Function(self.module, fnty, name=launch.name)
        fn.attributes.add("nounwind")
        for arg in fn.args:
            arg.add_attribute("noalias")
        if self.ptx:
            fn.calling_convention = "ptx_kernel"
        if launch.tiled is not None:
            return self.emit_tiled(fn, launch.tiled)
        thread_fn = self._thread_function(launch)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if self.ptx:
            self._ptx_body(b, launch, thread_fn, list(fn.args))
        else:
            self._emulated_body(b, launch, thread_fn, list(fn.args))
        b.ret_void()
        return fn

    def _thread_function(self, launch):
        # (buffers..., gid[, row cache: emulated warp rows share their reductions])
        cached = launch.warp and not self.ptx
        fnty = ir.FunctionType(H.VOID, [H.PTR] * len(self.kernel.params) + [H.I64] + [H.PTR] * cached)
        fn = ir.Function(self.module, fnty, name=launch.name + "_thread")
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        for arg in fn.args[:len(self.kernel.params)]:
            arg.add_attribute("noalias")
        self.row_cache, self.cache_slots = (fn.args[-1] if cached else None), 0
        self.nthreads = ir.Constant(H.I32, 1)
        self.env = {}
        self._begin(fn, {b.name: a for b, a in zip(self.kernel.params, fn.args)})
        self.env[THREAD_INDEX.name] = ir.Constant(H.I64, 0)
        gid = fn.args[len(self.kernel.params)]
        self.partials = {}
        if launch.warp:          # a row per warp: the lane, then the row
            self.lane = self.builder.urem(gid, ir.Constant(H.I64, LANES))
            gid = self.builder.udiv(gid, ir.Constant(H.I64, LANES))
        for var, extent in reversed(launch.index_vars):     # innermost varies fastest
            self.env[var.name] = self.builder.urem(gid, ir.Constant(H.I64, extent)) \
                if var is not launch.index_vars[0][0] else gid
            gid = self.builder.udiv(gid, ir.Constant(H.I64, extent))
        if launch.warp:
            self.warp_statements(launch.body)
            self.lane = None
        else:
            self.stmts(launch.body, None)
        self.builder.ret_void()
        return fn

    def _reduce(self, e, vec):
        if vec is not None:
            return super()._reduce(e, vec)
        return self.warp_reduce(e, lambda: self._serial_reduce(e))

    def _serial_reduce(self, e):
        self.reduce_depth += 1
        try:
            return super()._reduce(e, None)
        finally:
            self.reduce_depth -= 1

    def _ptx_body(self, b, launch, thread_fn, args):
        def sreg(name):
            fn = H.intrinsic(self.module, f"llvm.nvvm.read.ptx.sreg.{name}", H.I32, [])
            return b.zext(b.call(fn, []), H.I64)
        gid = b.add(b.mul(sreg("ctaid.x"), sreg("ntid.x")), sreg("tid.x"))
        with b.if_then(b.icmp_unsigned("<", gid, ir.Constant(H.I64, launch.extent))):
            b.call(thread_fn, args + [gid])

    def _emulated_body(self, b, launch, thread_fn, args):
        blocks = -(-launch.extent // BLOCK_THREADS)
        if launch.warp:      # 8 bytes per reduction of the row, written by lane 0, read by the others
            cache = H.alloca(b, ir.ArrayType(H.I64, max(self.cache_slots, 1)))
            args = args + [cache]

        def block(bi, _):
            def thread(ti, _):
                gid = b.add(b.mul(bi, ir.Constant(H.I64, BLOCK_THREADS)), ti)
                with b.if_then(b.icmp_unsigned("<", gid, ir.Constant(H.I64, launch.extent))):
                    b.call(thread_fn, args[:len(self.kernel.params)] + [gid] + args[len(self.kernel.params):])
            H.counted_loop(b, min(BLOCK_THREADS, launch.extent), thread, name="tid")
        H.counted_loop(b, blocks, block, name="ctaid")

    # ---- math the NVPTX backend has no instruction or libcall for ------------------
    def _call(self, e, vec):
        fn, dtype = e.fn, e.args[0].dtype
        if fn in _VIA_FLOAT32 and dtype in (DType.float32, DType.float64):
            return self._float32_math(VECTOR_MATH[fn], self.expr(e.args[0], vec), dtype)
        if fn == "pow" and dtype in (DType.float32, DType.float64):
            return self._pow(self.expr(e.args[0], vec), self.expr(e.args[1], vec), dtype)
        if fn == "recip":
            x = self.expr(e.args[0], vec)
            return self.builder.fdiv(ir.Constant(x.type, 1.0), x)
        return super()._call(e, vec)

    def _float32_math(self, rule, x, dtype):
        """rule on a <1 x float> (vector_math's polynomials take vectors)."""
        b = self.builder
        if dtype == DType.float64:
            x = b.fptrunc(x, H.F32)
        v = b.insert_element(ir.Constant(ir.VectorType(H.F32, 1), ir.Undefined), x, ir.Constant(H.I32, 0))
        y = b.extract_element(rule(b, self.module, v), ir.Constant(H.I32, 0))
        return b.fpext(y, H.F64) if dtype == DType.float64 else y

    def _pow(self, x, y, dtype):
        """exp(y log|x|), with C's signs: a negative base needs an integer exponent
        (odd: negative result, else NaN); pow(x, 0) = 1."""
        b = self.builder
        ty = x.type
        fabs = H.overloaded(self.module, "llvm.fabs", ty)
        floor = H.overloaded(self.module, "llvm.floor", ty)
        ax = b.call(fabs, [x])
        log = self._float32_math(VECTOR_MATH["log"], ax, dtype)
        mag = self._float32_math(VECTOR_MATH["exp"], b.fmul(y, log), dtype)
        integral = b.fcmp_ordered("==", b.call(floor, [y]), y)
        half = b.fmul(y, ir.Constant(ty, 0.5))
        odd = b.and_(integral, b.fcmp_ordered("!=", b.call(floor, [half]), half))
        negative = b.fcmp_ordered("<", x, ir.Constant(ty, 0.0))
        signed = b.select(odd, b.fneg(mag), mag)
        result = b.select(negative, b.select(integral, signed, ir.Constant(ty, float("nan"))), mag)
        return b.select(b.fcmp_ordered("==", y, ir.Constant(ty, 0.0)), ir.Constant(ty, 1.0), result)
