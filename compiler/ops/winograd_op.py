"""WinogradConv: a Conv whose constant weights the Winograd pass (passes/winograd.py)
transformed at compile time, lowered along the tile rows (ops/winograd.py) or, with
`panels`, as F(4x4) along the channels (ops/winograd_small.py). Its own module: both
of those import each other's pieces the other way round."""
import numpy as np

from .conv_common import conv_reference, epilogue
from .winograd import conv_finish, untransform_weights, winograd_conv
from .winograd_small import weights_from_panels, winograd_channels_last


def _conv_attrs(attrs):
    return {"pads": tuple(attrs["pads"]), "activation": attrs.get("activation")}


def _plain(attrs, u):
    """U [16, M, C] row-major (undoing the pass's strips, where it made them)."""
    rows = attrs.get("a_strips")
    if not rows:
        return u
    from ..schedule.gemm import unstrip
    return np.stack([unstrip(ui, rows) for ui in u])


def _infer(attrs, types, consts, node):
    from .common import fail, same_dtype, tt
    x, u = types[0], types[1]
    same_dtype(node, [t for t in types if t is not None])
    pt, pl, pb, pr = attrs["pads"]
    tile, panels = attrs.get("out_tile") or 2, attrs.get("panels")
    # U [16, M, C], or with panels Ut [(tile + 2)^2, C, M] (ops/winograd_small.py)
    c_at, m_at = (1, 2) if panels else (2, 1)
    if x.rank != 4 or u.rank != 3 or u.shape[0] != (tile + 2) ** 2 or u.shape[c_at] != x.shape[1] or \
            (panels and (u.shape[1] % panels[0] or u.shape[2] % panels[1])):
        fail(node, f"WinogradConv input {x.shape} and transformed weights {u.shape} do not fit")
    out = (x.shape[0], u.shape[m_at], x.shape[2] + pt + pb - 2, x.shape[3] + pl + pr - 2)
    if min(out[2:]) <= 0:
        fail(node, f"WinogradConv output {out} is empty")
    return [tt(x.dtype, out)]


def _reference(attrs, x, u, b=None, residual=None):
    if attrs.get("panels"):
        w = weights_from_panels(u, attrs["out_tile"], *attrs["panels"])
    else:
        w = untransform_weights(_plain(attrs, u))
    return conv_reference(_conv_attrs(attrs), x, w, b, residual)


def _lower(ctx):
    n, c, h, w = ctx.in_types[0].shape
    _, m, oh, ow = ctx.out_types[0].shape
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    residual = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    pt, pl = ctx.attrs["pads"][:2]
    finish = conv_finish(ctx.attrs, bias, residual, m, (oh, ow))
    if ctx.attrs.get("panels"):       # F(4x4) along the channels (the pass chose it with the variant step)
        after = None
        if residual is not None:      # added in NCHW after the transpose back: along M it was a gather
            finish = conv_finish({**ctx.attrs, "activation": None}, bias, None, m, (oh, ow))
            after = _residual_after(ctx, residual, m, oh * ow)
        return winograd_channels_last(ctx, ctx.inputs[0], ctx.outputs[0], (n, h, w), (oh, ow), (pt, pl), (c, m),
                                      finish, None, ut=ctx.inputs[1], tile=ctx.attrs["out_tile"],
                                      panels=ctx.attrs["panels"], after=after)
    winograd_conv(ctx, ctx.inputs[0], ctx.inputs[1], ctx.outputs[0], (n, h, w), (oh, ow), (pt, pl),
                  (c, m), finish, u_strips=ctx.attrs.get("a_strips") or 0)


def _residual_after(ctx, residual, m, ohw):
    """y = activation(y + residual) over a step's images' channel planes, contiguous (1x64
    on 56x56 with a residual: 1.21 ms with it read along M by the output transform, 0.78 without)."""
    nb, y, lanes = ctx.nb, ctx.outputs[0], ctx.lanes(ctx.outputs[0].dtype)

    def after(first, count, parallel):
        split = ("map", count * m * ohw) if parallel else None
        with nb.loop(count * m, hint="r", parallel_candidate=split) as r:
            with nb.loop(ohw, "vector", lanes, hint="p") as p:
                at = (first * m + r) * ohw + p
                nb.store(y, at, epilogue(ctx.attrs, y[at] + residual[at]))
    return after


def _register():
    from ..schedule.variants import winograd_conv_variant
    from .registry import register
    register("WinogradConv", inputs=(2, 4), attrs={"pads": None, "activation": None, "a_strips": None,
                                                        "out_tile": None, "panels": None},
             infer=_infer,
             reference=_reference, lower=_lower, domain="nutshell",
             variant=lambda node, in_types, consts, target: winograd_conv_variant(target))
    from .registry import non_differentiable
    non_differentiable("made after autodiff by the Winograd pass", "WinogradConv")


_register()
