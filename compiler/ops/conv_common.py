"""What the convolution family shares: attributes and fused epilogues (Conv,
Gemm/MatMul, the blocked and Winograd convolutions), sliding-window geometry
(Conv, pooling, their gradients, the layout passes), the NumPy reference, and
the batch's sharing out among threads with the im2col copy that feeds the GEMM.
Apart from ops/conv.py so that its users (ops/winograd.py among them) do not
import one another."""
import numpy as np

from ..lower.loop_ir import THREAD_INDEX, Const
from .common import fail, positive_ints

CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
              "pads": None, "strides": None}
EPILOGUE = {"activation": None}     # set by the fusion pass: applied in the GEMM's store
# "Relu", "Silu" (x * sigmoid(x), EfficientNet's swish), or (op, attrs as pairs) for a
# registered element-wise op of one input (Clip's bounds as attrs, HardSwish, ...)


def _activation_op(act):
    from .registry import get_op
    op, items = act
    return get_op(op), dict(items)


def epilogue(attrs, value):
    from ..lower.loop_ir import maximum, sigmoid
    act = attrs.get("activation")
    if act == "Relu":
        return maximum(value, 0.0)
    if act == "Silu":          # x * sigmoid(x), as ONNX's Mul(x, Sigmoid(x))
        return value * sigmoid(value)
    if act:
        opdef, at = _activation_op(act)
        return opdef.expr(at, value)
    return value


def apply_activation(attrs, y):
    act = attrs.get("activation")
    if act == "Relu":
        return np.maximum(y, 0)
    if act == "Silu":
        return y * (1 / (1 + np.exp(-y)))
    if act:
        opdef, at = _activation_op(act)
        return opdef.reference(at, y)
    return y


