"""One table of scheduling thresholds per target, each value with the measurement
that chose it. Lowerings and the graph passes never hold a threshold of their
own: they ask compiler/schedule/ (loops.py, gemm.py, conv.py, variants.py), which reads the
target's table here; a convolution's variant and register tile reach its lowering
decided (ctx.variant, variants.py), a GEMM's tile and packing as gemm_plan's record. A target's description (CpuTarget.description) names its
table and SCHEDULE_VERSION, so every cache key changes when a table does.

Measured on this project's host (AVX-512, 2 cores) unless a comment says more;
the AVX2 column was measured there too with AVX-512 switched off (vector_cap=256,
benchmarks/schedules.py). Values no one has measured for a target say so."""
import hashlib
from dataclasses import astuple, dataclass, replace

SCHEDULE_VERSION = 1     # bump when a table changes the code it schedules


@dataclass(frozen=True)
class ScheduleTable:
    name: str
    # --- parallel loops (a fork/join of nutshell's pool: ~4 us) --------------------
    parallel_min_work: int         # elements of a map/reduce/pool below which a loop stays serial
    depthwise_parallel_min_work: int   # multiply-adds of a blocked depthwise conv
    winograd_parallel_min_tiles: int   # channels x 4x4 tiles of a Winograd transform
    col2im_parallel_min_work: int  # elements of a gradient's col2im scatter per channel
    # --- GEMM: register tile, blocking, packing (schedule/gemm.py) -----------------
    gemm_mr: int                   # rows of accumulators
    gemm_nr_vectors: int           # columns of accumulators, in vectors
    gemm_parallel_min_macs: int    # multiply-adds below which a GEMM runs on one thread
    l2_block_bytes: int            # a packed KC x NC block of B
    kc_target: int                 # k per block
    pack_min_b_bytes: int          # B smaller than this is read in place
    pack_min_k: int                # a shorter k reads B's rows in place
    pack_min_row_tiles: int        # fewer row tiles than this read B in place
    prepack_panel: int             # columns of a compile-time packed weight panel (MatMulPacked)
    column_read_kc: int            # k per block of a GEMM whose A is read down its columns
    dot_mr: int                    # dot products at once (lower/gemm.py's dot_gemm): rows x columns,
    dot_nr: int                    # each a vector accumulator over k
    a_strips: bool                 # constant A (Winograd's U) stored in gemm_mr-row strips, k-major
    # --- vector stores (codegen/kernel_emitter.py) ----------------------------------
    masked_stores_slow: bool       # a store under a run-time mask tests for all lanes on and then
    #                                stores plainly; interleaved strided stores go as one vector
    # --- blocked-channel convolutions (ops/blocked.py: 16-channel blocks) ---------
    blocked_dense_accumulators: int    # 16-channel accumulators of a pointwise/dense tile
    blocked_dense_max_blocks: int  # output blocks a pointwise/dense tile spans at most (then pixels)
    depthwise_row_tile: int        # outputs of a row a depthwise kernel sums at once
    # --- variants: whether the pipeline rewrites convolutions for them -------------
    blocked_layout: bool           # MobileNet-style regions in 16-channel blocks (passes/layout.py)
    winograd: bool                 # 3x3 stride-1 convs as Winograd F(2x2, 3x3) (passes/winograd.py)
    # --- where each convolution variant pays (schedule/conv.py) --------------------
    winograd_min_out_pixels: int   # an output map this big runs Winograd (3x3, stride 1, dense)
    winograd_min_batch_tiles: int  # ... or an even smaller one whose batch has 4x this many pixels
    winograd_min_channels: int     # ... when both channel counts reach this
    winograd_small_map_pixels: int     # an output map (all images) this small ...
    winograd_small_map_max_weights: int    # ... runs direct when in x out channels are at most this
    winograd_tile_columns: int     # tiles a step of the 16 GEMMs takes (n): V and M stay near L2
    winograd_grad_tile_columns: int    # the same for the weight gradient (its GEMMs' k; V and Zt)
    winograd_band_min_ratio: int   # batch 1 on threads by tile-row bands when tiles x (C + M) >= this x C x M
    winograd_band_max_weights: int     # ... or when C x M is at most this (U read once per thread is small)
    winograd_channels_last: bool   # run-time weights on a map of at most ...
    winograd_channels_last_row_tiles: int  # ... this many tiles a row: transforms along the channels
    winograd_channels_last_tile: int   # ... as F(2x2, 3x3) or F(4x4, 3x3): 2 or 4 (forward and dX)
    winograd_f4_weight_ratio: int  # F(4x4) where the batch's tiles x this reach C x M (else F(2x2))
    winograd_constant_f4: bool     # constant weights (inference): F(4x4) along the channels, transformed once
    winograd_constant_f4_row_tiles: int    # ... up to this many tiles a row (F(2x2) along the tile rows beyond)
    winograd_constant_f4_weight_ratio: int     # ... where the batch's tiles x this reach C x M
    winograd_constant_f4_small_maps: bool      # ... on small maps too (winograd_small_map_*'s direct convs)
    # (ops/winograd_small.py)
    conv_batched_columns: int      # a small map's images share one GEMM up to this many columns
    grad_weight_k: int             # a weight gradient by dot products: images until k (images x pixels) is this
    grad_gemm_k: int               # ... by the GEMM: until k is this (im2col's rows x k stays near L2)
    grad_input_batched_columns: int    # an input gradient's small dY maps share one GEMM up to this many columns
    grad_dot_max_rows: int         # im2col rows up to which the weight gradient runs as dot products
    col2im_max_phase_stride: int   # strides up to which a gradient's col2im goes by phases (strided stores)
    stem_direct_max_channels: int  # a blocked direct conv reads at most this many NCHW channels (the image)
    stem_min_taps: int             # a pooled stem outside a MobileNet region runs blocked from this many taps


