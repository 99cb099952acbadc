"""LSTMSequenceGrad's weight gradients after its time loop: dW_hh = dgates^T h_prev and
(given the input projection's operand x) dW_ih = dgates^T x, GEMMs whose k is the
sequence's rows (T * B).

B (h_prev, read where it lies: h0 and y's rows; x) is packed once into the GEMM's
panels for every k block, before the threads split the output's rows: each row block
packed it again before (8 blocks at 2 threads: 8 copies of h_prev), and x, too narrow
for the GEMM to pack it, was read in place 256 bytes a row. A = dgates^T is read down
dgates' columns; each block's k rows are copied first to rows an odd number of cache
lines apart (a_stride), as dgates' own rows (2 KiB apart at H = 128) all fall in two
sets of L1. Every output element sums its k terms in row order, one fused multiply-add
chain resumed across the k blocks, whatever the threads or blocks."""
from ..lower.gemm import gemm_nest
from ..lower.loop_ir import THREAD_INDEX, Const


def _ceil(a, b):
    return -(-a // b)


class _Offset:
    """A buffer seen from `base` on (gemm_nest's `prepacked` indexes its buffer from 0)."""

    def __init__(self, buf, base):
        self.buf, self.base, self.dtype = buf, base, buf.dtype

    def __getitem__(self, index):
        return self.buf[self.base + index]


def a_stride(share, itemsize):
    """Elements between the k rows of a copied block of A: share rounded up to whole
    64-byte lines, then to an odd number of them, so a strip's k steps spread over L1's sets."""
    line = 64 // itemsize
    lines = _ceil(share, line)
    return (lines + 1 - lines % 2) * line


def _k_blocks(rows, kc):
    """[(first row, rows)] of k blocks of kc rows, the last one shorter."""
    return [(k0, min(kc, rows - k0)) for k0 in range(0, rows, kc)]


def _pack(ctx, out, parts, rows, n, kc, panel):
    """out: B [rows, n] as k blocks of kc rows (the last: its own rows), each as panels
    `panel` wide of [block rows, panel], zero-padded to whole panels; B's rows come from
    parts [(first row, rows, element(row, column))], each a run of rows of one buffer."""
    nb, lanes = ctx.nb, ctx.lanes(out.dtype)
    panels = _ceil(n, panel)
    whole, edge = divmod(n, panel)
    for k0, count in _k_blocks(rows, kc):
        base = k0 * panels * panel
        for first, length, element in parts:
            lo, hi = max(first, k0), min(first + length, k0 + count)
            if lo >= hi:
                continue
            with nb.loop(hi - lo, hint="k") as i:
                kk = (lo - k0) + i
                row = lo + i
                for p0, pcount, width in ((0, whole, panel), (whole, 1 if edge else 0, edge)):
                    if not pcount:
                        continue
                    with nb.loop(pcount, hint="p") as p:
                        at = base + ((p + p0) * count + kk) * panel
                        with nb.loop(width, "vector", lanes, hint="c") as j:
                            nb.store(out, at + j, element(row, (p + p0) * panel + j))
                        with nb.loop(panel - width, "vector", lanes, hint="z") as j:
                            nb.store(out, at + width + j, Const(0.0, out.dtype))


def weight_gradients(ctx, dgates, y, h0, out, steps, batch, hidden, x=None, out_x=None, x_width=None):
    """out [4H, H] = dgates^T h_prev, h_prev's rows read where they are (h0 for the first
    step taken, y for the others); given x, out_x [4H, I] = dgates^T x. The variant's
    (kc, panel, column kc, blocks): k in blocks of the column kc, the outputs' rows in
    `blocks` blocks that the threads take as they come. Without y and h0: out is zeros."""
    g4, rows = 4 * hidden, steps * batch
    nb, lanes = ctx.nb, ctx.lanes(out.dtype)
    _, panel, kc, blocks = ctx.variant
    products = []     # (output, its columns, [(first row, rows, B's element at (row, column))])
    if y is None or h0 is None:
        with nb.loop(g4 * hidden, "vector", lanes, hint="z") as i:
            nb.store(out, i, Const(0.0, out.dtype))
    elif not ctx.attrs["reverse"]:     # forward h0 then y[kk - B]; reverse y[kk + B] then h0
        products.append((out, hidden, [(0, batch, lambda kk, c: h0[kk * hidden + c]),
                                       (batch, rows - batch, lambda kk, c: y[(kk - batch) * hidden + c])]))
    else:
        products.append((out, hidden, [(0, rows - batch, lambda kk, c: y[(kk + batch) * hidden + c]),
                                       (rows - batch, batch, lambda kk, c: h0[(kk - (rows - batch)) * hidden + c])]))
    if x is not None:
        products.append((out_x, x_width, [(0, rows, lambda kk, c: x[kk * x_width + c])]))
    if not products:
        return
    packed_b = []
    for dst, n, parts in products:
        buf = ctx.scratch(rows * _ceil(n, panel) * panel, out.dtype)
        _pack(ctx, buf, parts, rows, n, kc, panel)
        packed_b.append(buf)
    share = g4 // blocks
    stride = a_stride(share, out.dtype.itemsize)
    packed_a = ctx.scratch(kc * stride * (ctx.threads if blocks > 1 else 1), dgates.dtype)
    slot = THREAD_INDEX * (kc * stride) if blocks > 1 else 0
    whole, edge = divmod(rows, kc)

    def k_block(r0, k0, count):
        """The products' sums over rows [k0, k0 + count) into rows r0 + [0, share) of the outputs."""
        with nb.loop(count, hint="ka") as kk:
            with nb.loop(share, "vector", lanes, hint="a") as j:
                nb.store(packed_a, slot + kk * stride + j, dgates[(k0 + kk) * g4 + r0 + j])
        for (dst, n, _), buf in zip(products, packed_b):
            panels_b = _Offset(buf, k0 * _ceil(n, panel) * panel)
            gemm_nest(ctx, share, n, count, lambda r, kk: packed_a[slot + kk * stride + r], None, dst,
                      lambda r, c, n=n: (r0 + r) * n + c, init=lambda r, c, dst=dst, n=n: dst[(r0 + r) * n + c],
                      parallel=False, prepacked=(panels_b, count, panel))

    split = ("teams", blocks) if blocks > 1 else None
    with nb.loop(blocks, hint="wb", parallel_candidate=split) as wb:
        r0 = wb * share
        for dst, n, _ in products:
            with nb.loop(share * n, "vector", lanes, hint="z") as i:     # the sums start from 0, as a
                nb.store(dst, r0 * n + i, Const(0.0, dst.dtype))         # GEMM's fresh seed does
        if whole:
            with nb.loop(whole, hint="kb") as kb:
                k_block(r0, kb * kc, kc)
        if edge:
            k_block(r0, whole * kc, edge)
