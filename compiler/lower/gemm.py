"""Register-blocked GEMM loop nest, the workhorse of MatMul, Gemm and Conv.

C[row, col] = init(row, col) + sum_k A(row, k) * B(k, col), then an optional
epilogue. The schedule: MR rows x NR columns of accumulators (NR = 2 vectors)
held in registers across the k loop, each k one broadcast of A and NR/lanes
vector loads of B; edges in M are a second nest with fewer rows, edges in N a
masked vector tail. The outer block loop with more blocks runs in parallel.
"""
from dataclasses import dataclass

from .loop_ir import Const, fma
GEMM_PARALLEL_MIN_MACS = 1 << 20   # ~2 MFLOP: well above a fork/join's cost


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


def gemm_nest(ctx, m, n, k, load_a, load_b, store_c, init=None, dtype=None, parallel=True):
    """Emit the loops into ctx.nb. load_a(row, kk) and load_b(kk, col) return loop-IR
    expressions, store_c(row, col, value) emits the store; rows/cols are Exprs."""
    from ..ir.types import DType
    dtype = dtype or DType.float32
    s = gemm_schedule(ctx.target, n, dtype)
    acc = ctx.local(s.mr * s.nr, dtype)
    parallel = parallel and m * n * k >= GEMM_PARALLEL_MIN_MACS
    m_parts = [(0, m // s.mr, s.mr), (m // s.mr * s.mr, 1, m % s.mr)]
    n_parts = [(0, n // s.nr, s.nr), (n // s.nr * s.nr, 1, n % s.nr)]
    m_blocks, n_blocks = m // s.mr, n // s.nr
    rows_outer = m_blocks >= n_blocks
    for m0, mcount, mr in m_parts:
        for n0, ncount, nr in n_parts:
            if mcount and mr and ncount and nr:
                _block_nest(ctx, s, acc, (m0, mcount, mr), (n0, ncount, nr), k,
                            load_a, load_b, store_c, init, parallel, rows_outer)


def _block_nest(ctx, s, acc, mpart, npart, k, load_a, load_b, store_c, init, parallel, rows_outer):
    nb = ctx.nb
    (m0, mcount, mr), (n0, ncount, nr) = mpart, npart
    outer = [(mcount, "m"), (ncount, "n")] if rows_outer else [(ncount, "n"), (mcount, "m")]
    kinds = ["parallel" if parallel and outer[0][0] > 1 else "serial", "serial"]
    with nb.loop(outer[0][0], kinds[0], hint=outer[0][1]) as b0:
        with nb.loop(outer[1][0], kinds[1], hint=outer[1][1]) as b1:
            bi, bj = (b0, b1) if rows_outer else (b1, b0)

            def tile(body):
                with nb.loop(mr, "unroll", hint="r") as ii:
                    with nb.loop(nr, "vector", s.lanes, hint="c") as jj:
                        row = bi * mr + ii + m0 if m0 else bi * mr + ii
                        col = bj * s.nr + jj + n0 if n0 else bj * s.nr + jj
                        body(ii * s.nr + jj, row, col)

            tile(lambda a, row, col: nb.store(acc, a, init(row, col) if init else
                                              Const(0.0, acc.dtype)))
            with nb.loop(k, hint="k") as kk:
                tile(lambda a, row, col: nb.store(acc, a, fma(load_a(row, kk), load_b(kk, col),
                                                              acc[a])))
            tile(lambda a, row, col: store_c(row, col, acc[a]))
