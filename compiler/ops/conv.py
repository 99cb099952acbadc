"""Conv (2-D, NCHW): im2col into scratch where needed, then the blocked GEMM."""
from ..lower.gemm import gemm_nest
from ..lower.loop_ir import THREAD_INDEX
from ..schedule.variants import DEPTHWISE, WINOGRAD
from ..schedule.loops import splits
from . import winograd, winograd_small
from .common import fail, same_dtype, tt
from .conv_common import (CONV_ATTRS, EPILOGUE, conv_reference, epilogue, for_image_chunks, im2col, image_plan,
                          per_image, window_geometry)
from .conv_variants import conv_variant
from .registry import gradient, register


def _conv_infer(attrs, types, consts, node):
    x, w = types[0], types[1]
    dtype = same_dtype(node, types)
    if x.rank < 3 or w.rank != x.rank:
        fail(node, f"Conv needs input and weight of the same rank >= 3, got {x.shape} and {w.shape}")
    group = attrs.get("group", 1)
    n, c = x.shape[:2]
    m = w.shape[0]
    if group <= 0 or c % group or m % group or w.shape[1] * group != c or c == 0 or m == 0:
        fail(node, f"Conv channels do not fit: input {x.shape}, weight {w.shape}, group {group}")
    kernel = attrs.get("kernel_shape") or w.shape[2:]
    if tuple(kernel) != tuple(w.shape[2:]):
        fail(node, f"kernel_shape {list(kernel)} disagrees with weight {w.shape}")
    if len(types) > 2 and types[2] is not None and types[2].shape != (m,):
        fail(node, f"Conv bias must have shape ({m},), got {types[2].shape}")
    out = window_geometry(node, attrs, x.shape[2:], kernel)[4]
    result = tt(dtype, (n, m) + out)
    if len(types) > 3 and types[3] is not None and types[3] != result:
        fail(node, f"fused residual must be {result}, got {types[3]}")
    return [result]


def _conv_lower(ctx):
    x, w = ctx.in_types[0], ctx.in_types[1]
    if x.rank != 4:
        from ..errors import UnsupportedOpError
        raise UnsupportedOpError("Conv", detail=f"{x.rank - 2}-D convolution is not lowered yet")
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = window_geometry(ctx.node.name, ctx.attrs,
                                                                x.shape[2:], w.shape[2:])
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    group = ctx.attrs.get("group", 1)
    mg, ohw, kc = m // group, oh * ow, cg * kh * kw
    xb, wb = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    residual = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    plus_residual = (lambda at, v: v + residual[at]) if residual is not None else (lambda at, v: v)
    out, nb = ctx.outputs[0], ctx.nb
    if ctx.variant.algorithm == DEPTHWISE:     # the variant step's choice (schedule/variants.py)
        return _depthwise(ctx, (n, c, h, wd), (m, kh, kw), (oh, ow), (sh, sw), (dh, dw), (pt, pl), group)
    if ctx.variant.algorithm == WINOGRAD:
        return winograd_small.winograd_conv(ctx, xb, None, out, (n, h, wd), (oh, ow), (pt, pl), (c, m),
                                      winograd.conv_finish(ctx.attrs, bias, residual, m, (oh, ow)),
                                      weight=winograd.RawWeights(wb, c * 9, 9))
    pointwise = kh == kw == sh == sw == 1 and pt == pl == 0 and oh == h and ow == wd
    geometry = ((cg, h, wd), (kh, kw), (oh, ow), (sh, sw), (dh, dw), (pt, pl))
    batched = ctx.variant.batched_columns      # a small map's images share one GEMM up to this many columns
    if batched:
        plan = image_plan(ctx, n, lambda count: count * ohw <= batched)
        if plan[2] > 1:
            return _images_in_one_gemm(ctx, plan, pointwise, geometry, (n, c, h, wd), (m, kc, ohw), bias,
                                       plus_residual)
    # groups too small to split inside (RegNet's 8 channels each): the threads take whole
    # groups, each into its own im2col slot, where there is a group for every thread
    whole_groups = group >= ctx.threads > 1
    slots = ctx.threads if whole_groups else min(ctx.threads, n)
    col = None if pointwise else ctx.scratch(kc * ohw * max(1, slots), x.dtype)

    def image(ni, slot, parallel):
        by_group = parallel and whole_groups
        split = ("gemm", m * ohw * kc) if by_group else None
        with nb.loop(group, hint="g", parallel_candidate=split) as g:
            if by_group:
                slot, parallel = THREAD_INDEX, False
            x_off = ni * (c * h * wd) + g * (cg * h * wd)
            if col is not None:
                base = slot * (kc * ohw)
                im2col(ctx, xb, x_off, col, base, *geometry, parallel=parallel)
                load_b = lambda kk, j: col[base + kk * ohw + j]
            else:
                load_b = lambda kk, j: xb[x_off + kk * ohw + j]
            y_off = ni * (m * ohw) + g * (mg * ohw)
            gemm_nest(ctx, mg, ohw, kc,
                      lambda r, kk: wb[(g * mg + r) * kc + kk], load_b,
                      out, lambda r, j: y_off + r * ohw + j,
                      init=(lambda r, j: bias[g * mg + r]) if bias is not None else None,
                      finish=lambda r, j, v: epilogue(ctx.attrs, plus_residual(y_off + r * ohw + j, v)),
                      parallel=parallel, slot=None if parallel else slot)
    per_image(ctx, n, image)


