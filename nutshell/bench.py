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
# (no clock ramp). SqueezeNet's first call after the other's block and 50 ms: +2.3 ms
# ours and +1.9 ms ORT at 1 thread (~10 ms a call); at 2 threads, after our block, a
# pause alone or 1-thread ORT's block, +0.6-0.8 ms ours with every loop joined (after
# 2-thread ORT's, more: see `settle`). So each block is timed after this long of
# untimed calls, both sides warm again.
SWITCH_WARMUP_S = 0.1


def settle(least, most=1.0, step=0.01):
    """Sleeps `least` seconds, then on until this process's other threads stop using
    the CPU (under a tenth of a `step` of CPU time in a step) or `most` seconds have
    passed. ONNX Runtime's 2-thread pool spins ~55 ms of CPU after its last run: 60 ms
    on free cores, ~200 ms on a busy machine; after a 50 ms pause it held a core
    through our next call, whose worker then joined 13% of its loops (+4 ms)."""
    start = time.perf_counter()
    time.sleep(least)
    while time.perf_counter() - start < most:
        used = time.process_time()
        time.sleep(step)
        if time.process_time() - used < step / 10:
            return


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
    one's spinning worker threads go to sleep first (`settle`); each block is timed
    after SWITCH_WARMUP_S of untimed calls (3 at least), its caches warm again."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            settle(0.3)
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
