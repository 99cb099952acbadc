"""The CUDA backend without a GPU: every kernel of a few models assembles with
ptxas for sm_80 and sm_90, and target="cuda-emulated" (the same kernels run on
the CPU) matches onnxruntime and the NumPy references. Tests that need a GPU
are skipped with the reason where none is present."""
import os

import numpy as np
import pytest

import nutshell as ns
from nutshell.api import to_graph
from nutshell.compiler.cuda.model import build_gpu_model
from nutshell.compiler.cuda.ptx import assemble, compile_ptx, find_ptxas, spills
from nutshell.compiler.cuda.target import cuda_target
from nutshell.runtime.cuda import optimize_for_gpu
from nutshell.runtime.reference import run_reference

from conftest import assert_close, random_feeds, single_op_graph

nn = ns.nn
ARCHES = ("sm_80", "sm_90")
needs_ptxas = pytest.mark.skipif(find_ptxas() is None, reason="ptxas not found (pip install nvidia-cuda-nvcc)")


def _lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 84), nn.Tanh(),
                         nn.Linear(84, 10), nn.Softmax(1)), (2, 1, 28, 28)


def _cnn_bn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.SiLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)), (2, 3, 16, 16)


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 5),
                         nn.LogSoftmax(1)), (3, 1, 8, 8)


NETS = {"lenet": _lenet, "cnn_bn": _cnn_bn, "mlp": _mlp}


def _graph(net_name):
    net, shape = NETS[net_name]()
    net.eval()
    return to_graph(net, shape), shape


@needs_ptxas
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("net_name", sorted(NETS))
def test_ptxas_assembles_every_kernel(net_name, arch):
    graph = optimize_for_gpu(_graph(net_name)[0])
    code = build_gpu_model(graph, cuda_target("cuda", arch), net_name)
    ptx = compile_ptx(code.llvm_ir, arch)
    cubin, report = assemble(ptx, arch, verbose=True)
    assert cubin[:4] == b"\x7fELF"
    kernels = {s.function for s in code.steps}
    assert set(spills(report)) == kernels          # every launch is an entry function


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_emulated_matches_cpu_and_reference(net_name, rng):
    graph, shape = _graph(net_name)
    x = rng.standard_normal(shape).astype(np.float32)
    gpu = ns.compile(graph, target="cuda-emulated")
    got = gpu(x)
    want = run_reference(graph, {graph.inputs[0].name: x})[graph.outputs[0].name]
    assert_close(got, want, rtol=1e-4, atol_scale=1e-5)
    assert_close(got, ns.compile(graph, threads=1)(x), rtol=1e-4, atol_scale=1e-5)


def test_emulated_matches_onnxruntime(rng):
    ort = pytest.importorskip("onnxruntime")
    from onnx_models import conv_block_model
    model = conv_block_model()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = rng.standard_normal([d if isinstance(d, int) else 2 for d in inp.shape]).astype(np.float32)
    want = sess.run(None, {inp.name: x})[0]
    gpu = ns.compile(_load(model), target="cuda-emulated")
    assert_close(gpu.run({inp.name: x})[gpu.outputs[0].name], want, rtol=1e-4, atol_scale=1e-5)


def _load(model):
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        return ns.load_onnx(path)


# single ops whose kernels use the GPU's own math (polynomial exp/log/tanh, pow, erf)
OPS = [("Exp", [(4, 33)], {}), ("Log", [(4, 33)], {}), ("Tanh", [(4, 33)], {}), ("Sigmoid", [(5, 7)], {}),
       ("Erf", [(4, 33)], {}), ("Pow", [(4, 33), (4, 33)], {}), ("Softmax", [(3, 5, 17)], {"axis": -1}),
       ("ReduceMean", [(3, 5, 17)], {"axes": [1], "keepdims": 1}), ("Transpose", [(3, 5, 7)], {"perm": [2, 0, 1]}),
       ("MatMul", [(3, 17, 9), (3, 9, 6)], {}), ("Add", [(3, 1, 7), (5, 1)], {}), ("Sin", [(4, 9)], {}),
       ("Max", [(4, 9), (4, 9)], {}), ("Where", [(4, 9), (4, 9), (4, 9)], {}),
       # shared-memory tiled GEMMs (tiled.py), with edges in every dimension
       ("Conv", [(2, 8, 19, 21), (70, 4, 3, 3), (70,)], {"group": 2, "strides": [2, 2], "pads": [1, 2, 1, 0],
                                                          "dilations": [1, 2]}),
       ("Gemm", [(37, 70), (130, 37), (130,)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}),
       ("MatMul", [(3, 1, 70, 33), (4, 33, 65)], {})]


