"""Register-blocked GEMM loop nest, the workhorse of MatMul, Gemm and Conv.

C[row, col] = finish(init(row, col) + sum_k A(row, k) * B(k, col)). The micro-kernel:
MR rows x NR columns of accumulators (NR = 2 vectors) held in registers across the
k loop, each k one broadcast of A per row and NR/lanes vector loads of B; the M
edge is a nest with fewer rows, the N edge a masked vector tail.

When B is large it is packed first (Goto's scheme, with B in the role of BLIS's A
because our vectors run along N): blocks of KC x NC, each panel KC x NR contiguous,
sized so a block stays in L2 and the MR x KC strip of A it meets stays in L1. The
micro-kernel then streams a panel sequentially instead of striding through B's
rows (a page per k step at n = 1024). k blocks after the first resume from C;
only the last applies `finish` (the epilogue). The partial panel at N's edge is
padded with zeros and joins the last block, so its k loop needs no mask.

Threads: one fork per GEMM. The threads take column blocks as they come, each
packing into its own buffer (no shared data), when there are enough of them;
else each packs every block itself and takes a share of the row blocks. A fork
per block would cost more (GOMP wakes sleeping threads: tens of microseconds).
"""
from ..schedule.gemm import gemm_plan
from .loop_ir import THREAD_INDEX, Const, Load, Reduce, Select, Var, affine_coeff, fma
from .nests import parts as _parts


def _plus(a, b):
    return a if isinstance(b, int) and b == 0 else b if isinstance(a, int) and a == 0 else a + b


