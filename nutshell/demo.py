"""`nutshell demo`: LeNet-5 built in the DSL, compiled to native SIMD code, classifies
the held-out real MNIST digits bundled with the package."""
import time
from importlib import resources

import numpy as np

import nutshell as ns
from nutshell.datasets import mnist_split
from nutshell.models import lenet5

SHADES = " .:-=+*#%@"


def ascii_digit(image):
    rows = []
    for r in range(0, 28, 2):
        rows.append("".join(SHADES[min(9, int(v * 10))] for v in image[0, r, ::1]))
    return "\n".join(rows)


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run_demo(threads=None, batch=100, out=print):
    (_, _), (x_test, y_test) = mnist_split()
    net = lenet5()
    with resources.files("nutshell.data").joinpath("lenet5_mnist.npz").open("rb") as f:
        weights = dict(np.load(f))
    net.load_state_dict(weights)
    out(f"LeNet-5 in the nutshell DSL: {net.num_parameters():,} parameters "
        "(weights: tools/train_lenet_weights.py, first 8,000 MNIST test images)")

    t = time.perf_counter()
    graph = net.trace((batch, 1, 28, 28))
    model = ns.compile(graph, threads=threads)
    out(f"compiled for {model.target.cpu} ({model.target.vector_bits}-bit vectors, "
        f"{model.target.threads} threads) in {time.perf_counter() - t:.2f} s; "
        f"arena {model.arena_size / 1024:.0f} KiB")

    n = len(x_test) // batch * batch
    predictions = np.concatenate([model(x_test[i:i + batch]).argmax(1) for i in range(0, n, batch)])
    accuracy = float((predictions == y_test[:n]).mean())

    out("\nfirst held-out digit:\n" + ascii_digit(x_test[0]))
    out(f"predicted {predictions[0]}, label {y_test[0]}\n")
    out("predictions: " + " ".join(map(str, predictions[:30])))
    out("labels:      " + " ".join(map(str, y_test[:30])))
    out(f"held-out accuracy: {accuracy * 100:.2f}% on {n} real MNIST images (8,000-9,999)")

    xb = x_test[:batch]
    native = _median_time(lambda: model(xb), 20)
    reference = _median_time(lambda: ns.run_reference(graph, {"input": xb}), 3)
    ref_pred = ns.run_reference(graph, {"input": xb})[graph.outputs[0].name].argmax(1)
    out(f"time per batch of {batch}: native {native * 1e3:.2f} ms, NumPy reference "
        f"{reference * 1e3:.2f} ms ({reference / native:.0f}x); same predictions as the "
        f"reference: {bool((ref_pred == predictions[:batch]).all())}")
    return accuracy
