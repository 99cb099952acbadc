"""Element-wise ops with their own twist: Pow (integer bases through float64),
Clip (bounds as inputs or attributes) and Mod (C's or Python's sign)."""
import numpy as np

from ..errors import ShapeError
from ..lower.loop_ir import Call, Select, cast, maximum, minimum
from ..lower.nests import map_nest
from .common import broadcast, tt
from .elementwise import _binary_infer, _map, _unary_infer
from .registry import gradient, register


def _pow_infer(attrs, types, consts, node):
    return [tt(types[0].dtype, broadcast(node, types[0].shape, types[1].shape))]


def _pow_expr(at, a, b):
    """Float bases use llvm.pow; integer bases go through float64 (exact for the
    magnitudes an integer result can hold)."""
    from ..ir.types import DType
    if a.dtype.is_float:
        return Call("pow", (a, b if b.dtype == a.dtype else cast(b, a.dtype)))
    wide = Call("pow", (cast(a, DType.float64), cast(b, DType.float64)))
    return cast(wide, a.dtype)


def _pow_reference(attrs, a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
    return np.power(a, b.astype(a.dtype)).astype(a.dtype)


register("Pow", inputs=(2, 2), infer=_pow_infer, reference=_pow_reference, **_map(_pow_expr))


@gradient("Pow")
def _pow_grad(g, node, dys, wanted):
    (a, b), y, dy = node.inputs, node.outputs[0], dys[0]
    bf = g.cast_like(b, a)
    da = db = None
    if wanted[0]:      # b * a^(b-1), not b*y/a, so a = 0 is fine
        da = g.unbroadcast(g.mul(dy, g.mul(bf, g.op("Pow", [a, g.sub(bf, g.scalar(1.0, bf))]))), g.shape(a))
    if wanted[1] and g.dtype(b).is_float:     # y * log(a), taken as 0 where a <= 0
        safe = g.where(g.cmp("Greater", a, 0.0), a, g.scalar(1.0, a))
        db = g.unbroadcast(g.mul(dy, g.mul(y, g.unary("Log", safe))), g.shape(b))
    return [da, db]


def _clip_reference(attrs, x, lo=None, hi=None):
    lo = lo if lo is not None else attrs.get("min")
    hi = hi if hi is not None else attrs.get("max")
    if lo is not None:
        x = np.maximum(x, np.asarray(lo, x.dtype))
    if hi is not None:
        x = np.minimum(x, np.asarray(hi, x.dtype))
    return x


def _clip_lower(ctx):
    x_t = ctx.in_types[0]
    bufs, shapes = [ctx.inputs[0]], [x_t.shape]
    names = [None, None]
    for k, slot in ((0, 1), (1, 2)):
        if len(ctx.inputs) > slot and ctx.inputs[slot] is not None:
            bufs.append(ctx.inputs[slot])
            shapes.append(ctx.in_types[slot].shape)
            names[k] = len(bufs) - 1
    fn = lambda *xs: _clip_expr(ctx.attrs, xs[0], *(xs[k] if k is not None else None for k in names))
    map_nest(ctx, ctx.outputs[0], x_t.shape, bufs, shapes, fn)


register("Clip", inputs=(1, 3), attrs={"min": None, "max": None}, infer=_unary_infer,
         reference=_clip_reference, lower=_clip_lower,
         expr=lambda at, x, lo=None, hi=None: _clip_expr(at, x, lo, hi))


@gradient("Clip")
def _clip_grad(g, node, dys, wanted):
    """y = min(max(x, lo), hi): dx passes where lo <= x and max(x, lo) <= hi (PyTorch's
    side at the bounds); a bound given as an input gets the gradient where it won."""
    x, dy = node.inputs[0], dys[0]
    bound = lambda k, key: node.inputs[k] if len(node.inputs) > k and node.inputs[k] else node.attrs.get(key)
    lo, hi = bound(1, "min"), bound(2, "max")
    want = lambda k: len(wanted) > k and wanted[k]
    zero = g.zero_like(dy)
    passed, dlo, dhi = dy, None, None
    if hi is not None:
        low = x if lo is None else g.op("Max", [x, lo if isinstance(lo, str) else g.scalar(lo, x)])
        above = g.cmp("Greater", low, hi)
        passed = g.where(above, zero, dy)
        dhi = g.unbroadcast(g.keep(above, dy), g.shape(hi)) if want(2) else None
    if lo is not None:
        below = g.cmp("Less", x, lo)
        dlo = g.unbroadcast(g.keep(below, passed), g.shape(lo)) if want(1) else None
        passed = g.where(below, zero, passed)
    return [passed, dlo, dhi][:len(node.inputs)]


def _clip_expr(at, v, lo, hi):
    """Bounds from the inputs (opset 11+) or, as a fused epilogue, from attributes."""
    lo = lo if lo is not None else at.get("min")
    hi = hi if hi is not None else at.get("max")
    if lo is not None:
        v = maximum(v, lo)
    if hi is not None:
        v = minimum(v, hi)
    return v


def _mod_reference(attrs, a, b):
    if attrs["fmod"] or a.dtype.kind == "f":
        return np.fmod(a, b).astype(a.dtype)
    return np.mod(a, b).astype(a.dtype)          # the divisor's sign, as Python's %


def _mod_expr(at, a, b):
    r = a % b                                   # C remainder: the dividend's sign
    if at["fmod"] or a.dtype.is_float:
        return r
    return Select((r.ne(0)) & ((r < 0).ne(b < 0)), r + b, r)


def _mod_infer(attrs, types, consts, node):
    if types[0].dtype.is_float and not attrs["fmod"]:
        raise ShapeError(f"{node}: Mod of floats needs fmod=1 (the ONNX rule)")
    return _binary_infer(attrs, types, consts, node)


register("Mod", inputs=(2, 2), attrs={"fmod": 0}, infer=_mod_infer, reference=_mod_reference,
         **_map(_mod_expr))


@gradient("Mod")
def _mod_grad(g, node, dys, wanted):
    """y = a - b * q with q piecewise constant: da = dy, db = -q dy = dy (y - a) / b."""
    (a, b), y, dy = node.inputs, node.outputs[0], dys[0]
    if not g.dtype(a).is_float:
        return [None, None]
    return [g.unbroadcast(dy, g.shape(a)) if wanted[0] else None,
            g.unbroadcast(g.div(g.mul(dy, g.sub(y, a)), b), g.shape(b)) if wanted[1] else None]