def _ceil(a, b):
    return -(-a // b)


def gemm_nest(ctx, m, n, k, load_a, load_b, out, c_index, init=None, finish=None,
              parallel=True, slot=None, prepacked=None, a_strips=None):
    """Emit C = finish(init + A @ B) into ctx.nb. load_a(row, kk) and load_b(kk, col)
    return loop-IR expressions; C[row, col] is out[c_index(row, col)]; init(row, col)
    seeds the sum (a bias), finish(row, col, value) is the epilogue.
    slot: when the caller already runs this nest on several threads (one image per
    thread), the thread's index, so each gets its own packing buffer.
    prepacked: (buffer, kc, panel): B as schedule/gemm.py's prepack() lays it out, in
    panels `panel` columns wide and k blocks of kc (load_b is then unused).
    a_strips: (buffer, base, rows): A stored in strips of `rows` rows (the last strip m % rows
    rows), each strip k-major: A(row0 + i, kk) at base + row0 * k + kk * strip_rows + i
    (schedule/gemm.py's strips_of), so a tile's broadcasts read one stream; the tile's rows are
    then `rows` (load_a is unused).
    The tile, packing, k blocking and threads are schedule/gemm.py's gemm_plan, decided
    whole here before any loop is emitted."""
    plan = gemm_plan(ctx.target, m, n, k, out.dtype, parallel, prepacked[1:] if prepacked is not None else None,
                     rows=a_strips[2] if a_strips is not None else None)
    if a_strips is not None:
        load_a = _strip_loader(a_strips, k)
    parallel = plan.parallel
    if prepacked is not None:
        g = _Gemm(ctx, m, n, k, load_a, out, c_index, init, finish, plan)
        return g.packed(None, parallel, slot, prepacked)
    if n == 1 and a_strips is None and _along_k(lambda kk: load_a(Var("gemv_r"), kk)) and \
            _along_k(lambda kk: load_b(kk, 0)):
        return _matrix_vector(ctx, m, k, load_a, load_b, out, c_index, init, finish, plan, slot)
    g = _Gemm(ctx, m, n, k, load_a, out, c_index, init, finish, plan)
    if plan.packs:
        return g.packed(load_b, parallel, slot)
    g.direct(load_b, parallel)


def _strip_loader(a_strips, k):
    """load_a(row0, kk, i, rows) for A in strips: row0 is a tile's first row, i its row."""
    buf, base, _ = a_strips

    def load(row0, kk, i, tile_rows):     # a tile's rows are its strip's (the last: m % rows)
        return buf[_plus(base, row0 * k) + kk * tile_rows + i]
    load.strips = True
    return load


def _along_k(load):
    """Whether load(k) reads consecutive elements as k steps (a row of A, B's column
    when n == 1)."""
    e = load(Var("gemv_k"))
    return isinstance(e, Load) and e.mask is None and affine_coeff(e.index, Var("gemv_k")) == 1


def _matrix_vector(ctx, m, k, load_a, load_b, out, c_index, init, finish, plan, slot):
    """n == 1 (a squeeze-excitation 1x1 conv on a 1x1 map): the tiles would use one
    lane in 16, so each row is a dot product along k instead (dot_gemm), its lanes
    summed at the end with the epilogue."""
    nb, lanes = ctx.nb, ctx.lanes(out.dtype)
    copies = ctx.threads if slot is not None else 1
    partial = ctx.scratch(m * lanes * copies, out.dtype)
    base = slot * (m * lanes) if slot is not None else 0
    with nb.loop(m * lanes, "vector", lanes, hint="z") as i:
        nb.store(partial, base + i, Const(0.0, out.dtype))
    dot_gemm(ctx, m, 1, k, load_a, lambda c, kk: load_b(kk, c), partial, lambda r, c: base + r * lanes,
             plan.dot_tile, plan.parallel)
    with nb.loop(m, hint="r") as r:
        lane = nb.var("l")
        total = Reduce("sum", lane, lanes, partial[base + r * lanes + lane])
        total = init(r, 0) + total if init else total
        nb.store(out, c_index(r, 0), finish(r, 0, total) if finish else total)


class _Gemm:
    def __init__(self, ctx, m, n, k, load_a, out, c_index, init, finish, plan):
        self.ctx, self.nb, self.m, self.n, self.k = ctx, ctx.nb, m, n, k
        self.load_a, self.out, self.c_index, self.init = load_a, out, c_index, init
        self.finish = finish or (lambda r, c, v: v)
        self.plan, self.s = plan, plan.tile
        self.acc = ctx.local(self.s.mr * self.s.nr, out.dtype)

    def tile(self, row0, mr, col0, nr, k0, kc, load_b, first=True, last=True, k_width=None,
             k_limit=None):
        """One MR x NR tile: seed, the k loop (load_b(kk, lane) for kk in [0, kc)), store.
        first/last: True, or a run-time condition (resume from C / apply finish)."""
        nb, s, acc = self.nb, self.s, self.acc

        def each(body, width):
            with nb.loop(mr, "unroll", hint="r") as ii:
                with nb.loop(width, "vector", s.lanes, hint="c") as jj:
                    body(ii * s.nr + jj, row0 + ii, col0 + jj, jj, ii)

        def seed(r, c):
            fresh = self.init(r, c) if self.init else Const(0.0, acc.dtype)
            return fresh if first is True else Select(first, fresh, self.out[self.c_index(r, c)])

        def done(r, c, v):
            return self.finish(r, c, v) if last is True else Select(last, self.finish(r, c, v), v)

        each(lambda a, r, c, jj, ii: nb.store(acc, a, seed(r, c)), nr)
        with nb.loop(kc, hint="k", limit=k_limit) as kk:
            each(lambda a, r, c, jj, ii: nb.store(acc, a, fma(self.a_value(row0, r, ii, _plus(k0, kk), mr),
                                                          load_b(kk, jj), acc[a])), k_width or nr)
        each(lambda a, r, c, jj, ii: nb.store(self.out, self.c_index(r, c), done(r, c, acc[a])), nr)

    def a_value(self, row0, r, ii, kk, mr):
        """A(r, kk) for row r = row0 + ii of the tile starting at row0 (mr rows)."""
        if getattr(self.load_a, "strips", False):
            return self.load_a(row0, kk, ii, mr)
        return self.load_a(r, kk)

    # ---- B read in place: small problems -------------------------------------------
    def direct(self, load_b, parallel):
        s, m, n = self.s, self.m, self.n
        m_parts, n_parts = _parts(m, s.mr), _parts(n, s.nr)
        rows_outer = m // s.mr >= n // s.nr
        outer_parts, inner_parts = (m_parts, n_parts) if rows_outer else (n_parts, m_parts)
        hints = ("m", "n") if rows_outer else ("n", "m")
        # one fork over the outer whole blocks, each taking the inner edge too (not one
        # fork per inner part: SqueezeNet's 1x1s forked twice)
        for o0, ocount, osize in outer_parts:
            if not (ocount and osize):
                continue
            split = ("gemm", m * n * self.k) if parallel and ocount > 1 else None
            with self.nb.loop(ocount, hint=hints[0], parallel_candidate=split) as b0:
                for i0, icount, isize in inner_parts:
                    if not (icount and isize):
                        continue
                    with self.nb.loop(icount, hint=hints[1]) as b1:
                        (bi, m0, mr), (bj, n0, nr) = ((b0, o0, osize), (b1, i0, isize)) if rows_outer else \
                            ((b1, i0, isize), (b0, o0, osize))
                        col0 = _plus(bj * s.nr, n0)
                        self.tile(_plus(bi * mr, m0), mr, col0, nr, 0, self.k,
                                  lambda kk, jj, col0=col0: load_b(kk, col0 + jj))

    # ---- B packed into L2-sized blocks ---------------------------------------------
    def packed(self, load_b, parallel, slot, prepacked=None):
        """One code path for every block and k block: trip counts that differ at the
        edges (the last block's panels, the last k block) are run-time limits, and
        whether a k block starts from init or from C is a select, so the code stays
        one micro-kernel per (rows, panel) edge case: compile time matters too.
        With `prepacked` (buffer, kc, panel) the panels are read from it instead of packed here."""
        ctx, nb, s, m, n, k = self.ctx, self.nb, self.s, self.m, self.n, self.k
        kc, k_blocks = self.plan.kc, self.plan.k_blocks
        if prepacked is not None:
            prepacked, _, panel_width = prepacked
        per_block = max(1, self.plan.block_bytes // (kc * s.nr * self.out.dtype.itemsize))
        panels, edge = divmod(n, s.nr)
        teams = ctx.threads if parallel and ctx.threads > 1 else 1
        if teams > 1 and panels >= 2 * teams * per_block:    # blocks split by thread: the
            per_block = min(range(max(1, per_block // 2), per_block + 1),     # size whose busiest thread
                            key=lambda p: (_ceil(_ceil(panels, p), teams) * p, -p))   # has the fewest panels
        n_blocks = max(1, _ceil(panels, per_block))    # the partial panel joins the last
        size = (per_block + 1) * s.nr * kc
        if prepacked is None:
            packed = ctx.scratch(size * (ctx.threads if slot is not None else teams), self.out.dtype)
        by_columns = teams > 1 and n_blocks >= 2 * teams
        split_rows = teams > 1 and not by_columns
        row_blocks = m // s.mr
        share = _ceil(row_blocks, teams) if split_rows else row_blocks

        def block(t, base, jb):
            n0 = jb * (per_block * s.nr)
            parts = [(0, per_block, s.nr, panels - jb * per_block)]
            if edge:     # only in the last block, after its whole panels
                parts.append((panels - (n_blocks - 1) * per_block, 1, edge,
                              jb - (n_blocks - 2) if n_blocks > 1 else None))
            if k_blocks == 1:
                return compute(t, base, n0, parts, 0, True, True, None)
            with nb.loop(k_blocks, hint="kb") as kb:
                compute(t, base, n0, parts, kb * kc, kb.eq(0), kb.eq(k_blocks - 1), k - kb * kc)

        def panel_load(base, k0, panel, col0):
            """B's tile at column col0: the block's packed panel, or the prepacked one."""
            if prepacked is None:
                return lambda kk, jj: packed[base + (panel * kc + kk) * s.nr + jj]
            width = panel_width
            at = ((k0 // kc * _ceil(n, width) + col0 // width) * kc) * width + col0 % width
            return lambda kk, jj: prepacked[at + kk * width + jj]

        def pack(base, n0, parts, k0, k_limit):
            for p0, count, nr, limit in parts:
                with nb.loop(count, hint="p", limit=limit) as pj:
                    with nb.loop(kc, hint="k", limit=k_limit) as kk:
                        at = base + ((pj + p0) * kc + kk) * s.nr
                        with nb.loop(nr, "vector", s.lanes, hint="c") as jj:
                            nb.store(packed, at + jj, load_b(_plus(k0, kk), n0 + (pj + p0) * s.nr + jj))
                        with nb.loop(s.nr - nr, "vector", s.lanes, hint="z") as jj:
                            nb.store(packed, at + nr + jj, Const(0.0, packed.dtype))   # edge padding

        def compute(t, base, n0, parts, k0, first, last, k_limit):
            if prepacked is None:
                pack(base, n0, parts, k0, k_limit)
            rows = [(t * share if split_rows else 0, share, row_blocks - t * share if split_rows else None, s.mr),
                    (row_blocks, 1, t - (teams - 2) if split_rows else None, m % s.mr)]
            for first_row, count, row_limit, mr in rows:
                if not (count and mr):
                    continue
                with nb.loop(count, hint="m", limit=row_limit) as bi:   # A's rows stay in L1
                    for p0, pcount, nr, limit in parts:
                        with nb.loop(pcount, hint="n", limit=limit) as bj:
                            panel = _plus(bj, p0)
                            self.tile(_plus(first_row, bi) * s.mr, mr, n0 + panel * s.nr, nr, k0, kc,
                                      panel_load(base, k0, panel, n0 + panel * s.nr),
                                      first, last, k_width=s.nr, k_limit=k_limit)

        def blocks(t):
            with nb.loop(n_blocks, hint="nb") as jb:
                block(t, (slot if slot is not None else t) * size, jb)

        if by_columns:       # the threads take column blocks as they come (dynamic scheduling)
            with nb.loop(n_blocks, hint="nb", parallel_candidate=("teams", n_blocks)) as jb:
                block(None, THREAD_INDEX * size, jb)
        elif teams > 1:
            with nb.loop(teams, hint="t", parallel_candidate=("teams", teams)) as t:
                blocks(t)
        else:
            blocks(0)


def dot_gemm(ctx, m, n, k, load_a, load_b, partial, p_index, tile, parallel=False):
    """partial[p_index(row, col) + lane] += lane-wise partial sums of
    sum_k A(row, k) * B(col, k), with both operands read along k (a weight
    gradient: dY rows and im2col rows), so neither needs a transposed copy.
    dot_mr x dot_nr (the target's table) dot products at once, each a vector accumulator over k; the
    caller sums the lanes once at the very end. A tail of k reads masked (zero) lanes."""
    nb, lanes = ctx.nb, ctx.lanes(partial.dtype)
    tile_m, tile_n = tile     # the schedule's (gemm_plan's, or a weight gradient's variant)
    acc = ctx.local(tile_m * tile_n * lanes, partial.dtype)
    chunks, tail = divmod(k, lanes)

    def block(row0, mr, col0, nr):
        def each(body, width=lanes):
            with nb.loop(mr, "unroll", hint="a") as a:
                with nb.loop(nr, "unroll", hint="b") as b:
                    with nb.loop(width, "vector", lanes, hint="l") as lane:
                        body(row0 + a, col0 + b, (a * tile_n + b) * lanes + lane, lane)
        each(lambda r, c, at, lane: nb.store(acc, at, Const(0.0, acc.dtype)))
        for count, start, width in ((chunks, 0, lanes), (1 if tail else 0, chunks * lanes, tail)):
            if count:
                with nb.loop(count, hint="kc") as kc:
                    each(lambda r, c, at, lane: nb.store(acc, at, fma(
                        load_a(r, kc * lanes + (lane + start)), load_b(c, kc * lanes + (lane + start)), acc[at])),
                        width)
        each(lambda r, c, at, lane: nb.store(partial, p_index(r, c) + lane,
                                             partial[p_index(r, c) + lane] + acc[at]))

    m_parts, n_parts = _parts(m, tile_m), _parts(n, tile_n)
    for m0, mcount, mr in m_parts:
        if not (mcount and mr):
            continue
        split = ("gemm", m * n * k) if parallel and mcount > 1 else None
        with nb.loop(mcount, hint="m", parallel_candidate=split) as bi:
            for n0, ncount, nr in n_parts:
                if ncount and nr:
                    with nb.loop(ncount, hint="n") as bj:
                        block(_plus(bi * mr, m0), mr, _plus(bj * nr, n0), nr)
