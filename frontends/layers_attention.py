"""MultiheadAttention with PyTorch's parameters (in_proj_weight [3E, E],
in_proj_bias, out_proj) and call: (query, key, value, key_padding_mask,
need_weights, attn_mask, average_attn_weights, is_causal) -> (output, weights).

Masks are NumPy arrays (baked in as constants) or traced Tensors: bool masks mark
the positions that may NOT be attended (True = masked), float masks are added to
the scores, as in PyTorch."""
import numpy as np

from nutshell.compiler.ir.types import DType

from .dsl import Module, Parameter, Tensor, apply
from .init import xavier_uniform, zeros
from .layers import Dropout, Linear
from .layers_ops import as_tensor, ints, like, narrow, reshape, transpose


class NonDynamicallyQuantizableLinear(Linear):
    """torch's name for MultiheadAttention.out_proj (a plain Linear), so print(net) agrees."""

    def extra_repr(self):
        from .module_repr import EXTRA
        return EXTRA["Linear"](self)


class MultiheadAttention(Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if add_bias_kv or add_zero_attn:
            raise ValueError("MultiheadAttention's add_bias_kv and add_zero_attn are not supported")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.batch_first, self.dropout = batch_first, float(dropout)
        self.same_dims = self.kdim == embed_dim and self.vdim == embed_dim
        if self.same_dims:
            self.in_proj_weight = Parameter((3 * embed_dim, embed_dim), xavier_uniform)
        else:
            self.q_proj_weight = Parameter((embed_dim, embed_dim), xavier_uniform)
            self.k_proj_weight = Parameter((embed_dim, self.kdim), xavier_uniform)
            self.v_proj_weight = Parameter((embed_dim, self.vdim), xavier_uniform)
        self.in_proj_bias = Parameter((3 * embed_dim,), zeros) if bias else None
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias)
        if bias:
            self.out_proj.bias = Parameter((embed_dim,), zeros)
        object.__setattr__(self, "_drop", Dropout(self.dropout))   # not in torch's state_dict

    def _project(self, x, which):
        """x @ W_which^T + b_which, W_which a third of in_proj_weight (q, k, v)."""
        b, e = x.builder, self.embed_dim
        if self.same_dims:
            w = narrow(self.param(b, self.in_proj_weight), 0, which * e, (which + 1) * e)
        else:
            w = self.param(b, (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[which])
        y = apply("MatMul", [x, apply("Transpose", [w])])
        if self.in_proj_bias is not None:
            y = y + narrow(self.param(b, self.in_proj_bias), 0, which * e, (which + 1) * e)
        return y

    def _heads(self, x):
        """[N, L, E] -> [N, H, L, D]."""
        n, length, _ = x.shape
        return transpose(reshape(x, (n, length, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if not self.batch_first:               # [L, N, E] -> [N, L, E]
            query, key, value = (transpose(t, (1, 0, 2)) for t in (query, key, value))
        for t, dim, what in ((query, self.embed_dim, "query"), (key, self.kdim, "key"),
                             (value, self.vdim, "value")):
            if len(t.shape) != 3 or t.shape[2] != dim:
                raise ValueError(f"MultiheadAttention {what} must be [N, L, {dim}], got {t.shape}")
        n, length, _ = query.shape
        source = key.shape[1]
        q = self._heads(self._project(query, 0)) * (1.0 / float(np.sqrt(self.head_dim)))
        k = self._heads(self._project(key, 1))
        v = self._heads(self._project(value, 2))
        scores = apply("MatMul", [q, transpose(k, (0, 1, 3, 2))])            # [N, H, L, S]
        if attn_mask is None and is_causal:
            attn_mask = np.triu(np.ones((length, source), bool), 1)
        mask = self._additive_mask(query, attn_mask, key_padding_mask, n, length, source)
        if mask is not None:
            scores = scores + mask
        weights = apply("Softmax", [scores], axis=-1)
        object.__setattr__(self._drop, "training", self.training)
        attended = self._drop(weights) if self.dropout > 0 else weights
        out = transpose(apply("MatMul", [attended, v]), (0, 2, 1, 3))        # [N, L, H, D]
        out = self.out_proj(reshape(out, (n, length, self.embed_dim)))
        if not self.batch_first:
            out = transpose(out, (1, 0, 2))
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = apply("ReduceMean", [weights, ints(weights, [1])], keepdims=0)
        return out, weights

    def _additive_mask(self, ref, attn_mask, key_padding_mask, n, length, source):
        """attn_mask ([L, S] or [N*H, L, S]) and key_padding_mask ([N, S]) as one float
        term broadcasting against the [N, H, L, S] scores."""
        total = None
        if attn_mask is not None:
            m = _additive(ref, attn_mask)
            if tuple(m.shape) == (n * self.num_heads, length, source):
                m = reshape(m, (n, self.num_heads, length, source))
            elif tuple(m.shape) != (length, source):
                raise ValueError(f"attn_mask must be [{length}, {source}] or "
                                 f"[{n * self.num_heads}, {length}, {source}], got {m.shape}")
            total = m
        if key_padding_mask is not None:
            m = _additive(ref, key_padding_mask)
            if tuple(m.shape) != (n, source):
                raise ValueError(f"key_padding_mask must be [{n}, {source}], got {m.shape}")
            m = reshape(m, (n, 1, 1, source))
            total = m if total is None else total + m
        return total


def _additive(ref, mask):
    """A bool mask (True = masked) as 0 / -inf; a float mask as it is."""
    if not isinstance(mask, Tensor):
        array = np.asarray(mask)
        if array.dtype == bool:
            array = np.where(array, -np.inf, 0.0)
        return as_tensor(ref, array.astype(np.float32))
    if mask.dtype.is_float:
        return mask
    if mask.dtype != DType.bool:
        raise ValueError(f"attention masks must be bool or float, got {mask.dtype}")
    return apply("Where", [mask, like(ref, -np.inf), like(ref, 0.0)])


__all__ = ["MultiheadAttention"]
