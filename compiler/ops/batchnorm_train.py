"""Training-mode BatchNorm as two fused ops (PyTorch's native_batch_norm and its
backward), instead of ~6 passes of primitives over each activation.

    BatchNormTrain(x, scale, bias[, residual]) -> y, mean, var
        mean, var: the batch's per-channel mean and biased variance, y the
        normalised, scaled and shifted x, plus the residual when given, then
        (relu=1) max(., 0): a ResNet block's Add and ReLU after it, fused by
        passes/batchnorm_fusion.py. The front end updates the running statistics from mean
        and var.
    BatchNormTrainGrad(x, dy, scale, mean, var[, bias]) -> dx, dscale, dbias
        one pass for the per-channel sums of dy and dy * (x - mean), one for dx;
        (relu=1, with the forward's bias) dy where the forward's pre-ReLU value
        (x - mean) * scale / std + bias > 0, else 0: the ReLU gradient's mask
        recomputed from x, which the kernel reads anyway, in the forward's float
        operations (so the same mask), not read from y in a pass of its own.

Each reads x (and dy) twice in memory order: first for per-row sums (a row is
one image's channel, N*C rows split across threads, each summed by one thread in
a fixed order), then, once the rows are combined per channel in image order, for
the element-wise result. So the results are bit-identical whatever the thread
count. The variance is exact in form: each row's squared deviations from its own
mean (the row still in the L1 cache), rows combined as Chan et al.'s parallel
variance. Float32 sums: tested against the float64 reference at rtol 1e-4."""
import numpy as np

from ..lower.loop_ir import Call, Reduce, Select, maximum
from ..lower.nests import map_nest
from .common import fail, require_float, tt
from .registry import gradient, non_differentiable, register


def _geometry(shape):
    """(n, c, inner): the batch, the channels and the spatial size of NC..."""
    return shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))


def _per_channel(shape):
    return (1, shape[1]) + (1,) * (len(shape) - 2)


def _check_input(node, x):
    require_float(node, x)
    if x.rank < 2 or x.size == 0:
        fail(node, f"training BatchNorm needs a non-empty input of rank >= 2, got {x.shape}")
    return x.shape[1]


def _check_channels(node, c, types, names, dtype):
    """Each per-channel input [C] of x's dtype (the kernel mixes them with x's values)."""
    for name, t in zip(names, types):
        if t.shape != (c,) or t.dtype != dtype:
            fail(node, f"{name} must be {dtype.value}[{c}], got {t.dtype.value}{list(t.shape)}")


def _train_infer(attrs, types, consts, node):
    x = types[0]
    c = _check_input(node, x)
    _check_channels(node, c, types[1:3], ("scale", "bias"), x.dtype)
    residual = types[3] if len(types) > 3 else None
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        fail(node, f"residual {residual.dtype.value}{list(residual.shape)} must match x "
                   f"{x.dtype.value}{list(x.shape)}")
    return [tt(x.dtype, x.shape), tt(x.dtype, (c,)), tt(x.dtype, (c,))]


def _moments(x):
    axes = (0,) + tuple(range(2, x.ndim))
    wide = x.astype(np.float64)
    mean = wide.mean(axis=axes)
    centered = wide - mean.reshape(_per_channel(x.shape))
    return mean, centered, (centered * centered).mean(axis=axes)


def _train_reference(attrs, x, scale, bias, residual=None):
    mean, centered, var = _moments(x)
    shape = _per_channel(x.shape)
    inv_std = 1.0 / np.sqrt(var + attrs["epsilon"])
    y = centered * (inv_std * scale).reshape(shape) + bias.reshape(shape)
    y = y + residual if residual is not None else y
    y = np.maximum(y, 0.0) if attrs["relu"] else y
    return y.astype(x.dtype), mean.astype(x.dtype), var.astype(x.dtype)


def _row_sums(ctx, outs, bodies):
    """outs[k][r] = sum over s < H*W of bodies[k](r, flat index of x[n, c, s]) for every
    row r = n * C + c: the rows in memory order (one stream through the tensor, the
    rows split across threads), each row's sum vectorised in a fixed order; a later
    body may read an earlier one's row result (the row is then in the L1 cache)."""
    n, c, inner = _geometry(ctx.in_types[0].shape)
    nb, lanes = ctx.nb, ctx.lanes(ctx.in_types[0].dtype)
    ways = _ways(inner, lanes)
    part = inner // ways
    with nb.loop(n * c, hint="r", parallel_candidate=("map", n * c * inner)) as row:
        for out, body in zip(outs, bodies):
            pixel = nb.var("s")
            at = row * inner + pixel
            terms = [body(row, at + w * part if w else at) for w in range(ways)]
            while len(terms) > 1:      # a fixed tree: (t0 + t1) + (t2 + t3)
                terms = [terms[k] + terms[k + 1] for k in range(0, len(terms), 2)]
            nb.store(out, row, Reduce("sum", pixel, part, terms[0], lanes))


