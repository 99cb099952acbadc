"""The alternating benchmarks' pause and warm-up (nutshell/bench.py, benchmarks/under_load.py):
each side's block starts once the other's threads are idle and is timed only after
SWITCH_WARMUP_S of untimed calls, so neither side is timed while its caches re-warm
after the other's block."""
import itertools
import os
import sys
import time

from nutshell import bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import under_load  # noqa: E402


def logged(log, name):
    def fn():
        log.append((name, time.perf_counter()))
        time.sleep(0.002)
    return fn


def blocks(log):
    """[(name, [call start times])] for each run of consecutive calls of one side."""
    return [(name, [t for _, t in run]) for name, run in itertools.groupby(log, key=lambda c: c[0])]


def check_warm(runs, timed, min_calls):
    for _, starts in runs:
        warm = starts[:-timed]
        assert len(warm) >= min_calls and starts[-timed] - warm[0] >= bench.SWITCH_WARMUP_S


def test_warm_up_runs_the_calls_and_the_time_whichever_is_longer():
    log = []
    bench.warm_up(logged(log, "f"), 3)
    assert len(log) == 3
    start = time.perf_counter()
    bench.warm_up(logged(log, "f"), 1, 0.02)
    assert time.perf_counter() - start >= 0.02 and len(log) >= 3 + 2


def test_bench_alternating_times_each_block_after_its_warm_up():
    log = []
    medians = bench.alternating([logged(log, "a"), logged(log, "b")], repeat=4, rounds=2)
    assert len(medians) == 2
    runs = blocks(log)
    assert [name for name, _ in runs] == ["a", "b", "a", "b"]
    check_warm(runs, timed=2, min_calls=3)


def test_under_load_alternating_times_each_block_after_its_warm_up():
    log = []
    ours, theirs = under_load.alternating(logged(log, "a"), logged(log, "b"), repeat=4, block=2)
    assert len(ours) == len(theirs) == 4
    runs = blocks(log)[2:]          # after each side's two starting calls: two rounds of blocks
    assert [name for name, _ in runs] == ["a", "b", "a", "b"]
    check_warm(runs, timed=2, min_calls=1)


def test_settle_waits_while_another_thread_uses_the_cpu(monkeypatch):
    """ORT's pool spins ~55 ms of CPU after its last run: the pause lasts until the
    process's threads are idle (a fake CPU clock, 5 ms of CPU per reading while busy)."""
    def busy_for(n):
        readings = itertools.count()
        monkeypatch.setattr(bench.time, "process_time", lambda: min(next(readings), n) * 0.005)
        return readings
    readings = busy_for(8)
    start = time.perf_counter()
    bench.settle(0.01, step=0.002)
    assert next(readings) >= 9 and time.perf_counter() - start < 0.5
    busy_for(10 ** 9)
    start = time.perf_counter()
    bench.settle(0.01, most=0.05, step=0.002)      # never idle: it gives up after `most`
    assert 0.05 <= time.perf_counter() - start < 0.5
