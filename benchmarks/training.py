"""Training step time, nutshell's compiled step vs PyTorch eager and torch.compile, side by side.

    python benchmarks/training.py [--threads 1 2] [--nets resnet18 unet ...]
                                  [--torch-compile lecture|all|none] [--repeat 30] [--json out.json]

Steps alternate in blocks (ours, eager, torch.compile, ours, ...) so that the noise
of a shared machine falls on all. Networks: an MLP 784-512-256-10 (batch 128,
Adam), LeNet-5 (batch 64, SGD with momentum) and a 4-conv CNN with BatchNorm on
3x32x32 (batch 64, Adam); and, from training_nets.py (written once, run under
both libraries from the same weights), ResNet-18 on CIFAR (batch 32, SGD with
momentum), a 3-level U-Net on 64x64 (batch 8, Adam), a Transformer translator
(d 128, 4 heads, 2+2 layers, length 32, vocabulary 1000, batch 32, Adam) and an
LSTM classifier (hidden 128, length 50, batch 32, Adam). Each row: median step time of each after warm-up and
the ratio nutshell/PyTorch (below 1: nutshell is faster).

torch.compile (inductor; by default for the four lecture nets) compiles the
module, so forward and backward run as its generated kernels; the optimizer step
stays eager, as in the usual `model = torch.compile(model)`. Its compile is kept
out of the timing: WARMUP steps first (the first compiles forward and backward).
A net inductor cannot compile gets n/a and the reason."""
import argparse
import copy
import json
import time

import numpy as np
import torch

import nutshell as ns
from nutshell.bench import alternating
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


LECTURE = ("resnet18", "unet", "transformer", "lstm")   # timed against torch.compile by default
WARMUP = 3      # torch.compile's steps before timing: the first compiles, the next two settle


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


def compiled_stepper(module, inputs, targets, make_opt):
    """torch.compile's step, compiled and warmed up here, or (None, why) when inductor fails."""
    torch._dynamo.reset()        # no kernels kept from another thread count
    step = torch_stepper(module, inputs, targets, make_opt, True)
    try:
        for _ in range(WARMUP):
            step()
    except Exception as e:       # noqa: BLE001 -- any compiler failure: reported, the row goes on
        return None, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    return step, None


def measure(name, threads, repeat, with_torch_compile):
    """One row: medians of nutshell's compiled step, torch eager's and torch.compile's."""
    build, (ours_opt, theirs_opt) = CASES[name]
    torch.manual_seed(0)
    theirs, inputs, targets = build(torch)
    twin = copy.deepcopy(theirs)          # torch.compile's copy: the same weights
    ns.manual_seed(0)
    ours = build(ns)[0]
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    t = time.perf_counter()
    trainer = ns.compile_training(ours, example_inputs=inputs if len(inputs) > 1 else inputs[0],
                                  example_targets=targets, optimizer=ours_opt(), threads=threads)
    compile_s = time.perf_counter() - t
    feed = inputs if len(inputs) > 1 else inputs[0]
    steps = [lambda: trainer.step(feed, targets), torch_stepper(theirs, inputs, targets, theirs_opt, False)]
    row = dict(net=name, batch=len(targets), threads=threads, compile_s=compile_s)
    if with_torch_compile:
        compiled, why = compiled_stepper(twin, inputs, targets, theirs_opt)
        if compiled is None:
            row["torch_compile"] = f"n/a ({why})"
        else:
            steps.append(compiled)
    medians = alternating(steps, repeat)
    row.update(nutshell_ms=medians[0] * 1e3, torch_ms=medians[1] * 1e3, ratio=medians[0] / medians[1])
    if len(medians) > 2:
        row.update(torch_compile_ms=medians[2] * 1e3, ratio_compile=medians[0] / medians[2])
    return row


def _compile_cell(row):
    if "torch_compile_ms" in row:
        return f"  {row['torch_compile_ms']:>16.2f} {row['ratio_compile']:>6.2f}"
    return f"  {'n/a':>16} {'':>6}" if "torch_compile" in row else ""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--nets", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--torch-compile", choices=("lecture", "all", "none"), default="lecture",
                   help="nets also timed against torch.compile: the four lecture nets (default), all, none")
    p.add_argument("--json")
    args = p.parse_args(argv)
    against = {"lecture": LECTURE, "all": tuple(CASES), "none": ()}[args.torch_compile]
    rows = []
    print(f"median of {args.repeat} steps after warm-up; ratio = nutshell / torch (below 1: faster)")
    print(f"{'net':<12} {'thr':>3} {'batch':>5} {'nutshell ms':>12} {'torch ms':>10} {'ratio':>7} "
          f"{'compile s':>10}" + ("  torch.compile ms  ratio" if set(against) & set(args.nets) else ""))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.nets:
            r = measure(name, threads, args.repeat, name in against)
            rows.append(r)
            print(f"{name:<12} {threads:>3} {r['batch']:>5} {r['nutshell_ms']:>12.2f} {r['torch_ms']:>10.2f} "
                  f"{r['ratio']:>7.2f} {r['compile_s']:>10.1f}{_compile_cell(r)}", flush=True)
            if "torch_compile" in r:
                print(f"  {name}: torch.compile {r['torch_compile']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
