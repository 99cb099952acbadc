"""Convolution-family layers with PyTorch's arguments and weight layouts:
ConvTranspose2d (weight [in, out/groups, kh, kw], as ONNX's ConvTranspose),
Conv1d (nn.functional's, a 1 x k Conv2d: the compiler's fast path) and Upsample
(every interpolate mode, bicubic and trilinear included)."""
import numpy as np

from . import functional as F
from .dsl import Module, Parameter, apply
from .init import bias_init, fans, weight_init
from .layer_checks import non_negative, positive, require
from .layers_ops import as_tensor, ints


def _tuple(v, n):
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _check_groups(in_channels, out_channels, groups):
    if groups <= 0 or in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")


def conv_repr(m, in_channels, out_channels, kernel, **extra):
    """torch's Conv extra_repr: channels, kernel and stride, then what differs from the default."""
    text = f"{in_channels}, {out_channels}, kernel_size={kernel}, stride={m._stride_tuple()}"
    for name, (value, default) in extra.items():
        if value != default:
            text += f", {name}={value}"
    return text + (", bias=False" if m.bias is None else "")


def _check_sizes(kind, in_channels, out_channels, kernel):
    if in_channels <= 0 or out_channels <= 0 or min(kernel) <= 0:
        raise ValueError(f"{kind} needs positive channels and kernel size, got in_channels="
                         f"{in_channels}, out_channels={out_channels}, kernel_size={kernel}")


