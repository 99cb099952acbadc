"""Data-parallel training: 2 MPI ranks x 1 thread against 1 process x 2 threads,
and against PyTorch DDP (gloo, 2 processes x 1 thread) when torch is installed.

    python benchmarks/distributed.py [--steps 30] [--nets lenet cnn_bn] [--variants] [--json out.json]

Global batch 64 (32 per rank): LeNet-5 (SGD with momentum) and a 4-conv CNN with
BatchNorm on 3x32x32 (Adam), also with sync_batchnorm (PyTorch's SyncBatchNorm
runs on GPUs only); wide_mlp (46 MB of gradients) on request. Each row: median
step time after warm-up and images per second. --variants adds gradient buckets
of --small-bucket-mb overlapped with the backward, blocking, and with MPICH's
progress thread. Needs mpiexec (pip install 'nutshell[mpi]'); everything talks
over localhost only.

Measured on the shared 2-core machine, three runs between 01:47 and 02:28 UTC
(2026-12-02) at load 9-13 from other jobs, so rows move by +-40% from run to run:
LeNet 2x1 8.2 / 16.8 / 12.2 ms, 1x2 threads 2.1-3.6, DDP 12.0 / 53.6 / 8.6;
CNN+BN 2x1 117 / 208 / 112 ms, sync_batchnorm 220 (two all-reduces per BatchNorm
each way, since cut to one) then 166 / 168 / 196, 1x2 threads 108-200, DDP
350-449. Gradient buckets (--variants, 0.05 MB): overlapped 8.1 / 7.9 ms on
LeNet, 116 / 148 on CNN+BN against one bucket 12.9 and 124; blocking buckets
12.1 / 11.8 and 123 / 161; MPICH's progress thread 36-40 and 258-336 (it spins
on a core). wide_mlp (46 MB) 2x1: 2 buckets 506 ms, one 472, 5 MB overlapped 443,
blocking 461, 1x2 threads 350, DDP 570. Overlap shows no gain above the noise on
2 busy cores (the reduction's copies need the same cores as the backward), so
bucket_cap_mb stays DDP's 25: one bucket for these nets. In one process the
sync_batchnorm step costs ~20% more compute than the per-rank one (stages fuse
less; float64 sums), measured 102 against 85 ms on CNN+BN."""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from training_nets import cnn_bn

GLOBAL_BATCH = 64
HERE = os.path.abspath(__file__)


def lenet(m):
    return m.Sequential(m.Conv2d(1, 6, 5, padding=2), m.ReLU(), m.MaxPool2d(2), m.Conv2d(6, 16, 5),
                        m.ReLU(), m.MaxPool2d(2), m.Flatten(), m.Linear(400, 120), m.ReLU(),
                        m.Linear(120, 84), m.ReLU(), m.Linear(84, 10))


def wide_mlp(m):         # 46 MB of gradients: two buckets at the default bucket_cap_mb
    return m.Sequential(m.Flatten(), m.Linear(784, 4096), m.ReLU(), m.Linear(4096, 2048), m.ReLU(),
                        m.Linear(2048, 10))


NETS = {"lenet": (lenet, (1, 28, 28), "sgd"), "cnn_bn": (cnn_bn, (3, 32, 32), "adam"),
        "wide_mlp": (wide_mlp, (1, 28, 28), "sgd")}
DEFAULT_NETS = ["lenet", "cnn_bn"]


def _batches(shape, batch, count=4):
    r = np.random.default_rng(0)
    return [(r.random((batch,) + shape, np.float32), r.integers(0, 10, batch)) for _ in range(count)]


