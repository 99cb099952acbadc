"""The lecture's systems (tests/lecture_nets.py), written once PyTorch-style, train
under nutshell as under PyTorch (issue 15).

From the same start and the same batches, three optimizer steps in nutshell
(float32), in PyTorch float32 and in PyTorch float64. Asserted:
  - each step's loss equals PyTorch float64's to 1e-3 relative;
  - for every parameter and buffer tensor p: max|ns - t64| <= 5 * max|t32 - t64|
    + 1e-6 * max|t64| (the floor covers tensors that float32 and float64 carry
    identically, e.g. untouched ones; 1e-6 is ~8 float32 ulps of the largest
    entry). Integer buffers (BatchNorm's step count) must be equal.
The DCGAN is trained by two trainers, compared with PyTorch's detach-based loop."""
import copy

import numpy as np
import pytest

import nutshell as ns
from lecture_nets import GAN_OPTIMIZER, SYSTEMS, dcgan, gan_data, gan_losses, gan_steps

torch = pytest.importorskip("torch", reason="torch is a test extra (pip install torch)")

STEPS, LOSS_RTOL, NOISE_FACTOR, FLOOR = 3, 1e-3, 5.0, 1e-6


def optimizers(spec):
    """(make the nutshell optimizer, make the torch one over params) from (name, kwargs)."""
    name, kwargs = spec
    cls = {"sgd": "SGD", "adam": "Adam"}[name]
    return (lambda: getattr(ns.optim, cls)(**kwargs)), (lambda p: getattr(torch.optim, cls)(p, **kwargs))


def to_torch(data, dtype):
    """Arrays (or tuples of them) as torch tensors, floats as `dtype`."""
    if isinstance(data, (tuple, list)):
        return tuple(to_torch(a, dtype) for a in data)
    t = torch.from_numpy(np.asarray(data))
    return t.to(dtype) if t.is_floating_point() else t


def state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def assert_loss_close(got, want, what):
    assert abs(got - want) <= LOSS_RTOL * abs(want), f"{what}: nutshell {got} vs torch float64 {want}"


def assert_within_float32_noise(ours, single, double):
    """Every tensor of `ours` (a state_dict) at most NOISE_FACTOR times as far from
    float64 as PyTorch float32's, plus the floor; the worst ratio is returned."""
    worst = 0.0
    for name, want in double.items():
        got, f32 = np.asarray(ours[name]), single[name]
        if want.dtype.kind != "f":
            np.testing.assert_array_equal(got, want, err_msg=name)
            continue
        ours_err = float(np.max(np.abs(got - want)))
        torch_err = float(np.max(np.abs(f32 - want)))
        floor = FLOOR * float(np.max(np.abs(want)))
        assert ours_err <= NOISE_FACTOR * torch_err + floor, (
            f"{name}: nutshell is {ours_err:.3g} from float64, PyTorch float32 {torch_err:.3g}")
        worst = max(worst, ours_err / (torch_err + floor))
    return worst


def torch_pair(build):
    """The torch model built from seed 0, and a float64 copy of it."""
    torch.manual_seed(0)
    single = build(torch)
    return single, copy.deepcopy(single).double()


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_system_trains_like_pytorch(name):
    system = SYSTEMS[name]
    single, double = torch_pair(system.build)
    ours = system.build(ns)
    ours.load_state_dict({k: v for k, v in state(single).items()})
    make_ours, make_theirs = optimizers(system.optimizer)
    rng = np.random.default_rng(0)
    batches = [system.data(rng) for _ in range(STEPS)]
    inputs, target = batches[0]
    trainer = ns.compile_training(ours, example_inputs=inputs, example_targets=target,
                                  loss=system.loss(ns), optimizer=make_ours(), threads=2)
    runs = [(m, make_theirs(m.parameters()), dt) for m, dt in ((single, torch.float32), (double, torch.float64))]
    loss_of = system.loss(torch)
    for step, (inputs, target) in enumerate(batches):
        got = trainer.step(inputs, target)
        for module, optimizer, dtype in runs:
            optimizer.zero_grad()
            want = loss_of(module(*to_torch(inputs, dtype)), to_torch(target, dtype))
            want.backward()
            optimizer.step()
        assert_loss_close(got, want.item(), f"{name} step {step}")
    assert_within_float32_noise(ours.state_dict(), state(single), state(double))


def test_dcgan_two_trainers_match_pytorch_detach_loop():
    torch.manual_seed(0)
    tg, td = dcgan(torch)
    tg64, td64 = copy.deepcopy(tg).double(), copy.deepcopy(td).double()
    g, d = dcgan(ns)
    g.load_state_dict(state(tg))
    d.load_state_dict(state(td))
    make_ours, make_theirs = optimizers(GAN_OPTIMIZER)
    rng = np.random.default_rng(0)
    batches = [gan_data(rng) for _ in range(STEPS)]
    z, real, zeros, ones = batches[0]
    d_step, g_step = gan_steps(ns, g, d)
    d_loss, g_loss = gan_losses(ns)
    d_trainer = ns.compile_training(d_step, example_inputs=(z, real), example_targets=(zeros, ones),
                                    loss=d_loss, optimizer=make_ours(), threads=2)
    d.requires_grad_(False)            # G's step reads D, never updates it
    g_trainer = ns.compile_training(g_step, example_inputs=z, example_targets=ones, loss=g_loss,
                                    optimizer=make_ours(), threads=2)
    d.requires_grad_(True)
    assert all(p.startswith("d.") for p in d_trainer.layout["params"])
    assert all(p.startswith("g.") for p in g_trainer.layout["params"])
    d_loss, g_loss = gan_losses(torch)
    runs = []
    for gen, disc, dtype in ((tg, td, torch.float32), (tg64, td64, torch.float64)):
        d_mod, g_mod = gan_steps(torch, gen, disc)
        runs.append((d_mod, g_mod, make_theirs(disc.parameters()), make_theirs(gen.parameters()), dtype))
    for step, (z, real, zeros, ones) in enumerate(batches):
        got_d = d_trainer.step((z, real), (zeros, ones))
        got_g = g_trainer.step(z, ones)
        for d_mod, g_mod, opt_d, opt_g, dtype in runs:
            tz, treal, tzeros, tones = to_torch((z, real, zeros, ones), dtype)
            opt_d.zero_grad()
            want_d = d_loss(d_mod(tz, treal), (tzeros, tones))     # fakes detached in forward
            want_d.backward()
            opt_d.step()
            opt_g.zero_grad()
            want_g = g_loss(g_mod(tz), tones)
            want_g.backward()
            opt_g.step()
        assert_loss_close(got_d, want_d.item(), f"D step {step}")
        assert_loss_close(got_g, want_g.item(), f"G step {step}")
    assert_within_float32_noise(g.state_dict(), state(tg), state(tg64))
    assert_within_float32_noise(d.state_dict(), state(td), state(td64))


def test_metric_refuses_more_than_five_times_float32_noise():
    double = {"w": np.array([1.0, 2.0])}
    single = {"w": np.array([1.0 + 1e-5, 2.0])}
    assert_within_float32_noise({"w": np.array([1.0 + 4e-5, 2.0])}, single, double)
    with pytest.raises(AssertionError, match="w: nutshell"):
        assert_within_float32_noise({"w": np.array([1.0, 2.0 + 6e-5])}, single, double)
