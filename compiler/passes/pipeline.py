"""The pass pipeline, one commented line per pass (Halide's Lower.cpp style)."""
from ..ir.printer import print_graph
from ..ir.verifier import verify
from .elementwise_fusion import fuse_elementwise
from .fusion import fuse
from .layout import block_channels
from .expand import expand_composites
from .float16 import compute_float16_in_float32
from .gemm_transpose import simplify_gemm_transposes
from .simplify import eliminate_dead_code, fold_constants, prepack_weights, pretranspose_weights, remove_identities
from .recurrent import fold_input_weight_gradients, pack_shared_weights
from .winograd import winograd_weights

INFERENCE_PIPELINE = [
    expand_composites,       # LSTM/GRU/RNN per time step as MatMul + gate arithmetic, Trilu as Where (expand.py)
    compute_float16_in_float32,  # float16 values are stored as such, computed in float32 (float16.py)
    fold_constants,          # shape subgraphs and constant expressions become constants
    remove_identities,       # Identity / inference Dropout read their input directly
    eliminate_dead_code,     # nothing that no output needs
    simplify_gemm_transposes,  # Transposes into Gemm flags; a shared weight's gradient one GEMM (gemm_transpose.py)
    fold_input_weight_gradients,  # an LSTM's dW_ih GEMM done by its LSTMSequenceGrad, in its k blocks (recurrent.py)
    pretranspose_weights,    # Gemm weights stored K-major so GEMM loads rows contiguously
    fuse,                    # Conv+BatchNorm folded; Conv/Gemm + ReLU in one kernel (fusion.py)
    block_channels,          # MobileNet-style regions in the blocked-channel layout (layout.py)
    fuse_elementwise,        # chains of element-wise ops in one loop (elementwise_fusion.py)
    winograd_weights,        # 3x3 stride-1 Conv weights pre-transformed for Winograd F(2x2, 3x3)
    prepack_weights,         # constant MatMul weights in the target's GEMM panels, packed once (MatMulPacked)
    pack_shared_weights,     # a weight several GEMMs read (a recurrence's) packed once per run (recurrent.py)
    eliminate_dead_code,     # the folded BatchNorm statistics and unfused weights go
]


TARGET_AWARE = {block_channels, winograd_weights, prepack_weights, pack_shared_weights}   # p(graph, target): the target's choices


def run_pipeline(graph, passes=None, verify_each=False, print_after=(), log=print, target=None):
    """Run `passes` in order; `verify_each` checks the IR after every pass (tests do),
    `print_after` names passes whose output IR is printed (--print-after). `target`
    (default: this CPU) reaches the passes of TARGET_AWARE."""
    for p in INFERENCE_PIPELINE if passes is None else passes:
        graph = p(graph, target) if p in TARGET_AWARE else p(graph)
        if verify_each:
            verify(graph)
        if p.__name__ in print_after or "all" in print_after:
            log(f"// ----- IR after {p.__name__} -----\n{print_graph(graph)}")
    return graph


def optimize_graph(graph, verify_each=False, print_after=(), target=None):
    """The inference pipeline over a verified `graph` for `target` (default: this
    CPU) (ns.optimize_graph)."""
    return run_pipeline(verify(graph), verify_each=verify_each, print_after=print_after, target=target)
