"""The Python DSL core: symbolic Tensors, Parameters, Modules and tracing.

A Module's forward() runs on symbolic Tensors; each operation appends a node to
a GraphBuilder, so tracing a module at an input shape gives a static Graph whose
constants are the parameters, named as PyTorch's state_dict names them."""
import itertools
from collections import OrderedDict

import numpy as np

from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.ir.types import DType

from .module_repr import module_repr
from .param_data import ParamData, _Size
from .tensor import (Tensor, TraceContext, active_builder, apply, as_dtype, constant,  # noqa: F401
                     param_value, traced_param)
from .tracing import InputSpec, TraceState, input_specs, output_names  # noqa: F401

_seed = {"base": 0, "counter": itertools.count()}


def manual_seed(seed):
    """Seed every parameter created from now on (like torch.manual_seed)."""
    _seed["base"], _seed["counter"] = int(seed), itertools.count()


def next_seed():
    """A seed for a random layer (dropout), reproducible under manual_seed."""
    return (_seed["base"] * 1_000_003 + next(_seed["counter"])) % (1 << 31)


class Parameter:
    """A trainable tensor, created lazily from its seeded initializer so that large
    models (AlexNet's 62M) cost nothing until their values are needed.

    Parameter(shape, init) as the layers make them, or Parameter(array) as torch
    code does (`nn.Parameter(torch.zeros(1, 1, d))`). Inside forward() it acts
    as a tensor (`x @ self.w`, `self.w.t()`). requires_grad=False freezes it:
    trainers read it and never update it."""

    def __init__(self, shape, init=None, requires_grad=True):
        if init is None or isinstance(init, bool):          # Parameter(data[, requires_grad])
            data = shape.data if isinstance(shape, Parameter) else shape
            requires_grad = requires_grad if init is None else init
            self._init, self._rng_key = None, None
            self._data = np.array(data, dtype=np.float32, order="C")
            self.shape = self._data.shape
        else:
            self.shape = tuple(int(d) for d in shape)
            self._init, self._rng_key = init, (_seed["base"], next(_seed["counter"]))
            self._data = None
        self.requires_grad = bool(requires_grad)

    @property
    def data(self):
        if self._data is None:
            rng = np.random.default_rng(list(self._rng_key))
            self._data = np.asarray(self._init(rng, self.shape), dtype=np.float32, order="C")
        return self._data.view(ParamData)      # a view: torch's `.data.uniform_(...)` writes through

    @data.setter
    def data(self, value):
        value = np.asarray(value, dtype=np.float32)
        if value.shape != self.shape:
            raise ValueError(f"parameter of shape {self.shape} cannot take {value.shape}")
        self._data = np.asarray(value, order="C")

    @property
    def size(self):
        """The element count (an int), also callable as torch's p.size() / p.size(dim)."""
        return _Size(int(np.prod(self.shape, dtype=np.int64)), self.shape)

    def numel(self):
        return self.size

    def dim(self):
        return len(self.shape)

    ndim = property(dim)
    dtype = DType.float32

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = bool(requires_grad)
        return self

    def __getstate__(self):        # pickle the values, not the initializer (often a closure)
        state = dict(self.__dict__)
        state["_data"], state["_init"] = self.data, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, requires_grad={self.requires_grad})"

    def _traced(self):
        return traced_param(self)

    def __getattr__(self, name):    # tensor methods inside forward(): self.w.t(), self.w.T ...
        if name.startswith("_") or active_builder() is None:
            raise AttributeError(f"'Parameter' object has no attribute '{name}' (tensor methods "
                                 "work on it inside forward() while tracing)")
        return getattr(self._traced(), name)


def _param_operator(name):
    def method(self, *args):
        return getattr(self._traced(), name)(*args)
    method.__name__ = name
    return method


for _op in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "matmul", "rmatmul",
            "neg", "pow", "rpow", "getitem", "lt", "gt", "le", "ge"):
    setattr(Parameter, f"__{_op}__", _param_operator(f"__{_op}__"))


