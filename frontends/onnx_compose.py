"""ONNX ops imported as compositions of primitives (DESIGN principle 2): the
normalisations and LRN become reductions and element-wise ops, which autodiff and
the fusion passes then see like any other graph."""
import numpy as np

from nutshell.compiler.ir.types import DType
from nutshell.compiler.ops.common import fail, norm_axis


def _const(b, value, dtype):
    return b.add_constant(np.asarray(value, dtype=dtype.numpy))


def _normalize(b, x, axes, eps, name):
    """(x - mean) / sqrt(var + eps) over `axes`, with the mean and 1/std kept."""
    dtype = b.types[x].dtype
    ax = b.add_constant(np.asarray(axes, np.int64))
    mean = b.add_node("ReduceMean", [x, ax], {"keepdims": 1}, name=f"{name}/mean")
    centered = b.add_node("Sub", [x, mean], name=f"{name}/center")
    var = b.add_node("ReduceMean", [b.add_node("Mul", [centered, centered]), ax], {"keepdims": 1})
    inv_std = b.add_node("Div", [_const(b, 1.0, dtype),
                                 b.add_node("Sqrt", [b.add_node("Add", [var, _const(b, eps, dtype)])])])
    return b.add_node("Mul", [centered, inv_std]), mean, inv_std


def layer_normalization(b, node, attrs, opset, name):
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    rank = b.types[x].rank
    axis = norm_axis(name, attrs.get("axis", -1), rank)
    normed, mean, inv_std = _normalize(b, x, list(range(axis, rank)), attrs.get("epsilon", 1e-5), name)
    y = b.add_node("Mul", [normed, scale])
    if bias:
        y = b.add_node("Add", [y, bias])
    outs = list(node.output) + ["", "", ""]
    b.add_node("Identity", [y], outputs=[outs[0]], name=name)
    for value, out in ((mean, outs[1]), (inv_std, outs[2])):
        if out:
            b.add_node("Identity", [value], outputs=[out])
    return True


def instance_normalization(b, node, attrs, opset, name):
    x, scale, bias = node.input[:3]
    rank = b.types[x].rank
    normed, _, _ = _normalize(b, x, list(range(2, rank)), attrs.get("epsilon", 1e-5), name)
    shape = _const(b, [1, -1] + [1] * (rank - 2), DType.int64)
    y = b.add_node("Mul", [normed, b.add_node("Reshape", [scale, shape])])
    b.add_node("Add", [y, b.add_node("Reshape", [bias, shape])], outputs=[node.output[0]], name=name)
    return True


def lrn(b, node, attrs, opset, name):
    """x / (bias + alpha/size * sum of squares over `size` neighbouring channels)^beta,
    the window sum done by an AveragePool over the channel axis."""
    x = node.input[0]
    dtype = b.types[x].dtype
    n, c = b.types[x].shape[:2]
    rest = int(np.prod(b.types[x].shape[2:], dtype=np.int64))
    size = attrs["size"]
    if size <= 0:
        fail(name, f"LRN size must be > 0, got {size}")
    square = b.add_node("Mul", [x, x])
    planes = b.add_node("Reshape", [square, _const(b, [n, 1, c, rest], DType.int64)])
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    window = b.add_node("AveragePool", [planes], {"kernel_shape": (size, 1), "pads": (lo, 0, hi, 0),
                                                  "count_include_pad": 1})
    total = b.add_node("Reshape", [window, _const(b, b.types[x].shape, DType.int64)])
    base = b.add_node("Add", [_const(b, attrs.get("bias", 1.0), dtype),
                              b.add_node("Mul", [total, _const(b, attrs.get("alpha", 1e-4), dtype)])])
    b.add_node("Div", [x, b.add_node("Pow", [base, _const(b, attrs.get("beta", 0.75), dtype)])],
               outputs=[node.output[0]], name=name)
    return True


def upsample(b, node, attrs, opset, name):
    """Upsample (deprecated) is Resize with asymmetric coordinates and floor."""
    mode = attrs.get("mode", "nearest")
    inputs = [node.input[0], "", node.input[1]] if len(node.input) > 1 else \
        [node.input[0], "", _const(b, attrs["scales"], DType.float32)]
    b.add_node("Resize", inputs, {"mode": mode, "coordinate_transformation_mode": "asymmetric",
                                  "nearest_mode": "floor"}, outputs=[node.output[0]], name=name)
    return True


def batch_normalization(b, node, attrs, opset, name):
    """BatchNormalization with training_mode=1: batch statistics, and the running
    statistics' updates as extra outputs (the ONNX specification's formulas)."""
    if not attrs.get("training_mode", 0):
        return False
    x, scale, bias, mean, var = node.input[:5]
    rank = b.types[x].rank
    dtype = b.types[x].dtype
    momentum = attrs.get("momentum", 0.9)
    axes = [0] + list(range(2, rank))
    shape = _const(b, [1, -1] + [1] * (rank - 2), DType.int64)
    ax = b.add_constant(np.asarray(axes, np.int64))
    batch_mean = b.add_node("ReduceMean", [x, ax], {"keepdims": 0})
    centered = b.add_node("Sub", [x, b.add_node("Reshape", [batch_mean, shape])])
    batch_var = b.add_node("ReduceMean", [b.add_node("Mul", [centered, centered]), ax], {"keepdims": 0})
    inv_std = b.add_node("Div", [_const(b, 1.0, dtype), b.add_node("Sqrt", [
        b.add_node("Add", [batch_var, _const(b, attrs.get("epsilon", 1e-5), dtype)])])])
    y = b.add_node("Mul", [centered, b.add_node("Reshape", [b.add_node("Mul", [scale, inv_std]), shape])])
    b.add_node("Add", [y, b.add_node("Reshape", [bias, shape])], outputs=[node.output[0]], name=name)
    outs = list(node.output) + ["", ""]
    for running, current, out in ((mean, batch_mean, outs[1]), (var, batch_var, outs[2])):
        if out:
            kept = b.add_node("Mul", [running, _const(b, momentum, dtype)])
            b.add_node("Add", [kept, b.add_node("Mul", [current, _const(b, 1 - momentum, dtype)])],
                       outputs=[out])
    return True


def resize_v10(b, node, attrs, opset, name):
    """Resize-10 took (X, scales) and resized like Upsample (asymmetric coordinates)."""
    if opset >= 11:
        return False
    b.add_node("Resize", [node.input[0], "", node.input[1]],
               {"mode": attrs.get("mode", "nearest"), "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor"}, outputs=[node.output[0]], name=name)
    return True


ADAPTERS = {"Resize": resize_v10, "BatchNormalization": batch_normalization, "LayerNormalization": layer_normalization, "InstanceNormalization": instance_normalization,
            "LRN": lrn, "Upsample": upsample}
