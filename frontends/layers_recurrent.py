"""nn.LSTM, nn.GRU and nn.RNN with PyTorch's arguments, parameter names and
layouts (weight_ih_l0 [G*H, in], weight_hh_l0, bias_ih_l0, bias_hh_l0, the
`_reverse` ones; gates i,f,g,o and r,z,n), built by the same primitive expansion
as ONNX's cells (compiler/passes/recurrent.py), so they train through the
primitives' gradient rules. PyTorch's GRU is ONNX's with linear_before_reset."""
import numpy as np

from nutshell.compiler.ops.recurrent import GATES, Activation, Cell, check_steps
from nutshell.compiler.passes.recurrent import Emitter, Weights, cell_sequence
from .dsl import Module, Parameter, Tensor, apply, next_seed

TORCH_ORDER = {"LSTM": "ifco", "GRU": "rzh", "RNN": "i"}   # g is ONNX's c, n its h
_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"),
                "tanh": ("Tanh",), "relu": ("Relu",)}


class _Recurrent(Module):
    op = None

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, nonlinearity=None):
        super().__init__()
        if min(input_size, hidden_size, num_layers) <= 0:
            raise ValueError(f"{self.op}: input_size, hidden_size and num_layers must be positive, "
                             f"got {input_size}, {hidden_size}, {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        self.seeds = [next_seed() for _ in range(num_layers - 1)]     # dropout masks between layers
        acts = tuple(Activation(a, ()) for a in _ACTIVATIONS[nonlinearity or self.op])
        dirs = ("forward", "reverse") if bidirectional else ("forward",)
        self.cell = Cell(self.op, hidden_size, dirs, (acts,) * len(dirs), None, 0,
                         linear_before_reset=int(self.op == "GRU"))
        bound = 1.0 / np.sqrt(hidden_size)      # PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for all
        init = lambda rng, shape: rng.uniform(-bound, bound, shape)
        gh = GATES[self.op] * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * len(dirs)
            for sfx in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{sfx}", Parameter((gh, width), init))
                setattr(self, f"weight_hh_l{layer}{sfx}", Parameter((gh, hidden_size), init))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{sfx}", Parameter((gh,), init))
                    setattr(self, f"bias_hh_l{layer}{sfx}", Parameter((gh,), init))

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def _weights(self, b, layer):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.bias else ("weight_ih", "weight_hh")
        return [Weights(*(self.param(b, getattr(self, f"{n}_l{layer}{sfx}")).name for n in names))
                for sfx in self._suffixes()]

    def _states(self, em, state, batch):
        """[L*D, B, H] -> per layer, per direction [B, H] (None: zeros)."""
        num = self.num_layers * len(self._suffixes())
        if state is None:
            return [None] * num
        if tuple(state.shape) != (num, batch, self.hidden_size):
            raise ValueError(f"{self.op} state of shape {tuple(state.shape)}, expected "
                             f"{(num, batch, self.hidden_size)}")
        return [em.reshape(s, (batch, self.hidden_size)) for s in em.split(state.name, 0, [1] * num)]

    def _dropout(self, b, x2d, layer):
        if not (self.dropout and self.training and b.trace.training) or layer == self.num_layers - 1:
            return x2d
        step = b.trace.step
        mask = b.add_node("DropoutMask", [step], {"ratio": self.dropout, "seed": self.seeds[layer],
                                                  "shape": tuple(b.types[x2d].shape)})
        return b.add_node("Mul", [x2d, mask])

    def forward(self, x, state=None):
        """x [T, B, I] ([B, T, I] batch_first; [T, I] unbatched) -> (output, h_n), LSTM's
        (output, (h_n, c_n)); a given state is h_0 (LSTM: the pair (h_0, c_0))."""
        b, em = x.builder, Emitter(x.builder)
        unbatched = len(x.shape) == 2
        if unbatched:      # a batch of one in the middle
            x = Tensor(b, em.reshape(x.name, (x.shape[0], 1, x.shape[1])))
            state = None if state is None else tuple(
                Tensor(b, em.reshape(s.name, (s.shape[0], 1, s.shape[1]))) for s in _as_tuple(state))
        elif self.batch_first:
            x = apply("Transpose", [x], perm=(1, 0, 2))
        if len(x.shape) != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{self.op} expects input of [seq, batch, {self.input_size}], got {x.shape}")
        steps, batch = x.shape[:2]
        check_steps(self.op, steps, batch, type(self).__name__)
        h0, c0 = (_as_tuple(state) + (None, None))[:2] if state is not None else (None, None)
        h0s, c0s = self._states(em, h0, batch), self._states(em, c0, batch)
        x2d, hs, cs, nd = em.reshape(x.name, (steps * batch, self.input_size)), [], [], len(self._suffixes())
        for layer in range(self.num_layers):
            ys, h, c = cell_sequence(em, self.cell, x2d, steps, batch, self._weights(b, layer),
                                     h0s[layer * nd:(layer + 1) * nd], c0s[layer * nd:(layer + 1) * nd],
                                     order=TORCH_ORDER[self.op])
            x2d = self._dropout(b, em.concat(ys, 1), layer)
            hs += h
            cs += c
        out = em.reshape(x2d, (steps, batch, nd * self.hidden_size))
        if self.batch_first and not unbatched:
            out = em.op("Transpose", [out], perm=(1, 0, 2))
        h_n, c_n = (em.concat([em.reshape(v, (1, batch, self.hidden_size)) for v in vs], 0) for vs in (hs, cs))
        if unbatched:
            out, h_n, c_n = (em.reshape(v, tuple(d for i, d in enumerate(b.types[v].shape) if i != 1))
                             for v in (out, h_n, c_n))
        out, h_n, c_n = (Tensor(b, v) for v in (out, h_n, c_n))
        return (out, (h_n, c_n)) if self.op == "LSTM" else (out, h_n)


def _as_tuple(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


class LSTM(_Recurrent):
    op = "LSTM"


class GRU(_Recurrent):
    op = "GRU"


class RNN(_Recurrent):
    op = "RNN"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN nonlinearity must be 'tanh' or 'relu', got '{nonlinearity}'")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, nonlinearity)
