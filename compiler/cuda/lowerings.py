"""GPU lowerings of the hot ops: one output element per thread, the reduction
serial inside it. The CPU lowerings pack panels per thread, im2col into shared
scratch and split work into teams of CPU threads (THREAD_INDEX slots), which
leaves a GPU grid of one thread; these are plain nests whose every output loop
is `parallel`, so grid.py maps all of them onto threads. Ops not listed here
use their registry lowering."""

from ..lower.loop_ir import Reduce
from ..lower.nests import broadcast_strides, strides
from ..ops.conv_common import epilogue, window_geometry
from ..ops.matmul import _gemm_dims, _matmul_shapes


def _output_loops(nb, shape):
    """Open one parallel loop per dim of `shape`; returns (scopes, vars)."""
    scopes, vars_ = [], []
    for d in shape:
        scope = nb.loop(d, "parallel")
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


def conv_lower(ctx):
    """Direct convolution (groups and depthwise included): thread (n, m, y, x) sums
    c/group x kh x kw products, padding read as zeros; bias, the fused residual
    and activation in the store."""
    x, w = ctx.in_types[0], ctx.in_types[1]
    if x.rank != 4:
        return None
    (pt, pl), _, (sh, sw), (dh, dw), (oh, ow) = window_geometry(ctx.node.name, ctx.attrs,
                                                                x.shape[2:], w.shape[2:])
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    mg = m // ctx.attrs.get("group", 1)
    xb, wb = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    residual = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    nb = ctx.nb
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
    scopes, (r, col) = _output_loops(nb, (m, n))
    total = _reduce(nb, (k,), "k", lambda kk: (a[kk * m + r] if at["transA"] else a[r * k + kk]) *
                    (b[col * k + kk] if at["transB"] else b[kk * n + col]))
    if at["alpha"] != 1.0:
        total = total * at["alpha"]
    if c_buf is not None:
        cs = broadcast_strides(ctx.in_types[2].shape, (m, n))
        value = c_buf[sum((v * s for v, s in zip((r, col), cs) if s), 0)]
        total = total + (value * at["beta"] if at["beta"] != 1.0 else value)
    nb.store(ctx.outputs[0], r * n + col, epilogue(at, total))
    _close(scopes)
    return True


def matmul_lower(ctx):
    a_shape, b_shape, batch, _ = _matmul_shapes(ctx.node.name, ctx.in_types[0].shape, ctx.in_types[1].shape)
    (m, k), n = a_shape[-2:], b_shape[-1]
    a, b = ctx.inputs
    sa, sb = broadcast_strides(a_shape[:-2], batch), broadcast_strides(b_shape[:-2], batch)
    nb = ctx.nb
    scopes, vars_ = _output_loops(nb, tuple(batch) + (m, n))
    bvars, (r, col) = vars_[:-2], vars_[-2:]
    a_off = sum((v * (s * m * k) for v, s in zip(bvars, sa) if s), 0)
    b_off = sum((v * (s * k * n) for v, s in zip(bvars, sb) if s), 0)
    c_off = sum((v * (s * m * n) for v, s in zip(bvars, strides(batch)) if s), 0)
    total = _reduce(nb, (k,), "k", lambda kk: a[a_off + r * k + kk] * b[b_off + kk * n + col])
    nb.store(ctx.outputs[0], c_off + r * n + col, total)
    _close(scopes)
    return True


GPU_LOWERINGS = {"Conv": conv_lower, "Gemm": gemm_lower, "MatMul": matmul_lower}


def gpu_lowering(op, default):
    """The lowering for `op` on a GPU: ours when we have one that accepts the node
    (it returns None to decline), else the registry's."""
    ours = GPU_LOWERINGS.get(op)
    if ours is None:
        return default

    def lower(ctx):
        if ours(ctx) is None:
            default(ctx)
    return lower


