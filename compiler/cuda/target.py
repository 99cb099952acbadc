"""CUDA targets: what lowering and the cache key see when compiling for a GPU."""
from dataclasses import dataclass, fields

from ..errors import CompileError

PTX_TRIPLE = "nvptx64-nvidia-cuda"
ARCHES = ("sm_80", "sm_86", "sm_89", "sm_90")
BLOCK_THREADS = 256      # threads per block of a grid-mapped launch (8 warps: any SM fits several)


@dataclass(frozen=True)
class CudaTarget:
    """A GPU of compute capability `arch`. Lowering sees one lane and one thread: a
    kernel's parallel loops become the grid (compiler/cuda/grid.py), not CPU
    vectors or a thread pool. `emulated`: the same kernels compiled for the host
    CPU, the grid run as loops (target="cuda-emulated")."""
    arch: str = "sm_90"
    emulated: bool = False
    threads: int = 1
    vector_cap: int = 32

    triple = PTX_TRIPLE
    vector_bits = 32

    def __post_init__(self):
        if self.arch not in ARCHES:
            raise CompileError(f"unknown CUDA architecture '{self.arch}' (known: {', '.join(ARCHES)})")

    @property
    def cpu(self):
        return self.arch

    @property
    def features(self):
        return ""

    def lanes(self, dtype):
        return 1

    def key(self):
        return "cuda|" + "|".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))

    def description(self):
        """The full target description every cache key is made of (lower/target.py)."""
        from ..schedule.tables import table_for, table_id
        return f"{self.key()}|schedule={table_id(table_for(self))}"


def cuda_target(name, arch="sm_90"):
    """'cuda' or 'cuda-emulated' -> CudaTarget."""
    if name not in ("cuda", "cuda-emulated"):
        raise CompileError(f"unknown target '{name}' (cpu, cuda, cuda-emulated)")
    return CudaTarget(arch, emulated=name == "cuda-emulated")
