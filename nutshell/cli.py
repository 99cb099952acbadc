"""The `nutshell` command line (also `python -m nutshell`)."""
import argparse
import os
import sys
import time

import numpy as np


def _load(path, threads):
    import nutshell as ns
    return ns.compile(ns.load_onnx(path), threads=threads)


def _write_new(folder, filename, text):
    """folder/filename as a new file: an existing entry (a symlink or hard link
    leading elsewhere) is removed, never written through (BAD_INPUTS row 5)."""
    from nutshell.compiler.errors import CompileError
    path = os.path.join(os.path.realpath(folder), filename)
    try:
        if os.path.lexists(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise CompileError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)


def cmd_compile(args):
    import nutshell as ns
    from nutshell.api import c_identifier
    if args.target != "host":
        raise ns.CompileError(f"--target {args.target} is not available yet (host only)")
    name = c_identifier(args.name or os.path.splitext(os.path.basename(args.model))[0])
    t = time.perf_counter()
    model = ns.compile(ns.load_onnx(args.model), threads=args.threads, name=name,
                       print_after=tuple(args.print_after or ()))
    written = model.export(args.output, name=name, target_cpu=args.target_cpu, triple=args.triple)
    if args.emit_llvm:
        for ext, kind in ((".ll", "llvm"), (".s", "asm")):
            _write_new(os.path.dirname(written["header"]), name + ext, model.source(kind))
    files = [written[k] for k in ("header", "object", "shared") if k in written]
    print(f"compiled {args.model} in {time.perf_counter() - t:.2f} s: " + ", ".join(files))
    print(f"code {written['object_bytes'] - written['weights_bytes']:,} bytes beside "
          f"{written['weights_bytes']:,} bytes of weights")


def cmd_run(args):
    model = _load(args.model, args.threads)
    feeds = {}
    for item in args.input or []:
        if "=" not in item:
            raise SystemExit(f"--input takes NAME=FILE.npy, got '{item}'")
        name, path = item.split("=", 1)
        feeds[name] = np.load(path)
    if not feeds and len(model.inputs) == 1 and args.random:
        v = model.inputs[0]
        feeds[v.name] = np.random.default_rng(0).standard_normal(v.type.shape).astype(v.type.dtype.numpy)
    outputs = model.run(feeds)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)} min {value.min():.6g} max {value.max():.6g}"
              + (f" argmax {value.reshape(value.shape[0], -1).argmax(1)[:10].tolist()}"
                 if value.ndim == 2 else ""))
    if args.save:
        np.savez(args.save, **outputs)
        print(f"saved {args.save}")


def cmd_info(args):
    import nutshell as ns
    from nutshell.frontends.onnx_import import read_model
    from nutshell.info import graph_stats, unsupported_ops
    proto, _ = read_model(args.model)
    missing = unsupported_ops(proto)
    if missing:
        print("unsupported ops: " + ", ".join(f"{op} (opset {v})" for op, v in missing))
        return 1
    loaded = ns.load_onnx(args.model)
    stats = graph_stats(loaded)                 # the model as written
    graph = ns.optimize_graph(loaded)           # ... and as it compiles
    opsets = ", ".join(f"{i.domain or 'ai.onnx'} {i.version}" for i in proto.opset_import)
    print(f"model: {args.model} (ir_version {proto.ir_version}; opsets: {opsets})")
    for name, t in stats["inputs"]:
        print(f"input  {name}: {t}")
    for name, t in stats["outputs"]:
        print(f"output {name}: {t}")
    print(f"parameters: {stats['parameters']:,}")
    print(f"FLOPs per run: {stats['flops']:,}")
    print("ops: " + ", ".join(f"{op} x{n}" for op, n in stats["ops"].most_common()))
    fused = graph_stats(graph)["ops"]
    print("after folding and fusion: " + ", ".join(f"{op} x{n}" for op, n in fused.most_common()))
    if args.compile:
        model = ns.compile(graph, threads=args.threads)
        plan = model.code.plan
        print(f"kernels: {len(model.lowered().kernels)} distinct, {model.code.num_calls} calls; arena "
              f"{plan.arena_size:,} bytes (liveness lower bound {plan.lower_bound:,})")
    return 0


def cmd_bench(args):
    from nutshell.bench import bench_onnx
    for line in bench_onnx(args.model, threads=args.threads, repeat=args.repeat):
        print(line)


def cmd_demo(args):
    from nutshell.demo import run_demo
    run_demo(threads=args.threads, plot=args.plot, compare_torch=not args.no_torch)


def build_parser():
    p = argparse.ArgumentParser(prog="nutshell", description="A neural-network graph compiler: "
                                "ONNX or the Python DSL in, SIMD machine code out.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile an ONNX model ahead of time: NAME.h, NAME.o, libNAME.so")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--name", help="C identifier for the model (default: the file's stem)")
    c.add_argument("--threads", type=int)
    c.add_argument("--target", default="host", choices=["host", "cuda"])
    c.add_argument("--target-cpu", help="emit for this CPU (x86-64-v3, x86-64-v4, znver4, generic, ...)")
    c.add_argument("--triple", help="emit an object for another machine (aarch64-linux-gnu, ...)")
    c.add_argument("--emit-llvm", action="store_true", help="also write NAME.ll and NAME.s")
    c.add_argument("--print-after", action="append", metavar="PASS",
                   help="print the IR after this pass ('all' for every pass)")
    c.set_defaults(fn=cmd_compile)
    r = sub.add_parser("run", help="run an ONNX model on .npy inputs")
    r.add_argument("model")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    r.add_argument("--save", metavar="OUT.npz")
    r.add_argument("--threads", type=int)
    r.add_argument("--random", action="store_true", help="feed a random input if none is given")
    r.set_defaults(fn=cmd_run)
    i = sub.add_parser("info", help="ops, parameters, FLOPs and unsupported ops of a model")
    i.add_argument("model")
    i.add_argument("--compile", action="store_true", help="also compile: kernels and arena size")
    i.add_argument("--threads", type=int)
    i.set_defaults(fn=cmd_info)
    b = sub.add_parser("bench", help="latency, beside onnxruntime when it is installed")
    b.add_argument("model")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--repeat", type=int, default=20)
    b.set_defaults(fn=cmd_bench)
    d = sub.add_parser("demo", help="train LeNet-5 with a compiled training step on real MNIST "
                       "digits, then classify the held-out ones")
    d.add_argument("--threads", type=int)
    d.add_argument("--plot", default="nutshell_demo.png", help="PNG for the loss/accuracy curves")
    d.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv=None):
    from nutshell.compiler.errors import NutshellError
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except NutshellError as exc:
        print(f"nutshell: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
