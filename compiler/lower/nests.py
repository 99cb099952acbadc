"""Loop nests shared by many ops: strided element-wise maps and row reductions."""
import math

from .loop_ir import INDEX, Const, Load

from ..schedule.loops import splits


class output_loops:
    """`with output_loops(ctx, shape, dtype) as idx:` opens one loop per dim of
    `shape`, the innermost vectorised, and gives their variables."""

    def __init__(self, ctx, shape, dtype):
        self.ctx, self.shape, self.dtype = ctx, tuple(shape), dtype

    def __enter__(self):
        self.scopes, variables = [], []
        for axis, d in enumerate(self.shape):
            last = axis == len(self.shape) - 1
            scope = self.ctx.nb.loop(d, "vector" if last else "serial",
                                     self.ctx.lanes(self.dtype) if last else 1)
            variables.append(scope.__enter__())
            self.scopes.append(scope)
        return variables

    def __exit__(self, *exc):
        for scope in reversed(self.scopes):
            scope.__exit__(*exc)
        return False


def flat_index(variables, shape):
    """Row-major offset of `variables` in a tensor of `shape`."""
    return sum((v * s for v, s in zip(variables, strides(shape))), 0)


def strides(shape):
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def broadcast_strides(in_shape, out_shape):
    """Strides of `in_shape` read at the indices of `out_shape` (0 on broadcast dims)."""
    pad = (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)
    return tuple(0 if d == 1 and o != 1 else s for d, o, s in zip(pad, out_shape, strides(pad)))


def coalesce(shape, stride_sets):
    """Merge adjacent dims that every operand walks contiguously, so a same-shape
    map becomes one flat loop and a bias add two loops."""
    dims, sets = [], [[] for _ in stride_sets]
    for axis, d in enumerate(shape):
        if d == 1:
            continue
        mergeable = dims and all(st[axis] * d == acc[-1] for st, acc in zip(stride_sets, sets)
                                 if not (st[axis] == 0 and acc[-1] == 0))
        mergeable = mergeable and all((st[axis] == 0) == (acc[-1] == 0)
                                      for st, acc in zip(stride_sets, sets))
        if mergeable:
            dims[-1] *= d
            for st, acc in zip(stride_sets, sets):
                acc[-1] = st[axis]
        else:
            dims.append(d)
            for st, acc in zip(stride_sets, sets):
                acc.append(st[axis])
    return dims or [1], [acc or [1] for acc in sets]     # all dims 1: one element


def map_nest(ctx, out_buf, out_shape, in_bufs, in_shapes, fn, lanes=None):
    """out[idx] = fn(*[in[broadcast idx]]) over `out_shape`: the innermost loop is
    vectorised, the outermost split across threads when there is enough work. With
    several outputs (an optimizer's update: weight and state slots from weight,
    gradient and slots) the work is the elements moved, half per stream: Adam on a
    384 x 128 weight moves seven of them, a map of 172 Ki elements, not 49 Ki."""
    work = None
    if isinstance(out_buf, tuple):
        size = math.prod(out_shape)
        work = size * (len(out_buf) + sum(math.prod(s) == size for s in in_shapes)) // 2
    strided_map(ctx, out_buf, out_shape, in_bufs,
                [broadcast_strides(s, out_shape) for s in in_shapes], fn, lanes, work=work)