AVX512 = ScheduleTable(
    name="avx512",
    parallel_min_work=1 << 16,     # fork/join measured at ~4 us: 64 Ki elements of a map take longer
    depthwise_parallel_min_work=1 << 18,   # 4x the map's: a depthwise tap is a cheap FMA on data in L1
    winograd_parallel_min_tiles=1 << 12,   # 1/16 of the map's: each tile is a 16-point transform
    col2im_parallel_min_work=1 << 14,      # per channel plane; scatter-adds cost ~4x a map's element
    gemm_mr=6, gemm_nr_vectors=2,  # 6 x 32: 12 zmm accumulators, ~268 GFLOP/s in L1 (DESIGN.md)
    gemm_parallel_min_macs=1_000_000,  # ~2 MFLOP, and a batch-1 classifier's 1024 x 1000 (4 MB of weights
    #                                    read once; DenseNet's at 2 threads 438 -> 234 us; 512 x 1000 stays:
    #                                    1.10-1.15x alone, 1024 x 1000 alone 0.6-0.87x)
    l2_block_bytes=256 << 10,      # a quarter of the 1 MiB L2 (measured: 185 vs 268 GFLOP/s streaming)
    kc_target=512,                 # 6 x 512 floats of A is 12 KiB of L1
    pack_min_b_bytes=64 << 10,     # below this B sits in L1/L2 anyway: packing only costs
    pack_min_k=64,                 # a first layer's 3 x 3 x 3 reads B's rows in place
    pack_min_row_tiles=4,          # fewer row tiles than this: packing would not pay
    prepack_panel=32,              # the micro-kernel's nr: a tile's k step is one contiguous 128 bytes
    column_read_kc=128,            # LSTMSequenceGrad's dW_hh (A = dgates^T, k = 1600 rows 2 KiB apart,
    # which share a few cache sets): 1 thread, same process, on a Zen 3 AVX2 host (not measured with
    # AVX-512): 128 and 256 7.7 ms, 192 8.3, 96 9.4, one block (534) 9.2; the kernel's time loop ~4
    # (since each k block of A is copied to rows an odd number of lines apart, ops/recurrent_weight_grad.py:
    # 64, 128 and 256 within 3% of each other at 1 and 2 threads, CPU-time A/B of the kernel's weight gradients)
    masked_stores_slow=False,      # AVX-512's k-masked stores cost a plain one's (not measured here)
    dot_mr=4, dot_nr=4,            # 16 zmm accumulators + 8 loads per k step: FMA-bound (AVX2 and
    # narrower: the same 4 x 4, not measured; 16 ymm accumulators spill there)
    a_strips=False,                # not measured with AVX-512 (AVX2's below)
    blocked_dense_accumulators=24,     # of 32 zmm registers, the rest hold B and A (28 spilled)
    blocked_dense_max_blocks=4,    # each weight load serves 6 pixels (24 / 4)
    depthwise_row_tile=8,          # 8 zmm accumulators: independent FMA chains cover the latency
    blocked_layout=True,           # MobileNet v2/v3, EfficientNet: measured faster than NCHW (layout.py)
    winograd=True,                 # ResNet's 3x3 layers: measured (ops/winograd.py's thresholds)
    winograd_min_out_pixels=7 * 7,     # 16 tiles for 49 outputs still win: 0.45-0.7x the direct
    # GEMM's time, 0.7x at 512 channels (ResNet's last stage; 14 x 14 before that, 18ccb47)
    winograd_min_batch_tiles=64,   # CIFAR ResNet's 4x4 maps at batch 32 qualify (f0f253a; the
    # boundary itself not measured)
    winograd_min_channels=16,      # the 16 GEMMs' k (and m) need some depth (not measured)
    winograd_small_map_pixels=7 * 7,   # DenseNet's block 4 (128 -> 32 on 7x7, batch 1, 1 thread):
    winograd_small_map_max_weights=4096,   # direct 35 us, Winograd 46; 32 -> 128 33 / 35, 64 -> 64
    # 33 / 36; from 48 -> 128 (6144) Winograd wins: 33 / 39 us, 96 -> 96 40 / 58 (SCHED_FIFO, medians)
    winograd_tile_columns=128,     # 512 took 1.5x the time for 128 channels on 28x28 at batch 8, 1.8x
    # for a 64-channel training step's 16x16 maps; 64 is 1.05-1.09x. Larger maps by bands of tile
    # rows of this many tiles: U-Net's 32-channel 64x64 convs 4.1-9.1 -> 2.9-6.5 ms (1c82c1b)
    winograd_grad_tile_columns=128,    # the forward's value; bands 5-8% faster (not measured apart)
    winograd_band_min_ratio=16,    # bands: 0.75x at 16 -> 64 channels on 55x55, 1.8x at 512 on 7x7
    winograd_band_max_weights=48 * 192,    # SqueezeNet's and GoogLeNet's small maps, bands against the
    # shared steps (2 threads, ReLU, SCHED_FIFO, same process): 32 -> 128 on 27x27 0.70x, on 14x14
    # 0.73x, 48 -> 192 on 13x13 0.81-0.88x, 48 -> 128 on 7x7 1.0x, 32 -> 96 on 28x28 1.03x; above
    # it 64 -> 256 on 13x13 1.0x, 96 -> 128 on 28x28 1.05x, 128 -> 192 on 28x28 1.1x
    winograd_channels_last=True,   # AVX2's (below), not measured on AVX-512: its transforms along
    winograd_channels_last_row_tiles=8,    # a 4x4 map's tile rows run 2 of 16 lanes (AVX2: 2 of 8)
    winograd_channels_last_tile=4,     # F(4x4, 3x3): 0.56x F(2x2)'s multiply-adds, ~10x its rounding
    # (still ~1e-5 of the largest output). ResNet-18 CIFAR (batch 32, C = M), Zen 4, same process,
    # against F(2x2) (2 on 32x32 ran along the tile rows): 1 thread (CPU time) 64 on 32x32 0.76x,
    # 128 on 16x16 0.70x, 256 on 8x8 0.75x, 512 on 4x4 0.99x; 2 threads 0.93x, 0.83x, 0.82x, 1.035x
    winograd_constant_f4=False,    # not measured here (Zen 4's table below takes it; the values below are its)
    winograd_constant_f4_row_tiles=14, winograd_constant_f4_weight_ratio=1 << 16,
    winograd_constant_f4_small_maps=False,
    winograd_f4_weight_ratio=1024,     # 512 x 512 on 4x4 (32 tiles: ratio 1/8) stays F(2x2): at 2 threads
    # each team reads all 36 MB of F(4x4)'s weights for 16 rows; 256 x 256 on 8x8 (128 tiles: 2) F(4x4)
    conv_batched_columns=256,      # ResNet-50 batch 8's 7x7 layers: 49 columns alone waste a third of
    # a 6x32 panel; whole model 0.98x at 1 and 2 threads (3e75bfa; 256 itself not swept)
    grad_weight_k=1024,            # not measured against other values (chosen with the batched GEMM)
    grad_gemm_k=128,               # ResNet-18 CIFAR's stride-2 3x3 dW, same-process at 1 thread against
    # 1024: 0.71-0.95x (256 -> 512 on 8x8: k 512 re-read a 4.7 MB im2col per 128-column block of B)
    grad_input_batched_columns=128,    # ResNet-18 CIFAR's stride-2 dX into 8x8 (dY 4x4, 8 images a
    # GEMM): 0.85-0.90x at 64 or 128 columns, 0.92x at 256; 2 images of 8x8 0.97x (same-process, 1 thread)
    grad_dot_max_rows=64,          # a first layer's 27 rows: dot products skip dY's transpose, which
    # costs more than the products (84a89c0); the boundary not measured
    col2im_max_phase_stride=4,     # each phase's stores are stride-s vector stores (a shuffle and a
    # masked store): no gathers (f0f253a); larger strides not measured
    stem_direct_max_channels=4,    # RGB's 3 (or RGBA): the image read in NCHW (not measured beyond)
    stem_min_taps=3 * 3 * 3,       # a pooled stem run blocked: 0.7x ResNet's 7x7 stem, 0.8-1.0x 3x3 ones
)

