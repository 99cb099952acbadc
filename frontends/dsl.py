"""The Python DSL core: symbolic Tensors, Parameters, Modules and tracing.

A Module's forward() runs on symbolic Tensors; each operation appends a node to
a GraphBuilder, so tracing a module at an input shape gives a static Graph whose
constants are the parameters, named as PyTorch's state_dict names them."""
import itertools
from collections import OrderedDict

import numpy as np

from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.ir.types import DType, TensorType

_seed = {"base": 0, "counter": itertools.count()}


def manual_seed(seed):
    """Seed every parameter created from now on (like torch.manual_seed)."""
    _seed["base"], _seed["counter"] = int(seed), itertools.count()


def next_seed():
    """A seed for a random layer (dropout), reproducible under manual_seed."""
    return (_seed["base"] * 1_000_003 + next(_seed["counter"])) % (1 << 31)


class Parameter:
    """A trainable tensor, created lazily from its seeded initializer so that large
    models (AlexNet's 62M) cost nothing until their values are needed."""

    def __init__(self, shape, init):
        self.shape = tuple(int(d) for d in shape)
        self._init, self._rng_key = init, (_seed["base"], next(_seed["counter"]))
        self._data = None

    @property
    def data(self):
        if self._data is None:
            rng = np.random.default_rng(list(self._rng_key))
            self._data = np.asarray(self._init(rng, self.shape), dtype=np.float32, order="C")
        return self._data

    @data.setter
    def data(self, value):
        value = np.asarray(value, dtype=np.float32)
        if value.shape != self.shape:
            raise ValueError(f"parameter of shape {self.shape} cannot take {value.shape}")
        self._data = np.asarray(value, order="C")

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))


class Tensor:
    """A symbolic value during tracing: `.shape`, `.dtype`, arithmetic operators."""

    def __init__(self, builder, name):
        self.builder, self.name = builder, name

    @property
    def type(self) -> TensorType:
        return self.builder.types[self.name]

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    def _other(self, other):
        if isinstance(other, Tensor):
            return other
        return constant(self.builder, np.asarray(other, dtype=self.dtype.numpy))

    def __add__(self, o): return apply("Add", [self, self._other(o)])
    def __radd__(self, o): return apply("Add", [self._other(o), self])
    def __sub__(self, o): return apply("Sub", [self, self._other(o)])
    def __rsub__(self, o): return apply("Sub", [self._other(o), self])
    def __mul__(self, o): return apply("Mul", [self, self._other(o)])
    def __rmul__(self, o): return apply("Mul", [self._other(o), self])
    def __truediv__(self, o): return apply("Div", [self, self._other(o)])
    def __rtruediv__(self, o): return apply("Div", [self._other(o), self])
    def __matmul__(self, o): return apply("MatMul", [self, self._other(o)])
    def __neg__(self): return apply("Neg", [self])

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return apply("Reshape", [self, constant(self.builder, np.asarray(shape, dtype=np.int64))])

    def flatten(self, start_dim=1):
        return apply("Flatten", [self], axis=start_dim)


def constant(builder, array, name=None):
    return Tensor(builder, builder.add_constant(array, name))


def apply(op, inputs, outputs=1, **attrs):
    """Append `op` to the graph being traced; returns the output Tensor(s)."""
    builder = inputs[0].builder
    names = builder.add_node(op, [t.name if t is not None else "" for t in inputs], attrs,
                             num_outputs=outputs)
    if isinstance(names, tuple):
        return tuple(Tensor(builder, n) for n in names)
    return Tensor(builder, names)


