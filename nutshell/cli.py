"""The `nutshell` command line (also `python -m nutshell`)."""
import argparse
import os
import sys
import time

import numpy as np

SHAPE_HELP = ("fix input NAME's shape, e.g. a symbolic batch dimension: NAME=1,3,224,224 "
              "(repeat for several inputs)")


def _shape_arg(text):
    """argparse type of --input-shape NAME=D1,D2,...: (name, shape)."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(",")) if dims else ()
    except ValueError:
        shape = None
    if not sep or not name or shape is None or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=D1,D2,... with positive dimensions, got '{text}'")
    return name, shape


def _threads_arg(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a thread count of at least 1, got '{text}'")
    return n


def _target_arg(text):
    if text not in ("host", "cuda"):
        raise argparse.ArgumentTypeError(f"'{text}' is not a target: 'host' (the CPU family; --target-cpu "
                                         "and --triple choose the CPU) or 'cuda' (PTX and a C host file)")
    return text


def _pass_names():
    from nutshell.compiler.passes.pipeline import INFERENCE_PIPELINE
    return sorted({p.__name__ for p in INFERENCE_PIPELINE}) + ["all"]


def _load_graph(path, shapes):
    """The model with --input-shape applied; a symbolic dimension names the option."""
    import nutshell as ns
    try:
        graph = ns.load_onnx(path, input_shapes=shapes or None)
    except ns.ShapeError as exc:
        if "symbolic" in str(exc):
            raise ns.ShapeError(f"{exc} (on the command line: --input-shape NAME=D1,D2,...)") from None
        raise
    unknown = sorted(set(shapes or ()) - {v.name for v in graph.inputs})
    if unknown:
        raise ns.InputError(f"--input-shape names {unknown}, but the model's inputs are "
                            f"{[v.name for v in graph.inputs]}")
    return graph


def _compile(path, shapes, **options):
    import nutshell as ns
    return ns.compile(_load_graph(path, shapes), **options)


def cmd_compile(args):
    from nutshell.api import c_identifier
    from nutshell.compiler.errors import CompileError
    from nutshell.runtime.aot import write_new
    name = c_identifier(args.name or os.path.splitext(os.path.basename(args.model))[0])
    t = time.perf_counter()
    if args.target == "cuda":
        return _compile_cuda(args, name, t)
    if args.arch is not None:
        raise CompileError("--arch is for --target cuda")
    model = _compile(args.model, dict(args.input_shape or ()), threads=args.threads, name=name,
                     print_after=tuple(args.print_after or ()))
    written = model.export(args.output, name=name, target_cpu=args.target_cpu, triple=args.triple)
    if args.emit_llvm:
        for ext, kind in ((".ll", "llvm"), (".s", "asm")):
            write_new(os.path.join(os.path.dirname(written["header"]), name + ext), model.source(kind))
    files = [written[k] for k in ("header", "object", "shared") if k in written]
    print(f"compiled {args.model} in {time.perf_counter() - t:.2f} s: " + ", ".join(files))
    print(f"code {written['object_bytes'] - written['weights_bytes']:,} bytes beside "
          f"{written['weights_bytes']:,} bytes of weights")


def _compile_cuda(args, name, t):
    from nutshell.compiler.errors import CompileError
    from nutshell.runtime.cuda import optimize_for_gpu
    given = [flag for flag, value in (("--target-cpu", args.target_cpu), ("--triple", args.triple),
                                      ("--emit-llvm", args.emit_llvm), ("--threads", args.threads)) if value]
    if given:                      # host-code options: not silently dropped
        raise CompileError(f"{', '.join(given)}: for --target host, not --target cuda")
    args.arch = args.arch or "sm_90"
    from nutshell.runtime.cuda_aot import export_cuda
    graph = optimize_for_gpu(_load_graph(args.model, dict(args.input_shape or ())),
                             print_after=tuple(args.print_after or ()))
    written = export_cuda(graph, args.output, name, args.arch)
    files = [written[k] for k in ("ptx", "cubin", "header", "host", "object") if k in written]
    print(f"compiled {args.model} for CUDA {args.arch} in {time.perf_counter() - t:.2f} s: " + ", ".join(files))


def _read_inputs(items):
    """--input NAME=FILE.npy, each read now: a missing or broken file is an InputError."""
    from nutshell.compiler.errors import InputError
    feeds = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise InputError(f"--input takes NAME=FILE.npy, got '{item}'")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"--input {name}: cannot read '{path}' as a .npy array ({exc})") from None
    return feeds


def _symbolic_inputs(path):
    """Names of the model's inputs that have a dimension without a fixed value."""
    from nutshell.frontends.onnx_import import read_model
    proto, _ = read_model(path)
    weights = {t.name for t in proto.graph.initializer}
    return {vi.name for vi in proto.graph.input if vi.name not in weights and (
        not vi.type.tensor_type.HasField("shape") or
        any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim))}


