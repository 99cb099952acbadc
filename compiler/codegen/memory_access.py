"""Loads and stores of the kernel emitter: contiguous (masked) vector loads,
strided ones as a wide load + shuffle (stores: shuffle + wide masked store),
gathers for the rest, bool as i8 in memory."""
from dataclasses import dataclass

from llvmlite import ir

from ..ir.types import DType
from ..lower.loop_ir import Var, affine_coeff, depends_on
from . import llvm_helpers as H

MAX_SHUFFLE_STRIDE = 4   # strided vector loads up to this stride: a wide load + shuffle


@dataclass
class VecCtx:
    var: str
    base: ir.Value        # i64 index of lane 0
    lanes: int
    mask: object = None   # <lanes x i1> for the tail, or None


class MemoryAccess:
    """Mixed into KernelEmitter (needs builder, bufs, module, expr, _mask, _lane0)."""

    def _ptr(self, buf, index):
        return self.builder.gep(self.bufs[buf.name], [index],  # not inbounds: masked lanes may point outside
                                source_etype=H.memory_type(buf.dtype))

    def _from_memory(self, value, dtype):
        if dtype != DType.bool:
            return value
        return self.builder.icmp_signed("!=", value, H.zero(value.type))

    def _to_memory(self, value, dtype):
        if dtype != DType.bool:
            return value
        ty = H.I8 if not isinstance(value.type, ir.VectorType) else ir.VectorType(H.I8, value.type.count)
        return self.builder.zext(value, ty)

    def _load(self, e, vec):
        b = self.builder
        mty = H.memory_type(e.buf.dtype)
        vector = isinstance(vec, VecCtx)     # not None, nor a lane-0 index evaluation
        coeff = affine_coeff(e.index, Var(vec.var)) if vector else 0
        guard = vector and e.mask is not None and depends_on(e.mask, Var(vec.var))
        if coeff == 0 and not guard:             # invariant in the vector loop: scalar
            index = self.expr(e.index, vec)
            if e.mask is None:
                return self._from_memory(b.load(self._ptr(e.buf, index), typ=mty), e.buf.dtype)
            ok = self.expr(e.mask, vec)
            if isinstance(ok.type, ir.VectorType):
                ok = b.extract_element(ok, ir.Constant(H.I32, 0))
            safe = b.select(ok, index, ir.Constant(H.I64, 0))
            value = self._from_memory(b.load(self._ptr(e.buf, safe), typ=mty), e.buf.dtype)
            return b.select(ok, value, H.zero(value.type))
        mask = self._mask(e.mask, vec, e.buf)
        vty = ir.VectorType(mty, vec.lanes)
        if coeff == 1:
            ptr = self._ptr(e.buf, self.expr(e.index, self._lane0(vec)))
            if mask is None:
                value = b.load(ptr, typ=vty, align=e.buf.dtype.itemsize)
            else:
                fn = H.intrinsic(self.module, f"llvm.masked.load.{H.mangle(vty)}.p0", vty,
                                 [H.PTR, H.I32, mask.type, vty])
                value = b.call(fn, [ptr, ir.Constant(H.I32, e.buf.dtype.itemsize), mask, H.zero(vty)])
            return self._from_memory(value, e.buf.dtype)
        if isinstance(coeff, int) and 2 <= coeff <= MAX_SHUFFLE_STRIDE:
            return self._strided(e, vec, mask, vty, coeff)
        return self._gather(e, vec, mask, vty)

    def _wide_mask(self, mask, lanes, stride):
        """Lane j of a `stride`-times wider vector is on when j % stride == 0 and
        `mask` (the narrow tail mask, or None) has lane j // stride on."""
        if mask is None:
            return ir.Constant(ir.VectorType(H.I1, lanes * stride),
                               [int(j % stride == 0) for j in range(lanes * stride)])
        spread = [j // stride if j % stride == 0 else lanes for j in range(lanes * stride)]
        return self.builder.shuffle_vector(mask, ir.Constant(ir.VectorType(H.I1, lanes), [0] * lanes),
                                           ir.Constant(ir.VectorType(H.I32, lanes * stride), spread))

    def _strided_store(self, value, ptr, mask, lanes, stride, align):
        """The store twin of _strided: spread the lanes `stride` apart with a shuffle and
        store them with one masked store (the other elements are not touched)."""
        b = self.builder
        wide = ir.VectorType(value.type.element, lanes * stride)
        spread = b.shuffle_vector(value, H.zero(value.type), ir.Constant(
            ir.VectorType(H.I32, lanes * stride),
            [j // stride if j % stride == 0 else lanes for j in range(lanes * stride)]))
        wide_mask = self._wide_mask(mask, lanes, stride)
        fn = H.intrinsic(self.module, f"llvm.masked.store.{H.mangle(wide)}.p0", H.VOID,
                         [wide, H.PTR, H.I32, wide_mask.type])
        b.call(fn, [spread, ptr, ir.Constant(H.I32, align), wide_mask])

    def _strided(self, e, vec, mask, vty, stride):
        """Every stride-th element (a stride-2 convolution or pooling window): one masked
        load `stride` vectors wide, enabling only the wanted lanes (nothing past them is
        touched), then a shuffle picks them out. A gather would be `lanes` scalar loads."""
        b, lanes = self.builder, vec.lanes
        wide = ir.VectorType(vty.element, lanes * stride)
        wide_mask = self._wide_mask(mask, lanes, stride)
        ptr = self._ptr(e.buf, self.expr(e.index, self._lane0(vec)))
        fn = H.intrinsic(self.module, f"llvm.masked.load.{H.mangle(wide)}.p0", wide,
                         [H.PTR, H.I32, wide_mask.type, wide])
        value = b.call(fn, [ptr, ir.Constant(H.I32, e.buf.dtype.itemsize), wide_mask, H.zero(wide)])
        picked = b.shuffle_vector(value, H.zero(wide), ir.Constant(ir.VectorType(H.I32, lanes),
                                                                    [i * stride for i in range(lanes)]))
        return self._from_memory(picked, e.buf.dtype)

    def _gather(self, e, vec, mask, vty):
        """Per-lane loads; masked-off lanes read element 0 (always valid) and give 0."""
        b = self.builder
        index = self.expr(e.index, vec)
        if not isinstance(index.type, ir.VectorType):
            index = H.splat(b, index, vec.lanes)
        if mask is not None:
            index = b.select(mask, index, H.zero(index.type))
        result = H.zero(vty)
        for lane in range(vec.lanes):
            i = b.extract_element(index, ir.Constant(H.I32, lane))
            result = b.insert_element(result, b.load(self._ptr(e.buf, i), typ=vty.element),
                                      ir.Constant(H.I32, lane))
        if mask is not None:
            result = b.select(mask, result, H.zero(vty))
        return self._from_memory(result, e.buf.dtype)

    def transpose(self, s):
        """A Transpose tile: the rows as (masked) vector loads, log2(lanes) rounds of
        two-vector shuffles, the columns as (masked) vector stores. Round k swaps
        bit k of the row index with bit k of the lane index, so after all rounds
        vector c holds column c."""
        b, lanes = self.builder, s.lanes
        self._memo = {}
        mty = H.memory_type(s.src.dtype)
        vty = ir.VectorType(mty, lanes)
        src, src_stride = self.expr(s.src_index, None), self.expr(s.src_stride, None)
        dst, dst_stride = self.expr(s.dst_index, None), self.expr(s.dst_stride, None)
        at = lambda base, stride, i: b.add(base, b.mul(stride, ir.Constant(H.I64, i)))
        if lanes == 1:
            value = b.load(self._ptr(s.src, src), typ=mty) if s.rows else H.zero(mty)
            b.store(value, self._ptr(s.dst, dst))
            return
        vectors = [self._masked_load(vty, self._ptr(s.src, at(src, src_stride, r)), s.cols, s.src.dtype)
                   if r < s.rows else H.zero(vty) for r in range(lanes)]
        step = 1
        while step < lanes:
            low = [L + lanes - step if L & step else L for L in range(lanes)]     # [i][L] = V[i | L&step][L & ~step]
            high = [L + lanes if L & step else L + step for L in range(lanes)]    # [i|step][L] = V[i | L&step][L | step]
            for i in range(lanes):
                if not i & step:
                    a, c = vectors[i], vectors[i | step]
                    vectors[i] = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(H.I32, lanes), low))
                    vectors[i | step] = b.shuffle_vector(a, c, ir.Constant(ir.VectorType(H.I32, lanes), high))
            step *= 2
        for c in range(s.cols):
            ptr = self._ptr(s.dst, at(dst, dst_stride, c))
            if s.store_rows >= lanes:
                b.store(vectors[c], ptr, align=s.dst.dtype.itemsize)
            else:
                mask = H.lane_mask(s.store_rows, lanes)
                fn = H.intrinsic(self.module, f"llvm.masked.store.{H.mangle(vty)}.p0", H.VOID,
                                 [vty, H.PTR, H.I32, mask.type])
                b.call(fn, [vectors[c], ptr, ir.Constant(H.I32, s.dst.dtype.itemsize), mask])

    def _masked_load(self, vty, ptr, count, dtype):
        if count >= vty.count:
            return self.builder.load(ptr, typ=vty, align=dtype.itemsize)
        mask = H.lane_mask(count, vty.count)
        fn = H.intrinsic(self.module, f"llvm.masked.load.{H.mangle(vty)}.p0", vty,
                         [H.PTR, H.I32, mask.type, vty])
        return self.builder.call(fn, [ptr, ir.Constant(H.I32, dtype.itemsize), mask, H.zero(vty)])
