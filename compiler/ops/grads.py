"""The VJP rules, attached to their ops' registry entries. Each rule gets a
GradContext, the node, the output gradients (None where there is none) and which
inputs need a gradient, and returns one gradient value name (or None) per input."""
import numpy as np

from .registry import get_op


def rule(*names):
    def attach(fn):
        for name in names:
            get_op(name).grad = fn
        return fn
    return attach


@rule("Add", "Sub")
def _add_sub(g, node, dys, wanted):
    dy = dys[0]
    a, b = node.inputs
    db = g.neg(dy) if node.op == "Sub" else dy
    return [g.unbroadcast(dy, g.shape(a)) if wanted[0] else None,
            g.unbroadcast(db, g.shape(b)) if wanted[1] else None]


@rule("Mul")
def _mul(g, node, dys, wanted):
    dy, (a, b) = dys[0], node.inputs
    return [g.unbroadcast(g.mul(dy, b), g.shape(a)) if wanted[0] else None,
            g.unbroadcast(g.mul(dy, a), g.shape(b)) if wanted[1] else None]


@rule("Div")
def _div(g, node, dys, wanted):
    dy, (a, b), y = dys[0], node.inputs, node.outputs[0]
    return [g.unbroadcast(g.div(dy, b), g.shape(a)) if wanted[0] else None,
            g.unbroadcast(g.neg(g.div(g.mul(dy, y), b)), g.shape(b)) if wanted[1] else None]


@rule("Relu")
def _relu(g, node, dys, wanted):
    x = node.inputs[0]
    return [g.where(g.op("Greater", [x, g.zero_like(x)]), dys[0], g.zero_like(x))]


@rule("LeakyRelu")
def _leaky(g, node, dys, wanted):
    x, dy = node.inputs[0], dys[0]
    return [g.where(g.op("GreaterOrEqual", [x, g.zero_like(x)]), dy, g.scale(dy, node.attrs["alpha"]))]


@rule("Elu")
def _elu(g, node, dys, wanted):
    x, y, dy = node.inputs[0], node.outputs[0], dys[0]
    slope = g.add(y, g.scalar(node.attrs["alpha"], y))
    return [g.where(g.op("Greater", [x, g.zero_like(x)]), dy, g.mul(dy, slope))]


@rule("Sigmoid")
def _sigmoid(g, node, dys, wanted):
    y = node.outputs[0]
    return [g.mul(dys[0], g.mul(y, g.sub(g.scalar(1.0, y), y)))]


@rule("Tanh")
def _tanh(g, node, dys, wanted):
    y = node.outputs[0]
    return [g.mul(dys[0], g.sub(g.scalar(1.0, y), g.mul(y, y)))]


@rule("Exp")
def _exp(g, node, dys, wanted):
    return [g.mul(dys[0], node.outputs[0])]


@rule("Log")
def _log(g, node, dys, wanted):
    return [g.div(dys[0], node.inputs[0])]


@rule("Sqrt")
def _sqrt(g, node, dys, wanted):
    return [g.div(g.scale(dys[0], 0.5), node.outputs[0])]


@rule("Neg")
def _neg(g, node, dys, wanted):
    return [g.neg(dys[0])]


@rule("Abs")
def _abs(g, node, dys, wanted):
    x, dy = node.inputs[0], dys[0]
    zero = g.zero_like(x)
    return [g.where(g.op("Greater", [x, zero]), dy, g.where(g.op("Less", [x, zero]), g.neg(dy), zero))]


@rule("Identity", "Dropout")
def _identity(g, node, dys, wanted):
    return [dys[0]] + [None] * (len(node.inputs) - 1)


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")
def _reshape(g, node, dys, wanted):
    x = node.inputs[0]
    if node.op == "Expand":
        dx = g.unbroadcast(dys[0], g.shape(x))
    else:
        dx = g.reshape(dys[0], g.shape(x))
    return [dx] + [None] * (len(node.inputs) - 1)


