"""The graph passes for a GPU: the inference pipeline less its CPU layouts (the
16-channel blocked layout, Winograd-transformed and GEMM-panel-packed weights),
which the GPU lowerings (lowerings.py) do not read."""
from ..passes.layout import block_channels
from ..passes.recurrent import pack_shared_weights
from ..passes.pipeline import INFERENCE_PIPELINE
from ..passes.simplify import prepack_weights
from ..passes.winograd import winograd_weights

CPU_ONLY = (block_channels, winograd_weights, prepack_weights, pack_shared_weights)
GPU_PIPELINE = [p for p in INFERENCE_PIPELINE if p not in CPU_ONLY]