AVX2 = replace(
    AVX512, name="avx2",
    prepack_panel=16,              # AVX2's nr (2 x 8 lanes): its tiles read whole panels, not halves
    a_strips=True,                 # Winograd's U[xi] in 6-row strips: a tile's 6 broadcasts of A read one
    # stream, not 6 rows C floats apart (U of 512 x 512 is 1 MB a GEMM, read once at batch 1). Same bits.
    # Zen 3 AVX2, 1 thread, AOT builds A/B in one process (CPU time, median of block minima / min):
    # ResNet-18 0.89 / 0.85, GoogLeNet 0.85 / 0.91, SqueezeNet 1.1 0.91 / 1.00, DenseNet-121 0.99 / 0.94
    # AVX-512's values kept, now measured on Zen 3 (same A/B, ratios to the value kept, median / min):
    gemm_mr=6, gemm_nr_vectors=2,  # 6 x 16: 12 ymm accumulators; 4 x 16 (8): DenseNet-121 1.02 / 0.96,
    # ResNet-18 0.93 / 1.01 (same bits: a tile's k order is the same)
    kc_target=512,                 # 256: DenseNet-121 1.06 / 1.09, ResNet-50 b8 0.98 / 0.99; 768: 0.99 / 0.98,
    # 1.00 / 0.99 (a 16 x 512 B panel is all of Zen 3's 32 KiB L1, yet no smaller kc won)
    winograd_tile_columns=128,     # 64: ResNet-18 0.98 / 0.98, DenseNet-121 1.00 / 1.06, GoogLeNet 1.00 / 0.98
    winograd_min_channels=16,      # 32 (SqueezeNet's 16 -> 64 and GoogLeNet's 16 -> 32 direct): SqueezeNet
    # 1.05 / 1.02, GoogLeNet 0.97 / 1.03
    blocked_dense_accumulators=6,  # 6 pixels x 1 block = 12 ymm + 2 of weights, 1 of A: no spills.
    blocked_dense_max_blocks=1,    # Zen 3 host, EfficientNet-B0's pointwise convs alone, 1 thread, same
    # process against 2 pixels x 2 blocks (the old 4 accumulators, max 4 blocks; a 7x7 map ran 1 x 2):
    # 7x7 maps 192 -> 1152 0.62-0.70x, 1152 -> 192 0.56-0.61x; 14x14 (4 pixels x 1) 0.91-0.99x,
    # 28-112 0.97-1.00x; 4 x 1 everywhere 0.63-1.05x, 3 x 2 0.96-2.05x, 4 x 2 1.05-1.50x, 7 x 1
    # 1.01-1.68x (spills). (Before: 24 blocks = 48 ymm spilled; MobileNet-like 47.7 ms (24) -> 25.3 (4))
    depthwise_row_tile=4,          # 4 blocks = 8 ymm accumulators + the taps' loads in 16 registers
    masked_stores_slow=True,       # Zen 3's vmaskmovps store: 2.5x a plain store's time in a streaming
    # loop; a stride-2 pair (Winograd's output columns) as 2 spread masked stores 41 ns per 8 pairs, one
    # interleaved masked store 30, interleaved and tested for all-on 20 (/tmp microbenchmark, CPU time)
    winograd_channels_last_tile=2,     # not measured with F(4x4) (AVX2 IR unchanged)
    winograd_channels_last_row_tiles=8,    # ResNet-18 CIFAR (batch 32, C = M) on an AVX2 host (Zen 3), forward
    # / dX / dW same-process at 1 thread: 512 on 4x4 0.64x / 0.67x / 0.94x, 256 on 8x8 0.64x / 0.55x /
    # 0.84x, 128 on 16x16 0.81-0.86x / 0.86-1.01x / 0.97x; 64 on 32x32 (16 tiles a row) 1.12x / 1.52x
)

