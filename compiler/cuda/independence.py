"""Can a serial loop's iterations run on different GPU threads?

A sufficient test, by interval arithmetic on the index expressions: every store
to a buffer in the loop is `c * v + r` with the same nonzero c for that buffer
and r in a window narrower than |c| (so iteration v writes only inside its own
slice [c v + lo, c v + hi]), and every load of a buffer the loop writes reads
inside that same window. Local (per-thread) buffers are private; a load used
as an index (a gather's table), a Transpose or anything unknown fails the test.
`fixed`: variables of enclosing loops already mapped onto the grid (constant
within one thread)."""
from ..lower.loop_ir import Bin, Call, Const, For, Load, Reduce, Select, Store, Var, affine_coeff


def independent(loop, fixed=()):
    """fixed: names of enclosing grid variables. Indices must be affine in them
    with the same coefficients for every access to a written buffer, so their
    value shifts all of its accesses alike and they can be taken as 0."""
    if loop.limit is not None:
        return False
    ranges = {name: (0, 0) for name in fixed}
    ranges[loop.var.name] = (0, 0)
    windows, reads, stores = {}, [], []
    if not _collect(loop.body, loop.var, ranges, windows, reads, stores):
        return False
    shifts = {}
    for buf, index in [(b, i) for b, i, _ in reads if b in windows] + stores:
        shift = tuple(affine_coeff(index, Var(f)) for f in fixed)
        if None in shift or shifts.setdefault(buf, shift) != shift:
            return False
    for buf, index, r in reads:
        if buf in windows:
            c, lo, hi = windows[buf]
            if affine_coeff(index, loop.var) != c or r is None or r[0] < lo or r[1] > hi:
                return False
    return all(abs(c) > hi - lo for c, lo, hi in windows.values())


def _collect(stmts, var, ranges, windows, reads, stores):
    for s in stmts:
        if isinstance(s, For):
            inner = dict(ranges)
            inner[s.var.name] = (0, s.extent - 1)
            if not _collect(s.body, var, inner, windows, reads, stores):
                return False
        elif isinstance(s, Store):
            for e in (s.value, s.mask):
                if e is not None and not _loads(e, var, ranges, reads):
                    return False
            if not _loads(s.index, var, ranges, reads, as_index=True):
                return False
            if s.buf.local:
                continue
            c = affine_coeff(s.index, var)
            r = interval(s.index, ranges)
            if not c or r is None:
                return False
            old = windows.get(s.buf.name)
            if old is not None and old[0] != c:
                return False
            windows[s.buf.name] = (c, r[0], r[1]) if old is None else (c, min(old[1], r[0]), max(old[2], r[1]))
            stores.append((s.buf.name, s.index))
        else:
            return False
    return True


def _loads(e, var, ranges, reads, as_index=False):
    """Record (buffer, index, window of the index) of every global load in `e`;
    False if a load sits inside an index (its value is unknown)."""
    if isinstance(e, Load):
        if as_index:
            return False
        if not e.buf.local:
            reads.append((e.buf.name, e.index, interval(e.index, ranges)))
        return _loads(e.index, var, ranges, reads, True) and \
            (e.mask is None or _loads(e.mask, var, ranges, reads, as_index))
    if isinstance(e, Reduce):
        inner = dict(ranges)
        inner[e.var.name] = (0, e.extent - 1)
        return _loads(e.body, var, inner, reads, as_index)
    if isinstance(e, Bin):
        return _loads(e.a, var, ranges, reads, as_index) and _loads(e.b, var, ranges, reads, as_index)
    if isinstance(e, Call):
        return all(_loads(a, var, ranges, reads, as_index) for a in e.args)
    if isinstance(e, Select):
        return all(_loads(x, var, ranges, reads, as_index) for x in (e.cond, e.a, e.b))
    return True


def interval(e, ranges):
    """(lo, hi) of an integer index expression over `ranges`, or None if unknown."""
    if isinstance(e, Const):
        try:
            v = int(e.value)
        except (TypeError, ValueError):
            return None
        return (v, v)
    if isinstance(e, Var):
        return ranges.get(e.name)
    if isinstance(e, Bin):
        a, b = interval(e.a, ranges), interval(e.b, ranges)
        if a is None or b is None:
            return None
        if e.op == "+":
            return (a[0] + b[0], a[1] + b[1])
        if e.op == "-":
            return (a[0] - b[1], a[1] - b[0])
        if e.op == "*":
            p = [x * y for x in a for y in b]
            return (min(p), max(p))
        if e.op in ("//", "/") and b[0] == b[1] and b[0] > 0:
            return (a[0] // b[0], a[1] // b[0])
        if e.op == "%" and b[0] == b[1] and b[0] > 0 and a[0] >= 0:
            same = a[0] // b[0] == a[1] // b[0]
            return (a[0] % b[0], a[1] % b[0]) if same else (0, b[0] - 1)
        if e.op in ("<", "<=", ">", ">=", "==", "!="):
            return (0, 1)
        if e.op == "and" and a[0] >= 0 and b[0] >= 0:
            return (0, min(a[1], b[1]))
        return None
    if isinstance(e, Select):
        a, b = interval(e.a, ranges), interval(e.b, ranges)
        return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))
    if isinstance(e, Call) and e.fn in ("max", "min", "cast") and not e.dtype.is_float:
        vals = [interval(a, ranges) for a in e.args]
        if any(v is None for v in vals):
            return None
        if e.fn == "cast":
            return vals[0]
        pick = max if e.fn == "max" else min
        return (pick(v[0] for v in vals), pick(v[1] for v in vals))
    return None