def strided_map(ctx, out_buf, out_shape, in_bufs, in_strides, fn, lanes=None, out_offset=0,
                out_strides=None, in_offsets=None, work=None):
    """out[out_offset + idx . out_strides] = fn(*[in_k[in_offset_k + idx . in_strides_k]]);
    `out_buf` may be a tuple of buffers laid out alike, fn then giving a tuple of values.
    work: what the schedule weighs for a split (default: the elements)."""
    in_offsets = in_offsets or [0] * len(in_bufs)
    lanes = lanes or ctx.lanes(_first(out_buf).dtype)
    stride_sets = [tuple(out_strides or strides(out_shape))] + [tuple(s) for s in in_strides]
    dims, sets = coalesce(out_shape, stride_sets)
    total = 1
    for d in dims:
        total *= d
    nb = ctx.nb
    vars_, scopes = [], []
    for axis, d in enumerate(dims):
        last = axis == len(dims) - 1
        # a long flat map the schedule would split: chunks, one per share (the variant needs to know)
        if last and len(dims) == 1 and splits(ctx.target, ("map", work or total)) and ctx.threads > 1 and \
                sets[0][0] == 1:
            return _split_flat_map(ctx, out_buf, in_bufs, sets, d, fn, lanes, out_offset, in_offsets)
        scope = nb.loop(d, "vector", lanes) if last else \
            nb.loop(d, parallel_candidate=("map", work or total) if axis == 0 else None)
        vars_.append(scope.__enter__())
        scopes.append(scope)
    loads = [Load(b, off + _idx(vars_, st)) for b, st, off in zip(in_bufs, sets[1:], in_offsets)]
    _store(nb, out_buf, out_offset + _idx(vars_, sets[0]), fn(*loads))
    for scope in reversed(scopes):
        scope.__exit__(None, None, None)


def _first(out_buf):
    return out_buf[0] if isinstance(out_buf, tuple) else out_buf


def _store(nb, out_buf, index, value):
    """One store, or one per buffer of a tuple (a multi-output fused loop)."""
    if not isinstance(out_buf, tuple):
        return nb.store(out_buf, index, value)
    for buf, v in zip(out_buf, value):
        nb.store(buf, index, v)


def _idx(vars_, st):
    terms = [v * s if s != 1 else v for v, s in zip(vars_, st) if s]
    if not terms:
        return Const(0, INDEX)
    return sum(terms[1:], terms[0])


