"""GPU lowerings of the hot ops. The CPU lowerings pack panels per thread, im2col
into shared scratch and split work into teams of CPU threads (THREAD_INDEX
slots), which leaves a GPU grid of one thread. Here a big GEMM (Gemm, MatMul,
implicit-GEMM Conv) is a TiledGemm (tiled.py: shared-memory tiles, 4 x 4
register tiles per thread); a small one, and depthwise convolution, is a plain
nest of one output element per thread, its every output loop `parallel`, so
grid.py maps all of them onto threads (rules.py picks them)."""
import numpy as np

from ..ir.types import DType
from ..lower.loop_ir import Reduce
from ..lower.nests import broadcast_strides, strides
from ..ops.conv_common import epilogue, window_geometry
from ..ops.matmul import _gemm_dims, _matmul_shapes
from .tiled import ACC, TiledGemm


def _output_loops(nb, shape):
    """Open one parallel loop per dim of `shape`; returns (scopes, vars)."""
    scopes, vars_ = [], []
    for d in shape:
        scope = nb.loop(d, parallel_candidate=("teams", d))   # every point its own GPU thread
        vars_.append(scope.__enter__())
        scopes.append(scope)
    return scopes, vars_


def _close(scopes):
    for scope in reversed(scopes):
        scope.__exit__(None, None, None)


def _reduce(nb, extents, hint, body):
    """sum(body(*vars)) over the nested ranges `extents`."""
    vars_ = [nb.var(hint) for _ in extents]
    value = body(*vars_)
    for v, e in reversed(list(zip(vars_, extents))):
        value = Reduce("sum", v, e, value)
    return value


TILE_MIN_OUTPUTS = 4096     # a C of fewer elements fills under one 64 x 64 tile: one thread per output
TILE_MIN_K = 16             # one shared-memory stage
MAX_GRID_Z = 65535          # CUDA's limit on the grid's z (the batch of tiled GEMMs)


def _tiled(ctx, m, n, k, batch=1):
    return ctx.out_types[0].dtype == DType.float32 and m * n >= TILE_MIN_OUTPUTS and k >= TILE_MIN_K \
        and batch <= MAX_GRID_Z


def _tiled_gemm(ctx, m, n, k, batch, a, bmat, out_index, finish):
    """Emit a TiledGemm; a, bmat, out_index and finish are functions of the Vars."""
    nb = ctx.nb
    b, r, c, kk = nb.var("b"), nb.var("r"), nb.var("c"), nb.var("k")
    nb.emit(TiledGemm(m, n, k, batch, b, r, c, kk, a(b, r, kk), bmat(b, kk, c), ctx.outputs[0],
                      out_index(b, r, c), finish(b, r, c, ACC)))
    return True


