"""Recurrent cells: ONNX LSTM, GRU and RNN over a fixed sequence length.

Each is declared here once (attributes, validation, shape rule, NumPy reference)
and has no kernel of its own: compiler/passes/recurrent.py expands a cell into
per-step GEMMs and gate arithmetic over the time steps (DESIGN principle 2): a
plain LSTM's and PyTorch's GRU's as the cell ops of lstm_cell.py / gru_cell.py
(with their own VJP rules), others as Split / Sigmoid / Tanh / Mul / Add. The
ONNX importer and the DSL layers expand at construction time; the pass catches
any cell node left in a graph."""
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedOpError
from .common import fail, require_float, tt
from .registry import get_op, register

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ONNX_ORDER = {"LSTM": "iofc", "GRU": "zrh", "RNN": "i"}   # gate blocks in W, R and B
INPUT_NAMES = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
# activation: (its registry op or None when composed here, [(parameter, default)])
ACTIVATIONS = {"Sigmoid": ("Sigmoid", []), "Tanh": ("Tanh", []), "Relu": ("Relu", []),
               "Softsign": ("Softsign", []), "Softplus": ("Softplus", []),
               "LeakyRelu": ("LeakyRelu", [("alpha", 0.01)]), "Elu": ("Elu", [("alpha", 1.0)]),
               "ThresholdedRelu": ("ThresholdedRelu", [("alpha", 1.0)]),
               "HardSigmoid": ("HardSigmoid", [("alpha", 0.2), ("beta", 0.5)]),
               "Affine": (None, [("alpha", 1.0), ("beta", 0.0)]),
               "ScaledTanh": (None, [("alpha", 1.0), ("beta", 1.0)])}


@dataclass(frozen=True)
class Activation:
    name: str
    params: tuple          # ((parameter, value), ...)

    def numpy(self, x):
        p = dict(self.params)
        if self.name == "Affine":
            return (p["alpha"] * x + p["beta"]).astype(x.dtype)
        if self.name == "ScaledTanh":
            return (p["alpha"] * np.tanh(p["beta"] * x)).astype(x.dtype)
        return get_op(self.name).reference(p, x)


@dataclass(frozen=True)
class Cell:
    """A recurrent node's validated configuration."""
    op: str
    hidden: int
    directions: tuple      # ("forward",), ("reverse",) or ("forward", "reverse")
    activations: tuple     # per direction, a tuple of Activation (f, g, h)
    clip: float            # None: no clipping of the gates' pre-activations
    layout: int            # 0: [seq, batch, ...], 1: [batch, seq, ...]
    linear_before_reset: int = 0
    input_forget: int = 0

    @property
    def gates(self):
        return GATES[self.op]


def _unsupported(op, node, detail):
    raise UnsupportedOpError(op, node=node, detail=detail)


def _activations(op, attrs, num_dir, node):
    names = attrs.get("activations")
    per_dir = len(DEFAULT_ACTIVATIONS[op])
    names = tuple(names) if names else DEFAULT_ACTIVATIONS[op] * num_dir
    if len(names) != per_dir * num_dir:
        fail(node, f"{op} needs {per_dir * num_dir} activations for {num_dir} direction(s), "
                   f"got {len(names)}")
    alphas = list(attrs.get("activation_alpha") or ())
    betas = list(attrs.get("activation_beta") or ())
    acts = []
    for name in names:      # alpha/beta lists are consumed by the activations that take them
        if name not in ACTIVATIONS:
            _unsupported(op, node, f"attribute activations: '{name}' is not supported "
                                   f"(supported: {', '.join(ACTIVATIONS)})")
        params = []
        for key, default in ACTIVATIONS[name][1]:
            source = alphas if key == "alpha" else betas
            params.append((key, float(source.pop(0)) if source else default))
        acts.append(Activation(name, tuple(params)))
    return tuple(tuple(acts[d * per_dir:(d + 1) * per_dir]) for d in range(num_dir))