def cmd_run(args):
    feeds = _read_inputs(args.input)
    shapes = dict(args.input_shape or ())
    if set(feeds) - set(shapes):           # a symbolic dimension takes its size from the .npy
        shapes.update({n: feeds[n].shape for n in _symbolic_inputs(args.model) if n in feeds and n not in shapes})
    model = _compile(args.model, shapes, threads=args.threads)
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
    loaded = _load_graph(args.model, dict(args.input_shape or ()))
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
    for line in bench_onnx(args.model, threads=args.threads, repeat=args.repeat,
                           input_shapes=dict(args.input_shape or ()) or None):
        print(line)


def cmd_demo(args):
    from nutshell.demo import run_demo
    run_demo(threads=args.threads, plot=args.plot, compare_torch=not args.no_torch,
             out=lambda line: print(line, flush=True))


def _common(parser, threads_help="worker threads for parallel loops (default: all cores)", **threads):
    parser.add_argument("model", help="the ONNX model file")
    parser.add_argument("--threads", type=_threads_arg, help=threads_help, **threads)
    parser.add_argument("--input-shape", action="append", type=_shape_arg, metavar="NAME=D1,D2,...",
                        help=SHAPE_HELP)


def build_parser():
    from nutshell import __version__
    p = argparse.ArgumentParser(prog="nutshell", description="A neural-network graph compiler: "
                                "ONNX or the Python DSL in, SIMD machine code out.")
    p.add_argument("--version", action="version", version=f"nutshell {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile an ONNX model ahead of time: NAME.h, NAME.o, libNAME.so")
    _common(c)
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--name", help="C identifier for the model (default: the file's stem)")
    c.add_argument("--target", default="host", type=_target_arg,
                   help="what to compile for: 'host', the CPU family, or 'cuda': NAME.ptx, NAME.cubin "
                   "(when ptxas is found), NAME.h and NAME_host.c (CUDA driver API)")
    c.add_argument("--arch", help="GPU architecture for --target cuda (sm_80, sm_90, ...; default sm_90)")
    c.add_argument("--target-cpu", help="emit for this CPU: host, x86-64-v3, x86-64-v4, znver4, znver5, "
                   "skylake-avx512, generic, ... (default: this machine's)")
    c.add_argument("--triple", help="emit an object for another machine (aarch64-linux-gnu, ...)")
    c.add_argument("--emit-llvm", action="store_true", help="also write NAME.ll and NAME.s")
    c.add_argument("--print-after", action="append", metavar="PASS", choices=_pass_names(),
                   help="print the IR after this pass: " + ", ".join(_pass_names()))
    c.set_defaults(fn=cmd_compile)
    r = sub.add_parser("run", help="run an ONNX model on .npy inputs and print a summary of its outputs")
    _common(r)
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input's value (repeat for several); a symbolic dimension takes the file's size")
    r.add_argument("--save", metavar="OUT.npz", help="save every output, by name, in this .npz file")
    r.add_argument("--random", action="store_true", help="feed a random input if none is given")
    r.set_defaults(fn=cmd_run)
    i = sub.add_parser("info", help="ops, parameters, FLOPs and unsupported ops of a model")
    _common(i, "worker threads for --compile")
    i.add_argument("--compile", action="store_true", help="also compile: kernels and arena size")
    i.set_defaults(fn=cmd_info)
    b = sub.add_parser("bench", help="latency, beside onnxruntime when it is installed")
    _common(b, "worker threads for both (default: 1)", default=1)
    b.add_argument("--repeat", type=int, default=20, help="timed runs; the median is reported")
    b.set_defaults(fn=cmd_bench)
    d = sub.add_parser("demo", help="train LeNet-5 with a compiled training step on real MNIST "
                       "digits, then classify the held-out ones")
    d.add_argument("--threads", type=_threads_arg, help="worker threads (default: all cores)")
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
    except OSError as exc:            # an output folder that cannot be written, ...
        print(f"nutshell: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
