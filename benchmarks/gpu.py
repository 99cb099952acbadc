"""GPU latency, nutshell target="cuda" vs PyTorch CUDA (eager), and the GPU tests.
Run on a machine with an NVIDIA GPU, cuda-bindings and a CUDA build of torch:

    python benchmarks/gpu.py [--models resnet50-b8 tv:vit_b_16] [--repeat 50] [--json out.json]
    python benchmarks/gpu.py --check --torchvision     # no GPU needed: see check() below

Each model is exported to ONNX by benchmarks/torch_models.py (tv:* needs
torchvision), compiled for the GPU present, checked against cuda-emulated, and
timed beside the same torch module on the GPU (eager, float32, no TF32). Without
a GPU it says so and exits 0. The latency is the whole run(): host-to-device
copy of the input, every launch, and the copy back (torch's is timed the same way)."""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nutshell as ns  # noqa: E402
from nutshell.bench import median_latency, save_rows  # noqa: E402
from models import TORCHVISION, export_isolated as export  # noqa: E402


def _torch_runner(name, shape):
    import torch
    import torch_models         # the module as torch_models.py builds it for the export
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    module = torch_models._torchvision(name)[0] if name.startswith("tv:") else torch_models.MODELS[name][0]()
    module = module.eval().cuda()

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(x).cuda()).cpu().numpy()
    return run


def check(models):
    """Without a GPU: every kernel of each model assembles with ptxas for sm_80 and
    sm_90 (spills counted), and target="cuda-emulated" matches onnxruntime."""
    import onnxruntime as ort
    from nutshell.compiler.cuda.model import build_gpu_model
    from nutshell.compiler.cuda.ptx import assemble, compile_ptx, spills
    from nutshell.compiler.cuda.target import cuda_target
    from nutshell.runtime.cuda import optimize_for_gpu
    rows = []
    print(f"{'model':<24} {'launches':>8} {'spilling':>8} {'emulated s':>10} {'max rel err':>11}")
    for name in models:
        model_bytes, shape = export(name)
        graph = ns.load_onnx(model_bytes)
        code = build_gpu_model(optimize_for_gpu(graph), cuda_target("cuda"), "m")
        spilling = set()
        for arch in ("sm_80", "sm_90"):
            report = assemble(compile_ptx(code.llvm_ir, arch), arch, verbose=True)[1]
            spilling |= {f for f, s in spills(report).items() if s != (0, 0)}
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        want = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        t = time.perf_counter()
        got = ns.compile(graph, target="cuda-emulated")(x)
        seconds = time.perf_counter() - t
        err = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
        rows.append(dict(model=name, launches=len(code.steps), spilling=len(spilling), emulated_s=seconds,
                         max_rel_err=err))
        print(f"{name:<24} {len(code.steps):>8} {len(spilling):>8} {seconds:>10.1f} {err:>11.2e}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50-b8", "tv:vit_b_16"])
    p.add_argument("--torchvision", action="store_true", help="the twelve torchvision architectures")
    p.add_argument("--check", action="store_true", help="ptxas and cuda-emulated vs onnxruntime (no GPU needed)")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.torchvision:
        args.models = TORCHVISION
    if args.check:
        save_rows(check(args.models), args.json)
        return 0
    try:
        from nutshell.runtime.cuda_driver import open_device
        print("GPU:", open_device()[2])
    except ns.CompileError as exc:
        print(f"no GPU here, nothing to measure: {exc}")
        return 0
    rows = []
    print(f"{'model':<16} {'nutshell ms':>12} {'torch ms':>10} {'ratio':>7} {'compile s':>10} {'err vs emulated':>16}")
    for name in args.models:
        model_bytes, shape = export(name)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        t = time.perf_counter()
        gpu = ns.compile(ns.load_onnx(model_bytes), target="cuda")
        compile_s = time.perf_counter() - t
        err = float(np.abs(gpu(x) - ns.compile(ns.load_onnx(model_bytes), target="cuda-emulated")(x)).max())
        ours = median_latency(lambda: gpu(x), args.repeat) * 1e3
        try:
            theirs = median_latency(lambda run=_torch_runner(name, shape): run(x), args.repeat) * 1e3
        except Exception as exc:          # no CUDA torch: our figure alone
            print(f"  (torch on the GPU unavailable: {exc})")
            theirs = float("nan")
        rows.append(dict(model=name, nutshell_ms=ours, torch_ms=theirs, ratio=ours / theirs, compile_s=compile_s,
                         max_abs_err_vs_emulated=err))
        print(f"{name:<16} {ours:>12.3f} {theirs:>10.3f} {ours / theirs:>7.2f} {compile_s:>10.2f} {err:>16.2e}",
              flush=True)
    save_rows(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