class Module:
    """Base class of layers, as torch.nn.Module: parameters, buffers, children,
    state_dict with PyTorch's names, train()/eval()."""

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
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        self._buffers[name] = np.asarray(array, order="C")

    def forward(self, x):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        if any(isinstance(a, Tensor) for a in list(args) + list(kwargs.values())):
            return self.forward(*args, **kwargs)
        raise TypeError("call a module on a traced Tensor; compile it with ns.compile(module, "
                        "input_shape=...) to run it on arrays")

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self):
        for prefix, mod in self.named_modules():
            for name, p in mod._parameters.items():
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, mod in self.named_modules():
            for name in mod._buffers:
                yield (f"{prefix}.{name}" if prefix else name), mod, name

    def num_parameters(self):
        """Trainable parameter count (what torch's sum(p.numel()) gives)."""
        return sum(p.size for p in self.parameters())

    def state_dict(self):
        state = OrderedDict()
        for prefix, mod in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, p in mod._parameters.items():
                state[dot + name] = p.data.copy()
            for name, b in mod._buffers.items():
                state[dot + name] = b.copy()
        return state

    def load_state_dict(self, state, strict=True):
        """Take NumPy arrays (e.g. a torch state_dict converted with .numpy())."""
        own = dict(self.named_parameters())
        buffers = {full: (mod, name) for full, mod, name in self.named_buffers()}
        missing = [k for k in list(own) + list(buffers) if k not in state]
        unexpected = [k for k in state if k not in own and k not in buffers]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            value = np.asarray(value)
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
        The data inputs' names are in `graph.trace_state.inputs`."""
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
        builder.set_outputs(output_names(builder, self.forward(*xs)))
        graph = builder.build()
        graph.trace_state = builder.trace
        return graph

    def param(self, builder, p):
        """The graph value for parameter `p` (a constant, or a state input when training)."""
        name = self._trace_names[id(p)]
        if name not in builder.types:
            if builder.trace.state_inputs:
                builder.add_input(name, DType.float32, p.shape)
                builder.trace.params.append(name)
            else:
                builder.add_constant(p.data, name)
        return Tensor(builder, name)

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


class TraceState:
    """What a training trace collects: the state inputs and their per-step updates."""

    def __init__(self, training, state_inputs):
        self.training, self.state_inputs = training, state_inputs
        self.step = None           # the int64 step counter input (dropout masks, schedules)
        self.params = []           # state inputs that get gradients
        self.buffers = []          # state inputs updated by layers (running statistics)
        self.updates = {}          # buffer name -> value name of its next value
        self.inputs = []           # the data inputs' names, in forward's argument order


class InputSpec:
    """An example input given by shape and dtype alone (no data needed)."""

    def __init__(self, shape, dtype=DType.float32):
        self.shape, self.dtype = tuple(int(d) for d in shape), as_dtype(dtype)

    def __repr__(self):
        return f"InputSpec({self.shape}, {self.dtype.value})"


def as_dtype(dtype):
    """A DType from a DType, a NumPy dtype or its name; float64 stays float64."""
    if isinstance(dtype, DType):
        return dtype
    return DType.from_numpy(getattr(dtype, "numpy_dtype", dtype))


def _example_spec(example):
    if isinstance(example, InputSpec):
        return example.shape, example.dtype
    if hasattr(example, "detach") and hasattr(example, "numpy"):     # a torch tensor
        example = example.detach().cpu().numpy()
    array = example if hasattr(example, "shape") and hasattr(example, "dtype") else np.asarray(example)
    dtype = DType.float32 if np.dtype(array.dtype) == np.float64 else as_dtype(array.dtype)
    return tuple(int(d) for d in array.shape), dtype


def input_specs(input_shape, dtype, example_inputs, input_name="input"):
    """[(name, shape, dtype)] of the traced graph's data inputs."""
    if example_inputs is None:
        if input_shape is None:
            raise ValueError("tracing needs input_shape=... or example_inputs=...")
        return [(input_name, tuple(input_shape), as_dtype(dtype))]
    if input_shape is not None:
        raise ValueError("give input_shape or example_inputs, not both")
    if isinstance(example_inputs, (tuple, list)):
        examples = [_example_spec(e) for e in example_inputs]
        if len(examples) == 1:
            return [(input_name,) + examples[0]]
        return [(f"input_{i}",) + e for i, e in enumerate(examples)]
    return [(input_name,) + _example_spec(example_inputs)]


def _flatten_outputs(out):
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten_outputs(o)]
    if not isinstance(out, Tensor):
        raise TypeError(f"forward must return tensors (or tuples of them), got {type(out).__name__}")
    return [out]


def output_names(builder, out):
    """The graph outputs for forward's result; an input, a constant or a value
    returned twice gets an Identity so that each output has its own buffer."""
    names, inputs = [], {v.name for v in builder.inputs}
    for t in _flatten_outputs(out):
        name = t.name
        if name in names or name in inputs or name in builder.constants:
            name = builder.add_node("Identity", [name])
        names.append(name)
    return names
