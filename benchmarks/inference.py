"""Inference latency, nutshell vs onnxruntime, side by side in one run.

    python benchmarks/inference.py [--models lenet5 resnet18] [--threads 1 2] [--repeat 20] [--json out.json]
    python benchmarks/inference.py --torchvision      # torchvision's architectures too (needs torchvision)

Prints one row per model and thread count: median latency of each (after warm-up)
and the ratio nutshell/onnxruntime (below 1: nutshell is faster)."""
import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")

import nutshell as ns  # noqa: E402
from nutshell.bench import alternating_medians, ort_session, save_rows  # noqa: E402
from models import MODELS, TORCHVISION, export_isolated as export  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--torchvision", action="store_true", help="the torchvision architectures")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.torchvision:
        args.models = TORCHVISION
    rows = []
    print(f"{'model':<12} {'threads':>7} {'nutshell ms':>12} {'ort ms':>10} {'ratio':>7} {'compile s':>10} {'max err':>9}")
    for name in args.models:
        model_bytes, shape = export(name)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for threads in args.threads:
            t = time.perf_counter()
            compiled = ns.compile(ns.load_onnx(model_bytes), threads=threads)
            compile_s = time.perf_counter() - t
            sess = ort_session(model_bytes, threads)
            # alternating blocks: the machine's slow spells fall on both sides
            ours, theirs = alternating_medians(lambda: compiled(x), lambda: sess.run(None, {"input": x}),
                                               args.repeat)
            err = float(np.abs(compiled(x) - sess.run(None, {"input": x})[0]).max())
            del compiled, sess
            row = dict(model=name, batch=shape[0], threads=threads, nutshell_ms=ours * 1e3,
                       ort_ms=theirs * 1e3, ratio=ours / theirs, compile_s=compile_s, max_abs_err=err,
                       repeat=args.repeat)
            rows.append(row)
            print(f"{name:<12} {threads:>7} {ours * 1e3:>12.3f} {theirs * 1e3:>10.3f} "
                  f"{ours / theirs:>7.2f} {compile_s:>10.2f} {err:>9.2e}", flush=True)
    for threads in args.threads:
        ratios = [r["ratio"] for r in rows if r["threads"] == threads]
        if ratios:
            print(f"geometric mean of the ratios at {threads} thread(s): "
                  f"{float(np.exp(np.mean(np.log(ratios)))):.2f} over {len(ratios)} models, "
                  f"max {max(ratios):.2f}")
    return save_rows(rows, args.json)


if __name__ == "__main__":
    main()
