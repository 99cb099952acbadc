"""The CUDA target's host side without a GPU: the driver-API runner and the C host
file of `nutshell compile --target cuda`, each run against a fake driver whose
launches call the emulated kernels; clear errors where no GPU is present, and
the GPU against the emulation where one is."""
import os

import numpy as np
import pytest

import nutshell as ns
from nutshell.api import to_graph
from nutshell.compiler.cuda.model import build_gpu_model
from nutshell.compiler.cuda.ptx import find_ptxas
from nutshell.compiler.cuda.target import cuda_target
from nutshell.runtime.cuda import optimize_for_gpu
from nutshell.runtime.reference import run_reference

from conftest import assert_close
from cuda_nets import NETS, TRAIN_NETS, cnn_bn, net_graph, sgd_steps


def test_unknown_target_and_missing_driver_are_clear_errors():
    graph, _ = net_graph("mlp")
    with pytest.raises(ns.CompileError, match="unknown target"):
        ns.compile(graph, target="tpu")
    if not _gpu_present():       # no bindings, no driver or no GPU: each a clear error
        with pytest.raises(ns.CompileError, match="cuda-bindings|driver|GPU"):
            ns.compile(graph, target="cuda")


def _gpu_present():
    try:
        from cuda.bindings import driver
        err, = driver.cuInit(0)[:1]
        return int(err) == 0 and driver.cuDeviceGetCount()[1] > 0
    except Exception:
        return False


@pytest.mark.skipif(not _gpu_present(), reason="no CUDA GPU and driver (cuda-bindings) on this machine")
@pytest.mark.parametrize("net_name", sorted(NETS))
def test_gpu_matches_emulated(net_name, rng):
    graph, shape = net_graph(net_name)
    x = rng.standard_normal(shape).astype(np.float32)
    assert_close(ns.compile(graph, target="cuda")(x), ns.compile(graph, target="cuda-emulated")(x),
                 rtol=1e-4, atol_scale=1e-5)


