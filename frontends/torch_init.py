"""torch.nn.init's in-place initialisers on Parameters (and NumPy arrays), as
model code calls them from __init__ or through module.apply(_init_weights).
Each draw is seeded by ns.manual_seed's stream, so runs are reproducible."""
import math

import numpy as np

from . import dsl
from .init import fans


def _rng():
    return np.random.default_rng([dsl._seed["base"], next(dsl._seed["counter"]), 7])


def _shape(tensor):
    return tuple(tensor.shape)


def _set(tensor, values):
    values = np.asarray(values, dtype=np.float32).reshape(_shape(tensor))
    if isinstance(tensor, dsl.Parameter):
        tensor.data = values
    else:
        tensor[...] = values
    return tensor


def calculate_gain(nonlinearity, param=None):
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "conv_transpose2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity}")


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    return _set(tensor, _rng().uniform(a, b, _shape(tensor)))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    return _set(tensor, _rng().normal(mean, std, _shape(tensor)))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Normal values redrawn until inside [a, b] (torch's bounds are absolute)."""
    rng, shape = _rng(), _shape(tensor)
    values = rng.normal(mean, std, shape)
    bad = (values < a) | (values > b)
    while bad.any():
        values[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (values < a) | (values > b)
    return _set(tensor, values)


def constant_(tensor, val):
    return _set(tensor, np.full(_shape(tensor), val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def eye_(tensor):
    return _set(tensor, np.eye(*_shape(tensor)))


def _fan(tensor, mode):
    fan_in, fan_out = fans(_shape(tensor))
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform_(tensor, gain=1.0, generator=None):
    fan_in, fan_out = fans(_shape(tensor))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0, generator=None):
    fan_in, fan_out = fans(_shape(tensor))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode)))


def orthogonal_(tensor, gain=1.0, generator=None):
    shape = _shape(tensor)
    rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    flat = _rng().normal(0.0, 1.0, (rows, cols))
    q, r = np.linalg.qr(flat.T if rows < cols else flat)
    q = q * np.sign(np.diag(r))
    return _set(tensor, gain * (q.T if rows < cols else q))


__all__ = ["calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_",
           "eye_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_"]