def window_geometry(node, attrs, spatial, kernel, ceil_mode=False, dilations=True):
    """(pads_begin, pads_end, strides, dilations, out_spatial) of a sliding window,
    validated: zero strides or dilations, bad pads or windows larger than the
    padded input are ShapeErrors (BAD_INPUTS rows 9, 10, 12)."""
    rank = len(spatial)
    strides = positive_ints(node, attrs.get("strides") or (1,) * rank, "strides")
    dil = positive_ints(node, (attrs.get("dilations") or (1,) * rank) if dilations else (1,) * rank,
                        "dilations")
    kernel = positive_ints(node, kernel, "kernel_shape")
    for name, value in (("strides", strides), ("dilations", dil), ("kernel_shape", kernel)):
        if len(value) != rank:
            fail(node, f"{name} has {len(value)} values for {rank} spatial dims")
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-x // s) for x, s in zip(spatial, strides)]
        total = [max((o - 1) * s + e - x, 0) for o, s, e, x in zip(out, strides, effective, spatial)]
        small = [t // 2 for t in total]
        begin = small if auto_pad == "SAME_UPPER" else [t - h for t, h in zip(total, small)]
        end = [t - b for t, b in zip(total, begin)]
    elif auto_pad in ("NOTSET", "VALID"):
        pads = attrs.get("pads") if auto_pad == "NOTSET" else None
        pads = positive_ints(node, pads or (0,) * (2 * rank), "pads", allow_zero=True)
        if len(pads) != 2 * rank:
            fail(node, f"pads has {len(pads)} values, expected {2 * rank}")
        begin, end = list(pads[:rank]), list(pads[rank:])
    else:
        fail(node, f"unknown auto_pad '{auto_pad}'")
    out = []
    for x, b, e, eff, s in zip(spatial, begin, end, effective, strides):
        span = x + b + e - eff
        if span < 0:
            fail(node, f"window {eff} is larger than the padded input {x + b + e}")
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= x + b:    # the last window must start inside
            o -= 1
        out.append(o)
    return tuple(begin), tuple(end), strides, dil, tuple(out)


def conv_reference(attrs, x, w, b=None, residual=None):
    """Direct NCHW convolution in NumPy (any spatial rank), the oracle for Conv."""
    rank = x.ndim - 2
    begin, end, strides, dil, out = window_geometry("ref", attrs, x.shape[2:], w.shape[2:])
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(begin, end)))
    group = attrs.get("group", 1)
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    y = np.zeros((n, m) + out, dtype=np.float64)
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * (m // group):(g + 1) * (m // group)].astype(np.float64)
        for kidx in np.ndindex(*w.shape[2:]):
            sl = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                       for k, d, o, s in zip(kidx, dil, out, strides))
            patch = xs[(slice(None), slice(None)) + sl]          # n, cg, *out
            y[:, g * (m // group):(g + 1) * (m // group)] += np.einsum(
                "nc...,mc->nm...", patch, ws[(slice(None), slice(None)) + kidx])
    if b is not None:
        y += b.reshape((1, m) + (1,) * rank)
    if residual is not None:      # the fusion pass's Add, before the activation
        y += residual
    return apply_activation(attrs, y).astype(x.dtype)


def per_image(ctx, n, image):
    """Whole images per thread when the batch allows it (one fork per op, a private
    scratch slot per thread); the images left over parallelise inside instead.
    image(index, slot, parallel) emits the loops for one image."""
    for_image_chunks(ctx, n, image_plan(ctx, n, lambda count: False),
                     lambda first, count, slot, parallel: image(first, slot, parallel))


def image_plan(ctx, n, fits):
    """How a batch is shared out: (teams, per_team, chunk). Each of `teams` threads
    takes per_team images, `chunk` at a time (the largest divisor of per_team with
    fits(chunk), at least 1); the images left over are shared by all threads."""
    teams = max(1, min(ctx.threads, n))
    per_team = n // teams
    chunk = max((d for d in range(1, per_team + 1) if per_team % d == 0 and (d == 1 or fits(d))),
                default=1)       # an empty batch: no images, no loop
    return teams, per_team, chunk


def for_image_chunks(ctx, n, plan, body, accumulates=False, start=None):
    """Emit body(first_image, count, slot, parallel) over the batch as `plan` says:
    slot is the thread's own scratch, parallel whether the body should split itself.
    The threads take chunks as they come; a body that accumulates into its slot
    (weight gradients) gets each team's fixed images instead, so the sums' order,
    and so the result, never depends on the schedule. start(slot), with accumulates:
    emitted once per team before its images (zeroing its partial sums: each thread
    its own, in parallel, rather than one thread all of them before the fork)."""
    teams, per_team, chunk = plan
    nb = ctx.nb
    if teams == 1:
        if start is not None:
            start(0)
        with nb.loop(n // chunk, hint="n") as j:
            body(j * chunk, chunk, 0, ctx.threads > 1)
        return
    if accumulates:
        with nb.loop(teams, hint="t", parallel_candidate=("teams", n)) as t:
            if start is not None:
                start(t)
            with nb.loop(per_team // chunk, hint="n") as j:
                body(t * per_team + j * chunk, chunk, t, False)
    else:
        with nb.loop(teams * per_team // chunk, hint="n", parallel_candidate=("teams", n)) as j:
            body(j * chunk, chunk, THREAD_INDEX, False)
    with nb.loop(n - per_team * teams, hint="n") as j:   # left over: shared by the threads
        body(j + per_team * teams, 1, 0, True)


def zero_slot(ctx, buf, slot, slots):
    """buf's part `slot` of `slots` equal parts set to 0 (a team's partial sums)."""
    size, lanes = buf.size // slots, ctx.lanes(buf.dtype)
    if slots == 1 and size % lanes == 0:        # one team: all threads may share it
        with ctx.nb.loop(size // lanes, hint="zb", parallel_candidate=("map", size)) as zb:
            with ctx.nb.loop(lanes, "vector", lanes, hint="z") as i:
                ctx.nb.store(buf, zb * lanes + i, Const(0.0, buf.dtype))
        return
    with ctx.nb.loop(size, "vector", lanes, hint="z") as i:
        ctx.nb.store(buf, slot * size + i, Const(0.0, buf.dtype))


def im2col(ctx, xb, x_off, col, base, chw, kernel, out, strides, dil, pads, parallel, row_stride=None):
    """col[base + (c, i, j) * row_stride + (y, x)] = X[c, y*s - p + i*d, x*s - p + j*d],
    0 outside; row_stride defaults to oh * ow (one image's columns)."""
    (cg, h, wd), (kh, kw), (oh, ow) = chw, kernel, out
    row_stride = row_stride or oh * ow
    nb = ctx.nb
    split = ("map", cg * kh * kw * oh * ow) if parallel else None
    with nb.loop(cg, hint="c", parallel_candidate=split) as c:
        with nb.loop(kh, hint="ki") as i:
            with nb.loop(kw, hint="kj") as j:
                with nb.loop(oh, hint="y") as y:
                    with nb.loop(ow, "vector", ctx.lanes(col.dtype), hint="x") as xx:
                        iy = y * strides[0] + (i * dil[0] - pads[0])
                        ix = xx * strides[1] + (j * dil[1] - pads[1])
                        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
                        row = (c * kh + i) * kw + j
                        nb.store(col, base + row * row_stride + y * ow + xx,
                                 xb.load(x_off + c * (h * wd) + iy * wd + ix, mask=inside))
