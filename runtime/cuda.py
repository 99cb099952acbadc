"""ns.compile(..., target="cuda" | "cuda-emulated"): GPU kernels (compiler/cuda/),
run on a GPU through the driver API (cuda_driver.py) or, emulated, on the CPU by
the CPU model's runtime (the same entry ABI, the same CompiledModel API)."""
from nutshell.compiler.codegen.c_header import c_identifier
from nutshell.compiler.cuda.model import build_gpu_model
from nutshell.compiler.cuda.ptx import compile_ptx
from nutshell.compiler.cuda.pipeline import GPU_PIPELINE
from nutshell.compiler.cuda.target import ARCHES, cuda_target
from nutshell.compiler.passes.pipeline import run_pipeline
from nutshell.compiler.lower.target import host_target

import llvmlite.binding as llvm

from .jit import JitModule, ensure_pool, target_machine
from .model import CompiledModel


class EmulatedModel(CompiledModel):
    """The GPU kernels compiled for this CPU, each grid run as loops over blocks and
    threads: slow, but the code each GPU thread runs, checkable without a GPU."""

    def source(self, kind="llvm"):
        """CompiledModel's kinds, plus 'ptx': the same kernels as PTX."""
        if kind == "ptx":
            return gpu_source(self.graph, self.target.arch, self.code.entry[:-len("_run")])
        if kind == "loops":
            return loops_source(self.code)
        return super().source(kind)

    def lowered(self):
        return self.code

    def export(self, out_dir, name=None, **cpu_options):
        from .cuda_aot import export_cuda, refuse_cpu_options
        refuse_cpu_options(cpu_options)
        return export_cuda(self.graph, out_dir, c_identifier(name or self.graph.name), self.target.arch)


class EmulatedJit(JitModule):
    """The emulated kernels through a light pipeline (inline, SROA, instcombine,
    simplifycfg) at codegen -O1: the emulator checks the kernels' results, not
    their speed, and O3 took 10x as long (9 s for a small CNN's training step)."""

    def __init__(self, llvm_ir, target):
        ensure_pool()
        self.tm, self.llvm_ir, self.object, self.from_cache = target_machine(target, opt=1), llvm_ir, None, False
        self.module = llvm.parse_assembly(llvm_ir)
        self.module.verify()
        self.module.triple, self.module.data_layout = self.tm.triple, str(self.tm.target_data)
        passes = llvm.create_new_module_pass_manager()
        for add in (passes.add_always_inliner_pass, passes.add_sroa_pass, passes.add_instruction_combine_pass,
                    passes.add_simplify_cfg_pass, passes.add_global_dead_code_eliminate_pass):
            add()
        passes.run(self.module, llvm.create_pass_builder(self.tm, llvm.create_pipeline_tuning_options(1)))
        self.engine = llvm.create_mcjit_compiler(self.module, self.tm)
        self.engine.finalize_object()
        self.engine.run_static_constructors()


def loops_source(code):
    """The loop IR of every kernel, tiled GEMMs included."""
    from nutshell.compiler.cuda.tiled import TiledGemm, describe
    from nutshell.compiler.lower.loop_printer import print_kernel
    texts = []
    for kernel in code.kernels:
        tiled = [describe(s) for s in kernel.body if isinstance(s, TiledGemm)]
        texts.append("\n".join([print_kernel(kernel)] + ["  " + t for t in tiled]))
    return "\n\n".join(texts)


def gpu_source(graph, arch, name):
    code = build_gpu_model(graph, cuda_target("cuda", arch), name)
    return compile_ptx(code.llvm_ir, arch)


def optimize_for_gpu(graph, verify_each=False, print_after=()):
    from nutshell.compiler.ir import verify
    return run_pipeline(verify(graph), GPU_PIPELINE, verify_each, tuple(print_after))


def compile_cuda(graph, target_name, name, arch=None, verify_each=False, print_after=()):
    """A runner for `graph` (not yet optimised) on `target_name` ('cuda' or 'cuda-emulated').
    arch: the PTX's sm_XY; None: the GPU's own (the newest nutshell knows at most), or
    sm_90 emulated."""
    device = None
    if target_name == "cuda":            # the driver first: no GPU is a clear error before any work
        from .cuda_driver import open_device, ptx_arch_for
        device = open_device()
        arch = arch or ptx_arch_for(device[2], ARCHES)
    target = cuda_target(target_name, arch or "sm_90")
    if device is not None:             # PTX for a newer GPU than this one would fail only at load
        ptx_arch_for(device[2], [target.arch])
    graph = optimize_for_gpu(graph, verify_each, print_after)
    code = build_gpu_model(graph, target, name)
    if target.emulated:
        return EmulatedModel(graph, code, EmulatedJit(code.llvm_ir, host_target(1)), target)
    from .cuda_driver import CudaModel
    return CudaModel(graph, code, compile_ptx(code.llvm_ir, target.arch), target, device)