def _ways(inner, lanes):
    """How many quarters (or halves) of a row one vector step adds: a sum's chain of
    dependent adds, not the loads, bounds a long row's time; each part a whole
    number of vectors."""
    for ways in (4, 2):
        if inner % (ways * lanes) == 0:
            return ways
    return 1


def _channel_loop(ctx):
    n, c, _ = _geometry(ctx.in_types[0].shape)
    return ctx.nb.loop(c, hint="c", parallel_candidate=("map", n * c))


def _over_images(ctx, channel, body):
    """sum over n of body(row of [n, channel]), in image order."""
    n, c, _ = _geometry(ctx.in_types[0].shape)
    image = ctx.nb.var("n")
    return Reduce("sum", image, n, body(image * c + channel))


def _channel_map(ctx, out, inputs, fn):
    """out = fn(x-shaped inputs and per-channel ones) over the whole tensor."""
    shape = ctx.in_types[0].shape
    per_channel = (shape[1],) + (1,) * (len(shape) - 2)
    map_nest(ctx, out, shape, [b for b, _ in inputs],
             [shape if whole else per_channel for _, whole in inputs], fn)


def _inv_std(ctx, var, channel):
    return 1.0 / Call("sqrt", (var[channel] + ctx.attrs["epsilon"],))


def _train_lower(ctx):
    """Pass 1: each row's sum and sum of squared deviations from the row's own mean
    (the row then in the cache); per channel, the rows combined exactly (Chan et
    al.: M2 = sum(M2_row + H*W (mean_row - mean)^2)); pass 2: y."""
    x, scale, bias = ctx.inputs[:3]
    y, mean, var = ctx.outputs
    n, c, inner = _geometry(ctx.in_types[0].shape)
    dtype = ctx.in_types[0].dtype
    row_sum, row_m2, gain = ctx.scratch(n * c, dtype), ctx.scratch(n * c, dtype), ctx.scratch(c, dtype)
    row_mean = lambda row: row_sum[row] * (1.0 / inner)
    _row_sums(ctx, [row_sum, row_m2], [lambda row, i: x[i],
                                        lambda row, i: (x[i] - row_mean(row)) * (x[i] - row_mean(row))])
    nb = ctx.nb
    with _channel_loop(ctx) as ch:
        nb.store(mean, ch, _over_images(ctx, ch, lambda row: row_sum[row]) * (1.0 / (n * inner)))
        m = mean[ch]
        spread = lambda row: row_m2[row] + (row_mean(row) - m) * (row_mean(row) - m) * float(inner)
        nb.store(var, ch, _over_images(ctx, ch, spread) * (1.0 / (n * inner)))
        nb.store(gain, ch, scale[ch] * _inv_std(ctx, var, ch))
    residual = ctx.inputs[3] if len(ctx.inputs) > 3 else None

    def normalised(v, m, a, b, *r):
        out = (v - m) * a + b + r[0] if r else (v - m) * a + b
        return maximum(out, 0.0) if ctx.attrs["relu"] else out
    _channel_map(ctx, y, [(x, True), (mean, False), (gain, False), (bias, False)] +
                 ([(residual, True)] if residual is not None else []), normalised)


register("BatchNormTrain", inputs=(3, 4), attrs={"epsilon": 1e-5, "relu": 0}, domain="nutshell",
         infer=_train_infer, reference=_train_reference, lower=_train_lower)


