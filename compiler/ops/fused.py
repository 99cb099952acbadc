"""FusedElementwise: a DAG of element-wise ops evaluated in one loop nest;
FusedReduce: a sum or mean over axes of such a DAG (BatchNorm's statistics and
gradients), the summed values never stored.

Built by passes/elementwise_fusion.py. `program` lists the steps in order, each
(op, attrs as pairs, args) where an arg "i<k>" is the node's k-th input and "s<j>"
step j's value; the last step is the result, broadcast to `shape`, and `extra`
names steps written as outputs 1, 2, ... of that shape too (an optimizer's new
state beside the new weight, passes/elementwise_fusion.py). Intermediates
live in registers: one pass over memory instead of one per op. Each step is the
registered op itself (its shape rule, NumPy reference and `expr`), so nothing
about an op is declared twice."""
import numpy as np

from ..ir.types import DType
from ..lower.loop_ir import INDEX, Const, Load, Reduce
from ..lower.nests import broadcast_strides, coalesce, column_sums, map_nest, strides
from .reduce import LONG_SUM
from .common import broadcast, fail, tt
from .registry import get_op, non_differentiable, register


def run_program(attrs, inputs, apply, steps=None):
    """Evaluate the steps on `inputs` (types, arrays or loop-IR values);
    apply(opdef, attrs, args) evaluates one step. Returns the last step's value, or
    a list of the values of `steps`."""
    values = []
    for op, items, args in attrs["program"]:
        vals = [inputs[int(a[1:])] if a[0] == "i" else values[int(a[1:])] for a in args]
        values.append(apply(get_op(op), dict(items), vals))
    return values[-1] if steps is None else [values[k] for k in steps]


def _written(attrs):
    """The steps the outputs are: the last, then the extra ones."""
    return (-1,) + tuple(attrs.get("extra") or ())


def _infer(attrs, types, consts, node):
    shape = tuple(attrs["shape"])
    written = run_program(attrs, types, lambda d, at, ts: d.infer(at, ts, [None] * len(ts), node)[0],
                          _written(attrs))
    for k, t in enumerate(written):
        if broadcast(node, t.shape, shape) != shape or (k and t.shape != shape):
            fail(node, f"fused result {t.shape} does not {'broadcast' if not k else 'equal'} {shape}")
    return [tt(t.dtype, shape) for t in written]


def _reference(attrs, *xs):
    ys = run_program(attrs, xs, lambda d, at, vs: np.asarray(d.reference(at, *vs)), _written(attrs))
    ys = [np.broadcast_to(y, tuple(attrs["shape"])).copy() for y in ys]
    return ys[0] if len(ys) == 1 else tuple(ys)


def _lower(ctx):
    """One loop nest; with extra outputs each point stores every written step."""
    written = _written(ctx.attrs)
    steps = written if len(written) > 1 else None
    map_nest(ctx, tuple(ctx.outputs) if steps else ctx.outputs[0], ctx.out_types[0].shape,
             ctx.inputs, [t.shape for t in ctx.in_types],
             lambda *loads: run_program(ctx.attrs, loads, lambda d, at, vs: d.expr(at, *vs), steps))


register("FusedElementwise", inputs=(1, 1 << 16), attrs={"program": None, "shape": None, "extra": None},
         infer=_infer, reference=_reference, lower=_lower, domain="nutshell")


# ---- FusedReduce: a sum (or mean) over axes of such a program ----------------------
def _reduce_infer(attrs, types, consts, node):
    shape, axes = tuple(attrs["shape"]), set(attrs["axes"])
    dtype = _infer(attrs, types, consts, node)[0].dtype
    if attrs["keepdims"]:
        return [tt(dtype, tuple(1 if i in axes else d for i, d in enumerate(shape)))]
    return [tt(dtype, tuple(d for i, d in enumerate(shape) if i not in axes))]


def _reduce_reference(attrs, *xs):
    y = _reference(attrs, *xs)
    fn = np.mean if attrs["mean"] else np.sum
    return np.asarray(fn(y, axis=tuple(attrs["axes"]), keepdims=bool(attrs["keepdims"]))).astype(y.dtype)


def _reduce_lower(ctx):
    """Loops over the kept axes, a Reduce over the reduced ones (vectorised when the
    innermost axis is reduced), the program evaluated inside: the reduced value is
    never written to memory."""
    shape, axes = tuple(ctx.attrs["shape"]), set(ctx.attrs["axes"])
    kept = strides([d for i, d in enumerate(shape) if i not in axes])
    out_strides, j = [], 0
    for i in range(len(shape)):
        out_strides.append(0 if i in axes else kept[j])
        j += i not in axes
    dims, sets = coalesce(shape, [out_strides] + [broadcast_strides(t.shape, shape) for t in ctx.in_types])
    nb, lanes = ctx.nb, ctx.lanes(ctx.out_types[0].dtype)
    total = int(np.prod(shape, dtype=np.int64))
    mean = 1.0 / int(np.prod([shape[a] for a in axes], dtype=np.int64)) if ctx.attrs["mean"] else None
    if len(dims) == 2 and sets[0][1] and not sets[0][0] and ctx.out_types[0].dtype == DType.float32 \
            and dims[0] <= LONG_SUM:     # rows summed above a kept innermost axis (one Reduce: the same sums)

        def at(k, rows, c):
            terms = [r * st for r, st in zip(rows, sets[k]) if st] + ([c * sets[k][-1]] if sets[k][-1] else [])
            return sum(terms[1:], terms[0]) if terms else Const(0, INDEX)
        return column_sums(nb, ctx.outputs[0], dims[:-1], dims[-1], lambda rows, c: run_program(
            ctx.attrs, [Load(buf, at(k + 1, rows, c)) for k, buf in enumerate(ctx.inputs)],
            lambda d, at_, vs: d.expr(at_, *vs)), lanes, total, mean)
    scopes, kept_vars, reduced = [], [], []
    for i, d in enumerate(dims):
        if sets[0][i] == 0 and d > 1:
            reduced.append((nb.var("k"), d, i))
            continue
        last = i == len(dims) - 1
        scope = nb.loop(d, "vector", lanes) if last else \
            nb.loop(d, parallel_candidate=("map", total) if not kept_vars else None)
        kept_vars.append((scope.__enter__(), i))
        scopes.append(scope)
    every = kept_vars + [(v, i) for v, _, i in reduced]

    def index(k):
        terms = [v * sets[k][i] for v, i in every if sets[k][i]]
        return sum(terms[1:], terms[0]) if terms else Const(0, INDEX)
    loads = [Load(buf, index(k + 1)) for k, buf in enumerate(ctx.inputs)]
    body = run_program(ctx.attrs, loads, lambda d, at, vs: d.expr(at, *vs))
    for n, (v, d, i) in enumerate(reversed(reduced)):
        body = Reduce("sum", v, d, body, lanes if n == 0 and i == len(dims) - 1 else 1)
    if mean is not None:
        body = body * mean
    nb.store(ctx.outputs[0], index(0), body)
    for scope in reversed(scopes):
        scope.__exit__(None, None, None)


register("FusedReduce", inputs=(1, 1 << 16),
         attrs={"program": None, "shape": None, "axes": None, "keepdims": 1, "mean": 0},
         infer=_reduce_infer, reference=_reduce_reference, lower=_reduce_lower, domain="nutshell")
non_differentiable("made after autodiff by the fusion pass", "FusedElementwise", "FusedReduce")
