"""MatMul (batched, broadcasting) and Gemm, both lowered to the blocked GEMM nest."""
import numpy as np

from ..lower.gemm import gemm_nest
from ..lower.nests import broadcast_strides, strided_map, strides
from .common import broadcast, fail, same_dtype, tt
from .conv_common import EPILOGUE, apply_activation, epilogue
from .registry import gradient, non_differentiable, register


def _matmul_shapes(node, a, b):
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if len(a2) < 2 or len(b2) < 2:
        fail(node, "MatMul needs inputs of rank >= 1")
    if a2[-1] != b2[-2]:
        fail(node, f"MatMul inner dimensions differ: {tuple(a)} @ {tuple(b)}")
    batch = broadcast(node, a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return a2, b2, batch, out


def _permuted(shape, perm):
    return tuple(shape) if perm is None else tuple(shape[p] for p in perm)


def _matmul_infer(attrs, types, consts, node):
    """perm_a, perm_b, perm_out (nutshell's, passes/gemm_transpose.py's fold of a
    batched product's Transposes): A is Transpose(input 0, perm_a), B likewise, and
    the output is stored as Transpose(A @ B, perm_out)."""
    dtype = same_dtype(node, types)
    out = _matmul_shapes(node, _permuted(types[0].shape, attrs.get("perm_a")),
                         _permuted(types[1].shape, attrs.get("perm_b")))[3]
    return [tt(dtype, _permuted(out, attrs.get("perm_out")))]


def _matmul_reference(attrs, a, b):
    a = a if attrs.get("perm_a") is None else a.transpose(attrs["perm_a"])
    b = b if attrs.get("perm_b") is None else b.transpose(attrs["perm_b"])
    y = np.matmul(a, b)
    return y if attrs.get("perm_out") is None else np.ascontiguousarray(y.transpose(attrs["perm_out"]))


def _strided_batches(ctx, shapes, perms):
    """A batched product whose operands and output are strided views (perm_a/b/out):
    one GEMM per batch entry, loads and stores through the views' strides (B's and
    the output's last axis stays contiguous: the pass folds only such perms)."""
    (sa, a_st), (sb, b_st) = ((_permuted(s, p), _permuted(strides(s), p)) for s, p in zip(shapes, perms[:2]))
    batch, (m, k), n = sa[:-2], sa[-2:], sb[-1]
    out_shape = batch + (m, n)
    inv = None if perms[2] is None else tuple(perms[2].index(i) for i in range(len(out_shape)))
    o_st = _permuted(strides(_permuted(out_shape, perms[2])), inv)
    a_buf, b_buf = ctx.inputs
    total = int(np.prod(batch, dtype=np.int64))

    def entry(flat, parallel, slot):
        vars_ = _unflatten(flat, batch)
        a_off, b_off, c_off = (sum((v * s for v, s in zip(vars_, st)), 0) for st in (a_st, b_st, o_st))
        gemm_nest(ctx, m, n, k, lambda r, kk: a_buf[a_off + r * a_st[-2] + kk * a_st[-1]],
                  lambda kk, c: b_buf[b_off + kk * b_st[-2] + c],
                  ctx.outputs[0], lambda r, c: c_off + r * o_st[-2] + c, parallel=parallel, slot=slot)
    _batches(ctx, total, entry)


def _matmul_lower(ctx):
    """One GEMM over all of A's rows when B is shared by the whole batch (a
    projection of [seq, batch, hidden] activations); else one GEMM per batch entry,
    the entries shared out among the threads (one fork) when there are enough."""
    perms = tuple(ctx.attrs.get(p) for p in ("perm_a", "perm_b", "perm_out"))
    if any(p is not None for p in perms):
        return _strided_batches(ctx, [t.shape for t in ctx.in_types], perms)
    a_shape, b_shape, batch, _ = _matmul_shapes(ctx.node.name, ctx.in_types[0].shape,
                                                ctx.in_types[1].shape)
    (m, k), n = a_shape[-2:], b_shape[-1]
    a_buf, b_buf = ctx.inputs
    out = ctx.outputs[0]
    total = int(np.prod(batch, dtype=np.int64))
    if all(d == 1 for d in b_shape[:-2]) and tuple(a_shape[:-2]) == tuple(batch):
        return gemm_nest(ctx, total * m, n, k, lambda r, kk: a_buf[r * k + kk],
                         lambda kk, c: b_buf[kk * n + c], out, lambda r, c: r * n + c)
    sa = broadcast_strides(a_shape[:-2], batch)
    sb = broadcast_strides(b_shape[:-2], batch)
    so = strides(batch)
    nb = ctx.nb

    def entry(flat, parallel, slot):
        vars_ = _unflatten(flat, batch)
        a_off = sum((v * (s * m * k) for v, s in zip(vars_, sa) if s), 0)
        b_off = sum((v * (s * k * n) for v, s in zip(vars_, sb) if s), 0)
        c_off = sum((v * (s * m * n) for v, s in zip(vars_, so) if s), 0)
        gemm_nest(ctx, m, n, k,
                  lambda r, kk: a_buf[a_off + r * k + kk],
                  lambda kk, c: b_buf[b_off + kk * n + c],
                  out, lambda r, c: c_off + r * n + c, parallel=parallel, slot=slot)
    _batches(ctx, total, entry)


def _batches(ctx, total, entry):
    """entry(flat batch index, parallel, slot) for every batch entry: shared out among
    the threads (one fork) when there are enough, else one after another, each GEMM
    free to split itself."""
    nb = ctx.nb
    teams = ctx.threads if ctx.threads > 1 and total >= ctx.threads else 1
    if teams > 1:
        per = -(-total // teams)
        with nb.loop(teams, hint="t", parallel_candidate=("teams", total)) as t:
            with nb.loop(per, hint="b", limit=total - t * per) as j:
                entry(t * per + j, False, t)
    else:
        with nb.loop(total, hint="b") as j:
            entry(j, True, None)


def _unflatten(flat, shape):
    """Index variables of each batch dim from a flat index (row-major)."""
    out, rest = [], flat
    for i, d in enumerate(shape):
        inner = int(np.prod(shape[i + 1:], dtype=np.int64))
        out.append(rest // inner if inner > 1 else rest)
        rest = rest % inner if inner > 1 else 0
    return [v if d > 1 else 0 for v, d in zip(out, shape)]


register("MatMul", inputs=(2, 2), attrs={"perm_a": None, "perm_b": None, "perm_out": None},
         infer=_matmul_infer, lower=_matmul_lower, reference=_matmul_reference)


@gradient("MatMul")
def _matmul_grad(g, node, dys, wanted):
    """dA = dY B^T, dB = A^T dY over broadcast batches (summed back to each operand's
    shape); a 1-D operand is a row (A) or column (B) matrix for the duration."""
    a, b = node.inputs
    if any(node.attrs.get(p) is not None for p in ("perm_a", "perm_b", "perm_out")):
        fail(node, "a MatMul with folded Transposes is made after autodiff")
    sa, sb = g.shape(a), g.shape(b)
    a2 = g.reshape(a, (1,) + sa) if len(sa) == 1 else a
    b2 = g.reshape(b, sb + (1,)) if len(sb) == 1 else b
    ra, rb = len(g.shape(a2)), len(g.shape(b2))
    dy = g.reshape(dys[0], _matmul_shapes(node.name, g.shape(a2), g.shape(b2))[3])
    swap = lambda t, r: g.op("Transpose", [t], perm=tuple(range(r - 2)) + (r - 1, r - 2))
    da = g.reshape(g.unbroadcast(g.op("MatMul", [dy, swap(b2, rb)]), g.shape(a2)), sa) if wanted[0] else None
    if wanted[1] and rb == 2 and ra > 2 and g.shape(a2)[:-2] == g.shape(dy)[:-2]:
        # a weight shared by every batch (a Linear on [N, T, C]): one GEMM with k = N * T,
        # not a per-batch product of k = T summed afterwards (a [N, K, M] temporary)
        rows = lambda t: g.reshape(t, (int(np.prod(g.shape(t)[:-1])), g.shape(t)[-1]))
        db = g.reshape(g.op("Gemm", [rows(a2), rows(dy)], transA=1), sb)
    elif wanted[1]:
        db = g.reshape(g.unbroadcast(g.op("MatMul", [swap(a2, ra), dy]), g.shape(b2)), sb)
    else:
        db = None
    return [da, db]


def _gemm_dims(node, attrs, a, b):
    if len(a) != 2 or len(b) != 2:
        fail(node, f"Gemm needs 2-D inputs, got {tuple(a)} and {tuple(b)}")
    m, k = (a[1], a[0]) if attrs["transA"] else a
    k2, n = (b[1], b[0]) if attrs["transB"] else b
    if k != k2:
        fail(node, f"Gemm inner dimensions differ: {tuple(a)} and {tuple(b)} "
                   f"(transA={attrs['transA']}, transB={attrs['transB']})")
    return m, n, k


def _gemm_infer(attrs, types, consts, node):
    dtype = same_dtype(node, types)
    m, n, _ = _gemm_dims(node, attrs, types[0].shape, types[1].shape)
    if len(types) > 2 and types[2] is not None and broadcast(node, types[2].shape, (m, n)) != (m, n):
        fail(node, f"Gemm bias of shape {types[2].shape} does not broadcast to {(m, n)}")
    return [tt(dtype, (m, n))]


def _gemm_reference(attrs, a, b, c=None):
    a = a.T if attrs["transA"] else a
    b = b.T if attrs["transB"] else b
    y = attrs["alpha"] * (a @ b)
    if c is not None:
        y = y + attrs["beta"] * c
    return apply_activation(attrs, y).astype(a.dtype)


def _gemm_lower(ctx):
    at = ctx.attrs
    m, n, k = _gemm_dims(ctx.node.name, at, ctx.in_types[0].shape, ctx.in_types[1].shape)
    a_buf, b_buf = ctx.inputs[:2]
    c_buf = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    out, nb = ctx.outputs[0], ctx.nb
    load_a = (lambda r, kk: a_buf[kk * m + r]) if at["transA"] else (lambda r, kk: a_buf[r * k + kk])
    if at["transB"]:      # a weight that is not constant (training): transpose it once
        bt = ctx.scratch(k * n, b_buf.dtype)
        strided_map(ctx, bt, (k, n), [b_buf], [(1, k)], lambda v: v)
        b_buf = bt
    load_b = lambda kk, c: b_buf[kk * n + c]
    alpha, beta = at["alpha"], at["beta"]
    bias = None
    if c_buf is not None:
        cs = broadcast_strides(ctx.in_types[2].shape, (m, n))

        def scaled_c(r, c):
            value = c_buf[sum((v * s for v, s in zip((r, c), cs) if s), 0)]
            return value * beta if beta != 1.0 else value
        bias = scaled_c
    if alpha == 1.0:        # the bias seeds the accumulators
        finish = lambda r, c, v: epilogue(at, v)
        init = bias
    else:
        finish = lambda r, c, v: epilogue(at, v * alpha + bias(r, c) if bias else v * alpha)
        init = None
    gemm_nest(ctx, m, n, k, load_a, load_b, out, lambda r, c: r * n + c, init=init, finish=finish)


register("Gemm", inputs=(2, 3), attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, **EPILOGUE},
         infer=_gemm_infer, reference=_gemm_reference, lower=_gemm_lower)


@gradient("Gemm")
def _gemm_grad(g, node, dys, wanted):
    at, dy = node.attrs, dys[0]
    a, b = node.inputs[:2]
    ta, tb, alpha = at["transA"], at["transB"], at["alpha"]
    mm = lambda x, y, tx, ty: g.op("Gemm", [x, y], transA=int(tx), transB=int(ty), alpha=alpha)
    da = db = dc = None
    if wanted[0]:
        da = mm(dy, b, 0, not tb) if not ta else mm(b, dy, tb, 1)
    if wanted[1]:
        db = mm(a, dy, not ta, 0) if not tb else mm(dy, a, 1, ta)
    if len(node.inputs) > 2 and node.inputs[2] and wanted[2]:
        dc = g.unbroadcast(g.scale(dy, at["beta"]), g.shape(node.inputs[2]))
    return [da, db, dc][:len(node.inputs)]


# ---- MatMulPacked: a MatMul whose constant B is already in the GEMM's panels ----
def _packed_infer(attrs, types, consts, node):
    """The packed weights' shape [k_blocks, panels, kc, panel] says their layout (the
    target's, schedule/gemm.py's prepack): it must cover k and n exactly."""
    a, bp = types[0], types[1]
    n = attrs["n"]
    k = a.shape[-1] if a.rank else 0
    kc, panel = (bp.shape[2], bp.shape[3]) if bp.rank == 4 else (0, 0)
    if a.rank < 1 or bp.rank != 4 or min(kc, panel) < 1 or \
            bp.shape[:2] != (-(-max(k, 1) // kc), -(-n // panel)):
        fail(node, f"MatMulPacked of {a.shape} does not fit packed weights {bp.shape} for n = {n}")
    out = tuple(a.shape[:-1]) + (n,)
    c = types[2] if len(types) > 2 else None
    if c is not None and (len(out) != 2 or broadcast(node, c.shape, out) != out):
        fail(node, f"MatMulPacked bias of shape {c.shape} does not broadcast to {out} (2-D products only)")
    return [tt(same_dtype(node, [t for t in types if t is not None]), out)]


def unpack(bp, k, n):
    """B [k, n] back from prepack()'s panels (the reference's way in)."""
    return bp.transpose(0, 2, 1, 3).reshape(bp.shape[0] * bp.shape[2], -1)[:k, :n]


def _packed_lower(ctx):
    a = ctx.in_types[0]
    k, n = a.shape[-1], ctx.attrs["n"]
    rows = a.size // k
    a_buf = ctx.inputs[0]
    _, _, kc, panel = ctx.in_types[1].shape
    init = None
    if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:     # C seeds the accumulators (Gemm's bias)
        c_buf, cs = ctx.inputs[2], broadcast_strides(ctx.in_types[2].shape, (rows, n))
        init = lambda r, c: c_buf[sum((v * s for v, s in zip((r, c), cs) if s), 0)]
    gemm_nest(ctx, rows, n, k, lambda r, kk: a_buf[r * k + kk], None, ctx.outputs[0], lambda r, c: r * n + c,
              init=init, prepacked=(ctx.inputs[1], kc, panel))


def _packed_reference(attrs, a, bp, c=None):
    y = np.matmul(a, unpack(bp, a.shape[-1], attrs["n"]))
    return (y if c is None else y + c).astype(a.dtype)


# an optional C [.., n] (broadcast to the rows) is added, as Gemm's: passes/recurrent.py's
# pack_shared_weights makes a recurrent step's Gemm one over its weight packed once
register("MatMulPacked", inputs=(2, 3), attrs={"n": None}, infer=_packed_infer, lower=_packed_lower,
         reference=_packed_reference, domain="nutshell")
non_differentiable("made after autodiff (constant weights packed for the GEMM)", "MatMulPacked")
