"""The variant step: which algorithm a convolution runs (direct im2col GEMM, images
batched into one GEMM, Winograd, depthwise) and the sizes that algorithm leaves
open (Winograd's tile columns, a weight gradient's k, col2im by phases), decided
once per node from its shape and the target's table, before lowering.
codegen/model.py's lower_nodes records the decision on the node's LowerContext
(`ctx.variant`) and the lowering reads it: no lowering asks the tables which
variant to run (tests/test_schedule_variants.py scans for that). An op says how
to describe itself here through its registry entry's `variant` hook
(ops/conv_common.py: conv_variant and friends)."""
from dataclasses import dataclass

from .conv import dense_accumulator_blocks, depthwise_row_tile, table_or_host
from .tables import table_for

DIRECT = "im2col-gemm"       # per image: im2col (none for 1x1) and the blocked GEMM
WINOGRAD = "winograd"        # F(2x2, 3x3): 16 GEMMs over transformed tiles
DEPTHWISE = "depthwise"      # one input channel per group: a direct window sum
ALGORITHMS = (DIRECT, WINOGRAD, DEPTHWISE)


@dataclass(frozen=True)
class ConvShape:
    """What the variant depends on, in the forward convolution's terms (a gradient
    describes the convolution it differentiates, or the one it computes)."""
    batch: int
    channels: tuple          # (in, out)
    kernel: tuple            # (kh, kw)
    strides: tuple
    dilations: tuple
    group: int
    out_hw: tuple
    weights_precise: bool = True     # constant weights Winograd's rounding keeps near the direct sum
    dy_hw: tuple = ()        # the forward's output map (dY's: an input gradient's GEMM columns)
    constant_weights: bool = False   # weights known at compile time (transformed once: passes/winograd.py)


@dataclass(frozen=True)
class ConvVariant:
    algorithm: str
    tile_columns: int = 0        # Winograd: tiles one step of the 16 GEMMs takes (V and M near L2)
    band_min_ratio: int = 0      # Winograd, batch 1 on threads: bands of tile rows from this ratio
    band_max_weights: int = 0    # ... or up to this many in x out channels
    batched_columns: int = 0     # direct (and dX): a small map's images share one GEMM up to this many columns
    grad_k: int = 0              # weight gradient: images per step until images x pixels reaches this
    by_dots: bool = False        # weight gradient: dot products along the pixels (few im2col rows)
    col2im_phases: bool = False  # input gradient: col2im by phases (strided stores), not gathers
    dot_tile: tuple = (1, 1)     # weight gradient by dots: (rows, columns) of dot products at once
    channels_last: tuple = ()    # Winograd with run-time weights on a small map: (kc, panel) of the
    # transformed weights' panels when the transforms run along the channels (ops/winograd_small.py)
    out_tile: int = 2            # ... and their tiles: F(out_tile x out_tile, 3x3)

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown convolution algorithm {self.algorithm!r}")


def winograd_applies(shape: ConvShape):
    """Winograd F(2x2, 3x3) computes this convolution: 3x3, stride 1, dense."""
    return tuple(shape.kernel) == (3, 3) and tuple(shape.strides) == (1, 1) and \
        tuple(shape.dilations) == (1, 1) and shape.group == 1


def winograd_pays_for(target, shape: ConvShape):
    """Whether the 16 GEMMs win on `target` for this convolution's sizes."""
    t = table_or_host(target)
    pixels = shape.out_hw[0] * shape.out_hw[1]
    even = shape.out_hw[0] % 2 == 0 and shape.out_hw[1] % 2 == 0 and \
        shape.batch * pixels >= 4 * t.winograd_min_batch_tiles
    small = shape.batch * pixels <= t.winograd_small_map_pixels and \
        shape.channels[0] * shape.channels[1] <= t.winograd_small_map_max_weights and \
        not (t.winograd_constant_f4_small_maps and _constant_f4(target, shape))
    return (pixels >= t.winograd_min_out_pixels or even) and min(shape.channels) >= t.winograd_min_channels \
        and not small


def takes_winograd(target, shape: ConvShape):
    t = table_or_host(target)
    return t.winograd and shape.weights_precise and winograd_applies(shape) and winograd_pays_for(target, shape)


def _winograd(target, grad=False, shape=None):
    t = table_or_host(target)
    # the forward and dX along the channels take the table's tiles (the weight
    # gradient's transforms are F(2x2)'s only)
    tile = 2 if grad else t.winograd_channels_last_tile
    ratio = (t.winograd_constant_f4_weight_ratio if shape is not None and shape.constant_weights and
             t.winograd_constant_f4 else t.winograd_f4_weight_ratio)
    if tile != 2 and shape is not None and shape.batch * _tiles(shape, tile) * ratio < \
            shape.channels[0] * shape.channels[1]:
        tile = 2     # too few tiles to read F(4x4)'s 2.25x larger transformed weights for
    panels = _channels_last(target, shape, tile) if shape is not None else ()
    if shape is not None and shape.constant_weights and (tile != 4 or not t.winograd_constant_f4):
        panels = ()  # constant weights along the tile rows at F(2x2): 1 x 256 on 14x14 1.06x along the channels
    return ConvVariant(WINOGRAD, tile_columns=t.winograd_grad_tile_columns if grad else t.winograd_tile_columns,
                       band_min_ratio=t.winograd_band_min_ratio, band_max_weights=t.winograd_band_max_weights,
                       channels_last=panels, out_tile=tile if panels else 2)


