"""Winograd F(2x2, 3x3) for the weight gradient of a 3x3 stride-1 convolution:
2.25x fewer multiplications than the im2col GEMM (ConvGradWeight's direct path).

The forward pass computes, per 2x2 output tile, Y = A^T [sum_c U[m, c] * V[c]] A
with U = G w G^T and V = B^T d B (ops/winograd.py). With L = <Y, dY>:
    dL/dU[m, c] = sum over tiles of Z[m] * V[c],   Z = A dY_tile A^T (4x4)
    dW[m, c] = G^T dU[m, c] G
so the sum over the batch's tiles becomes 16 GEMMs, one per element xi of the tile,
each with k the tiles (long) and m x c outputs:
    dU[xi]^T[c, m] += sum_t V[xi][c, t] Zt[xi][t, m]
Layouts per thread: V [16][C][cols] (the GEMM's A: any layout), Zt [16][cols][M]
(its B, read along M: dY is first transposed per image into [pixel][M] so the dY
transform runs along M with contiguous loads), partial dU^T [16][C][M] per team.
The teams take fixed images and their partials are summed in team order at the
end (as the direct path does), so the result does not depend on the schedule."""
from ..lower.gemm import gemm_nest
from ..lower.nests import parts, transpose_tiles
from .conv_common import zero_slot
from .winograd import A_T, B_T, G, _combine, each_tile_position
from .winograd_small import input_transform_along_c


