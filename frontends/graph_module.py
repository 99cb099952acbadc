"""A Graph (from ONNX) as an ns.nn Module, so it trains like a DSL network.

Float initializers become Parameters named as in the file (a torch export keeps
PyTorch's state_dict names); BatchNormalization statistics become buffers, and in
training mode the node uses batch statistics and updates them, as PyTorch does."""
import numpy as np

from .dsl import Module, Parameter, apply, constant
from .layers import batch_norm_train


def _keep(array):
    return lambda rng, shape: array


class GraphModule(Module):
    def __init__(self, graph):
        super().__init__()
        if len(graph.inputs) != 1:
            raise ValueError("a GraphModule takes graphs with one input")
        object.__setattr__(self, "graph", graph)
        stats = {n.inputs[i] for n in graph.nodes if n.op == "BatchNormalization" for i in (3, 4)}
        for name, array in graph.constants.items():
            if name in stats:
                self.register_buffer(name, array.astype(np.float32))
            elif array.dtype.kind == "f" and array.ndim >= 1:     # weights; scalars stay constants
                self._parameters[name] = Parameter(array.shape, _keep(array.astype(np.float32)))

    def forward(self, x):
        b = x.builder
        env = {self.graph.inputs[0].name: x}

        def value(name):
            if not name:
                return None
            if name not in env:
                if name in self._parameters:
                    env[name] = self.param(b, self._parameters[name])
                elif name in self._buffers:
                    env[name] = self.buffer(b, name)
                else:
                    env[name] = constant(b, self.graph.constants[name])
            return env[name]

        for node in self.graph.nodes:
            args = [value(i) for i in node.inputs]
            if node.op == "BatchNormalization" and self.training_now(x):
                out = batch_norm_train(args[0], *args[1:5], None, node.attrs.get("epsilon", 1e-5),
                                       1.0 - node.attrs.get("momentum", 0.9))
            else:
                out = apply(node.op, args, outputs=len(node.outputs), **node.attrs)
            outs = out if isinstance(out, tuple) else (out,)
            env.update(zip(node.outputs, outs))
        results = [env[v.name] for v in self.graph.outputs]
        return results[0] if len(results) == 1 else results


def from_graph(graph):
    """ns.nn.from_graph(ns.load_onnx(path)): the graph as a trainable Module."""
    return GraphModule(graph)
