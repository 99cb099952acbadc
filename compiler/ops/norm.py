"""BatchNormalization (inference form): y = x * a[c] + b[c], a and b from the statistics."""
import numpy as np

from ..errors import UnsupportedOpError
from ..lower.loop_ir import Call
from ..lower.nests import map_nest
from .common import fail, require_float, tt
from .registry import gradient, register


def _bn_infer(attrs, types, consts, node):
    x = types[0]
    require_float(node, x)
    if x.rank < 2:
        fail(node, f"BatchNormalization needs rank >= 2, got {x.shape}")
    c = x.shape[1]
    for name, t in zip(("scale", "B", "mean", "var"), types[1:]):
        if t.shape != (c,):
            fail(node, f"BatchNormalization {name} must have shape ({c},), got {t.shape}")
    if attrs.get("training_mode", 0):
        raise UnsupportedOpError("BatchNormalization", node=node,
                                 detail="training_mode=1 (the training work adds it)")
    return [tt(x.dtype, x.shape)]


def _bn_reference(attrs, x, scale, bias, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = scale / np.sqrt(var + attrs["epsilon"])
    return ((x - mean.reshape(shape)) * a.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


def _bn_lower(ctx):
    x = ctx.in_types[0]
    c = x.shape[1]
    scale, bias, mean, var = ctx.inputs[1:5]
    a, b = ctx.scratch(c, x.dtype), ctx.scratch(c, x.dtype)
    eps = ctx.attrs["epsilon"]
    nb = ctx.nb
    with nb.loop(c, "vector", ctx.lanes(x.dtype), hint="c") as i:
        coef = scale[i] / Call("sqrt", (var[i] + eps,))
        nb.store(a, i, coef)
        nb.store(b, i, bias[i] - mean[i] * coef)
    per_channel = (c,) + (1,) * (x.rank - 2)
    map_nest(ctx, ctx.outputs[0], x.shape, [ctx.inputs[0], a, b], [x.shape, per_channel, per_channel],
             lambda v, av, bv: v * av + bv)


register("BatchNormalization", inputs=(5, 5),
         attrs={"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0, "spatial": 1},
         infer=_bn_infer, reference=_bn_reference, lower=_bn_lower)


@gradient("BatchNormalization")
def _batchnorm_grad(g, node, dys, wanted):
    """BN with fixed statistics (a frozen, eval-mode BN being fine-tuned through);
    training-mode BN is BatchNormTrain (batchnorm_train.py), or composed from
    primitives by the front end for rank-2 inputs and statistics over several ranks."""
    x, scale, bias, mean, var = node.inputs
    dy = dys[0]
    rank = len(g.shape(x))
    per_channel = (1, g.shape(x)[1]) + (1,) * (rank - 2)
    inv_std = g.div(g.scalar(1.0, var), g.unary("Sqrt", g.add(var, g.scalar(node.attrs["epsilon"], var))))
    axes = [0] + list(range(2, rank))
    dx = g.mul(dy, g.reshape(g.mul(scale, inv_std), per_channel)) if wanted[0] else None
    xhat = g.mul(g.sub(x, g.reshape(mean, per_channel)), g.reshape(inv_std, per_channel))
    dscale = g.reduce_sum(g.mul(dy, xhat), axes, keepdims=0) if wanted[1] else None
    dbias = g.reduce_sum(dy, axes, keepdims=0) if wanted[2] else None
    return [dx, dscale, dbias, None, None]