def _constant_f4(target, shape: ConvShape):
    """Whether constant weights would run F(4x4) along the channels (_winograd's rule)."""
    return shape.constant_weights and _winograd(target, shape=shape).out_tile == 4


def _tiles(shape: ConvShape, tile):
    return -(-shape.out_hw[0] // tile) * -(-shape.out_hw[1] // tile)


def _channels_last(target, shape: ConvShape, tile=2):
    """(kc, panel) of the transformed weights' panels where a map's rows of `tile`-wide
    tiles are at most the table's winograd_channels_last_row_tiles (ops/winograd_small.py)
    and the panels tile the channels exactly; else ()."""
    from ..lower.target import host_target
    from .gemm import panel_layout
    t = table_or_host(target)
    most = t.winograd_constant_f4_row_tiles if shape.constant_weights and tile == 4 else \
        t.winograd_channels_last_row_tiles
    if not t.winograd_channels_last or -(-shape.out_hw[1] // tile) > most:
        return ()
    c_in, m_out = shape.channels
    kc, panel = panel_layout(c_in, target if target is not None else host_target(1))    # None: a pass's host
    return (kc, panel) if c_in % kc == 0 and m_out % panel == 0 else ()


def choose_conv_variant(shape: ConvShape, target) -> ConvVariant:
    """A forward convolution's variant (Conv; WinogradConv is Winograd already)."""
    if shape.group > 1 and shape.channels[0] == shape.group:
        return ConvVariant(DEPTHWISE)
    if takes_winograd(target, shape):
        return _winograd(target, shape=shape)
    pixels = shape.out_hw[0] * shape.out_hw[1]
    batched = table_or_host(target).conv_batched_columns
    shares = shape.group == 1 and shape.batch > 1 and 2 * pixels <= batched
    return ConvVariant(DIRECT, batched_columns=batched if shares else 0)


def choose_grad_input_variant(shape: ConvShape, target) -> ConvVariant:
    """dX of the convolution `shape` describes (ConvGradInput, ConvTranspose): Winograd
    on dY with the flipped weights (the same sizes as the forward's), else the
    transposed GEMM and col2im."""
    if takes_winograd(target, shape):
        return _winograd(target, shape=shape)
    t = table_or_host(target)
    stride = shape.strides[1]
    phases = tuple(shape.strides) != (1, 1) and stride <= t.col2im_max_phase_stride
    pixels = shape.dy_hw[0] * shape.dy_hw[1] if shape.dy_hw else 0
    shares = shape.group == 1 and shape.batch > 1 and 0 < 2 * pixels <= t.grad_input_batched_columns
    return ConvVariant(DIRECT, col2im_phases=phases, batched_columns=t.grad_input_batched_columns if shares else 0)


def choose_grad_weight_variant(shape: ConvShape, target) -> ConvVariant:
    """dW of the convolution `shape` describes: Winograd's 16 GEMMs along the tiles,
    else im2col and a GEMM (or dot products for few rows) along the pixels."""
    if takes_winograd(target, shape):
        return _winograd(target, grad=True, shape=shape)
    t = table_or_host(target)
    rows = shape.channels[0] // shape.group * shape.kernel[0] * shape.kernel[1]
    by_dots = rows <= t.grad_dot_max_rows
    tile = (t.dot_mr, t.dot_nr) if by_dots else (1, 1)
    k = t.grad_weight_k if by_dots else t.grad_gemm_k
    return ConvVariant(DIRECT, grad_k=k, by_dots=by_dots, dot_tile=tile)


def winograd_conv_variant(target) -> ConvVariant:
    """WinogradConv (the pass made it: passes/winograd.py asked choose_conv_variant)."""
    return _winograd(target)


@dataclass(frozen=True)
class BlockedTile:
    """The register tile of a blocked-channel convolution (ops/blocked.py's ConvBlocked)."""
    pixels: int = 1          # dense: output pixels of a row per tile (R)
    blocks: int = 1          # dense: 16-channel output blocks per tile (B): each weight load serves R rows
    row_tile: int = 1        # depthwise: outputs of a row summed at once (independent FMA chains)


def choose_blocked_tile(target, depthwise, out_blocks, row) -> BlockedTile:
    """`row` outputs of a row (a pointwise conv's whole map), `out_blocks` blocks: B the
    largest divisor of the blocks up to the target's blocked_dense_max_blocks and up to half its accumulator
    budget (each weight load serves two rows or more), R a divisor of the row up to
    what the budget leaves, unless a poor one."""
    if depthwise:
        return BlockedTile(row_tile=depthwise_row_tile(target))
    budget = dense_accumulator_blocks(target)      # the target's registers, in blocks
    most = min(table_for(target).blocked_dense_max_blocks, max(1, budget // 2))
    group = max(d for d in range(1, most + 1) if out_blocks % d == 0)
    cap = min(row, max(1, budget // group))
    rows = max(d for d in range(1, cap + 1) if row % d == 0)
    return BlockedTile(pixels=rows if 2 * rows >= cap else cap, blocks=group)
