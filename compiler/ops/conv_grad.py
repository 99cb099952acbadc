"""Convolution gradients (nutshell domain), emitted by Conv's VJP rule.

ConvGradInput(dY, W) -> dX: per image dcol = W^T dY (the blocked GEMM), then
col2im as a gather: each input pixel sums the dcol entries of the windows that
cover it, so no two threads write one element and the order is fixed.
ConvGradWeight(X, dY) -> dW: per image dW^T += col dY^T (im2col as A, dY
transposed into a small buffer as B), a partial sum per thread."""
import numpy as np

from ..lower.gemm import dot_gemm, gemm_nest
from ..lower.loop_ir import Const, Reduce
from ..lower.nests import strided_map, transpose_tiles
from ..schedule.variants import WINOGRAD
from . import winograd, winograd_small
from .common import fail, tt
from .conv_common import (CONV_ATTRS, for_image_chunks, zero_slot, im2col as _im2col, image_plan,
                          window_geometry)
from .registry import non_differentiable, register
from .conv_variants import grad_input_variant, grad_weight_variant
from .winograd_grad import winograd_grad_weight

GRAD_ATTRS = dict(CONV_ATTRS, input_shape=None, weight_shape=None)


def _geometry(attrs, x_shape, w_shape, node="ref"):
    return window_geometry(node, attrs, x_shape[2:], w_shape[2:])


def _grad_input_infer(attrs, types, consts, node):
    return [tt(types[0].dtype, attrs["input_shape"])]


def _grad_input_reference(attrs, dy, w):
    """dX = d/dX of sum(conv(X) * dY): conv's transpose, via the adjoint of im2col."""
    x_shape = tuple(attrs["input_shape"])
    begin, end, strides, dil, out = _geometry(attrs, x_shape, w.shape)
    group = attrs.get("group", 1)
    n, c = x_shape[:2]
    m, cg = w.shape[:2]
    mg = m // group
    padded = np.zeros((n, c) + tuple(s + b + e for s, b, e in zip(x_shape[2:], begin, end)))
    for g in range(group):
        for kidx in np.ndindex(*w.shape[2:]):
            wk = w[g * mg:(g + 1) * mg, :, kidx[0], kidx[1]].astype(np.float64)     # mg, cg
            contrib = np.einsum("nm...,mc->nc...", dy[:, g * mg:(g + 1) * mg].astype(np.float64), wk)
            sl = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                       for k, d, o, s in zip(kidx, dil, out, strides))
            padded[(slice(None), slice(g * cg, (g + 1) * cg)) + sl] += contrib
    inner = tuple(slice(b, b + s) for b, s in zip(begin, x_shape[2:]))
    return padded[(slice(None), slice(None)) + inner].astype(dy.dtype)


def _grad_input_lower(ctx):
    at = ctx.attrs
    x_shape, w_t = tuple(at["input_shape"]), ctx.in_types[1]
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = _geometry(at, x_shape, w_t.shape, ctx.node.name)
    n, c, h, wd = x_shape
    m, cg, kh, kw = w_t.shape
    group = at.get("group", 1)
    mg, ohw, kc = m // group, oh * ow, cg * kh * kw
    dyb, wb = ctx.inputs[:2]
    out, nb = ctx.outputs[0], ctx.nb
    if ctx.variant.algorithm == WINOGRAD:     # the variant step's choice (schedule/variants.py)
        # dX is the convolution of dY with W transposed and flipped, padded by 2 - pad
        return winograd_small.winograd_conv(
            ctx, dyb, None, out, (n, oh, ow), (h, wd), (kh - 1 - pt, kw - 1 - pl), (m, c),
            lambda ni, ci, y, x, v: v,
            weight=winograd.RawWeights(wb, kh * kw, cg * kh * kw, flipped=True))
    # a small map's images side by side in one GEMM (the variant step's choice): alone,
    # 16 columns (a 4x4 map) leave the tile one vector wide and load-bound
    batched = ctx.variant.batched_columns if group == 1 else 0
    plan = image_plan(ctx, n, lambda count: count * ohw <= batched)
    teams, _, chunk = plan
    width = chunk * ohw
    dcol = ctx.scratch(kc * width * teams, out.dtype)
    dyc = ctx.scratch(m * width * teams, out.dtype) if chunk > 1 else None
    lanes = ctx.lanes(out.dtype)

    def images(first, count, slot, parallel):
        base = slot * (kc * width)
        if dyc is not None:      # the images' dY rows side by side: one B of count * ohw columns
            with nb.loop(count, hint="i") as i:
                with nb.loop(m, hint="k") as kk:
                    with nb.loop(ohw, "vector", lanes, hint="p") as p:
                        nb.store(dyc, slot * (m * width) + kk * width + i * ohw + p,
                                 dyb[(first + i) * (m * ohw) + kk * ohw + p])
            load_b = lambda g, kk, j: dyc[slot * (m * width) + kk * width + j]
        else:
            load_b = lambda g, kk, j: dyb[first * (m * ohw) + (g * mg + kk) * ohw + j]
        with nb.loop(group, hint="g") as g:
            gemm_nest(ctx, kc, count * ohw, mg,
                      lambda r, kk: wb[(g * mg + kk) * kc + r],
                      lambda kk, j: load_b(g, kk, j),
                      dcol, lambda r, j: base + r * width + j,
                      parallel=parallel, slot=None if parallel else slot)
            with nb.loop(count, hint="i") as i:
                with nb.loop(cg, hint="c", parallel_candidate=("col2im", cg * h * wd) if parallel else None) as ci:
                    _col2im(ctx, dcol, base + ci * (kh * kw * width) + i * ohw, width, out,
                            (first + i) * (c * h * wd) + (g * cg + ci) * (h * wd),
                            ((h, wd), (kh, kw), (oh, ow), (sh, sw), (dh, dw), (pt, pl)))
    for_image_chunks(ctx, n, plan, images)


