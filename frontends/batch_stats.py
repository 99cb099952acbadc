"""Batch statistics over one rank's batch, or over every rank's (SyncBatchNorm).

compile_training(..., distributed="mpi", sync_batchnorm=True) traces the
training step inside `shared_by_ranks(K)`: BatchNorm's batch mean and variance
then sum per channel over the local batch, add those sums across the K ranks
(an AllReduceSum the distributed trainer runs over MPI) and divide by the global
count. The variance is taken about the global mean (two passes, as one process
computes it), so the statistics are those of the whole batch."""
from contextlib import contextmanager

from .dsl import apply

_RANKS = [1]     # ranks whose batches a BatchNorm traced now normalises together


@contextmanager
def shared_by_ranks(ranks):
    """Trace BatchNorm layers with statistics over `ranks` ranks' batches."""
    _RANKS.append(int(ranks))
    try:
        yield
    finally:
        _RANKS.pop()


def mean_over_batch(x, axes):
    """(mean over `axes` with keepdims, of a tensor shaped like x; element count
    per channel): the local ReduceMean, or the global one under shared_by_ranks."""
    ranks = _RANKS[-1]
    count = x.type.size // x.shape[1] * ranks
    if ranks == 1:
        return (lambda v: apply("ReduceMean", [v, axes], keepdims=1)), count

    def mean(v):
        local = apply("ReduceSum", [v, axes], keepdims=1)
        return apply("AllReduceSum", [local]) * (1.0 / count)
    return mean, count