@gradient("BatchNormTrain")
def _batchnorm_train_grad(g, node, dys, wanted):
    """dx, dscale, dbias from BatchNormTrainGrad; gradients reaching the batch mean
    and variance themselves (a loss that reads them) added as primitives; the
    residual's gradient is dy (after the ReLU's)."""
    x, scale = node.inputs[:2]
    y, mean, var = node.outputs
    dy, dmean, dvar = dys
    dy = dy if dy is not None else g.zeros(g.shape(x), x)
    if node.attrs["relu"]:      # the fused ReLU's gradient first
        dy = g.keep(g.cmp("Greater", y, 0.0), dy)
    dx, dscale, dbias = g.op("BatchNormTrainGrad", [x, dy, scale, mean, var], outputs=3,
                             epsilon=node.attrs["epsilon"])
    shape = _per_channel(g.shape(x))
    per_count = 1.0 / (int(np.prod(g.shape(x))) // shape[1])
    if dmean is not None:     # d mean / dx = 1 / count
        dx = g.add(dx, g.scale(g.reshape(dmean, shape), per_count))
    if dvar is not None:      # d var / dx = 2 (x - mean) / count
        centered = g.sub(x, g.reshape(mean, shape))
        dx = g.add(dx, g.mul(centered, g.scale(g.reshape(dvar, shape), 2.0 * per_count)))
    dresidual = [dy if wanted[3] else None] if len(node.inputs) > 3 else []
    return [dx if wanted[0] else None, dscale if wanted[1] else None, dbias if wanted[2] else None] + dresidual


# ---- the backward op ----------------------------------------------------------------
def _grad_infer(attrs, types, consts, node):
    x, dy = types[:2]
    c = _check_input(node, x)
    if dy.shape != x.shape or dy.dtype != x.dtype:
        fail(node, f"dy {dy.dtype.value}{list(dy.shape)} must match x {x.dtype.value}{list(x.shape)}")
    if attrs["relu"] != (len(types) == 6):
        fail(node, "the forward's bias is given with relu=1 only, and relu=1 needs it")
    _check_channels(node, c, types[2:], ("scale", "mean", "var", "bias"), x.dtype)
    return [tt(x.dtype, x.shape), tt(x.dtype, (c,)), tt(x.dtype, (c,))]


def _relu_mask(attrs, x, scale, mean, var, bias):
    """The forward's y > 0, in its float32 operations: (x - mean) * gain + bias with
    gain = scale * (1 / sqrt(var + eps))."""
    shape, dtype = _per_channel(x.shape), x.dtype.type
    gain = scale * (dtype(1.0) / np.sqrt(var + dtype(attrs["epsilon"])))
    return (x - mean.reshape(shape)) * gain.reshape(shape) + bias.reshape(shape) > 0


def _grad_reference(attrs, x, dy, scale, mean, var, bias=None):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = _per_channel(x.shape)
    if attrs["relu"]:
        dy = np.where(_relu_mask(attrs, x, scale, mean, var, bias), dy, dy.dtype.type(0))
    wide_dy = dy.astype(np.float64)
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + attrs["epsilon"])
    centered = x.astype(np.float64) - mean.reshape(shape)
    sum_dy, sum_dy_centered = wide_dy.sum(axis=axes), (wide_dy * centered).sum(axis=axes)
    count = x.size // x.shape[1]
    gain = scale * inv_std
    dx = (wide_dy - (sum_dy / count).reshape(shape)
          - centered * (inv_std * inv_std * sum_dy_centered / count).reshape(shape)) * gain.reshape(shape)
    return dx.astype(x.dtype), (sum_dy_centered * inv_std).astype(x.dtype), sum_dy.astype(x.dtype)


def _grad_lower(ctx):
    """Pass 1: each row's sums of dy and dy * (x - mean), combined per channel in
    image order; pass 2: dx = gain * dy + slope * (x - mean) + shift, with
    gain = scale / std, slope = -gain * sum(dy (x - mean)) / (std^2 count) and
    shift = -gain * sum(dy) / count."""
    x, dy, scale, mean, var = ctx.inputs[:5]
    dx, dscale, dbias = ctx.outputs
    n, c, inner = _geometry(ctx.in_types[0].shape)
    dtype = ctx.in_types[0].dtype
    per_count = 1.0 / (n * inner)
    row_dy, row_dyx = ctx.scratch(n * c, dtype), ctx.scratch(n * c, dtype)
    gain, slope, shift = (ctx.scratch(c, dtype) for _ in range(3))
    nb = ctx.nb
    d = lambda i, ch: dy[i]
    if ctx.attrs["relu"]:          # the forward's gain first: the mask needs it in pass 1
        bias = ctx.inputs[5]
        with _channel_loop(ctx) as ch:
            nb.store(gain, ch, scale[ch] * _inv_std(ctx, var, ch))
        d = lambda i, ch: Select((x[i] - mean[ch]) * gain[ch] + bias[ch] > 0.0, dy[i], 0.0)
    _row_sums(ctx, [row_dy, row_dyx], [lambda row, i: d(i, row % c),
                                        lambda row, i: d(i, row % c) * (x[i] - mean[row % c])])
    with _channel_loop(ctx) as ch:
        nb.store(dbias, ch, _over_images(ctx, ch, lambda row: row_dy[row]))
        inv_std = _inv_std(ctx, var, ch)
        nb.store(dscale, ch, _over_images(ctx, ch, lambda row: row_dyx[row]) * inv_std)
        nb.store(gain, ch, scale[ch] * inv_std)
        # dscale = sum(dy (x - mean)) / std, so slope = -gain * dscale / (std count)
        nb.store(slope, ch, -gain[ch] * dscale[ch] * inv_std * per_count)
        nb.store(shift, ch, -gain[ch] * dbias[ch] * per_count)
    per_channel = [(mean, False), (gain, False), (slope, False), (shift, False)]
    if not ctx.attrs["relu"]:
        _channel_map(ctx, dx, [(dy, True), (x, True)] + per_channel, lambda d, v, m, a, b, s: d * a + (v - m) * b + s)
        return

    def masked(d, v, m, a, b, s, shifted):
        d = Select((v - m) * a + shifted > 0.0, d, 0.0)
        return d * a + (v - m) * b + s
    _channel_map(ctx, dx, [(dy, True), (x, True)] + per_channel + [(ctx.inputs[5], False)], masked)


register("BatchNormTrainGrad", inputs=(5, 6), attrs={"epsilon": 1e-5, "relu": 0}, domain="nutshell",
         infer=_grad_infer, reference=_grad_reference, lower=_grad_lower)
non_differentiable("second derivatives of training BatchNorm are not supported", "BatchNormTrainGrad")
