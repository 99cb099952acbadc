"""Convolution gradients (nutshell domain), emitted by Conv's VJP rule.

ConvGradInput(dY, W) -> dX: per image dcol = W^T dY (the blocked GEMM), then
col2im as a gather: each input pixel sums the dcol entries of the windows that
cover it, so no two threads write one element and the order is fixed.
ConvGradWeight(X, dY) -> dW: per image dW^T += col dY^T (im2col as A, dY
transposed into a small buffer as B), a partial sum per thread."""
import numpy as np

from ..lower.gemm import dot_gemm, gemm_nest
from ..lower.loop_ir import Const, Reduce
from ..lower.nests import strided_map
from . import winograd
from .common import fail, tt
from .conv import CONV_ATTRS, _im2col, for_image_chunks, image_plan, per_image, window_geometry
from .registry import register

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
    if winograd.eligible((n, m, oh, ow), (c, m, kh, kw), (sh, sw), (dh, dw), group, (h, wd)):
        # dX is the convolution of dY with W transposed and flipped, padded by 2 - pad
        return winograd.winograd_conv(
            ctx, dyb, None, out, (n, oh, ow), (h, wd), (kh - 1 - pt, kw - 1 - pl), (m, c),
            lambda ni, ci, y, x, v: v,
            weight=lambda ci, mm, i, j: wb[((mm * cg + ci) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)])
    dcol = ctx.scratch(kc * ohw * max(1, min(ctx.threads, n)), out.dtype)

    def image(ni, slot, parallel):
        base = slot * (kc * ohw)
        with nb.loop(group, hint="g") as g:
            dy_off = ni * (m * ohw) + g * (mg * ohw)
            gemm_nest(ctx, kc, ohw, mg,
                      lambda r, kk: wb[(g * mg + kk) * kc + r],
                      lambda kk, j: dyb[dy_off + kk * ohw + j],
                      dcol, lambda r, j: base + r * ohw + j,
                      parallel=parallel, slot=None if parallel else slot)
            kind = "parallel" if parallel and cg * h * wd >= 1 << 14 else "serial"
            with nb.loop(cg, kind, hint="c") as ci:
                with nb.loop(h, hint="y") as iy:
                    with nb.loop(wd, "vector", ctx.lanes(out.dtype), hint="x") as ix:
                        i, j = nb.var("ki"), nb.var("kj")
                        oy, ok_y = _source(iy + (pt - i * dh), sh, oh)
                        ox, ok_x = _source(ix + (pl - j * dw), sw, ow)
                        row = (ci * kh + i) * kw + j
                        value = dcol.load(base + row * ohw + oy * ow + ox, mask=ok_y & ok_x)
                        nb.store(out, ni * (c * h * wd) + (g * cg + ci) * (h * wd) + iy * wd + ix,
                                 Reduce("sum", i, kh, Reduce("sum", j, kw, value)))
    per_image(ctx, n, image)


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


GRAD_WEIGHT_K = 1024   # images per step so k (images x pixels) reaches this
DOT_MAX_ROWS = 64      # im2col rows up to which dot products beat transposing dY


def _grad_weight_lower(ctx):
    """dW[mm, r] = sum over images and pixels of dY[mm, p] col[r, p]. Each thread takes a
    few images per step (side by side, so k is long) and keeps partial sums of its own,
    summed into dW at the end: no batch-sized scratch. With few im2col rows (a first
    layer's 3 channels) dY's transpose would cost more than the products, so both
    operands are read along p as dot products (dot_gemm); else the blocked GEMM
    computes dW^T = col dY^T with dY transposed per image into a small hot buffer."""
    at = ctx.attrs
    x_t, w_shape = ctx.in_types[0], tuple(at["weight_shape"])
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = _geometry(at, x_t.shape, w_shape, ctx.node.name)
    n, c, h, wd = x_t.shape
    m, cg, kh, kw = w_shape
    group = at.get("group", 1)
    mg, ohw, kc = m // group, oh * ow, cg * kh * kw
    pointwise = kh == kw == sh == sw == 1 and pt == pl == 0 and oh == h and ow == wd
    geometry = ((cg, h, wd), (kh, kw), (oh, ow), (sh, sw), (dh, dw), (pt, pl))
    plan = image_plan(ctx, n, lambda count: count * ohw <= GRAD_WEIGHT_K)
    lower = _grad_weight_dot if kc <= DOT_MAX_ROWS else _grad_weight_gemm
    lower(ctx, plan, (n, c, h, wd), (m, mg, kc, ohw), group, geometry, pointwise)


