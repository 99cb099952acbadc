"""GPU lowerings of the convolution gradients (the CPU's split images into teams of
threads with per-thread partial sums, one GPU thread here). Both are GEMMs over
the convolution's window geometry, tiled (tiled.py) when big enough:

ConvGradWeight(X, dY) -> dW: per group, dW[r, col] = sum over images x output
pixels of dY[image, r, pixel] * patch(col, image, pixel) (col: input channel x tap);
small ones sum each element of dW on a warp (warp.py).
ConvGradInput(dY, W) -> dX: per group, dX[ci, image x pixel] = sum over output
channels x taps of W[mm, ci, tap] * dY at the output pixel whose window puts tap on
this pixel (none where the stride skips it): a gather, so no two threads write one
element."""
from ..ops.conv_common import window_geometry
from .lowerings import _close, _output_loops, _reduce, _tiled, _tiled_gemm


def _geometry(ctx, x_shape, w_shape):
    return window_geometry(ctx.node.name, ctx.attrs, x_shape[2:], w_shape[2:])


def grad_weight_lower(ctx):
    x_t, w_shape = ctx.in_types[0], tuple(ctx.attrs["weight_shape"])
    if x_t.rank != 4:
        return None
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = _geometry(ctx, x_t.shape, w_shape)
    n, c, h, wd = x_t.shape
    m, cg, kh, kw = w_shape
    group = ctx.attrs.get("group", 1)
    mg, ohw, kc = m // group, oh * ow, cg * kh * kw
    xb, dy = ctx.inputs

    def dy_at(g, r, kk):          # kk: image x output pixel
        return dy[((kk // ohw) * m + g * mg + r) * ohw + kk % ohw]

    def patch(g, kk, col):
        p, ci, tap = kk % ohw, col // (kh * kw), col % (kh * kw)
        iy, ix = (p // ow) * sh + ((tap // kw) * dh - pt), (p % ow) * sw + ((tap % kw) * dw - pl)
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
        return xb.load((((kk // ohw) * c + g * cg + ci) * h + iy) * wd + ix, inside)
    if _tiled(ctx, mg, kc, n * ohw, group):
        return _tiled_gemm(ctx, mg, kc, n * ohw, group, dy_at, patch, lambda g, r, col: (g * mg + r) * kc + col,
                           lambda g, r, col, acc: acc)
    nb = ctx.nb
    scopes, (mi, col) = _output_loops(nb, (m, kc))
    g = mi // mg
    total = _reduce(nb, (n * ohw,), "k", lambda kk: dy_at(g, mi % mg, kk) * patch(g, kk, col))
    nb.store(ctx.outputs[0], mi * kc + col, total)
    _close(scopes)
    return True


def grad_input_lower(ctx):
    x_shape, w_t = tuple(ctx.attrs["input_shape"]), ctx.in_types[1]
    if len(x_shape) != 4:
        return None
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = _geometry(ctx, x_shape, w_t.shape)
    n, c, h, wd = x_shape
    m, cg, kh, kw = w_t.shape
    group = ctx.attrs.get("group", 1)
    mg, hw, taps = m // group, h * wd, kh * kw
    dy, wb = ctx.inputs

    def weight(g, ci, kk):        # kk: output channel of the group x tap
        return wb[((g * mg + kk // taps) * cg + ci) * taps + kk % taps]

    def dy_at(g, kk, col):        # col: image x input pixel
        pix, tap = col % hw, kk % taps
        ty, tx = pix // wd + (pt - (tap // kw) * dh), pix % wd + (pl - (tap % kw) * dw)
        hit = (ty >= 0) & (tx >= 0) & (ty < oh * sh) & (tx < ow * sw)
        if sh > 1:
            hit = hit & (ty % sh).eq(0)
        if sw > 1:
            hit = hit & (tx % sw).eq(0)
        return dy.load((((col // hw) * m + g * mg + kk // taps) * oh + ty // sh) * ow + tx // sw, hit)

    def out_at(g, ci, col):
        return ((col // hw) * c + g * cg + ci) * hw + col % hw
    if _tiled(ctx, cg, n * hw, mg * taps, group):
        return _tiled_gemm(ctx, cg, n * hw, mg * taps, group, weight, dy_at, out_at, lambda g, r, col, acc: acc)
    nb = ctx.nb
    scopes, (g, ci, col) = _output_loops(nb, (group, cg, n * hw))
    total = _reduce(nb, (mg * taps,), "k", lambda kk: weight(g, ci, kk) * dy_at(g, kk, col))
    nb.store(ctx.outputs[0], out_at(g, ci, col), total)
    _close(scopes)
    return True
