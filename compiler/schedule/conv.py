"""Register budgets of the blocked-channel convolutions (ops/blocked.py): how many
16-channel accumulators a tile keeps. A 16-channel block is one AVX-512 register
but two AVX2 ones (four NEON ones): the tile that fills AVX-512's 32 registers
spills on a narrower target every k step, so the budget is the target's."""
from .tables import table_for


def dense_accumulator_blocks(target):
    """16-channel accumulators of a pointwise/dense tile (pixels x output blocks)."""
    return table_for(target).blocked_dense_accumulators


def depthwise_row_tile(target):
    """Outputs of a row a depthwise kernel sums at once (independent FMA chains)."""
    return table_for(target).depthwise_row_tile
