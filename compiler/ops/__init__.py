"""The op registry. Importing this package registers every op family."""
from ..ir.op_hook import install_op_registry
from . import registry
from .registry import NON_DIFFERENTIABLE, OpDef, all_ops, get_op, has_op, register
from . import (elementwise, matmul, conv, blocked, pool, norm, softmax, reduce, shape_ops, resize,  # noqa: F401
               logic, slicing, conv_grad, conv_transpose, pool_grad, random, movement, einsum, gather_grad, axis_taps, fused,
               recurrent, lstm_cell, gru_cell, trilu, pow_clip_mod, collective, pack_panels, lstm_sequence,
               batchnorm_train, winograd_op)

install_op_registry(registry)     # the IR builds and verifies graphs through it (ir/op_hook.py)

__all__ = ["OpDef", "all_ops", "get_op", "has_op", "register"]
