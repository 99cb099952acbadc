"""DCGAN on real MNIST digits: a generator (Linear, then ConvTranspose2d with
BatchNorm up to 28x28, tanh) turns noise into digits, a convolutional
discriminator tells them from real ones, and two trainers take turns on the
shared modules as in the PyTorch DCGAN tutorial: the discriminator's step sees the
generator frozen (requires_grad_(False)), the generator's step the discriminator.
Prints both losses and the discriminator's held-out accuracy on real vs generated
digits (near 0.5 when the fakes fool it; expected 0.57 after the default run of
1,000 steps, 66 s of CPU, when the samples look like rough digits) and saves a
grid of generated digits.

    python examples/dcgan.py [--quick] [--plot dcgan.png]"""
import numpy as np

import nutshell as ns
from _common import data, parse, plt, save

nn, F = ns.nn, ns.nn.functional
Z = 32


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(Z, 64 * 7 * 7, bias=False), nn.BatchNorm1d(64 * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, z):
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1), nn.LeakyReLU(0.2),       # 14x14
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),      # 7x7
            nn.Flatten(), nn.Linear(64 * 7 * 7, 1))

    def forward(self, x):
        return self.net(x)                            # a logit: real or not


class DiscriminatorStep(nn.Module):
    def __init__(self, g, d):
        super().__init__()
        self.g, self.d = g, d

    def forward(self, z, real):
        return self.d(self.g(z)), self.d(real)


class GeneratorStep(nn.Module):
    def __init__(self, g, d):
        super().__init__()
        self.g, self.d = g, d

    def forward(self, z):
        return self.d(self.g(z))


def main():
    args = parse(__doc__, "dcgan.png")
    (x, _), (xv, _) = data(args.quick)
    x, xv = x * 2 - 1, xv * 2 - 1                     # tanh's range
    rng = np.random.default_rng(0)
    ns.manual_seed(0)
    g, d = Generator(), Discriminator()
    n = 64
    bce = F.binary_cross_entropy_with_logits
    z = rng.standard_normal((n, Z)).astype(np.float32)
    real_label, fake_label = np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)
    adam = lambda: ns.optim.Adam(lr=2e-4, betas=(0.5, 0.999))
    g.requires_grad_(False)                           # D's step must not move G
    d_trainer = ns.compile_training(DiscriminatorStep(g, d), example_inputs=(z, x[:n]),
                                    example_targets=(fake_label, real_label), optimizer=adam(),
                                    loss=lambda out, t: bce(out[0], t[0]) + bce(out[1], t[1]),
                                    threads=args.threads)
    g.requires_grad_(True)
    d.requires_grad_(False)                           # ... nor G's step D
    g_trainer = ns.compile_training(GeneratorStep(g, d), example_inputs=z, example_targets=real_label,
                                    loss=bce, optimizer=adam(), threads=args.threads)
    d.requires_grad_(True)
    steps = 5 if args.quick else 1000
    for step in range(steps):
        real = x[rng.integers(0, len(x), n)]
        d_loss = d_trainer.step((rng.standard_normal((n, Z)).astype(np.float32), real), (fake_label, real_label))
        g_loss = g_trainer.step(rng.standard_normal((n, Z)).astype(np.float32), real_label)
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step}: D loss {d_loss:.3f}, G loss {g_loss:.3f}")
    sampler = ns.compile(g.eval(), input_shape=(n, Z), threads=args.threads)
    judge = ns.compile(d.eval(), input_shape=(n, 1, 28, 28), threads=args.threads)
    fakes = sampler(rng.standard_normal((n, Z)).astype(np.float32))
    said_real = np.r_[judge(xv[:n]).ravel() > 0, judge(fakes).ravel() <= 0]
    print(f"discriminator accuracy, held-out real vs generated: {said_real.mean():.3f}")
    grid = fakes[:64, 0].reshape(8, 8, 28, 28).transpose(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow((grid + 1) / 2, cmap="gray", vmin=0, vmax=1)
    ax.set(title=f"DCGAN samples after {steps} steps", xticks=[], yticks=[])
    save(fig, args.plot)


if __name__ == "__main__":
    main()
