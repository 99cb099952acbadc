"""What a trace needs besides the module: the example inputs' names, shapes and
dtypes, the state a training trace collects, and forward's outputs."""
import numpy as np

from nutshell.compiler.ir.types import DType

from .tensor import Tensor, as_dtype


class TraceState:
    """What a training trace collects: the state inputs and their per-step updates."""

    def __init__(self, training, state_inputs):
        self.training, self.state_inputs = training, state_inputs
        self.step = None           # the int64 step counter input (dropout masks, schedules)
        self.params = []           # state inputs that get gradients
        self.buffers = []          # state inputs updated by layers (running statistics)
        self.updates = {}          # buffer name -> value name of its next value
        self.inputs = []           # the data inputs' names, in forward's argument order
        self.frozen = []           # params with requires_grad False: read, never updated
        self.detached = []         # values made by .detach(): gradients stop there
        self.random_calls = 0      # random call sites so far (F.dropout, randn): each its own seed


class InputSpec:
    """An example input given by shape and dtype alone (no data needed)."""

    def __init__(self, shape, dtype=DType.float32):
        self.shape, self.dtype = tuple(int(d) for d in shape), as_dtype(dtype)

    def __repr__(self):
        return f"InputSpec({self.shape}, {self.dtype.value})"


def _example_spec(example):
    if isinstance(example, InputSpec):
        return example.shape, example.dtype
    if hasattr(example, "detach") and hasattr(example, "numpy"):     # a torch tensor
        example = example.detach().cpu().numpy()
    array = example if hasattr(example, "shape") and hasattr(example, "dtype") else np.asarray(example)
    dtype = DType.float32 if np.dtype(array.dtype) == np.float64 else as_dtype(array.dtype)
    return tuple(int(d) for d in array.shape), dtype


def input_specs(input_shape, dtype, example_inputs, input_name="input"):
    """[(name, shape, dtype)] of the traced graph's data inputs."""
    if example_inputs is None:
        if input_shape is None:
            raise ValueError("tracing needs input_shape=... or example_inputs=...")
        return [(input_name, tuple(input_shape), as_dtype(dtype))]
    if input_shape is not None:
        raise ValueError("give input_shape or example_inputs, not both")
    if isinstance(example_inputs, (tuple, list)):
        examples = [_example_spec(e) for e in example_inputs]
        if len(examples) == 1:
            return [(input_name,) + examples[0]]
        return [(f"input_{i}",) + e for i, e in enumerate(examples)]
    return [(input_name,) + _example_spec(example_inputs)]


def _flatten_outputs(out):
    """Tensors in order; None entries (nanoGPT's `return logits, None` without
    targets) are left out, as torch.onnx.export leaves them out."""
    if isinstance(out, (tuple, list)):
        return [t for o in out if o is not None for t in _flatten_outputs(o)]
    if not isinstance(out, Tensor):
        raise TypeError(f"forward must return tensors (or tuples of them), got {type(out).__name__}")
    return [out]


def output_names(builder, out):
    """The graph outputs for forward's result; an input, a constant or a value
    returned twice gets an Identity so that each output has its own buffer."""
    names, inputs = [], {v.name for v in builder.inputs}
    tensors = _flatten_outputs(out)
    if not tensors:
        raise TypeError("forward returned no tensor")
    for t in tensors:
        name = t.name
        if name in names or name in inputs or name in builder.constants:
            name = builder.add_node("Identity", [name])
        names.append(name)
    return names
