"""Winograd F(2x2, 3x3) on small maps with the channels along the vectors.

On a map whose tile row is shorter than a vector (ResNet-18 CIFAR's 8x8 and 4x4
layers: 4 and 2 tiles a row against 8 or 16 lanes) ops/winograd.py's transforms,
vectorised along a tile row, run mostly masked lanes with strided loads: they
took 8.7 ms of a 512-channel 4x4 convolution's 24 ms and 15.7 of a 256-channel
8x8 one's 32 (AVX2, batch 32, 1 thread). Here the input is first moved to
[pixel][C] by register transposes, so every transform is contiguous along the
channels with one mask per vector, and the products are taken the other way round:
    Mt[xi][tile, m] = sum_c Vt[xi][tile, c] Ut[xi][c, m]
with Ut made at run time straight into the GEMM's compile-time panel layout
(schedule/gemm.py's prepack: [k_blocks][M / panel][kc][panel]), so no GEMM packs
it. Mt's output transform runs along M into [pixel][M], moved back to NCHW by
register transposes. Same sums in the same order as ops/winograd.py's (over c,
in the same k blocks): the result does not depend on the thread count."""
from ..lower.gemm import gemm_nest
from ..lower.loop_ir import THREAD_INDEX
from ..lower.nests import transpose_tiles
from ..schedule.loops import splits
from .conv_common import for_image_chunks, image_plan
from .winograd import A_T, B_T, G, _combine, _mul_sum, each_tile_position, winograd_conv as _along_tile_rows


def winograd_conv(ctx, x, u, y, in_shape, out_shape, pads, channels, finish, weight=None):
    """ops/winograd.py's winograd_conv, or along the channels where the variant step chose it."""
    if u is None and ctx.variant.channels_last:
        return winograd_channels_last(ctx, x, y, in_shape, out_shape, pads, channels, finish, weight)
    return _along_tile_rows(ctx, x, u, y, in_shape, out_shape, pads, channels, finish, weight=weight)


class _Offset:
    """A buffer seen from `base` on: one tile position's panels for gemm_nest's
    `prepacked`, which indexes its buffer from 0."""

    def __init__(self, buf, base):
        self.buf, self.base, self.dtype = buf, base, buf.dtype

    def __getitem__(self, index):
        return self.buf[self.base + index]


