"""Activations with PyTorch's arguments: GELU, SiLU, Softplus, Mish, Hardswish,
Hardsigmoid, PReLU. The maths is nn.functional's (one place); these hold the
arguments and, for PReLU, the slopes."""
import numpy as np

from . import functional as F
from .dsl import Module, Parameter


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self):
        return f"approximate={self.approximate!r}"

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)


class SiLU(Module):
    """x * sigmoid(x) (also called Swish)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.silu(x)


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        if beta == 0:
            raise ValueError("Softplus beta must be non-zero")
        self.beta, self.threshold = beta, threshold

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"

    def forward(self, x):
        return F.softplus(x, float(self.beta), float(self.threshold))


class Mish(Module):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.mish(x)


class Hardswish(Module):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.hardswish(x)


class Hardsigmoid(Module):
    """relu6(x + 3) / 6."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.hardsigmoid(x)


class PReLU(Module):
    """max(0, x) + a * min(0, x), with one slope or one per channel (dim 1)."""

    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        if num_parameters < 1:
            raise ValueError(f"PReLU num_parameters must be >= 1, got {num_parameters}")
        self.num_parameters = int(num_parameters)
        self.weight = Parameter((self.num_parameters,), lambda rng, shape: np.full(shape, init))

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"

    def forward(self, x):
        if self.num_parameters > 1 and (len(x.shape) < 2 or x.shape[1] != self.num_parameters):
            raise ValueError(f"PReLU with {self.num_parameters} parameters needs "
                             f"{self.num_parameters} channels in dim 1, got input {x.shape}")
        return F.prelu(x, self.param(x.builder, self.weight))


__all__ = ["GELU", "SiLU", "Softplus", "Mish", "Hardswish", "Hardsigmoid", "PReLU"]
