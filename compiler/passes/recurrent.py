"""Recurrent cells (ops/recurrent.py) expanded into primitives over the fixed
sequence length: the input projections of all time steps as one MatMul, then
a plain LSTM without sequence lengths as one LSTMSequence node (the time loop in
one kernel, ops/lstm_sequence.py); other cells per step a Gemm by the recurrent
weights and the gates' arithmetic: for a masked plain LSTM (and PyTorch's GRU)
one LSTMCell (GRUCell) node, whose gradient rule
is one LSTMCellGrad loop (ops/lstm_cell.py, gru_cell.py); other cells as Split /
Sigmoid / Tanh / Mul / Add, differentiated through those ops' rules. The
per-step weight gradients become one GEMM over all steps (gemm_transpose.py).

The same builders serve the ONNX importer and the pass expand_composites
(expand_node, through expand.py) and the DSL's nn.LSTM / nn.GRU / nn.RNN
(cell_sequence, with PyTorch's gate order)."""
from dataclasses import dataclass
from typing import Optional

import numpy as np
from onnx import TensorProto
from onnx.helper import np_dtype_to_tensor_dtype

from ..ir.graph import Node
from ..ops import get_op
from ..ops.recurrent import ONNX_ORDER, check_inputs, full_lengths


@dataclass
class Weights:
    """One direction's parameters as graph values: W [G*H, I], R [G*H, H], the
    biases [G*H] (or None) and LSTM's peepholes [3H] (i, o, f; or None)."""
    w: str
    r: str
    wb: Optional[str] = None
    rb: Optional[str] = None
    p: Optional[str] = None


class Emitter:
    """Appends primitive ops to a GraphBuilder with little ceremony."""

    def __init__(self, builder):
        self.b = builder

    def op(self, name, inputs, n=1, **attrs):
        return self.b.add_node(name, list(inputs), attrs, num_outputs=n)

    def const(self, value, like):
        return self.b.add_constant(np.asarray(value, dtype=self.b.types[like].dtype.numpy))

    def ints(self, values):
        return self.b.add_constant(np.asarray(values, dtype=np.int64))

    def add(self, a, b): return self.op("Add", [a, b])
    def sub(self, a, b): return self.op("Sub", [a, b])
    def mul(self, a, b): return self.op("Mul", [a, b])
    def matmul(self, a, b): return self.op("MatMul", [a, b])

    def gemm(self, a, b, c):
        """a @ b + c in one GEMM, c seeding the accumulators (None: a MatMul)."""
        return self.matmul(a, b) if c is None else self.op("Gemm", [a, b, c])

    def reshape(self, v, shape):
        return v if tuple(self.b.types[v].shape) == tuple(shape) else self.op("Reshape", [v, self.ints(shape)])

    def split(self, v, axis, sizes):
        if len(sizes) == 1:
            return [v]
        out = self.op("Split", [v, self.ints(sizes)], n=len(sizes), axis=axis)
        return list(out)

    def concat(self, values, axis):
        return values[0] if len(values) == 1 else self.op("Concat", values, axis=axis)

    def activate(self, act, v):
        p = dict(act.params)
        if act.name == "Affine":
            return self.add(self.mul(v, self.const(p["alpha"], v)), self.const(p["beta"], v))
        if act.name == "ScaledTanh":
            return self.mul(self.op("Tanh", [self.mul(v, self.const(p["beta"], v))]),
                            self.const(p["alpha"], v))
        return self.op(act.name, [v], **p)


def _clip(em, cell, v):
    if cell.clip is None:
        return v
    return em.op("Clip", [v, em.const(-cell.clip, v), em.const(cell.clip, v)])


def _gates(em, v, order, hidden):
    return dict(zip(order, em.split(v, 1, [hidden] * len(order))))


def _plain_lstm(cell, acts, wt):
    """Whether a step is LSTMCell's (ops/lstm_cell.py): default activations, no clip,
    peepholes or coupled input and forget gates."""
    return not (wt.p or cell.clip is not None or cell.input_forget) and \
        tuple(a.name for a in acts) == ("Sigmoid", "Tanh", "Tanh")


