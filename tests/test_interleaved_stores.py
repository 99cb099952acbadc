"""Stores a lowering marks as one interleaved group (Store.interleave: the q-th of k
stores writes index + q, moving by k per lane) and vector stores under a run-time
mask: where the target's table says masked stores are slow (AVX2's), the emitter
stores a group as one vector and tests a run-time mask for all lanes on. Either way
the memory written is exactly what the k separate (masked) stores write."""
import ctypes

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from nutshell.compiler.codegen.kernel_emitter import KernelEmitter
from nutshell.compiler.ir.types import DType
from nutshell.compiler.lower.loop_ir import Buffer, Const, For, Kernel, Store, Var
from nutshell.compiler.lower.target import host_target
from nutshell.runtime.jit import ensure_pool, target_machine

F32 = DType.float32


def run_kernel(kernel, slow, arrays):
    module = ir.Module(name=kernel.name)
    module.triple = llvm.get_process_triple()
    fn = KernelEmitter(module, kernel, 1, None, masked_stores_slow=slow).emit()
    fn.linkage = "external"
    ensure_pool()
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    engine = llvm.create_mcjit_compiler(mod, target_machine(host_target(1, 256)))
    engine.finalize_object()
    call = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(arrays), ctypes.c_int32)(
        engine.get_function_address(kernel.name))
    call(*[a.ctypes.data for a in arrays], 1)
    return str(module)


def interleaved_kernel(k, n, limit, order=None):
    """y[k*i + q] = x[i] + q for i < n, where k*i + q < limit (y's other elements untouched)."""
    x, y, i = Buffer("x", F32, n), Buffer("y", F32, k * n + 8), Var("i")
    stores = [Store(y, i * k + q, x[i] + Const(float(q), F32), mask=i * k + q < limit, interleave=(q, k))
              for q in (order or range(k))]
    return Kernel(f"inter{k}", [x, y], [For(i, n, stores, "vector", lanes=8)])


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("n, limit", [(24, 48), (13, 20), (5, 9), (16, 7)])
@pytest.mark.parametrize("slow", [False, True])
def test_interleaved_group_writes_what_separate_stores_write(k, n, limit, slow):
    x = np.arange(n, dtype=np.float32) * 10
    y = np.full(k * n + 8, -1.0, np.float32)
    text = run_kernel(interleaved_kernel(k, n, limit), slow, [x, y])
    want = np.full_like(y, -1.0)
    for q in range(k):
        idx = np.arange(n) * k + q
        keep = idx < limit
        want[idx[keep]] = x[keep] + q
    np.testing.assert_array_equal(y, want)
    assert ("llvm.vector.reduce.and" in text) == (slow and n >= 8)     # full vectors tested for all-on


def test_stores_out_of_phase_order_stay_separate():
    x = np.arange(16, dtype=np.float32)
    y = np.full(40, -1.0, np.float32)
    run_kernel(interleaved_kernel(2, 16, 40, order=[1, 0]), True, [x, y])
    np.testing.assert_array_equal(y[:32:2], x)
    np.testing.assert_array_equal(y[1:32:2], x + 1)


@pytest.mark.parametrize("slow", [False, True])
def test_contiguous_store_under_run_time_mask(slow):
    """y[i] = x[i] where x[i] > 0: vectors all on, all off and mixed."""
    x = np.concatenate([np.ones(16), -np.ones(8), np.tile([1.0, -1.0], 4), np.ones(3)]).astype(np.float32)
    y = np.zeros_like(x)
    buf_x, buf_y, i = Buffer("x", F32, x.size), Buffer("y", F32, x.size), Var("i")
    kernel = Kernel("where_positive", [buf_x, buf_y],
                    [For(i, x.size, [Store(buf_y, i, buf_x[i], mask=buf_x[i] > Const(0.0, F32))], "vector", lanes=8)])
    run_kernel(kernel, slow, [x, y])
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
