"""The CPU we generate code for, read from llvmlite's host query."""
import math
import numbers
import os
from dataclasses import dataclass, fields
from functools import lru_cache

import llvmlite.binding as llvm

from ..errors import CompileError
from ..schedule.tables import table_for, table_id


@lru_cache(maxsize=None)
def _init_llvm():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def optimize(llvm_ir, tm, opt=3, vectorize=True):
    """Parse and verify the textual IR, then run LLVM's O`opt` pipeline for the target
    machine `tm` (with the loop and SLP vectorisers for CPUs); returns the ModuleRef."""
    try:
        mod = llvm.parse_assembly(llvm_ir)
        mod.verify()
    except RuntimeError as exc:
        raise CompileError(f"generated LLVM IR does not verify: {exc}") from None
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    if vectorize:
        pto.loop_vectorization = True
        pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


@dataclass(frozen=True)
class CpuTarget:
    triple: str
    cpu: str
    features: str
    threads: int = 1
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

    def description(self):
        """The target in full: every field (threading too), the vector width they
        imply, and the schedule table (and its version) that chooses the code's
        shape. All of these change the code, so every cache key is made of this."""
        table = table_for(self)      # the thresholds that chose the code's shape
        return "|".join(["cpu"] + [f"{f.name}={getattr(self, f.name)}" for f in fields(self)] +
                        [f"vector_bits={self.vector_bits}", f"schedule={table_id(table)}"])

    key = description        # the name the caches used first


MAX_THREADS = 1024     # per-thread slots live on the stack and in the arena: a bound keeps them small


def _cgroup_cpu_limit():
    """The container's CPU quota in CPUs (cgroup v2 cpu.max, or v1 cfs quota), None if unlimited."""
    for path, parse in (("/sys/fs/cgroup/cpu.max", lambda t: t.split()[:2]),
                        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None)):
        try:
            with open(path) as f:
                text = f.read()
            if parse is None:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    quota, period = text.strip(), f.read().strip()
            else:
                quota, period = parse(text)
            if quota not in ("max", "-1") and int(period) > 0:
                return int(quota) / int(period)
        except (OSError, ValueError):
            continue
    return None


def available_cpus():
    """The CPUs this process may use: its affinity mask, capped by a container's quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def checked_threads(threads):
    """`threads` as an int in [1, MAX_THREADS]; None means every CPU the process may use (capped)."""
    if threads is None:
        return min(available_cpus(), MAX_THREADS)
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) \
            or not 1 <= threads <= MAX_THREADS:
        raise CompileError(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    return int(threads)


def host_target(threads=None, vector_cap=512):
    """The host CPU; `vector_cap` (256, 32) asks for AVX2-wide or scalar code."""
    _init_llvm()
    threads = checked_threads(threads)
    if isinstance(vector_cap, bool) or not isinstance(vector_cap, numbers.Integral) or vector_cap < 32:
        raise CompileError(f"vector_cap must be a width in bits of at least 32 (512, 256, 128, 32), "
                           f"got {vector_cap!r}")
    features = llvm.get_host_cpu_features().flatten()
    if vector_cap < 512:     # AVX2-class code: LLVM must not widen anything to zmm either
        features = ",".join("-" + f[1:] if f.startswith("+avx512") else f for f in features.split(","))
    return CpuTarget(llvm.get_process_triple(), llvm.get_host_cpu_name(), features, threads,
                     vector_cap)
