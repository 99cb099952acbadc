"""Trilu: the upper (or lower) triangle of the last two axes, the rest zero.

Declared here with its NumPy reference; it has no kernel of its own but is
expanded (expand below, run by the importer and compiler/passes/expand.py) into
Where(mask, 0, x), the mask comparing a constant column-minus-row table with k,
so k may be a run-time input and the gradient is Where's."""
import numpy as np

from .common import fail, tt
from .registry import register


def _infer(attrs, types, consts, node):
    x = types[0]
    if x.rank < 2:
        fail(node, f"Trilu needs rank >= 2, got shape {tuple(x.shape)}")
    k = types[1] if len(types) > 1 else None
    if k is not None and (k.size != 1 or k.dtype.value != "int64"):
        fail(node, f"Trilu's k must be one int64, got {k.dtype.value} of shape {tuple(k.shape)}")
    if int(attrs.get("upper", 1)) not in (0, 1):
        fail(node, f"Trilu's upper must be 0 or 1, got {attrs['upper']}")
    return [tt(x.dtype, x.shape)]


def _reference(attrs, x, k=None):
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return (np.triu(x, k) if int(attrs.get("upper", 1)) else np.tril(x, k)).astype(x.dtype)


def expand(b, inputs, attrs, outputs, name=""):
    """Append Trilu as Where(column - row beyond k, 0, x) to builder b."""
    x = inputs[0]
    k = inputs[1] if len(inputs) > 1 and inputs[1] else b.add_constant(np.zeros((), np.int64))
    rows, cols = b.types[x].shape[-2:]
    diff = b.add_constant(np.arange(cols, dtype=np.int64)[None, :] - np.arange(rows, dtype=np.int64)[:, None])
    outside = b.add_node("Less" if int(attrs.get("upper", 1)) else "Greater", [diff, k])
    zero = b.add_constant(np.zeros((), b.types[x].dtype.numpy))
    b.add_node("Where", [outside, zero, x], outputs=[outputs[0]], name=name)


register("Trilu", inputs=(1, 2), attrs={"upper": 1}, infer=_infer, reference=_reference)