@rule("Cast")
def _cast(g, node, dys, wanted):
    x = node.inputs[0]
    if not g.dtype(x).is_float:
        return [None]
    from onnx import helper
    return [g.op("Cast", [dys[0]], to=helper.np_dtype_to_tensor_dtype(g.dtype(x).numpy))]


@rule("Transpose")
def _transpose(g, node, dys, wanted):
    rank = len(g.shape(node.inputs[0]))
    perm = node.attrs.get("perm") or tuple(reversed(range(rank)))
    return [g.op("Transpose", [dys[0]], perm=tuple(int(i) for i in np.argsort(perm)))]


@rule("Concat")
def _concat(g, node, dys, wanted):
    axis = node.attrs["axis"] % len(g.shape(node.outputs[0]))
    out, start = [], 0
    for name, want in zip(node.inputs, wanted):
        size = g.shape(name)[axis]
        if want:
            i64 = lambda v: g.b.add_constant(np.asarray([v], np.int64))
            out.append(g.op("Slice", [dys[0], i64(start), i64(start + size), i64(axis)]))
        else:
            out.append(None)
        start += size
    return out


@rule("Where")
def _where(g, node, dys, wanted):
    c, a, b = node.inputs
    dy = dys[0]
    zero = g.zero_like(dy)
    return [None, g.unbroadcast(g.where(c, dy, zero), g.shape(a)) if wanted[1] else None,
            g.unbroadcast(g.where(c, zero, dy), g.shape(b)) if wanted[2] else None]


@rule("ReduceSum", "ReduceMean")
def _reduce(g, node, dys, wanted):
    from .reduce import reduce_axes
    x = node.inputs[0]
    shape = g.shape(x)
    types = [g.b.types[i] if i else None for i in node.inputs]
    consts = [g.b.constants.get(i) if i else None for i in node.inputs]
    axes = reduce_axes(node.name, node.attrs, types, consts)
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    dy = g.reshape(dys[0], kept)
    if node.op == "ReduceMean":
        dy = g.scale(dy, 1.0 / max(1, int(np.prod([shape[a] for a in axes]))))
    return [g.expand(dy, shape)] + [None] * (len(node.inputs) - 1)


@rule("GlobalAveragePool")
def _global_avg(g, node, dys, wanted):
    shape = g.shape(node.inputs[0])
    return [g.expand(g.scale(dys[0], 1.0 / int(np.prod(shape[2:]))), shape)]


@rule("Softmax")
def _softmax(g, node, dys, wanted):
    y, dy, axis = node.outputs[0], dys[0], node.attrs["axis"]
    dot = g.reduce_sum(g.mul(dy, y), [axis])
    return [g.mul(y, g.sub(dy, dot))]


@rule("LogSoftmax")
def _log_softmax(g, node, dys, wanted):
    y, dy, axis = node.outputs[0], dys[0], node.attrs["axis"]
    return [g.sub(dy, g.mul(g.op("Exp", [y]), g.reduce_sum(dy, [axis])))]


@rule("MatMul")
def _matmul(g, node, dys, wanted):
    a, b = node.inputs
    dy = dys[0]
    ra, rb = len(g.shape(a)), len(g.shape(b))
    if ra < 2 or rb < 2:
        from ..errors import CompileError
        raise CompileError(f"no gradient for 1-D MatMul (node '{node.name}')")
    swap = lambda t, r: g.op("Transpose", [t], perm=tuple(range(r - 2)) + (r - 1, r - 2))
    da = g.unbroadcast(g.op("MatMul", [dy, swap(b, rb)]), g.shape(a)) if wanted[0] else None
    db = g.unbroadcast(g.op("MatMul", [swap(a, ra), dy]), g.shape(b)) if wanted[1] else None
    return [da, db]


