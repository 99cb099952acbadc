"""LSTMSequence: a plain LSTM's whole time loop in one kernel, and LSTMSequenceGrad,
its backward, for the expansion of passes/recurrent.py (no sequence lengths).

Per step the recurrence is a small GEMM (batch x hidden by hidden x 4 hidden: 32 x
128 x 512 is 4 MFLOP) and the cell. As one node per step, each step paid a call,
the packing of W_hh, a fork/join per GEMM and a Split / Concat of the sequence.
Here W_hh is packed once per call, the gates go straight into `acts`, and the
threads each run the whole loop over their own rows of the batch (rows never
mix in an LSTM): no synchronisation between steps. Every element is computed in
the same order whatever the split, so results do not depend on the thread count.

LSTMSequence(xp [T*B, 4H] (x W_ih^T, time-major rows), r_t [H, 4H] (W_hh^T),
h0 [B, H], c0 [B, H], bias? [4H] (both biases, summed); order, reverse)
  -> y [T*B, H] (h of every step, time order), h_last, c_last [B, H] (the state
     after the last step taken), cs [T*B, H] and acts [T*B, 4H] (for the backward).
LSTMSequenceGrad(acts, cs, c0, r [4H, H] (W_hh), dy?, dh_last?, dc_last?, y?, h0?, x?; order, reverse)
  -> dgates [T*B, 4H] (dxp), dh0, dc0, dbias [4H] (dgates' column sums) and dW_hh
     [4H, H] (dgates^T h_prev: GEMMs over all steps' rows after the time loop,
     recurrent_weight_grad.py); given x? [T*B, I] (the input projection's operand:
     passes/recurrent.py's fold_input_weight_gradients) also dgates^T x [4H, I]. Sums
     over rows run in row order whatever the threads."""
import numpy as np

from ..lower.gemm import gemm_nest
from ..lower.loop_ir import Const
from ..schedule.gemm import column_read_kc, panel_layout
from .common import fail, require_float, tt
from .lstm_cell import GATE_NAMES, _blocks, _cell_reference, _grad_reference, cell_body, cell_grad_body
from .pack_panels import pack_into
from .recurrent_weight_grad import weight_gradients
from .registry import gradient, non_differentiable, register

MIN_ROWS_PER_THREAD = 4     # fewer rows per thread: the GEMM's row tile would run mostly empty


def _check_order(attrs, node):
    order = attrs["order"]
    if not isinstance(order, str) or sorted(order) != sorted(GATE_NAMES):
        fail(node, f"LSTMSequence order must name the gates i, f, c, o once each, got {order!r}")
    if attrs["reverse"] not in (0, 1):
        fail(node, f"LSTMSequence reverse must be 0 or 1, got {attrs['reverse']!r}")


def _dims(node, gates, state):
    """(steps, batch, hidden) of gates [T*B, 4H] and a state [B, H]."""
    require_float(node, gates)
    if gates.rank != 2 or state is None or state.rank != 2 or gates.shape[1] != 4 * state.shape[1] \
            or gates.shape[0] % state.shape[0]:
        fail(node, f"LSTMSequence needs gates [steps * batch, 4 * hidden] and states [batch, hidden], "
                   f"got {gates.shape} and {None if state is None else state.shape}")
    return gates.shape[0] // state.shape[0], state.shape[0], state.shape[1]


def _expect(node, t, shape, dtype):
    if t is not None and (tuple(t.shape) != tuple(shape) or t.dtype != dtype):
        fail(node, f"LSTMSequence input of {t.dtype.value}{list(t.shape)}, expected {dtype.value}{list(shape)}")


def _times(steps, reverse):
    return list(reversed(range(steps))) if reverse else list(range(steps))


# ---- forward ----
def _seq_infer(attrs, types, consts, node):
    _check_order(attrs, node)
    xp, r_t, h0, c0 = types[:4]
    t, b, h = _dims(node, xp, h0)
    for v, shape in ((r_t, (h, 4 * h)), (h0, (b, h)), (c0, (b, h)), (types[4] if len(types) > 4 else None, (4 * h,))):
        _expect(node, v, shape, xp.dtype)
    state = tt(xp.dtype, (b, h))
    return [tt(xp.dtype, (t * b, h)), state, state, tt(xp.dtype, (t * b, h)), xp]


