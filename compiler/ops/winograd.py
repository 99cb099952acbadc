"""Winograd F(2x2, 3x3) convolution (Lavin & Gray 2016): 3x3 stride-1 convolutions
with 2.25x fewer multiplications than the direct GEMM.

Each 2x2 output tile comes from a 4x4 input tile d: Y = A^T [sum_c U_c * V_c] A with
V = B^T d B (input transform) and U = G g G^T (weight transform), so the sum over
input channels becomes 16 independent GEMMs, one per element xi of the 4x4 tile:
    M[xi][m, tile] = sum_c U[xi][m, c] V[xi][c, tile]
Constant weights are transformed once at compile time (passes/winograd.py makes a
WinogradConv node holding U); weights that change (training) are transformed at run
time. Layouts per thread: V [16][C][tiles], M [16][M][tiles], U [16][M][C].
Stride-2 accesses (tile corners) are wide masked loads/stores plus a shuffle."""
from dataclasses import dataclass

import numpy as np

from ..lower.gemm import gemm_nest
from ..lower.loop_ir import THREAD_INDEX
from ..lower.nests import transpose_tiles
from ..schedule.loops import splits
from .conv_common import epilogue, for_image_chunks, image_plan

B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))


MAX_WEIGHT_RANGE = 2.0 ** 10   # max |w| over the median nonzero |w|, per output channel


def precise_enough(w):
    """Whether Winograd's rounding stays near the direct convolution's for these
    weights. Winograd sums U_c * V_c over channels before A^T (.) A cancels terms, so
    its error grows with an output channel's largest weight whatever the input, where
    the direct sum's grows only with the weights that meet nonzero inputs: one weight
    far above the rest meeting zeros (a hostile model: 1e27 out where the references gave 0.1)
    leaves the direct result exact and Winograd's at eps * max|w| * |x|. The rule:
    per output channel, max |w| <= 1024 x the median nonzero |w| (trained weights sit
    within about 20x; 1024 x float32's eps is about 6e-5), and U finite (|U| is at
    most 2.25 max |w|: G's rows sum to at most 1.5 in magnitude)."""
    a = np.abs(w.astype(np.float64)).reshape(w.shape[0], -1)
    if not 2.25 * a.max(initial=0.0) < np.finfo(w.dtype).max:
        return False
    peak = a.max(axis=1, keepdims=True)
    nonzero = a > 0
    # the median nonzero |w| is below peak / 1024 when more than half of them are
    small = (nonzero & (a * MAX_WEIGHT_RANGE < peak)).sum(axis=1)
    return not np.any(2 * small > nonzero.sum(axis=1))


def transform_weights(w):
    """U[xi, m, c] = (G w[m, c] G^T)[xi] in float64, rounded once to w's dtype."""
    g = np.array(G)
    u = np.einsum("ai,mcij,bj->abmc", g, w.astype(np.float64), g)
    return u.reshape(16, w.shape[0], w.shape[1]).astype(w.dtype)


def untransform_weights(u):
    """The 3x3 weights back from U (G has a left inverse): the reference's way in."""
    gp = np.linalg.pinv(np.array(G))
    w = np.einsum("ia,abmc,jb->mcij", gp, u.astype(np.float64).reshape((4, 4) + u.shape[1:]), gp)
    return w.astype(u.dtype)


def _combine(coeffs, terms):
    """sum(c * t) as adds and subtracts of t (c = +/-1) or t * |c| (F(4x4)'s other
    coefficients); a 0 skips its term."""
    total = None
    for c, t in zip(coeffs, terms):
        if c:
            u = t if abs(c) == 1 else t * float(abs(c))
            total = (u if c > 0 else -u) if total is None else (total + u if c > 0 else total - u)
    return total