def _lstm_step(em, cell, acts, xp, h, c, r_t, wt, order):
    H = cell.hidden
    if _plain_lstm(cell, acts, wt):
        h_new, c_new, _ = em.op("LSTMCell", [em.gemm(h, r_t, xp), c], n=3, order=order)
        return h_new, c_new
    g = _gates(em, em.gemm(h, r_t, xp), order, H)
    pi, po, pf = em.split(wt.p, 0, [H] * 3) if wt.p else (None, None, None)
    peep = lambda pre, p, state: _clip(em, cell, pre if p is None else em.add(pre, em.mul(p, state)))
    i = em.activate(acts[0], peep(g["i"], pi, c))
    f = em.sub(em.const(1.0, i), i) if cell.input_forget else em.activate(acts[0], peep(g["f"], pf, c))
    c_new = em.add(em.mul(f, c), em.mul(i, em.activate(acts[1], _clip(em, cell, g["c"]))))
    o = em.activate(acts[0], peep(g["o"], po, c_new))
    return em.mul(o, em.activate(acts[2], c_new)), c_new


def _plain_gru(cell, acts):
    """Whether a step is GRUCell's (ops/gru_cell.py): PyTorch's GRU (the reset gate
    after the recurrent product), default activations, no clip."""
    return cell.linear_before_reset and cell.clip is None and tuple(a.name for a in acts) == ("Sigmoid", "Tanh")


def _gru_step(em, cell, acts, xp, h, c, r_t, wt, order):
    """h' = n + z * (h - n), which is (1 - z) * n + z * h; order ends with the h gate."""
    H = cell.hidden
    if _plain_gru(cell, acts):
        h_new, _ = em.op("GRUCell", [xp, em.gemm(h, r_t, wt.rb), h], n=2, order=order)
        return h_new, c
    if cell.linear_before_reset:
        gx = _gates(em, xp, order, H)
        gh = _gates(em, em.gemm(h, r_t, wt.rb), order, H)
        z, r = (em.activate(acts[0], _clip(em, cell, em.add(gx[k], gh[k]))) for k in "zr")
        n_pre = em.add(gx["h"], em.mul(r, gh["h"]))
    else:                  # the reset gate applies before the recurrent product
        r_zr, r_h = em.split(r_t, 1, [2 * H, H])
        xp_zr, xp_h = em.split(xp, 1, [2 * H, H])
        g = _gates(em, em.gemm(h, r_zr, xp_zr), order[:2], H)
        z, r = (em.activate(acts[0], _clip(em, cell, g[k])) for k in "zr")
        n_pre = em.gemm(em.mul(r, h), r_h, xp_h)
    n = em.activate(acts[1], _clip(em, cell, n_pre))
    return em.add(n, em.mul(z, em.sub(h, n))), c


def _rnn_step(em, cell, acts, xp, h, c, r_t, wt, order):
    return em.activate(acts[0], _clip(em, cell, em.gemm(h, r_t, xp))), c


STEPS = {"LSTM": _lstm_step, "GRU": _gru_step, "RNN": _rnn_step}
WHOLE_SEQUENCE = True      # False: a plain LSTM per step too (test_recurrent_cells compares the two)


def _projection(em, cell, x2d, wt):
    """x W^T + bias for all time steps in one GEMM, the bias seeding its accumulators;
    GRU with linear_before_reset keeps R's bias for the step (it sits inside the
    reset gate's product)."""
    rb = [] if cell.op == "GRU" and cell.linear_before_reset else [wt.rb]
    return em.gemm(x2d, em.op("Transpose", [wt.w]), _summed(em, [wt.wb] + rb))


def _summed(em, biases):
    """The given biases summed first (their gradient is then one reduction over T*B
    rows); None without any."""
    biases = [v for v in biases if v]
    return None if not biases else biases[0] if len(biases) == 1 else em.add(*biases)


def _direction(em, cell, d, x2d, steps, batch, wt, h, c, masks, order):
    """One direction over the sequence: its outputs [T*B, H] in time order, last h and c."""
    reverse = cell.directions[d] == "reverse"
    r_t = em.op("Transpose", [wt.r])
    if WHOLE_SEQUENCE and masks is None and cell.op == "LSTM" and _plain_lstm(cell, cell.activations[d], wt):
        # the whole loop as one kernel (ops/lstm_sequence.py), the biases added in its GEMM's seed
        bias = _summed(em, [wt.wb, wt.rb])
        y, h, c, _, _ = em.op("LSTMSequence", [em.matmul(x2d, em.op("Transpose", [wt.w])), r_t, h, c] +
                              ([] if bias is None else [bias]),
                              n=5, order=order, reverse=int(reverse))
        return y, h, c
    xps = em.split(_projection(em, cell, x2d, wt), 0, [batch] * steps)
    ys = [None] * steps
    for t in (reversed(range(steps)) if reverse else range(steps)):
        h_new, c_new = STEPS[cell.op](em, cell, cell.activations[d], xps[t], h, c, r_t, wt, order)
        if masks is None:
            h, c, ys[t] = h_new, c_new, h_new
        else:              # past a sequence's length (a reverse pass starts there) the state
            #                holds and the output is zero, as ONNX Runtime does
            m = masks[t]
            h = em.add(h, em.mul(m, em.sub(h_new, h)))
            c = c if cell.op != "LSTM" else em.add(c, em.mul(m, em.sub(c_new, c)))
            ys[t] = em.mul(m, h_new)
    return em.concat(ys, 0), h, c


