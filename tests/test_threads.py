"""The thread pool behind parallel loops (compiler/codegen/thread_pool.py): many
callers at once, Python threads and C threads, on a machine kept busy by a spinning
process, all get the single caller's result bit for bit; a forked child still runs;
the default thread count follows the CPUs the process may use."""
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.lower import target as target_mod

SPIN = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"


def parallel_graph():
    """MatMul, Conv and element-wise work big enough for parallel loops, small enough to run fast."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("par", fold=False)
    x = b.add_input("x", "float32", (4, 8, 32, 32))
    w = b.add_constant(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2)
    c = b.add_node("Conv", [x, w], {"pads": [1, 1, 1, 1]})
    r = b.add_node("Relu", [c])
    flat = b.add_node("Reshape", [r, b.add_constant(np.array([64, 1024], np.int64))])
    m = b.add_constant(rng.standard_normal((1024, 256)).astype(np.float32) * 0.03)
    y = b.add_node("Softmax", [b.add_node("MatMul", [flat, m])], {"axis": 1})
    b.set_outputs([y])
    return b.build()


@pytest.fixture(scope="module")
def compiled():
    graph = parallel_graph()
    model = ns.compile(graph, threads=2)
    llvm_ir = model.source("llvm")
    assert "nutshell_parallel" in llvm_ir                    # the loops do run on the pool
    # the call holds the team between its loops, and lets it go before returning
    assert 'call void @"nutshell_pool_hold"' in llvm_ir and 'call void @"nutshell_pool_release"' in llvm_ir
    return graph, model


@pytest.fixture
def spinner():
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    yield proc
    proc.terminate()
    proc.wait()


def test_python_threads_at_once_match_one_caller(compiled, spinner):
    graph, model = compiled
    x = np.random.default_rng(1).standard_normal((4, 8, 32, 32)).astype(np.float32)
    want = model(x)
    np.testing.assert_allclose(want, ns.compile(graph, threads=1)(x), rtol=1e-5, atol=1e-6)
    results, errors = [], []

    def work():
        try:
            for _ in range(8):
                results.append(model(x))
        except Exception as exc:     # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 32
    for got in results:
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_c_threads_and_python_threads_at_once(compiled, spinner, tmp_path):
    from test_aot import build_driver, driver_input
    graph, model = compiled
    model.export(tmp_path, name="par")
    exe = build_driver(tmp_path, "par", tmp_path)
    x = driver_input((4, 8, 32, 32))
    want = model(x)
    alone = subprocess.run([str(exe), "1", "1"], capture_output=True, text=True, timeout=300).stdout
    driver = subprocess.Popen([str(exe), "2", "3"], stdout=subprocess.PIPE, text=True)   # 3 C threads
    py = [model(x) for _ in range(10)]                                                  # meanwhile, Python
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out[-500:]       # the driver checks its threads agree bit for bit
    assert out == alone
    got = np.array([float(v) for v in out.split()], np.float32).reshape(want.shape)
    # the driver builds its input in float arithmetic: an ulp from driver_input's
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for y in py:
        np.testing.assert_array_equal(y, want)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_without_the_parents_workers(compiled):
    """The child has no pool threads; its caller runs every chunk itself."""
    _, model = compiled
    x = np.ones((4, 8, 32, 32), np.float32)
    want = model(x)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if np.array_equal(model(x), want) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_one_thread_model_does_not_touch_the_pool():
    llvm_ir = ns.compile(parallel_graph(), threads=1).source("llvm")
    assert "nutshell_pool_hold" not in llvm_ir and "nutshell_parallel" not in llvm_ir


def test_default_threads_follow_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(target_mod.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(target_mod, "_cgroup_cpu_limit", lambda: None)
    assert target_mod.checked_threads(None) == 3
    monkeypatch.setattr(target_mod, "_cgroup_cpu_limit", lambda: 1.5)     # a container's 1.5 CPUs
    assert target_mod.checked_threads(None) == 2
    monkeypatch.setattr(target_mod, "_cgroup_cpu_limit", lambda: 0.25)
    assert target_mod.checked_threads(None) == 1


TRACE = """
import sys
sys.path[:0] = [{tools!r}, {tests!r}]
import numpy as np, nutshell as ns
from pool_trace import Trace, run
from test_threads import parallel_graph
trace = Trace()
model = ns.compile(parallel_graph(), threads=2)
loops, calls, names, parts = run(trace, model, 2, 3)
x = np.random.default_rng(0).standard_normal((4, 8, 32, 32)).astype(np.float32)
assert np.array_equal(model(x), ns.compile(parallel_graph(), threads=2)(x))
assert names and all(".par" in n for n in names), names
assert all(len(c) == len(names) for n in (1, 2) for c in loops[n])
assert parts.shape == (3, len(names), 4), parts.shape     # calls x loops x (caller, joiner, joined at, wait)
assert (parts[:, :, 0] > 0).all() and (parts[:, :, 3] >= 0).all()   # the caller always runs the loop's function
joined = ~np.isnan(parts[:, :, 2])
assert (parts[:, :, 1][joined] > 0).all() and (parts[:, :, 1][~joined] == 0).all()
print(len(names))
"""


def test_pool_trace_times_every_parallel_loop():
    """tools/pool_trace.py: a recorder around the pool's entry (thread_pool.define's
    wrap_entry) sees each parallel loop of a call, by name, at 1 and 2 threads, and
    times the caller and the joiner inside each loop's function."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = TRACE.format(tools=os.path.join(root, "tools"), tests=os.path.join(root, "tests"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) >= 2        # the conv's and the matmul's at least


