"""torch.nn.functional's losses on traced tensors, with torch's arguments and
reductions. Each is numerically stable: cross-entropy goes through LogSoftmax
(max-subtracted), the logits form of binary cross-entropy never takes exp of a
positive number, binary_cross_entropy clamps its logs at -100 as torch does."""
import numpy as np


from . import tensor as T
from .tensor_math import clamp, log_softmax


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _class_one_hot(target, classes, ndim):
    """[N, C, d1, ...] float: 1 at each target's class (none for ignored targets,
    whose index matches no class)."""
    target = T.tensor_of(target).long()
    shape = (1, classes) + (1,) * (ndim - 2)
    arange = T.constant(target.builder, np.arange(classes, dtype=np.int64).reshape(shape))
    return (target.unsqueeze(1) == arange).float()


def _class_weight(weight, x):
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return None if weight is None else T.tensor_of(weight).reshape(shape)


def _check_targets(x, target):
    if x.ndim < 2 or tuple(target.shape) != (x.shape[0],) + tuple(x.shape[2:]):
        raise ValueError(f"class targets of shape {tuple(target.shape)} do not fit input {tuple(x.shape)} "
                         "(expected [N] for [N, C], [N, d1, ...] for [N, C, d1, ...])")


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """-logp[target] (times weight[target]); the mean divides by the summed weights
    of the targets that are not ignore_index, as torch does."""
    logp, target = T.tensor_of(input), T.tensor_of(target)
    if logp.ndim == 1:
        return nll_loss(logp.unsqueeze(0), target.reshape(1), weight, ignore_index=ignore_index,
                        reduction=reduction)
    _check_targets(logp, target)
    hit = _class_one_hot(_ignored_to_none(target, ignore_index, logp.shape[1]), logp.shape[1], logp.ndim)
    w = _class_weight(weight, logp)
    picked = hit * w if w is not None else hit
    loss = -(picked * logp).sum(1)
    if reduction != "mean":
        return _reduce(loss, reduction)
    return loss.sum() / picked.sum()


def _ignored_to_none(target, ignore_index, classes):
    """ignore_index may be a valid class number (torch allows it): move such
    targets out of the class range so they match no class."""
    target = T.tensor_of(target).long()
    if 0 <= ignore_index < classes:
        return T.apply("Where", [target == ignore_index, target * 0 - 1, target])
    return target


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits [N, C] or [N, C, d1, ...] (classes on dim 1) with
    int64 class targets, or with class probabilities of the input's shape."""
    x, target = T.tensor_of(input), T.tensor_of(target)
    if x.ndim == 1:
        x, target = x.unsqueeze(0), target.unsqueeze(0) if target.dtype.is_float else target.reshape(1)
    logp = log_softmax(x, 1)
    classes, w = x.shape[1], _class_weight(weight, x)
    eps = float(label_smoothing)
    if target.dtype.is_float:                        # probabilities
        if eps:
            target = target * (1.0 - eps) + eps / classes
        terms = target * logp if w is None else target * logp * w
        return _reduce(-terms.sum(1), reduction)
    if not eps:
        return nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    _check_targets(x, target)
    hit = _class_one_hot(_ignored_to_none(target, ignore_index, classes), classes, x.ndim)
    valid = hit.sum(1, keepdim=True)                 # 1 for a counted target, 0 for an ignored one
    picked, spread = (hit, valid) if w is None else (hit * w, valid * w)
    nll = -(picked * logp).sum(1)
    smooth = -(spread * logp).sum(1)
    if reduction == "mean":
        total = picked.sum()
        return (nll.sum() * (1.0 - eps) + smooth.sum() * (eps / classes)) / total
    return _reduce(nll * (1.0 - eps) + smooth * (eps / classes), reduction)


def _pair(input, target):
    return T.promote(input, target)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    x, t = _pair(input, target)
    d = x - t
    return _reduce(d * d, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    x, t = _pair(input, target)
    return _reduce((x - t).abs(), reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    x, t = _pair(input, target)
    d = (x - t).abs()
    if beta == 0:
        return _reduce(d, reduction)
    loss = T.apply("Where", [d < beta, d * d * (0.5 / beta), d - 0.5 * beta])
    return _reduce(loss, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    x, t = _pair(input, target)
    d = (x - t).abs()
    loss = T.apply("Where", [d < delta, d * d * 0.5, (d - 0.5 * delta) * delta])
    return _reduce(loss, reduction)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """-(t log p + (1 - t) log(1 - p)), each log clamped at -100 (torch's guard)."""
    p, t = _pair(input, target)
    log_p = clamp(p.log(), min=-100.0)
    log_q = clamp((1.0 - p).log(), min=-100.0)
    loss = -(t * log_p + (1.0 - t) * log_q)
    return _reduce(loss * weight if weight is not None else loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """(1 - t) x + (1 + (pos_weight - 1) t) (log1p(exp(-|x|)) + max(-x, 0)):
    log(sigmoid) without ever exponentiating a positive number."""
    x, t = _pair(input, target)
    log_one_plus = (T.apply("Exp", [-x.abs()]) + 1.0).log() + (-x).relu()
    scale = (t * (T.tensor_of(pos_weight) - 1.0) + 1.0) if pos_weight is not None else None
    loss = (1.0 - t) * x + (log_one_plus * scale if scale is not None else log_one_plus)
    return _reduce(loss * weight if weight is not None else loss, reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """target * (log target - input), 0 where target is 0 (torch's xlogy)."""
    x, t = _pair(input, target)
    if log_target:
        loss = t.exp() * (t - x)
    else:
        safe = T.apply("Where", [t > 0, t, t * 0.0 + 1.0])
        loss = T.apply("Where", [t > 0, t * (safe.log() - x), t * 0.0])
    if reduction == "batchmean":
        return loss.sum() / x.shape[0]
    return _reduce(loss, reduction)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    x, t = _pair(input, target)
    z = -t * x
    return _reduce((T.apply("Exp", [-z.abs()]) + 1.0).log() + z.relu(), reduction)


__all__ = ["nll_loss", "cross_entropy", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "soft_margin_loss"]
