"""Data-parallel training under `mpiexec -n 2` (runtime/distributed.py): two ranks on
the halves of each batch of 64 get the parameters and losses one process gets on
the whole batch, with one gradient bucket or many (bucket_cap_mb) and, with
sync_batchnorm, BatchNorm's running statistics too; fit shards the epoch's
batches; a killed rank ends the job and a hung one trips the watchdog. Each job is bounded by a subprocess timeout;
skipped where MPI (mpi4py and mpiexec) is not installed."""
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import nutshell as ns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401
    HAVE_MPI = _mpiexec() is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="MPI not installed (pip install 'nutshell[mpi]')")

SETUP = textwrap.dedent("""
    import os, sys, time, signal
    import numpy as np
    import nutshell as ns
    nn = ns.nn

    def mlp():
        ns.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def cnn(bn):
        ns.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def far():
        return np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32) + 1000

    def batches(shape, count=3):
        r = np.random.default_rng(1)
        return [(r.standard_normal((64,) + shape).astype(np.float32), r.integers(0, 3, 64))
                for _ in range(count)]
""")

WORKER = SETUP + textwrap.dedent("""
    K, rank = ns.distributed.world_size(), ns.distributed.rank()
    n = 64 // K
    out = {}
    for name, make, shape, kw in [("mlp", mlp, (6,), dict(clip_norm=0.5)),
                                  ("cnn", lambda: cnn(False), (1, 8, 8), dict(bucket_cap_mb=0.001))]:
        t = ns.compile_training(make(), (n,) + shape, optimizer=ns.optim.Adam(lr=0.01), threads=1,
                                distributed="mpi" if K > 1 else None, **kw)
        out[name + "/loss"] = [t.step(x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n])
                               for x, y in batches(shape)]
        x = np.concatenate([b[0] for b in batches(shape, 4)])
        y = np.concatenate([b[1] for b in batches(shape, 4)])
        out[name + "/fit"] = t.fit(x, y, epochs=2, batch_size=n, progress=False)["loss"]
        out.update({f"{name}/{k}": v for k, v in t.state().items()})
    t = ns.compile_training(cnn(True), (n, 1, 8, 8), optimizer="sgd", threads=1,
                            distributed="mpi" if K > 1 else None)
    for x, y in batches((1, 8, 8)):
        t.step(x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n])
    out.update({f"bn/{k}": v for k, v in t.state().items()})
    ns.manual_seed(0)                 # SyncBatchNorm: the global batch's statistics, as one process
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8, affine=False), nn.ReLU(), nn.Linear(8, 3))
    t = ns.compile_training(net, (n, 1, 8, 8), optimizer=ns.optim.SGD(lr=0.1, momentum=0.9), threads=1,
                            distributed="mpi" if K > 1 else None, sync_batchnorm=True, bucket_cap_mb=0.001)
    # offset inputs: batch means far from zero, where E[x^2] - E[x]^2 in float32 would cancel
    out["sbn/loss"] = [t.step(x[rank * n:(rank + 1) * n] + 30, y[rank * n:(rank + 1) * n])
                       for x, y in batches((1, 8, 8))]
    out.update({f"sbn/{k}": v for k, v in t.state().items()})
    ns.manual_seed(0)                 # a mean 1000 standard deviations from zero: no cancellation
    t = ns.compile_training(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3)), (n, 4), threads=1,
                            distributed="mpi" if K > 1 else None, sync_batchnorm=True)
    t.step(far()[rank * n:(rank + 1) * n], np.zeros(n, np.int64))
    out["far/running_var"] = t.state()["0.running_var"]
    np.savez(sys.argv[1] + f".{rank}.npz", **out)
""")


def _launch(tmp_path, script, ranks=2, timeout=240, env=None):
    path = tmp_path / "job.py"
    path.write_text(script)
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, str(path), str(tmp_path / "out")]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


