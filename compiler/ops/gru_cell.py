"""GRUCell: one step of a GRU with the reset gate after the recurrent product
(ONNX's linear_before_reset = 1, PyTorch's GRU) in one loop, and GRUCellGrad,
its backward in one loop; the LSTM's counterpart (lstm_cell.py has the why).

GRUCell(gx [B, 3H], gh [B, 3H], h [B, H]) -> h', acts [B, 3H]: gx = x W^T + Wb and
gh = h R^T + Rb (the step's GEMM), z = sigmoid(gx_z + gh_z), r likewise,
n = tanh(gx_n + r * gh_n), h' = n + z * (h - n); acts holds z, r, n. `order` names
the blocks: z (update), r (reset), h (the candidate n)."""
import numpy as np

from ..lower.loop_ir import Load
from .common import fail, require_float, tt
from .lstm_cell import rows_loop
from .registry import get_op, gradient, non_differentiable, register

GATE_NAMES = "zrh"


def _check(attrs, node, *gate_types, state):
    order = attrs["order"]
    if not isinstance(order, str) or sorted(order) != sorted(GATE_NAMES):
        fail(node, f"GRUCell order must name the gates z, r, h once each, got {order!r}")
    first = gate_types[0]
    require_float(node, first)
    if first.rank != 2 or first.shape[1] % 3:
        fail(node, f"GRUCell gates must be [batch, 3 * hidden], got {first.shape}")
    b, h = first.shape[0], first.shape[1] // 3
    for t, want in [(g, first.shape) for g in gate_types[1:]] + [(s, (b, h)) for s in state]:
        if tuple(t.shape) != tuple(want) or t.dtype != first.dtype:
            fail(node, f"GRUCell operand of {t.dtype.value}{list(t.shape)}, expected {first.dtype.value}{list(want)}")
    return b, h


def _split(attrs, v):
    h = v.shape[1] // 3
    return {k: v[:, attrs["order"].index(k) * h:(attrs["order"].index(k) + 1) * h] for k in GATE_NAMES}


def _infer(attrs, types, consts, node):
    _check(attrs, node, types[0], types[1], state=[types[2]])
    return [types[2], types[0]]


def _reference(attrs, gx, gh, h):
    x, r_ = _split(attrs, gx), _split(attrs, gh)
    acts = np.empty_like(gx)
    a = _split(attrs, acts)
    a["z"][...] = 1 / (1 + np.exp(-(x["z"] + r_["z"])))
    a["r"][...] = 1 / (1 + np.exp(-(x["r"] + r_["r"])))
    a["h"][...] = np.tanh(x["h"] + a["r"] * r_["h"])
    return (a["h"] + a["z"] * (h - a["h"])).astype(gx.dtype), acts


def _offsets(ctx, hidden):
    return {k: ctx.attrs["order"].index(k) * hidden for k in GATE_NAMES}


def _lower(ctx):
    batch, hidden = ctx.out_types[0].shape
    gx, gh, h_buf = ctx.inputs
    h_out, acts = ctx.outputs
    at = _offsets(ctx, hidden)
    sigmoid, tanh = (lambda x: get_op("Sigmoid").expr({}, x)), (lambda x: get_op("Tanh").expr({}, x))

    def body(r, j):
        row, cell = r * (3 * hidden) + j, r * hidden + j
        pre = lambda k: Load(gx, row + at[k]) + Load(gh, row + at[k])
        ctx.nb.store(acts, row + at["z"], sigmoid(pre("z")))
        ctx.nb.store(acts, row + at["r"], sigmoid(pre("r")))
        ctx.nb.store(acts, row + at["h"], tanh(Load(gx, row + at["h"]) + Load(acts, row + at["r"]) *
                                              Load(gh, row + at["h"])))
        n, h = Load(acts, row + at["h"]), Load(h_buf, cell)
        ctx.nb.store(h_out, cell, n + Load(acts, row + at["z"]) * (h - n))
    rows_loop(ctx, batch, hidden, 3, body)


register("GRUCell", inputs=(3, 3), attrs={"order": None}, infer=_infer, reference=_reference,
         lower=_lower, domain="nutshell")


@gradient("GRUCell")
def _grad(g, node, dys, wanted):
    if dys[0] is None:
        return [None, None, None]
    gx, gh, h = node.inputs
    dgx, dgh, dh = g.op("GRUCellGrad", [dys[0], node.outputs[1], gh, h], outputs=3, order=node.attrs["order"])
    return [v if w else None for v, w in zip((dgx, dgh, dh), wanted)]


# ---- GRUCellGrad(dh', acts, gh, h) -> dgx, dgh [B, 3H], dh (the direct part) ----
def _grad_infer(attrs, types, consts, node):
    _check(attrs, node, types[1], types[2], state=[types[0], types[3]])
    return [types[1], types[1], types[3]]


def _grad_reference(attrs, dy, acts, gh, h):
    a, r_ = _split(attrs, acts), _split(attrs, gh)
    dgx, dgh = np.empty_like(acts), np.empty_like(acts)
    dx, dr_ = _split(attrs, dgx), _split(attrs, dgh)
    dn = dy * (1 - a["z"]) * (1 - a["h"] * a["h"])
    dx["z"][...] = dr_["z"][...] = dy * (h - a["h"]) * a["z"] * (1 - a["z"])
    dx["r"][...] = dr_["r"][...] = dn * r_["h"] * a["r"] * (1 - a["r"])
    dx["h"][...] = dn
    dr_["h"][...] = dn * a["r"]
    return dgx, dgh, (dy * a["z"]).astype(acts.dtype)


def _grad_lower(ctx):
    batch, hidden = ctx.out_types[2].shape
    dy_buf, acts, gh, h_buf = ctx.inputs
    dgx, dgh, dh = ctx.outputs
    at = _offsets(ctx, hidden)

    def body(r, j):
        row, cell = r * (3 * hidden) + j, r * hidden + j
        a = {k: Load(acts, row + at[k]) for k in GATE_NAMES}
        dy = Load(dy_buf, cell)
        dz = dy * (Load(h_buf, cell) - a["h"]) * a["z"] * (1.0 - a["z"])
        ctx.nb.store(dgx, row + at["z"], dz)
        ctx.nb.store(dgh, row + at["z"], Load(dgx, row + at["z"]))
        ctx.nb.store(dgx, row + at["h"], dy * (1.0 - a["z"]) * (1.0 - a["h"] * a["h"]))
        dn = Load(dgx, row + at["h"])
        ctx.nb.store(dgh, row + at["h"], dn * a["r"])
        drr = dn * Load(gh, row + at["h"]) * a["r"] * (1.0 - a["r"])
        ctx.nb.store(dgx, row + at["r"], drr)
        ctx.nb.store(dgh, row + at["r"], Load(dgx, row + at["r"]))
        ctx.nb.store(dh, cell, dy * a["z"])
    rows_loop(ctx, batch, hidden, 3, body)


register("GRUCellGrad", inputs=(4, 4), attrs={"order": None}, infer=_grad_infer, reference=_grad_reference,
         lower=_grad_lower, domain="nutshell")
non_differentiable("GRUCell's backward (no second-order gradients of recurrent cells)", "GRUCellGrad")
