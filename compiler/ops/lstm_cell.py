"""LSTMCell: one LSTM time step's gate arithmetic in one loop, and LSTMCellGrad,
its backward in one loop.

The expansion of an LSTM (passes/recurrent.py) emits per step a GEMM for the
gates' pre-activations and then this cell (the default activations, no clip,
peepholes or coupled gates; other cells stay primitives). As primitives a step
was nine kernels forward (Split, three Sigmoids, two Tanhs, ...) and six back
(five fused maps and a Concat): the activations are read by the backward pass,
so element-wise fusion could not merge them. Here the forward writes h, c and
the activated gates (what the backward reads) in one pass; the backward writes
the gates' gradient [B, 4H] (the GEMMs' operand, no Concat) and dc_prev.

LSTMCell(gates [B, 4H], c_prev [B, H]) -> h, c, acts [B, 4H]; `order` names the
gate blocks of gates/acts: i (input), f (forget), c (cell candidate), o (output)."""
import numpy as np

from ..lower.loop_ir import Load
from .common import fail, require_float, tt
from .registry import get_op, gradient, non_differentiable, register

GATE_NAMES = "ifco"


def _blocks(order, hidden):
    return {k: order.index(k) * hidden for k in GATE_NAMES}


def _check(attrs, node, gates, *states):
    order = attrs["order"]
    if not isinstance(order, str) or sorted(order) != sorted(GATE_NAMES):
        fail(node, f"LSTMCell order must name the gates i, f, c, o once each, got {order!r}")
    require_float(node, gates)
    if gates.rank != 2 or gates.shape[1] % 4:
        fail(node, f"LSTMCell gates must be [batch, 4 * hidden], got {gates.shape}")
    b, h = gates.shape[0], gates.shape[1] // 4
    for s in states:
        if s is not None and (tuple(s.shape) != (b, h) or s.dtype != gates.dtype):
            fail(node, f"LSTMCell state of {s.dtype.value}{list(s.shape)}, expected {gates.dtype.value}{[b, h]}")
    return b, h


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _split(attrs, v):
    at = _blocks(attrs["order"], v.shape[1] // 4)
    h = v.shape[1] // 4
    return {k: v[:, at[k]:at[k] + h] for k in GATE_NAMES}


def _cell_infer(attrs, types, consts, node):
    _check(attrs, node, types[0], types[1])
    return [tt(types[0].dtype, types[1].shape)] * 2 + [types[0]]


def _cell_reference(attrs, gates, c_prev):
    g = _split(attrs, gates)
    acts = np.empty_like(gates)
    a = _split(attrs, acts)
    for k in "ifo":
        a[k][...] = _sigmoid(g[k])
    a["c"][...] = np.tanh(g["c"])
    c = a["f"] * c_prev + a["i"] * a["c"]
    return (a["o"] * np.tanh(c)).astype(gates.dtype), c.astype(gates.dtype), acts


def rows_loop(ctx, batch, hidden, gates, body):
    """body(row, col) inside rows (split across threads when there is work) x a
    vectorised loop over the hidden units."""
    nb = ctx.nb
    split = ("map", batch * hidden * gates) if batch > 1 else None
    with nb.loop(batch, parallel_candidate=split) as r:
        with nb.loop(hidden, "vector", ctx.lanes(ctx.out_types[0].dtype)) as j:
            body(r, j)


def cell_body(nb, gates, acts, row, at, c_prev, c_out, h_out, at_h):
    """One vector of the cell (LSTMCell's and LSTMSequence's): the gates' pre-activations
    at gates[row + at[k]] activated into acts (the same buffer: in place), then
    c = f c_prev + i g and h = o tanh(c) stored at c_out[at_h], h_out[at_h]; c_prev an expression."""
    sigmoid, tanh = (lambda x: get_op("Sigmoid").expr({}, x)), (lambda x: get_op("Tanh").expr({}, x))
    for k in GATE_NAMES:
        nb.store(acts, row + at[k], (tanh if k == "c" else sigmoid)(Load(gates, row + at[k])))
    a = {k: Load(acts, row + at[k]) for k in GATE_NAMES}
    nb.store(c_out, at_h, a["f"] * c_prev + a["i"] * a["c"])
    nb.store(h_out, at_h, a["o"] * tanh(Load(c_out, at_h)))


def _cell_lower(ctx):
    batch, hidden = ctx.out_types[0].shape
    gates, c_prev = ctx.inputs
    h_out, c_out, acts = ctx.outputs
    at = _blocks(ctx.attrs["order"], hidden)

    def body(r, j):
        row, cell = r * (4 * hidden) + j, r * hidden + j
        cell_body(ctx.nb, gates, acts, row, at, Load(c_prev, cell), c_out, h_out, cell)
    rows_loop(ctx, batch, hidden, 4, body)


register("LSTMCell", inputs=(2, 2), attrs={"order": None}, infer=_cell_infer, reference=_cell_reference,
         lower=_cell_lower, domain="nutshell")


@gradient("LSTMCell")
def _cell_grad(g, node, dys, wanted):
    dh, dc = dys[:2]
    if dh is None and dc is None:
        return [None, None]
    h, c, acts = node.outputs
    zeros = lambda: g.zeros(g.shape(h), h)      # the step's h or c read by nothing after it
    dgates, dc_prev = g.op("LSTMCellGrad", [dh or zeros(), dc or zeros(), acts, c, node.inputs[1]],
                           outputs=2, order=node.attrs["order"])
    return [dgates if wanted[0] else None, dc_prev if wanted[1] else None]


# ---- LSTMCellGrad(dh, dc, acts, c, c_prev) -> dgates [B, 4H], dc_prev ----
def _grad_infer(attrs, types, consts, node):
    _check(attrs, node, types[2], *types[:2], *types[3:])
    return [types[2], types[4]]


def _grad_reference(attrs, dh, dc, acts, c, c_prev):
    a = _split(attrs, acts)
    tc = np.tanh(c)
    dct = dc + dh * a["o"] * (1 - tc * tc)
    dgates = np.empty_like(acts)
    d = _split(attrs, dgates)
    d["i"][...] = dct * a["c"] * a["i"] * (1 - a["i"])
    d["f"][...] = dct * c_prev * a["f"] * (1 - a["f"])
    d["c"][...] = dct * a["i"] * (1 - a["c"] * a["c"])
    d["o"][...] = dh * tc * a["o"] * (1 - a["o"])
    return dgates, (dct * a["f"]).astype(acts.dtype)


def cell_grad_body(nb, acts, row, at, dh, c, dc, c_prev, dgates, tmp, dc_prev):
    """One vector of the cell's backward (LSTMCellGrad's and LSTMSequenceGrad's): dh, c
    (the step's cell state), dc and c_prev expressions; the gates' gradient into
    dgates[row + at[k]]; tmp = (buffer, index) holds tanh(c), then the cell's total
    gradient; dc_prev = (buffer, index) gets dc_prev (it may be tmp, or dc's own place)."""
    tanh = lambda x: get_op("Tanh").expr({}, x)
    a = {k: Load(acts, row + at[k]) for k in GATE_NAMES}
    nb.store(*tmp, tanh(c))
    tc = Load(*tmp)
    nb.store(dgates, row + at["o"], dh * tc * a["o"] * (1.0 - a["o"]))
    nb.store(*tmp, dc + dh * a["o"] * (1.0 - tc * tc))
    dct = Load(*tmp)
    nb.store(dgates, row + at["i"], dct * a["c"] * a["i"] * (1.0 - a["i"]))
    nb.store(dgates, row + at["f"], dct * c_prev * a["f"] * (1.0 - a["f"]))
    nb.store(dgates, row + at["c"], dct * a["i"] * (1.0 - a["c"] * a["c"]))
    nb.store(*dc_prev, dct * a["f"])


def _grad_lower(ctx):
    batch, hidden = ctx.out_types[1].shape
    dh_buf, dc_buf, acts, c_buf, cp_buf = ctx.inputs
    dgates, dc_prev = ctx.outputs
    at = _blocks(ctx.attrs["order"], hidden)

    def body(r, j):
        row, cell = r * (4 * hidden) + j, r * hidden + j
        # dc_prev's buffer holds tanh(c) first, then the cell's total gradient, then dc_prev
        cell_grad_body(ctx.nb, acts, row, at, Load(dh_buf, cell), Load(c_buf, cell), Load(dc_buf, cell),
                       Load(cp_buf, cell), dgates, (dc_prev, cell), (dc_prev, cell))
    rows_loop(ctx, batch, hidden, 4, body)


register("LSTMCellGrad", inputs=(5, 5), attrs={"order": None}, infer=_grad_infer, reference=_grad_reference,
         lower=_grad_lower, domain="nutshell")
non_differentiable("LSTMCell's backward (no second-order gradients of recurrent cells)", "LSTMCellGrad")
