"""The CUDA backend without a GPU: every kernel of a few models assembles with
ptxas for sm_80 and sm_90, and target="cuda-emulated" (the same kernels run on
the CPU) matches onnxruntime, the NumPy references and the CPU trainer. The host
side (driver runner, C host file, a real GPU) is tests/test_cuda_host.py."""
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
from cuda_nets import NETS, TRAIN_NETS, net_graph, sgd_steps

nn = ns.nn
ARCHES = ("sm_80", "sm_90")
needs_ptxas = pytest.mark.skipif(find_ptxas() is None, reason="ptxas not found (pip install nvidia-cuda-nvcc)")


@needs_ptxas
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("net_name", sorted(NETS))
def test_ptxas_assembles_every_kernel(net_name, arch):
    graph = optimize_for_gpu(net_graph(net_name)[0])
    code = build_gpu_model(graph, cuda_target("cuda", arch), net_name)
    ptx = compile_ptx(code.llvm_ir, arch)
    cubin, report = assemble(ptx, arch, verbose=True)
    assert cubin[:4] == b"\x7fELF"
    kernels = {s.function for s in code.steps}
    assert set(spills(report)) == kernels          # every launch is an entry function


@pytest.mark.parametrize("net_name", sorted(NETS))
def test_emulated_matches_cpu_and_reference(net_name, rng):
    graph, shape = net_graph(net_name)
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



@pytest.mark.parametrize("net_name", sorted(TRAIN_NETS))
def test_emulated_training_step_matches_cpu_trainer(net_name, rng):
    make, shape = TRAIN_NETS[net_name]
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, shape[0])
    start = make().state_dict()
    cpu_losses, cpu_params = sgd_steps(make, shape, start, x, y, "cpu")
    gpu_losses, gpu_params = sgd_steps(make, shape, start, x, y, "cuda-emulated")
    # a loss near 0 is -log p with p near 1: its error is p's rounding, absolute (a
    # few float32 ulps of 1), not relative (6.40e-6 against 6.38e-6 in a full run)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5, atol=8 * np.finfo(np.float32).eps)
    for name, value in cpu_params.items():
        assert_close(gpu_params[name], value, rtol=1e-4, atol_scale=1e-5)


# benchmarks/inference.py's ResNet-18 (plain torch, no torchvision; one export, ~12 s of
# torch start-up in a child process); its LeNet-5 is cuda_nets' DSL "lenet"
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
