"""DropoutMask (nutshell domain): a counter-based random keep-mask, scaled by
1/(1-ratio). Element i of step t keeps iff hash(seed, t, i) >= ratio: the same
seed and step give the same mask in NumPy, in compiled code and at any thread
count, with no random state to carry between steps."""
import numpy as np

from ..ir.types import DType
from ..lower.loop_ir import Select, cast
from .common import fail, tt
from .registry import gradient, register, zero_gradient

M1, M2, GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15


def _splitmix_np(z):
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(M2)
        return z ^ (z >> np.uint64(31))


def _key(seed, step):
    with np.errstate(over="ignore"):
        return np.uint64(seed) * np.uint64(GOLDEN) + np.uint64(step) * np.uint64(M2)


def _reference(attrs, step):
    size = int(np.prod(attrs["shape"]))
    z = _splitmix_np(_key(attrs["seed"], int(np.asarray(step).reshape(-1)[0])) +
                     np.arange(size, dtype=np.uint64))
    u = (z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24
    keep = 1.0 / (1.0 - attrs["ratio"])
    return np.where(u >= attrs["ratio"], keep, 0.0).astype(np.float32).reshape(attrs["shape"])


def _infer(attrs, types, consts, node):
    if not 0.0 <= attrs["ratio"] < 1.0:
        fail(node, f"dropout ratio must be in [0, 1), got {attrs['ratio']}")
    if types[0].dtype != DType.int64 or types[0].size != 1:
        fail(node, "DropoutMask takes the step counter, one int64")
    return [tt(DType.float32, attrs["shape"])]


def _splitmix(z):
    z = (z ^ (z >> 30)) * M1
    z = (z ^ (z >> 27)) * M2
    return z ^ (z >> 31)


def _store_hashed(ctx, seed, value):
    """out[idx] = value(splitmix(key(seed, step) + idx)) for every element, in
    4096-element chunks (parallel when large), the loop DropoutMask and RandomUniform share."""
    size, step, out, nb = ctx.out_types[0].size, ctx.inputs[0], ctx.outputs[0], ctx.nb
    seed_key = int(_key(seed, 0))
    chunk = 4096
    with nb.loop(-(-size // chunk), hint="c", parallel_candidate=("map", size)) as c:
        with nb.loop(chunk, "vector", ctx.lanes(DType.int64), hint="i") as i:
            idx = c * chunk + i
            key = step[0] * M2 + seed_key
            nb.store(out, idx, value(_splitmix(key + idx)), mask=idx < size)


def _lower(ctx):
    ratio = ctx.attrs["ratio"]
    keep = 1.0 / (1.0 - ratio)

    def mask(z):
        u = cast(z >> 40, DType.float32) * (2.0 ** -24)
        return Select(u >= ratio, keep, 0.0)
    _store_hashed(ctx, ctx.attrs["seed"], mask)


register("DropoutMask", inputs=(1, 1), attrs={"ratio": 0.5, "seed": 0, "shape": None},
         infer=_infer, reference=_reference, lower=_lower, domain="nutshell")
gradient("DropoutMask")(zero_gradient)     # its input is the step counter


def _uniform_values(attrs, step):
    """u in (0, 1), never 0 or 1 (so log(u) and log(1 - u) are finite): 23 hash
    bits plus a half, exact in float32. A different stream than DropoutMask's."""
    size = int(np.prod(attrs["shape"]))
    z = _splitmix_np(_key(attrs["seed"] ^ 0x5DEECE66D, int(np.asarray(step).reshape(-1)[0])) +
                     np.arange(size, dtype=np.uint64))
    return (((z >> np.uint64(41)).astype(np.float64) + 0.5) * 2.0 ** -23).astype(np.float32).reshape(attrs["shape"])


def _uniform_infer(attrs, types, consts, node):
    if types[0].dtype != DType.int64 or types[0].size != 1:
        fail(node, "RandomUniform takes the step counter, one int64")
    return [tt(DType.float32, attrs["shape"])]


def _uniform_lower(ctx):
    _store_hashed(ctx, ctx.attrs["seed"] ^ 0x5DEECE66D,
                  lambda z: (cast(z >> 41, DType.float32) + 0.5) * (2.0 ** -23))


# RandomUniform (nutshell domain): torch.rand in a traced forward; keyed like DropoutMask by
# (seed, step, index), so every training step draws afresh and runs are reproducible.
register("RandomUniform", inputs=(1, 1), attrs={"seed": 0, "shape": None}, infer=_uniform_infer,
         reference=_uniform_values, lower=_uniform_lower, domain="nutshell")
gradient("RandomUniform")(zero_gradient)
