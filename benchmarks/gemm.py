"""Single-thread float32 GEMM: nutshell's generated MatMul vs NumPy's BLAS vs the FMA peak.

    python benchmarks/gemm.py [--sizes 256 512 1024] [--repeat 7] [--json out.json]

The peak is measured, not quoted: a generated kernel that only issues independent
vector FMAs on registers (the widest vectors this CPU has). BLAS is
pinned to one thread through the environment before NumPy loads."""
import os
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import nutshell as ns  # noqa: E402
from nutshell.bench import median_latency, save_rows  # noqa: E402
from nutshell.compiler.ir.graph import GraphBuilder  # noqa: E402
from nutshell.compiler.ir.types import DType  # noqa: E402
from nutshell.compiler.lower.target import host_target  # noqa: E402
from nutshell.runtime.jit import JitModule  # noqa: E402


def fma_peak_gflops(iterations=20_000_000, vector_cap=512):
    """GFLOP/s of a loop of independent FMAs on full-width vectors: 24 accumulators
    with AVX-512's 32 registers, 12 with AVX2's 16 (enough to cover the latency)."""
    target = host_target(1, vector_cap)
    lanes = target.lanes(DType.float32)
    accumulators = 24 if lanes >= 16 else 12
    vt = f"<{lanes} x float>"
    lines = [f"define float @peak(i64 %n, float %x0, float %y0) {{", "entry:",
             f"  %xi = insertelement {vt} poison, float %x0, i64 0",
             f"  %x = shufflevector {vt} %xi, {vt} poison, <{lanes} x i32> zeroinitializer",
             f"  %yi = insertelement {vt} poison, float %y0, i64 0",
             f"  %y = shufflevector {vt} %yi, {vt} poison, <{lanes} x i32> zeroinitializer",
             "  br label %loop", "loop:",
             "  %i = phi i64 [0, %entry], [%i1, %loop]"]
    for a in range(accumulators):
        lines.append(f"  %a{a} = phi {vt} [zeroinitializer, %entry], [%b{a}, %loop]")
    x, y = f"{vt} %x", f"{vt} %y"     # run-time values: nothing folds
    for a in range(accumulators):
        lines.append(f"  %b{a} = call {vt} @llvm.fma.v{lanes}f32({x}, {y}, {vt} %a{a})")
    lines += ["  %i1 = add i64 %i, 1", "  %c = icmp ult i64 %i1, %n",
              "  br i1 %c, label %loop, label %done", "done:"]
    total = "%b0"
    for a in range(1, accumulators):
        lines.append(f"  %s{a} = fadd {vt} {total}, %b{a}")
        total = f"%s{a}"
    lines += [f"  %r = extractelement {vt} {total}, i64 0", "  ret float %r", "}",
              f"declare {vt} @llvm.fma.v{lanes}f32({vt}, {vt}, {vt})"]
    jit = JitModule("\n".join(lines), target)
    kernel = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)
    peak = kernel(jit.address("peak"))
    peak(iterations // 100, 1.0, 0.5)
    best = min(_timed(lambda: peak(iterations, 1.0, 0.5)) for _ in range(5))
    return 2 * lanes * accumulators * iterations / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def matmul_model(n, threads=1):
    b = GraphBuilder("matmul")
    y = b.add_node("MatMul", [b.add_input("a", DType.float32, (n, n)),
                              b.add_input("b", DType.float32, (n, n))])
    b.set_outputs([y])
    return ns.compile(b.build(), threads=threads)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json")
    args = p.parse_args(argv)
    peak = fma_peak_gflops()
    print(f"measured FMA peak, 1 thread: {peak:.1f} GFLOP/s")
    print(f"{'n':>6} {'nutshell GF/s':>14} {'numpy GF/s':>11} {'% peak':>7} {'vs numpy':>9} {'max err':>9}")
    rows = []
    rng = np.random.default_rng(0)
    for n in args.sizes:
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        model = matmul_model(n)
        err = float(np.abs(model(a, b) - a @ b).max())
        flops = 2.0 * n ** 3
        ours = flops / median_latency(lambda: model(a, b), args.repeat) / 1e9
        blas = flops / median_latency(lambda: a @ b, args.repeat) / 1e9
        rows.append(dict(n=n, threads=1, nutshell_gflops=ours, numpy_gflops=blas, peak_gflops=peak,
                         fraction_of_peak=ours / peak, ratio_vs_numpy=ours / blas, max_abs_err=err,
                         repeat=args.repeat))
        print(f"{n:>6} {ours:>14.1f} {blas:>11.1f} {100 * ours / peak:>6.1f}% {ours / blas:>9.2f} {err:>9.2e}",
              flush=True)
    return save_rows(rows, args.json)


if __name__ == "__main__":
    main()