def test_cli_compile_target_cuda_writes_ptx_and_host_code(tmp_path, capsys):
    import shutil
    import subprocess
    from nutshell.cli import main
    from onnx_models import conv_block_model
    model = tmp_path / "m.onnx"
    model.write_bytes(conv_block_model().SerializeToString())
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "--target", "cuda", "--arch", "sm_80"]) in (0, None)
    ptx = (out / "m.ptx").read_text()
    assert ".target sm_80" in ptx and ".entry" in ptx
    assert (out / "m.h").exists() and (out / "m_weights.o").exists()
    assert (out / "m.cubin").exists() == (find_ptxas() is not None)
    host = out / "m_host.c"
    assert "m_run(const float *const *inputs" in host.read_text()
    include = "/usr/local/cuda/include"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc and os.path.exists(os.path.join(include, "cuda.h")):      # it compiles against the real cuda.h
        r = subprocess.run([cc, "-c", "-Wall", "-Werror", f"-I{include}", f"-I{out}", str(host), "-o",
                            str(out / "host.o")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


class _FakeDriver:
    """The driver API calls CudaModel makes, on host memory: each launch runs the
    emulated build of the same kernel (same name, same pointer arguments), so the
    host side (plan references, copies, the status word) is checked without a GPU."""

    def __init__(self, jit, steps):
        self.jit, self.nargs, self.buffers, self.launched = jit, {s.function: len(s.args) for s in steps}, {}, []

    def cuCtxSetCurrent(self, ctx):
        return (0,)

    def cuModuleLoadData(self, image):
        assert image.endswith(b"\0")
        return 0, "module"

    def cuModuleGetFunction(self, module, name):
        return 0, name.decode()

    def cuMemAlloc(self, nbytes):
        from nutshell.runtime.model import aligned_empty
        buf = aligned_empty(nbytes, 256)
        self.buffers[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def cuMemFree(self, ptr):
        self.buffers.pop(int(ptr))
        return (0,)

    def cuModuleUnload(self, module):
        return (0,)

    def _copy(self, dst, src, nbytes):
        import ctypes
        ctypes.memmove(int(dst), int(src), int(nbytes))
        return (0,)

    cuMemcpyHtoD = cuMemcpyDtoH = cuMemcpyDtoD = _copy

    def cuMemsetD8(self, ptr, value, nbytes):
        import ctypes
        ctypes.memset(int(ptr), value, nbytes)
        return (0,)

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        import ctypes
        n = self.nargs[function]
        slots = (ctypes.c_void_p * n).from_address(params)
        args = [ctypes.c_void_p.from_address(slots[i]).value for i in range(n)]
        ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * n)(self.jit.address(function))(*args)
        self.launched.append((function, (gx, gy, gz), (bx, by, bz)))
        return (0,)


def test_driver_runner_host_side_with_a_fake_driver(rng):
    from nutshell.runtime.cuda import EmulatedJit
    from nutshell.runtime.cuda_driver import CudaModel
    from nutshell.compiler.lower.target import host_target
    net, shape = cnn_bn()
    net.eval()
    graph = optimize_for_gpu(to_graph(net, shape))
    ptx_code = build_gpu_model(graph, cuda_target("cuda"), "m")
    emulated = build_gpu_model(graph, cuda_target("cuda-emulated"), "m")
    fake = _FakeDriver(EmulatedJit(emulated.llvm_ir, host_target(1)), ptx_code.steps)
    model = CudaModel(graph, ptx_code, "ptx", cuda_target("cuda"), (fake, "ctx", "sm_90"))
    x = rng.standard_normal(shape).astype(np.float32)
    want = run_reference(graph, {graph.inputs[0].name: x})[graph.outputs[0].name]
    assert_close(model(x), want, rtol=1e-4, atol_scale=1e-5)
    assert [f for f, _, _ in fake.launched] == [s.function for s in ptx_code.steps]
    assert len(fake.buffers) == len(ptx_code.constants) + 1      # per-call buffers freed; weights and arena kept


FAKE_LIBCUDA = r"""
/* The driver calls of NAME_host.c on host memory; a launch calls the emulated
   build of the kernel (same name and pointer arguments) from $FAKE_KERNELS. */
#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
extern int fake_nargs(const char *name);
static void *lib;
typedef void (*kernel16)(void *, void *, void *, void *, void *, void *, void *, void *,
                         void *, void *, void *, void *, void *, void *, void *, void *);
CUresult cuInit(unsigned int flags) { lib = dlopen(getenv("FAKE_KERNELS"), RTLD_NOW); return lib ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN; }
CUresult cuDeviceGet(CUdevice *d, int i) { *d = i; return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { *c = (CUcontext)1; return CUDA_SUCCESS; }
CUresult cuCtxPushCurrent(CUcontext c) { return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent(CUcontext *c) { return CUDA_SUCCESS; }
CUresult cuModuleLoadData(CUmodule *m, const void *image) { *m = (CUmodule)1; return strstr((const char *)image, ".entry") ? CUDA_SUCCESS : CUDA_ERROR_INVALID_IMAGE; }
CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) { *f = (CUfunction)dlsym(lib, name); return *f ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND; }
CUresult cuMemAlloc(CUdeviceptr *p, size_t n) { void *q = aligned_alloc(256, (n + 255) / 256 * 256); *p = (CUdeviceptr)q; return q ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY; }
CUresult cuMemFree(CUdeviceptr p) { free((void *)p); return CUDA_SUCCESS; }
CUresult cuMemcpyHtoD(CUdeviceptr d, const void *s, size_t n) { memcpy((void *)d, s, n); return CUDA_SUCCESS; }
CUresult cuMemcpyDtoH(void *d, CUdeviceptr s, size_t n) { memcpy(d, (const void *)s, n); return CUDA_SUCCESS; }
CUresult cuMemcpyDtoD(CUdeviceptr d, CUdeviceptr s, size_t n) { memmove((void *)d, (const void *)s, n); return CUDA_SUCCESS; }
CUresult cuMemsetD8(CUdeviceptr d, unsigned char v, size_t n) { memset((void *)d, v, n); return CUDA_SUCCESS; }
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, CUstream stream, void **params, void **extra) {
    void *a[16] = {0};
    Dl_info info;
    int i, n;
    if (!dladdr((void *)f, &info) || !info.dli_sname || (n = fake_nargs(info.dli_sname)) < 0 || n > 16)
        return CUDA_ERROR_INVALID_HANDLE;
    for (i = 0; i < n; i++) a[i] = *(void **)params[i];
    ((kernel16)(void *)f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12],
                          a[13], a[14], a[15]);
    return CUDA_SUCCESS;
}
"""

APP = r"""
#include <stdio.h>
#include <stdlib.h>
#include "m.h"
int main(int argc, char **argv) {
    static float x[M_INPUT_0_SIZE], y[M_OUTPUT_0_SIZE];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 90;
    fclose(f);
    const float *in[] = {x};
    float *out[] = {y};
    int rc = m_run(in, out, NULL);
    if (rc) { fprintf(stderr, "m_run: %d %s\n", rc, m_error_string(rc)); return rc; }
    f = fopen(argv[2], "wb");
    fwrite(y, sizeof y, 1, f);
    fclose(f);
    return 0;
}
"""


def test_c_host_file_runs_with_a_fake_libcuda(tmp_path, rng):
    """nutshell compile --target cuda's NAME_host.c, built and run: a fake libcuda runs
    the launches on host memory through the emulated kernels (the same names)."""
    import shutil
    import subprocess
    from nutshell.compiler.lower.target import host_target
    from nutshell.runtime.aot import emit_object
    from nutshell.runtime.cuda_aot import export_cuda
    cc, include = shutil.which("cc") or shutil.which("gcc"), "/usr/local/cuda/include"
    if cc is None or not os.path.exists(os.path.join(include, "cuda.h")):
        pytest.skip("needs a C compiler and cuda.h")
    net, shape = cnn_bn()
    net.eval()
    graph = optimize_for_gpu(to_graph(net, shape))
    export_cuda(graph, tmp_path, "m")
    emulated = build_gpu_model(graph, cuda_target("cuda-emulated"), "m_k")       # export_cuda's kernel names
    (tmp_path / "emu.o").write_bytes(emit_object(emulated.module, host_target(1)))
    table = ", ".join(f'{{"{s.function}", {len(s.args)}}}' for s in emulated.steps)
    (tmp_path / "fake.c").write_text(FAKE_LIBCUDA + '#include <string.h>\nstatic const struct { const char *n; int k; } '
                                     f'nargs[] = {{{table}}};\nint fake_nargs(const char *name) {{ unsigned i; '
                                     'for (i = 0; i < sizeof nargs / sizeof nargs[0]; i++) '
                                     'if (!strcmp(nargs[i].n, name)) return nargs[i].k; return -1; }\n')
    (tmp_path / "app.c").write_text(APP)
    run = lambda *cmd: subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=tmp_path)
    r = run(cc, "-shared", "-o", "libemu.so", "emu.o")
    assert r.returncode == 0, r.stderr
    r = run(cc, "-O1", f"-I{include}", "-I.", "app.c", "m_host.c", "m_weights.o", "fake.c", "-o", "app",
            "-ldl", "-lpthread", "-lm")
    assert r.returncode == 0, r.stderr
    x = rng.standard_normal(shape).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    r = subprocess.run([str(tmp_path / "app"), "x.bin", "y.bin"], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, FAKE_KERNELS=str(tmp_path / "libemu.so")))
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "y.bin", np.float32).reshape(graph.outputs[0].type.shape)
    want = run_reference(graph, {graph.inputs[0].name: x})[graph.outputs[0].name]
    assert_close(got, want, rtol=1e-4, atol_scale=1e-5)


def test_training_step_through_the_driver_runner(monkeypatch, rng):
    """compile_training(target="cuda") on the fake driver: the trainer's native call
    goes through CudaModel.call (state in, new state out) and matches the CPU trainer."""
    from nutshell.runtime import cuda_driver
    from nutshell.runtime.cuda import EmulatedJit
    from nutshell.compiler.lower.target import host_target
    original = cuda_driver.CudaModel.__init__

    def with_fake_driver(self, graph, code, ptx, target, device):
        emulated = build_gpu_model(graph, cuda_target("cuda-emulated"), code.entry[:-len("_run")])
        fake = _FakeDriver(EmulatedJit(emulated.llvm_ir, host_target(1)), code.steps)
        original(self, graph, code, ptx, target, (fake, "ctx", "sm_90"))
    monkeypatch.setattr(cuda_driver, "open_device", lambda index=0: (None, "ctx", "sm_90"))
    monkeypatch.setattr(cuda_driver.CudaModel, "__init__", with_fake_driver)
    make, shape = TRAIN_NETS["mlp"]
    x, y = rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, shape[0])
    start = make().state_dict()
    losses = [sgd_steps(make, shape, start, x, y, target)[0] for target in ("cpu", "cuda")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)