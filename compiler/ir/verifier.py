"""Structural and type checks of a Graph; run after every pass in tests."""
from ..errors import GraphError
from .op_hook import op_registry


def verify(graph):
    """Raise GraphError unless every value is defined once, before its use, with a
    type that agrees with its op's inference rule. Returns the graph."""
    get_op = op_registry().get_op
    defined = set()

    def define(name, what):
        if name in defined:
            raise GraphError(f"value '{name}' is defined twice ({what})")
        if name not in graph.types:
            raise GraphError(f"value '{name}' has no type ({what})")
        defined.add(name)

    for v in graph.inputs:
        define(v.name, "graph input")
    for name in graph.constants:
        define(name, "constant")
    for node in graph.nodes:
        for name in node.inputs:
            if name and name not in defined:
                raise GraphError(f"node '{node.name}' ({node.op}) reads '{name}', which is not "
                                 "defined before it (dangling value, cycle or unsorted graph)")
        opdef = get_op(node.op)
        in_types = [graph.types[i] if i else None for i in node.inputs]
        consts = [graph.constants.get(i) if i else None for i in node.inputs]
        expected = opdef.infer(node.attrs, in_types, consts, node.name)
        for out, ttype in zip(node.outputs, expected):
            if not out:
                continue
            define(out, f"output of node '{node.name}'")
            if graph.types[out] != ttype:
                raise GraphError(f"node '{node.name}' ({node.op}): output '{out}' has type "
                                 f"{graph.types[out]}, its op infers {ttype}")
    for v in graph.outputs:
        if v.name not in defined:
            raise GraphError(f"graph output '{v.name}' is never defined")
    return graph
