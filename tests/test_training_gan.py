"""compile_training with several trainers on shared modules (issue 15): a GAN's
discriminator and generator steps, and two trainers updating the same parameters.

Compared with PyTorch run in float64 from the same start over three steps, to the
tolerances of tests/test_training_frontend.py (whose helpers these tests use)."""
import numpy as np
import pytest

import nutshell as ns

torch = pytest.importorskip("torch")
from test_training_frontend import _close_loss, _close_params, _load_into_torch, _t  # noqa: E402

nn, tnn, F, TF = ns.nn, torch.nn, ns.nn.functional, torch.nn.functional


# ---- a GAN: two trainers on shared modules ----------------------------------------

def Generator(m, norm=False):
    # no bias before BatchNorm (it cancels: a zero gradient Adam would turn into noise steps)
    return m.Sequential(m.Linear(4, 8, bias=not norm), m.BatchNorm1d(8) if norm else m.Identity(), m.Tanh(), m.Linear(8, 6))


def Discriminator(m, norm=False):
    return m.Sequential(m.Linear(6, 8, bias=not norm), m.BatchNorm1d(8) if norm else m.Identity(), m.LeakyReLU(0.2),
                        m.Linear(8, 1))


class DiscriminatorStep(nn.Module):
    """Logits for generated and real samples (the generator frozen or detached)."""

    def __init__(self, g, d, detach):
        super().__init__()
        self.g, self.d, self.detach = g, d, detach

    def forward(self, z, real):
        fake = self.g(z)
        return self.d(fake.detach() if self.detach else fake), self.d(real)


class GeneratorStep(nn.Module):
    def __init__(self, g, d):
        super().__init__()
        self.g, self.d = g, d

    def forward(self, z):
        return self.d(self.g(z))


@pytest.mark.parametrize("detach,norm", [(False, False), (True, False), (False, True)],
                         ids=["frozen", "detached", "frozen-batchnorm"])
def test_gan_trainers_share_modules_like_a_pytorch_loop(detach, norm, rng):
    """D is called twice per D step (fakes, reals): with BatchNorm its running
    statistics update twice, as in PyTorch, and both trainers update them."""
    ns.manual_seed(4)
    g, d = Generator(nn, norm), Discriminator(nn, norm)
    # with BatchNorm, G's output bias reaches no loss (D's norm cancels it): SGD, as
    # Adam would turn its float32-vs-float64 rounding noise into lr-sized steps
    ours, theirs = ((lambda: ns.optim.SGD(lr=0.1, momentum=0.9)),
                    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))) if norm else \
        ((lambda: ns.optim.Adam(lr=2e-2)), (lambda p: torch.optim.Adam(p, lr=2e-2)))
    tg, td = _load_into_torch(g, Generator(tnn, norm)), _load_into_torch(d, Discriminator(tnn, norm))
    n, bce = 8, F.binary_cross_entropy_with_logits
    z, real = rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 6)).astype(np.float32)
    ones, zeros = np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)
    if not detach:
        g.requires_grad_(False)
    d_trainer = ns.compile_training(DiscriminatorStep(g, d, detach), example_inputs=(z, real),
                                    example_targets=(zeros, ones), optimizer=ours(),
                                    loss=lambda out, t: bce(out[0], t[0]) + bce(out[1], t[1]),
                                    threads=1)
    g.requires_grad_(True)
    d.requires_grad_(False)
    g_trainer = ns.compile_training(GeneratorStep(g, d), example_inputs=z, example_targets=ones,
                                    loss=F.binary_cross_entropy_with_logits,
                                    optimizer=ours(), threads=1)
    d.requires_grad_(True)
    assert all(p.startswith("d.") for p in d_trainer.layout["params"])
    opt_d, opt_g = theirs(td.parameters()), theirs(tg.parameters())
    bce = TF.binary_cross_entropy_with_logits
    for _ in range(3):
        z = rng.standard_normal((n, 4)).astype(np.float32)
        real = rng.standard_normal((n, 6)).astype(np.float32)
        d_loss = d_trainer.step((z, real), (zeros, ones))
        opt_d.zero_grad()
        want = bce(td(tg(_t(z)).detach()), _t(zeros)) + bce(td(_t(real)), _t(ones))
        want.backward()
        opt_d.step()
        _close_loss(d_loss, want.item())
        g_loss = g_trainer.step(z, ones)
        opt_g.zero_grad()
        want = bce(td(tg(_t(z))), _t(ones))
        want.backward()
        opt_g.step()
        _close_loss(g_loss, want.item())
    _close_params(g, tg)
    _close_params(d, td)


def test_trainers_on_one_module_take_up_each_others_steps(rng):
    """Two trainers updating the same parameters: each starts from the other's result."""
    ns.manual_seed(5)
    make = lambda: nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    shared, alone = make(), make()
    alone.load_state_dict(shared.state_dict())
    a = ns.compile_training(shared, (4, 6), optimizer=ns.optim.SGD(lr=0.3), threads=1)
    b = ns.compile_training(shared, (4, 6), optimizer=ns.optim.SGD(lr=0.3), threads=1)
    ref = ns.compile_training(alone, (4, 6), optimizer=ns.optim.SGD(lr=0.3), threads=1)
    for trainer in (a, b, b, a):
        x, y = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4)
        assert trainer.step(x, y) == ref.step(x, y)
    for name, value in alone.state_dict().items():
        np.testing.assert_array_equal(shared.state_dict()[name], value)
