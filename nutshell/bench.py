"""Latency of a compiled ONNX model, side by side with onnxruntime when installed."""
import json
import time

import numpy as np


def save_rows(rows, path):
    """A benchmark's result rows, also written as JSON to `path` (its --json) when given."""
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


def latencies(fn, repeat, warmup=3, clock=time.perf_counter):
    """Seconds per call of `fn`, `repeat` calls after `warmup`, by `clock`."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return times


def median_latency(fn, repeat, warmup=3, clock=time.perf_counter):
    return float(np.median(latencies(fn, repeat, warmup, clock)))


def alternating_medians(ours, theirs, repeat, rounds=3):
    """Medians over `rounds` alternating blocks of each: the shared machine's slow
    spells fall on both sides."""
    return tuple(alternating([ours, theirs], repeat, rounds))


def alternating(fns, repeat, rounds=3):
    """Each of `fns`' median seconds per call, over `rounds` blocks taken in turn
    (fns[0], fns[1], ..., fns[0], ...). A pause between blocks lets the previous
    one's spinning worker threads go to sleep first."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            time.sleep(0.3)
            out.extend(latencies(fn, -(-repeat // rounds), warmup=3))
    return [float(np.median(t)) for t in times]


def ort_session(model_bytes_or_path, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])


def bench_onnx(path, threads=1, repeat=20, input_shapes=None):
    import nutshell as ns
    graph = ns.load_onnx(path, input_shapes=input_shapes)
    model = ns.compile(graph, threads=threads)
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(v.type.dtype.numpy) for v in graph.inputs}
    ours = median_latency(lambda: model.run(feeds), repeat)
    lines = [f"nutshell    {ours * 1e3:9.3f} ms  (median of {repeat}, {threads} thread(s))"]
    try:
        sess = ort_session(str(path), threads)
    except ImportError:
        return lines + ["onnxruntime not installed: pip install onnxruntime for the comparison"]
    theirs = median_latency(lambda: sess.run(None, feeds), repeat)
    lines.append(f"onnxruntime {theirs * 1e3:9.3f} ms")
    lines.append(f"ratio nutshell/onnxruntime: {ours / theirs:.2f} (below 1 is faster)")
    return lines
