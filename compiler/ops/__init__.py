"""The op registry. Importing this package registers every op family."""
from .registry import NON_DIFFERENTIABLE, OpDef, all_ops, get_op, has_op, register
from . import (elementwise, matmul, conv, blocked, pool, norm, softmax, reduce, shape_ops, resize,  # noqa: F401
               logic, slicing, conv_grad, pool_grad, random, movement, einsum, gather_grad, axis_taps, fused,
               recurrent, trilu, pow_clip_mod)

__all__ = ["OpDef", "all_ops", "get_op", "has_op", "register"]
