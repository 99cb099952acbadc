"""Training step time of the lecture's systems, nutshell beside PyTorch eager.

    python benchmarks/lecture_steps.py [--threads 2] [--repeat 30] [--batch-times 1] [--systems unet lstm ...]

The networks, data, losses and optimizers are tests/lecture_nets.py's (the ones
tests/test_lecture_parity.py checks against PyTorch), at the tests' small sizes (--batch-times K repeats each batch K times).
Steps alternate in blocks (ours, torch, ...) so a shared machine's noise falls
on both; each row: median step time after warm-up, the ratio nutshell/PyTorch
(below 1: nutshell is faster) and nutshell's compile time. The DCGAN row is one
D step plus one G step (two trainers; torch: the detach-based loop)."""
import argparse
import os
import sys
import time

import numpy as np
import torch

import nutshell as ns
from nutshell.bench import alternating_medians

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from lecture_nets import GAN_OPTIMIZER, SYSTEMS, dcgan, gan_data, gan_losses, gan_steps  # noqa: E402

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam"}


def optimizers(spec):
    name, kwargs = spec
    cls = OPTIMIZERS[name]
    return (lambda: getattr(ns.optim, cls)(**kwargs)), (lambda p: getattr(torch.optim, cls)(p, **kwargs))


def tiled(data, times):
    """The batch repeated `times` times along dim 0 (a bigger batch of the same data)."""
    if isinstance(data, (tuple, list)):
        return tuple(tiled(a, times) for a in data)
    return np.concatenate([np.asarray(data)] * times, axis=0)


def as_torch(data):
    if isinstance(data, (tuple, list)):
        return tuple(as_torch(a) for a in data)
    return torch.from_numpy(np.asarray(data))


def system_steps(system, threads, times=1):
    """(nutshell step, torch step, compile seconds) for one System."""
    torch.manual_seed(0)
    theirs, ours = system.build(torch), system.build(ns)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    make_ours, make_theirs = optimizers(system.optimizer)
    inputs, target = tiled(system.data(np.random.default_rng(0)), times)
    start = time.perf_counter()
    trainer = ns.compile_training(ours, example_inputs=inputs, example_targets=target,
                                  loss=system.loss(ns), optimizer=make_ours(), threads=threads)
    compile_s = time.perf_counter() - start
    opt, loss_of = make_theirs(theirs.parameters()), system.loss(torch)
    tin, ttarget = as_torch(inputs), as_torch(target)

    def torch_step():
        opt.zero_grad()
        loss_of(theirs(*tin), ttarget).backward()
        opt.step()
    return (lambda: trainer.step(inputs, target)), torch_step, compile_s


def gan_steps_timed(threads, times=1):
    torch.manual_seed(0)
    tg, td = dcgan(torch)
    g, d = dcgan(ns)
    g.load_state_dict({k: v.detach().numpy() for k, v in tg.state_dict().items()})
    d.load_state_dict({k: v.detach().numpy() for k, v in td.state_dict().items()})
    make_ours, make_theirs = optimizers(GAN_OPTIMIZER)
    z, real, zeros, ones = tiled(gan_data(np.random.default_rng(0)), times)
    d_step, g_step = gan_steps(ns, g, d)
    d_loss, g_loss = gan_losses(ns)
    start = time.perf_counter()
    d_trainer = ns.compile_training(d_step, example_inputs=(z, real), example_targets=(zeros, ones),
                                    loss=d_loss, optimizer=make_ours(), threads=threads)
    d.requires_grad_(False)
    g_trainer = ns.compile_training(g_step, example_inputs=z, example_targets=ones, loss=g_loss,
                                    optimizer=make_ours(), threads=threads)
    d.requires_grad_(True)
    compile_s = time.perf_counter() - start
    td_step, tg_step = gan_steps(torch, tg, td)
    opt_d, opt_g = make_theirs(td.parameters()), make_theirs(tg.parameters())
    td_loss, tg_loss = gan_losses(torch)
    tz, treal, tzeros, tones = as_torch((z, real, zeros, ones))

    def ours():
        d_trainer.step((z, real), (zeros, ones))
        g_trainer.step(z, ones)

    def theirs():
        opt_d.zero_grad()
        td_loss(td_step(tz, treal), (tzeros, tones)).backward()
        opt_d.step()
        opt_g.zero_grad()
        tg_loss(tg_step(tz), tones).backward()
        opt_g.step()
    return ours, theirs, compile_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--batch-times", type=int, default=1, help="each batch repeated this many times")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS) + ["dcgan"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batches x{args.batch_times}, median of {args.repeat} steps after warm-up")
    print(f"{'system':<12} {'nutshell ms':>12} {'torch ms':>10} {'ratio':>7} {'compile s':>10}")
    rows = []
    for name in args.systems:
        ours, theirs, compile_s = (gan_steps_timed(args.threads, args.batch_times) if name == "dcgan"
                                   else system_steps(SYSTEMS[name], args.threads, args.batch_times))
        ours_s, theirs_s = alternating_medians(ours, theirs, args.repeat)
        rows.append(dict(system=name, nutshell_ms=ours_s * 1e3, torch_ms=theirs_s * 1e3, compile_s=compile_s))
        print(f"{name:<12} {ours_s * 1e3:>12.2f} {theirs_s * 1e3:>10.2f} {ours_s / theirs_s:>7.3g} "
              f"{compile_s:>10.1f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