class ConvTranspose2d(Module):
    """The gradient of a Conv2d with respect to its input, as a layer (decoders,
    segmentation heads): output = (in - 1) * stride - 2 * padding +
    dilation * (k - 1) + output_padding + 1."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 init="torch"):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError("ConvTranspose2d supports padding_mode='zeros' only")
        kernel = _tuple(kernel_size, 2)
        _check_sizes("ConvTranspose2d", in_channels, out_channels, kernel)
        _check_groups(in_channels, out_channels, groups)
        self.stride, self.padding = _tuple(stride, 2), _tuple(padding, 2)
        self.output_padding, self.dilation = _tuple(output_padding, 2), _tuple(dilation, 2)
        require("ConvTranspose2d", positive, stride=self.stride, dilation=self.dilation)
        require("ConvTranspose2d", non_negative, padding=self.padding, output_padding=self.output_padding)
        if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than stride "
                             f"{self.stride} or dilation {self.dilation}")
        self.groups = groups
        shape = (in_channels, out_channels // groups) + kernel
        self.weight = Parameter(shape, weight_init(init))
        self.bias = Parameter((out_channels,), bias_init(init, fans(shape)[0])) if bias else None

    def _stride_tuple(self):
        return self.stride

    def extra_repr(self):
        c_in, c_out_per_group, *kernel = self.weight.shape
        return conv_repr(self, c_in, c_out_per_group * self.groups, tuple(kernel),
                         padding=(self.padding, (0, 0)), dilation=(self.dilation, (1, 1)),
                         output_padding=(self.output_padding, (0, 0)), groups=(self.groups, 1))

    def forward(self, x, output_size=None):
        b = x.builder
        bias = self.param(b, self.bias) if self.bias is not None else None
        extra = self.output_padding if output_size is None else self._padding_for(x, output_size)
        return F.conv_transpose2d(x, self.param(b, self.weight), bias, self.stride, self.padding,
                                  extra, self.groups, self.dilation)

    def _padding_for(self, x, output_size):
        """The output_padding that gives `output_size` (torch's forward(x, output_size))."""
        want = tuple(int(d) for d in output_size)[-2:]
        extra = []
        for i, size in enumerate(want):
            k = self.weight.shape[2 + i]
            smallest = ((x.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i] +
                        self.dilation[i] * (k - 1) + 1)
            step = max(self.stride[i], self.dilation[i])
            if not smallest <= size < smallest + step:
                raise ValueError(f"ConvTranspose2d output_size {tuple(want)} is outside the "
                                 f"possible sizes ({smallest} to {smallest + step - 1} in dim {2 + i})")
            extra.append(size - smallest)
        return tuple(extra)


class Conv1d(Module):
    """Conv over [N, C, L]; weight [out, in/groups, k] as PyTorch's."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", init="torch"):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError("Conv1d supports padding_mode='zeros' only")
        (k,) = _tuple(kernel_size, 1)
        _check_sizes("Conv1d", in_channels, out_channels, (k,))
        _check_groups(in_channels, out_channels, groups)
        (self.stride,), (self.dilation,) = _tuple(stride, 1), _tuple(dilation, 1)
        require("Conv1d", positive, stride=self.stride, dilation=self.dilation)
        self.groups = groups
        self.padding = self._check_padding(padding)
        shape = (out_channels, in_channels // groups, k)
        self.weight = Parameter(shape, weight_init(init))
        self.bias = Parameter((out_channels,), bias_init(init, fans(shape)[0])) if bias else None

    def _check_padding(self, padding):
        if padding == "same" and self.stride != 1:
            raise ValueError("padding='same' needs stride 1")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv1d: padding must be 'same', 'valid' or an integer, got {padding!r}")
        else:
            require("Conv1d", non_negative, padding=_tuple(padding, 1))
        return padding

    def _stride_tuple(self):
        return (self.stride,)

    def extra_repr(self):
        c_out, c_in_per_group, k = self.weight.shape
        padding = self.padding if isinstance(self.padding, str) else _tuple(self.padding, 1)
        return conv_repr(self, c_in_per_group * self.groups, c_out, (k,),
                         padding=(padding, (0,)), dilation=((self.dilation,), (1,)),
                         groups=(self.groups, 1))

    def forward(self, x):
        if len(x.shape) != 3:
            raise ValueError(f"Conv1d takes [N, C, L] input, got {x.shape}")
        b = x.builder
        bias = self.param(b, self.bias) if self.bias is not None else None
        return F.conv1d(x, self.param(b, self.weight), bias, self.stride, self.padding,
                        self.dilation, self.groups)


_RESIZE_MODES = {"nearest": ("nearest", "asymmetric", "floor"),
                 "nearest-exact": ("nearest", "half_pixel", "round_prefer_ceil"),
                 "linear": ("linear", None, None), "bilinear": ("linear", None, None),
                 "trilinear": ("linear", None, None), "bicubic": ("cubic", None, None)}


def resize(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """PyTorch's interpolate(): the spatial dims (all after N and C) resized."""
    if mode not in _RESIZE_MODES:
        raise ValueError(f"unsupported interpolation mode {mode!r} (choose from {sorted(_RESIZE_MODES)})")
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    op_mode, coords, nearest = _RESIZE_MODES[mode]
    if align_corners is not None and op_mode == "nearest":
        raise ValueError("align_corners only applies to linear and cubic modes")
    if coords is None:
        coords = "align_corners" if align_corners else "pytorch_half_pixel"
    spatial = len(x.shape) - 2
    if spatial < 1:
        raise ValueError(f"interpolation needs [N, C, ...] input, got {x.shape}")
    attrs = dict(mode=op_mode, coordinate_transformation_mode=coords)
    if nearest:
        attrs["nearest_mode"] = nearest
    if op_mode == "cubic":
        attrs["cubic_coeff_a"] = -0.75
    if size is not None:
        sizes = ints(x, list(x.shape[:2]) + list(_tuple(size, spatial)))
        return apply("Resize", [x, None, None, sizes], **attrs)
    factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * spatial
    if len(factors) != spatial or min(factors) <= 0:
        raise ValueError(f"scale_factor {scale_factor} does not fit input {x.shape}")
    scales = np.asarray([1.0, 1.0] + [float(f) for f in factors], np.float32)
    return apply("Resize", [x, None, as_tensor(x, scales)], **attrs)


def _float_scale(scale):
    return tuple(float(f) for f in scale) if isinstance(scale, (tuple, list)) else float(scale)


class Upsample(Module):
    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners
        if mode not in _RESIZE_MODES:
            raise ValueError(f"unsupported Upsample mode {mode!r}")

    def extra_repr(self):
        if self.scale_factor is not None:
            info = f"scale_factor={_float_scale(self.scale_factor)!r}"
        else:
            info = f"size={self.size!r}"
        return info + f", mode={self.mode!r}"

    def forward(self, x):
        return resize(x, self.size, self.scale_factor, self.mode, self.align_corners)


__all__ = ["ConvTranspose2d", "Conv1d", "Upsample"]