def _split_flat_map(ctx, out_buf, in_bufs, sets, size, fn, lanes, out_offset=0, in_offsets=None):
    """A long flat map (or a Concat's part of one): parallel over chunks, each chunk
    one vector loop."""
    chunk = -(-size // (ctx.threads * 4))
    chunk = -(-chunk // lanes) * lanes
    full, rem = size // chunk, size % chunk
    nb = ctx.nb
    for count, base, extent in ((full, 0, chunk), (1 if rem else 0, full * chunk, rem)):
        if not count:
            continue
        with nb.loop(count, parallel_candidate=("teams", size)) as c:
            with nb.loop(extent, "vector", lanes) as i:
                flat = c * chunk + i + base if base else c * chunk + i
                loads = [Load(b, (flat + off if off else flat) if st[0] else Const(off, INDEX))
                         for b, st, off in zip(in_bufs, sets[1:], in_offsets or [0] * len(in_bufs))]
                _store(nb, out_buf, flat + out_offset if out_offset else flat, fn(*loads))


def parts(size, block):
    """(start, count, width): the whole blocks, then the edge block (count 0 or width 0
    when there is none)."""
    return [(0, size // block, block), (size // block * block, 1, size % block)]


def transpose_tiles(ctx, src, src_at, src_stride, dst, dst_at, dst_stride, rows, cols, parallel_work=None,
                    pad_rows=0):
    """dst[dst_at + c * dst_stride + r] = src[src_at + r * src_stride + c] for r < rows,
    c < cols, in register tiles of lanes x lanes (loop_ir.Transpose); the edge tiles
    are their own loops. Rows from `rows` up to pad_rows (a blocked tensor's
    padding channels) are written as zeros. parallel_work: the column tiles may
    be split across threads, `work` elements in all (a "map" candidate)."""
    nb, lanes = ctx.nb, ctx.lanes(src.dtype)
    if pad_rows:      # a few rows (one channel block): each row tile spelled out
        row_parts = [(r0, 1, min(max(rows - r0, 0), lanes), min(lanes, pad_rows - r0))
                     for r0 in range(0, pad_rows, lanes)]
    else:
        row_parts = [p + (0,) for p in parts(rows, lanes)]
    for c0, ccount, cw in parts(cols, lanes):
        may_split = parallel_work is not None and ccount > 1
        for r0, rcount, rw, stored in row_parts:
            if not (ccount and cw and rcount and (rw or stored)):
                continue
            with nb.loop(ccount, hint="tc", parallel_candidate=("map", parallel_work) if may_split else None) as tc:
                with nb.loop(rcount, hint="tr") as tr:
                    r, c = tr * lanes + r0, tc * lanes + c0
                    nb.transpose(src, src_at + r * src_stride + c, src_stride, dst, dst_at + c * dst_stride + r,
                                 dst_stride, rw, cw, lanes, stored)


def permute_nest(ctx, out_buf, out_shape, src, in_strides):
    """out[idx] = src[idx . in_strides] (a Transpose). When the output's contiguous
    axis is strided in the input and both it and the input's contiguous axis are
    long, lanes x lanes register tiles move the data (transpose_tiles); otherwise a
    strided map (gathers)."""
    dims, (out_st, in_st) = coalesce(out_shape, [strides(out_shape), tuple(in_strides)])
    lanes, last = ctx.lanes(src.dtype), len(dims) - 1
    inner = [a for a in range(last) if in_st[a] == 1]
    if lanes == 1 or in_st[last] == 1 or not inner or min(dims[last], dims[inner[0]]) < lanes // 2:
        return strided_map(ctx, out_buf, out_shape, [src], [in_strides], lambda v: v)
    a = inner[0]
    outer = [axis for axis in range(last) if axis != a]
    total = 1
    for d in dims:
        total *= d
    nb, scopes, vars_ = ctx.nb, [], []
    for k, axis in enumerate(outer):
        scope = nb.loop(dims[axis], parallel_candidate=("map", total) if k == 0 else None)
        vars_.append(scope.__enter__())
        scopes.append(scope)
    at = lambda st: _idx(vars_, [st[axis] for axis in outer]) if outer else Const(0, INDEX)
    transpose_tiles(ctx, src, at(in_st), in_st[last], out_buf, at(out_st), out_st[a], dims[last], dims[a],
                    parallel_work=None if outer else total)
    for scope in reversed(scopes):
        scope.__exit__(None, None, None)


def column_sums(nb, out, reduced, width, body, lanes, total, scale=None):
    """out[c] = sum of body(rows, c) over the `reduced` extents (the first outermost),
    c in range(width): a bias's or a norm's gradient, summed over the rows above a
    kept innermost axis. A Reduce inside a loop over c would walk every column's rows
    as one chain (a serial kernel, one add in flight); here the rows stream once,
    each adding to the `width` running sums kept in `out`, so the vector adds are
    independent. Each column still adds its rows in the same order, from the same
    zero, as the Reduce: the same bits. The columns go in blocks that may run in
    parallel (each block's sums are its own: any thread count, the same bits)."""
    vectors = width // lanes if width % lanes == 0 else 0
    per = next((k for k in (4, 2, 1) if vectors and vectors % k == 0), 0)
    block = per * lanes if per else width
    with nb.loop(width // block, hint="cb", parallel_candidate=("map", total)) as cb:
        with nb.loop(block, "vector", lanes) as v:
            nb.store(out, cb * block + v, Const(0.0, out.dtype))
        rows, scopes = [], []
        for d in reduced:
            scope = nb.loop(d, hint="r")
            rows.append(scope.__enter__())
            scopes.append(scope)
        with nb.loop(block, "vector", lanes) as v:
            c = cb * block + v
            nb.store(out, c, Load(out, c) + body(rows, c))
        for scope in reversed(scopes):
            scope.__exit__(None, None, None)
        if scale is not None:
            with nb.loop(block, "vector", lanes) as v:
                nb.store(out, cb * block + v, Load(out, cb * block + v) * scale)
