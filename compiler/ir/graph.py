"""The static IR: a Graph of Nodes over named, typed Values.

Values are referred to by name, so a pass builds a new Graph by listing new
nodes without cloning objects. Every value has a static TensorType; constants
(weights) are values whose data lives in `graph.constants`.
"""
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import GraphError, ShapeError
from .op_hook import op_registry
from .types import DType, TensorType


@dataclass(frozen=True)
class Value:
    name: str
    type: TensorType


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple          # value names; "" marks an omitted optional input
    outputs: tuple
    attrs: dict = field(default_factory=dict, compare=False, hash=False)
    name: str = ""

    def attr(self, key, default=None):
        return self.attrs.get(key, default)


@dataclass
class Graph:
    name: str
    inputs: list           # [Value]
    outputs: list          # [Value]
    nodes: list            # [Node], topologically ordered
    constants: dict        # name -> np.ndarray
    types: dict            # name -> TensorType, every value in the graph

    def producers(self):
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self):
        users = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    users.setdefault(name, []).append(node)
        return users

    def with_nodes(self, nodes, constants=None, types=None, outputs=None):
        """A copy with other nodes (the way passes build their result)."""
        return replace(self, nodes=list(nodes),
                       constants=dict(self.constants if constants is None else constants),
                       types=dict(self.types if types is None else types),
                       outputs=list(self.outputs if outputs is None else outputs))

    def input_names(self):
        return [v.name for v in self.inputs]

    def output_names(self):
        return [v.name for v in self.outputs]

    def __str__(self):
        from .printer import print_graph
        return print_graph(self)


class GraphBuilder:
    """Builds a Graph node by node, inferring every output type from the op registry."""

    def __init__(self, name="graph", fold=True):
        self.name, self.fold = name, fold     # fold: constant inputs give constants
        self.inputs, self.outputs, self.nodes = [], [], []
        self.constants, self.types = {}, {}
        self._counter = 0
        self.fold_budget = None           # a FoldBudget, made on the first fold

    def fresh(self, hint="v"):
        self._counter += 1
        name = f"{hint}_{self._counter}"
        while name in self.types:
            self._counter += 1
            name = f"{hint}_{self._counter}"
        return name

    def _define(self, name, ttype):
        if name in self.types:
            raise GraphError(f"value '{name}' is defined twice")
        self.types[name] = ttype

    def add_input(self, name, dtype, shape):
        ttype = TensorType(DType(dtype) if not isinstance(dtype, DType) else dtype, tuple(shape))
        self._define(name, ttype)
        self.inputs.append(Value(name, ttype))
        return name

    def add_constant(self, array, name=None):
        array = np.asarray(array, order="C")
        name = name or self.fresh("const")
        self._define(name, TensorType(DType.from_numpy(array.dtype), array.shape))
        self.constants[name] = array
        return name

    def add_node(self, op, inputs, attrs=None, outputs=None, num_outputs=1, name=""):
        ops = op_registry()
        opdef = ops.get_op(op)
        inputs = tuple(inputs)
        for i in inputs:
            if i and i not in self.types:
                raise GraphError(f"node '{name or op}' reads undefined value '{i}'")
        attrs = opdef.normalize_attrs(dict(attrs or {}), len([i for i in inputs if i]), name or op)
        in_types = [self.types[i] if i else None for i in inputs]
        try:
            out_types = opdef.infer(attrs, in_types, self._const_inputs(inputs), name or op)
        except ShapeError as exc:
            where = name or op
            raise (exc if str(exc).startswith(where) else ShapeError(f"{where}: {exc}")) from None
        if outputs is None:
            outputs = [self.fresh(op.lower()) for _ in range(num_outputs)]
        out_types = out_types[:len(outputs)]
        self.fold_budget = self.fold_budget or ops.FoldBudget()
        values = ops.fold(opdef, attrs, in_types, self._const_inputs(inputs), out_types, name or op,
                      self.fold_budget) if self.fold and all(outputs) else None
        if values is not None:        # known at compile time: a constant, not a node
            for out, value in zip(outputs, values):
                self.add_constant(value, out)
            return outputs[0] if len(outputs) == 1 else tuple(outputs)
        for out, ttype in zip(outputs, out_types):
            if out:
                self._define(out, ttype)
        self.nodes.append(Node(op, inputs, tuple(outputs), attrs, name or f"{op}_{len(self.nodes)}"))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _const_inputs(self, inputs):
        return [self.constants.get(i) if i else None for i in inputs]

    def set_outputs(self, names):
        self.outputs = [Value(n, self.types[n]) for n in names]

    def build(self):
        return Graph(self.name, list(self.inputs), list(self.outputs), list(self.nodes),
                     dict(self.constants), dict(self.types))
