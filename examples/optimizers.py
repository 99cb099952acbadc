"""Every classic optimizer on one network: an MLP on real MNIST, same initial
weights and batches for each, training loss per step on one plot.

    python examples/optimizers.py [--plot optimizers.png]"""
import numpy as np

import nutshell as ns
from _common import data, parse, plt, save

OPTIMIZERS = {
    "SGD": lambda: ns.optim.SGD(lr=0.05),
    "SGD + momentum": lambda: ns.optim.SGD(lr=0.05, momentum=0.9),
    "SGD + Nesterov": lambda: ns.optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "Adagrad": lambda: ns.optim.Adagrad(lr=0.05),
    "RMSprop": lambda: ns.optim.RMSprop(lr=1e-3),
    "Adam": lambda: ns.optim.Adam(lr=1e-3),
    "AdamW": lambda: ns.optim.AdamW(lr=1e-3),
}


def mlp():
    nn = ns.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def main():
    args = parse(__doc__, "optimizers.png")
    (x, y), (xv, yv) = data(args.quick)
    epochs = 1 if args.quick else 3
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, make in OPTIMIZERS.items():
        ns.manual_seed(0)
        net = mlp()
        trainer = ns.compile_training(net, (64, 1, 28, 28), optimizer=make(), threads=args.threads)
        rng = np.random.default_rng(0)
        losses = []
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for s in range(len(x) // 64):
                idx = order[s * 64:(s + 1) * 64]
                losses.append(trainer.step(x[idx], y[idx]))
        _, accuracy = trainer.evaluate(xv, yv)
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        ax.plot(smooth, label=f"{name} ({accuracy * 100:.1f}%)")
        print(f"{name:<16} final loss {np.mean(losses[-20:]):.4f}  held-out accuracy {accuracy * 100:.2f}%")
    ax.set(xlabel="step", ylabel="training loss (10-step mean)", yscale="log",
           title="Optimizers on an MLP (784-128-10), real MNIST")
    ax.legend()
    save(fig, args.plot)


if __name__ == "__main__":
    main()
