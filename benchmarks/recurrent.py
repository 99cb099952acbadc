"""Recurrent cells, nutshell vs onnxruntime: an ONNX LSTM / GRU / RNN node (random
weights, built with onnx.helper: no torch) at a given sequence length, batch and
width, compiled by nutshell (a plain LSTM as one LSTMSequence kernel, GRU / RNN unrolled
into per-step GEMMs and fused gate loops)
and run by onnxruntime's own recurrent kernels.

    python benchmarks/recurrent.py [--cells LSTM GRU] [--seq 32] [--batch 8] [--size 64]
                                   [--hidden 128] [--bidirectional] [--threads 1 2] [--repeat 60]

Prints median latencies, their ratio (below 1: nutshell is faster), the cold
compile time and the largest difference between the two."""
import argparse
import os
import time
import warnings

import numpy as np
from onnx import TensorProto, helper, numpy_helper

warnings.filterwarnings("ignore")
os.environ.setdefault("NUTSHELL_CACHE", "0")        # cold compile times

import nutshell as ns  # noqa: E402
from nutshell.bench import alternating_medians, ort_session  # noqa: E402

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def cell_model(op, seq, batch, size, hidden, directions):
    """ONNX bytes of one cell node whose weights are initializers."""
    rng = np.random.default_rng(0)
    g, bound = GATES[op], 1.0 / np.sqrt(hidden)
    weights = {"W": (directions, g * hidden, size), "R": (directions, g * hidden, hidden),
               "B": (directions, 2 * g * hidden)}
    inits = [numpy_helper.from_array(rng.uniform(-bound, bound, s).astype(np.float32), n)
             for n, s in weights.items()]
    outs = ["Y", "Y_h"]
    attrs = {"hidden_size": hidden, "direction": "bidirectional" if directions == 2 else "forward"}
    if op == "GRU":
        attrs["linear_before_reset"] = 1          # PyTorch's GRU, what exporters write
    node = helper.make_node(op, ["X", "W", "R", "B"], outs, **attrs)
    shapes = {"Y": (seq, directions, batch, hidden), "Y_h": (directions, batch, hidden)}
    graph = helper.make_graph([node], op.lower(), [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, (seq, batch, size))], [helper.make_tensor_value_info(
            o, TensorProto.FLOAT, shapes[o]) for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=["LSTM", "GRU"], choices=list(GATES))
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeat", type=int, default=60)
    args = p.parse_args(argv)
    x = np.random.default_rng(1).standard_normal((args.seq, args.batch, args.size)).astype(np.float32)
    print(f"{'cell':<6} {'threads':>7} {'nutshell ms':>12} {'ort ms':>10} {'ratio':>7} {'compile s':>10} {'max err':>9}")
    for op in args.cells:
        data = cell_model(op, args.seq, args.batch, args.size, args.hidden, 2 if args.bidirectional else 1)
        for threads in args.threads:
            t = time.perf_counter()
            compiled = ns.compile(ns.load_onnx(data), threads=threads)
            compile_s = time.perf_counter() - t
            sess = ort_session(data, threads)
            ours, theirs = alternating_medians(lambda: compiled.run({"X": x}), lambda: sess.run(None, {"X": x}),
                                               args.repeat)
            err = max(float(np.abs(a - b).max()) for a, b in
                      zip(compiled.run({"X": x}).values(), sess.run(None, {"X": x})))
            print(f"{op:<6} {threads:>7} {ours * 1e3:>12.3f} {theirs * 1e3:>10.3f} {ours / theirs:>7.2f} "
                  f"{compile_s:>10.2f} {err:>9.2e}", flush=True)


if __name__ == "__main__":
    main()
