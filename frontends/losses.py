"""Losses, composed from primitive ops so autodiff differentiates them like any
other graph. Each takes a GradContext, the network's output and the target
input and returns the name of a scalar (shape ()) mean loss, with PyTorch's
shapes: class losses take logits (N, C, d1, ...) and labels (N, d1, ...).

attach_loss adds the targets and the loss (a built-in name or a callable
written with the tracing API) to a traced forward graph."""
import numpy as np

from nutshell.compiler.errors import ShapeError
from nutshell.compiler.ir.types import DType

ONNX_FLOAT = 1      # TensorProto.FLOAT, for Cast


def _mean_all(g, x):
    total = g.op("ReduceSum", [x], keepdims=0)
    return g.scale(total, 1.0 / g.b.types[x].size)


def _per_class(g, labels, logits, axis=1):
    """Labels (N, d...) as (N, 1, d...) beside the class indices (C,) laid along dim 1
    (along `axis`: the labels' dims keep their order around it)."""
    shape = g.shape(logits)
    column = g.reshape(labels, shape[:axis] + (1,) + shape[axis + 1:])
    classes = np.arange(shape[axis], dtype=np.int64).reshape((shape[axis],) + (1,) * (len(shape) - 1 - axis))
    return column, g.const(classes, DType.int64)


def _one_hot(g, labels, logits, axis=1):
    column, classes = _per_class(g, labels, logits, axis)
    return g.op("Cast", [g.op("Equal", [column, classes])], to=ONNX_FLOAT)


def _class_mean(g, logp, labels, label_smoothing=0.0, ignore_index=None, axis=1):
    """Mean over the (not ignored) positions of -sum_c target_c log p_c, the
    target one-hot (mixed with the uniform distribution by label_smoothing)."""
    classes = g.shape(logp)[axis]
    target, valid = _one_hot(g, labels, logp, axis), None
    if ignore_index is not None:               # ignored positions count for nothing
        column, _ = _per_class(g, labels, logp, axis)
        ignored = g.op("Equal", [column, g.const(np.int64(ignore_index), DType.int64)])
        valid = g.sub(g.scalar(1.0, target), g.op("Cast", [ignored], to=ONNX_FLOAT))
        target = g.mul(target, valid)
    if label_smoothing:
        uniform = g.scalar(label_smoothing / classes, target) if valid is None else \
            g.scale(valid, label_smoothing / classes)
        target = g.add(g.scale(target, 1.0 - label_smoothing), uniform)
    total = g.op("ReduceSum", [g.mul(target, logp)], keepdims=0)
    if valid is None:
        return g.scale(total, -classes / g.b.types[logp].size)
    return g.div(g.neg(total), g.op("ReduceSum", [valid], keepdims=0))


def cross_entropy(g, logits, labels, label_smoothing=0.0, ignore_index=None):
    """torch.nn.functional.cross_entropy: the mean of -log softmax(logits)[label]
    over dim 1, with optional label smoothing and an ignored label value."""
    logits, axis = _untransposed(g, logits)
    logp = g.op("LogSoftmax", [logits], axis=axis)
    return _class_mean(g, logp, labels, label_smoothing, ignore_index, axis)


def _untransposed(g, logits):
    """(x, axis): logits made by Transpose(x) that brought x's `axis` to dim 1 and kept
    the other dims in order (a sequence model's (N, T, C).transpose(1, 2)) are read as
    x, class axis `axis`: the softmax runs along x's contiguous rows, and neither the
    forward nor the backward moves the logits (a Transpose there and one back)."""
    node = next((n for n in reversed(g.b.nodes) if logits in n.outputs), None)
    if node is None or node.op != "Transpose" or len(g.shape(logits)) < 2:
        return logits, 1
    perm = list(node.attr("perm") or range(len(g.shape(logits)))[::-1])
    rest = perm[:1] + perm[2:]
    return (node.inputs[0], perm[1]) if rest == sorted(rest) else (logits, 1)


def nll(g, logp, labels, ignore_index=None):
    return _class_mean(g, logp, labels, 0.0, ignore_index)


def mse(g, y, t):
    d = g.sub(y, t)
    return _mean_all(g, g.mul(d, d))


def l1(g, y, t):
    return _mean_all(g, g.op("Abs", [g.sub(y, t)]))


def huber(g, y, t, delta=1.0):
    d = g.sub(y, t)
    a = g.op("Abs", [d])
    small = g.op("Less", [a, g.scalar(delta, a)])
    quadratic = g.scale(g.mul(d, d), 0.5)
    linear = g.scale(g.sub(a, g.scalar(0.5 * delta, a)), delta)
    return _mean_all(g, g.where(small, quadratic, linear))


def bce_with_logits(g, x, t):
    """max(x, 0) - x t + log(1 + exp(-|x|)), the stable form torch uses."""
    zero = g.zero_like(x)
    relu = g.where(g.op("Greater", [x, zero]), x, zero)
    softplus = g.op("Log", [g.add(g.scalar(1.0, x), g.op("Exp", [g.neg(g.op("Abs", [x]))]))])
    return _mean_all(g, g.add(g.sub(relu, g.mul(x, t)), softplus))


LOSSES = {"cross_entropy": cross_entropy, "nll": nll, "mse": mse, "l1": l1, "huber": huber,
          "bce_with_logits": bce_with_logits}
CLASS_LABELS = {"cross_entropy", "nll"}      # these take int64 class indices
OPTIONS = {"cross_entropy": ("label_smoothing", "ignore_index"), "nll": ("ignore_index",)}


