"""The MNIST test set bundled with the package (IDX format, gzip-compressed)."""
import gzip
from importlib import resources

import numpy as np


def _read(name):
    with resources.files("nutshell.data").joinpath(name).open("rb") as f:
        return gzip.decompress(f.read())


def load_mnist():
    """(images float32 [10000, 1, 28, 28] in [0, 1], labels int64 [10000])."""
    raw = _read("t10k-images-idx3-ubyte.gz")
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051:
        raise ValueError("bundled MNIST images are corrupt")
    images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, rows, cols)
    raw = _read("t10k-labels-idx1-ubyte.gz")
    labels = np.frombuffer(raw[8:], dtype=np.uint8).astype(np.int64)
    return images.astype(np.float32) / 255.0, labels


def mnist_split(train=8000):
    """The first `train` images to train on, the rest held out."""
    x, y = load_mnist()
    return (x[:train], y[:train]), (x[train:], y[train:])