def cell_sequence(em, cell, x2d, steps, batch, weights, h0s=None, c0s=None, masks=None, order=None):
    """The cell over x2d [T*B, I] (time-major rows). weights, h0s, c0s: one entry per
    direction (states [B, H] or None for zeros). Returns per direction the outputs
    [T*B, H], the last h [B, H] and (LSTM) the last c."""
    order = order or ONNX_ORDER[cell.op]
    zeros = em.b.add_constant(np.zeros((batch, cell.hidden), em.b.types[x2d].dtype.numpy))
    ys, hs, cs = [], [], []
    for d, wt in enumerate(weights):
        h0 = (h0s or [None] * len(weights))[d] or zeros
        c0 = (c0s or [None] * len(weights))[d] or zeros
        y, h, c = _direction(em, cell, d, x2d, steps, batch, wt, h0, c0, masks, order)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return ys, hs, cs


# ----- ONNX nodes -----

def _per_direction(em, v, num_dir, shape):
    """[D, ...] -> D values of `shape` (None stays None)."""
    if not v:
        return [None] * num_dir
    return [em.reshape(p, shape) for p in em.split(v, 0, [1] * num_dir)]


def _masks(em, seq, steps, batch, like):
    """Per step [B, 1] floats: 1 while t < sequence_lens[b]."""
    lens = em.reshape(em.op("Cast", [seq], to=TensorProto.INT64), (1, batch))
    live = em.op("Less", [em.ints(np.arange(steps).reshape(steps, 1)), lens])
    flags = em.op("Cast", [live], to=np_dtype_to_tensor_dtype(em.b.types[like].dtype.numpy))
    return [em.reshape(m, (batch, 1)) for m in em.split(flags, 0, [1] * steps)]


def expand_node(b, op, inputs, attrs, outputs, name=""):
    """Append an ONNX LSTM/GRU/RNN node's expansion to builder b, writing `outputs`
    (names; "" for an output nobody reads)."""
    attrs = get_op(op).normalize_attrs(dict(attrs), len([i for i in inputs if i]))
    inputs = list(inputs) + [""] * (8 - len(inputs))
    types = [b.types[i] if i else None for i in inputs]
    consts = [b.constants.get(i) if i else None for i in inputs]
    cell, steps, batch, size = check_inputs(op, attrs, types, consts, name or op)
    em, D, H = Emitter(b), len(cell.directions), cell.hidden
    x, w, r, bias, seq, h0, c0, p = inputs
    if cell.layout:        # batch-major: work time-major inside
        x = em.op("Transpose", [x], perm=(1, 0, 2))
        h0, c0 = (em.op("Transpose", [s], perm=(1, 0, 2)) if s else s for s in (h0, c0))
    biases = [em.split(v, 0, [cell.gates * H] * 2) for v in _per_direction(em, bias, D, (2 * cell.gates * H,))] \
        if bias else [(None, None)] * D
    weights = [Weights(wd, rd, bd[0], bd[1], pd) for wd, rd, bd, pd in zip(
        _per_direction(em, w, D, (cell.gates * H, size)), _per_direction(em, r, D, (cell.gates * H, H)),
        biases, _per_direction(em, p, D, (3 * H,)))]
    masks = _masks(em, seq, steps, batch, x) if seq and not full_lengths(consts[4], steps) else None
    ys, hs, cs = cell_sequence(em, cell, em.reshape(x, (steps * batch, size)), steps, batch, weights,
                               _per_direction(em, h0, D, (batch, H)), _per_direction(em, c0, D, (batch, H)),
                               masks)
    y = em.concat([em.reshape(v, (steps, 1, batch, H)) for v in ys], 1)
    hn, cn = (em.concat([em.reshape(v, (1, batch, H)) for v in vs], 0) for vs in (hs, cs))
    if cell.layout:
        y = em.op("Transpose", [y], perm=(2, 0, 1, 3))
        hn, cn = (em.op("Transpose", [v], perm=(1, 0, 2)) for v in (hn, cn))
    for value, out in zip((y, hn, cn), outputs):
        if out:
            b.add_node("Identity", [value], outputs=[out], name=f"{name}/{out}")


# ----- after autodiff: an LSTM's input-weight gradient in its backward kernel -----