def _images_in_one_gemm(ctx, plan, pointwise, geometry, x_shape, sizes, bias, plus_residual):
    """Small maps at batch > 1 (ResNet-50's 7x7 layers): `chunk` images' columns side
    by side in one GEMM, into a scratch C whose parts the epilogue then writes to
    each image (alone, 49 columns waste a third of their second 32-column panel)."""
    n, c, h, wd = x_shape
    m, kc, ohw = sizes
    teams, _, chunk = plan
    width = chunk * ohw
    xb, wb, out, nb = ctx.inputs[0], ctx.inputs[1], ctx.outputs[0], ctx.nb
    lanes = ctx.lanes(out.dtype)
    col = ctx.scratch(kc * width * teams, xb.dtype)
    acc = ctx.scratch(m * width * teams, out.dtype)

    def images(first, count, slot, parallel):
        cols, at = slot * (kc * width), slot * (m * width)
        with nb.loop(count, hint="i") as i:
            x_off = (first + i) * (c * h * wd)
            if pointwise:
                with nb.loop(kc, hint="k") as kk:
                    with nb.loop(ohw, "vector", lanes, hint="p") as p:
                        nb.store(col, cols + kk * width + i * ohw + p, xb[x_off + kk * ohw + p])
            else:
                im2col(ctx, xb, x_off, col, cols + i * ohw, *geometry, parallel=parallel, row_stride=width)
        gemm_nest(ctx, m, count * ohw, kc, lambda r, kk: wb[r * kc + kk],
                  lambda kk, j: col[cols + kk * width + j], acc, lambda r, j: at + r * width + j,
                  init=(lambda r, j: bias[r]) if bias is not None else None,
                  parallel=parallel, slot=None if parallel else slot)
        with nb.loop(count, hint="i") as i:
            with nb.loop(m, hint="r") as r:
                with nb.loop(ohw, "vector", lanes, hint="p") as p:
                    y = ((first + i) * m + r) * ohw + p
                    nb.store(out, y, epilogue(ctx.attrs, plus_residual(y, acc[at + r * width + i * ohw + p])))
    for_image_chunks(ctx, n, plan, images)


def _depthwise(ctx, x_shape, w_shape, out, strides, dil, pads, group):
    """One input channel per group (MobileNet's depthwise layers): a direct loop nest,
    each output channel a weighted window sum, instead of a one-row GEMM. Each plane
    is first copied with its zero border into a per-thread scratch, so the taps are
    plain (unmasked, unrolled) loads instead of bounds-checked ones."""
    n, c, h, wd = x_shape
    m, kh, kw = w_shape
    (oh, ow), (sh, sw), (dh, dw), (pt, pl) = out, strides, dil, pads
    per_channel = m // group
    xb, wb = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    residual = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    nb, lanes = ctx.nb, ctx.lanes(ctx.out_types[0].dtype)
    hp, wp = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    planes = n * m
    split = ("map", planes * oh * ow * kh * kw)
    padded = ctx.scratch(hp * wp * (min(ctx.threads, planes) if splits(ctx.target, split) else 1), xb.dtype)
    # the padded copy is per thread when the schedule splits the planes
    with nb.loop(planes, hint="nm", parallel_candidate=split) as p:
        base = THREAD_INDEX * (hp * wp)
        channel = (p // m) * c + (p % m) // per_channel
        with nb.loop(hp, hint="py") as py:
            with nb.loop(wp, "vector", lanes, hint="px") as px:
                iy, ix = py - pt, px - pl
                inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
                nb.store(padded, base + py * wp + px, xb.load(channel * (h * wd) + iy * wd + ix, mask=inside))
        with nb.loop(oh, hint="y") as y:
            with nb.loop(ow, "vector", lanes, hint="x") as xx:
                taps = [padded[base + (y * sh + i * dh) * wp + xx * sw + j * dw] * wb[((p % m) * kh + i) * kw + j]
                        for i in range(kh) for j in range(kw)]
                total = sum(taps[1:], taps[0])
                if bias is not None:
                    total = total + bias[p % m]
                at = p * (oh * ow) + y * ow + xx
                if residual is not None:
                    total = total + residual[at]
                nb.store(ctx.outputs[0], at, epilogue(ctx.attrs, total))


register("Conv", inputs=(2, 4), attrs=dict(CONV_ATTRS, **EPILOGUE), infer=_conv_infer, reference=conv_reference,
         lower=_conv_lower, variant=conv_variant)


def with_bias_grad(g, node, dy, wanted):
    """[dB] (dY summed over batch and space) when the node has a bias input, else []."""
    if len(node.inputs) <= 2:
        return []
    rank = len(g.shape(dy))
    return [g.reduce_sum(dy, [0] + list(range(2, rank)), keepdims=0) if wanted[2] else None]


@gradient("Conv")
def _conv_grad(g, node, dys, wanted):
    x, w = node.inputs[:2]
    attrs = {k: v for k, v in node.attrs.items() if k in CONV_ATTRS}
    dy = dys[0]
    dx = g.op("ConvGradInput", [dy, w], input_shape=g.shape(x), **attrs) if wanted[0] else None
    dw = g.op("ConvGradWeight", [x, dy], weight_shape=g.shape(w), **attrs) if wanted[1] else None
    return [dx, dw] + with_bias_grad(g, node, dy, wanted)
