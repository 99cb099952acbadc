"""Compile time: cold (an empty cache) and warm (the same graph again, from the
on-disk cache keyed by graph, options and CPU).

    python benchmarks/compile_time.py [--models resnet50 resnet18 lenet5] [--threads 2] [--json out.json]
    python benchmarks/compile_time.py --training resnet18 [--threads 2] [--repeat 3]

`load` is reading the ONNX bytes into a graph (not part of either compile).

--training NET times ns.compile_training of a training_nets.py step (ResNet-18:
CIFAR, batch 32, SGD with momentum, as benchmarks/training.py) in fresh
processes: `cold` with an empty cache, `cached` a new process that finds the
whole-step entry the cold one stored. Each figure is the compile_training call,
wall and CPU seconds (the process and its children: the parallel LLVM parts),
with the load average at the time (a shared machine inflates wall time, CPU
time much less); `parent` is the compiling process's own CPU (its critical path
on an idle machine); `import` is `import nutshell`, outside both."""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")

NETS = {"resnet18": "resnet18_cifar"}


def cpu_seconds(who=None):
    """User + system seconds of this process and its waited-for children (or `who`'s only)."""
    used = [resource.getrusage(w) for w in ([who] if who is not None else [resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN])]
    return sum(u.ru_utime + u.ru_stime for u in used)


def training_child(net, threads):
    """In a fresh process: time import nutshell and one compile_training; JSON on stdout."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    import nutshell as ns
    import training_nets
    t1, c1 = time.perf_counter(), cpu_seconds()
    ns.manual_seed(0)
    module, inputs, targets = getattr(training_nets, NETS[net])(ns)
    module.state_dict()             # weights drawn now (they are lazy): building the net, not compiling it
    t2, c2, own2 = time.perf_counter(), cpu_seconds(), cpu_seconds(resource.RUSAGE_SELF)
    trainer = ns.compile_training(module, example_inputs=inputs[0], example_targets=targets,
                                  optimizer=ns.optim.SGD(lr=0.01, momentum=0.9), threads=threads)
    t3, c3, own3 = time.perf_counter(), cpu_seconds(), cpu_seconds(resource.RUSAGE_SELF)
    trainer.step(inputs[0], targets)            # it runs
    print(json.dumps(dict(import_s=t1 - t0, import_cpu_s=c1 - c0, compile_s=t3 - t2, compile_cpu_s=c3 - c2,
                          parent_cpu_s=own3 - own2,
                          from_cache=trainer.model.code.llvm_ir is None, load=os.getloadavg()[0])))


def training_rows(net, threads, repeat):
    """(cold, cached) rows per repeat, each in a fresh process; the cache a new temp dir per repeat."""
    rows = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUTSHELL_CACHE_DIR=cache)
            env.pop("NUTSHELL_CACHE", None)
            for kind in ("cold", "cached"):
                run = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-training", net,
                                      "--threads", str(threads)], env=env, capture_output=True, text=True)
                if run.returncode != 0:
                    raise RuntimeError(f"{kind} compile of {net} failed:\n{run.stderr[-3000:]}")
                row = dict(json.loads(run.stdout.strip().splitlines()[-1]), net=net, kind=kind, threads=threads)
                assert row["from_cache"] == (kind == "cached"), row
                rows.append(row)
                print(f"{net:<10} {kind:<7} {row['compile_s']:>7.2f} {row['compile_cpu_s']:>7.2f} "
                      f"{row['parent_cpu_s']:>8.2f} {row['import_s']:>8.2f} {row['load']:>6.2f}", flush=True)
    return rows


def model_rows(names, threads):
    import nutshell as ns
    from models import MODELS, export_isolated as export  # noqa: F401
    rows = []
    print(f"{'model':<12} {'load s':>7} {'cold s':>7} {'cached s':>9} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NUTSHELL_CACHE_DIR"] = cache
        for name in names:
            model_bytes, _ = export(name)
            t0 = time.perf_counter()
            graph = ns.load_onnx(model_bytes)
            t1 = time.perf_counter()
            ns.compile(graph, threads=threads)
            t2 = time.perf_counter()
            warm = ns.compile(graph, threads=threads)
            t3 = time.perf_counter()
            assert warm.code.llvm_ir is None, "the second compile should come from the cache"
            row = dict(model=name, threads=threads, load_s=t1 - t0, cold_s=t2 - t1, cached_s=t3 - t2)
            rows.append(row)
            print(f"{name:<12} {t1 - t0:>7.2f} {t2 - t1:>7.2f} {t3 - t2:>9.3f} {(t2 - t1) / (t3 - t2):>8.0f}x",
                  flush=True)
    return rows


def main(argv=None):
    from models import MODELS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "resnet18", "lenet5"], choices=list(MODELS))
    p.add_argument("--training", choices=list(NETS), help="time compile_training of this net instead")
    p.add_argument("--child-training", choices=list(NETS), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="with --training: cold+cached pairs")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.child_training:
        return training_child(args.child_training, args.threads)
    if args.training:
        print(f"{'net':<10} {'kind':<7} {'wall s':>7} {'cpu s':>7} {'parent':>8} {'import s':>8} {'load':>6}")
        rows = training_rows(args.training, args.threads, args.repeat)
    else:
        rows = model_rows(args.models, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
