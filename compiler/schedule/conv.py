"""The convolutions' variants (blocked layout, Winograd) per target, the sizes where
each pays, and the register
budgets of the blocked-channel convolutions (ops/blocked.py): how many
16-channel accumulators a tile keeps. A 16-channel block is one AVX-512 register
but two AVX2 ones (four NEON ones): the tile that fills AVX-512's 32 registers
spills on a narrower target every k step, so the budget is the target's."""
from ..lower.target import host_target
from .tables import table_for


def _table(target):
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


def winograd_pays_for(target, batch, out_hw, channels):
    """Whether a 3x3 stride-1 dense convolution (Winograd applies) of `channels` (in, out)
    to an `out_hw` map, `batch` images, is big enough for the 16 GEMMs to win."""
    t = _table(target)
    pixels = out_hw[0] * out_hw[1]
    even = out_hw[0] % 2 == 0 and out_hw[1] % 2 == 0 and batch * pixels >= 4 * t.winograd_min_batch_tiles
    return (pixels >= t.winograd_min_out_pixels or even) and min(channels) >= t.winograd_min_channels


def winograd_tile_columns(target, grad=False):
    """Tiles one step of Winograd's 16 GEMMs takes (the forward's n, the weight gradient's k)."""
    t = _table(target)
    return t.winograd_grad_tile_columns if grad else t.winograd_tile_columns


def winograd_band_min_ratio(target):
    """Batch 1 on several threads goes by bands of tile rows when tiles x (C + M) reaches
    this x C x M (each thread's V and M outweigh U, which every band reads whole)."""
    return _table(target).winograd_band_min_ratio


def batched_columns(target):
    """GEMM columns up to which a small map's images are batched side by side."""
    return _table(target).conv_batched_columns


def grad_weight_k(target):
    """The weight gradient's GEMM k: images per step until images x pixels reaches it."""
    return _table(target).grad_weight_k


def grad_weight_by_dots(target, im2col_rows):
    """Whether a weight gradient runs as dot products along the pixels (few im2col rows)."""
    return im2col_rows <= _table(target).grad_dot_max_rows


def col2im_by_phases(target, stride):
    """Whether a strided gradient's col2im goes by phases (stride-s stores) rather than gathers."""
    return stride <= _table(target).col2im_max_phase_stride


def stem_limits(target):
    """(most NCHW channels a blocked direct conv reads, fewest taps of a blocked pooled stem)."""
    t = _table(target)
    return t.stem_direct_max_channels, t.stem_min_taps
