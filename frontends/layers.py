"""Layers with PyTorch's names, arguments and state_dict keys."""
import numpy as np

from .batch_stats import batch_moments, fused_batch_norm
from .dsl import Module, Parameter, Tensor, apply, constant, next_seed
from .layer_checks import check_width, conv_pads, layer_error, positive, require
from .init import bias_init, fans, ones, weight_init, zeros


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, init="torch"):
        require("Linear", positive, in_features=in_features, out_features=out_features)
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter((out_features, in_features), weight_init(init))
        self.bias = Parameter((out_features,), bias_init(init, in_features)) if bias else None

    def forward(self, x):
        check_width(self, x, -1, self.in_features, "in_features")
        b = x.builder
        w = self.param(b, self.weight)
        inputs = [x, w] + ([self.param(b, self.bias)] if self.bias is not None else [])
        if len(x.shape) == 2:
            return apply("Gemm", inputs, transB=1)
        y = apply("MatMul", [x, apply("Transpose", [w])])
        return y + inputs[2] if self.bias is not None else y


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, init="torch"):
        require("Conv2d", positive, in_channels=in_channels, out_channels=out_channels,
                kernel_size=kernel_size, stride=stride, dilation=dilation)
        super().__init__()
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        kh, kw = _pair(kernel_size)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.pads = conv_pads(self.padding, (kh, kw), self.dilation, self.stride)
        self.in_channels, self.groups = in_channels, groups
        shape = (out_channels, in_channels // groups, kh, kw)
        self.weight = Parameter(shape, weight_init(init))
        self.bias = Parameter((out_channels,), bias_init(init, fans(shape)[0])) if bias else None

    def forward(self, x):
        check_width(self, x, 1, self.in_channels, "in_channels")
        b = x.builder
        inputs = [x, self.param(b, self.weight)]
        if self.bias is not None:
            inputs.append(self.param(b, self.bias))
        return apply("Conv", inputs, strides=self.stride, pads=self.pads,
                     dilations=self.dilation, group=self.groups)


class BatchNorm2d(Module):
    """affine=False: no weight and bias; track_running_stats=False: no running
    statistics, batch statistics in eval() too (PyTorch's arguments)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        if momentum is None:
            raise ValueError("BatchNorm momentum=None (a cumulative average) is not supported")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter((num_features,), ones) if affine else None
        self.bias = Parameter((num_features,), zeros) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, np.float32))
            self.register_buffer("running_var", np.ones(num_features, np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def extra_repr(self):          # torch 2.13's wording
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.affine}, track_running_stats={self.track_running_stats}")

    def forward(self, x):
        check_width(self, x, 1, self.num_features, "num_features")
        b = x.builder
        c = x.shape[1]
        if (self.training_now(x) or not self.track_running_stats) and x.type.size // c == 1:
            raise layer_error(self, "expected more than 1 value per channel when training, got input of "
                              f"shape {tuple(x.shape)}")    # as torch: no variance to take
        weight = self.param(b, self.weight) if self.affine else constant(b, np.ones(c, np.float32))
        bias = self.param(b, self.bias) if self.affine else constant(b, np.zeros(c, np.float32))
        if not self.track_running_stats:
            return batch_norm_train(x, weight, bias, None, None, None, self.eps, self.momentum)
        mean, var = self.buffer(b, "running_mean"), self.buffer(b, "running_var")
        if not self.training_now(x):
            return apply("BatchNormalization", [x, weight, bias, mean, var], epsilon=self.eps)
        steps = self.buffer(b, "num_batches_tracked")
        return batch_norm_train(x, weight, bias, mean, var, steps, self.eps, self.momentum)


def batch_norm_train(x, weight, bias, mean, var, steps, eps, momentum):
    """BatchNorm with batch statistics, one BatchNormTrain op where it can be
    (batch_stats.fused_batch_norm), else composed from primitives; records the
    running-statistics updates in the trace."""
    b = x.builder
    fused = fused_batch_norm(x, weight, bias, eps)
    if fused is not None:
        y, batch_mean, batch_var, count = fused
    else:    # this rank's batch, or every rank's under sync_batchnorm (shifted by the running mean)
        rank = len(x.shape)
        axes = constant(b, np.asarray([0] + list(range(2, rank)), np.int64))
        per_channel = (1, x.shape[1]) + (1,) * (rank - 2)
        batch_mean, centered, batch_var, count = batch_moments(x, axes, mean)
        inv_std = 1.0 / apply("Sqrt", [batch_var + eps])
        y = centered * inv_std * weight.reshape(per_channel) + bias.reshape(per_channel)
    if mean is None:                  # track_running_stats=False: nothing to update
        return y
    unbiased = batch_var.reshape(x.shape[1]) * (count / max(count - 1, 1))
    mean_name, var_name = mean.name, var.name
    updates = b.trace.updates
    # a layer called twice in one step (a GAN's D on fakes, then on reals) updates
    # from its first update, as PyTorch's two forward calls do
    mean, var = (Tensor(b, updates.get(t.name, t.name)) for t in (mean, var))
    updates[mean_name] = (mean * (1 - momentum) + batch_mean.reshape(x.shape[1]) * momentum).name
    updates[var_name] = (var * (1 - momentum) + unbiased * momentum).name
    if steps is not None:
        updates[steps.name] = (Tensor(b, updates.get(steps.name, steps.name)) + 1).name
    return y


class BatchNorm1d(BatchNorm2d):
    """Over [N, C] or [N, C, L] (the same maths as BatchNorm2d)."""


class BatchNorm3d(BatchNorm2d):
    """Over [N, C, D, H, W]."""


class _Pool(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel
        self.padding, self.ceil_mode = _pair(padding), int(bool(ceil_mode))

    def _attrs(self):
        ph, pw = self.padding
        return dict(kernel_shape=self.kernel, strides=self.stride, pads=(ph, pw, ph, pw),
                    ceil_mode=self.ceil_mode)


class MaxPool2d(_Pool):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = _pair(dilation)

    def forward(self, x):
        return apply("MaxPool", [x], dilations=self.dilation, **self._attrs())


class AvgPool2d(_Pool):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = int(bool(count_include_pad))

    def forward(self, x):
        return apply("AveragePool", [x], count_include_pad=self.count_include_pad, **self._attrs())


class AdaptiveAvgPool2d(Module):
    """Only output size 1 (global average pooling), as classifiers use it."""

    def __init__(self, output_size=1):
        super().__init__()
        if _pair(output_size) != (1, 1):
            raise ValueError("AdaptiveAvgPool2d supports output_size=1 only")

    def forward(self, x):
        return apply("GlobalAveragePool", [x])


class Flatten(Module):
    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return apply("Flatten", [x], axis=self.start_dim)


class Dropout(Module):
    """Identity at inference; the training work adds the seeded, scaled mask."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.seed = next_seed()      # each layer its own mask stream, seeded by manual_seed

    def mask_shape(self, x):
        return x.shape

    def forward(self, x):
        if not self.training_now(x) or self.p == 0.0:
            return apply("Dropout", [x])
        step = Tensor(x.builder, x.builder.trace.step)
        mask = apply("DropoutMask", [step], ratio=float(self.p), seed=self.seed, shape=self.mask_shape(x))
        return x * mask


class Dropout2d(Dropout):
    """Zeroes whole channels: one mask value per (sample, channel), as torch's
    Dropout1d/2d/3d on [N, C, *spatial]."""
    spatial = 2

    def mask_shape(self, x):
        if x.ndim != self.spatial + 2:
            raise ValueError(f"{type(self).__name__} takes [N, C] + {self.spatial} spatial dims, got {x.shape}")
        return tuple(x.shape[:2]) + (1,) * self.spatial


class Dropout1d(Dropout2d):
    spatial = 1


class Dropout3d(Dropout2d):
    spatial = 3


def _activation(op, **defaults):
    class Activation(Module):
        def __init__(self, *args, **kwargs):
            super().__init__()
            self.attrs = dict(defaults)
            for (key, _), value in zip(defaults.items(), args):
                self.attrs[key] = value
            kwargs.pop("inplace", None)      # nn.ReLU(inplace=True): the same values out
            self.attrs.update(kwargs)

        def forward(self, x):
            attrs = {_ONNX_NAMES.get(k, k): v for k, v in self.attrs.items()}
            return apply(op, [x], **attrs)
    return Activation


_ONNX_NAMES = {"negative_slope": "alpha", "dim": "axis"}
ReLU = _activation("Relu")
LeakyReLU = _activation("LeakyRelu", negative_slope=0.01)
ELU = _activation("Elu", alpha=1.0)
Sigmoid = _activation("Sigmoid")
Tanh = _activation("Tanh")
Softmax = _activation("Softmax", dim=-1)
LogSoftmax = _activation("LogSoftmax", dim=-1)
for _cls, _name in ((ReLU, "ReLU"), (LeakyReLU, "LeakyReLU"), (ELU, "ELU"), (Sigmoid, "Sigmoid"),
                    (Tanh, "Tanh"), (Softmax, "Softmax"), (LogSoftmax, "LogSoftmax")):
    _cls.__name__ = _cls.__qualname__ = _name


class Maxout(Module):
    """Max over groups of `pool_size` consecutive features (Goodfellow et al.)."""

    def __init__(self, pool_size):
        super().__init__()
        self.pool_size = int(pool_size)

    def forward(self, x):
        return apply("Maxout", [x], pool_size=self.pool_size)


class Identity(Module):
    def __init__(self, *args, **kwargs):      # torch's Identity ignores its arguments
        super().__init__()

    def forward(self, x):
        return x


class Sequential(Module):
    def __init__(self, *layers):
        super().__init__()
        named = layers[0].items() if len(layers) == 1 and isinstance(layers[0], dict) else enumerate(layers)
        for name, layer in named:        # Sequential(OrderedDict([("conv", ...), ...])) keeps the names
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes modules, got {type(layer).__name__} for '{name}'")
            setattr(self, str(name), layer)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def append(self, layer):
        setattr(self, str(len(self._modules)), layer)
        return self

    def __len__(self):
        return len(self._modules)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x


__all__ = ["Linear", "Conv2d", "BatchNorm2d", "BatchNorm1d", "BatchNorm3d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "Flatten", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "ReLU", "LeakyReLU",
           "ELU", "Sigmoid", "Tanh",
           "Softmax", "LogSoftmax", "Maxout", "Identity", "Sequential", "Module", "Parameter",
           "constant"]

# The rest of PyTorch's layers, one file per family (each under ~400 lines).
from .layers_act import *  # noqa: E402,F401,F403
from .layers_attention import *  # noqa: E402,F401,F403
from .layers_containers import *  # noqa: E402,F401,F403
from .layers_conv import *  # noqa: E402,F401,F403
from .layers_norm import *  # noqa: E402,F401,F403
from .layers_transformer import *  # noqa: E402,F401,F403
from . import (layers_act, layers_attention, layers_containers, layers_conv, layers_norm,  # noqa: E402
               layers_transformer)
__all__ += (layers_act.__all__ + layers_attention.__all__ + layers_containers.__all__ +
            layers_conv.__all__ + layers_norm.__all__ + layers_transformer.__all__)
from .layers_recurrent import GRU, LSTM, RNN  # noqa: E402  (the recurrent layers)
__all__ += ["LSTM", "GRU", "RNN"]
from .layers_more import *  # noqa: E402,F401,F403  (small wrappers: ReLU6, EmbeddingBag, ParameterList ...)
from .layers_more import __all__ as _more  # noqa: E402
__all__ += _more
