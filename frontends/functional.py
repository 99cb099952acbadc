"""torch.nn.functional on traced tensors (as `nutshell.nn.functional`):
activations, linear/conv/pool, dropout, embedding, normalisation, interpolate,
pad and one_hot; the losses are in functional_losses.py. Each is a registry op
where one exists (one kernel), otherwise a short composition."""
import numpy as np

from nutshell.compiler.ir.types import DType

from . import dsl
from . import tensor as T
from .functional_losses import *  # noqa: F401,F403
from .functional_losses import __all__ as _LOSSES
from .indexing import take
from .random import call_seed, step_value
from .tensor_math import clamp, log_softmax as _log_softmax, relu, sigmoid, softmax as _softmax, tanh  # noqa: F401
from .tensor_ops import reshape, sum as _sum


def _pair(v):
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _t(x):
    return T.tensor_of(x)


# activations ------------------------------------------------------------------------------

def relu6(x, inplace=False):
    return clamp(x, 0.0, 6.0)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    return T.apply("LeakyRelu", [_t(x)], alpha=float(negative_slope))


def elu(x, alpha=1.0, inplace=False):
    return T.apply("Elu", [_t(x)], alpha=float(alpha))


def selu(x, inplace=False):
    return T.apply("Selu", [_t(x)])


def celu(x, alpha=1.0, inplace=False):
    return T.apply("Celu", [_t(x)], alpha=float(alpha))