def test_pool_trace_sums_loops_by_op():
    """pool_trace's summary: loops summed by their op's function, the largest loss
    (N-thread time less 1-thread time / N) first; a loop no joiner joined adds 0."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import pool_trace
    names = ["main_graph_k1_conv.par1", "main_graph_k2_conv.par1", "main_graph_k3_maxpool.par1"]
    one, many = np.array([[100.0, 0], [60, 0], [10, 0]]), np.array([[70.0, 1], [30, 1], [8, 1]])
    who = np.array([[60.0, 50, 1, 10], [30, 29, 1, 0], [8, np.nan, np.nan, 0]])
    rows = pool_trace.by_op(names, one, many, who, 2)
    assert [r[0] for r in rows] == ["conv.par1", "maxpool.par1"]
    assert rows[0][1:] == [2, 160, 100, 20, 90, 79, 10]
    assert rows[1][1:] == [1, 10, 8, 3, 8, 0, 0]


def test_a_narrow_loop_leaves_no_worker_waiting_unwoken():
    """A 2-thread loop's wake, with 3 workers asleep, must not mark workers SIGNALLED
    that the futex then leaves waiting: later wakes skip SIGNALLED workers, so a
    4-thread loop would run on 2 (the pool's per-worker sleep state, read directly:
    a woken worker is back ASLEEP within microseconds, a skipped one never)."""
    import ctypes
    import time
    from nutshell.compiler.codegen.thread_pool import ASLEEP
    from nutshell.runtime import jit
    jit.ensure_pool()
    engine = jit._POOL[0][0]
    entry = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        engine.get_function_address("nutshell_parallel"))
    address = engine.get_global_value_address
    started = ctypes.c_int32.from_address(address("nutshell_pool.started"))
    job = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(lambda data, slot, team: None)

    def all_asleep():
        state = (ctypes.c_int32 * started.value).from_address(address("nutshell_pool.state"))
        end = time.time() + 5
        while time.time() < end and set(state) != {ASLEEP}:
            time.sleep(0.01)
        return list(state)
    entry(ctypes.cast(job, ctypes.c_void_p), None, 4)      # at least 3 workers
    assert started.value >= 3 and set(all_asleep()) == {ASLEEP}
    entry(ctypes.cast(job, ctypes.c_void_p), None, 2)      # wakes; one joins at most
    assert set(all_asleep()) == {ASLEEP}


def test_grouped_conv_threads_take_whole_groups():
    """RegNet-Y's grouped convs (8 channels a group): each group's GEMM is too small to
    split, so the threads take whole groups; the bits are the one-thread run's."""
    rng = np.random.default_rng(1)
    b = GraphBuilder("grouped", fold=False)
    x = b.add_input("x", "float32", (1, 48, 28, 28))
    w = b.add_constant(rng.standard_normal((48, 8, 3, 3)).astype(np.float32) * 0.2)
    b.set_outputs([b.add_node("Conv", [x, w], {"pads": [1, 1, 1, 1], "group": 6})])
    graph = b.build()
    feeds = {"x": rng.standard_normal((1, 48, 28, 28)).astype(np.float32)}
    want = next(iter(ns.run_reference(graph, feeds).values()))
    one = next(iter(ns.compile(graph, threads=1).run(feeds).values()))
    np.testing.assert_allclose(one, want, rtol=1e-5, atol=1e-5)
    for threads in (2, 3):
        model = ns.compile(graph, threads=threads)
        assert ".par" in model.source("llvm")          # the group loop runs on the pool
        np.testing.assert_array_equal(next(iter(model.run(feeds).values())), one)
