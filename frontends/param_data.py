"""`parameter.data` as torch code uses it: a NumPy view of the values with
torch's in-place methods (`m.weight.data.uniform_(-r, r)`, `.zero_()`,
`.normal_(0, 0.02)`, `.fill_(1)`, `.copy_(t)`, `.mul_(s)`), writing through
to the Parameter."""
import numpy as np


class _Size(int):
    """An element count that is also torch's size(): p.size() is the shape, p.size(d) one dim."""
    def __new__(cls, count, shape):
        out = super().__new__(cls, count)
        out.shape = tuple(shape)
        return out

    def __call__(self, dim=None):
        return self.shape if dim is None else self.shape[dim]


class ParamData(np.ndarray):
    @property
    def size(self):
        return _Size(np.ndarray.size.__get__(self), self.shape)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # arithmetic on the values gives plain arrays; only the view itself is special
        array = array.view(np.ndarray)
        return array[()] if return_scalar else array

    def uniform_(self, a=0.0, b=1.0, generator=None):
        from . import torch_init
        return torch_init.uniform_(self, a, b)

    def normal_(self, mean=0.0, std=1.0, generator=None):
        from . import torch_init
        return torch_init.normal_(self, mean, std)

    def zero_(self):
        self[...] = 0.0
        return self

    def fill_(self, value):
        self[...] = float(value)
        return self

    def copy_(self, source, non_blocking=False):
        source = source.detach().cpu().numpy() if hasattr(source, "detach") else np.asarray(source)
        self[...] = np.broadcast_to(source, self.shape)
        return self

    def mul_(self, value):
        self[...] *= np.asarray(value, np.float32)
        return self

    def add_(self, value, alpha=1.0):
        self[...] += np.asarray(value, np.float32) * alpha
        return self

    def clamp_(self, min=None, max=None):    # noqa: A002 (torch's names)
        np.clip(self, min, max, out=self)
        return self