def get_loss(name):
    if callable(name):
        return name
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r} (choose from {sorted(LOSSES)}, or pass a "
                         "callable (output, target) -> scalar)") from None


# ---- targets and the loss on a traced graph -----------------------------------------

def data_specs(examples, prefix):
    """[(name, shape, DType)] for example arrays (one, or a tuple of several):
    integers become int64, floats float32 (torch's default dtype)."""
    items = list(examples) if isinstance(examples, (tuple, list)) else [examples]
    names = [prefix] if len(items) == 1 else [f"{prefix}_{i}" for i in range(len(items))]
    specs = []
    for name, item in zip(names, items):
        if hasattr(item, "detach") and hasattr(item, "numpy"):       # a torch tensor
            item = item.detach().cpu().numpy()
        array = item if hasattr(item, "shape") and hasattr(item, "dtype") else np.asarray(item)
        kind = np.dtype(getattr(array.dtype, "numpy", array.dtype)).kind
        dtype = {"i": DType.int64, "u": DType.int64, "b": DType.bool, "f": DType.float32}.get(kind)
        if dtype is None:
            raise TypeError(f"{name}: examples must be integer, bool or float arrays, got {array.dtype}")
        specs.append((name, tuple(int(d) for d in array.shape), dtype))
    return specs


def _flatten(result):
    if isinstance(result, (tuple, list)):
        return [t for r in result for t in _flatten(r)]
    return [result]


def _default_target(loss, output):
    """The target a built-in loss takes when no example_targets are given."""
    shape = output.type.shape
    if loss in CLASS_LABELS:
        return ("labels", tuple(shape[:1]) + tuple(shape[2:]), DType.int64)
    return ("labels", tuple(shape), DType.float32)


def _check_pair(loss, output, target):
    name, shape, dtype = target
    out = output.type.shape
    if loss in CLASS_LABELS:
        want = tuple(out[:1]) + tuple(out[2:])
        if len(out) < 2 or dtype != DType.int64 or tuple(shape) != want:
            raise ShapeError(f"loss '{loss}': output {out} takes int64 class labels of shape {want} "
                             f"(dim 1 holds the classes), got {dtype.value} {tuple(shape)} for {name}")
        return out[1]
    if dtype != DType.float32 or tuple(shape) != tuple(out):
        raise ShapeError(f"loss '{loss}': output {out} takes float targets of the same shape, "
                         f"got {dtype.value} {tuple(shape)} for {name}")
    return None


def attach_loss(b, result, targets, loss, options, targets_as_tuple=False, param_names=None):
    """Add the target inputs and the loss to builder `b`, whose forward returned
    `result` (Tensors). targets: [(name, shape, DType)], or None for a built-in
    loss's default. A callable loss runs as forward does (ns.* constructors and
    the module's Parameters work in it; param_names: id -> state_dict name).
    Returns (loss value name, the target specs, {target name: (classes,
    ignore_index)} for class labels to range-check)."""
    from nutshell.compiler.passes.autodiff import GradContext
    from nutshell.frontends.dsl import Tensor
    from nutshell.frontends.tensor import TraceContext
    outputs = _flatten(result)
    if not targets and callable(loss):          # forward computes the loss from its inputs
        with TraceContext(b, param_names or {}):
            try:
                return _scalar(b, loss(result, None)), [], {}
            except (AttributeError, TypeError) as exc:
                if "None" not in str(exc):
                    raise
                raise TypeError(f"the loss was called with target None, as no example_targets= "
                                f"were given ({exc})") from exc
    if targets is None:
        if len(outputs) != 1:
            raise TypeError(f"forward returns {len(outputs)} outputs: give example_targets=... "
                            "(a tuple, one per output) or a callable loss")
        targets = [_default_target(loss, outputs[0])]
    names = [b.add_input(n, d, s) for n, s, d in targets]
    if callable(loss):
        given = [Tensor(b, n) for n in names]
        with TraceContext(b, param_names or {}):
            value = loss(result, tuple(given) if targets_as_tuple else given[0])
        return _scalar(b, value), targets, {}
    fn = get_loss(loss)
    allowed = OPTIONS.get(loss, ())
    if any(k not in allowed for k in options):
        raise ValueError(f"loss '{loss}' takes no {sorted(set(options) - set(allowed))}")
    if len(outputs) != len(names):
        raise TypeError(f"loss '{loss}' pairs each output with a target: forward returns "
                        f"{len(outputs)}, example_targets has {len(names)} (or pass a callable loss)")
    g, total, classes = GradContext(b), None, {}
    for out, spec in zip(outputs, targets):
        count = _check_pair(loss, out, spec)
        if count is not None:
            classes[spec[0]] = (count, options.get("ignore_index"))
        value = fn(g, out.name, spec[0], **options)
        total = value if total is None else g.add(total, value)
    return total, targets, classes


def _scalar(b, value):
    from nutshell.frontends.dsl import Tensor
    if not isinstance(value, Tensor):
        raise TypeError(f"the loss function must return a traced Tensor, got {type(value).__name__}")
    shape = value.type.shape
    if int(np.prod(shape, dtype=np.int64)) != 1 or not value.type.dtype.is_float:
        raise ShapeError(f"the loss function must return a float scalar, got {value.type.dtype.value} "
                         f"of shape {shape} (reduce it with .mean() or .sum())")
    return value.name if shape == () else b.add_node(
        "Reshape", [value.name, b.add_constant(np.zeros(0, np.int64))])
