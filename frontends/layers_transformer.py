"""Transformer blocks with PyTorch's submodule names (self_attn, linear1, norm1,
...), arguments and defaults, so torch state_dicts load as they are:
TransformerEncoderLayer, TransformerDecoderLayer, TransformerEncoder and
TransformerDecoder (stacks of deep copies of one layer), and Transformer."""
import copy

from . import functional as F
from .dsl import Module, next_seed
from .layers import Dropout, Linear
from .layers_attention import MultiheadAttention
from .layers_containers import ModuleList
from .layers_norm import LayerNorm

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}     # functions, as torch stores them


def _activation(activation):
    """'relu' / 'gelu' or a callable on Tensors (an ns.nn module or function)."""
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation should be relu/gelu, not {activation}")
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")
    return activation


class _Block(Module):
    """What both layers share: the feed-forward part and the attention call."""

    def _feed_forward_parts(self, d_model, dim_feedforward, dropout, activation, bias):
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.activation = _activation(activation)

    def _ff(self, x, drop):
        return drop(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    @staticmethod
    def _attend(attn, drop, q, kv, mask, padding, causal):
        out, _ = attn(q, kv, kv, attn_mask=mask, key_padding_mask=padding, need_weights=False,
                      is_causal=causal and mask is None)
        return drop(out)

    def _residuals(self, x, sublayers):
        """x through each (norm, sublayer) as a residual: normed before the sublayer
        (norm_first) or after the sum (PyTorch's default)."""
        for norm, sublayer in sublayers:
            x = x + sublayer(norm(x)) if self.norm_first else norm(x + sublayer(x))
        return x


class TransformerEncoderLayer(_Block):
    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first)
        self._feed_forward_parts(d_model, dim_feedforward, dropout, activation, bias)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        def sa(x):
            return self._attend(self.self_attn, self.dropout1, x, x, src_mask,
                                src_key_padding_mask, is_causal)
        return self._residuals(src, [(self.norm1, sa), (self.norm2, lambda x: self._ff(x, self.dropout2))])


class TransformerDecoderLayer(_Block):
    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first)
        self._feed_forward_parts(d_model, dim_feedforward, dropout, activation, bias)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1, self.dropout2, self.dropout3 = Dropout(dropout), Dropout(dropout), Dropout(dropout)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        def sa(x):
            return self._attend(self.self_attn, self.dropout1, x, x, tgt_mask,
                                tgt_key_padding_mask, tgt_is_causal)

        def cross(x):
            return self._attend(self.multihead_attn, self.dropout2, x, memory, memory_mask,
                                memory_key_padding_mask, memory_is_causal)
        return self._residuals(tgt, [(self.norm1, sa), (self.norm2, cross),
                                     (self.norm3, lambda x: self._ff(x, self.dropout3))])


def _clones(layer, n):
    """n deep copies (PyTorch's _get_clones), each dropout with its own mask stream."""
    copies = [copy.deepcopy(layer) for _ in range(n)]
    for c in copies:
        for _, mod in c.named_modules():
            for drop in (mod, getattr(mod, "_drop", None)):
                if isinstance(drop, Dropout):
                    drop.seed = next_seed()
    return ModuleList(copies)


class TransformerEncoder(Module):
    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x


class TransformerDecoder(Module):
    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x


class Transformer(Module):
    """torch.nn.Transformer: an encoder and a decoder stack, each ending in a
    LayerNorm; matrices Xavier-uniform as torch's _reset_parameters."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation="relu", custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True, device=None, dtype=None):
        super().__init__()
        common = dict(dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                      batch_first=batch_first, norm_first=norm_first, bias=bias)
        self.encoder = custom_encoder or TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, **common), num_encoder_layers,
            LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.decoder = custom_decoder or TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, **common), num_decoder_layers,
            LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        from .torch_init import xavier_uniform_
        for p in self.parameters():
            if len(p.shape) > 1:
                xavier_uniform_(p)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
                src_is_causal=None, tgt_is_causal=None, memory_is_causal=False):
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """float (sz, sz): 0 on and below the diagonal, -inf above (later positions hidden)."""
        from .torch_functions import full, triu
        return triu(full((sz, sz), float("-inf")), diagonal=1)


__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerDecoder", "Transformer"]
