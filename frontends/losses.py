"""Losses, composed from primitive ops so autodiff differentiates them like any
other graph. Each takes a GradContext, the network's output and the target
input and returns the name of a scalar (shape ()) mean loss."""
import numpy as np

from nutshell.compiler.ir.types import DType

ONNX_FLOAT = 1      # TensorProto.FLOAT, for Cast


def _mean_all(g, x):
    total = g.op("ReduceSum", [x], keepdims=0)
    return g.scale(total, 1.0 / g.b.types[x].size)


def _one_hot(g, labels, classes):
    n = g.shape(labels)[0]
    column = g.reshape(labels, (n, 1))
    hit = g.op("Equal", [column, g.const(np.arange(classes, dtype=np.int64), DType.int64)])
    return g.op("Cast", [hit], to=ONNX_FLOAT)


def cross_entropy(g, logits, labels, label_smoothing=0.0):
    """Mean of -log softmax(logits)[label] (torch.nn.functional.cross_entropy),
    with optional label smoothing."""
    n, classes = g.shape(logits)
    logp = g.op("LogSoftmax", [logits], axis=1)
    target = _one_hot(g, labels, classes)
    if label_smoothing:
        target = g.add(g.scale(target, 1.0 - label_smoothing), g.scalar(label_smoothing / classes, target))
    return g.scale(g.op("ReduceSum", [g.mul(target, logp)], keepdims=0), -1.0 / n)


def nll(g, logp, labels):
    n, classes = g.shape(logp)
    return g.scale(g.op("ReduceSum", [g.mul(_one_hot(g, labels, classes), logp)], keepdims=0), -1.0 / n)


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


def get_loss(name):
    if callable(name):
        return name
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}' (choose from {sorted(LOSSES)})") from None
