"""Checks of layer arguments and of the inputs layers are traced on, so a bad
constructor argument or a wrong input width names the layer, not an IR op."""
import numpy as np

from nutshell.compiler.errors import ShapeError


def require(layer, test, **values):
    """A clear ValueError unless every value (an int or a tuple of ints) passes `test`."""
    for key, value in values.items():
        if not all(isinstance(v, (int, np.integer)) and test(v) for v in np.ravel(value)):
            raise ValueError(f"{layer}: {key} must be {test.__doc__}, got {value!r}")


def positive(v):
    """a positive integer"""
    return v > 0


def non_negative(v):
    """a non-negative integer"""
    return v >= 0


def conv_pads(padding, kernel, dilation, stride):
    """ONNX pads (begin..., end...) for PyTorch's padding: ints, 'valid' or 'same'
    (stride 1 only; an odd total puts the extra pixel at the end, as PyTorch does)."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"Conv2d: padding must be 'same', 'valid' or integers, got {padding!r}")
        if padding == "valid":
            return (0,) * 2 * len(kernel)
        if any(s != 1 for s in stride):
            raise ValueError("Conv2d: padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple(t // 2 for t in totals) + tuple(t - t // 2 for t in totals)
    require("Conv2d", non_negative, padding=padding)
    return tuple(padding) * 2


def check_width(layer, x, axis, expected, what):
    """Name the layer (its state_dict prefix) when the input's `axis` is not `expected`."""
    try:
        got = x.shape[axis]
    except IndexError:
        got = f"an input of shape {x.shape}"
    if got != expected:
        raise layer_error(layer, f"expected {what} {expected}, got {got}")


def layer_error(layer, message):
    """A ShapeError naming the layer by its class and state_dict prefix."""
    name = getattr(layer, "_trace_prefix", "").rstrip(".") or type(layer).__name__.lower()
    return ShapeError(f"{type(layer).__name__} '{name}': {message}")
