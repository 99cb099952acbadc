"""Training step time, nutshell's compiled step vs PyTorch eager, side by side.

    python benchmarks/training.py [--threads 1 2] [--nets resnet18 unet ...] [--torch-compile]
                                  [--repeat 30] [--json out.json]

Steps alternate in blocks (ours, torch, ours, ...) so that the noise of a
shared machine falls on both. Networks: an MLP 784-512-256-10 (batch 128,
Adam), LeNet-5 (batch 64, SGD with momentum) and a 4-conv CNN with BatchNorm on
3x32x32 (batch 64, Adam); and, from training_nets.py (written once, run under
both libraries from the same weights), ResNet-18 on CIFAR (batch 32, SGD with
momentum), a 3-level U-Net on 64x64 (batch 8, Adam), a Transformer translator
(d 128, 4 heads, 2+2 layers, length 32, vocabulary 1000, batch 32, Adam) and an
LSTM classifier (hidden 128, length 50, batch 32, Adam). Each row: median step time of each after warm-up and
the ratio nutshell/PyTorch (below 1: nutshell is faster)."""
import argparse
import json
import time

import numpy as np
import torch

import nutshell as ns
from nutshell.bench import alternating_medians
from nutshell.models import lenet5

import training_nets as nets


def mlp(m):
    return m.Sequential(m.Flatten(), m.Linear(784, 512), m.ReLU(), m.Linear(512, 256), m.ReLU(),
                        m.Linear(256, 10))


def torch_lenet():
    t = torch.nn
    return t.Sequential(t.Conv2d(1, 6, 5, padding=2), t.ReLU(), t.MaxPool2d(2), t.Conv2d(6, 16, 5),
                        t.ReLU(), t.MaxPool2d(2), t.Flatten(), t.Linear(400, 120), t.ReLU(),
                        t.Linear(120, 84), t.ReLU(), t.Linear(84, 10))


def _classic(ours_f, theirs_f, shape):
    """A builder(lib) for the small nets whose torch and nutshell versions differ."""
    def build(lib):
        rng = np.random.default_rng(0)
        return ((ours_f if lib is ns else theirs_f)(), (rng.standard_normal(shape).astype(np.float32),),
                rng.integers(0, 10, shape[0]))
    return build


SGD = (lambda: ns.optim.SGD(lr=0.01, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9))
ADAM = (lambda: ns.optim.Adam(lr=1e-3), lambda p: torch.optim.Adam(p, lr=1e-3))
CASES = {        # name: (builder(lib) -> (module, inputs, targets), optimizers)
    "mlp": (_classic(lambda: mlp(ns.nn), lambda: mlp(torch.nn), (128, 1, 28, 28)), ADAM),
    "lenet": (_classic(lenet5, torch_lenet, (64, 1, 28, 28)), SGD),
    "cnn_bn": (_classic(lambda: nets.cnn_bn(ns.nn), lambda: nets.cnn_bn(torch.nn), (64, 3, 32, 32)), ADAM),
    "resnet18": (nets.resnet18_cifar, SGD),
    "unet": (nets.unet, ADAM),
    "transformer": (nets.translator, ADAM),
    "lstm": (nets.lstm_classifier, ADAM),
}


def torch_stepper(module, inputs, targets, make_opt, compiled):
    opt = make_opt(module.parameters())
    forward = torch.compile(module) if compiled else module
    tx = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)
    ty = torch.from_numpy(np.ascontiguousarray(targets))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(forward(*tx), ty).backward()
        opt.step()
    return step


def measure(name, threads, repeat, with_torch_compile):
    """One row: medians of nutshell's compiled step and torch's (eager, and compiled)."""
    build, (ours_opt, theirs_opt) = CASES[name]
    torch.manual_seed(0)
    theirs, inputs, targets = build(torch)
    ns.manual_seed(0)
    ours = build(ns)[0]
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    t = time.perf_counter()
    trainer = ns.compile_training(ours, example_inputs=inputs if len(inputs) > 1 else inputs[0],
                                  example_targets=targets, optimizer=ours_opt(), threads=threads)
    compile_s = time.perf_counter() - t
    feed = inputs if len(inputs) > 1 else inputs[0]
    ours_s, eager_s = alternating_medians(lambda: trainer.step(feed, targets),
                                          torch_stepper(theirs, inputs, targets, theirs_opt, False), repeat)
    row = dict(net=name, batch=len(targets), threads=threads, nutshell_ms=ours_s * 1e3,
               torch_ms=eager_s * 1e3, ratio=ours_s / eager_s, compile_s=compile_s)
    if with_torch_compile:
        compiled = torch_stepper(build(torch)[0], inputs, targets, theirs_opt, True)
        compiled()                                          # torch.compile's own compile
        ours_c, compiled_s = alternating_medians(lambda: trainer.step(feed, targets), compiled, repeat)
        row.update(torch_compile_ms=compiled_s * 1e3, ratio_compile=ours_c / compiled_s)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--nets", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--torch-compile", action="store_true", help="also against torch.compile (slow to compile)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    print(f"median of {args.repeat} steps after warm-up; ratio = nutshell / torch (below 1: faster)")
    print(f"{'net':<12} {'thr':>3} {'batch':>5} {'nutshell ms':>12} {'torch ms':>10} {'ratio':>7} "
          f"{'compile s':>10}" + ("  torch.compile ms  ratio" if args.torch_compile else ""))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.nets:
            r = measure(name, threads, args.repeat, args.torch_compile)
            rows.append(r)
            extra = (f"  {r['torch_compile_ms']:>16.2f} {r['ratio_compile']:>6.2f}"
                     if "torch_compile_ms" in r else "")
            print(f"{name:<12} {threads:>3} {r['batch']:>5} {r['nutshell_ms']:>12.2f} {r['torch_ms']:>10.2f} "
                  f"{r['ratio']:>7.2f} {r['compile_s']:>10.1f}{extra}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