def each_tile_position(ctx, gemm, slot, parallel, points=16):
    """gemm(xi, slot) for the `points` positions xi of a tile (16 of F(2x2, 3x3)'s 4x4:
    Winograd's 16 GEMMs): shared out among the threads in one fork when `parallel`,
    not one fork each; else in order on the caller's scratch slot."""
    nb = ctx.nb
    if parallel and ctx.threads > 1:
        per = -(-points // ctx.threads)
        with nb.loop(ctx.threads, hint="t", parallel_candidate=("teams", points)) as t:
            with nb.loop(per, hint="xi", limit=points - t * per) as j:
                gemm(t * per + j, t)
    else:
        with nb.loop(points, hint="xi") as xi:
            gemm(xi, slot)


def winograd_conv(ctx, x, u, y, in_shape, out_shape, pads, channels, finish, weight=None, u_strips=0):
    """y[n, m, oy, ox] = finish(n, m, oy, ox, sum) of the 3x3 stride-1 convolution
    of x ([n, C, h, w], zero outside) with pads (top, left).
    u: a [16, M, C] buffer of transformed weights, or None with weight(m, c, i, j)
    giving the raw 3x3 weights as loop-IR expressions (transformed here, at run time);
    u_strips: each U[xi] is in strips of this many rows (schedule/gemm.py's strips_of)."""
    nb = ctx.nb
    n, h, w = in_shape
    oh, ow = out_shape
    c_in, m_out = channels
    pt, pl = pads
    ty_n, tx_n = -(-oh // 2), -(-ow // 2)
    tiles = ty_n * tx_n
    lanes = ctx.lanes(y.dtype)
    tile_columns = ctx.variant.tile_columns     # a step's tiles: V and M stay near L2 (schedule/variants.py)
    if u is None:
        u = ctx.scratch(16 * m_out * c_in, y.dtype)
        _transform_weights_at_run_time(ctx, u, weight, m_out, c_in)

    plan = image_plan(ctx, n, lambda count: count * tiles <= tile_columns)
    teams, _, chunk = plan
    # batch 1 on several threads: by bands of tile rows when each thread's V and M
    # outweigh U, which every band reads whole (measured: 0.75x at 16 -> 64 channels on
    # 55x55, 1.8x at 512 channels on 7x7), or when the output has at most half the
    # channels (DenseNet's 128 -> 32: 0.84-0.95x on 7x7 to 28x28), or when U is small
    # (at most the table's band_max_weights channels, 48 x 192: SqueezeNet's 32 -> 128
    # on 27x27 0.70x, measured 1.2x once before the pool kept its workers up): the shared
    # steps' forks and small output transform cost more than U read twice
    split = n < ctx.threads and ctx.threads > 1 and ty_n >= 2 * ctx.threads and (
        tiles * (c_in + m_out) >= ctx.variant.band_min_ratio * c_in * m_out or 2 * m_out <= c_in or
        c_in * m_out <= ctx.variant.band_max_weights)
    per_team = -(-ty_n // ctx.threads) if split else ty_n
    # a thread's share of more than tile_columns tiles would leave L2 too: bands of rows
    # that divide the map, dealt out (DenseNet's 128 -> 32 on 56x56 at 2 threads: up to 10 ms under load -> 1.8-2 ms, ONNX Runtime 1.4)
    # A band count the threads divide evenly comes first: 28 tile rows on 2 threads as 7
    # bands of 4 left one thread idle for the last band (ResNet-18's 56x56 layers, DenseNet's
    # block 1), 14 bands of 2 do not
    dealt = split and per_team * tx_n > tile_columns
    if dealt:
        fits = [d for d in range(1, ty_n + 1) if ty_n % d == 0 and (d == 1 or d * tx_n <= tile_columns)]
        per_team = max([d for d in fits if (ty_n // d) % ctx.threads == 0] or fits)
    # an image of more than tile_columns tiles goes by bands of tile rows: its whole V
    # and M (2 MB each for 32 channels on 64x64) would not stay in L2
    band = ty_n if split or tiles <= tile_columns else max(1, tile_columns // tx_n)
    cols = per_team * tx_n if split else (chunk * tiles if band == ty_n else band * tx_n)
    copies = ctx.threads if split else teams
    v_buf = ctx.scratch(16 * c_in * cols * copies, y.dtype)
    m_buf = ctx.scratch(16 * m_out * cols * copies, y.dtype)

    # Each step works on `count` images' tile rows [ty0, ty0 + rows): column
    # img * tiles + (ty - ty0) * tx_n + tx of the slot's V and M.
    def transform_input(first, count, ty0, rows, v_off, parallel):      # V = B^T d B per 4x4 tile
        with nb.loop(count * c_in, hint="ic",
                     parallel_candidate=("winograd", count * c_in * tiles) if parallel else None) as ic:
            img, c = ic // c_in, ic % c_in
            with nb.loop(rows, hint="ty") as ty:
                with nb.loop(tx_n, "vector", lanes, hint="tx") as tx:
                    def d(i, j):
                        iy, ix = (ty0 + ty) * 2 + (i - pt), tx * 2 + (j - pl)
                        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                        return x.load(((first + img) * c_in + c) * (h * w) + iy * w + ix, mask=ok)
                    table = [[_combine(B_T[a], [d(i, j) for i in range(4)]) for j in range(4)]
                             for a in range(4)]
                    for a in range(4):
                        for b in range(4):
                            at = v_off + ((a * 4 + b) * c_in + c) * cols + img * tiles + ty * tx_n + tx
                            nb.store(v_buf, at, _combine(B_T[b], table[a]))

    def products(width, v_off, m_off, slot, parallel):       # M[xi] = U[xi] V[xi], 16 GEMMs
        def gemm(xi, own_slot):
            gemm_nest(ctx, m_out, width, c_in,
                      lambda r, kk: u[(xi * m_out + r) * c_in + kk],
                      lambda kk, j: v_buf[v_off + (xi * c_in + kk) * cols + j],
                      m_buf, lambda r, j: m_off + (xi * m_out + r) * cols + j,
                      parallel=False, slot=own_slot,
                      a_strips=(u, xi * (m_out * c_in), u_strips) if u_strips else None)
        each_tile_position(ctx, gemm, slot, parallel)

    def transform_output(first, count, ty0, rows, m_off, parallel):     # Y = A^T M A, then the epilogue
        with nb.loop(count * m_out, hint="im",
                     parallel_candidate=("winograd", count * m_out * tiles) if parallel else None) as im:
            img, m = im // m_out, im % m_out
            with nb.loop(rows, hint="ty") as ty:
                with nb.loop(tx_n, "vector", lanes, hint="tx") as tx:
                    at = m_off + m * cols + img * tiles + ty * tx_n + tx
                    tile = [[m_buf[at + (a * 4 + b) * (m_out * cols)] for b in range(4)] for a in range(4)]
                    for p in range(2):
                        row = [_combine(A_T[p], [tile[a][b] for a in range(4)]) for b in range(4)]
                        for q in range(2):
                            oy, ox = (ty0 + ty) * 2 + p, tx * 2 + q   # stride-2 stores: one interleaved pair
                            value = finish(first + img, m, oy, ox, _combine(A_T[q], row))
                            nb.store(y, ((first + img) * m_out + m) * (oh * ow) + oy * ow + ox, value,
                                     mask=(oy < oh) & (ox < ow), interleave=(q, 2))

    def part(first, count, ty0, rows, slot, parallel):
        v_off, m_off = slot * (16 * c_in * cols), slot * (16 * m_out * cols)
        transform_input(first, count, ty0, rows, v_off, parallel)
        products(count * rows * tx_n, v_off, m_off, slot, parallel)
        transform_output(first, count, ty0, rows, m_off, parallel)

    def by_bands(first, count, slot, parallel):
        if band == ty_n:
            return part(first, count, 0, ty_n, slot, parallel)
        with nb.loop(ty_n // band, hint="band") as b:       # chunk is 1 here: one image
            part(first, 1, b * band, band, slot, parallel)
        if ty_n % band:
            part(first, 1, ty_n - ty_n % band, ty_n % band, slot, parallel)

    if not split:
        return for_image_chunks(ctx, n, plan, by_bands)
    if dealt:        # the threads take the bands as they come, each in its own V and M
        with nb.loop(n, hint="i") as img:
            with nb.loop(ty_n // per_team, hint="band", parallel_candidate=("teams", ty_n // per_team)) as b:
                part(img, 1, b * per_team, per_team, THREAD_INDEX, False)
        return
    # One image, several threads: each takes a band of tile rows through all three
    # steps in one fork, its V and M its own (no barriers, and they stay in its cache).
    last = ty_n - per_team * (ctx.threads - 1)
    with nb.loop(n, hint="i") as img:
        with nb.loop(ctx.threads, hint="t", parallel_candidate=("teams", n)) as t:
            with nb.loop(1, hint="band", limit=(ctx.threads - 1) - t):
                part(img, 1, t * per_team, per_team, t, False)
            if last > 0:
                with nb.loop(1, hint="band", limit=t - (ctx.threads - 2)):
                    part(img, 1, (ctx.threads - 1) * per_team, last, t, False)


@dataclass(frozen=True)
class RawWeights:
    """3x3 weights in memory: (m, c, i, j) at buf[m * m_stride + c * c_stride + i * 3 + j]
    (flipped: (2 - i) * 3 + 2 - j, a convolution's transpose). The run-time transform
    then moves each m's taps through register transposes into [9][C] (contiguous
    along c) instead of gathering them tap by tap (2-5 ms a step at 512 x 512)."""
    buf: object
    m_stride: int
    c_stride: int
    flipped: bool = False


def _transform_weights_at_run_time(ctx, u, weight, m_out, c_in):
    nb = ctx.nb
    split = ("map", m_out * c_in * 16)
    per_thread = splits(ctx.target, split)      # the schedule splits m: a slot each
    raw = weight if isinstance(weight, RawWeights) else None
    if raw is not None:
        staged = ctx.scratch(9 * c_in * (ctx.threads if per_thread else 1), u.dtype)
    with nb.loop(m_out, hint="m", parallel_candidate=split) as m:
        if raw is not None:
            at = THREAD_INDEX * (9 * c_in) if per_thread else 0
            transpose_tiles(ctx, raw.buf, m * raw.m_stride, raw.c_stride, staged, at, c_in, c_in, 9)
            tap = (lambda i, j: (2 - i) * 3 + 2 - j) if raw.flipped else (lambda i, j: i * 3 + j)
            weight = lambda mm, cc, i, j: staged[at + tap(i, j) * c_in + cc]
        with nb.loop(c_in, "vector", ctx.lanes(u.dtype), hint="c") as c:
            g = [[weight(m, c, i, j) for j in range(3)] for i in range(3)]
            rows = [[_mul_sum(G[a], [g[i][j] for i in range(3)]) for j in range(3)] for a in range(4)]
            for a in range(4):
                for b in range(4):
                    nb.store(u, ((a * 4 + b) * m_out + m) * c_in + c, _mul_sum(G[b], rows[a]))


def _mul_sum(coeffs, terms):
    """sum(k * t) over nonzero k (G's rows: at least one)."""
    parts = [t if k == 1 else t * float(k) for k, t in zip(coeffs, terms) if k]
    return sum(parts[1:], parts[0])


def conv_finish(attrs, bias, residual, m, out):
    """A convolution's epilogue for winograd_conv: bias, residual, activation."""
    oh, ow = out

    def finish(ni, mm, oy, ox, v):
        v = v + bias[mm] if bias is not None else v
        v = v + residual[(ni * m + mm) * (oh * ow) + oy * ow + ox] if residual is not None else v
        return epilogue(attrs, v)
    return finish
