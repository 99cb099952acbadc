"""Training step time, nutshell's compiled step vs PyTorch eager, side by side.

    python benchmarks/training.py [--threads 2] [--repeat 30] [--json out.json]

Steps alternate in blocks (ours, torch, ours, ...) so that the noise of a
shared machine falls on both. Networks: an MLP 784-512-256-10 (batch 128,
Adam), LeNet-5 (batch 64, SGD with momentum) and a 4-conv CNN with BatchNorm on
3x32x32 (batch 64, Adam). Each row: median step time of each after warm-up and
the ratio nutshell/PyTorch (below 1: nutshell is faster)."""
import argparse
import json
import time

import numpy as np
import torch

import nutshell as ns
from nutshell.bench import alternating_medians
from nutshell.models import lenet5


def cnn(m):
    return m.Sequential(m.Conv2d(3, 32, 3, padding=1), m.BatchNorm2d(32), m.ReLU(),
                        m.Conv2d(32, 32, 3, padding=1), m.BatchNorm2d(32), m.ReLU(), m.MaxPool2d(2),
                        m.Conv2d(32, 64, 3, padding=1), m.BatchNorm2d(64), m.ReLU(),
                        m.Conv2d(64, 64, 3, padding=1), m.BatchNorm2d(64), m.ReLU(), m.MaxPool2d(2),
                        m.Flatten(), m.Linear(64 * 8 * 8, 10))


def mlp(m):
    return m.Sequential(m.Flatten(), m.Linear(784, 512), m.ReLU(), m.Linear(512, 256), m.ReLU(),
                        m.Linear(256, 10))


def torch_lenet():
    t = torch.nn
    return t.Sequential(t.Conv2d(1, 6, 5, padding=2), t.ReLU(), t.MaxPool2d(2), t.Conv2d(6, 16, 5),
                        t.ReLU(), t.MaxPool2d(2), t.Flatten(), t.Linear(400, 120), t.ReLU(),
                        t.Linear(120, 84), t.ReLU(), t.Linear(84, 10))


CASES = {
    "mlp": (lambda: mlp(ns.nn), lambda: mlp(torch.nn), (128, 1, 28, 28),
            lambda: ns.optim.Adam(lr=1e-3), lambda p: torch.optim.Adam(p, lr=1e-3)),
    "lenet": (lenet5, torch_lenet, (64, 1, 28, 28),
              lambda: ns.optim.SGD(lr=0.01, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
    "cnn_bn": (lambda: cnn(ns.nn), lambda: cnn(torch.nn), (64, 3, 32, 32),
               lambda: ns.optim.Adam(lr=1e-3), lambda p: torch.optim.Adam(p, lr=1e-3)),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--nets", nargs="+", default=list(CASES))
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"threads {args.threads}, median of {args.repeat} steps after warm-up")
    print(f"{'net':<8} {'batch':>5} {'nutshell ms':>12} {'torch ms':>10} {'ratio':>7} {'compile s':>10}")
    for name in args.nets:
        ours_f, theirs_f, shape, ours_opt, theirs_opt = CASES[name]
        ns.manual_seed(0)
        ours, theirs = ours_f(), theirs_f()
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        t = time.perf_counter()
        trainer = ns.compile_training(ours, shape, optimizer=ours_opt(), threads=args.threads)
        compile_s = time.perf_counter() - t
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, 10, shape[0])
        opt = theirs_opt(theirs.parameters())
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def torch_step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(theirs(tx), ty).backward()
            opt.step()
        ours_s, theirs_s = alternating_medians(lambda: trainer.step(x, y), torch_step, args.repeat)
        row = dict(net=name, batch=shape[0], threads=args.threads, nutshell_ms=ours_s * 1e3,
                   torch_ms=theirs_s * 1e3, ratio=ours_s / theirs_s, compile_s=compile_s)
        rows.append(row)
        print(f"{name:<8} {shape[0]:>5} {ours_s * 1e3:>12.2f} {theirs_s * 1e3:>10.2f} "
              f"{ours_s / theirs_s:>7.2f} {compile_s:>10.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
