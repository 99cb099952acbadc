"""`nutshell demo`: LeNet-5 built in the DSL, its whole training step compiled to one
native function, trained on real MNIST digits bundled with the package (the first
8,000 test-set images), judged on the last 2,000, then compiled for inference."""
import time

import numpy as np

import nutshell as ns
from nutshell.bench import median_latency
from nutshell.datasets import mnist_split
from nutshell.models import lenet5

SHADES = " .:-=+*#%@"
EPOCHS, BATCH, LR, SEED = 5, 64, 1e-3, 0


def ascii_digit(image):
    return "\n".join("".join(SHADES[min(9, int(v * 10))] for v in image[0, r]) for r in range(0, 28, 2))


def save_plot(history, path, torch_history=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, history["loss"], "o-", label="training loss")
    ax1.plot(epochs, history["val_loss"], "s-", label="held-out loss")
    ax2.plot(epochs, np.array(history["val_accuracy"]) * 100, "o-", label="nutshell")
    if torch_history:
        ax2.plot(epochs, np.array(torch_history) * 100, "s--", label="PyTorch, same recipe")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="LeNet-5 on MNIST: loss")
    ax2.set(xlabel="epoch", ylabel="held-out accuracy (%)", title="accuracy on 2,000 held-out digits")
    for ax in (ax1, ax2):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def torch_same_recipe(initial_state, x_train, y_train, x_test, y_test, threads, out=print):
    """The same network, initial weights, batches and optimizer in PyTorch eager,
    with a line per epoch (it takes tens of seconds)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    tnn = torch.nn
    net = tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                         tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                         tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
                         tnn.Linear(84, 10))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in initial_state.items()})
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    rng = np.random.default_rng(SEED)
    accuracy, start = [], time.perf_counter()
    xt, xe = torch.from_numpy(x_train), torch.from_numpy(x_test)
    out("training the same recipe in PyTorch eager for the time comparison (--no-torch skips it)")
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x_train))
        for s in range(len(x_train) // BATCH):
            idx = torch.from_numpy(order[s * BATCH:(s + 1) * BATCH])
            opt.zero_grad()
            tnn.functional.cross_entropy(net(xt[idx]), torch.from_numpy(y_train)[idx]).backward()
            opt.step()
        with torch.no_grad():
            accuracy.append(float((net(xe).argmax(1).numpy() == y_test).mean()))
        out(f"  PyTorch epoch {epoch + 1}/{EPOCHS}: held-out accuracy {accuracy[-1] * 100:.2f}% "
            f"({time.perf_counter() - start:.1f} s)")
    return time.perf_counter() - start, accuracy


def run_demo(threads=None, plot="nutshell_demo.png", compare_torch=True, out=print):
    (x_train, y_train), (x_test, y_test) = mnist_split()
    ns.manual_seed(SEED)
    net = lenet5()
    initial = net.state_dict()
    out(f"LeNet-5 in the nutshell DSL: {net.num_parameters():,} parameters, PyTorch-style init, seed {SEED}")
    out(f"data: real MNIST, {len(x_train):,} training and {len(x_test):,} held-out images (bundled)")

    t = time.perf_counter()
    trainer = ns.compile_training(net, (BATCH, 1, 28, 28), loss="cross_entropy",
                                  optimizer=ns.optim.Adam(lr=LR), threads=threads)
    target = trainer.model.target
    out(f"compiled the training step (forward, loss, backward, Adam) into one native function "
        f"for {target.cpu} ({target.vector_bits}-bit vectors, {target.threads} threads) in "
        f"{time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, seed=SEED,
                          validation_data=(x_test, y_test), log=out)
    train_time = time.perf_counter() - t
    accuracy = history["val_accuracy"][-1]
    out(f"trained {EPOCHS} epochs in {train_time:.1f} s: held-out accuracy {accuracy * 100:.2f}%")

    torch_result = torch_same_recipe(initial, x_train, y_train, x_test, y_test,
                                     target.threads, out) if compare_torch else None
    if torch_result:
        out(f"PyTorch eager, same recipe and initial weights: {torch_result[0]:.1f} s, held-out "
            f"accuracy {torch_result[1][-1] * 100:.2f}% (time ratio nutshell/PyTorch "
            f"{train_time / torch_result[0]:.2f})")
    if plot:
        save_plot(history, plot, torch_result[1] if torch_result else None)
        out(f"saved the loss and accuracy curves to {plot}")

    graph = net.trace((100, 1, 28, 28))       # the trained weights, as the module now holds them
    model = ns.compile(graph, threads=threads)
    predictions = np.concatenate([model(x_test[i:i + 100]).argmax(1) for i in range(0, len(x_test), 100)])
    out("\nfirst held-out digit:\n" + ascii_digit(x_test[0]))
    out(f"predicted {predictions[0]}, label {y_test[0]}")
    out("predictions: " + " ".join(map(str, predictions[:30])))
    out("labels:      " + " ".join(map(str, y_test[:30])))
    out(f"inference model: {(predictions == y_test).mean() * 100:.2f}% of {len(y_test):,} held-out digits")
    xb = x_test[:100]
    native = median_latency(lambda: model(xb), 20)
    reference = median_latency(lambda: ns.run_reference(graph, {"input": xb}), 3, warmup=1)
    out(f"time per batch of 100: native {native * 1e3:.2f} ms, NumPy reference {reference * 1e3:.2f} ms "
        f"({reference / native:.0f}x)")
    return accuracy