def winograd_channels_last(ctx, x, y, in_shape, out_shape, pads, channels, finish, weight):
    """y = finish(...) of the 3x3 stride-1 convolution of x [n, C, h, w] (pads (top,
    left), zero outside) by the raw weights `weight` (ops/winograd.py's RawWeights),
    as winograd_conv computes it."""
    nb = ctx.nb
    n, h, w = in_shape
    oh, ow = out_shape
    c_in, m_out = channels
    pt, pl = pads
    ty_n, tx_n = -(-oh // 2), -(-ow // 2)
    tiles, hw, ohw = ty_n * tx_n, h * w, oh * ow
    lanes = ctx.lanes(y.dtype)
    kc, panel = ctx.variant.channels_last       # Ut's panels, as the variant step chose them
    ut = ctx.scratch(16 * c_in * m_out, y.dtype)
    _transform_weights(ctx, ut, weight, c_in, m_out, kc, panel)

    plan = image_plan(ctx, n, lambda count: count * tiles <= ctx.variant.tile_columns)
    teams, _, chunk = plan
    cols = chunk * tiles
    xt = ctx.scratch(chunk * hw * c_in * teams, y.dtype)
    vt = ctx.scratch(16 * cols * c_in * teams, y.dtype)
    mt = ctx.scratch(16 * cols * m_out * teams, y.dtype)
    yt = ctx.scratch(chunk * ohw * m_out * teams, y.dtype)

    def images(first, count, slot, parallel):
        x_at, v_at = slot * (chunk * hw * c_in), slot * (16 * cols * c_in)
        m_at, y_at = slot * (16 * cols * m_out), slot * (chunk * ohw * m_out)
        input_transform_along_c(ctx, x, xt, vt, first, count, x_at, v_at,
                                ((h, w), out_shape, pads, channels, cols), parallel)

        def gemm(xi, own_slot):                        # Mt[xi] = Vt[xi] Ut[xi]
            gemm_nest(ctx, count * tiles, m_out, c_in,
                      lambda r, kk: vt[v_at + (xi * cols + r) * c_in + kk], None,
                      mt, lambda r, j: m_at + (xi * cols + r) * m_out + j,
                      parallel=False, slot=own_slot, prepacked=(_Offset(ut, xi * (c_in * m_out)), kc, panel))
        each_tile_position(ctx, gemm, slot, parallel)

        with nb.loop(count * ty_n, hint="ity",            # Y = A^T M A along M, then the epilogue
                     parallel_candidate=_split(parallel, "winograd", count * m_out * tiles)) as row:
            img, ty = row // ty_n, row % ty_n
            with nb.loop(tx_n, hint="tx") as tx:
                with nb.loop(m_out, "vector", lanes, hint="m") as m:
                    at = m_at + (row * tx_n + tx) * m_out + m
                    tile = [[mt[at + (a * 4 + b) * (cols * m_out)] for b in range(4)] for a in range(4)]
                    for p in range(2):
                        line = [_combine(A_T[p], [tile[a][b] for a in range(4)]) for b in range(4)]
                        for q in range(2):
                            oy, ox = ty * 2 + p, tx * 2 + q
                            value = finish(first + img, m, oy, ox, _combine(A_T[q], line))
                            nb.store(yt, y_at + (img * ohw + oy * ow + ox) * m_out + m, value,
                                     mask=(oy < oh) & (ox < ow))
        with nb.loop(count, hint="i", parallel_candidate=_split(parallel, "map", count * ohw * m_out)) as img:
            transpose_tiles(ctx, yt, y_at + img * (ohw * m_out), m_out, y, (first + img) * (m_out * ohw), ohw,
                            ohw, m_out)
    for_image_chunks(ctx, n, plan, images)


def _transform_weights(ctx, ut, raw, c_in, m_out, kc, panel):
    """Ut[xi] = (G w G^T)[xi] as [C][M] in panels: element (c, m) at
    ((c // kc * (M / panel) + m // panel) * kc + c % kc) * panel + m % panel.
    A vector of M at a time, c inner: each c's lanes x 9 taps go through one register
    transpose into [9][lanes], so the reads run along the weights' rows (per c
    across all M, they strode 18 KB a row at 512 x 512: 7 ms of a 24 ms convolution)."""
    nb, lanes = ctx.nb, ctx.lanes(ut.dtype)
    split = ("map", m_out * c_in * 16)
    per_thread = splits(ctx.target, split)      # the schedule splits M: a staging slot each
    staged = ctx.scratch(9 * lanes * (ctx.threads if per_thread else 1), ut.dtype)
    tap = (lambda i, j: (2 - i) * 3 + 2 - j) if raw.flipped else (lambda i, j: i * 3 + j)
    with nb.loop(m_out // panel, hint="mp", parallel_candidate=split) as mp:
        at = THREAD_INDEX * (9 * lanes) if per_thread else 0
        for half in range(0, panel, lanes):
            with nb.loop(c_in, hint="c") as c:
                m0 = mp * panel + half
                transpose_tiles(ctx, raw.buf, c * raw.c_stride + m0 * raw.m_stride, raw.m_stride, staged, at, lanes,
                                lanes, 9)
                with nb.loop(lanes, "vector", lanes, hint="m") as lane:
                    g = [[staged[at + tap(i, j) * lanes + lane] for j in range(3)] for i in range(3)]
                    rows = [[_mul_sum(G[a], [g[i][j] for i in range(3)]) for j in range(3)] for a in range(4)]
                    panel_at = (((c // kc) * (m_out // panel) + mp) * kc + c % kc) * panel + half + lane
                    for a in range(4):
                        for b in range(4):
                            nb.store(ut, (a * 4 + b) * (c_in * m_out) + panel_at, _mul_sum(G[b], rows[a]))


def input_transform_along_c(ctx, x, xt, vt, first, count, x_at, v_at, geometry, parallel):
    """Vt[xi][col][c] = (B^T d B)[xi] per 4x4 input tile d of `count` images from
    `first` (col = image * tiles + tile), x moved to [pixel][C] in xt first."""
    nb, lanes = ctx.nb, ctx.lanes(vt.dtype)
    (h, w), (oh, ow), (pt, pl), (c_in, _), cols = geometry
    ty_n, tx_n, hw = -(-oh // 2), -(-ow // 2), h * w
    with nb.loop(count, hint="i", parallel_candidate=_split(parallel, "map", count * hw * c_in)) as img:
        transpose_tiles(ctx, x, (first + img) * (c_in * hw), hw, xt, x_at + img * (hw * c_in), c_in, c_in, hw)
    with nb.loop(count * ty_n, hint="ity",
                 parallel_candidate=_split(parallel, "winograd", count * c_in * ty_n * tx_n)) as row:
        img, ty = row // ty_n, row % ty_n
        with nb.loop(tx_n, hint="tx") as tx:
            with nb.loop(c_in, "vector", lanes, hint="c") as c:
                def d(i, j):
                    iy, ix = ty * 2 + (i - pt), tx * 2 + (j - pl)
                    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                    return xt.load(x_at + (img * hw + iy * w + ix) * c_in + c, mask=ok)
                table = [[_combine(B_T[a], [d(i, j) for i in range(4)]) for j in range(4)] for a in range(4)]
                col = row * tx_n + tx
                for a in range(4):
                    for b in range(4):
                        nb.store(vt, v_at + ((a * 4 + b) * cols + col) * c_in + c, _combine(B_T[b], table[a]))


def _split(parallel, family, work):
    """A loop's parallel candidate where the caller shares this step among the threads."""
    return (family, work) if parallel else None
