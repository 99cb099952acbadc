"""Shared bits of the examples: data, argument parsing, plotting."""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nutshell.datasets import mnist_split  # noqa: E402


def parse(description, default_plot):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a tiny run (for smoke tests)")
    p.add_argument("--plot", default=default_plot)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def data(quick, train=8000):
    (x, y), (xv, yv) = mnist_split()
    if quick:
        return (x[:512], y[:512]), (xv[:256], yv[:256])
    return (x[:train], y[:train]), (xv, yv)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"saved {path}")
