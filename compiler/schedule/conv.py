"""Whether the graph passes rewrite convolutions for a variant (blocked layout,
Winograd) on a target (each convolution's own variant: variants.py), and the register
budgets of the blocked-channel convolutions (ops/blocked.py): how many
16-channel accumulators a tile keeps. A 16-channel block is one AVX-512 register
but two AVX2 ones (four NEON ones): the tile that fills AVX-512's 32 registers
spills on a narrower target every k step, so the budget is the target's."""
from ..lower.target import host_target
from .tables import table_for


def table_or_host(target):
    """The target's table; None: this CPU's (a pass run without a target)."""
    return table_for(target if target is not None else host_target(1))


def blocked_layout_pays(target):
    """Whether the layout pass puts MobileNet-style regions in 16-channel blocks."""
    return table_for(target).blocked_layout


def winograd_pays(target):
    """Whether eligible 3x3 stride-1 convolutions run as Winograd F(2x2, 3x3)."""
    return table_for(target).winograd


def dense_accumulator_blocks(target):
    """16-channel accumulators of a pointwise/dense tile (pixels x output blocks)."""
    return table_for(target).blocked_dense_accumulators


def depthwise_row_tile(target):
    """Outputs of a row a depthwise kernel sums at once (independent FMA chains)."""
    return table_for(target).depthwise_row_tile


def stem_limits(target):
    """(most NCHW channels a blocked direct conv reads, fewest taps of a blocked pooled stem)."""
    t = table_or_host(target)
    return t.stem_direct_max_channels, t.stem_min_taps
