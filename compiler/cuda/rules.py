"""Which lowering each op gets on a GPU: ours (lowerings.py, lowerings_grad.py) where
the CPU's would leave a grid of one thread, else the registry's."""
from .lowerings import conv_lower, gemm_lower, matmul_lower
from .lowerings_grad import grad_input_lower, grad_weight_lower

GPU_LOWERINGS = {"Conv": conv_lower, "Gemm": gemm_lower, "MatMul": matmul_lower,
                 "ConvGradWeight": grad_weight_lower, "ConvGradInput": grad_input_lower}


def gpu_lowering(op, default):
    """The lowering for `op` on a GPU: ours when we have one that accepts the node
    (it returns None to decline), else the registry's."""
    ours = GPU_LOWERINGS.get(op)
    if ours is None:
        return default

    def lower(ctx):
        if ours(ctx) is None:
            default(ctx)
    return lower
