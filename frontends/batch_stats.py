"""Batch statistics over one rank's batch, or over every rank's (SyncBatchNorm).

compile_training(..., distributed="mpi", sync_batchnorm=True) traces the
training step inside `shared_by_ranks(K)`: BatchNorm's batch mean and variance
then come from per-channel sums of (x - shift) and (x - shift)^2 over the local
batch, added across the K ranks by one AllReduceSum (which the distributed
trainer runs over MPI; its gradient is one more in the backward pass, as
PyTorch's SyncBatchNorm has one all-gather forward and one all-reduce backward).
The sums are float64 and shifted by the running mean (the same on every rank),
so E[d^2] - E[d]^2 loses nothing to cancellation that a float32 two-pass
variance would keep.

On one rank, a BatchNorm over an input of rank >= 3 is one BatchNormTrain op
(compiler/ops/batchnorm_train.py: statistics, normalisation and, through its
gradient rule, a fused backward); elsewhere (rank 2, several ranks) the layer is
composed from primitives."""
from contextlib import contextmanager

import numpy as np

from .dsl import apply, constant

_RANKS = [1]     # ranks whose batches a BatchNorm traced now normalises together
DOUBLE = 11      # ONNX's float64


@contextmanager
def shared_by_ranks(ranks):
    """Trace BatchNorm layers with statistics over `ranks` ranks' batches."""
    _RANKS.append(int(ranks))
    try:
        yield
    finally:
        _RANKS.pop()


def batch_moments(x, axes, shift=None):
    """(mean, x - mean, biased variance, element count per channel) over the batch
    and spatial axes (mean and variance shaped [1, C, 1, ...]): this rank's batch,
    or every rank's under shared_by_ranks. `shift`: a per-channel value equal on
    every rank near the mean (the running mean), or None (zero)."""
    ranks = _RANKS[-1]
    count = x.type.size // x.shape[1] * ranks
    if ranks == 1:
        mean = apply("ReduceMean", [x, axes], keepdims=1)
        centered = x - mean
        return mean, centered, apply("ReduceMean", [centered * centered, axes], keepdims=1), count
    per_channel = (1, x.shape[1]) + (1,) * (len(x.shape) - 2)
    shift = (shift.reshape(per_channel) if shift is not None else
             constant(x.builder, np.zeros(per_channel, np.float32)))
    d = apply("Cast", [x - shift], to=DOUBLE)
    local = apply("Concat", [apply("ReduceSum", [d, axes], keepdims=1),
                             apply("ReduceSum", [d * d, axes], keepdims=1)], axis=0)
    moments = apply("AllReduceSum", [local]) * (1.0 / count)
    first, second = (apply("Slice", [moments, constant(x.builder, np.array([i], np.int64)),
                                     constant(x.builder, np.array([i + 1], np.int64)),
                                     constant(x.builder, np.array([0], np.int64))]) for i in (0, 1))
    mean = apply("Cast", [first], to=1) + shift
    var = apply("Cast", [second - first * first], to=1)
    return mean, x - mean, var, count


def fused_batch_norm(x, weight, bias, eps):
    """(y, batch mean [C], biased batch variance [C], count) as one BatchNormTrain
    node, or None where the composed form is kept: several ranks' statistics, or an
    input of rank 2, whose strided channels the per-channel kernel reads badly."""
    if _RANKS[-1] != 1 or len(x.shape) < 3:
        return None
    y, mean, var = apply("BatchNormTrain", [x, weight, bias], outputs=3, epsilon=float(eps))
    return y, mean, var, x.type.size // x.shape[1]
