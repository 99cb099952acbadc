"""Parallel workers emitted once per model: two kernels whose parallel loops are the
same loop IR (a convolution and the input gradient that is the same convolution)
call one worker, also from another part of a split build, and compute what each
would alone. The structure key that decides it covers every field of the loop IR."""
import ctypes
import re

import llvmlite.binding as llvm
import numpy as np

from nutshell.compiler.codegen import model as codegen_model
from nutshell.compiler.codegen.kernel_emitter import KernelEmitter
from nutshell.compiler.ir.types import DType
from nutshell.compiler.lower.loop_ir import Buffer, Const, For, Kernel, Store, Var
from nutshell.compiler.lower.loop_printer import structure_key
from nutshell.compiler.lower.target import host_target
from nutshell.runtime.jit import ensure_pool, target_machine


def scale_kernel(name, factor=2.0, size=64, dtype=DType.float32):
    x, y, i = Buffer("x", dtype, size), Buffer("y", dtype, size), Var("i")
    return Kernel(name, [x, y], [For(i, size, [Store(y, i, x[i] * Const(factor, dtype))], "parallel")])


def test_structure_key_sees_every_field():
    base = structure_key(scale_kernel("a").body)
    assert structure_key(scale_kernel("b").body) == base            # the kernel's name is not part of it
    for other in (scale_kernel("a", factor=3.0), scale_kernel("a", size=65),
                  scale_kernel("a", dtype=DType.float64)):
        assert structure_key(other.body) != base


def test_equal_parallel_loops_share_one_worker_across_parts(monkeypatch):
    """Each kernel sealed into a part of its own: the second declares the first's worker,
    made external when its part was sealed, and both kernels compute x * 2."""
    monkeypatch.setattr(codegen_model, "PART_BUDGET", 1)
    target = host_target(2)
    sealed = []
    parts = codegen_model.ModuleParts(None, target, "shared", sealed.append)
    for name, factor in (("k_a", 2.0), ("k_b", 2.0), ("k_c", 3.0)):
        parts.add(KernelEmitter(parts.module, scale_kernel(name, factor), target.threads, parts).emit())
    texts = "\n".join(sealed)
    assert re.findall(r"define \w* ?void @\"?(k_\w\.par\d+)", texts) == ["k_a.par1", "k_c.par1"]
    assert 'declare void @"k_a.par1"' in sealed[1]
    ensure_pool()
    tm = target_machine(target)
    modules = []
    for text in sealed:        # kernels are external once sealed: callable here
        mod = llvm.parse_assembly(text)
        mod.verify()
        modules.append(mod)
    engine = llvm.create_mcjit_compiler(modules[0], tm)
    for mod in modules[1:]:
        engine.add_module(mod)
    engine.finalize_object()
    x = np.arange(64, dtype=np.float32)
    for name, factor in (("k_a", 2), ("k_b", 2), ("k_c", 3)):
        y = np.zeros(64, np.float32)
        fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(
            engine.get_function_address(name))
        fn(x.ctypes.data, y.ctypes.data, 2)
        np.testing.assert_array_equal(y, x * factor)
