"""Containers and reshaping layers: ModuleList, ModuleDict, Unflatten.

Children are registered under the keys PyTorch uses ("0", "1", ... for a list,
the dict's keys for a dict), so state_dict names match torch's."""
from collections import OrderedDict

from .dsl import Module
from .layers_ops import reshape


class ModuleList(Module):
    def __init__(self, modules=None):
        super().__init__()
        for m in modules or ():
            self.append(m)

    def _keys(self):
        return list(self._modules)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        items = list(self._modules.values())
        items.insert(index, module)
        self._modules.clear()
        for m in items:
            self.append(m)

    def __getitem__(self, i):
        items = list(self._modules.values())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]

    def __setitem__(self, i, module):
        setattr(self, self._keys()[i], module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __add__(self, other):
        return ModuleList(list(self) + list(other))

    def forward(self, *args):
        raise NotImplementedError("a ModuleList has no forward(); iterate over it")


class ModuleDict(Module):
    def __init__(self, modules=None):
        super().__init__()
        self.update(modules or {})

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for key, m in items:
            self[key] = m

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict values must be modules, got {type(module).__name__}")
        setattr(self, str(key), module)

    def __delitem__(self, key):
        del self._modules[key]
        object.__delattr__(self, key)

    def __contains__(self, key):
        return key in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules))

    def keys(self):
        return list(self._modules.keys())

    def values(self):
        return list(self._modules.values())

    def items(self):
        return list(OrderedDict(self._modules).items())

    def pop(self, key):
        m = self._modules[key]
        del self[key]
        return m

    def forward(self, *args):
        raise NotImplementedError("a ModuleDict has no forward(); index it")


class Unflatten(Module):
    """Split dimension `dim` into `unflattened_size` (one entry may be -1)."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = int(dim), tuple(int(s) for s in unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

    def forward(self, x):
        shape = list(x.shape)
        dim = self.dim % len(shape)
        sizes = list(self.unflattened_size)
        if sizes.count(-1) > 1:
            raise ValueError("Unflatten takes at most one -1 size")
        known = 1
        for s in sizes:
            known *= s if s != -1 else 1
        if -1 in sizes:
            sizes[sizes.index(-1)] = shape[dim] // max(known, 1)
        total = 1
        for s in sizes:
            total *= s
        if total != shape[dim]:
            raise ValueError(f"Unflatten: sizes {self.unflattened_size} do not multiply to "
                             f"dimension {dim}'s {shape[dim]}")
        return reshape(x, shape[:dim] + sizes + shape[dim + 1:])


__all__ = ["ModuleList", "ModuleDict", "Unflatten"]
