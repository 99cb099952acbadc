"""Loads and stores of the kernel emitter: contiguous (masked) vector loads,
strided ones as a wide load + shuffle (stores: shuffle + wide masked store),
gathers for the rest, bool as i8 in memory."""
from dataclasses import dataclass

from llvmlite import ir

from ..ir.types import DType
from ..lower.loop_ir import Store, Var, affine_coeff, depends_on
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
            return self._from_memory(self._vector_load(vty, ptr, mask, e.buf.dtype.itemsize), e.buf.dtype)
        if isinstance(coeff, int) and 2 <= coeff <= MAX_SHUFFLE_STRIDE:
            return self._strided(e, vec, mask, vty, coeff)
        return self._gather(e, vec, mask, vty, coeff)

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
        spread = b.shuffle_vector(value, H.zero(value.type), ir.Constant(
            ir.VectorType(H.I32, lanes * stride),
            [j // stride if j % stride == 0 else lanes for j in range(lanes * stride)]))
        self._vector_store(spread, ptr, self._wide_mask(mask, lanes, stride), align)

    def _strided(self, e, vec, mask, vty, stride):
        """Every stride-th element (a stride-2 convolution or pooling window): one masked
        load `stride` vectors wide, enabling only the wanted lanes (nothing past them is
        touched), then a shuffle picks them out. A gather would be `lanes` scalar loads."""
        b, lanes = self.builder, vec.lanes
        wide = ir.VectorType(vty.element, lanes * stride)
        wide_mask = self._wide_mask(mask, lanes, stride)
        ptr = self._ptr(e.buf, self.expr(e.index, self._lane0(vec)))
        value = self._vector_load(wide, ptr, wide_mask, e.buf.dtype.itemsize)
        picked = b.shuffle_vector(value, H.zero(wide), ir.Constant(ir.VectorType(H.I32, lanes),
                                                                    [i * stride for i in range(lanes)]))
        return self._from_memory(picked, e.buf.dtype)

    def _gather(self, e, vec, mask, vty, coeff):
        """Per-lane loads; masked-off lanes read element 0 (always valid) and give 0.
        One llvm.masked.gather, all lanes on: code generation picks a hardware gather
        (as on Zen 5: step times unchanged) or per-lane loads; O3 sees one instruction,
        not 4 a lane (ResNet-18's training step: 45% of its IR was gathers, lane by lane)."""
        b = self.builder
        if isinstance(coeff, int):     # affine: lane 0's index plus constant steps
            steps = ir.Constant(ir.VectorType(H.I64, vec.lanes), [coeff * i for i in range(vec.lanes)])
            index = b.add(H.splat(b, self.expr(e.index, self._lane0(vec)), vec.lanes), steps)
        else:
            index = self.expr(e.index, vec)
        if not isinstance(index.type, ir.VectorType):
            index = H.splat(b, index, vec.lanes)
        if mask is not None:
            index = b.select(mask, index, H.zero(index.type))
        pointers = self._ptr(e.buf, index)
        pointers.type = ir.VectorType(H.PTR, vec.lanes)      # a vector GEP (llvmlite types it `ptr`)
        every = ir.VectorType(H.I1, vec.lanes)
        fn = H.intrinsic(self.module, f"llvm.masked.gather.{H.mangle(vty)}.{H.mangle(pointers.type)}", vty,
                         [pointers.type, H.I32, every, vty])
        result = b.call(fn, [pointers, ir.Constant(H.I32, e.buf.dtype.itemsize),
                             ir.Constant(every, [1] * vec.lanes), H.zero(vty)])
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
        load_mask = H.lane_mask(s.cols, lanes) if s.cols < lanes else None
        vectors = [self._vector_load(vty, self._ptr(s.src, at(src, src_stride, r)), load_mask, s.src.dtype.itemsize)
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
        store_mask = H.lane_mask(s.store_rows, lanes) if s.store_rows < lanes else None
        for c in range(s.cols):
            self._vector_store(vectors[c], self._ptr(s.dst, at(dst, dst_stride, c)), store_mask,
                               s.dst.dtype.itemsize)

    def _vector_load(self, vty, ptr, mask, align):
        """A vector load; with a mask, llvm.masked.load (off lanes read nothing, give 0)."""
        if mask is None:
            return self.builder.load(ptr, typ=vty, align=align)
        fn = H.intrinsic(self.module, f"llvm.masked.load.{H.mangle(vty)}.p0", vty, [H.PTR, H.I32, mask.type, vty])
        return self.builder.call(fn, [ptr, ir.Constant(H.I32, align), mask, H.zero(vty)])

    def _checked_store(self, value, ptr, mask, align, vec, buf):
        """_vector_store; where masked stores are slow (the table's masked_stores_slow)
        and the mask is known only at run time, a plain store when every lane is on
        (a Winograd tile row's interior, a conv's inner rows: the usual case). A loop's
        tail (vec.mask) never has every lane on: no test there."""
        tail = vec.mask is not None and not buf.local
        if mask is None or isinstance(mask, ir.Constant) or not self.masked_stores_slow or tail:
            return self._vector_store(value, ptr, mask, align)
        b = self.builder
        every = H.intrinsic(self.module, f"llvm.vector.reduce.and.{H.mangle(mask.type)}", H.I1, [mask.type])
        with b.if_else(b.call(every, [mask]), likely=True) as (full, partial):
            with full:
                self._vector_store(value, ptr, None, align)
            with partial:
                self._vector_store(value, ptr, mask, align)

    def _interleaved(self, stmts, at, vec):
        """stmts[at] and the stores after it that a lowering marked as one interleaved
        group (Store.interleave), when they can be stored as one vector; else None."""
        first = stmts[at]
        if not self.masked_stores_slow or vec is None or not first.interleave or first.interleave[0]:
            return None
        k = first.interleave[1]
        group = stmts[at:at + k]
        if len(group) != k or k > MAX_SHUFFLE_STRIDE or any(
                not isinstance(s, Store) or s.interleave != (q, k) or s.buf is not first.buf
                or affine_coeff(s.index, Var(vec.var)) != k for q, s in enumerate(group)):
            return None
        return group

    def store_interleaved(self, group, vec):
        """An interleaved group (store q writes index + q, k apart) as one vector k
        times wider, lane j * k + q from store q's lane j: k plain stores' worth of
        memory instead of k masked stores that each skip k - 1 of every k elements."""
        b, k, lanes = self.builder, len(group), vec.lanes
        values, masks = [], []
        for s in group:
            self._memo = {}      # per statement, as store() does
            value = self.expr(s.value, vec)
            if not isinstance(value.type, ir.VectorType):
                value = H.splat(b, value, lanes)
            values.append(self._to_memory(value, s.buf.dtype))
            masks.append(self._mask(s.mask, vec, s.buf))
        order = [q * lanes + j for j in range(lanes) for q in range(k)]
        mask = None if all(m is None for m in masks) else self._picked_lanes(
            [H.lane_mask(lanes, lanes) if m is None else m for m in masks], order)
        ptr = self._ptr(group[0].buf, self.expr(group[0].index, self._lane0(vec)))
        self._checked_store(self._picked_lanes(values, order), ptr, mask, group[0].buf.dtype.itemsize, vec,
                            group[0].buf)

    def _picked_lanes(self, vectors, order):
        """Lanes `order` of `vectors` laid end to end (a shuffle takes two at a time)."""
        b = self.builder
        while len(vectors) > 1:
            if len(vectors) % 2:
                vectors = vectors + [H.zero(vectors[0].type)]
            width = 2 * vectors[0].type.count
            both = ir.Constant(ir.VectorType(H.I32, width), list(range(width)))
            vectors = [b.shuffle_vector(vectors[i], vectors[i + 1], both) for i in range(0, len(vectors), 2)]
        whole = vectors[0]
        return b.shuffle_vector(whole, H.zero(whole.type), ir.Constant(ir.VectorType(H.I32, len(order)), order))

    def _vector_store(self, value, ptr, mask, align):
        """A vector store; with a mask, llvm.masked.store (off lanes are not touched)."""
        if mask is None:
            return self.builder.store(value, ptr, align=align)
        fn = H.intrinsic(self.module, f"llvm.masked.store.{H.mangle(value.type)}.p0", H.VOID,
                         [value.type, H.PTR, H.I32, mask.type])
        self.builder.call(fn, [value, ptr, ir.Constant(H.I32, align), mask])