@pytest.mark.parametrize("op,shapes,attrs", OPS, ids=[f"{o[0]}{len(o[1])}" for o in OPS])
def test_emulated_ops_match_numpy(op, shapes, attrs, rng):
    from nutshell.compiler.ir.types import DType
    specs = [(DType.bool if op == "Where" and i == 0 else DType.float32, s) for i, s in enumerate(shapes)]
    graph = single_op_graph(op, specs, attrs)
    feeds = random_feeds(graph, rng, 0.1 if op in ("Log", "Pow") else -2.0, 3.0)
    want = run_reference(graph, feeds)
    gpu = ns.compile(graph, target="cuda-emulated")
    got = gpu.run(feeds)
    assert _tiled_kernels(gpu) == (len(shapes) > 1 and op in ("Conv", "Gemm", "MatMul") and shapes[0][-1] > 17)
    for name, w in want.items():
        assert_close(got[name], w, rtol=2e-5 if op != "Pow" else 1e-4, atol_scale=1e-6 if len(shapes) < 3 else 1e-5)


def _tiled_kernels(model):
    from nutshell.compiler.cuda.tiled import TiledGemm
    return sum(isinstance(st, TiledGemm) for k in model.code.kernels for st in k.body)


def test_tiled_conv_with_fused_residual_and_relu(rng):
    """A ResNet block: the fusion pass's bias, residual and ReLU in the tiled GEMM's store."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
            self.conv2, self.bn2 = nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
            self.skip = nn.Conv2d(16, 32, 1)

        def forward(self, x):
            y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (y + self.skip(x)).relu()
    net = Block()
    net.eval()
    graph = to_graph(net, (2, 16, 12, 12))
    gpu = ns.compile(graph, target="cuda-emulated")
    assert _tiled_kernels(gpu) == 3
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    want = run_reference(graph, {graph.inputs[0].name: x})[graph.outputs[0].name]
    assert_close(gpu(x), want, rtol=1e-4, atol_scale=1e-5)


def test_unknown_target_and_missing_driver_are_clear_errors():
    graph, _ = _graph("mlp")
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
    graph, shape = _graph(net_name)
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


TRAIN_NETS = {
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), (4, 1, 8, 8)),
    "lenet": (lambda: nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                                    nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 84), nn.ReLU(),
                                    nn.Linear(84, 10)), (2, 1, 28, 28)),
    "cnn_bn": (lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)), (4, 1, 12, 12)),
}


TRAIN_NETS["conv_grads"] = (     # strided, dilated, grouped: ConvGradInput/Weight tiled and direct
    lambda: nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, stride=2, padding=2, dilation=2, groups=2), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.Flatten(), nn.Linear(64 * 8 * 8, 10)),
    (4, 4, 16, 16))


@pytest.mark.parametrize("net_name", sorted(TRAIN_NETS))
def test_emulated_training_step_matches_cpu_trainer(net_name, rng):
    """Three SGD-with-momentum steps (Adam's normalised update would amplify the
    last-bit differences of near-zero gradients into lr-sized ones)."""
    make, shape = TRAIN_NETS[net_name]
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, shape[0])
    start = make().state_dict()
    results = []
    for target in ("cpu", "cuda-emulated"):
        net = make()
        net.load_state_dict(start)
        trainer = ns.compile_training(net, input_shape=shape, optimizer=ns.optim.SGD(lr=0.1, momentum=0.9),
                                      threads=1, target=target)
        results.append(([trainer.step(x, y) for _ in range(3)], trainer.parameters()))
    (cpu_losses, cpu_params), (gpu_losses, gpu_params) = results
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5)
    for name, value in cpu_params.items():
        assert_close(gpu_params[name], value, rtol=1e-4, atol_scale=1e-5)


# benchmarks/inference.py's ResNet-18 (plain torch, no torchvision; one export, ~12 s of
# torch start-up in a child process); its LeNet-5 is the DSL "lenet" above
BENCH_MODELS = ("resnet18",)


@pytest.fixture(scope="module")
def bench_models(tmp_path_factory):
    """name -> ONNX path of the benchmark's torch models, exported once by a child process."""
    pytest.importorskip("torch")
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from models import export_isolated
    out = {}
    for name in BENCH_MODELS:
        path = tmp_path_factory.mktemp("bench") / f"{name}.onnx"
        path.write_bytes(export_isolated(name)[0])
        out[name] = str(path)
    return out


