"""Activations with PyTorch's arguments: GELU, SiLU, Softplus, Mish, Hardswish,
Hardsigmoid, PReLU. Each is a registry op where one exists (fast, one kernel),
otherwise a short composition."""
import numpy as np

from .dsl import Module, Parameter, apply
from .layers_ops import like, reshape, sigmoid


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return apply("Gelu", [x], approximate=self.approximate)


class SiLU(Module):
    """x * sigmoid(x) (also called Swish)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return x * sigmoid(x)


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's
    switch to linear, which keeps large inputs exact)."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        if beta == 0:
            raise ValueError("Softplus beta must be non-zero")
        self.beta, self.threshold = float(beta), float(threshold)

    def forward(self, x):
        scaled = x * self.beta if self.beta != 1.0 else x
        soft = apply("Softplus", [scaled])
        if self.beta != 1.0:
            soft = soft * (1.0 / self.beta)
        linear = apply("Greater", [scaled, like(x, self.threshold)])
        return apply("Where", [linear, x, soft])


class Mish(Module):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return apply("Mish", [x])


class Hardswish(Module):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return apply("HardSwish", [x])


class Hardsigmoid(Module):
    """relu6(x + 3) / 6, which is ONNX's HardSigmoid with alpha 1/6, beta 1/2."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return apply("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)


class PReLU(Module):
    """max(0, x) + a * min(0, x), with one slope or one per channel (dim 1)."""

    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        if num_parameters < 1:
            raise ValueError(f"PReLU num_parameters must be >= 1, got {num_parameters}")
        self.num_parameters = int(num_parameters)
        self.weight = Parameter((self.num_parameters,), lambda rng, shape: np.full(shape, init))

    def forward(self, x):
        slope = self.param(x.builder, self.weight)
        if self.num_parameters > 1:
            if len(x.shape) < 2 or x.shape[1] != self.num_parameters:
                raise ValueError(f"PReLU with {self.num_parameters} parameters needs "
                                 f"{self.num_parameters} channels in dim 1, got input {x.shape}")
            slope = reshape(slope, (self.num_parameters,) + (1,) * (len(x.shape) - 2))
        return apply("PRelu", [x, slope])


__all__ = ["GELU", "SiLU", "Softplus", "Mish", "Hardswish", "Hardsigmoid", "PReLU"]
