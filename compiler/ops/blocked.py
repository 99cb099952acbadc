"""The blocked-channel layout (oneDNN's nChw16c): [N, C, H, W] held as
[N, ceil(C/16), H, W, 16], so one vector is 16 channels of one pixel.

MobileNet-style layers are pointwise and depthwise convolutions on small maps; in
NCHW their vectors run along rows of 7 or 14 pixels and waste most lanes. Blocked,
both vectorise over channels: a pointwise convolution is a GEMM whose rows are
pixels and whose columns are output channels, a depthwise one 16 independent
window sums per vector. passes/layout.py decides where the layout is used.

Channels past C (the last block's padding) may hold anything: every kernel here
reads across channels only up to C, and element-wise ops work lane by lane, so
those lanes never reach a real channel. ToBlocked writes zeros there."""
import numpy as np

from ..lower.loop_ir import Const, fma
from ..lower.nests import parts, transpose_tiles
from ..schedule.variants import choose_blocked_tile
from .common import fail, tt
from .conv_common import conv_reference, epilogue
from .registry import non_differentiable, register

BLOCK = 16


def blocks(c):
    return -(-c // BLOCK)


def to_blocked(x):
    n, c = x.shape[:2]
    padded = np.zeros((n, blocks(c) * BLOCK) + x.shape[2:], x.dtype)
    padded[:, :c] = x
    return np.ascontiguousarray(np.moveaxis(padded.reshape((n, blocks(c), BLOCK) + x.shape[2:]), 2, -1))


def from_blocked(x, c):
    n, cb = x.shape[:2]
    return np.ascontiguousarray(np.moveaxis(x, -1, 2).reshape((n, cb * BLOCK) + x.shape[2:-1])[:, :c])


# ---- ToBlocked / FromBlocked: the reorders at a blocked region's edges ------------
def _to_infer(attrs, types, consts, node):
    x = types[0]
    if x.rank != 4:
        fail(node, f"ToBlocked needs NCHW, got {x.shape}")
    n, c, h, w = x.shape
    return [tt(x.dtype, (n, blocks(c), h, w, BLOCK))]


def _full_and_last_blocks(c):
    """(first block, count, channels each): the whole blocks, then a partial last one."""
    return [(start // BLOCK, count, width) for start, count, width in parts(c, BLOCK) if count and width]


def _to_lower(ctx):
    """Per image and channel block, its [16, H*W] plane transposed to [H*W, 16];
    the last block's missing channels are zeros."""
    n, c, h, w = ctx.in_types[0].shape
    hw, cb = h * w, blocks(c)
    xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
    for first, count, width in _full_and_last_blocks(c):
        with nb.loop(n * count, hint="q", parallel_candidate=("map", n * count * hw * BLOCK)) as q:
            image, block = q // count, q % count + first
            transpose_tiles(ctx, xb, (image * c + block * BLOCK) * hw, hw, out,
                            (image * cb + block) * hw * BLOCK, BLOCK, width, hw, pad_rows=BLOCK)


def _from_infer(attrs, types, consts, node):
    x, c = types[0], attrs["channels"]
    if x.rank != 5 or x.shape[4] != BLOCK or blocks(c) != x.shape[1]:
        fail(node, f"FromBlocked of {c} channels does not fit {x.shape}")
    return [tt(x.dtype, (x.shape[0], c) + x.shape[2:4])]


def _from_lower(ctx):
    """Per image and channel block, its [H*W, 16] plane transposed to [16, H*W]
    (the last block: only its real channels)."""
    n, cb, h, w, _ = ctx.in_types[0].shape
    c, hw = ctx.attrs["channels"], h * w
    xb, out, nb = ctx.inputs[0], ctx.outputs[0], ctx.nb
    for first, count, width in _full_and_last_blocks(c):
        with nb.loop(n * count, hint="q", parallel_candidate=("map", n * count * hw * BLOCK)) as q:
            image, block = q // count, q % count + first
            transpose_tiles(ctx, xb, (image * cb + block) * hw * BLOCK, BLOCK, out,
                            (image * c + block * BLOCK) * hw, hw, hw, width)


register("ToBlocked", infer=_to_infer, reference=lambda attrs, x: to_blocked(x), lower=_to_lower,
         domain="nutshell")
register("FromBlocked", attrs={"channels": None}, infer=_from_infer,
         reference=lambda attrs, x: from_blocked(x, attrs["channels"]), lower=_from_lower, domain="nutshell")


# ---- ConvBlocked: convolutions with a blocked output -----------------------------
# dense (group 1) from a blocked input: pointwise (1x1, stride 1, no padding);
# dense from a plain NCHW input of few channels (an image: the network's stem), any
# window; depthwise from a blocked input, any window.
def pack_dense(w):
    """[M, C, kh, kw] -> [Mb, C*kh*kw, 16]: each output block's weights, one row per tap."""
    m, k = w.shape[0], w[0].size
    packed = np.zeros((blocks(m) * BLOCK, k), w.dtype)
    packed[:m] = w.reshape(m, k)
    return np.ascontiguousarray(packed.reshape(blocks(m), BLOCK, k).transpose(0, 2, 1))


def pack_depthwise(w):
    """[C, 1, kh, kw] -> [Cb, kh, kw, 16]."""
    return to_blocked(w.transpose(1, 0, 2, 3))[0]


def pack_bias(b):
    out = np.zeros(blocks(b.shape[0]) * BLOCK, b.dtype)
    out[:b.shape[0]] = b
    return out


CONV_BLOCKED_ATTRS = {"depthwise": 0, "channels": None, "out_channels": None, "kernel_shape": (1, 1),
                      "strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "activation": None}


def _geometry(attrs, h, w):
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel_shape"], attrs["strides"], attrs["dilations"]
    pt, pl, pb, pr = attrs["pads"]
    return ((h + pt + pb - (kh - 1) * dh - 1) // sh + 1, (w + pl + pr - (kw - 1) * dw - 1) // sw + 1)


def _pointwise_window(attrs):
    return tuple(attrs["kernel_shape"]) == (1, 1) and tuple(attrs["strides"]) == (1, 1) and \
        not any(attrs["pads"])


def _conv_infer(attrs, types, consts, node):
    x, wt = types[0], types[1]
    c, m, depthwise = attrs["channels"], attrs["out_channels"], attrs["depthwise"]
    plain = x.rank == 4
    if (x.shape[1] != c if plain else (x.rank != 5 or x.shape[1] != blocks(c) or x.shape[4] != BLOCK)) or \
            (plain and depthwise) or not (plain or depthwise or _pointwise_window(attrs)):
        fail(node, f"ConvBlocked has no kernel for input {x.shape} ({c} channels) with {attrs}")
    kh, kw = attrs["kernel_shape"]
    want = (blocks(c), kh, kw, BLOCK) if depthwise else (blocks(m), c * kh * kw, BLOCK)
    if wt.shape != want or (depthwise and m != c):
        fail(node, f"ConvBlocked weights {wt.shape}, expected {want}")
    oh, ow = _geometry(attrs, *x.shape[2:4])
    if oh <= 0 or ow <= 0:
        fail(node, f"ConvBlocked output {oh}x{ow} is empty")
    result = tt(x.dtype, (x.shape[0], blocks(m), oh, ow, BLOCK))
    if len(types) > 3 and types[3] is not None and types[3] != result:
        fail(node, f"fused residual must be {result}, got {types[3]}")
    return [result]


def _conv_reference(attrs, x, w, b=None, residual=None):
    c, m = attrs["channels"], attrs["out_channels"]
    kh, kw = attrs["kernel_shape"]
    if attrs["depthwise"]:
        plain = from_blocked(w[None], c).transpose(1, 0, 2, 3)
    else:
        plain = w.transpose(0, 2, 1).reshape(-1, c, kh, kw)[:m]
    conv = {"group": c if attrs["depthwise"] else 1, "activation": attrs.get("activation")}
    conv.update({k: tuple(attrs[k]) for k in ("kernel_shape", "strides", "pads", "dilations")})
    y = conv_reference(conv, x if x.ndim == 4 else from_blocked(x, c), plain, None if b is None else b[:m],
                       None if residual is None else from_blocked(residual, m))
    return to_blocked(y)


def _tile(node, in_types, consts, target):
    """The variant step's register tile (schedule/variants.py): a pointwise conv's row is its whole map."""
    oh, ow = _geometry(node.attrs, *in_types[0].shape[2:4])
    mb = blocks(node.attrs["out_channels"])
    return choose_blocked_tile(target, node.attrs["depthwise"], mb, oh * ow if in_types[0].rank == 5 else ow)


def _conv_lower(ctx):
    n, _, h, w = ctx.in_types[0].shape[:4]
    (_, mb, oh, ow, _) = ctx.out_types[0].shape
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    residual = ctx.inputs[3] if len(ctx.inputs) > 3 else None

    def finish(at, lane, block, value):      # bias, residual, activation at out[at]
        value = value + bias[block * BLOCK + lane] if bias is not None else value
        value = value + residual[at] if residual is not None else value
        return epilogue(ctx.attrs, value)
    if ctx.attrs["depthwise"]:
        return _depthwise(ctx, (n, mb, h, w), (oh, ow), finish)
    if ctx.in_types[0].rank == 5:
        return _dense(ctx, n, mb, (1, oh * ow), finish, _pointwise_reduction(ctx, oh * ow))
    _dense(ctx, n, mb, (oh, ow), finish, _direct_reduction(ctx, (h, w), (oh, ow)))


def _pointwise_reduction(ctx, pixels):
    """Channel c of pixel r: x[n, c // 16, x0 + r, c % 16] (the output's one row is every pixel)."""
    c, xb = ctx.attrs["channels"], ctx.inputs[0]
    cb, nb = blocks(c), ctx.nb

    def reduction(step, image, y, x0):
        def channel(kb, ci):
            step(lambda r: xb[((image * cb + kb) * pixels + x0 + r) * BLOCK + ci], kb * BLOCK + ci)
        with nb.loop(c // BLOCK, hint="kb") as kb:
            with nb.loop(BLOCK, hint="ci") as ci:
                channel(kb, ci)
        with nb.loop(c % BLOCK, hint="ci") as ci:
            channel(c // BLOCK, ci)
    return reduction


def _direct_reduction(ctx, in_hw, out_hw):
    """Tap (c, i, j) of output pixel (y, x0 + r), read from a zero-bordered copy of the
    image made first (a stem's three channels: a small copy, no bounds in the loop);
    without padding (SqueezeNet's stem) every tap is inside: read from the image itself."""
    (h, w), (oh, ow) = in_hw, out_hw
    n, c = ctx.in_types[0].shape[:2]
    (kh, kw), (sh, sw), (dh, dw) = ctx.attrs["kernel_shape"], ctx.attrs["strides"], ctx.attrs["dilations"]
    pt, pl = ctx.attrs["pads"][:2]
    hp, wp = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    xb, nb = ctx.inputs[0], ctx.nb
    if pt == 0 and pl == 0 and hp <= h and wp <= w:
        source, hp, wp = xb, h, w
    else:
        source = ctx.scratch(n * c * hp * wp, xb.dtype)
        with nb.loop(n * c, hint="q", parallel_candidate=("map", n * c * hp * wp)) as q:
            with nb.loop(hp, hint="py") as py:
                with nb.loop(wp, "vector", ctx.lanes(xb.dtype), hint="px") as px:
                    iy, ix = py - pt, px - pl
                    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                    nb.store(source, (q * hp + py) * wp + px, xb.load((q * h + iy) * w + ix, mask=inside))

    def reduction(step, image, y, x0):      # loops, not unrolled taps: a 7x7 stem's code stays small
        with nb.loop(c, hint="c") as ci:
            with nb.loop(kh, hint="i") as i:
                with nb.loop(kw, hint="j") as j:
                    row = ((image * c + ci) * hp + y * sh + i * dh) * wp
                    step(lambda r: source[row + (x0 + r) * sw + j * dw], (ci * kh + i) * kw + j)
    return reduction


def _dense(ctx, n, mb, out_hw, finish, reduction):
    """A GEMM whose rows are output pixels and whose columns are output channels:
    tiles of R pixels of an output row x B output blocks (B the largest divisor of Mb
    up to 4, so no block edge, and up to half the target's accumulator budget, so
    each weight load serves two rows or more) kept in registers over the reduction,
    each of its steps R broadcasts of A, B vector loads of the packed weights and
    R*B FMAs.
    reduction(step, image, y, x0) emits the reduction's loops, calling step(a, k)
    with a(r) pixel r's A value and k the weights' row."""
    oh, ow = out_hw
    k_rows = ctx.in_types[1].shape[1]
    nb, lanes = ctx.nb, ctx.lanes(ctx.out_types[0].dtype)
    wb, out = ctx.inputs[1], ctx.outputs[0]
    rows, group = ctx.variant.pixels, ctx.variant.blocks    # the tile: schedule/variants.py
    tiles, edge = divmod(ow, rows)
    groups = mb // group
    acc = ctx.local(rows * group * BLOCK, out.dtype)

    def tile(image, m0, y, x0, height):
        def each(body):
            with nb.loop(height, "unroll", hint="r") as r:
                with nb.loop(group, "unroll", hint="b") as b:
                    with nb.loop(BLOCK, "vector", lanes, hint="l") as lane:
                        body((r * group + b) * BLOCK + lane, r, b, lane)

        def step(a_of, k):
            each(lambda a, r, b, lane: nb.store(acc, a, fma(a_of(r), wb[((m0 + b) * k_rows + k) * BLOCK + lane],
                                                            acc[a])))
        each(lambda a, r, b, lane: nb.store(acc, a, Const(0.0, acc.dtype)))
        reduction(step, image, y, x0)

        def store(a, r, b, lane):
            at = (((image * mb + m0 + b) * oh + y) * ow + x0 + r) * BLOCK + lane
            nb.store(out, at, finish(at, lane, m0 + b, acc[a]))
        each(store)

    split = ("map", n * mb * oh * ow * k_rows)
    per_image = groups * oh * tiles
    with nb.loop(n * per_image, hint="q", parallel_candidate=split) as q:
        image, rest = q // per_image, q % per_image
        tile(image, (rest // (oh * tiles)) * group, (rest % (oh * tiles)) // tiles, (q % tiles) * rows, rows)
    if edge:
        with nb.loop(n * groups * oh, hint="q", parallel_candidate=split if n * groups * oh > 1 else None) as q:
            tile(q // (groups * oh), ((q // oh) % groups) * group, q % oh, tiles * rows, edge)


def _interior(out, pad, stride, dil, k, size):
    """[lo, hi): the outputs whose whole window lies inside an input of `size`."""
    lo = min(out, -(-pad // stride))
    hi = (size - 1 - (k - 1) * dil + pad) // stride + 1
    return lo, max(lo, min(hi, out))


def _taps(o, pad, stride, dil, k, size):
    """[lo, hi): the taps of output o that read inside an input of `size` (0 <= o*s + t*d - pad < size)."""
    lo = max(0, -(-(pad - o * stride) // dil))
    return lo, max(lo, min(k, (size - 1 + pad - o * stride) // dil + 1))


def _classes(out, pad, stride, dil, k, size):
    """(first, count, taps): the border outputs one by one, each with the taps inside
    the input, and the interior as one class with every tap."""
    lo, hi = _interior(out, pad, stride, dil, k, size)
    border = lambda r: [(o, 1, _taps(o, pad, stride, dil, k, size)) for o in r]
    return border(range(lo)) + ([(lo, hi - lo, (0, k))] if hi > lo else []) + border(range(hi, out))


def _depthwise(ctx, shape, out_hw, finish):
    """Every output vector is a sum of kh*kw vector loads (16 channels of one input
    pixel) times the block's tap weights. A border window sums only its taps inside
    the input (known when the code is generated: no masks, no zero-bordered copy):
    border rows are generated one by one, and in each row the interior outputs go
    row_tile at once and the rest (border columns, the interior's remainder) as
    groups of up to row_tile constant positions, so they too are independent FMA
    chains rather than one latency-bound chain each."""
    n, cb, h, w = shape
    oh, ow = out_hw
    (kh, kw), (sh, sw), (dh, dw) = ctx.attrs["kernel_shape"], ctx.attrs["strides"], ctx.attrs["dilations"]
    pt, pl = ctx.attrs["pads"][:2]
    nb, lanes = ctx.nb, ctx.lanes(ctx.out_types[0].dtype)
    xb, wb, out = ctx.inputs[0], ctx.inputs[1], ctx.outputs[0]
    x_lo, x_hi = _interior(ow, pl, sw, dw, kw, w)
    row_tile = ctx.variant.row_tile      # outputs of a row at once: independent FMA chains
    tiles = (x_hi - x_lo) // row_tile
    rest = [x for x in range(ow) if not x_lo <= x < x_lo + tiles * row_tile]
    groups = [rest[g:g + row_tile] for g in range(0, len(rest), row_tile)]
    acc = ctx.local(row_tile * BLOCK, out.dtype)
    planes = n * cb
    work = planes * oh * ow * kh * kw * BLOCK
    with nb.loop(planes, hint="q", parallel_candidate=("depthwise", work)) as plane:
        block = plane % cb

        def outputs(y, i_taps, xs):
            """xs: (x, j taps) of the outputs summed at once, x a loop index or a constant."""
            def each(body, j=None):
                for r, (x, (j_lo, j_hi)) in enumerate(xs):
                    if j is None or j_lo <= j < j_hi:
                        with nb.loop(BLOCK, "vector", lanes, hint="l") as lane:
                            body(r * BLOCK + lane, x, lane)
            each(lambda a, x, lane: nb.store(acc, a, Const(0.0, acc.dtype)))
            for i in range(*i_taps):
                for j in range(kw):
                    each(lambda a, x, lane: nb.store(acc, a, fma(
                        xb[((plane * h + y * sh + (i * dh - pt)) * w + x * sw + (j * dw - pl)) * BLOCK + lane],
                        wb[((block * kh + i) * kw + j) * BLOCK + lane], acc[a])), j)

            def store(a, x, lane):
                at = ((plane * oh + y) * ow + x) * BLOCK + lane
                nb.store(out, at, finish(at, lane, block, acc[a]))
            each(store)

        def row(y, i_taps):
            if tiles:
                with nb.loop(tiles, hint="xt") as xt:
                    x0 = x_lo + xt * row_tile
                    outputs(y, i_taps, [(x0 + r, (0, kw)) for r in range(row_tile)])
            for group in groups:
                outputs(y, i_taps, [(x, _taps(x, pl, sw, dw, kw, w)) for x in group])

        for first, count, i_taps in _classes(oh, pt, sh, dh, kh, h):
            if count == 1:
                row(first, i_taps)
                continue
            with nb.loop(count, hint="y") as yy:
                row(first + yy if first else yy, i_taps)


register("ConvBlocked", inputs=(2, 4), attrs=CONV_BLOCKED_ATTRS, infer=_conv_infer, reference=_conv_reference,
         lower=_conv_lower, domain="nutshell", variant=_tile)
non_differentiable("made after autodiff by the layout pass", "ConvBlocked", "ToBlocked", "FromBlocked")