def _col2im(ctx, dcol, base, row_stride, out, out_off, geometry):
    """One channel's input pixels, each the sum of the dcol entries (rows row_stride
    apart, one per tap) whose windows cover it: by phases or as gathers."""
    if ctx.variant.col2im_phases:
        return _col2im_by_phase(ctx, dcol, base, row_stride, out, out_off, geometry)
    (h, wd), (kh, kw), (oh, ow), (sh, sw), (dh, dw), (pt, pl) = geometry
    nb = ctx.nb
    with nb.loop(h, hint="y") as iy:
        with nb.loop(wd, "vector", ctx.lanes(out.dtype), hint="x") as ix:
            i, j = nb.var("ki"), nb.var("kj")
            oy, ok_y = _source(iy + (pt - i * dh), sh, oh)
            ox, ok_x = _source(ix + (pl - j * dw), sw, ow)
            value = dcol.load(base + (i * kw + j) * row_stride + oy * ow + ox, mask=ok_y & ok_x)
            nb.store(out, out_off + iy * wd + ix, Reduce("sum", i, kh, Reduce("sum", j, kw, value)))


def _col2im_by_phase(ctx, dcol, base, row_stride, out, out_off, geometry):
    """col2im of one channel at stride > 1 by phases: the input pixels
    (sh*qy + py, sw*qx + px) of phase (py, px) are reached by a fixed subset of the
    taps, tap (i, j) from output (qy + a_i, qx + b_j), so each is a contiguous masked
    load along qx instead of a per-lane gather through a division by the stride.
    Phases no tap reaches (3 of 4 at 1x1 stride 2) are zeros: the plane is zeroed
    first by contiguous stores instead of a strided store per phase."""
    (h, wd), (kh, kw), (oh, ow), (sh, sw), (dh, dw), (pt, pl) = geometry
    nb, lanes = ctx.nb, ctx.lanes(out.dtype)
    taps = lambda phase, pad, k, d, s: [(i, (phase + pad - i * d) // s) for i in range(k)
                                        if (phase + pad - i * d) % s == 0]
    phases = [((py, px), [(i, a, j, b) for i, a in taps(py, pt, kh, dh, sh) for j, b in taps(px, pl, kw, dw, sw)])
              for py in range(min(sh, h)) for px in range(min(sw, wd))]
    if not all(reach for _, reach in phases):
        with nb.loop(h, hint="y") as iy:
            with nb.loop(wd, "vector", lanes, hint="x") as ix:
                nb.store(out, out_off + iy * wd + ix, Const(0.0, out.dtype))
    for (py, px), reach in phases:
        if not reach:
            continue
        with nb.loop(-(-(h - py) // sh), hint="qy") as qy:
            with nb.loop(-(-(wd - px) // sw), "vector", lanes, hint="qx") as qx:
                terms = []
                for i, a, j, b in reach:
                    oy, ox = qy + a, qx + b
                    ok = (oy >= 0) & (oy < oh) & (ox >= 0) & (ox < ow)
                    terms.append(dcol.load(base + (i * kw + j) * row_stride + oy * ow + ox, mask=ok))
                nb.store(out, out_off + (qy * sh + py) * wd + qx * sw + px, sum(terms[1:], terms[0]))


def _source(pos, stride, size):
    """The output coordinate whose window puts its tap at `pos`, and whether it exists."""
    if stride == 1:
        return pos, (pos >= 0) & (pos < size)
    o = pos // stride
    return o, (pos >= 0) & ((pos % stride).eq(0)) & (o < size)


def _grad_weight_infer(attrs, types, consts, node):
    if attrs.get("weight_shape") is None:
        fail(node, "ConvGradWeight needs weight_shape")
    return [tt(types[0].dtype, attrs["weight_shape"])]


def _grad_weight_reference(attrs, x, dy):
    w_shape = tuple(attrs["weight_shape"])
    begin, end, strides, dil, out = _geometry(attrs, x.shape, w_shape)
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(begin, end)))
    group = attrs.get("group", 1)
    m, cg = w_shape[:2]
    mg = m // group
    dw = np.zeros(w_shape)
    for g in range(group):
        for kidx in np.ndindex(*w_shape[2:]):
            sl = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                       for k, d, o, s in zip(kidx, dil, out, strides))
            patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + sl]
            axes = [0] + list(range(2, dy.ndim))        # sum over batch and output pixels
            dw[(slice(g * mg, (g + 1) * mg), slice(None)) + kidx] = np.tensordot(
                dy[:, g * mg:(g + 1) * mg].astype(np.float64), patch, axes=(axes, axes))
    return dw.astype(x.dtype)


def _grad_weight_lower(ctx):
    """dW[mm, r] = sum over images and pixels of dY[mm, p] col[r, p]. Each thread takes a
    few images per step (side by side, so k is long) and keeps partial sums of its own,
    summed into dW at the end: no batch-sized scratch. With few im2col rows (a first
    layer's 3 channels) dY's transpose would cost more than the products, so both
    operands are read along p as dot products (_DotProducts); else the blocked GEMM
    computes dW^T = col dY^T with dY transposed per image into a small hot buffer."""
    at = ctx.attrs
    x_t, w_shape = ctx.in_types[0], tuple(at["weight_shape"])
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = _geometry(at, x_t.shape, w_shape, ctx.node.name)
    n, c, h, wd = x_t.shape
    m, cg, kh, kw = w_shape
    group = at.get("group", 1)
    mg, ohw, kc = m // group, oh * ow, cg * kh * kw
    xb, dyb = ctx.inputs
    out, nb = ctx.outputs[0], ctx.nb
    if ctx.variant.algorithm == WINOGRAD:     # the variant step's choice (schedule/variants.py)
        return winograd_grad_weight(ctx, xb, dyb, out, n, (c, m), (h, wd), (oh, ow), (pt, pl))
    pointwise = kh == kw == sh == sw == 1 and pt == pl == 0 and oh == h and ow == wd
    geometry = ((cg, h, wd), (kh, kw), (oh, ow), (sh, sw), (dh, dw), (pt, pl))
    plan = image_plan(ctx, n, lambda count: count * ohw <= ctx.variant.grad_k)
    teams, _, chunk = plan
    k_len = chunk * ohw
    col = None if pointwise and chunk == 1 else ctx.scratch(kc * k_len * teams, out.dtype)
    way = (_DotProducts if ctx.variant.by_dots else _TransposedGemm)(ctx, mg, kc, ohw, k_len, teams)

    def images(g, first, count, slot, parallel):
        base = slot * (kc * k_len)
        dy_at = lambda ni: ni * (m * ohw) + g * (mg * ohw)
        with nb.loop(count, hint="i") as i:
            if col is not None:
                x_off = (first + i) * (c * h * wd) + g * (cg * h * wd)
                _im2col(ctx, xb, x_off, col, base + i * ohw, *geometry, parallel=parallel, row_stride=k_len)
            way.stage(dyb, dy_at(first + i), slot, i * ohw)
        if col is None:     # 1x1, one image: X itself holds the rows
            col_row = lambda r, kk: xb[first * (c * h * wd) + g * (cg * h * wd) + r * ohw + kk]
        else:
            col_row = lambda r, kk: col[base + r * k_len + kk]
        way.product(col_row, dyb, dy_at(first), count * ohw, slot, parallel)

    with nb.loop(group, hint="g") as g:
        for_image_chunks(ctx, n, plan, lambda *args: images(g, *args), accumulates=True,
                         start=lambda slot: zero_slot(ctx, way.partial, slot, teams))
        way.finish(out, g)


class _TransposedGemm:
    """dW^T[r, mm] += col[r, :] . dY^T[:, mm] by the blocked GEMM; partials [team][kc][mg]."""

    def __init__(self, ctx, mg, kc, ohw, k_len, teams):
        self.ctx, self.mg, self.kc, self.ohw, self.k_len, self.teams = ctx, mg, kc, ohw, k_len, teams
        self.dy_t = ctx.scratch(k_len * mg * teams, ctx.out_types[0].dtype)
        self.partial = ctx.scratch(kc * mg * teams, ctx.out_types[0].dtype)

    def stage(self, dyb, dy_off, slot, p0):
        # dY's rows [mg][ohw] become columns in lanes x lanes register tiles (a gather per
        # element cost 15% of a 256 -> 512 weight gradient)
        transpose_tiles(self.ctx, dyb, dy_off, self.ohw, self.dy_t, slot * (self.k_len * self.mg) + p0 * self.mg,
                        self.mg, self.mg, self.ohw)

    def product(self, col_row, dyb, dy_off, k, slot, parallel):
        own = lambda r, j: slot * (self.kc * self.mg) + r * self.mg + j
        gemm_nest(self.ctx, self.kc, self.mg, k, col_row,
                  lambda kk, j: self.dy_t[slot * (self.k_len * self.mg) + kk * self.mg + j],
                  self.partial, own, init=lambda r, j: self.partial[own(r, j)],
                  parallel=parallel, slot=None if parallel else slot)

    def finish(self, out, g):
        """The teams' partials summed into the first (in team order: the same sums
        whatever the schedule), which lanes x lanes register tiles then transpose
        into dW (a gather per element with stride mg cost a third of a 256 -> 512
        weight gradient)."""
        nb, size = self.ctx.nb, self.kc * self.mg
        if self.teams > 1:
            lanes, mg = self.ctx.lanes(out.dtype), self.mg
            with nb.loop(self.kc, hint="r", parallel_candidate=("map", size * self.teams)) as r:
                with nb.loop(mg, "vector", lanes, hint="m") as j:
                    s = nb.var("s")
                    nb.store(self.partial, r * mg + j,
                             Reduce("sum", s, self.teams, self.partial[s * size + r * mg + j]))
        transpose_tiles(self.ctx, self.partial, 0, self.mg, out, g * size, self.kc, self.kc, self.mg,
                        parallel_work=size)


class _DotProducts:
    """dW[mm, r] += dY[mm, :] . col[r, :] by dot_gemm, both read along the pixels;
    lane-wise partials [team][mg][kc][lane]. With several images per step their dY
    rows are copied side by side (no transpose); with one, dY is read in place."""

    def __init__(self, ctx, mg, kc, ohw, k_len, teams):
        self.ctx, self.mg, self.kc, self.ohw, self.k_len, self.teams = ctx, mg, kc, ohw, k_len, teams
        self.lanes = ctx.lanes(ctx.out_types[0].dtype)
        dtype = ctx.out_types[0].dtype
        self.dy_rows = None if k_len == ohw else ctx.scratch(mg * k_len * teams, dtype)
        self.partial = ctx.scratch(mg * kc * self.lanes * teams, dtype)

    def stage(self, dyb, dy_off, slot, p0):
        if self.dy_rows is not None:
            strided_map(self.ctx, self.dy_rows, (self.mg, self.ohw), [dyb], [(self.ohw, 1)], lambda v: v,
                        out_offset=slot * (self.mg * self.k_len) + p0, out_strides=(self.k_len, 1),
                        in_offsets=[dy_off])

    def product(self, col_row, dyb, dy_off, k, slot, parallel):
        mg, kc, k_len = self.mg, self.kc, self.k_len
        if self.dy_rows is None:
            dy_row = lambda mm, kk: dyb[dy_off + mm * self.ohw + kk]
        else:
            dy_row = lambda mm, kk: self.dy_rows[slot * (mg * k_len) + mm * k_len + kk]
        dot_gemm(self.ctx, mg, kc, k, dy_row, col_row, self.partial,
                 lambda mm, r: ((slot * mg + mm) * kc + r) * self.lanes, self.ctx.variant.dot_tile, parallel=parallel)

    def finish(self, out, g):
        nb, size = self.ctx.nb, self.mg * self.kc
        with nb.loop(size, hint="o", parallel_candidate=("map", size * self.lanes * self.teams)) as o:
            s, lane = nb.var("s"), nb.var("l")
            nb.store(out, g * size + o, Reduce("sum", s, self.teams, Reduce(
                "sum", lane, self.lanes, self.partial[(s * size + o) * self.lanes + lane])))


register("ConvGradInput", inputs=(2, 2), attrs=GRAD_ATTRS, infer=_grad_input_infer,
         reference=_grad_input_reference, lower=_grad_input_lower, domain="nutshell", variant=grad_input_variant)
register("ConvGradWeight", inputs=(2, 2), attrs=GRAD_ATTRS, infer=_grad_weight_infer,
         reference=_grad_weight_reference, lower=_grad_weight_lower, domain="nutshell",
         variant=grad_weight_variant)
non_differentiable("a backward op: second-order gradients are not supported", "ConvGradInput", "ConvGradWeight")