@needs_mpi
def test_two_ranks_on_halves_match_one_process_on_the_whole_batch(tmp_path):
    done = _launch(tmp_path, WORKER)
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, str(tmp_path / "job.py"), str(tmp_path / "one")],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    want = np.load(str(tmp_path / "one.0.npz"))
    ranks = [np.load(str(tmp_path / f"out.{r}.npz")) for r in range(2)]
    far = np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32) + 1000
    exact = 0.9 + 0.1 * np.var(far.astype(np.float64), axis=0, ddof=1)   # running_var after one step
    for r, got in enumerate(ranks):
        np.testing.assert_allclose(got["far/running_var"], exact, rtol=1e-5, err_msg=f"rank {r}")
    for key in (k for k in want.files if not k.startswith("far/")):
        for r, got in enumerate(ranks):
            if key.startswith("bn/"):          # per-rank batch statistics: ranks agree with each other
                np.testing.assert_array_equal(got[key], ranks[0][key], err_msg=f"rank {r} {key}")
            else:      # SyncBatchNorm's inputs are offset by 30: absolute rounding 30 times larger
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5,
                                           atol=3e-5 if key.startswith("sbn/") else 1e-6,
                                           err_msg=f"rank {r} {key}")


FAILING = SETUP + textwrap.dedent("""
    ns.distributed.set_timeout(float(os.environ["WATCHDOG_S"]))
    K, rank = ns.distributed.world_size(), ns.distributed.rank()
    t = ns.compile_training(mlp(), (32, 6), optimizer="sgd", threads=1, distributed="mpi")
    for i, (x, y) in enumerate(batches((6,), 50)):
        if i == 2 and rank == 1:
            open(sys.argv[1] + ".failed_at", "w").write(repr(time.time()))
            if os.environ["HOW"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)                       # hangs: its peer must not wait forever
        t.step(x[:32], y[:32])
""")


@needs_mpi
@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_dead_or_hung_rank_ends_the_job(tmp_path, how):
    done = _launch(tmp_path, FAILING, timeout=200, env={"HOW": how, "WATCHDOG_S": "3"})
    ended = time.time()
    assert done.returncode != 0
    after = ended - float((tmp_path / "out.failed_at").read_text())
    assert after < (60 if how == "kill" else 3 + 20), after
    if how == "hang":
        assert "no answer from the other ranks for 3 s" in done.stderr


def test_rank_and_world_size_without_mpiexec():
    assert ns.distributed.rank() == 0 and ns.distributed.world_size() == 1


def _split_bundle(trainer, tmp_path, name):
    import ctypes
    from nutshell.runtime.model import aligned_empty
    info = trainer.export(tmp_path, name=name)
    lib = ctypes.CDLL(str(tmp_path / f"lib{name}.so"))
    grads = getattr(lib, f"{name}_train_grads")
    grads.argtypes = [ctypes.c_void_p] * 5
    apply = getattr(lib, f"{name}_train_apply")
    apply.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p]
    getattr(lib, f"{name}_init_state").argtypes = [ctypes.c_void_p]
    get = getattr(lib, f"{name}_get_param")
    get.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    header = (tmp_path / f"{name}.h").read_text()
    count = int(header.split(f"{name.upper()}_GRADS_COUNT ")[1].split()[0])
    at_loss = int(header.split(f"{name.upper()}_GRADS_LOSS ")[1].split()[0])
    ws = aligned_empty(info["workspace"])

    def state():
        s = aligned_empty(info["state_size"])
        assert getattr(lib, f"{name}_init_state")(s.ctypes.data) == 0
        return s

    def param(s, i, shape):
        out = np.zeros(shape, np.float32)
        assert get(s.ctypes.data, i, out.ctypes.data) == 0
        return out
    return lib, grads, apply, state, param, count, at_loss, ws


def test_aot_split_step_on_two_halves_matches_the_whole_batch(tmp_path, rng):
    """NAME_train_grads on each half, the mean, NAME_train_apply on each rank's state:
    the parameters and losses of one process on the whole batch (no MPI needed)."""
    nn = ns.nn

    def net():
        ns.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    whole = ns.compile_training(net(), (12, 6), optimizer=ns.optim.Adam(lr=0.01), threads=1,
                                clip_norm=0.5)
    half_net = net()
    half = ns.compile_training(half_net, (6, 6), optimizer=ns.optim.Adam(lr=0.01), threads=1,
                               clip_norm=0.5)
    _, grads, apply, state, param, count, at_loss, ws = _split_bundle(half, tmp_path, "mlp")
    states = [state(), state()]
    for _ in range(3):
        x = rng.standard_normal((12, 6)).astype(np.float32)
        y = rng.integers(0, 3, 12)
        buffers = [np.zeros(count, np.float32) for _ in range(2)]
        for r in range(2):
            xs, ys = np.ascontiguousarray(x[6 * r:6 * r + 6]), np.ascontiguousarray(y[6 * r:6 * r + 6])
            assert grads(states[r].ctypes.data, xs.ctypes.data, ys.ctypes.data, ws.ctypes.data,
                         buffers[r].ctypes.data) == 0
        mean = (buffers[0] + buffers[1]) / 2
        for s in states:
            assert apply(s.ctypes.data, mean.ctypes.data, 0.01, ws.ctypes.data) == 0
        np.testing.assert_allclose(mean[at_loss], whole.step(x, y), rtol=1e-5)
    for i, (name, value) in enumerate(whole.parameters().items()):
        for s in states:
            np.testing.assert_allclose(param(s, i, value.shape), value, rtol=1e-5, atol=1e-6,
                                       err_msg=name)