AVX512_ZEN4 = replace(            # AMD Zen 4: 512-bit ops double-pumped on 256-bit units, 32 KiB L1d
    AVX512, name="avx512-zen4",    # (LLVM's znver4; table_for picks it by the target's cpu)
    a_strips=True,                 # Winograd's U in 6-row strips, as AVX2's (below). Zen 4, same process,
    # SCHED_FIFO (benchmarks/schedules.py --variant strips:a_strips=1, medians), strips/row-major at 1
    # thread: GoogLeNet 0.91, ResNet-18 0.98, DenseNet-121 0.98-1.00, SqueezeNet 1.1 0.99, ResNet-50 b8
    # 0.98; 2 threads: GoogLeNet 0.92, ResNet-18 0.97, DenseNet-121 1.00, ResNet-50 b8 0.94. Same bits.
    winograd_constant_f4=True,     # constant weights (inference) as Winograd F(4x4) along the channels
    winograd_constant_f4_row_tiles=14,     # ResNet's 56x56 maps. 1 thread, CPU time, one conv against
    # F(2x2) along the tile rows (its run-time-weight build, the transform included): 64 -> 64 on 56x56
    # batch 8 0.64x, batch 1 0.71x; 128 -> 128 on 28x28 b8 0.60x, b1 0.75x; 256 on 14x14 b8 0.82x.
    # Larger maps (V and M of one image outgrow L2) not measured
    winograd_constant_f4_weight_ratio=1 << 16,     # 512 x 512 on 7x7 (4 tiles) at batch 1 too: 0.54x at 1
    # thread, 0.76x at 2; batch 8 0.56x (1024, run-time weights' value: F(2x2)); 256 x 256 on 14x14 b1 0.65-0.68x
    winograd_constant_f4_small_maps=True,  # against the direct conv, one conv at batch 1 on 7x7: 128 -> 32
    # (DenseNet's block 4) 0.38x at 1 thread, 0.35x at 2; 32 -> 128 (GoogLeNet's 5a/5b) 0.46x / 0.45x; 64 -> 64 0.39x
)