class Module:
    """Base class of layers, as torch.nn.Module: parameters, buffers, children,
    state_dict with PyTorch's names, train()/eval(), print and pickle."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffers", ()):
            self._buffers[name] = np.asarray(value, order="C")
            return
        else:
            for registry in ("_parameters", "_modules"):
                self.__dict__.get(registry, {}).pop(name, None)
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        """Buffers as attributes (torch's `self.mask`): a graph value inside a
        trace, the NumPy array outside."""
        buffers = self.__dict__.get("_buffers", {})
        if name in buffers:
            builder = active_builder()
            if builder is not None and "_trace_prefix" in self.__dict__:
                return self.buffer(builder, name)
            return buffers[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def register_buffer(self, name, array, persistent=True):
        self._buffers[name] = np.asarray(array, order="C")

    def register_parameter(self, name, param):
        setattr(self, name, param)

    def add_module(self, name, module):
        setattr(self, name, module)

    register_module = add_module

    def forward(self, x):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        if active_builder() is not None or any(isinstance(a, Tensor) for a in args + tuple(kwargs.values())):
            return self.forward(*args, **kwargs)
        raise TypeError("call a module on a traced Tensor; compile it with ns.compile(module, "
                        "input_shape=...) to run it on arrays")

    def _walk(self, prefix=""):
        """Every (name, module) pair, shared submodules under each of their names."""
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child._walk(f"{prefix}.{name}" if prefix else name)

    def named_modules(self, prefix=""):
        seen = set()
        for name, mod in self._walk(prefix):
            if id(mod) not in seen:
                seen.add(id(mod))
                yield name, mod

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def named_parameters(self):
        """Each parameter once, under its first name (a tied weight appears once)."""
        seen = set()
        for full, p in self._all_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield full, p

    def _all_parameters(self):
        for prefix, mod in self._walk():
            for name, p in mod._parameters.items():
                if p is not None:
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, mod in self.named_modules():
            for name in mod._buffers:
                yield (f"{prefix}.{name}" if prefix else name), mod, name

    def buffers(self):
        return [mod._buffers[name] for _, mod, name in self.named_buffers()]

    def num_parameters(self):
        """Trainable parameter count (what torch's sum(p.numel()) gives)."""
        return sum(p.size for p in self.parameters())

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter; trainers never update frozen ones."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def apply(self, fn):
        """fn(module) on every submodule, children first, then self (torch's order)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, *args, **kwargs):      # one device, float32 parameters: nothing to move
        return self

    def cpu(self):
        return self

    def zero_grad(self, set_to_none=True):
        """Gradients live inside the compiled training step; nothing to clear."""

    def extra_repr(self):
        return ""

    def __repr__(self):
        return module_repr(self)

    def __dir__(self):
        return list(super().__dir__()) + list(self._buffers)

    def __getstate__(self):     # tracing leaves per-trace bookkeeping behind; pickle without it
        return {k: v for k, v in self.__dict__.items() if k not in ("_trace_names", "_trace_prefix")}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def state_dict(self):
        state = OrderedDict()
        for prefix, mod in self._walk():
            dot = f"{prefix}." if prefix else ""
            for name, p in mod._parameters.items():
                if p is not None:
                    state[dot + name] = p.data.copy()
            for name, b in mod._buffers.items():
                state[dot + name] = b.copy()
        return state

    def load_state_dict(self, state, strict=True):
        """Take NumPy arrays (e.g. a torch state_dict converted with .numpy())."""
        own = dict(self._all_parameters())
        buffers = {}
        for prefix, mod in self._walk():
            for name in mod._buffers:
                buffers[f"{prefix}.{name}" if prefix else name] = (mod, name)
        missing = [k for k in list(own) + list(buffers) if k not in state]
        unexpected = [k for k in state if k not in own and k not in buffers]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            value = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
            if key in own:
                own[key].data = value
            elif key in buffers:
                mod, name = buffers[key]
                old = mod._buffers[name]
                if value.shape != old.shape:
                    raise ValueError(f"{key}: expected shape {old.shape}, got {value.shape}")
                mod._buffers[name] = np.asarray(value, dtype=old.dtype, order="C")

    def train(self, mode=True):
        for _, mod in self.named_modules():
            object.__setattr__(mod, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def trace(self, input_shape=None, input_name="input", dtype=DType.float32, name=None,
              mode="inference", builder=None, example_inputs=None):
        """The static Graph of forward() at `input_shape`, or called on
        `example_inputs` (an array, an InputSpec, or a tuple/list of them: one
        graph input each, named `input` when there is one and `input_0`,
        `input_1`, ... when there are several; float64 arrays trace as float32,
        as torch's default dtype). forward may return a tensor or a (nested)
        tuple/list of tensors: one graph output each, in order.

        mode "inference": parameters and buffers are constants named by their
        state_dict keys, BatchNorm uses running statistics, Dropout is identity.
        mode "training": parameters and buffers are graph inputs (the trainer's
        state); layers whose `training` flag is set use batch statistics and
        dropout masks, and record their buffer updates in `trace_state`.
        mode "state": parameters and buffers are inputs, layers act as in inference
        (a trainer's evaluation model, reading the live state).
        `graph.trace_state` lists the data inputs (`inputs`), the parameters
        (`params`, of which `frozen` have requires_grad False) and buffers."""
        if mode not in ("inference", "training", "state"):
            raise ValueError(f"unknown trace mode '{mode}'")
        specs = input_specs(input_shape, dtype, example_inputs, input_name)
        builder = builder or GraphBuilder(name or type(self).__name__.lower())
        builder.trace = TraceState(mode == "training", mode != "inference")
        if mode == "training":
            builder.trace.step = builder.add_input("step", DType.int64, (1,))
        xs = [Tensor(builder, builder.add_input(n, t, s)) for n, s, t in specs]
        builder.trace.inputs = [x.name for x in xs]
        names = {id(p): n for n, p in self.named_parameters()}
        for prefix, mod in self.named_modules():
            object.__setattr__(mod, "_trace_names", names)
            object.__setattr__(mod, "_trace_prefix", f"{prefix}." if prefix else "")
        with TraceContext(builder, names):
            builder.set_outputs(output_names(builder, self.forward(*xs)))
        graph = builder.build()
        graph.trace_state = builder.trace
        return graph

    def param(self, builder, p):
        """The graph value for parameter `p` (a constant, or a state input when training)."""
        return param_value(builder, self._trace_names[id(p)], p)

    def buffer(self, builder, bname):
        full = self._trace_prefix + bname
        if full not in builder.types:
            array = self._buffers[bname]
            if builder.trace.state_inputs:
                builder.add_input(full, DType.from_numpy(array.dtype), array.shape)
                builder.trace.buffers.append(full)
            else:
                builder.add_constant(array, full)
        return Tensor(builder, full)

    def training_now(self, x):
        """True when this layer runs in training mode in the graph being traced."""
        return self.training and x.builder.trace.training
