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


# A block of calls right after a pause or another library's block starts with cold
# caches, whichever library runs: memory-bound work re-warms over a few passes of its
# working set (an 8 MB sweep after a 50 ms sleep: ~5 us per 64 KB in its first pass,
# 3.5 in the second, 1.8 in the third, 1.0 hot), while a cache-free loop shows no ramp
# (no clock ramp). SqueezeNet's first call after the other's block and 50 ms: +2.0 ms
# ours, +0.8 ms ORT at 2 threads (~8 ms a call; medians of 11 runs), +2.3 and +1.9 ms
# at 1 thread; in another session, at ~2 ms a call, 4.6 4.1 3.4 3.5 3.1 2.4 ms against
# 2.2. So each block is timed after this long of untimed calls, both sides warm again.
SWITCH_WARMUP_S = 0.1


def warm_up(fn, calls, seconds=0.0):
    """Calls `fn` at least `calls` times and until `seconds` (wall clock) have passed."""
    start, n = time.perf_counter(), 0
    while n < calls or time.perf_counter() - start < seconds:
        fn()
        n += 1


def latencies(fn, repeat, warmup=3, clock=time.perf_counter, warmup_s=0.0):
    """Seconds per call of `fn`, `repeat` calls by `clock` after a warm-up of `warmup`
    calls and at least `warmup_s` seconds."""
    warm_up(fn, warmup, warmup_s)
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
    one's spinning worker threads go to sleep first; each block is timed after
    SWITCH_WARMUP_S of untimed calls (3 at least), when its caches are warm again."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            time.sleep(0.3)
            out.extend(latencies(fn, -(-repeat // rounds), warmup=3, warmup_s=SWITCH_WARMUP_S))
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
