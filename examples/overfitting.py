"""Overfitting on a small training set (1,000 real MNIST digits) and its remedies:
L2 weight decay, dropout, data augmentation (random shifts), early stopping.
Prints final training vs held-out accuracy for each and plots held-out loss.

    python examples/overfitting.py [--plot overfitting.png]"""
import numpy as np

import nutshell as ns
from _common import data, parse, plt, save


def mlp(dropout=0.0):
    nn = ns.nn
    layers = [nn.Flatten(), nn.Linear(784, 512), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(512, 512), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(512, 10))


REMEDIES = {
    "none": (lambda: mlp(), {}, {}),
    "L2 (1e-4)": (lambda: mlp(), {"l2": 1e-4}, {}),
    "dropout 0.5": (lambda: mlp(0.5), {}, {}),
    "augmentation": (lambda: mlp(), {}, {"augment": lambda xb, rng: ns.augment.random_shift(xb, 2, rng)}),
    "early stopping": (lambda: mlp(), {}, {"early_stopping": 3}),
}


def main():
    args = parse(__doc__, "overfitting.png")
    (x, y), (xv, yv) = data(args.quick, train=1000)
    x, y = x[:1000], y[:1000]
    epochs = 2 if args.quick else 30
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, (make, reg, fit_kw) in REMEDIES.items():
        ns.manual_seed(0)
        net = make()
        trainer = ns.compile_training(net, (50, 1, 28, 28), optimizer=ns.optim.Adam(lr=1e-3),
                                      threads=args.threads, **reg)
        history = trainer.fit(x, y, epochs=epochs, batch_size=50, validation_data=(xv, yv),
                              progress=False, **fit_kw)
        _, train_acc = trainer.evaluate(x, y)
        ax.plot(np.arange(1, len(history["val_loss"]) + 1), history["val_loss"], label=name)
        print(f"{name:<15} train accuracy {train_acc * 100:5.1f}%, held-out {history['val_accuracy'][-1] * 100:5.1f}%"
              + (f" (stopped at epoch {history['stopped_early']})" if "stopped_early" in history else ""))
    ax.set(xlabel="epoch", ylabel="held-out loss", title="1,000 training digits: overfitting and remedies")
    ax.legend()
    save(fig, args.plot)


if __name__ == "__main__":
    main()
