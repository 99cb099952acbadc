"""Activations and initialisations against vanishing gradients: a deep sigmoid
MLP (Xavier init) barely learns, ReLU with He init does, BatchNorm helps both.
Prints each layer's gradient norm at the first step and plots the loss curves.

    python examples/vanishing_gradients.py [--plot vanishing.png]"""
import numpy as np

import nutshell as ns
from _common import data, parse, plt, save

DEPTH, WIDTH = 8, 64


def deep(activation, init, batchnorm):
    nn = ns.nn
    layers, width = [nn.Flatten()], 784
    for _ in range(DEPTH):
        layers.append(nn.Linear(width, WIDTH, init=init))
        if batchnorm:
            layers.append(nn.BatchNorm1d(WIDTH))
        layers.append(activation())
        width = WIDTH
    layers.append(nn.Linear(width, 10, init=init))
    return nn.Sequential(*layers)


SETUPS = {
    "sigmoid, Xavier": lambda: deep(ns.nn.Sigmoid, "xavier_normal", False),
    "ReLU, He": lambda: deep(ns.nn.ReLU, "he_normal", False),
    "sigmoid, Xavier, BatchNorm": lambda: deep(ns.nn.Sigmoid, "xavier_normal", True),
}


def layer_gradient_norms(net, trainer, xb, yb, lr):
    """With plain SGD, a step moves each weight by lr * gradient."""
    before = {k: v.copy() for k, v in net.state_dict().items()}
    trainer.step(xb, yb)
    after = net.state_dict()
    return [float(np.linalg.norm(before[k] - after[k]) / lr) for k in before
            if k.endswith("weight") and before[k].ndim == 2]


def main():
    args = parse(__doc__, "vanishing.png")
    (x, y), (xv, yv) = data(args.quick)
    epochs, lr = (1, 0.1) if args.quick else (4, 0.1)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, make in SETUPS.items():
        ns.manual_seed(0)
        net = make()
        trainer = ns.compile_training(net, (64, 1, 28, 28), optimizer=ns.optim.SGD(lr=lr), threads=args.threads)
        norms = layer_gradient_norms(net, trainer, x[:64], y[:64], lr)
        history = trainer.fit(x, y, epochs=epochs, batch_size=64, validation_data=(xv, yv), progress=False)
        ax.plot(range(1, epochs + 1), history["loss"], "o-", label=name)
        print(f"{name:<28} first-step gradient norm, layer 1 vs last: {norms[0]:.2e} vs {norms[-1]:.2e}; "
              f"held-out accuracy {history['val_accuracy'][-1] * 100:.1f}%")
    ax.set(xlabel="epoch", ylabel="training loss", title=f"{DEPTH}-layer MLP on MNIST, SGD lr {lr}")
    ax.legend()
    save(fig, args.plot)


if __name__ == "__main__":
    main()