def conv_lower(ctx):
    """Convolution. Implicit GEMM through shared-memory tiles when big enough (rows:
    output channels of a group, columns: images x output pixels, k: input channels
    of the group x the window; the grid's z: the groups); else direct (depthwise
    too): thread (n, m, y, x) sums c/group x kh x kw products. Padding reads as
    zeros; bias, the fused residual and activation in the store."""
    x, w = ctx.in_types[0], ctx.in_types[1]
    if x.rank != 4:
        return None
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = window_geometry(ctx.node.name, ctx.attrs,
                                                                x.shape[2:], w.shape[2:])
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    group = ctx.attrs.get("group", 1)
    mg = m // group
    xb, wb = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    residual = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    nb = ctx.nb
    kc, ohw = cg * kh * kw, oh * ow
    if cg > 1 and _tiled(ctx, mg, n * ohw, kc, group):
        def patch(g, kk, col):
            ni, p = col // ohw, col % ohw
            ci, tap = kk // (kh * kw), kk % (kh * kw)
            iy, ix = (p // ow) * sh + ((tap // kw) * dh - pt), (p % ow) * sw + ((tap % kw) * dw - pl)
            inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
            return xb.load(((ni * c + g * cg + ci) * h + iy) * wd + ix, inside)

        def out_at(g, r, col):
            return ((col // ohw) * m + g * mg + r) * ohw + col % ohw

        def finish(g, r, col, acc):
            total = acc + bias[g * mg + r] if bias is not None else acc
            total = total + residual[out_at(g, r, col)] if residual is not None else total
            return epilogue(ctx.attrs, total)
        return _tiled_gemm(ctx, mg, n * ohw, kc, group, lambda g, r, kk: wb[(g * mg + r) * kc + kk], patch,
                           out_at, finish)
    scopes, (ni, mi, y, xo) = _output_loops(nb, (n, m, oh, ow))
    g = mi // mg

    def tap(ci, ki, kj):
        iy, ix = y * sh + (ki * dh - pt), xo * sw + (kj * dw - pl)
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
        at = ((ni * c + g * cg + ci) * h + iy) * wd + ix
        return xb.load(at, inside) * wb[((mi * cg + ci) * kh + ki) * kw + kj]
    total = _reduce(nb, (cg, kh, kw), "k", tap)
    at = ((ni * m + mi) * oh + y) * ow + xo
    if bias is not None:
        total = total + bias[mi]
    if residual is not None:
        total = total + residual[at]
    nb.store(ctx.outputs[0], at, epilogue(ctx.attrs, total))
    _close(scopes)
    return True


def gemm_lower(ctx):
    at = ctx.attrs
    m, n, k = _gemm_dims(ctx.node.name, at, ctx.in_types[0].shape, ctx.in_types[1].shape)
    a, b = ctx.inputs[:2]
    c_buf = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    nb = ctx.nb
    load_a = lambda r, kk: a[kk * m + r] if at["transA"] else a[r * k + kk]
    load_b = lambda kk, col: b[col * k + kk] if at["transB"] else b[kk * n + col]

    def finish(r, col, total):
        if at["alpha"] != 1.0:
            total = total * at["alpha"]
        if c_buf is not None:
            cs = broadcast_strides(ctx.in_types[2].shape, (m, n))
            value = c_buf[sum((v * s for v, s in zip((r, col), cs) if s), 0)]
            total = total + (value * at["beta"] if at["beta"] != 1.0 else value)
        return epilogue(at, total)
    if _tiled(ctx, m, n, k):
        return _tiled_gemm(ctx, m, n, k, 1, lambda _, r, kk: load_a(r, kk), lambda _, kk, col: load_b(kk, col),
                           lambda _, r, col: r * n + col, lambda _, r, col, acc: finish(r, col, acc))
    scopes, (r, col) = _output_loops(nb, (m, n))
    total = _reduce(nb, (k,), "k", lambda kk: load_a(r, kk) * load_b(kk, col))
    nb.store(ctx.outputs[0], r * n + col, finish(r, col, total))
    _close(scopes)
    return True


def matmul_lower(ctx):
    a_shape, b_shape, batch, _ = _matmul_shapes(ctx.node.name, ctx.in_types[0].shape, ctx.in_types[1].shape)
    (m, k), n = a_shape[-2:], b_shape[-1]
    a, b = ctx.inputs
    sa, sb = broadcast_strides(a_shape[:-2], batch), broadcast_strides(b_shape[:-2], batch)
    nb = ctx.nb
    offset = lambda bvars, st, size: sum((v * (s * size) for v, s in zip(bvars, st) if s), 0)
    total_batch = int(np.prod(batch, dtype=np.int64))
    if _tiled(ctx, m, n, k, total_batch):
        unflat = lambda flat: [(flat // s) % d for s, d in zip(strides(batch), batch)]
        return _tiled_gemm(ctx, m, n, k, total_batch,
                           lambda bf, r, kk: a[offset(unflat(bf), sa, m * k) + r * k + kk],
                           lambda bf, kk, col: b[offset(unflat(bf), sb, k * n) + kk * n + col],
                           lambda bf, r, col: bf * (m * n) + r * n + col, lambda bf, r, col, acc: acc)
    scopes, vars_ = _output_loops(nb, tuple(batch) + (m, n))
    bvars, (r, col) = vars_[:-2], vars_[-2:]
    a_off, b_off = offset(bvars, sa, m * k), offset(bvars, sb, k * n)
    c_off = offset(bvars, strides(batch), m * n)
    total = _reduce(nb, (k,), "k", lambda kk: a[a_off + r * k + kk] * b[b_off + kk * n + col])
    nb.store(ctx.outputs[0], c_off + r * n + col, total)
    _close(scopes)
    return True
