"""Compile time: cold (an empty cache) and warm (the same graph again, from the
on-disk cache keyed by graph, options and CPU).

    python benchmarks/compile_time.py [--models resnet50 resnet18 lenet5] [--threads 2] [--json out.json]

`load` is reading the ONNX bytes into a graph (not part of either compile)."""
import argparse
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")

import nutshell as ns  # noqa: E402
from nutshell.bench import save_rows  # noqa: E402
from models import MODELS, export_isolated as export  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "resnet18", "lenet5"], choices=list(MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    print(f"{'model':<12} {'load s':>7} {'cold s':>7} {'cached s':>9} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NUTSHELL_CACHE_DIR"] = cache
        for name in args.models:
            model_bytes, _ = export(name)
            t0 = time.perf_counter()
            graph = ns.load_onnx(model_bytes)
            t1 = time.perf_counter()
            ns.compile(graph, threads=args.threads)
            t2 = time.perf_counter()
            warm = ns.compile(graph, threads=args.threads)
            t3 = time.perf_counter()
            assert warm.code.llvm_ir is None, "the second compile should come from the cache"
            row = dict(model=name, threads=args.threads, load_s=t1 - t0, cold_s=t2 - t1, cached_s=t3 - t2)
            rows.append(row)
            print(f"{name:<12} {t1 - t0:>7.2f} {t2 - t1:>7.2f} {t3 - t2:>9.3f} {(t2 - t1) / (t3 - t2):>8.0f}x",
                  flush=True)
    return save_rows(rows, args.json)


if __name__ == "__main__":
    main()