def cell_config(op, attrs, node, hidden=None):
    """The validated Cell of a node; unsupported attribute values are UnsupportedOpErrors."""
    direction = attrs.get("direction", "forward")
    dirs = {"forward": ("forward",), "reverse": ("reverse",),
            "bidirectional": ("forward", "reverse")}.get(direction)
    if dirs is None:
        _unsupported(op, node, f"attribute direction: '{direction}' is not forward, reverse or "
                               "bidirectional")
    hidden_size = attrs.get("hidden_size", hidden)
    if hidden_size is None or int(hidden_size) <= 0:
        fail(node, f"{op} needs a positive hidden_size, got {hidden_size}")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        _unsupported(op, node, f"attribute layout: {layout} is not 0 or 1")
    clip = attrs.get("clip")
    if clip is not None and not float(clip) > 0:
        fail(node, f"{op} clip must be positive, got {clip}")
    for flag in ("linear_before_reset", "input_forget"):
        if int(attrs.get(flag, 0)) not in (0, 1):
            _unsupported(op, node, f"attribute {flag}: {attrs[flag]} is not 0 or 1")
    return Cell(op, int(hidden_size), dirs, _activations(op, attrs, len(dirs), node),
                None if clip is None else float(clip), layout,
                int(attrs.get("linear_before_reset", 0)), int(attrs.get("input_forget", 0)))


def _expect(node, types, index, shape):
    t = types[index] if index < len(types) else None
    if t is not None and tuple(t.shape) != tuple(shape):
        fail(node, f"input {INPUT_NAMES[index]} has shape {tuple(t.shape)}, expected {tuple(shape)}")


MAX_STEPS = 4096      # time steps are unrolled into the graph: a hostile length must not hang


def check_steps(op, steps, batch, node):
    if steps < 1 or batch < 1:
        fail(node, f"{op} needs at least one time step and one sequence, got {steps} and {batch}")
    if steps > MAX_STEPS:
        _unsupported(op, node, f"a sequence of {steps} steps (each step is unrolled into the graph; "
                               f"at most {MAX_STEPS})")


def full_lengths(seq_lens, steps):
    """True when constant sequence lengths all equal the sequence length (no masking)."""
    return seq_lens is not None and bool(np.all(np.asarray(seq_lens) == steps))


def check_inputs(op, attrs, types, consts, node):
    """(cell, steps, batch, input size) of a node whose inputs fit its attributes."""
    x, w, r = types[:3]
    dtype = require_float(node, x)
    if x.rank != 3 or w.rank != 3 or r.rank != 3:
        fail(node, f"{op} needs X, W and R of rank 3, got {x.rank}, {w.rank}, {r.rank}")
    cell = cell_config(op, attrs, node, hidden=r.shape[-1])
    d, h, g = len(cell.directions), cell.hidden, cell.gates
    steps, batch = (x.shape[1], x.shape[0]) if cell.layout else x.shape[:2]
    check_steps(op, steps, batch, node)
    state = (batch, d, h) if cell.layout else (d, batch, h)
    for i, shape in ((1, (d, g * h, x.shape[2])), (2, (d, g * h, h)), (3, (d, 2 * g * h)),
                     (4, (batch,)), (5, state), (6, state), (7, (d, 3 * h))):
        _expect(node, types, i, shape)
    if any(t is not None and t.dtype != dtype for i, t in enumerate(types) if i != 4):
        fail(node, f"{op} inputs mix element types")
    seq = types[4] if len(types) > 4 else None
    if seq is not None and seq.dtype.value not in ("int32", "int64"):
        fail(node, f"{op} sequence_lens must be int32 or int64, got {seq.dtype.value}")
    return cell, steps, batch, x.shape[2]


def _infer(op):
    def infer(attrs, types, consts, node):
        cell, steps, batch, _ = check_inputs(op, attrs, types, consts, node)
        d, h, dtype = len(cell.directions), cell.hidden, types[0].dtype
        y = (batch, steps, d, h) if cell.layout else (steps, d, batch, h)
        state = (batch, d, h) if cell.layout else (d, batch, h)
        return [tt(dtype, y)] + [tt(dtype, state)] * (2 if op == "LSTM" else 1)
    return infer


# ----- NumPy reference (the oracle of the expansion's tests) -----

