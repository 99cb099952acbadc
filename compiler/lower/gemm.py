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


def block_panels(s, k, itemsize):
    """Panels per packed block: as many k x NR panels as fit L2_BLOCK_BYTES (at least one)."""
    return max(1, L2_BLOCK_BYTES // (k * s.nr * itemsize))


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
    """One fork for the whole GEMM: each of T threads packs every block of B into its
    own buffer and computes its share of the row blocks (the last thread also the edge
    rows). Packing twice costs k*n copies per thread against m*n*k/T FMAs; a fork per
    block would cost more (GOMP wakes sleeping threads: tens of microseconds).
    The partial panel at N's edge joins the last block, so A's rows are read once."""
    nb = ctx.nb
    per_block, edge = block_panels(s, k, dtype.itemsize), n % s.nr
    full_blocks, last = divmod(n // s.nr, per_block)
    if edge and not last and full_blocks:
        full_blocks, last = full_blocks - 1, per_block
    size = (per_block + 1) * s.nr * k
    teams = ctx.threads if parallel and ctx.threads > 1 else 1
    packed = ctx.scratch(size * (ctx.threads if slot is not None else teams), dtype)
    row_blocks = m // s.mr
    share = -(-row_blocks // teams)

    def block(t, base, n0, panels, width):
        """Pack `panels` whole panels and a partial one `width` wide, then compute them."""
        parts = [(0, panels, s.nr), (panels, 1, width)]
        for p0, count, nr in parts:
            if count and nr:
                with nb.loop(count, hint="p") as pj:
                    with nb.loop(k, hint="k") as kk:
                        at = base + ((pj + p0) * k + kk) * s.nr
                        with nb.loop(nr, "vector", s.lanes, hint="c") as jj:
                            nb.store(packed, at + jj, load_b(kk, n0 + (pj + p0) * s.nr + jj))
                        with nb.loop(s.nr - nr, "vector", s.lanes, hint="z") as jj:
                            nb.store(packed, at + nr + jj, Const(0.0, dtype))   # the edge's padding
        rows = [(t * share if teams > 1 else 0, share, row_blocks - t * share if teams > 1 else None, s.mr),
                (row_blocks, 1, t - (teams - 2) if teams > 1 else None, m % s.mr)]
        for first, count, limit, mr in rows:
            if count and mr:
                _tile_loops(ctx, s, acc, (first, count, limit, mr), [p for p in parts if p[1] and p[2]],
                            k, load_a, lambda kk, bj, jj: packed[base + (bj * k + kk) * s.nr + jj],
                            lambda r, c, v: store_c(r, c + n0, v),
                            (lambda r, c: init(r, c + n0)) if init else None)

    def blocks(t):
        base = (slot if slot is not None else t) * size
        if full_blocks:
            with nb.loop(full_blocks, hint="nb") as jb:
                block(t, base, jb * (per_block * s.nr), per_block, 0)
        if last or edge:
            block(t, base, full_blocks * per_block * s.nr, last, edge)

    if teams > 1:
        with nb.loop(teams, "parallel", hint="t") as t:
            blocks(t)
    else:
        blocks(0)


def _tile_loops(ctx, s, acc, rows, panel_parts, k, load_a, load_b, store_c, init):
    """Row blocks (first, count, limit, MR) x panels [(first, count, NR)]: the
    micro-kernel over packed B, rows outermost so the MR rows of A stay in L1 across
    every panel of the block."""
    nb = ctx.nb
    first, count, limit, mr = rows
    with nb.loop(count, hint="m", limit=limit) as bi:
        for p0, pcount, nr in panel_parts:
            with nb.loop(pcount, hint="n") as bj:
                panel = bj + p0 if p0 else bj
                row0 = (first + bi) * s.mr

                def tile(body, width=nr):
                    with nb.loop(mr, "unroll", hint="r") as ii:
                        with nb.loop(width, "vector", s.lanes, hint="c") as jj:
                            body(ii * s.nr + jj, row0 + ii, panel * s.nr + jj, jj)

                tile(lambda a, row, col, jj: nb.store(acc, a, init(row, col) if init else
                                                      Const(0.0, acc.dtype)))
                with nb.loop(k, hint="k") as kk:    # full width even at the edge: zero padded
                    tile(lambda a, row, col, jj: nb.store(
                        acc, a, fma(load_a(row, kk), load_b(kk, panel, jj), acc[a])), s.nr)
                tile(lambda a, row, col, jj: store_c(row, col, acc[a]))


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
