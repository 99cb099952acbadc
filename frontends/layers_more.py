"""Small PyTorch layers user code reaches for, each a thin module over the
functional form (or over Embedding): ReLU6, Hardtanh, CosineSimilarity,
PairwiseDistance, AdaptiveMaxPool2d, Softmax2d, PixelShuffle, EmbeddingBag,
ParameterList."""
from . import functional as F
from .dsl import Module, Parameter
from .layers_norm import Embedding


def _wrap(name, fn, *fields, **defaults):
    """A module whose forward is fn(*inputs, **its constructor arguments)."""
    keys = list(fields) + [k for k in defaults if k not in fields]

    def __init__(self, *args, **kwargs):
        Module.__init__(self)
        kwargs.pop("inplace", None)          # the same values out
        values = dict(defaults, **dict(zip(keys, args)), **kwargs)
        unknown = set(values) - set(keys)
        if unknown:
            raise TypeError(f"{name}() got unexpected argument(s) {sorted(unknown)}")
        missing = [k for k in fields if k not in values]
        if missing:
            raise TypeError(f"{name}() needs {missing}")
        self.options = values

    def forward(self, *inputs):
        return fn(*inputs, **self.options)
    return type(name, (Module,), {"__init__": __init__, "forward": forward})


ReLU6 = _wrap("ReLU6", F.relu6)
Hardtanh = _wrap("Hardtanh", F.hardtanh, min_val=-1.0, max_val=1.0)
CosineSimilarity = _wrap("CosineSimilarity", F.cosine_similarity, dim=1, eps=1e-8)
PairwiseDistance = _wrap("PairwiseDistance", F.pairwise_distance, p=2.0, eps=1e-6, keepdim=False)
AdaptiveMaxPool2d = _wrap("AdaptiveMaxPool2d", F.adaptive_max_pool2d, "output_size", return_indices=False)
Softmax2d = _wrap("Softmax2d", lambda x: F.softmax(x, dim=-3))
PixelShuffle = _wrap("PixelShuffle", F.pixel_shuffle, "upscale_factor")


class EmbeddingBag(Embedding):
    """Embedding rows pooled over each bag: input [B, L] of ids, mode "mean"
    (default), "sum" or "max". Bags given as 1-D ids with offsets are not supported."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, mode="mean", sparse=False, _weight=None,
                 include_last_offset=False, padding_idx=None):
        if mode not in ("mean", "sum", "max"):
            raise ValueError(f"EmbeddingBag mode must be 'mean', 'sum' or 'max', got {mode!r}")
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type,
                         scale_grad_by_freq, sparse, _weight)
        self.mode = mode

    def forward(self, indices, offsets=None, per_sample_weights=None):
        if offsets is not None or per_sample_weights is not None or indices.ndim != 2:
            raise ValueError("EmbeddingBag takes [bags, length] ids; offsets and per_sample_weights "
                             "are not supported (pad the bags to one length)")
        rows = super().forward(indices)
        if self.padding_idx is not None:     # torch leaves the padding ids out of each bag
            if self.mode == "max":
                raise ValueError("EmbeddingBag(mode='max') with padding_idx is not supported")
            keep = (indices != self.padding_idx).unsqueeze(-1).float()
            total = (rows * keep).sum(1)
            return total if self.mode == "sum" else total / keep.sum(1).clamp(min=1.0)
        return {"mean": rows.mean, "sum": rows.sum, "max": rows.amax}[self.mode](1)


class ParameterList(Module):
    def __init__(self, values=None):
        super().__init__()
        for v in values or ():
            self.append(v)

    def append(self, value):
        setattr(self, str(len(self._parameters)), value if isinstance(value, Parameter) else Parameter(value))
        return self

    def __getitem__(self, i):
        return list(self._parameters.values())[i]

    def __iter__(self):
        return iter(self._parameters.values())

    def __len__(self):
        return len(self._parameters)


__all__ = ["ReLU6", "Hardtanh", "CosineSimilarity", "PairwiseDistance", "AdaptiveMaxPool2d", "Softmax2d",
           "PixelShuffle", "EmbeddingBag", "ParameterList"]
