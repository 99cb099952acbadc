"""Where the time goes: every node of an optimised model compiled and timed alone.

    python tools/profile_ops.py MODEL.onnx [--threads 1] [--repeat 10] [--top 25]
    python tools/profile_ops.py --bench resnet50        # a model of benchmarks/models.py
    python tools/profile_ops.py --training cnn_bn       # a training step of benchmarks/training.py
    python tools/profile_ops.py --training unet --cpu   # CPU time: a loaded machine's waits left out

Prints the nodes by time with their GFLOP/s (Conv and its gradients, Gemm, MatMul) and the sum by op.
A node alone runs on cold inputs, so the sum is a little above the model's latency."""
import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import nutshell as ns  # noqa: E402
from nutshell.api import optimize_graph  # noqa: E402
from nutshell.bench import median_latency  # noqa: E402
from nutshell.compiler.ir.graph import GraphBuilder  # noqa: E402


def cpu_median(fn, repeat):
    """Median CPU seconds of this process per call: on a machine shared by more
    busy processes than cores, the time spent waiting for a core drops out
    (meaningful at one thread; at more, spinning workers count too)."""
    return median_latency(fn, repeat, clock=time.process_time)


def node_graph(graph, node):
    b = GraphBuilder(f"{node.op.lower()}_alone", fold=False)
    names = []
    for i, name in enumerate(node.inputs):
        if not name:
            names.append("")
        elif name in graph.constants:
            names.append(b.add_constant(graph.constants[name], f"c{i}"))
        else:
            t = graph.types[name]
            names.append(b.add_input(f"x{i}", t.dtype, t.shape))
    outs = b.add_node(node.op, names, dict(node.attrs), num_outputs=len(node.outputs))
    b.set_outputs([outs] if isinstance(outs, str) else list(outs))
    return b.build()


def signature(graph, node):
    """Nodes that compile to the same kernel: op, attributes, input shapes and constness."""
    return (node.op, repr(sorted(node.attrs.items(), key=lambda kv: kv[0])),
            tuple((graph.types[i].shape, i in graph.constants) if i else None for i in node.inputs))


def flops(graph, node):
    out = graph.types[node.outputs[0]]
    if node.op == "Conv":
        w = graph.types[node.inputs[1]].shape
        return 2 * out.size * int(np.prod(w[1:]))
    if node.op in ("ConvGradInput", "ConvGradWeight"):     # the forward's multiply-adds, dY its output
        dy = graph.types[node.inputs[0 if node.op == "ConvGradInput" else 1]]
        w = graph.types[node.inputs[1]].shape if node.op == "ConvGradInput" else node.attrs["weight_shape"]
        return 2 * dy.size * int(np.prod(w[1:]))
    if node.op == "ConvBlocked":     # real channels only, not the last block's padding
        kh, kw = node.attrs["kernel_shape"]
        pixels = out.size // (out.shape[1] * out.shape[4])
        reach = kh * kw if node.attrs["depthwise"] else node.attrs["channels"]
        return 2 * pixels * node.attrs["out_channels"] * reach
    if node.op in ("Gemm", "MatMul"):
        a = graph.types[node.inputs[0]].shape
        k = a[0] if node.op == "Gemm" and node.attrs.get("transA") else a[-1]
        return 2 * out.size * k
    return 0


def training_graph(name):
    """The training-step Graph of a benchmarks/training.py case, built as compile_training does."""
    from training import CASES
    from nutshell.training import Recipe, as_optimizer, build_training_graph
    build, (optimizer, _) = CASES[name]
    module, inputs, targets = build(ns)
    recipe = Recipe(module, None, inputs if len(inputs) > 1 else inputs[0], targets, "cross_entropy", {})
    return build_training_graph(recipe, as_optimizer(optimizer()))[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?")
    p.add_argument("--bench")
    p.add_argument("--training")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--cpu", action="store_true", help="time with the process's CPU time, not wall time")
    args = p.parse_args(argv)
    if args.training:
        graph = optimize_graph(training_graph(args.training))
    else:
        if args.bench:
            from models import export_isolated as export
            source = export(args.bench)[0]
        else:
            source = args.model
        graph = optimize_graph(ns.load_onnx(source))
    rng = np.random.default_rng(0)
    timer = cpu_median if args.cpu else median_latency
    kinds, by_op = {}, collections.Counter()
    for node in graph.nodes:       # an unrolled recurrence repeats its step: each kind timed once
        key = signature(graph, node)
        if key not in kinds:
            single = node_graph(graph, node)
            model = ns.compile(single, threads=args.threads)
            feeds = {v.name: rng.uniform(0.5, 1.5, v.type.shape).astype(v.type.dtype.numpy)
                     if v.type.dtype.is_float else np.zeros(v.type.shape, v.type.dtype.numpy)
                     for v in single.inputs}      # positive: a sqrt or log on its own stays finite
            kinds[key] = [timer(lambda: model.run(feeds), args.repeat), node, 0]
        kinds[key][2] += 1
        by_op[node.op] += kinds[key][0]
    rows = [(seconds * count, seconds, count, node) for seconds, node, count in kinds.values()]
    total = sum(r[0] for r in rows)
    print(f"{'ms':>8} {'%':>5} {'GF/s':>6} {'count':>5}  node (the first of its kind)")
    for seconds, each, count, node in sorted(rows, key=lambda r: -r[0])[:args.top]:
        shapes = " ".join(str(graph.types[i].shape) for i in node.inputs if i)
        f = flops(graph, node)
        rate = f"{f / each / 1e9:6.1f}" if f else " " * 6
        print(f"{seconds * 1e3:8.3f} {100 * seconds / total:5.1f} {rate} {count:5d}  {node.op} {node.name} {shapes} "
              f"{dict((k, v) for k, v in node.attrs.items() if v not in (None, 0, 1) and k != 'program')}")
    print(f"\ntotal {total * 1e3:.2f} ms over {len(graph.nodes)} nodes ({len(rows)} kinds); by op:")
    for op, seconds in by_op.most_common():
        print(f"  {op:<20} {seconds * 1e3:8.3f} ms {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
