"""Weight initialisers (seeded through the Parameter's generator): He/Kaiming and
Xavier/Glorot, uniform and normal, and PyTorch's default for Linear/Conv."""
import numpy as np


def fans(shape):
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    fan_in = shape[1] * receptive if len(shape) > 1 else shape[0]
    return fan_in, shape[0] * receptive


def he_normal(rng, shape):
    return rng.normal(0.0, np.sqrt(2.0 / fans(shape)[0]), shape)


def he_uniform(rng, shape):
    bound = np.sqrt(6.0 / fans(shape)[0])
    return rng.uniform(-bound, bound, shape)


def xavier_normal(rng, shape):
    fan_in, fan_out = fans(shape)
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)


def xavier_uniform(rng, shape):
    fan_in, fan_out = fans(shape)
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)


def torch_default(rng, shape):
    """kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as torch does."""
    bound = 1.0 / np.sqrt(fans(shape)[0])
    return rng.uniform(-bound, bound, shape)


def zeros(rng, shape):
    return np.zeros(shape)


def ones(rng, shape):
    return np.ones(shape)


WEIGHT_INITS = {"he_normal": he_normal, "he_uniform": he_uniform, "xavier_normal": xavier_normal,
                "xavier_uniform": xavier_uniform, "torch": torch_default}


def weight_init(name):
    if callable(name):
        return name
    try:
        return WEIGHT_INITS[name]
    except KeyError:
        raise ValueError(f"unknown init '{name}' (choose from {sorted(WEIGHT_INITS)})") from None


def bias_init(name, fan_in):
    """torch's default bias is U(-1/sqrt(fan_in), ..); He/Xavier nets start at zero."""
    if name == "torch":
        bound = 1.0 / np.sqrt(fan_in)
        return lambda rng, shape: rng.uniform(-bound, bound, shape)
    return zeros
