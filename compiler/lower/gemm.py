"""Register-blocked GEMM loop nest, the workhorse of MatMul, Gemm and Conv.

C[row, col] = init(row, col) + sum_k A(row, k) * B(k, col), then an optional
epilogue. The micro-kernel: MR rows x NR columns of accumulators (NR = 2 vectors)
held in registers across the k loop, each k one broadcast of A and NR/lanes
vector loads of B; edges in M are a second nest with fewer rows, edges in N a
masked vector tail. The outer block loop with more blocks runs in parallel.

When B is large, it is packed first (Goto's scheme, with B in the role of BLIS's
A because our vectors run along N): a block of NC columns is copied into panels
of NR columns, each panel k x NR contiguous, sized so the block stays in L2.
The micro-kernel then streams one panel sequentially instead of striding
through B's rows (a page per k step at n = 1024) and every A row block reuses
the packed block from cache. Edges need no slow path: the last block and the
last panel are just narrower nests over the same packed layout.
"""
from dataclasses import dataclass

from .loop_ir import Const, fma

GEMM_PARALLEL_MIN_MACS = 1 << 20   # ~2 MFLOP: well above a fork/join's cost
L2_BLOCK_BYTES = 256 << 10         # packed B block: a quarter of a 1 MiB L2 (measured best)
PACK_MIN_B_BYTES = 64 << 10        # below this B sits in L1/L2 anyway: packing only costs


@dataclass(frozen=True)
class GemmSchedule:
    mr: int
    nr: int
    lanes: int


def gemm_schedule(target, n, dtype):
    lanes = target.lanes(dtype)
    mr = 6 if lanes > 1 else 4
    nr = 2 * lanes if lanes > 1 else 4
    if n <= lanes:                       # a narrow C (a classifier's 10 outputs)
        nr, mr = lanes, 8 if lanes > 1 else 4
    return GemmSchedule(mr, nr, lanes)


def block_columns(s, n, k, itemsize):
    """NC: the most columns (a multiple of NR) whose k x NC packed block fits L2_BLOCK_BYTES."""
    panels = max(1, L2_BLOCK_BYTES // (k * s.nr * itemsize))
    return min(panels * s.nr, -(-n // s.nr) * s.nr)


def gemm_nest(ctx, m, n, k, load_a, load_b, store_c, init=None, dtype=None, parallel=True,
              slot=None):
    """Emit the loops into ctx.nb. load_a(row, kk) and load_b(kk, col) return loop-IR
    expressions, store_c(row, col, value) emits the store; rows/cols are Exprs.
    slot: when the caller already runs this nest on several threads (one image per
    thread), the thread's index, so each gets its own packing buffer."""
    from ..ir.types import DType
    dtype = dtype or DType.float32
    s = gemm_schedule(ctx.target, n, dtype)
    acc = ctx.local(s.mr * s.nr, dtype)
    parallel = parallel and m * n * k >= GEMM_PARALLEL_MIN_MACS
    if m >= 4 * s.mr and n > s.nr and k * n * dtype.itemsize >= PACK_MIN_B_BYTES:
        return _packed(ctx, s, acc, m, n, k, load_a, load_b, store_c, init, dtype, parallel, slot)
    _tiles(ctx, s, acc, m, n, k, load_a, lambda kk, bj, jj, col: load_b(kk, col), store_c, init,
           parallel)


def _packed(ctx, s, acc, m, n, k, load_a, load_b, store_c, init, dtype, parallel, slot):
    nb = ctx.nb
    nc = block_columns(s, n, k, dtype.itemsize)
    size = nc * k
    packed = ctx.scratch(size * (ctx.threads if slot is not None else 1), dtype)
    base = slot * size if slot is not None else 0

    def block(n0, ncols):
        panels = ncols // s.nr
        copy = "parallel" if parallel and panels > 1 and k * ncols >= 1 << 16 else "serial"
        for p0, count, width in ((0, panels, s.nr), (panels, 1, ncols % s.nr)):
            if count and width:
                with nb.loop(count, copy, hint="p") as pj:
                    with nb.loop(k, hint="k") as kk:
                        with nb.loop(width, "vector", s.lanes, hint="c") as jj:
                            nb.store(packed, base + ((pj + p0) * k + kk) * s.nr + jj,
                                     load_b(kk, n0 + (pj + p0) * s.nr + jj))
        _tiles(ctx, s, acc, m, ncols, k, load_a,
               lambda kk, bj, jj, col: packed[base + (bj * k + kk) * s.nr + jj],
               lambda r, c, v: store_c(r, c + n0, v),
               (lambda r, c: init(r, c + n0)) if init else None, parallel)

    if n // nc:
        with nb.loop(n // nc, hint="nb") as jb:
            block(jb * nc, nc)
    if n % nc:
        block(n // nc * nc, n % nc)


def _tiles(ctx, s, acc, m, n, k, load_a, load_b, store_c, init, parallel):
    """All MR x NR tiles of C, with the M and N edges as narrower nests.
    load_b(kk, panel, lane, col) gets the panel index and the column within it too."""
    m_parts = [(0, m // s.mr, s.mr), (m // s.mr * s.mr, 1, m % s.mr)]
    n_parts = [(0, n // s.nr, s.nr), (n // s.nr, 1, n % s.nr)]
    rows_outer = m // s.mr >= n // s.nr
    for mpart in m_parts:
        for npart in n_parts:
            if mpart[1] and mpart[2] and npart[1] and npart[2]:
                _block_nest(ctx, s, acc, mpart, npart, k, load_a, load_b, store_c, init,
                            parallel, rows_outer)


def _block_nest(ctx, s, acc, mpart, npart, k, load_a, load_b, store_c, init, parallel, rows_outer):
    nb = ctx.nb
    (m0, mcount, mr), (p0, ncount, nr) = mpart, npart
    outer = [(mcount, "m"), (ncount, "n")] if rows_outer else [(ncount, "n"), (mcount, "m")]
    kinds = ["parallel" if parallel and outer[0][0] > 1 else "serial", "serial"]
    with nb.loop(outer[0][0], kinds[0], hint=outer[0][1]) as b0:
        with nb.loop(outer[1][0], kinds[1], hint=outer[1][1]) as b1:
            bi, bj = (b0, b1) if rows_outer else (b1, b0)
            panel = bj + p0 if p0 else bj

            def tile(body):
                with nb.loop(mr, "unroll", hint="r") as ii:
                    with nb.loop(nr, "vector", s.lanes, hint="c") as jj:
                        row = bi * mr + ii + m0 if m0 else bi * mr + ii
                        body(ii * s.nr + jj, row, panel * s.nr + jj, jj)

            tile(lambda a, row, col, jj: nb.store(acc, a, init(row, col) if init else
                                                  Const(0.0, acc.dtype)))
            with nb.loop(k, hint="k") as kk:
                tile(lambda a, row, col, jj: nb.store(
                    acc, a, fma(load_a(row, kk), load_b(kk, panel, jj, col), acc[a])))
            tile(lambda a, row, col, jj: store_c(row, col, acc[a]))