def _clip(cell, v):
    return v if cell.clip is None else np.clip(v, -cell.clip, cell.clip)


def _gates(v, order):
    return dict(zip(order, np.split(v, len(order), axis=-1)))


def _step(cell, acts, x, w, r, wb, rb, h, c, p):
    """One time step of one direction, ONNX's equations."""
    f = acts[0].numpy
    if cell.op == "RNN":
        return f(_clip(cell, x @ w.T + h @ r.T + wb + rb)), c
    if cell.op == "GRU":
        gx, gh = _gates(x @ w.T + wb, "zrh"), _gates(h @ r.T + rb, "zrh")
        z, rr = f(_clip(cell, gx["z"] + gh["z"])), f(_clip(cell, gx["r"] + gh["r"]))
        if cell.linear_before_reset:
            pre = gx["h"] + rr * gh["h"]
        else:
            _, _, rh = np.split(r, 3, axis=0)
            _, _, rbh = np.split(rb, 3)
            pre = gx["h"] + (rr * h) @ rh.T + rbh
        return (1 - z) * acts[1].numpy(_clip(cell, pre)) + z * h, c
    gt = _gates(x @ w.T + h @ r.T + wb + rb, "iofc")
    pi, po, pf = np.split(p, 3)
    i = f(_clip(cell, gt["i"] + pi * c))
    fg = 1 - i if cell.input_forget else f(_clip(cell, gt["f"] + pf * c))
    c_new = fg * c + i * acts[1].numpy(_clip(cell, gt["c"]))
    o = f(_clip(cell, gt["o"] + po * c_new))
    return o * acts[2].numpy(c_new), c_new


def _reference(op):
    def reference(attrs, x, w, r, b=None, seq=None, h0=None, c0=None, p=None):
        cell = cell_config(op, attrs, op, hidden=r.shape[-1])
        if cell.layout:
            x = x.swapaxes(0, 1)
            h0, c0 = (None if s is None else s.swapaxes(0, 1) for s in (h0, c0))
        steps, batch = x.shape[:2]
        gh = cell.gates * cell.hidden
        ys, hs, cs = [], [], []
        for d, direction in enumerate(cell.directions):
            bias = np.zeros(2 * gh, x.dtype) if b is None else b[d]
            h = np.zeros((batch, cell.hidden), x.dtype) if h0 is None else h0[d]
            c = np.zeros((batch, cell.hidden), x.dtype) if c0 is None else c0[d]
            pd = np.zeros(3 * cell.hidden, x.dtype) if p is None else p[d]
            y = np.zeros((steps, batch, cell.hidden), x.dtype)
            order = range(steps) if direction == "forward" else reversed(range(steps))
            for t in order:
                h_new, c_new = _step(cell, cell.activations[d], x[t], w[d], r[d], bias[:gh],
                                     bias[gh:], h, c, pd)
                live = np.ones((batch, 1), bool) if seq is None else (t < seq)[:, None]
                h, c = np.where(live, h_new, h), np.where(live, c_new, c)
                y[t] = np.where(live, h_new, 0)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        y, hn, cn = np.stack(ys, 1), np.stack(hs), np.stack(cs)
        if cell.layout:
            y, hn, cn = y.transpose(2, 0, 1, 3), hn.swapaxes(0, 1), cn.swapaxes(0, 1)
        outs = (y.astype(x.dtype), hn.astype(x.dtype), cn.astype(x.dtype))
        return outs if op == "LSTM" else outs[:2]
    return reference


_COMMON = {"activation_alpha": None, "activation_beta": None, "activations": None, "clip": None,
           "direction": "forward", "hidden_size": None, "layout": 0}
_EXTRA = {"LSTM": {"input_forget": 0}, "GRU": {"linear_before_reset": 0}, "RNN": {}}
_MAX_INPUTS = {"LSTM": 8, "GRU": 6, "RNN": 6}

for _op in GATES:
    register(_op, inputs=(3, _MAX_INPUTS[_op]), attrs={**_COMMON, **_EXTRA[_op]},
             infer=_infer(_op), reference=_reference(_op))
