"""PTX from a kernel module (llvmlite's NVPTX backend), and cubins from PTX (ptxas).

LLVM aborts the whole process ("no libcall available", "Cannot select") on an
operation NVPTX cannot lower, so every declared function is checked first: a
kernel calling one is a CompileError, never a crash."""
import os
import re
import shutil
import subprocess
import tempfile

import llvmlite.binding as llvm

from ..errors import CompileError
from ..lower.target import _init_llvm, optimize

# llvm.* math that NVPTX turns into libcalls it does not have (a fatal error in LLVM);
# other intrinsics it lowers itself, and any other declared function is a libcall too
_UNLOWERED = re.compile(r"llvm\.(exp|exp2|exp10|log|log2|log10|pow|powi|sin|cos|tan|asin|acos|atan|atan2|"
                        r"sinh|cosh|tanh|frexp|ldexp|lrint|llrint|lround|llround)\.")


def ptx_target_machine(arch):
    _init_llvm()
    target = llvm.Target.from_triple("nvptx64-nvidia-cuda")
    return target.create_target_machine(cpu=arch, features="", opt=3)


def compile_ptx(llvm_ir, arch):
    """The module's PTX text for `arch` (sm_80, sm_90, ...) after LLVM's O3."""
    tm = ptx_target_machine(arch)
    mod = optimize(llvm_ir, tm, vectorize=False)
    for fn in mod.functions:
        if fn.is_declaration and (not fn.name.startswith("llvm.") or _UNLOWERED.match(fn.name)):
            raise CompileError(f"a GPU kernel calls '{fn.name}', which the NVPTX backend cannot lower")
    return tm.emit_assembly(mod)


def find_ptxas():
    """ptxas on PATH, under $CUDA_HOME/bin, or from the nvidia-cuda-nvcc wheel; None if absent."""
    found = shutil.which("ptxas")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.isfile(os.path.join(root, "bin", "ptxas")):
            return os.path.join(root, "bin", "ptxas")
    return None


def assemble(ptx, arch, verbose=False, ptxas=None):
    """(cubin bytes, ptxas's report) for `arch`; CompileError with ptxas's message on failure."""
    ptxas = ptxas or find_ptxas()
    if ptxas is None:
        raise CompileError("ptxas not found (install the CUDA toolkit or `pip install nvidia-cuda-nvcc`)")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "m.ptx"), os.path.join(tmp, "m.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [ptxas, f"-arch={arch}", "-O3", src, "-o", out] + (["-v"] if verbose else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise CompileError(f"ptxas -arch={arch} failed: {proc.stderr.strip()[:2000]}")
        with open(out, "rb") as f:
            return f.read(), proc.stderr


def spills(report):
    """function -> (spill store bytes, spill load bytes) from `ptxas -v` output."""
    out, current = {}, None
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current:
            out[current] = (int(m.group(1)), int(m.group(2)))
    return out
