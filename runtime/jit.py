"""Verify, optimise (O3, new pass manager) and JIT-compile an LLVM module."""
import llvmlite.binding as llvm

from nutshell.compiler.errors import CompileError
from nutshell.compiler.lower.target import _init_llvm


def target_machine(target, opt=3, reloc="default", codemodel="jitdefault"):
    _init_llvm()
    try:
        t = llvm.Target.from_triple(target.triple)
    except RuntimeError as exc:
        raise CompileError(f"no LLVM target for triple {target.triple}: {exc}") from None
    return t.create_target_machine(cpu=target.cpu, features=target.features, opt=opt,
                                   reloc=reloc, codemodel=codemodel)


def optimize(llvm_ir, tm, opt=3):
    """Parse and verify the textual IR, then run the O3 pipeline; returns the ModuleRef."""
    try:
        mod = llvm.parse_assembly(llvm_ir)
        mod.verify()
    except RuntimeError as exc:
        raise CompileError(f"generated LLVM IR does not verify: {exc}") from None
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


class JitModule:
    """Holds an MCJIT engine alive and hands out function addresses."""

    def __init__(self, llvm_ir, target):
        self.tm = target_machine(target)
        self.module = optimize(llvm_ir, self.tm)
        self.engine = llvm.create_mcjit_compiler(self.module, self.tm)
        self.engine.finalize_object()
        self.engine.run_static_constructors()

    def address(self, name):
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CompileError(f"function {name} not found in the compiled module")
        return addr

    def optimized_ir(self):
        return str(self.module)

    def assembly(self):
        return self.tm.emit_assembly(self.module)