SSE_NEON = replace(               # 128-bit vectors: aarch64 NEON (32 registers), x86-64 baseline SSE
    AVX2, name="sse-neon",         # not measured: AVX2's register budgets, which fit both
    blocked_dense_accumulators=4, blocked_dense_max_blocks=4,  # AVX2's before it took 6 x 1
    prepack_panel=8,               # the micro-kernel's nr (2 x 4 lanes)
    a_strips=False,                # not measured
    # masked_stores_slow stays on: SSE and NEON have no masked store, LLVM stores lane by lane
    winograd_channels_last=False,  # not measured
)

SCALAR = replace(
    AVX2, name="scalar",           # not measured: a correctness fallback; budgets kept small
    gemm_mr=4, gemm_nr_vectors=4,  # 4 x 4 scalar accumulators
    prepack_panel=4,               # the scalar micro-kernel's nr
    a_strips=False,                # not measured
    blocked_dense_accumulators=1,  # one 16-channel block is already 16 scalar registers
    depthwise_row_tile=1,
    winograd_channels_last=False,  # not measured
)

# The GPU slot: CUDA kernels map parallel loops onto the grid (compiler/cuda), so these
# thresholds are what the lowering sees before that mapping. Not measured on a GPU yet:
# the scalar CPU values the CUDA backend was tested with.
CUDA_SM80 = replace(SCALAR, name="cuda-sm_80")
CUDA_SM90 = replace(SCALAR, name="cuda-sm_90")

TABLES = {t.name: t for t in (AVX512, AVX512_ZEN4, AVX2, SSE_NEON, SCALAR, CUDA_SM80, CUDA_SM90)}


# LLVM's names of the CPUs AVX512_ZEN4 was measured on (other AVX-512 CPUs: AVX512)
ZEN4_CPUS = ("znver4",)


def table_id(table):
    """name@version#digest of the table's values: a description that names the table
    changes with any of its thresholds (a table patched at run time included)."""
    digest = hashlib.sha256(repr(astuple(table)).encode()).hexdigest()[:8]
    return f"{table.name}@{SCHEDULE_VERSION}#{digest}"


def table_for(target):
    """The table that schedules code for `target` (a CpuTarget or a CUDA target)."""
    if target.triple.startswith("nvptx"):
        return TABLES.get(f"cuda-{target.cpu}", CUDA_SM90)
    bits = target.vector_bits
    if bits >= 512:
        return AVX512_ZEN4 if target.cpu in ZEN4_CPUS else AVX512
    return AVX2 if bits >= 256 else SSE_NEON if bits >= 128 else SCALAR
