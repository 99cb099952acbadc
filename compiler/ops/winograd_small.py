"""Winograd F(2x2, 3x3) or F(4x4, 3x3) on small maps with the channels along the vectors.

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
in the same k blocks): the result does not depend on the thread count.

Where the table says (winograd_channels_last_tile 4) the tiles are F(4x4, 3x3)'s
(Lavin & Gray): 6x6 input tiles, 36 GEMMs over a quarter of the tiles, 0.56x
F(2x2)'s multiply-adds. The GEMMs ran at the FMA peak (Zen 4, ResNet-18 CIFAR's
convolutions with the transforms left out), so fewer of them is what pays."""
import numpy as np

from ..lower.gemm import gemm_nest
from ..lower.loop_ir import THREAD_INDEX
from ..lower.nests import parts, transpose_tiles
from ..schedule.loops import splits
from .conv_common import for_image_chunks, image_plan
from .winograd import A_T, B_T, G, _combine, _mul_sum, each_tile_position, winograd_conv as _along_tile_rows

B_T4 = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
G4 = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
A_T4 = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
TILES = {2: (B_T, G, A_T), 4: (B_T4, G4, A_T4)}   # output tile size: F(e x e, 3x3)'s B^T, G, A^T


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


def transform_weights_panels(w, tile, kc, panel):
    """Ut[xi] = (G w G^T)[xi] as [C, M] in the GEMM's panels (schedule/gemm.py's panels_of),
    computed in float64 and rounded once: [points, C, M] holding the panels' order (C % kc
    and M % panel are 0: the variant step's rule), as _transform_weights makes it at run time."""
    from ..schedule.gemm import panels_of
    g = np.array(TILES[tile][1])
    u = np.einsum("ai,mcij,bj->abcm", g, w.astype(np.float64), g).reshape(-1, w.shape[1], w.shape[0])
    return np.stack([panels_of(ui, kc, panel).reshape(ui.shape) for ui in u]).astype(w.dtype)