def _timed(step, batches, warmup, steps, sync=lambda: None):
    for i in range(warmup):
        step(*batches[i % len(batches)])
    sync()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(*batches[i % len(batches)])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def nutshell_worker(a):
    import nutshell as ns
    make, shape, opt = NETS[a.net]
    ranks = ns.distributed.world_size()
    batch = GLOBAL_BATCH // ranks
    optimizer = ns.optim.SGD(lr=0.01, momentum=0.9) if opt == "sgd" else ns.optim.Adam(lr=1e-3)
    ns.manual_seed(0)
    if a.blocking:                       # each bucket all-reduced blocking when complete: no overlap
        from nutshell.runtime.distributed_stages import OVERLAP
        OVERLAP["nonblocking"] = False
    options = dict(bucket_cap_mb=a.bucket_cap_mb, sync_batchnorm=a.sync_bn) if ranks > 1 else {}
    t = ns.compile_training(make(ns.nn), (batch,) + shape, optimizer=optimizer, threads=a.threads,
                            distributed="mpi" if ranks > 1 else None, **options)
    sync = ns.distributed.barrier if ranks > 1 else (lambda: None)
    return ns.distributed.rank(), _timed(t.step, _batches(shape, batch), a.warmup, a.steps, sync)


def torch_worker(a):
    import torch
    import torch.distributed as td
    torch.set_num_threads(1)
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=a.rank, world_size=2)
    make, shape, opt = NETS[a.net]
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(make(torch.nn))
    optimizer = (torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) if opt == "sgd" else
                 torch.optim.Adam(net.parameters(), lr=1e-3))
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in
               _batches(shape, GLOBAL_BATCH // 2)]

    def step(x, y):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    took = _timed(step, batches, a.warmup, a.steps, td.barrier)
    td.destroy_process_group()
    return a.rank, took


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmds, out, timeout=900, env=None):
    """Start `cmds` together; rank 0's median step time from `out`."""
    procs = [subprocess.Popen(c, env=dict(os.environ, **(env or {}))) for c in cmds]
    for p in procs:
        if p.wait(timeout=timeout) != 0:
            raise RuntimeError(f"{' '.join(p.args)} failed")
    with open(out) as f:
        return json.load(f)["step_s"]


def measure(net, a):
    worker = [sys.executable, HERE, "--net", net, "--steps", str(a.steps), "--warmup", str(a.warmup)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        mpi = [_mpiexec(), "-n", "2"] + worker + ["--worker", "nutshell", "--threads", "1", "--out", out]
        rows["nutshell 2 ranks x 1 thread"] = _run([mpi], out)
        if a.variants:
            rows["  one bucket (no overlap)"] = _run([mpi + ["--bucket-cap-mb", "1e6"]], out)
            small = ["--bucket-cap-mb", str(a.small_bucket_mb)]
            rows[f"  buckets of {a.small_bucket_mb} MB, overlapped"] = _run([mpi + small], out)
            rows[f"  buckets of {a.small_bucket_mb} MB, blocking"] = _run([mpi + small + ["--blocking"]], out)
            rows["  ... overlapped, MPICH progress thread"] = _run(
                [mpi + small], out, env={"MPIR_CVAR_ASYNC_PROGRESS": "1"})
        if net == "cnn_bn":
            rows["nutshell 2 x 1, sync_batchnorm"] = _run([mpi + ["--sync-bn"]], out)
        rows["nutshell 1 rank x 2 threads"] = _run(
            [worker + ["--worker", "nutshell", "--threads", "2", "--out", out]], out)
        try:
            import torch  # noqa: F401
        except ImportError:
            return rows
        port = str(_free_port())
        rows["PyTorch DDP gloo 2 x 1"] = _run(
            [worker + ["--worker", "torch", "--rank", str(r), "--port", port, "--out", out]
             for r in range(2)], out)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", nargs="+", default=DEFAULT_NETS, choices=list(NETS))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json")
    p.add_argument("--variants", action="store_true",
                   help="also small gradient buckets: overlapped, blocking, with MPICH's progress thread")
    p.add_argument("--small-bucket-mb", type=float, default=0.05)
    p.add_argument("--bucket-cap-mb", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--blocking", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=["nutshell", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        rank, took = (nutshell_worker if a.worker == "nutshell" else torch_worker)(a)
        if rank == 0:
            with open(a.out, "w") as f:
                json.dump({"step_s": took}, f)
        return
    results = {}
    for net in a.nets:
        rows = measure(net, a)
        results[net] = rows
        print(f"{net} (global batch {GLOBAL_BATCH}):")
        for name, took in rows.items():
            print(f"  {name:40s} {took * 1e3:8.2f} ms/step  {GLOBAL_BATCH / took:8.0f} images/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