def _grad_weight_gemm(ctx, plan, x_shape, sizes, group, geometry, pointwise):
    (n, c, h, wd), (m, mg, kc, ohw) = x_shape, sizes
    cg = geometry[0][0]
    xb, dyb = ctx.inputs
    out, nb = ctx.outputs[0], ctx.nb
    teams, _, chunk = plan
    k_len = chunk * ohw
    col = None if pointwise and chunk == 1 else ctx.scratch(kc * k_len * teams, out.dtype)
    dy_t = ctx.scratch(k_len * mg * teams, out.dtype)
    partial = ctx.scratch(kc * mg * teams, out.dtype)

    def images(g, first, count, slot, parallel):
        base = slot * (kc * k_len)
        with nb.loop(count, hint="i") as i:
            ni, p0 = first + i, i * ohw
            x_off = ni * (c * h * wd) + g * (cg * h * wd)
            if col is not None:
                _im2col(ctx, xb, x_off, col, base + p0, *geometry, parallel=parallel, row_stride=k_len)
            strided_map(ctx, dy_t, (ohw, mg), [dyb], [(1, ohw)], lambda v: v,
                        out_offset=slot * (k_len * mg) + p0 * mg,
                        in_offsets=[ni * (m * ohw) + g * (mg * ohw)])
        if col is None:     # 1x1: X itself is A (one image per GEMM)
            load_a = lambda r, kk: xb[first * (c * h * wd) + g * (cg * h * wd) + r * ohw + kk]
        else:
            load_a = lambda r, kk: col[base + r * k_len + kk]
        own = lambda r, j: slot * (kc * mg) + r * mg + j
        gemm_nest(ctx, kc, mg, count * ohw, load_a, lambda kk, j: dy_t[slot * (k_len * mg) + kk * mg + j],
                  partial, own, init=lambda r, j: partial[own(r, j)],
                  parallel=parallel, slot=None if parallel else slot)

    with nb.loop(group, hint="g") as g:
        with nb.loop(kc * mg * teams, "vector", ctx.lanes(out.dtype), hint="z") as i:
            nb.store(partial, i, Const(0.0, out.dtype))
        for_image_chunks(ctx, n, plan, lambda *args: images(g, *args))
        with nb.loop(mg, hint="m") as j:
            with nb.loop(kc, "vector", ctx.lanes(out.dtype), hint="r") as r:
                s = nb.var("s")
                nb.store(out, (g * mg + j) * kc + r, Reduce("sum", s, teams, partial[s * (kc * mg) + r * mg + j]))


def _grad_weight_dot(ctx, plan, x_shape, sizes, group, geometry, pointwise):
    (n, c, h, wd), (m, mg, kc, ohw) = x_shape, sizes
    cg = geometry[0][0]
    xb, dyb = ctx.inputs
    out, nb = ctx.outputs[0], ctx.nb
    lanes = ctx.lanes(out.dtype)
    teams, _, chunk = plan
    k_len = chunk * ohw
    col = None if pointwise and chunk == 1 else ctx.scratch(kc * k_len * teams, out.dtype)
    dy_rows = None if chunk == 1 else ctx.scratch(mg * k_len * teams, out.dtype)
    partial = ctx.scratch(mg * kc * lanes * teams, out.dtype)

    def images(g, first, count, slot, parallel):
        base = slot * (kc * k_len)
        with nb.loop(count, hint="i") as i:
            x_off = (first + i) * (c * h * wd) + g * (cg * h * wd)
            if col is not None:
                _im2col(ctx, xb, x_off, col, base + i * ohw, *geometry, parallel=parallel, row_stride=k_len)
            if dy_rows is not None:      # the images' dY rows side by side (a copy, no transpose)
                strided_map(ctx, dy_rows, (mg, ohw), [dyb], [(ohw, 1)], lambda v: v,
                            out_offset=slot * (mg * k_len) + i * ohw, out_strides=(k_len, 1),
                            in_offsets=[(first + i) * (m * ohw) + g * (mg * ohw)])
        if col is None:     # 1x1, one image: X itself holds the rows
            load_b = lambda r, kk: xb[first * (c * h * wd) + g * (cg * h * wd) + r * ohw + kk]
        else:
            load_b = lambda r, kk: col[base + r * k_len + kk]
        if dy_rows is None:
            load_a = lambda mm, kk: dyb[first * (m * ohw) + (g * mg + mm) * ohw + kk]
        else:
            load_a = lambda mm, kk: dy_rows[slot * (mg * k_len) + mm * k_len + kk]
        dot_gemm(ctx, mg, kc, count * ohw, load_a, load_b, partial,
                 lambda mm, r: ((slot * mg + mm) * kc + r) * lanes, parallel=parallel)

    with nb.loop(group, hint="g") as g:
        with nb.loop(mg * kc * lanes * teams, "vector", lanes, hint="z") as i:
            nb.store(partial, i, Const(0.0, out.dtype))
        for_image_chunks(ctx, n, plan, lambda *args: images(g, *args))
        with nb.loop(mg * kc, hint="o") as o:
            s, lane = nb.var("s"), nb.var("l")
            nb.store(out, g * (mg * kc) + o, Reduce("sum", s, teams, Reduce(
                "sum", lane, lanes, partial[(s * (mg * kc) + o) * lanes + lane])))


register("ConvGradInput", inputs=(2, 2), attrs=GRAD_ATTRS, infer=_grad_input_infer,
         reference=_grad_input_reference, lower=_grad_input_lower, domain="nutshell")
register("ConvGradWeight", inputs=(2, 2), attrs=GRAD_ATTRS, infer=_grad_weight_infer,
         reference=_grad_weight_reference, lower=_grad_weight_lower, domain="nutshell")


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
        from ..errors import UnsupportedOpError
        raise UnsupportedOpError("ConvTranspose", detail=f"{len(shape) - 2}-D is not lowered yet")
    ctx.attrs = conv
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    _grad_input_lower(ctx)
    if bias is not None:
        from ..lower.nests import map_nest
        out = ctx.outputs[0]
        map_nest(ctx, out, shape, [out, bias], [shape, (shape[1], 1, 1)], lambda v, bv: v + bv)


register("ConvTranspose", inputs=(2, 3), attrs=dict(CONV_ATTRS, output_padding=None, output_shape=None),
         infer=_transpose_infer, reference=_transpose_reference, lower=_transpose_lower)