def weights_from_panels(ut, tile, kc, panel):
    """transform_weights_panels' inverse (G has a left inverse): the reference's way in."""
    points, c, m = ut.shape
    side = tile + 2
    plain = ut.reshape(points, c // kc, m // panel, kc, panel).transpose(0, 1, 3, 2, 4).reshape(points, c, m)
    gp = np.linalg.pinv(np.array(TILES[tile][1]))
    w = np.einsum("ia,abcm,jb->mcij", gp, plain.astype(np.float64).reshape(side, side, c, m), gp)
    return w.astype(ut.dtype)


def winograd_channels_last(ctx, x, y, in_shape, out_shape, pads, channels, finish, weight, ut=None,
                           tile=None, panels=None, after=None):
    """y = finish(...) of the 3x3 stride-1 convolution of x [n, C, h, w] (pads (top,
    left), zero outside) by the raw weights `weight` (ops/winograd.py's RawWeights),
    as winograd_conv computes it; or by `ut`, the weights transformed at compile time
    (transform_weights_panels: F(tile x tile), in `panels` (kc, panel)).
    after(first, count, parallel): emitted once y holds a step's images (NCHW)."""
    nb = ctx.nb
    n, h, w = in_shape
    oh, ow = out_shape
    c_in, m_out = channels
    pt, pl = pads
    e = tile or ctx.variant.out_tile            # F(e x e, 3x3): (e + 2)^2 tile positions
    bt, g, at_ = TILES[e]
    points = (e + 2) ** 2
    ty_n, tx_n = -(-oh // e), -(-ow // e)
    tiles, hw, ohw = ty_n * tx_n, h * w, oh * ow
    lanes = ctx.lanes(y.dtype)
    kc, panel = panels or ctx.variant.channels_last     # Ut's panels, as the variant step chose them
    if ut is None:
        ut = ctx.scratch(points * c_in * m_out, y.dtype)
        _transform_weights(ctx, ut, weight, c_in, m_out, kc, panel, g)

    # V and M of a step as big as F(2x2)'s tile_columns tiles make
    plan = image_plan(ctx, n, lambda count: count * tiles * points <= ctx.variant.tile_columns * 16)
    teams, _, chunk = plan
    cols = chunk * tiles
    xt = ctx.scratch(chunk * hw * c_in * teams, y.dtype)
    vt = ctx.scratch(points * cols * c_in * teams, y.dtype)
    mt = ctx.scratch(points * cols * m_out * teams, y.dtype)
    yt = ctx.scratch(chunk * ohw * m_out * teams, y.dtype)
    line = ctx.local(e * (e + 2) * lanes, y.dtype)   # A^T M: each output reads a row of it, not M again

    def images(first, count, slot, parallel):
        x_at, v_at = slot * (chunk * hw * c_in), slot * (points * cols * c_in)
        m_at, y_at = slot * (points * cols * m_out), slot * (chunk * ohw * m_out)
        input_transform_along_c(ctx, x, xt, vt, first, count, x_at, v_at,
                                ((h, w), out_shape, pads, channels, cols), parallel, e)

        def gemm(xi, own_slot):                        # Mt[xi] = Vt[xi] Ut[xi]
            gemm_nest(ctx, count * tiles, m_out, c_in,
                      lambda r, kk: vt[v_at + (xi * cols + r) * c_in + kk], None,
                      mt, lambda r, j: m_at + (xi * cols + r) * m_out + j,
                      parallel=False, slot=own_slot, prepacked=(_Offset(ut, xi * (c_in * m_out)), kc, panel))
        each_tile_position(ctx, gemm, slot, parallel, points)

        with nb.loop(count * ty_n, hint="ity",            # Y = A^T M A along M, then the epilogue
                     parallel_candidate=_split(parallel, "winograd", count * m_out * tiles)) as row:
            img, ty = row // ty_n, row % ty_n
            with nb.loop(tx_n, hint="tx") as tx:
                for m, lane in _vectors(nb, m_out, lanes, "m"):
                    at = m_at + (row * tx_n + tx) * m_out + m
                    tile = [[mt[at + (a * (e + 2) + b) * (cols * m_out)] for b in range(e + 2)] for a in range(e + 2)]
                    row_at = lambda p, b: (p * (e + 2) + b) * lanes + lane
                    for p in range(e):              # a row of A^T M into the local, then its e outputs
                        for b in range(e + 2):
                            nb.store(line, row_at(p, b), _combine(at_[p], [tile[a][b] for a in range(e + 2)]))
                        for q in range(e):
                            oy, ox = ty * e + p, tx * e + q
                            value = _combine(at_[q], [line[row_at(p, b)] for b in range(e + 2)])
                            nb.store(yt, y_at + (img * ohw + oy * ow + ox) * m_out + m,
                                     finish(first + img, m, oy, ox, value), mask=(oy < oh) & (ox < ow))
        with nb.loop(count, hint="i", parallel_candidate=_split(parallel, "map", count * ohw * m_out)) as img:
            transpose_tiles(ctx, yt, y_at + img * (ohw * m_out), m_out, y, (first + img) * (m_out * ohw), ohw,
                            ohw, m_out)
        if after is not None:
            after(first, count, parallel)
    for_image_chunks(ctx, n, plan, images)


def _transform_weights(ctx, ut, raw, c_in, m_out, kc, panel, g_rows=G):
    """Ut[xi] = (G w G^T)[xi] (G: g_rows) as [C][M] in panels: element (c, m) at
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
                    side = len(g_rows)
                    rows = [[_mul_sum(g_rows[a], [g[i][j] for i in range(3)]) for j in range(3)] for a in range(side)]
                    panel_at = (((c // kc) * (m_out // panel) + mp) * kc + c % kc) * panel + half + lane
                    for a in range(side):
                        for b in range(side):
                            nb.store(ut, (a * side + b) * (c_in * m_out) + panel_at, _mul_sum(g_rows[b], rows[a]))


def input_transform_along_c(ctx, x, xt, vt, first, count, x_at, v_at, geometry, parallel, e=2):
    """Vt[xi][col][c] = (B^T d B)[xi] per (e + 2)^2 input tile d of `count` images from
    `first` (col = image * tiles + tile), x moved to [pixel][C] in xt first."""
    nb, lanes = ctx.nb, ctx.lanes(vt.dtype)
    (h, w), (oh, ow), (pt, pl), (c_in, _), cols = geometry
    ty_n, tx_n, hw = -(-oh // e), -(-ow // e), h * w
    bt, side = TILES[e][0], e + 2
    bt_d = ctx.local(side * side * lanes, vt.dtype)    # B^T d: each (B^T d) B reads it, not its loads again
    with nb.loop(count, hint="i", parallel_candidate=_split(parallel, "map", count * hw * c_in)) as img:
        transpose_tiles(ctx, x, (first + img) * (c_in * hw), hw, xt, x_at + img * (hw * c_in), c_in, c_in, hw)
    with nb.loop(count * ty_n, hint="ity",
                 parallel_candidate=_split(parallel, "winograd", count * c_in * ty_n * tx_n)) as row:
        img, ty = row // ty_n, row % ty_n
        with nb.loop(tx_n, hint="tx") as tx:
            for c, lane in _vectors(nb, c_in, lanes, "c"):
                def d(i, j):
                    iy, ix = ty * e + (i - pt), tx * e + (j - pl)
                    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                    return xt.load(x_at + (img * hw + iy * w + ix) * c_in + c, mask=ok)
                for a in range(side):                  # B^T d into the local
                    for j in range(side):
                        nb.store(bt_d, (a * side + j) * lanes + lane, _combine(bt[a], [d(i, j) for i in range(side)]))
                col = row * tx_n + tx
                for a in range(side):
                    for b in range(side):
                        nb.store(vt, v_at + ((a * side + b) * cols + col) * c_in + c,
                                 _combine(bt[b], [bt_d[(a * side + j) * lanes + lane] for j in range(side)]))


def _vectors(nb, size, lanes, hint):
    """(index, lane) of vectors along `size`: whole vectors, then the edge. A local
    indexed by `lane` holds a value per vector lane (the transforms' rows: kept there,
    each row's terms are read once; as expressions every use repeated them, and the
    F(4x4) IR took LLVM 12 s of a ResNet-18 training compile to clean up, against 7)."""
    for start, blocks, width in parts(size, lanes):
        if blocks and width:
            with nb.loop(blocks, hint=hint + "b") as block:
                with nb.loop(width, "vector", lanes, hint=hint) as lane:
                    yield block * lanes + start + lane, lane


def _split(parallel, family, work):
    """A loop's parallel candidate where the caller shares this step among the threads."""
    return (family, work) if parallel else None