def whole_batch_plan(ctx, n, tiles, channels):
    """The batch as one step on all threads, the 16 GEMMs shared out by tile position
    (an image_plan of one team), where the batch's tiles fit one step and the partial
    sums dU (16 x C x M) outweigh a team's V and Zt: teams would each keep, zero and
    sum a copy (16 MB at 512 x 512), one step stores dU once. ResNet-18's 512-channel
    4x4 layers at 2 threads, same-process A/B under load: median 14.7-16.8 -> 13.4-14.2
    ms. (The forward's teams stayed faster there: 13.5-16.9 against 15.5-18.0 ms.)
    None where teams of whole images pay."""
    c_in, m_out = channels
    threads = ctx.threads
    if threads > 1 and n >= threads and n * tiles <= ctx.variant.tile_columns and \
            c_in * m_out >= (c_in + m_out) * (n * tiles // threads):
        return 1, n, n
    return None


def winograd_grad_weight(ctx, x, dy, out, n, channels, in_hw, out_hw, pads):
    """out[m, c, 3, 3] = the weight gradient of the 3x3 stride-1 convolution of
    x [n, C, h, w] (zero outside, pads (top, left)) whose output gradient is dy [n, M, oh, ow]."""
    from .conv import for_image_chunks, image_plan
    nb = ctx.nb
    c_in, m_out = channels
    oh, ow = out_hw
    ty_n, tx_n = -(-oh // 2), -(-ow // 2)
    tiles = ty_n * tx_n
    tile_columns = ctx.variant.tile_columns   # a step's tiles: V and Zt near L2 (schedule/variants.py)
    plan = whole_batch_plan(ctx, n, tiles, (c_in, m_out)) or \
        image_plan(ctx, n, lambda count: count * tiles <= tile_columns)
    teams, _, chunk = plan
    # an image of more than tile_columns tiles goes by bands of tile rows (its whole V
    # and Zt would not stay in L2); `full` bands of whole pixel rows, then the rest
    band = ty_n if tiles <= tile_columns else max(1, tile_columns // tx_n)
    full = (oh // 2) // band
    cols = chunk * tiles if band == ty_n else band * tx_n
    pixels = chunk * oh * ow if band == ty_n else 2 * band * ow     # dY's, transposed
    v_buf = ctx.scratch(16 * c_in * cols * teams, out.dtype)
    z_buf = ctx.scratch(16 * cols * m_out * teams, out.dtype)
    dyt = ctx.scratch(pixels * m_out * teams, out.dtype)
    # a small map (the variant step's choice): V as [16][cols][C], made along the channels
    # from x moved to [pixel][C] (ops/winograd_small.py), read as the GEMM's A by columns
    along_c = bool(ctx.variant.channels_last) and band == ty_n
    xt = ctx.scratch(chunk * in_hw[0] * in_hw[1] * c_in * teams, out.dtype) if along_c else None
    partial = ctx.scratch(16 * c_in * m_out * teams, out.dtype)
    geometry = (in_hw, out_hw, pads, channels, cols, tiles)

    def rows_of(first, count, ty0, rows, height, slot, parallel):
        """Tile rows [ty0, ty0 + rows) of `count` images (all of them when count > 1),
        dY's pixel rows [2 ty0, 2 ty0 + height)."""
        v_off, z_off = slot * (16 * c_in * cols), slot * (16 * cols * m_out)
        t_off, p_off = slot * (pixels * m_out), slot * (16 * c_in * m_out)
        span = (ty0, rows, height)
        if along_c:
            input_transform_along_c(ctx, x, xt, v_buf, first, count, slot * (chunk * in_hw[0] * in_hw[1] * c_in),
                                    v_off, geometry[:5], parallel)
        else:
            _input_transform(ctx, x, v_buf, first, count, v_off, geometry, span, parallel)
        split = ("map", count * m_out * height * ow) if parallel else None
        with nb.loop(count, hint="i", parallel_candidate=split) as img:      # dY [M][pixels] -> [pixels][M]
            transpose_tiles(ctx, dy, (first + img) * (m_out * oh * ow) + ty0 * (2 * ow), oh * ow, dyt,
                            t_off + img * (height * ow * m_out), m_out, m_out, height * ow)
        _dy_transform(ctx, dyt, z_buf, count, t_off, z_off, geometry, span, parallel)

        def gemm(xi, own_slot):
            at = lambda r, j: p_off + (xi * c_in + r) * m_out + j
            gemm_nest(ctx, c_in, m_out, count * rows * tx_n,
                      (lambda r, kk: v_buf[v_off + (xi * cols + kk) * c_in + r]) if along_c else
                      (lambda r, kk: v_buf[v_off + (xi * c_in + r) * cols + kk]),
                      lambda kk, j: z_buf[z_off + (xi * cols + kk) * m_out + j],
                      partial, at, init=None if single else lambda r, j: partial[at(r, j)],
                      parallel=False, slot=own_slot)
        each_tile_position(ctx, gemm, slot, parallel)     # the images left over: the 16 GEMMs shared out

    def images(first, count, slot, parallel):
        if band == ty_n:
            return rows_of(first, count, 0, ty_n, oh, slot, parallel)
        with nb.loop(full, hint="band") as b:             # chunk is 1 here: one image
            rows_of(first, 1, b * band, band, 2 * band, slot, parallel)
        if ty_n > full * band:
            rows_of(first, 1, full * band, ty_n - full * band, oh - 2 * full * band, slot, parallel)

    # the whole batch in one step (512 x 512 on 4x4 maps): its products are the sums, so
    # the partials need no zeroing first nor reading back (16 MB each way)
    single = teams == 1 and chunk == n and band == ty_n
    for_image_chunks(ctx, n, plan, images, accumulates=True,
                     start=None if single else lambda slot: zero_slot(ctx, partial, slot, teams))
    _output_transform(ctx, partial, out, teams, c_in, m_out)


def _input_transform(ctx, x, v_buf, first, count, v_off, geometry, span, parallel):
    """V[xi][c][col] = (B^T d B)[xi] per 4x4 input tile d (the forward's transform)
    of the tile rows [ty0, ty0 + rows)."""
    nb = ctx.nb
    (h, w), _, (pt, pl), (c_in, _), cols, tiles = geometry
    ty0, rows, _ = span
    _, tx_n = _tile_counts(geometry)
    split = ("winograd", count * c_in * rows * tx_n) if parallel else None
    with nb.loop(count * c_in, hint="ic", parallel_candidate=split) as ic:
        img, c = ic // c_in, ic % c_in
        with nb.loop(rows, hint="ty") as ty:
            with nb.loop(tx_n, "vector", ctx.lanes(v_buf.dtype), hint="tx") as tx:
                def d(i, j):
                    iy, ix = (ty0 + ty) * 2 + (i - pt), tx * 2 + (j - pl)
                    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                    return x.load(((first + img) * c_in + c) * (h * w) + iy * w + ix, mask=ok)
                table = [[_combine(B_T[a], [d(i, j) for i in range(4)]) for j in range(4)] for a in range(4)]
                for a in range(4):
                    for b in range(4):
                        at = v_off + ((a * 4 + b) * c_in + c) * cols + (img * rows + ty) * tx_n + tx
                        nb.store(v_buf, at, _combine(B_T[b], table[a]))


def _dy_transform(ctx, dyt, z_buf, count, t_off, z_off, geometry, span, parallel):
    """Zt[xi][col][m] = (A dY A^T)[xi] per 2x2 tile of dY (zero past the edge), along M;
    dyt holds `height` pixel rows an image from the span's first tile row."""
    nb = ctx.nb
    _, (oh, ow), _, (_, m_out), cols, tiles = geometry
    _, rows, height = span
    _, tx_n = _tile_counts(geometry)
    a_cols = [(A_T[0][a], A_T[1][a]) for a in range(4)]      # A = A_T's transpose: row a
    split = ("map", count * rows * tx_n * m_out * 4) if parallel else None     # 4 outputs a tile
    with nb.loop(count * rows, hint="ity", parallel_candidate=split) as row:
        img, ty = row // rows, row % rows
        with nb.loop(tx_n, hint="tx") as tx:
            with nb.loop(m_out, "vector", ctx.lanes(z_buf.dtype), hint="m") as mm:
                def d(p, q):
                    oy, ox = ty * 2 + p, tx * 2 + q
                    return dyt.load(t_off + img * (height * ow * m_out) + (oy * ow + ox) * m_out + mm,
                                    mask=(oy < height) & (ox < ow))
                rows_ = [[_combine(a_cols[a], [d(0, q), d(1, q)]) for q in range(2)] for a in range(4)]
                col = row * tx_n + tx
                for a in range(4):
                    for b in range(4):
                        nb.store(z_buf, z_off + ((a * 4 + b) * cols + col) * m_out + mm,
                                 _combine(a_cols[b], rows_[a]))


def _output_transform(ctx, partial, out, teams, c_in, m_out):
    """dW[m, c] = G^T (sum over teams of dU[m, c]) G, 9 values per (m, c); computed
    along M, a lanes-wide tile of them moved to dW's [m][c][3][3] by a register transpose."""
    nb, lanes = ctx.nb, ctx.lanes(out.dtype)
    tile = ctx.local(9 * lanes, out.dtype)
    g_cols = [tuple(G[a][i] for a in range(4)) for i in range(3)]
    with nb.loop(c_in, hint="c", parallel_candidate=("map", c_in * m_out * 16 * teams)) as c:
        for m0, count, width in parts(m_out, lanes):
            if not (count and width):
                continue
            with nb.loop(count, hint="mb") as mb:
                with nb.loop(width, "vector", lanes, hint="m") as lane:
                    mm = mb * lanes + m0 + lane

                    def du(xi):
                        terms = [partial[((s * 16 + xi) * c_in + c) * m_out + mm] for s in range(teams)]
                        return sum(terms[1:], terms[0])
                    d = [[du(a * 4 + b) for b in range(4)] for a in range(4)]
                    rows = [[_mul_sum(g_cols[i], [d[a][b] for a in range(4)]) for b in range(4)] for i in range(3)]
                    for i in range(3):
                        for j in range(3):
                            nb.store(tile, (i * 3 + j) * lanes + lane, _mul_sum(g_cols[j], rows[i]))
                for r0 in range(0, 9, lanes):      # rows of at most `lanes` (8 on AVX2)
                    nb.transpose(tile, r0 * lanes, lanes, out, (mb * lanes + m0) * (c_in * 9) + c * 9 + r0,
                                 c_in * 9, min(lanes, 9 - r0), width, lanes)


def _mul_sum(coeffs, terms):
    parts_ = [t if k == 1 else t * float(k) for k, t in zip(coeffs, terms) if k]
    return sum(parts_[1:], parts_[0])


def _tile_counts(geometry):
    _, (oh, ow), _, _, _, _ = geometry
    return -(-oh // 2), -(-ow // 2)