def _seq_reference(attrs, xp, r_t, h0, c0, bias=None):
    b = h0.shape[0]
    xp = xp if bias is None else (xp + bias).astype(xp.dtype)
    steps = xp.shape[0] // b
    y, cs = (np.empty((steps * b, h0.shape[1]), xp.dtype) for _ in range(2))
    acts = np.empty_like(xp)
    h, c = h0, c0
    for t in _times(steps, attrs["reverse"]):
        rows = slice(t * b, (t + 1) * b)
        h, c, acts[rows] = _cell_reference(attrs, (xp[rows] + h @ r_t).astype(xp.dtype), c)
        y[rows], cs[rows] = h, c
    return y, h, c, cs, acts


def _teams(ctx, batch):
    """(teams, rows of each but the last): as many threads as have MIN_ROWS_PER_THREAD
    rows, the rows in equal shares but for a smaller last one."""
    teams = max(1, min(ctx.threads, batch // MIN_ROWS_PER_THREAD))
    share = -(-batch // teams)
    return -(-batch // share), share


def _pack_layout(node, in_types, consts, target):
    """The variant step's hook: (kc, panel) of the recurrent weight's packing, whose
    k is hidden forward (R^T [hidden, 4h]) and 4h back (R [4h, hidden]); back also
    the weight gradient's k per block and its blocks of rows (weight_gradient)."""
    layout = panel_layout(in_types[1 if node.op == "LSTMSequence" else 3].shape[0], target)
    if node.op == "LSTMSequence":
        return layout
    g4 = in_types[0].shape[1]     # about four row blocks per thread (a late thread holds up a quarter of
    #                                 its share; each block packs h_prev again: 8 blocks at 2 threads 0.95x)
    blocks = max(d for d in range(1, min(g4, 4 * target.threads) + 1) if g4 % d == 0) if target.threads > 1 else 1
    return layout + (column_read_kc(target), blocks)


def _packed(ctx, src, k, n):
    """B [k, n] packed into a scratch buffer once: (buffer, kc, panel) for gemm_nest."""
    kc, panel = ctx.variant[:2]
    out = ctx.scratch(-(-k // kc) * kc * -(-n // panel) * panel, src.dtype)
    pack_into(ctx, src, out, k, n, kc, panel)
    return out, kc, panel


def _team_loop(ctx, batch, body):
    """body(first row, rows) on each thread's share of the batch. An uneven last share
    is its own copy of the body (the GEMM's row count is static), run by that team
    alone: a loop of one iteration whose run-time limit is positive for it only."""
    teams, share = _teams(ctx, batch)
    last = batch - (teams - 1) * share
    with ctx.nb.loop(teams, hint="team", parallel_candidate=("teams", teams) if teams > 1 else None) as team:
        if last == share:
            body(team * share, share)
            return
        with ctx.nb.loop(1, hint="even", limit=(teams - 1) - team):
            body(team * share, share)
        with ctx.nb.loop(1, hint="last", limit=team - (teams - 2)):
            body((teams - 1) * share, last)


def _rows(ctx, rows, hidden, body):
    with ctx.nb.loop(rows, hint="r") as r:
        with ctx.nb.loop(hidden, "vector", ctx.lanes(ctx.out_types[0].dtype), hint="j") as j:
            body(r, j)


def _seq_lower(ctx):
    xp, r_t, h0, c0, bias = ctx.inputs + [None] * (5 - len(ctx.inputs))
    y, h_last, c_last, cs, acts = ctx.outputs
    steps, batch, hidden = _dims(ctx.node.name, ctx.in_types[0], ctx.in_types[2])
    g4, at, nb = 4 * hidden, _blocks(ctx.attrs["order"], hidden), ctx.nb
    packed = _packed(ctx, r_t, hidden, g4)
    times = _times(steps, ctx.attrs["reverse"])
    step = (lambda s: (steps - 1) - s) if ctx.attrs["reverse"] else (lambda s: s)

    def one_step(row0, share, t, h_prev, c_prev, prev_row0):
        """Time t for rows [row0, row0 + share): h_prev / c_prev read at row prev_row0 + r."""
        base = t * batch + row0
        gemm_nest(ctx, share, g4, hidden, lambda r, kk: h_prev[(prev_row0 + r) * hidden + kk], None, acts,
                  lambda r, c: (base + r) * g4 + c, parallel=False, prepacked=packed,
                  init=lambda r, c: xp[(base + r) * g4 + c] if bias is None else xp[(base + r) * g4 + c] + bias[c])

        def cell(r, j):      # the pre-activations become the activations in place
            at_h = (base + r) * hidden + j
            cell_body(nb, acts, acts, (base + r) * g4 + j, at, c_prev[(prev_row0 + r) * hidden + j], cs, y, at_h)
        _rows(ctx, share, hidden, cell)

    def team(row0, share):
        one_step(row0, share, times[0], h0, c0, row0)      # the first step reads the initial state
        if steps > 1:
            with nb.loop(steps - 1, hint="s") as s:
                t = step(s + 1)
                prev = step(s)
                one_step(row0, share, t, y, cs, prev * batch + row0)
    _team_loop(ctx, batch, team)
    last = times[-1] * batch * hidden
    with nb.loop(batch * hidden, "vector", ctx.lanes(y.dtype), hint="i") as i:
        nb.store(h_last, i, y[last + i])
        nb.store(c_last, i, cs[last + i])


register("LSTMSequence", inputs=(4, 5), attrs={"order": None, "reverse": 0}, infer=_seq_infer,
         reference=_seq_reference, lower=_seq_lower, domain="nutshell", variant=_pack_layout)


@gradient("LSTMSequence")
def _seq_grad(g, node, dys, wanted):
    dy, dh_last, dc_last = (list(dys) + [None] * 3)[:3]
    if dy is None and dh_last is None and dc_last is None:
        return [None] * len(node.inputs)
    xp, r_t, h0, c0 = node.inputs[:4]
    y, _, _, cs, acts = node.outputs
    order, reverse = node.attrs["order"], node.attrs["reverse"]
    dgates, dh0, dc0, dbias, dw_hh = g.op(
        "LSTMSequenceGrad", [acts, cs, c0, g.op("Transpose", [r_t]), dy or "", dh_last or "", dc_last or "", y, h0],
        outputs=5, order=order, reverse=reverse)
    dr_t = g.op("Transpose", [dw_hh]) if wanted[1] else None     # r_t is W_hh's Transpose: they cancel
    dbias = dbias if len(node.inputs) > 4 and node.inputs[4] and wanted[4] else None
    return [dgates if wanted[0] else None, dr_t, dh0 if wanted[2] else None, dc0 if wanted[3] else None,
            dbias][:len(node.inputs)]


# ---- backward ----
def _grad_infer(attrs, types, consts, node):
    _check_order(attrs, node)
    acts, cs, c0, r = types[:4]
    t, b, h = _dims(node, acts, c0)
    for v, shape in ((cs, (t * b, h)), (r, (4 * h, h)),
                     *zip(types[4:9], ((t * b, h), (b, h), (b, h), (t * b, h), (b, h)))):
        _expect(node, v, shape, acts.dtype)
    x = types[9] if len(types) > 9 else None
    if x is not None:
        _expect(node, x, (t * b, x.shape[-1] if x.rank == 2 else 0), acts.dtype)
    return [acts, c0, c0, tt(acts.dtype, (4 * h,)), r] + ([tt(acts.dtype, (4 * h, x.shape[1]))] if x else [])


def _h_prev(attrs, y, h0):
    """Per row of the sequence, the h its step started from (h0 for the first step taken)."""
    b = h0.shape[0]
    return np.concatenate([y[b:], h0] if attrs["reverse"] else [h0, y[:y.shape[0] - b]])


def _seq_grad_reference(attrs, acts, cs, c0, r, dy=None, dh_last=None, dc_last=None, y=None, h0=None, x=None):
    b, hidden = c0.shape
    steps = acts.shape[0] // b
    zeros = np.zeros((b, hidden), acts.dtype)
    dh = zeros if dh_last is None else dh_last
    dc = zeros if dc_last is None else dc_last
    dgates = np.empty_like(acts)
    times = _times(steps, attrs["reverse"])
    for n, t in enumerate(reversed(times)):
        rows = slice(t * b, (t + 1) * b)
        prev = times[len(times) - 2 - n] if n < steps - 1 else None
        c_prev = c0 if prev is None else cs[prev * b:(prev + 1) * b]
        dh = dh + (0 if dy is None else dy[rows])
        dgates[rows], dc = _grad_reference(attrs, dh, dc, acts[rows], cs[rows], c_prev)
        dh = (dgates[rows] @ r).astype(acts.dtype)
    dbias = np.zeros(acts.shape[1], acts.dtype)
    for row in dgates:          # in row order, as the kernel sums
        dbias += row
    dw_hh = np.zeros_like(r) if y is None or h0 is None else (dgates.T @ _h_prev(attrs, y, h0)).astype(acts.dtype)
    dw_x = () if x is None else ((dgates.T @ x).astype(acts.dtype),)
    return (dgates, dh, dc.astype(acts.dtype), dbias, dw_hh) + dw_x


def _grad_lower(ctx):
    acts, cs, c0, r, dy, dh_last, dc_last, y, h0, x = ctx.inputs + [None] * (10 - len(ctx.inputs))
    dgates, dh, dc, dbias, dw_hh = ctx.outputs[:5]    # dh0 and dc0 carry each step's dh and dc until the end
    steps, batch, hidden = _dims(ctx.node.name, ctx.in_types[0], ctx.in_types[2])
    g4, at, nb = 4 * hidden, _blocks(ctx.attrs["order"], hidden), ctx.nb
    packed = _packed(ctx, r, g4, hidden)
    tmp = ctx.scratch(batch * hidden, acts.dtype)     # tanh(c), then the cell's total gradient
    times = _times(steps, ctx.attrs["reverse"])
    zero = Const(0.0, acts.dtype)
    # backward in time: s-th step taken back is time t(s); the step before it in time is t(s + 1)
    back = (lambda s: s) if ctx.attrs["reverse"] else (lambda s: (steps - 1) - s)

    def cell(row0, share, t, c_prev, prev_row0):
        base = t * batch + row0

        def body(r, j):
            own = (row0 + r) * hidden + j
            cell_grad_body(nb, acts, (base + r) * g4 + j, at, dh[own], cs[(base + r) * hidden + j], dc[own],
                           c_prev[(prev_row0 + r) * hidden + j], dgates, (tmp, own), (dc, own))
        _rows(ctx, share, hidden, body)

    def recurrent(row0, share, t, t_prev):
        """dh for the step before (t_prev; None: the initial state's) = dgates_t W_hh (+ dy there)."""
        base = t * batch + row0
        init = None if dy is None or t_prev is None else \
            (lambda rr, c: dy[(t_prev * batch + row0 + rr) * hidden + c])
        gemm_nest(ctx, share, hidden, g4, lambda rr, kk: dgates[(base + rr) * g4 + kk], None, dh,
                  lambda rr, c: (row0 + rr) * hidden + c, init=init, parallel=False, prepacked=packed)

    def team(row0, share):
        last = times[-1] * batch + row0

        def seed(r, j):
            own = (row0 + r) * hidden + j
            at_t = (last + r) * hidden + j
            d_h = [v[i] for v, i in ((dy, at_t), (dh_last, own)) if v is not None]
            nb.store(dh, own, d_h[0] + d_h[1] if len(d_h) == 2 else d_h[0] if d_h else zero)
            nb.store(dc, own, dc_last[own] if dc_last is not None else zero)
        _rows(ctx, share, hidden, seed)
        if steps > 1:
            with nb.loop(steps - 1, hint="s") as s:
                t, t_prev = back(s), back(s + 1)
                cell(row0, share, t, cs, t_prev * batch + row0)
                recurrent(row0, share, t, t_prev)
        cell(row0, share, times[0], c0, row0)
        recurrent(row0, share, times[0], None)
    _team_loop(ctx, batch, team)
    column_sums(ctx, dgates, steps * batch, g4, dbias)
    weight_gradients(ctx, dgates, y, h0, dw_hh, steps, batch, hidden, x, ctx.outputs[5] if x is not None else None,
                     ctx.in_types[9].shape[1] if x is not None else None)


def column_sums(ctx, src, rows, cols, out):
    """out[c] = sum of src[r, c] over r in row order (the bias gradient: the same bits
    whatever the threads), the columns in blocks of 8 vectors split across threads."""
    nb, lanes = ctx.nb, ctx.lanes(out.dtype)
    width = 8 * lanes
    whole, edge = divmod(cols, width)
    for first, count, w in ((0, whole, width), (whole * width, 1 if edge else 0, edge)):
        if not count:
            continue
        with nb.loop(count, hint="cb", parallel_candidate=("map", rows * cols) if count > 1 else None) as cb:
            c0 = first + cb * width
            with nb.loop(w, "vector", lanes, hint="j") as j:
                nb.store(out, c0 + j, Const(0.0, out.dtype))
            with nb.loop(rows, hint="r") as r:
                with nb.loop(w, "vector", lanes, hint="j") as j:
                    nb.store(out, c0 + j, out[c0 + j] + src[r * cols + c0 + j])


register("LSTMSequenceGrad", inputs=(4, 10), attrs={"order": None, "reverse": 0}, infer=_grad_infer,
         reference=_seq_grad_reference, lower=_grad_lower, domain="nutshell",
         variant=_pack_layout)
non_differentiable("LSTMSequence's backward (no second-order gradients of recurrent cells)", "LSTMSequenceGrad")
