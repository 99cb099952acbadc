"""The GEMM's schedule: its register tile (MR x NR accumulators), k blocking, when
B is packed into panels (at run time, or once at compile time for constant
weights: passes/simplify.py's prepack_weights asks `packs_b` here) and when it
splits across threads. lower/gemm.py emits the loop nest these choose."""
from dataclasses import dataclass

import numpy as np

GEMM_PARALLEL_MIN_MACS = 1 << 20   # ~2 MFLOP: well above a fork/join's cost
L2_BLOCK_BYTES = 256 << 10         # a packed KC x NC block: a quarter of a 1 MiB L2 (measured)
KC_TARGET = 512                    # k per block: 6 x 512 floats of A is 12 KiB of L1
PACK_MIN_B_BYTES = 64 << 10        # below this B sits in L1/L2 anyway: packing only costs
PACK_MIN_K = 64                    # a short k (a first layer's 3 x 3 x 3) reads B's rows in place
PACK_MIN_ROW_TILES = 4             # fewer row tiles than this read B in place: packing would not pay


@dataclass(frozen=True)
class GemmSchedule:
    mr: int
    nr: int
    lanes: int


def gemm_schedule(target, n, dtype, m=None, prepacked=False):
    lanes = target.lanes(dtype)
    mr = 6 if lanes > 1 else 4
    nr = 2 * lanes if lanes > 1 else 4
    if n <= lanes:                       # a narrow C (a classifier's 10 outputs)
        nr, mr = lanes, 8 if lanes > 1 else 4
    elif m == 1 and lanes > 1 and not prepacked:   # one row (a batch-1 classifier): B streams by rows,
        nr, mr = min(8 * lanes, -(-n // lanes) * lanes), 1   # eight vectors of it per k
    return GemmSchedule(mr, nr, lanes)


def _ceil(a, b):
    return -(-a // b)


PANEL = 32      # columns of a compile-time packed B panel: a multiple of every target's nr


def k_blocking(k):
    """(kc, k_blocks): the k loop in blocks of about KC_TARGET."""
    k_blocks = max(1, round(k / KC_TARGET))
    kc = _ceil(k, k_blocks)
    return kc, _ceil(k, kc)


def prepack(b):
    """B [k, n] as [k_blocks, ceil(n / PANEL), kc, PANEL], zero-padded: the panels the
    GEMM would pack at run time, made once at compile time for constant weights."""
    k, n = b.shape
    kc, k_blocks = k_blocking(k)
    padded = np.zeros((k_blocks * kc, _ceil(n, PANEL) * PANEL), b.dtype)
    padded[:k, :n] = b
    return np.ascontiguousarray(padded.reshape(k_blocks, kc, -1, PANEL).transpose(0, 2, 1, 3))


def packs_b(m, n, k, itemsize, mr=6, nr=PANEL):
    """Whether the GEMM packs B into panels (else it reads B in place). The defaults
    are the vector targets' row tile and a panel: the compile-time packing's test."""
    return m >= PACK_MIN_ROW_TILES * mr and n >= nr and k >= PACK_MIN_K and k * n * itemsize >= PACK_MIN_B_BYTES