def gelu(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return T.apply("Gelu", [_t(x)], approximate=approximate)


def silu(x, inplace=False):
    return x * sigmoid(x)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold (torch's linear switch)."""
    x = _t(x)
    scaled = x * beta if beta != 1 else x
    soft = T.apply("Softplus", [scaled])
    soft = soft * (1.0 / beta) if beta != 1 else soft
    return T.apply("Where", [scaled > threshold, x, soft])


def mish(x, inplace=False):
    return T.apply("Mish", [_t(x)])


def hardswish(x, inplace=False):
    return T.apply("HardSwish", [_t(x)])


def hardsigmoid(x, inplace=False):
    return T.apply("HardSigmoid", [_t(x)], alpha=1.0 / 6.0, beta=0.5)


def hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
    return clamp(x, min_val, max_val)


def softsign(x):
    return x / (x.abs() + 1.0)


def logsigmoid(x):
    """min(x, 0) - log1p(exp(-|x|)): no overflow for any x."""
    x = _t(x)
    return -(-x).relu() - (T.apply("Exp", [-x.abs()]) + 1.0).log()


def prelu(x, weight):
    x, w = _t(x), _t(weight)
    if w.ndim == 1 and w.shape[0] > 1 and x.ndim >= 2:       # one slope per channel (dim 1)
        w = reshape(w, (w.shape[0],) + (1,) * (x.ndim - 2))
    return T.apply("PRelu", [x, w])


def _legacy_dim(x):
    return 0 if x.ndim in (0, 1, 3) else 1


def softmax(x, dim=None, dtype=None, _stacklevel=3):
    return _softmax(x, _legacy_dim(_t(x)) if dim is None else dim, dtype)


def log_softmax(x, dim=None, dtype=None, _stacklevel=3):
    return _log_softmax(x, _legacy_dim(_t(x)) if dim is None else dim, dtype)


def softmin(x, dim=None, dtype=None):
    return softmax(-_t(x), dim, dtype)


# linear, convolution, pooling -------------------------------------------------------------

def linear(x, weight, bias=None):
    x, w = _t(x), _t(weight)
    if x.ndim == 2:
        return T.apply("Gemm", [x, w] + ([_t(bias)] if bias is not None else []), transB=1)
    y = x @ w.t()
    return y + bias if bias is not None else y


def bilinear(x1, x2, weight, bias=None):
    y = (x1.unsqueeze(1) @ _t(weight) @ x2.unsqueeze(1).unsqueeze(-1)).squeeze(-1).squeeze(-1)
    return y + bias if bias is not None else y


def _conv_pads(padding, weight_shape, dilation, stride):
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if any(s != 1 for s in stride):
            raise ValueError("padding='same' needs stride 1 (as in torch)")
        total = [d * (k - 1) for d, k in zip(dilation, weight_shape[2:])]
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    ph, pw = _pair(padding)
    return (ph, pw, ph, pw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    w = _t(weight)
    stride, dilation = _pair(stride), _pair(dilation)
    pads = _conv_pads(padding, w.shape, dilation, stride)
    inputs = [_t(x), w] + ([_t(bias)] if bias is not None else [])
    return T.apply("Conv", inputs, strides=stride, pads=pads, dilations=dilation, group=int(groups))


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    pad = padding if isinstance(padding, str) else (0, int(_pair(padding)[0]))
    y = conv2d(_t(x).unsqueeze(2), _t(weight).unsqueeze(2), bias, (1, _pair(stride)[0]), pad,
               (1, _pair(dilation)[0]), groups)
    return y.squeeze(2)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    ph, pw = _pair(padding)
    inputs = [_t(x), _t(weight)] + ([_t(bias)] if bias is not None else [])
    return T.apply("ConvTranspose", inputs, strides=_pair(stride), pads=(ph, pw, ph, pw),
                   output_padding=_pair(output_padding), dilations=_pair(dilation), group=int(groups))


def _pool_attrs(kernel_size, stride, padding, ceil_mode):
    kernel = _pair(kernel_size)
    stride = kernel if stride is None or stride == [] else _pair(stride)
    ph, pw = _pair(padding)
    return dict(kernel_shape=kernel, strides=stride, pads=(ph, pw, ph, pw), ceil_mode=int(bool(ceil_mode)))


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if return_indices:
        raise ValueError("max_pool2d(return_indices=True) is not supported")
    return T.apply("MaxPool", [_t(x)], dilations=_pair(dilation),
                   **_pool_attrs(kernel_size, stride, padding, ceil_mode))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    if divisor_override is not None:
        raise ValueError("avg_pool2d(divisor_override=...) is not supported")
    return T.apply("AveragePool", [_t(x)], count_include_pad=int(bool(count_include_pad)),
                   **_pool_attrs(kernel_size, stride, padding, ceil_mode))


def _adaptive(op, x, output_size):
    x = _t(x)
    out = [x.shape[-2 + i] if s is None else int(s) for i, s in enumerate(_pair_none(output_size))]
    if out == [1, 1]:
        return T.apply("GlobalAveragePool" if op == "AveragePool" else "GlobalMaxPool", [x])
    h, w = x.shape[-2:]
    if h % out[0] or w % out[1]:
        raise ValueError(f"adaptive pooling {x.shape[-2:]} -> {tuple(out)} needs divisible sizes")
    kernel = (h // out[0], w // out[1])
    return T.apply(op, [x], kernel_shape=kernel, strides=kernel)


def _pair_none(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def adaptive_avg_pool2d(x, output_size):
    return _adaptive("AveragePool", x, output_size)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    return _adaptive("MaxPool", x, output_size)


# dropout, embedding, normalisation --------------------------------------------------------

def dropout(x, p=0.5, training=True, inplace=False, _mask_shape=None):
    """Identity unless `training` and the graph is a training step; then a
    seeded mask per call site and step, scaled by 1 / (1 - p)."""
    x = _t(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    trace = x.builder.trace
    if not training or not trace.training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    seed, step = call_seed(x.builder), step_value(x.builder)
    return x * T.apply("DropoutMask", [step], ratio=float(p), seed=seed, shape=_mask_shape or x.shape)


def dropout2d(x, p=0.5, training=True, inplace=False):
    """Whole channels of [N, C, H, W] zeroed (one mask value per sample and channel)."""
    x = _t(x)
    if x.ndim != 4:
        raise ValueError(f"dropout2d takes [N, C, H, W], got shape {x.shape}")
    return dropout(x, p, training, _mask_shape=tuple(x.shape[:2]) + (1, 1))


def embedding(ids, weight, padding_idx=None, max_norm=None, *args, **kwargs):
    if max_norm is not None:
        raise ValueError("embedding(max_norm=...) is not supported")
    weight = _t(weight)
    rows = take(weight, ids, 0)
    if padding_idx is None:
        return rows
    # as torch: the padding row reads as its value and passes no gradient back
    padding_idx = int(padding_idx) % weight.shape[0]
    pad = (T.tensor_of(ids) == padding_idx).unsqueeze(-1)
    return T.apply("Where", [pad, rows.detach(), rows])


def one_hot(ids, num_classes=-1):
    ids = _t(ids)
    if num_classes is None or num_classes < 0:
        raise ValueError("one_hot needs num_classes: the class count must be known when tracing")
    classes = T.constant(ids.builder, np.arange(num_classes, dtype=np.int64))
    return (ids.long().unsqueeze(-1) == classes).long()


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = _t(x)
    k = len(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else 1
    dims = list(range(x.ndim - k, x.ndim))
    centered = x - x.mean(dims, keepdim=True)
    y = centered * ((centered * centered).mean(dims, keepdim=True) + eps).rsqrt()
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    x = _t(x)
    n, c = x.shape[:2]
    g = reshape(x, (n, num_groups, -1))
    g = layer_norm(g, (g.shape[-1],), eps=eps)
    y = reshape(g, x.shape)
    per_channel = (c,) + (1,) * (x.ndim - 2)
    y = y * reshape(_t(weight), per_channel) if weight is not None else y
    return y + reshape(_t(bias), per_channel) if bias is not None else y


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Running statistics (training=False), or this batch's (training=True;
    the running buffers are not updated by the functional form)."""
    x = _t(x)
    c = x.shape[1]
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    if training:
        dims = [0] + list(range(2, x.ndim))
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) * (x - mean)).mean(dims, keepdim=True)
    else:
        mean, var = reshape(_t(running_mean), per_channel), reshape(_t(running_var), per_channel)
    y = (x - mean) * (var + eps).rsqrt()
    y = y * reshape(_t(weight), per_channel) if weight is not None else y
    return y + reshape(_t(bias), per_channel) if bias is not None else y


def normalize(x, p=2.0, dim=1, eps=1e-12):
    x = _t(x)
    return x / clamp(x.norm(p, dim, keepdim=True), min=eps)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    x1, x2 = T.promote(x1, x2)
    dot = _sum(x1 * x2, dim)
    return dot / clamp(x1.norm(dim=dim) * x2.norm(dim=dim), min=eps)


# resampling and padding -------------------------------------------------------------------

def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Every mode of torch's (nearest, nearest-exact, linear, bilinear, bicubic,
    trilinear); the Resize attributes are chosen in layers_conv.resize, as Upsample's."""
    from .layers_conv import resize
    x = _t(x)
    if antialias:
        raise ValueError("interpolate(antialias=True) is not supported")
    if recompute_scale_factor and scale_factor is not None:
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * (x.ndim - 2)
        size, scale_factor = tuple(int(np.floor(d * f)) for d, f in zip(x.shape[2:], factors)), None
    return resize(x, size, scale_factor, mode, align_corners)


upsample = interpolate

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x, pad, mode="constant", value=None):
    """torch's pad: (left, right) pairs from the last dimension backwards."""
    x = _t(x)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad {tuple(pad)} does not fit a tensor of rank {x.ndim}")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad mode {mode!r} is not supported")
    begin, end = [0] * x.ndim, [0] * x.ndim
    for k in range(len(pad) // 2):
        begin[x.ndim - 1 - k], end[x.ndim - 1 - k] = int(pad[2 * k]), int(pad[2 * k + 1])
    pads = T.constant(x.builder, np.asarray(begin + end, np.int64))
    inputs = [x, pads]
    if mode == "constant" and value:
        inputs.append(T.constant(x.builder, np.asarray(value, x.dtype.numpy)))
    return T.apply("Pad", inputs, mode=_PAD_MODES[mode])


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """softmax(q k^T * scale + mask) v, as torch's reference formula: a bool mask
    keeps where True, a float mask is added; is_causal masks the upper triangle."""
    q, k, v = T.promote(query, key, value)
    length, source = q.shape[-2], k.shape[-2]
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if is_causal:
        keep = np.tril(np.ones((length, source), bool))
        scores = scores.masked_fill(T.constant(q.builder, ~keep), float("-inf"))
    if attn_mask is not None:
        mask = T.tensor_of(attn_mask, q.builder)
        if mask.dtype == DType.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = dropout(_softmax(scores, -1), dropout_p) if dropout_p else _softmax(scores, -1)
    return weights @ v


def pixel_shuffle(x, upscale_factor):
    """[N, C r^2, H, W] -> [N, C, H r, W r], as reshapes and one transpose."""
    x, r = _t(x), int(upscale_factor)
    *lead, c, h, w = x.shape
    y = reshape(x, tuple(lead) + (c // (r * r), r, r, h, w))
    n = len(lead)
    y = y.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return reshape(y, tuple(lead) + (c // (r * r), h * r, w * r))


def pixel_unshuffle(x, downscale_factor):
    """[N, C, H r, W r] -> [N, C r^2, H, W] (pixel_shuffle's inverse)."""
    x, r = _t(x), int(downscale_factor)
    *lead, c, h, w = x.shape
    n = len(lead)
    y = reshape(x, tuple(lead) + (c, h // r, r, w // r, r))
    y = y.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return reshape(y, tuple(lead) + (c * r * r, h // r, w // r))


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    return (x1 - x2 + eps).norm(p, -1, keepdim)


__all__ = ["relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "softplus", "mish",
           "hardswish", "hardsigmoid", "hardtanh", "softsign", "logsigmoid", "prelu", "sigmoid", "tanh",
           "softmax", "log_softmax", "softmin", "linear", "bilinear", "conv1d", "conv2d",
           "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
           "dropout", "dropout2d", "embedding", "one_hot", "layer_norm", "group_norm", "batch_norm", "normalize",
           "cosine_similarity", "interpolate", "upsample", "pad", "pairwise_distance",
           "scaled_dot_product_attention", "pixel_shuffle", "pixel_unshuffle"] + list(_LOSSES)
