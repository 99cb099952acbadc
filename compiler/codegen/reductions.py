"""Reductions in emitted kernels (a mixin of KernelEmitter): `Reduce` expressions
as a scalar or per-lane loop, or, over a vectorisable axis, as vector chunks with
a masked tail folded horizontally at the end. max/min keep NaN (nan_extreme)."""
import numpy as np
from llvmlite import ir

from ..ir.types import DType
from ..lower.loop_ir import Var, depends_on
from . import llvm_helpers as H
from .memory_access import VecCtx
from .vector_math import nan_extreme

_IDENTITY = {"sum": 0.0, "max": float("-inf"), "min": float("inf")}


class Reductions:
    def _combine(self, op, dtype):
        b = self.builder
        compare = b.fcmp_ordered if dtype.is_float else \
            (b.icmp_unsigned if dtype.is_unsigned else b.icmp_signed)

        def combine(x, y):
            if op == "sum":
                return b.fadd(x, y) if dtype.is_float else b.add(x, y)
            if dtype.is_float:
                return nan_extreme(b, self.module, ">" if op == "max" else "<", x, y)   # x: the accumulator
            return b.select(compare(">" if op == "max" else "<", x, y), x, y)
        return combine

    def _identity(self, op, dtype, lanes=0):
        ty = H.llvm_type(dtype)
        value = _IDENTITY[op]
        if not dtype.is_float:
            info = np.iinfo(dtype.numpy) if dtype != DType.bool else np.iinfo(np.uint8)
            value = {"sum": 0, "max": int(info.min), "min": int(info.max)}[op]
            bits = 8 * dtype.itemsize
            value = value - (1 << bits) if value >= 1 << (bits - 1) else value
        const = ir.Constant(ty, value)
        return ir.Constant(ir.VectorType(ty, lanes), [value] * lanes) if lanes else const

    def _reduce(self, e, vec):
        combine = self._combine(e.op, e.dtype)
        name = e.var.name
        if vec is None and e.lanes > 1 and e.extent >= e.lanes:
            return self._vector_reduce(e, combine)
        lanes = vec.lanes if vec is not None and depends_on(e.body, Var(vec.var)) else 0
        init = self._identity(e.op, e.dtype, lanes)

        def body(i, carried):
            self.env[name] = i
            value = self.expr(e.body, vec)
            if lanes and not isinstance(value.type, ir.VectorType):
                value = H.splat(self.builder, value, lanes)
            return [combine(carried[0], value)]
        saved = dict(self.env)
        result = H.counted_loop(self.builder, e.extent, body, [init], name=name)[0]
        self.env = saved
        return result

    def _vector_reduce(self, e, combine):
        lanes, full, rem = e.lanes, e.extent // e.lanes, e.extent % e.lanes
        identity = self._identity(e.op, e.dtype, lanes)

        def chunk(base, acc, mask=None):
            value = self.expr(e.body, VecCtx(e.var.name, base, lanes, mask))
            if not isinstance(value.type, ir.VectorType):
                value = H.splat(self.builder, value, lanes)
            if mask is not None:
                value = self.builder.select(mask, value, identity)
            return combine(acc, value)

        # max/min are exact in any order: four accumulators, four short chains
        ways = 4 if e.op != "sum" and full >= 8 else 1

        def body(i, carried):
            base = self.builder.mul(i, ir.Constant(H.I64, lanes * ways))
            return [chunk(self.builder.add(base, ir.Constant(H.I64, w * lanes)), acc)
                    for w, acc in enumerate(carried)]
        accs = H.counted_loop(self.builder, full // ways, body, [identity] * ways, name=e.var.name)
        acc = accs[0]
        for other in accs[1:]:
            acc = combine(acc, other)
        for c in range(full - full % ways, full):
            acc = chunk(ir.Constant(H.I64, c * lanes), acc)
        if rem:
            acc = chunk(ir.Constant(H.I64, full * lanes), acc, H.lane_mask(rem, lanes))
        return H.horizontal(self.builder, acc, combine)

