"""AllReduceSum: the sum of a value over the ranks of a data-parallel job.

A marker for the distributed trainer (runtime/distributed_stages.py): the
training step is split into compiled stages at each AllReduceSum and the sum
runs over MPI between them (SyncBatchNorm's per-channel sums). Compiled or
evaluated in one process it is the sum over one rank: a copy. Its gradient is
again a sum over the ranks: every rank's loss depends on every rank's input."""
from .registry import gradient, register
from .shape_ops import copy_lower


def _reference(attrs, x):
    return x.copy()


register("AllReduceSum", lower=copy_lower, infer=lambda attrs, types, consts, node: [types[0]],
         reference=_reference, domain="nutshell")


@gradient("AllReduceSum")
def _all_reduce_grad(g, node, dys, wanted):
    """d(sum_r x_r)/dx_s = 1 for every s, so rank s's gradient sums every rank's dy."""
    return [g.op("AllReduceSum", [dys[0]])]
