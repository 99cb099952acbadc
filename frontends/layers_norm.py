"""Normalisation and lookup layers with PyTorch's parameters: LayerNorm,
GroupNorm, Embedding. The norms are nn.functional's compositions of reductions
and arithmetic, so their gradients come from those primitives' rules."""
import numpy as np

from . import functional as F
from .dsl import Module, Parameter, apply
from .init import ones, zeros
from .layers_ops import like, reshape


def _normal(rng, shape):
    return rng.normal(0.0, 1.0, shape)


class LayerNorm(Module):
    """Normalise over the last len(normalized_shape) dims; per-element weight and bias."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or min(shape) <= 0:
            raise ValueError(f"LayerNorm normalized_shape must be positive sizes, got {normalized_shape}")
        self.normalized_shape, self.eps = tuple(int(d) for d in shape), float(eps)
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(self.normalized_shape, ones) if elementwise_affine else None
        self.bias = Parameter(self.normalized_shape, zeros) if elementwise_affine and bias else None

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")

    def forward(self, x):
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm{self.normalized_shape} cannot normalise input {x.shape}")
        b = x.builder
        weight = self.param(b, self.weight) if self.weight is not None else None
        bias = self.param(b, self.bias) if self.bias is not None else None
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class GroupNorm(Module):
    """Normalise each of num_groups channel groups over (channels in group, spatial)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_groups <= 0 or num_channels <= 0 or num_channels % num_groups:
            raise ValueError(f"num_channels={num_channels} must be divisible by num_groups={num_groups}")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, float(eps)
        self.weight = Parameter((num_channels,), ones) if affine else None
        self.bias = Parameter((num_channels,), zeros) if affine else None

    def extra_repr(self):
        affine = self.weight is not None
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={affine}, bias={affine}"

    def forward(self, x):
        if len(x.shape) < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm over {self.num_channels} channels got input {x.shape}")
        b = x.builder
        weight = self.param(b, self.weight) if self.weight is not None else None
        bias = self.param(b, self.bias) if self.bias is not None else None
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)


class Embedding(Module):
    """Rows of `weight` [num_embeddings, embedding_dim] picked by int64 indices.
    padding_idx's row starts at zero and gets no gradient, as in PyTorch."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None):
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(f"Embedding sizes must be positive, got {num_embeddings} x {embedding_dim}")
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise ValueError("Embedding's max_norm, scale_grad_by_freq and sparse are not supported")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx {padding_idx} is outside {num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx

        def init(rng, shape):
            w = _normal(rng, shape) if _weight is None else np.asarray(_weight)
            if padding_idx is not None:
                w[padding_idx] = 0.0
            return w
        self.weight = Parameter((num_embeddings, embedding_dim), init)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, **kwargs):
        """An Embedding holding `embeddings` [num, dim] (a NumPy array), frozen unless freeze=False."""
        table = np.array(embeddings, dtype=np.float32)
        if table.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained takes a 2-D table, got shape {table.shape}")
        layer = cls(*table.shape, padding_idx=padding_idx, **kwargs)
        layer.weight.data = table            # as given: torch keeps the padding row's values
        layer.weight.requires_grad = not freeze
        return layer

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")

    def forward(self, indices):
        if indices.dtype.is_float:
            raise ValueError(f"Embedding takes integer indices, got {indices.dtype}")
        w = self.param(indices.builder, self.weight)
        rows = apply("Gather", [w, indices], axis=0)
        if self.padding_idx is None or not self.training_now(indices):
            return rows
        # The padding row reads as its (constant) value and passes no gradient back.
        pad = apply("Equal", [indices, like(indices, self.padding_idx)])
        pad = reshape(pad, tuple(indices.shape) + (1,))
        fixed = like(rows, self.weight.data[self.padding_idx])
        return apply("Where", [pad, fixed, rows])


__all__ = ["LayerNorm", "GroupNorm", "Embedding"]
