"""How each convolution op describes itself to the variant step (schedule/variants.py):
its registry entry's `variant` hook, (node, in_types, consts, target) -> the
ConvVariant its lowering then reads as ctx.variant. None where the op is not
lowered (not 2-D: the lowering says so)."""
from dataclasses import replace

from ..schedule.variants import (WINOGRAD, ConvShape, choose_conv_variant, choose_grad_input_variant,
                                 choose_grad_weight_variant)
from .conv_common import window_geometry


def _shape(node, attrs, x_shape, w_shape, batch, channels, out_hw=None):
    """ConvShape of the 2-D convolution of x_shape by w_shape; out_hw: the map the
    described convolution computes when it is not the forward's output (dX's)."""
    _, _, strides, dil, out = window_geometry(node.name, attrs, x_shape[2:], w_shape[2:])
    return ConvShape(batch, channels, tuple(w_shape[2:]), tuple(strides), tuple(dil), attrs.get("group", 1),
                     tuple(out_hw or out), dy_hw=tuple(out))


def conv_variant(node, in_types, consts, target):
    """A constant weight the Winograd pass left direct is checked for Winograd's
    precision only where Winograd would otherwise run (the check reads every weight)."""
    from .winograd import precise_enough
    x, w = in_types[0].shape, in_types[1].shape
    if len(x) != 4:
        return None
    weights = consts[1] if len(consts) > 1 else None
    shape = replace(_shape(node, node.attrs, x, w, x[0], (x[1], w[0])), constant_weights=weights is not None)
    variant = choose_conv_variant(shape, target)
    if variant.algorithm == WINOGRAD and weights is not None and not precise_enough(weights):
        variant = choose_conv_variant(replace(shape, weights_precise=False), target)
    return variant


def grad_input_variant(node, in_types, consts, target, attrs=None):
    """ConvGradInput: dX [n, c, h, w] from dY [n, m, oh, ow], described as the
    convolution of dY that makes dX (Winograd runs it so)."""
    attrs = attrs or node.attrs
    x, w = tuple(attrs["input_shape"]), in_types[1].shape
    if len(x) != 4:
        return None
    return choose_grad_input_variant(_shape(node, attrs, x, w, x[0], (w[0], x[1]), out_hw=x[2:]), target)


def grad_weight_variant(node, in_types, consts, target):
    x, w = in_types[0].shape, tuple(node.attrs["weight_shape"])
    if len(x) != 4:
        return None
    return choose_grad_weight_variant(_shape(node, node.attrs, x, w, x[0], (x[1], w[0])), target)
