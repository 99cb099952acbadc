"""Einsum as one loop nest: a loop per output letter, a sum per contracted letter,
and the product of the operands' loads (a repeated letter reads a diagonal)."""
import string

import numpy as np

from ..lower.loop_ir import Reduce
from ..lower.nests import flat_index, output_loops, strides
from .common import fail, same_dtype, tt
from .registry import gradient, register


def parse(node, equation, shapes):
    """(input subscripts, output subscript, letter -> size), '...' expanded."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        fail(node, f"Einsum equation '{equation}' has {len(terms)} operands, got {len(shapes)}")
    spare = [c for c in string.ascii_letters if c not in eq]
    ell = None
    out_terms = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            n = len(shape) - (len(term) - 3)
            if ell is None or n > len(ell):
                ell = "".join(spare[:n]) if ell is None or n > len(ell) else ell
            term = term.replace("...", ell[len(ell) - n:] if n else "")
        out_terms.append(term)
    sizes = {}
    for term, shape in zip(out_terms, shapes):
        if len(term) != len(shape):
            fail(node, f"Einsum term '{term}' does not fit shape {shape}")
        for c, d in zip(term, shape):
            if sizes.setdefault(c, d) != d and d != 1 and sizes[c] != 1:
                fail(node, f"Einsum letter '{c}' has sizes {sizes[c]} and {d}")
            sizes[c] = max(sizes[c], d)
    if "->" in eq:
        out = rhs.replace("...", ell or "")
    else:
        counts = {}
        for c in "".join(out_terms):
            counts[c] = counts.get(c, 0) + 1
        out = (ell or "") + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in (ell or "")))
    return out_terms, out, sizes


def _infer(attrs, types, consts, node):
    dtype = same_dtype(node, types)
    _, out, sizes = parse(node, attrs["equation"], [t.shape for t in types])
    return [tt(dtype, [sizes[c] for c in out])]


def _reference(attrs, *xs):
    return np.asarray(np.einsum(attrs["equation"], *xs)).astype(xs[0].dtype)


def _lower(ctx):
    terms, out, sizes = parse(ctx.node.name, ctx.attrs["equation"], [t.shape for t in ctx.in_types])
    out_shape = [sizes[c] for c in out]
    with output_loops(ctx, out_shape, ctx.out_types[0].dtype) as out_vars:
        _einsum_body(ctx, terms, out, sizes, dict(zip(out, out_vars)), out_shape)


def _einsum_body(ctx, terms, out, sizes, var, out_shape):
    nb = ctx.nb
    summed = [c for c in sizes if c not in out]
    for c in summed:
        var[c] = nb.var(c)
    body = None
    for buf, term, t in zip(ctx.inputs, terms, ctx.in_types):
        index = sum((var[c] * s for c, s, d in zip(term, strides(t.shape), t.shape) if d != 1), 0)
        load = buf[index]
        body = load if body is None else body * load
    for c in reversed(summed):
        body = Reduce("sum", var[c], sizes[c], body)
    nb.store(ctx.outputs[0], flat_index([var[c] for c in out], out_shape), body)


register("Einsum", inputs=(1, 1 << 8), attrs={"equation": None}, infer=_infer, reference=_reference,
         lower=_lower)


@gradient("Einsum")
def _einsum_grad(g, node, dys, wanted):
    """dX_i is the einsum of dY with the other operands, written out to X_i's letters;
    a letter only X_i has was summed away (broadcast it back), a size-1 dim of X_i
    that the others broadcast is summed down."""
    shapes = [g.shape(x) for x in node.inputs]
    terms, out, sizes = parse(node.name, node.attrs["equation"], shapes)
    grads = []
    for i, (x, term, want) in enumerate(zip(node.inputs, terms, wanted)):
        if not want:
            grads.append(None)
            continue
        if len(set(term)) != len(term):
            from ..errors import CompileError
            raise CompileError(f"no gradient for Einsum term '{term}' with a repeated letter (node '{node.name}')")
        others = [t for j, t in enumerate(terms) if j != i]
        seen = set(out).union(*others)
        letters = "".join(c for c in term if c in seen)
        eq = ",".join(others + [out]) + "->" + letters
        dx = g.op("Einsum", [n for j, n in enumerate(node.inputs) if j != i] + [dys[0]], equation=eq)
        dx = g.reshape(dx, tuple(sizes[c] if c in seen else 1 for c in term))
        summed = [k for k, (c, d) in enumerate(zip(term, shapes[i])) if d == 1 and sizes[c] != 1 and c in seen]
        if summed:
            dx = g.reduce_sum(dx, summed)
        grads.append(g.expand(dx, shapes[i]))
    return grads
