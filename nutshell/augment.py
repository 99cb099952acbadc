"""Data augmentation for NumPy image batches (N, C, H, W): random shifts, crops
and flips, each drawing from the generator it is given. Every argument but the
batch has a default, so `fit(augment=ns.augment.random_shift)` works as is."""
import numpy as np


def random_shift(x, max_shift=2, rng=None):
    """Shift each image by up to `max_shift` pixels in each direction, zero fill."""
    rng = rng if rng is not None else np.random.default_rng()
    n, _, h, w = x.shape
    out = np.zeros_like(x)
    for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (n, 2))):
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[i, :, yd, xd] = x[i, :, ys, xs]
    return out


def random_crop(x, size=None, rng=None, padding=None):
    """Random `size` x `size` crops after zero padding each side by `padding`
    (default: crops of the image's own size from it padded by 4, as for CIFAR)."""
    rng = rng if rng is not None else np.random.default_rng()
    padding = padding if padding is not None else (0 if size else 4)
    size = size or x.shape[2]
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, h, w = x.shape
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the (padded) image {h}x{w}")
    tops = rng.integers(0, h - size + 1, n)
    lefts = rng.integers(0, w - size + 1, n)
    return np.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(tops, lefts))])


def random_flip(x, rng=None, p=0.5):
    """Mirror each image left-right with probability p."""
    rng = rng if rng is not None else np.random.default_rng()
    flip = rng.random(len(x)) < p
    out = x.copy()
    out[flip] = x[flip, ..., ::-1]
    return out
