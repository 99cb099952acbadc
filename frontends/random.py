"""torch.rand / randn / bernoulli in a traced forward (a VAE's noise), and
outside one (seeded NumPy draws, as eager tensors).

Inside a training step the draw is keyed by (call site, step), so each step
samples afresh, reproducibly under ns.manual_seed; an inference graph has no
step counter and draws the same values on every call. Normal values come from
uniform ones through Acklam's inverse normal CDF (relative error 1.2e-9, far
below float32's), composed from Log, Sqrt and Where."""
import numpy as np

from nutshell.compiler.ir.types import DType

from . import dsl
from . import tensor as T

_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
      -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
      -1.328068155288572e+01, 1.0)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
      4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00, 1.0)
_P_LOW = 0.02425


def call_seed(builder):
    """A seed per random call site of this trace (F.dropout's too)."""
    builder.trace.random_calls += 1
    return (dsl._seed["base"] * 1_000_003 + 7919 * builder.trace.random_calls + 17) % (1 << 31)


def step_value(builder):
    """The training step counter, or a constant 0 in graphs that have none."""
    if builder.trace.step is not None:
        return T.Tensor(builder, builder.trace.step)
    return T.constant(builder, np.zeros(1, np.int64))


def _shape(size):
    return tuple(int(s) for s in (size[0] if len(size) == 1 and isinstance(size[0], (tuple, list)) else size))


def _eager_rng():
    return np.random.default_rng([dsl._seed["base"], next(dsl._seed["counter"]), 11])


def _uniform(builder, shape):
    return T.apply("RandomUniform", [step_value(builder)], seed=call_seed(builder), shape=shape)


def _poly(coefs, x):
    out = x * coefs[0] + coefs[1]
    for c in coefs[2:]:
        out = out * x + c
    return out


def inverse_normal_cdf(p):
    """Acklam's rational approximation of the standard normal quantile."""
    q = p - 0.5
    r = q * q
    central = _poly(_A, r) * q / _poly(_B, r)
    tail_p = T.apply("Where", [p < 0.5, p, 1.0 - p])
    s = (tail_p.log() * -2.0).sqrt()
    tail = _poly(_C, s) / _poly(_D, s)
    tail = T.apply("Where", [p < 0.5, tail, -tail])
    return T.apply("Where", [q.abs() <= 0.5 - _P_LOW, central, tail])


def rand(*size, dtype=None, **_):
    builder = T.active_builder()
    if builder is None:
        return T.constant(T.eager_builder(), _eager_rng().random(_shape(size)).astype(np.float32))
    return _uniform(builder, _shape(size))


def randn(*size, dtype=None, **_):
    builder = T.active_builder()
    if builder is None:
        return T.constant(T.eager_builder(), _eager_rng().standard_normal(_shape(size)).astype(np.float32))
    return inverse_normal_cdf(_uniform(builder, _shape(size)))


def rand_like(x, dtype=None, **_):
    x = T.tensor_of(x)
    return _uniform(x.builder, x.shape) if not getattr(x.builder, "eager", False) else rand(x.shape)


def randn_like(x, dtype=None, **_):
    x = T.tensor_of(x)
    if getattr(x.builder, "eager", False):
        return randn(x.shape)
    return inverse_normal_cdf(_uniform(x.builder, x.shape))


def bernoulli(p, **_):
    p = T.tensor_of(p)
    return (rand_like(p) < p).to(p.dtype)


def normal(mean, std, size=None, **_):
    if size is not None:
        return randn(size) * std + mean
    like = mean if isinstance(mean, T.Tensor) else std
    return randn_like(like) * std + mean


__all__ = ["rand", "randn", "rand_like", "randn_like", "bernoulli", "normal"]
