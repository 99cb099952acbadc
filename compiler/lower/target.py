"""The CPU we generate code for, read from llvmlite's host query."""
import atexit
import ctypes.util
import numbers
import os
from dataclasses import dataclass, fields
from functools import lru_cache

import llvmlite.binding as llvm

from ..errors import CompileError


@lru_cache(maxsize=None)
def _init_llvm():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    gomp = ctypes.util.find_library("gomp")
    if gomp:
        try:
            llvm.load_library_permanently(gomp)
        except RuntimeError:
            gomp = None
        else:
            atexit.register(_stop_workers, ctypes.CDLL(gomp))
    return bool(gomp)


def _stop_workers(lib):
    """Join libgomp's worker threads before the process exits: with
    OMP_WAIT_POLICY=active they spin on the thread pool, which libgomp's own
    destructor frees under them (a segfault at exit)."""
    pause = getattr(lib, "omp_pause_resource_all", None)     # OpenMP 5.0
    if pause is not None:
        pause(2)                                             # omp_pause_hard


@dataclass(frozen=True)
class CpuTarget:
    triple: str
    cpu: str
    features: str
    threads: int = 1
    has_gomp: bool = False
    vector_cap: int = 512      # narrower ISA on request (256: AVX2 code, 32: scalar code)

    @property
    def vector_bits(self):
        feats = set(self.features.split(","))
        if "+avx512f" in feats:
            bits = 512
        elif "+avx2" in feats or "+avx" in feats:
            bits = 256
        elif "+sse2" in feats or "+neon" in feats or self.triple.startswith("aarch64"):
            bits = 128
        else:
            bits = 32
        return min(bits, self.vector_cap)

    def lanes(self, dtype):
        """Vector lanes for `dtype` (16 float32 with AVX-512, 8 with AVX2, 1 scalar)."""
        return max(1, self.vector_bits // (8 * dtype.itemsize))

    def key(self):
        """Every field (vector width and threading too): all of them change the code."""
        return "|".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


MAX_THREADS = 1024     # per-thread slots live on the stack and in the arena: a bound keeps them small


def checked_threads(threads):
    """`threads` as an int in [1, MAX_THREADS]; None means every core (capped)."""
    if threads is None:
        return max(1, min(os.cpu_count() or 1, MAX_THREADS))
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) \
            or not 1 <= threads <= MAX_THREADS:
        raise CompileError(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    return int(threads)


def host_target(threads=None, vector_cap=512):
    """The host CPU; `vector_cap` (256, 32) asks for AVX2-wide or scalar code."""
    has_gomp = _init_llvm()
    threads = checked_threads(threads)
    features = llvm.get_host_cpu_features().flatten()
    if vector_cap < 512:     # AVX2-class code: LLVM must not widen anything to zmm either
        features = ",".join("-" + f[1:] if f.startswith("+avx512") else f for f in features.split(","))
    return CpuTarget(llvm.get_process_triple(), llvm.get_host_cpu_name(), features, threads,
                     has_gomp, vector_cap)
