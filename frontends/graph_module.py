"""A Graph (from ONNX) as an ns.nn Module, so it trains like a DSL network.

from_graph(path or bytes or ModelProto, or a Graph from ns.load_onnx) picks the
initializers a user would train (see graph_import.py) as Parameters named as in
the file (a torch export keeps PyTorch's state_dict names); BatchNormalization
statistics become buffers, and in training mode the node uses batch statistics
and updates them, as PyTorch does. A graph with several inputs takes them as
forward's arguments, in the graph's order."""
import numpy as np

from nutshell.compiler.errors import GraphError, ModelLoadError
from .dsl import Module, Parameter, Tensor, apply, constant, next_seed
from .graph_import import choose_state, import_for_training, uses
from .layers import batch_norm_train


def _keep(array):
    return lambda rng, shape: array


class GraphModule(Module):
    """params / buffers: name -> initial array for the graph values that are state
    (graph inputs, or constants to lift); dropouts: value name -> ratio of the
    Identity nodes that are Dropouts in training."""

    def __init__(self, graph, params=None, buffers=None, dropouts=None):
        super().__init__()
        object.__setattr__(self, "graph", graph)
        params, buffers = dict(params or {}), dict(buffers or {})
        for name, array in params.items():
            self._parameters[name] = Parameter(array.shape, _keep(np.asarray(array, np.float32)))
        for name, array in buffers.items():
            self.register_buffer(name, np.asarray(array, np.float32))
        object.__setattr__(self, "data_inputs",
                           [v.name for v in graph.inputs if v.name not in params and v.name not in buffers])
        object.__setattr__(self, "dropouts", {name: (ratio, next_seed())
                                              for name, ratio in (dropouts or {}).items()})

    def forward(self, *xs):
        if len(xs) != len(self.data_inputs):
            raise ValueError(f"this graph takes {len(self.data_inputs)} input(s) "
                             f"({', '.join(self.data_inputs)}), got {len(xs)}")
        b = xs[0].builder
        env = dict(zip(self.data_inputs, xs))
        env.update(self._state_values(b))
        for node in self.graph.nodes:
            args = [self._value(b, env, i) for i in node.inputs]
            out = self._node(node, args, xs[0])
            outs = out if isinstance(out, tuple) else (out,)
            env.update(zip(node.outputs, outs))
        results = [env[v.name] for v in self.graph.outputs]
        return results[0] if len(results) == 1 else tuple(results)

    def _state_values(self, b):
        """Every parameter and buffer, added before any node so the trace's fresh
        value names can never take one of their names."""
        mine = b.__dict__.setdefault("graph_module_state", set())
        values = {}
        for name, p in self._parameters.items():
            values[name] = self._claim(b, mine, self._trace_names[id(p)], lambda: self.param(b, p))
        for name in self._buffers:
            values[name] = self._claim(b, mine, self._trace_prefix + name, lambda: self.buffer(b, name))
        return values

    @staticmethod
    def _claim(b, mine, full_name, make):
        if full_name in b.types and full_name not in mine:
            raise GraphError(f"graph state '{full_name}' has the name of a value already in the "
                             "traced graph; rename the input or the initializer")
        mine.add(full_name)
        return make()

    def _value(self, b, env, name):
        if not name:
            return None
        if name not in env:
            env[name] = constant(b, self.graph.constants[name])
        return env[name]

    def _node(self, node, args, x):
        training = self.training_now(x)
        if node.op == "BatchNormalization" and training:
            return batch_norm_train(args[0], *args[1:5], None, node.attrs.get("epsilon", 1e-5),
                                    1.0 - node.attrs.get("momentum", 0.9))
        dropout = self.dropouts.get(node.outputs[0])
        if dropout is not None and training and dropout[0] > 0:
            step = Tensor(x.builder, x.builder.trace.step)
            mask = apply("DropoutMask", [step], ratio=dropout[0], seed=dropout[1], shape=args[0].shape)
            return args[0] * mask
        return apply(node.op, args, outputs=len(node.outputs), **node.attrs)


def from_graph(source, trainable=None, input_shapes=None, constant_inputs=None):
    """ns.nn.from_graph(path) or from_graph(ns.load_onnx(path)): the model as a
    trainable Module. trainable: None (weights and biases, see graph_import.py), a
    list of initializer names, or a predicate (name, array) -> bool."""
    from nutshell.compiler.ir import Graph
    if isinstance(source, Graph):
        origin = getattr(source, "onnx_source", None)
        if origin is None:
            return _from_plain_graph(source, trainable)
        try:              # the file again, read so that no weight folds away or is renamed
            graph, params, buffers, dropouts = import_for_training(*origin, trainable)
        except ModelLoadError:          # gone since it was loaded: what the Graph holds
            return _from_plain_graph(source, trainable)
        return GraphModule(graph, params, buffers, dropouts)
    graph, params, buffers, dropouts = import_for_training(source, input_shapes, constant_inputs,
                                                           trainable)
    return GraphModule(graph, params, buffers, dropouts)


def _from_plain_graph(graph, trainable):
    """A Graph without its ONNX file: its constants are the candidates."""
    params, buffers = choose_state(graph.constants, uses(graph.nodes), trainable)
    return GraphModule(graph, {n: graph.constants[n] for n in params},
                       {n: graph.constants[n] for n in buffers})