def _plain_transposed_a(node):
    """Gemm(A, B) = A^T B: no C, B untransposed, no scaling or epilogue."""
    at = node.attrs
    return node.op == "Gemm" and len(node.inputs) == 2 and at.get("transA") and not at.get("transB") and \
        at.get("alpha", 1.0) == 1.0 and at.get("beta", 1.0) == 1.0 and at.get("activation") is None


def fold_input_weight_gradients(graph):
    """Needs: Transposes folded into Gemm flags (gemm_transpose.py). Gives: an LSTM's
    input-projection weight gradient, Gemm(dgates, x, transA) over an LSTMSequenceGrad's
    dgates, computed by that LSTMSequenceGrad (x its tenth input, the product its sixth
    output) in the k blocks its dW_hh takes: the Gemm read dgates^T down its columns
    in one 534-row k block (rows 2 KiB apart: cache misses), 1.7 ms at 2 threads."""
    grads = {n.outputs[0]: n for n in graph.nodes if n.op == "LSTMSequenceGrad" and len(n.inputs) <= 9}
    folded = {}
    for node in graph.nodes:
        grad = grads.get(node.inputs[0]) if _plain_transposed_a(node) else None
        x = node.inputs[-1]
        if grad is not None and id(grad) not in folded and graph.types[x].rank == 2 and \
                graph.types[x].shape[0] == graph.types[node.inputs[0]].shape[0] and \
                graph.types[x].dtype == graph.types[node.inputs[0]].dtype:
            folded[id(grad)] = node
    if not folded:
        return graph
    gemms = {id(n) for n in folded.values()}
    nodes = []
    for node in graph.nodes:
        gemm = folded.get(id(node))
        if gemm is not None:
            node = Node(node.op, tuple(node.inputs) + ("",) * (9 - len(node.inputs)) + (gemm.inputs[1],),
                        tuple(node.outputs) + tuple(gemm.outputs), node.attrs, node.name)
        if id(node) not in gemms:
            nodes.append(node)
    return graph.with_nodes(nodes)


# ----- after the other passes: the recurrent weight packed once -----

def _reads_b_plainly(node, b, types):
    """A 2-D GEMM by b (Gemm without transposes, scaling or epilogue, or MatMul)
    that MatMulPacked computes the same way."""
    if node.inputs[1:2] != (b,) or b in node.inputs[:1] + node.inputs[2:] or types[b].rank != 2 or \
            types[node.inputs[0]].rank != 2:
        return False
    if node.op == "MatMul":
        return True
    at = node.attrs
    return node.op == "Gemm" and not at.get("transA") and not at.get("transB") and \
        at.get("alpha", 1.0) == 1.0 and at.get("beta", 1.0) == 1.0 and at.get("activation") is None


def pack_shared_weights(graph, target=None):
    """Gives: a float32 B that several GEMMs read and would each pack into panels
    (an unrolled recurrence's weight: one GEMM per step, forward and back) packed
    once, at compile time if constant, else by one PackPanels node before its
    first reader, and those GEMMs MatMulPacked over the panels (their bias C kept)."""
    from ..ir.types import DType, TensorType
    from ..lower.target import host_target
    from ..schedule.gemm import packs_b, panel_layout, prepack
    target = target or host_target(1)
    types, constants = dict(graph.types), dict(graph.constants)
    readers = {}
    for b, users in graph.consumers().items():
        if types[b].dtype != DType.float32 or types[b].rank != 2:
            continue
        k, n = types[b].shape
        chosen = [u for u in users if _reads_b_plainly(u, b, types) and types[u.inputs[0]].dtype == DType.float32
                  and packs_b(target, types[u.inputs[0]].shape[0], n, k, 4)]
        if len(chosen) >= 2:
            readers.update({id(u): b for u in chosen})
    if not readers:
        return graph
    packed, nodes = {}, []
    for node in graph.nodes:
        b = readers.get(id(node))
        if b is not None and b not in packed:
            packed[b] = f"{b}/panels"
            if b in constants:
                constants[packed[b]] = prepack(constants[b], target)
                shape = constants[packed[b]].shape
            else:
                k, n = types[b].shape
                kc, panel = panel_layout(k, target)
                nodes.append(Node("PackPanels", (b,), (packed[b],), {"kc": kc, "panel": panel}, f"{b}/pack"))
                shape = (-(-k // kc), -(-n // panel), kc, panel)
            types[packed[b]] = TensorType(types[b].dtype, shape)
        nodes.append(node if b is None else Node("MatMulPacked", (node.inputs[0], packed[b]) + node.inputs[2:3],
                                                 node.outputs, {"n": types[b].shape[1]}, node.name))
    return graph.with_nodes(nodes, constants=constants, types=types)