def test_aot_split_step_with_batchnorm_on_one_rank_matches_train_step(tmp_path, rng):
    nn = ns.nn
    ns.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 36, 5))
    trainer = ns.compile_training(net, (6, 1, 8, 8), optimizer=ns.optim.SGD(lr=0.1, momentum=0.9),
                                  threads=1)
    import ctypes
    lib, grads, apply, state, param, count, at_loss, ws = _split_bundle(trainer, tmp_path, "bn")
    s = state()
    for _ in range(3):
        x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 5, 6)
        g = np.zeros(count, np.float32)
        assert grads(s.ctypes.data, x.ctypes.data, y.ctypes.data, ws.ctypes.data, g.ctypes.data) == 0
        assert apply(s.ctypes.data, g.ctypes.data, 0.1, ws.ctypes.data) == 0
        np.testing.assert_allclose(g[at_loss], trainer.step(x, y), rtol=1e-5)
    for i, (name, value) in enumerate(trainer.parameters().items()):
        np.testing.assert_allclose(param(s, i, value.shape), value, rtol=1e-5, atol=1e-6, err_msg=name)
    run = getattr(lib, "bn_run")                  # inference reads the running statistics
    run.argtypes = [ctypes.c_void_p] * 4
    out = np.zeros((6, 5), np.float32)
    assert run(s.ctypes.data, x.ctypes.data, out.ctypes.data, ws.ctypes.data) == 0
    np.testing.assert_allclose(out, trainer.predict(x), rtol=1e-5, atol=1e-5)
    y[0] = 9
    assert grads(s.ctypes.data, x.ctypes.data, y.ctypes.data, ws.ctypes.data, g.ctypes.data) == 5


@needs_mpi
def test_embed_c_trains_across_two_ranks_with_its_own_mpi(tmp_path):
    import gzip
    from importlib import resources
    mpicc = os.path.join(os.path.dirname(_mpiexec()), "mpicc")
    if not os.path.exists(mpicc):
        pytest.skip("needs mpicc beside mpiexec")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with resources.files("nutshell.data").joinpath(name + ".gz").open("rb") as f:
            (tmp_path / name).write_bytes(gzip.decompress(f.read()))
    nn = ns.nn
    ns.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    ns.compile_training(mlp, (64, 1, 28, 28), optimizer=ns.optim.Adam(lr=1e-3),
                        threads=1).export(tmp_path, name="mlp_train")
    src = os.path.join(ROOT, "examples", "embed_c")
    build = subprocess.run([mpicc, "-O2", "-Wall", "-Wextra", "-std=c11", f"-I{tmp_path}", f"-I{src}",
                            os.path.join(src, "train_mpi.c"), str(tmp_path / "mlp_train.o"),
                            "-lpthread", "-lm", "-o", str(tmp_path / "train_mpi")],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0 and "warning" not in build.stderr, build.stderr
    run = subprocess.run([_mpiexec(), "-n", "2", "./train_mpi", "t10k-images-idx3-ubyte",
                          "t10k-labels-idx1-ubyte", "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(2 ranks x batch 64)" in run.stdout
    assert float(run.stdout.split("held-out accuracy: ")[1].split("%")[0]) > 70


def test_without_mpi4py_or_with_an_unknown_engine_the_error_says_what_to_do(monkeypatch):
    net = ns.nn.Sequential(ns.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="distributed must be 'mpi'"):
        ns.compile_training(net, (4, 3), distributed="nccl")
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'nutshell\[mpi\]'"):
        ns.compile_training(net, (4, 3), distributed="mpi")
    with pytest.raises(ValueError, match="positive"):
        ns.distributed.set_timeout(0)
