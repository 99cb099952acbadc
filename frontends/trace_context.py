"""The trace in progress: which builder tensor operations append to, and how a
Parameter used in forward() finds its graph value."""
from nutshell.compiler.errors import InputError
from nutshell.compiler.ir.types import DType

_ACTIVE = []     # the trace contexts in progress (innermost last)


class TraceContext:
    """What a trace in progress knows: its builder and the names of the module
    tree's parameters, so that a Parameter used in forward finds its value."""

    def __init__(self, builder, param_names):
        self.builder, self.param_names = builder, param_names

    def __enter__(self):
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)


def active_builder():
    """The GraphBuilder of the trace in progress, or None outside a trace."""
    return _ACTIVE[-1].builder if _ACTIVE else None


def param_value(builder, name, p):
    """The graph value for parameter `p` named `name`: a constant, or a state
    input when the trace is a trainer's."""
    if name not in builder.types:
        if builder.trace.state_inputs:
            builder.add_input(name, DType.float32, p.shape)
            builder.trace.params.append(name)
            if not getattr(p, "requires_grad", True):
                builder.trace.frozen.append(name)
        else:
            builder.add_constant(p.data, name)
    from .tensor import Tensor
    return Tensor(builder, name)


def traced_param(p):
    """A Parameter used directly in forward (torch style: `x @ self.w`)."""
    if not _ACTIVE:
        raise TypeError("a Parameter takes part in operations only inside forward() while "
                        "tracing; use `.data` for its NumPy values")
    ctx = _ACTIVE[-1]
    name = ctx.param_names.get(id(p))
    if name is None:
        raise InputError("a Parameter used in forward() belongs to no submodule of the traced "
                         "model (assign it as a module attribute)")
    return param_value(ctx.builder, name, p)


def eager_builder():
    """A builder for values computed outside any trace (constructors in __init__,
    a positional-encoding table): all its values are constants, so every op on
    them folds through its NumPy reference, and `.numpy()` gives the result."""
    from nutshell.compiler.ir import GraphBuilder
    from .tracing import TraceState
    builder = GraphBuilder("eager")
    builder.trace, builder.eager = TraceState(False, False), True
    return builder
