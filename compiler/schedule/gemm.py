"""The GEMM's schedule: its register tile (MR x NR accumulators), k blocking, when
B is packed into panels (at run time, or once at compile time for constant
weights: passes/simplify.py's prepack_weights asks `packs_b` here) and when it
splits across threads. lower/gemm.py emits the loop nest these choose."""
from dataclasses import dataclass

import numpy as np

from ..errors import CompileError
from .conv import table_or_host
from .tables import table_for


@dataclass(frozen=True)
class GemmSchedule:
    mr: int
    nr: int
    lanes: int


def gemm_schedule(target, n, dtype, m=None, prepacked=False, panel=None, rows=None):
    """The register tile for C [m, n]; `panel`: the width of B's compile-time panels
    (prepack), which a tile must not straddle; `rows`: the height of A's compile-time
    strips (strips_of), which the tile's rows must be."""
    table, lanes = table_for(target), target.lanes(dtype)
    mr, nr = table.gemm_mr, table.gemm_nr_vectors * lanes
    if n <= lanes:                       # a narrow C (a classifier's 10 outputs)
        nr, mr = lanes, 8 if lanes > 1 else 4
    elif m == 1 and lanes > 1 and not prepacked and rows is None:   # one row (a batch-1 classifier): B streams by rows,
        nr, mr = min(8 * lanes, -(-n // lanes) * lanes), 1   # eight vectors of it per k
    if panel is not None and panel % nr:     # panels packed for a narrower target: one per tile
        if panel % lanes:
            raise CompileError(f"weights packed in {panel}-column panels cannot feed {lanes}-lane tiles: "
                               "optimise the graph for this target")
        nr = panel
    return GemmSchedule(rows or mr, nr, lanes)


def dot_tile(target):
    """(rows, columns) of dot products dot_gemm computes at once."""
    t = table_for(target)
    return t.dot_mr, t.dot_nr


def parallel_min_macs(target):
    return table_for(target).gemm_parallel_min_macs


def block_bytes(target):
    return table_for(target).l2_block_bytes


def _ceil(a, b):
    return -(-a // b)


def k_blocking(k, target):
    """(kc, k_blocks): the k loop in blocks of about the target's kc."""
    k_blocks = max(1, round(k / table_for(target).kc_target))
    kc = _ceil(k, k_blocks)
    return kc, _ceil(k, kc)


def column_read_kc(target):
    """k per block of a GEMM whose A is read down its columns (a weight gradient's
    dY^T with the sequence's rows as k): each k step of a strip of A touches a cache
    line of its own, and rows a power of two apart share a few cache sets, so the
    one-block kc of a long k (534 at 1600) made every broadcast of A a miss."""
    return table_for(target).column_read_kc


def prepack(b, target):
    """B [k, n] as [k_blocks, ceil(n / panel), kc, panel], zero-padded: the panels the
    GEMM would pack at run time, made once at compile time for constant weights.
    The shape says the layout (kc, panel): MatMulPacked reads it from there."""
    return panels_of(b, *panel_layout(b.shape[0], target))


def panel_layout(k, target):
    """(kc, panel) of B's packed panels for a k-long product on `target`."""
    return k_blocking(k, target)[0], table_for(target).prepack_panel


def strip_rows(target):
    """Rows of a constant A's compile-time strips on `target` (None: this CPU) (0: A
    stays row-major): the table's gemm_mr where its a_strips says they pay."""
    t = table_or_host(target)
    return t.gemm_mr if t.a_strips else 0


def strips_of(a, rows):
    """A [m, k] in strips of `rows` rows (the last m % rows), each k-major: A[row0 + i, kk]
    at row0 * k + kk * strip_rows + i. Same size and shape; lower/gemm.py's a_strips reads it."""
    m, k = a.shape
    whole = m - m % rows
    body = a[:whole].reshape(-1, rows, k).transpose(0, 2, 1).reshape(-1)
    tail = a[whole:].T.reshape(-1)
    return np.concatenate([body, tail]).reshape(m, k)


def unstrip(s, rows):
    """strips_of's inverse."""
    m, k = s.shape
    whole = m - m % rows
    flat = s.reshape(-1)
    body = flat[:whole * k].reshape(-1, k, rows).transpose(0, 2, 1).reshape(whole, k)
    tail = flat[whole * k:].reshape(k, m - whole).T
    return np.concatenate([body, tail]).reshape(m, k)


def panels_of(b, kc, panel):
    """B [k, n] as [ceil(k / kc), ceil(n / panel), kc, panel], zero-padded at both edges."""
    k, n = b.shape
    padded = np.zeros((_ceil(k, kc) * kc, _ceil(n, panel) * panel), b.dtype)
    padded[:k, :n] = b
    return np.ascontiguousarray(padded.reshape(-1, kc, padded.shape[1] // panel, panel).transpose(0, 2, 1, 3))


def packs_b(target, m, n, k, itemsize, mr=None, nr=None):
    """Whether the GEMM packs B into panels (else it reads B in place). Without mr/nr:
    the target's row tile and prepacked panel, the compile-time packing's test."""
    t = table_for(target)
    mr, nr = mr or t.gemm_mr, nr or t.prepack_panel
    return m >= t.pack_min_row_tiles * mr and n >= nr and k >= t.pack_min_k and \
        k * n * itemsize >= t.pack_min_b_bytes


@dataclass(frozen=True)
class GemmPlan:
    """One GEMM's schedule, decided whole before lower/gemm.py emits its nest."""
    tile: GemmSchedule       # the register tile (MR x NR accumulators)
    packs: bool              # B packed into panels at run time (a prepacked B is read by its panels)
    kc: int                  # k per block of packed panels
    k_blocks: int
    block_bytes: int         # a packed KC x NC block of B (the panels one block holds)
    parallel: bool           # enough multiply-adds to split across threads (where the caller allows)
    dot_tile: tuple          # n == 1: (rows, columns) of dot products at once (dot_gemm)


def gemm_plan(target, m, n, k, dtype, parallel=True, prepacked=None, rows=None) -> GemmPlan:
    """The schedule of C [m, n] = A [m, k] @ B [k, n] on `target`; prepacked: B's
    compile-time layout (kc, panel) when it has one (prepack()); rows: the height of
    A's compile-time strips when it has them (strips_of())."""
    parallel = parallel and m * n * k >= parallel_min_macs(target)
    tile = gemm_schedule(target, n, dtype, m, prepacked=prepacked is not None,
                         panel=prepacked[1] if prepacked is not None else None, rows=rows)
    if prepacked is not None:
        kc, packs = prepacked[0], False
        k_blocks = _ceil(k, kc)
    else:
        (kc, k_blocks), packs = k_blocking(k, target), packs_b(target, m, n, k, dtype.itemsize, tile.mr, tile.nr)
    return GemmPlan(tile, packs, kc, k_blocks, block_bytes(target), parallel, dot_tile(target))