@rule("Gemm")
def _gemm(g, node, dys, wanted):
    at, dy = node.attrs, dys[0]
    a, b = node.inputs[:2]
    ta, tb, alpha = at["transA"], at["transB"], at["alpha"]
    mm = lambda x, y, tx, ty: g.op("Gemm", [x, y], transA=int(tx), transB=int(ty), alpha=alpha)
    da = db = dc = None
    if wanted[0]:
        da = mm(dy, b, 0, not tb) if not ta else mm(b, dy, tb, 1)
    if wanted[1]:
        db = mm(a, dy, not ta, 0) if not tb else mm(dy, a, 1, ta)
    if len(node.inputs) > 2 and node.inputs[2] and wanted[2]:
        dc = g.unbroadcast(g.scale(dy, at["beta"]), g.shape(node.inputs[2]))
    return [da, db, dc][:len(node.inputs)]


_CONV_KEYS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@rule("Conv")
def _conv(g, node, dys, wanted):
    x, w = node.inputs[:2]
    attrs = {k: v for k, v in node.attrs.items() if k in _CONV_KEYS}
    dy = dys[0]
    dx = g.op("ConvGradInput", [dy, w], input_shape=g.shape(x), **attrs) if wanted[0] else None
    dw = g.op("ConvGradWeight", [x, dy], weight_shape=g.shape(w), **attrs) if wanted[1] else None
    out = [dx, dw]
    if len(node.inputs) > 2:
        rank = len(g.shape(dy))
        out.append(g.reduce_sum(dy, [0] + list(range(2, rank)), keepdims=0) if wanted[2] else None)
    return out


@rule("MaxPool")
def _maxpool(g, node, dys, wanted):
    x = node.inputs[0]
    indices = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1] else \
        g.op("MaxPool", [x], outputs=2, **node.attrs)[1]
    return [g.op("MaxPoolGrad", [dys[0], indices], input_shape=g.shape(x), **node.attrs)]


@rule("AveragePool")
def _avgpool(g, node, dys, wanted):
    return [g.op("AveragePoolGrad", [dys[0]], input_shape=g.shape(node.inputs[0]), **node.attrs)]


@rule("Maxout")
def _maxout(g, node, dys, wanted):
    x, y = node.inputs[0], node.outputs[0]
    k = node.attrs["pool_size"]
    shape = g.shape(x)
    grouped = (shape[0], shape[1] // k, k) + tuple(shape[2:])
    one = (shape[0], shape[1] // k, 1) + tuple(shape[2:])
    hit = g.op("Equal", [g.reshape(x, grouped), g.reshape(y, one)])
    spread = g.where(hit, g.expand(g.reshape(dys[0], one), grouped), g.zero_like(x))
    return [g.reshape(spread, shape)]


for _name in ("Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "Shape", "DropoutMask"):
    get_op(_name).grad = lambda g, node, dys, wanted: [None] * len(node.inputs)


@rule("BatchNormalization")
def _batchnorm_inference(g, node, dys, wanted):
    """BN with fixed statistics (a frozen, eval-mode BN being fine-tuned through)."""
    x, scale, bias, mean, var = node.inputs
    dy = dys[0]
    rank = len(g.shape(x))
    per_channel = (1, g.shape(x)[1]) + (1,) * (rank - 2)
    inv_std = g.div(g.scalar(1.0, var), g.op("Sqrt", [g.add(var, g.scalar(node.attrs["epsilon"], var))]))
    axes = [0] + list(range(2, rank))
    dx = g.mul(dy, g.reshape(g.mul(scale, inv_std), per_channel)) if wanted[0] else None
    xhat = g.mul(g.sub(x, g.reshape(mean, per_channel)), g.reshape(inv_std, per_channel))
    dscale = g.reduce_sum(g.mul(dy, xhat), axes, keepdims=0) if wanted[1] else None
    dbias = g.reduce_sum(dy, axes, keepdims=0) if wanted[2] else None
    return [dx, dscale, dbias, None, None]