@needs_ptxas
@pytest.mark.parametrize("name", BENCH_MODELS)
def test_benchmark_models_assemble_without_spills(bench_models, name):
    """Every kernel assembles for sm_80 and sm_90; the convolution and GEMM kernels
    use no local memory (no spills)."""
    graph = optimize_for_gpu(ns.load_onnx(bench_models[name]))
    code = build_gpu_model(graph, cuda_target("cuda"), name)
    for arch in ARCHES:
        _, report = assemble(compile_ptx(code.llvm_ir, arch), arch, verbose=True)
        found = spills(report)
        assert set(found) == {s.function for s in code.steps}
        hot = {f: s for f, s in found.items() if "_conv_" in f or "_gemm_" in f or "_matmul_" in f}
        assert hot and all(s == (0, 0) for s in hot.values()), hot


@pytest.mark.parametrize("name", BENCH_MODELS)
def test_benchmark_models_emulated_match_onnxruntime(bench_models, name, rng):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(bench_models[name], providers=["CPUExecutionProvider"])
    graph = ns.load_onnx(bench_models[name])
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs}
    got = ns.compile(graph, target="cuda-emulated").run(feeds)
    for (out, value), want in zip(got.items(), sess.run(None, feeds)):
        assert_close(value, want, rtol=1e-4, atol_scale=1e-5)


@pytest.mark.parametrize("width", [64, 197])
def test_row_reductions_run_on_warps(width, rng):
    """Layer norm's mean and variance and softmax's max and sum: a warp per row
    (shuffle butterflies in the PTX; the emulator combines the lanes' partial
    sums in the butterfly's order)."""
    net = nn.Sequential(nn.LayerNorm(width), nn.Softmax(-1))
    graph = to_graph(net, (3, 5, width))
    gpu = ns.compile(graph, target="cuda-emulated")
    warps = [s for s in gpu.code.steps if s.grid[0] * s.block[0] >= 15 * 32]
    assert len(warps) >= 3, gpu.code.steps
    x = rng.standard_normal((3, 5, width)).astype(np.float32) * 3
    want = run_reference(graph, {graph.inputs[0].name: x})[graph.outputs[0].name]
    assert_close(gpu(x), want, rtol=1e-5, atol_scale=1e-6)
    assert "shfl.sync.bfly" in gpu.source("ptx")


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
    net, shape = _cnn_bn()
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
    net, shape = _cnn_bn()
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
    losses = []
    for target in ("cpu", "cuda"):
        net = make()
        net.load_state_dict(start)
        trainer = ns.compile_training(net, input_shape=shape, optimizer=ns.optim.SGD(lr=0.1, momentum=0.9),
                                      threads=1, target=target)
        losses.append([trainer.step(x, y) for _ in range(3)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_math_nvptx_cannot_lower_is_a_compile_error_not_a_crash():
    """LLVM aborts the process on llvm.exp.f32 for NVPTX ("no libcall available");
    compile_ptx refuses such a module first."""
    from llvmlite import ir
    module = ir.Module()
    module.triple = "nvptx64-nvidia-cuda"
    fn = ir.Function(module, ir.FunctionType(ir.FloatType(), [ir.FloatType()]), name="k")
    exp = ir.Function(module, ir.FunctionType(ir.FloatType(), [ir.FloatType()]), name="llvm.exp.f32")
    b = ir.IRBuilder(fn.append_basic_block())
    b.ret(b.call(exp, [fn.args[0]]))
    with pytest.raises(ns.CompileError, match="llvm.exp.f32"):
        compile_ptx(str(module), "sm_80")
