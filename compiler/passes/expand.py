"""Ops declared in the registry without a kernel of their own (LSTM, GRU, RNN,
Trilu) expanded into primitives. The ONNX importer expands them as it reads a
model (ADAPTERS), so autodiff sees only primitives; expand_composites catches
any such node left in a graph built by hand."""
from ..ir.graph import GraphBuilder
from ..ops import trilu
from ..ops.recurrent import GATES
from .recurrent import expand_node

EXPANSIONS = {**{op: (lambda op: lambda b, inputs, attrs, outputs, name:
                      expand_node(b, op, inputs, attrs, outputs, name))(op) for op in GATES},
              "Trilu": trilu.expand}


def _adapter(builder, node, attrs, opset, name):
    EXPANSIONS[node.op_type](builder, list(node.input), attrs, list(node.output), name)
    return True


ADAPTERS = {op: _adapter for op in EXPANSIONS}     # the ONNX importer's hook


def expand_composites(graph):
    """Needs: a verified graph. Gives: no LSTM/GRU/RNN/Trilu nodes, each replaced by
    its primitive expansion writing the same output values."""
    if not any(n.op in EXPANSIONS for n in graph.nodes):
        return graph
    b = GraphBuilder(graph.name)
    b.inputs, b.outputs = list(graph.inputs), list(graph.outputs)
    b.constants, b.types = dict(graph.constants), dict(graph.types)
    for node in graph.nodes:
        if node.op not in EXPANSIONS:
            b.nodes.append(node)
            continue
        for out in node.outputs:
            b.types.pop(out, None)
        EXPANSIONS[node.op](b, list(node.inputs), dict(node.attrs), list(node.outputs), node.name)
    return b.build()
