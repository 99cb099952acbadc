"""Schedule-table variants timed side by side: one model compiled under the target's
table and under tables with some thresholds changed, timed in alternating blocks in
one process (so a busy machine's slow spells fall on every variant).

    python benchmarks/schedules.py --models resnet18 --vector-cap 256 \\
        --variant acc8:blocked_dense_accumulators=8 --variant nchw:blocked_layout=0

Each row: median latency per variant and its ratio to the unchanged table. This is
how compiler/schedule/tables.py's values were chosen (the AVX2 column with
--vector-cap 256 on an AVX-512 host)."""
import argparse
import dataclasses
import os
import time

import numpy as np

import nutshell as ns
from nutshell.compiler.lower.target import host_target
from nutshell.compiler.schedule import tables

from models import MODELS, export_isolated


def _variant(text):
    name, _, assignments = text.partition(":")
    over = {}
    for a in filter(None, assignments.split(",")):
        field, value = a.split("=")
        over[field] = int(value)
    return name, over


def _patched(target, over):
    """Point the module's table for `target` at a changed copy; returns the restore."""
    table = tables.table_for(target)
    attr = next(k for k, v in vars(tables).items() if v is table)
    setattr(tables, attr, dataclasses.replace(table, **{
        k: (bool(v) if isinstance(getattr(table, k), bool) else v) for k, v in over.items()}))
    return lambda: setattr(tables, attr, table)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--vector-cap", type=int, default=512, choices=(512, 256, 32))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", action="append", type=_variant, default=[], metavar="NAME:FIELD=V,...")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    os.environ["NUTSHELL_CACHE"] = "0"        # a patched table must never reach the cache
    target = host_target(args.threads, args.vector_cap)
    variants = [("table", {})] + args.variant
    print(f"table {tables.table_for(target).name}, vector cap {args.vector_cap}, {args.threads} thread(s)")
    for name in args.models:
        data, shape = export_isolated(name)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        compiled = {}
        for vname, over in variants:
            restore = _patched(target, over)
            try:
                compiled[vname] = ns.compile(ns.load_onnx(data), threads=args.threads, vector_cap=args.vector_cap)
            finally:
                restore()
        times = {v: [] for v in compiled}
        for block in range(args.blocks):
            for vname in (list(compiled) if block % 2 == 0 else list(compiled)[::-1]):
                model = compiled[vname]
                model(x)
                runs = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    model(x)
                    runs.append(time.perf_counter() - t)
                times[vname].append(np.median(runs))
        base = np.median(times["table"])
        print(f"{name:<12} " + "  ".join(f"{v} {np.median(t) * 1e3:.2f} ms ({np.median(t) / base:.2f})"
                                         for v, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
