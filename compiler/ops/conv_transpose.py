"""ConvTranspose: the input gradient of the convolution its geometry describes
(transpose_geometry), so it runs as ConvGradInput's lowering (ops/conv_grad.py) and
its gradient is that convolution's forward and weight gradient, roles swapped."""
import numpy as np

from ..errors import UnsupportedOpError
from ..lower.nests import map_nest
from .common import fail, tt
from .conv import with_bias_grad
from .conv_common import CONV_ATTRS
from .conv_grad import _grad_input_lower, _grad_input_reference
from .conv_variants import grad_input_variant
from .registry import gradient, register


def transpose_geometry(node, attrs, x_shape, w_shape):
    """ConvTranspose as the gradient of a convolution: (conv attributes with explicit
    pads, the output shape)."""
    rank = len(x_shape) - 2
    strides = tuple(attrs.get("strides") or (1,) * rank)
    dil = tuple(attrs.get("dilations") or (1,) * rank)
    kernel = tuple(attrs.get("kernel_shape") or w_shape[2:])
    out_pad = tuple(attrs.get("output_padding") or (0,) * rank)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if min(strides + dil, default=1) <= 0:
        fail(node, "ConvTranspose strides and dilations must be positive")
    for name, value in (("strides", strides), ("dilations", dil), ("kernel_shape", kernel),
                        ("output_padding", out_pad)):
        if len(value) != rank:
            fail(node, f"{name} has {len(value)} values for {rank} spatial dims")
    if any(not 0 <= p < max(s, d) for p, s, d in zip(out_pad, strides, dil)):
        fail(node, f"output_padding {list(out_pad)} must be >= 0 and less than the stride or dilation")
    if attrs.get("output_shape") is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(attrs["output_shape"])[-rank:] if attrs.get("output_shape") is not None else \
            tuple(x * s for x, s in zip(x_shape[2:], strides))
        total = [s * (i - 1) + op + e - o for s, i, op, e, o in zip(strides, x_shape[2:], out_pad, eff, out)]
        if auto_pad == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    else:
        pads = tuple(attrs.get("pads") or (0,) * (2 * rank)) if auto_pad != "VALID" else (0,) * (2 * rank)
        begin, end = list(pads[:rank]), list(pads[rank:])
        out = tuple(s * (i - 1) + op + e - b - en
                    for s, i, op, e, b, en in zip(strides, x_shape[2:], out_pad, eff, begin, end))
    if min(begin + end, default=0) < 0 or min(out, default=1) <= 0:
        fail(node, f"ConvTranspose geometry does not fit: pads {begin + end}, output {list(out)}")
    group = attrs.get("group", 1)
    conv = {"strides": strides, "dilations": dil, "pads": tuple(begin) + tuple(end), "group": group,
            "input_shape": (x_shape[0], w_shape[1] * group) + tuple(out)}
    return conv, conv["input_shape"]


def _transpose_infer(attrs, types, consts, node):
    x, w = types[0], types[1]
    if x.rank != w.rank or x.shape[1] != w.shape[0] or attrs.get("group", 1) <= 0:
        fail(node, f"ConvTranspose input {x.shape} and weight {w.shape} do not fit")
    return [tt(x.dtype, transpose_geometry(node, attrs, x.shape, w.shape)[1])]


def _transpose_reference(attrs, x, w, b=None):
    conv, shape = transpose_geometry("ref", attrs, x.shape, w.shape)
    y = _grad_input_reference(conv, x, w).astype(np.float64)
    if b is not None:
        y += b.reshape((1, -1) + (1,) * (x.ndim - 2))
    return y.astype(x.dtype)


def _transpose_lower(ctx):
    conv, shape = transpose_geometry(ctx.node.name, ctx.attrs, ctx.in_types[0].shape, ctx.in_types[1].shape)
    if len(shape) != 4:
        raise UnsupportedOpError("ConvTranspose", detail=f"{len(shape) - 2}-D is not lowered yet")
    ctx.attrs = conv
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    _grad_input_lower(ctx)
    if bias is not None:
        out = ctx.outputs[0]
        map_nest(ctx, out, shape, [out, bias], [shape, (shape[1], 1, 1)], lambda v, bv: v + bv)


def _transpose_variant(node, in_types, consts, target):
    """ConvTranspose runs as ConvGradInput of the convolution its geometry describes."""
    if len(in_types[0].shape) != 4:
        return None
    conv, _ = transpose_geometry(node.name, node.attrs, in_types[0].shape, in_types[1].shape)
    return grad_input_variant(node, in_types, consts, target, attrs=conv)


register("ConvTranspose", inputs=(2, 3), attrs=dict(CONV_ATTRS, output_padding=None, output_shape=None),
         infer=_transpose_infer, reference=_transpose_reference, lower=_transpose_lower, variant=_transpose_variant)


@gradient("ConvTranspose")
def _conv_transpose_grad(g, node, dys, wanted):
    """ConvTranspose(X, W) is ConvGradInput(X, W) of the convolution its geometry
    describes, so dX = Conv(dY, W) and dW = ConvGradWeight(dY, X), roles swapped
    (output_padding's extra rows of dY are read by no window: they get no say)."""
    x, w = node.inputs[:2]
    dy = dys[0]
    conv, _ = transpose_geometry(node.name, node.attrs, g.shape(x), g.shape(w))
    attrs = {k: conv[k] for k in ("strides", "dilations", "pads", "group")}
    dx = g.op("Conv", [dy, w], **attrs) if wanted[0] else None
    dw = g.op("ConvGradWeight", [dy, x], weight_shape=g.shape(w), **attrs) if wanted[1] else None
    return [dx, dw] + with_bias_grad(g, node, dy, wanted)
