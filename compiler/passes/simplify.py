"""Simplifying passes: constant folding, dead code, identity removal, weight layout.
Each is a pure Graph -> Graph function."""
import numpy as np

from ..ir.graph import Node
from ..ir.types import TensorType
from ..ops import get_op
from ..ops.registry import FoldBudget, fold


def fold_constants(graph):
    """Needs: a verified graph. Gives: every node whose inputs are all constants (or
    whose result depends only on static types, as Shape) replaced by a constant;
    shape subgraphs vanish, the compiled code has no shape logic left."""
    constants, nodes, types = dict(graph.constants), [], dict(graph.types)
    outputs, budget = set(graph.output_names()), FoldBudget()
    for node in graph.nodes:
        if node.op == "Identity" and node.outputs[0] in outputs:
            nodes.append(node)          # it gives a folded output its own buffer
            continue
        in_types = [graph.types[i] if i else None for i in node.inputs]
        out_types = [graph.types[o] for o in node.outputs if o]
        values = fold(get_op(node.op), node.attrs, in_types,
                      [constants.get(i) if i else None for i in node.inputs], out_types, node.name, budget)
        if values is None or len(out_types) != len(node.outputs):
            nodes.append(node)
            continue
        for name, value in zip(node.outputs, values):
            if name in outputs:         # an output still needs a node that writes its buffer
                source = f"{name}/folded"
                constants[source], types[source] = value, types[name]
                nodes.append(Node("Identity", (source,), (name,), {}, f"{node.name}/folded"))
            else:
                constants[name] = value
    return graph.with_nodes(nodes, constants=constants, types=types)


def eliminate_dead_code(graph):
    """Gives: only nodes that contribute to an output, only constants still read."""
    live = set(graph.output_names())
    kept = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
    kept.reverse()
    constants = {k: v for k, v in graph.constants.items() if k in live}
    named = live | set(graph.input_names()) | {o for n in kept for o in n.outputs}   # a set: was O(values x nodes)
    types = {k: t for k, t in graph.types.items() if k in named}
    return graph.with_nodes(kept, constants=constants, types=types)


def remove_identities(graph):
    """Gives: Identity and inference Dropout nodes gone, their users reading the input
    directly (kept where the node feeds a graph output from an input or constant)."""
    outputs = set(graph.output_names())
    rename, nodes = {}, []
    for node in graph.nodes:
        node_inputs = tuple(rename.get(i, i) for i in node.inputs)
        src = node_inputs[0] if node_inputs else ""
        if node.op in ("Identity", "Dropout") and node.outputs[0] not in outputs and \
                not any(node.outputs[1:]):
            rename[node.outputs[0]] = src
            continue
        nodes.append(_with_inputs(node, node_inputs))
    return graph.with_nodes(nodes)


def _with_inputs(node, inputs):
    from dataclasses import replace
    return replace(node, inputs=tuple(inputs))


def pretranspose_weights(graph):
    """Gives: Gemm nodes with a constant transB=1 weight rewritten to transB=0 with the
    weight stored transposed, so the GEMM reads B rows contiguously (a torch Linear)."""
    from dataclasses import replace
    constants, types, nodes = dict(graph.constants), dict(graph.types), []
    users = graph.consumers()
    for node in graph.nodes:
        b = node.inputs[1] if node.op == "Gemm" else None
        if b in constants and node.attrs.get("transB") and len(users.get(b, [])) == 1:
            new = b + ".T"
            constants[new] = np.ascontiguousarray(constants[b].T)
            types[new] = TensorType(types[b].dtype, constants[new].shape)
            node = replace(node, inputs=(node.inputs[0], new) + node.inputs[2:],
                           attrs={**node.attrs, "transB": 0})
        nodes.append(node)
    return eliminate_dead_code(graph.with_nodes(nodes, constants=constants, types=types))



def prepack_weights(graph, target=None):
    """Gives: a MatMul by a constant 2-D float32 B that the GEMM would pack into
    panels at every run (schedule/gemm.py's rule) as MatMulPacked over B packed once
    here, in the panels of `target` (default: this CPU) (a transformer's or
    ConvNeXt's Linear layers: 5-15% of their time)."""
    from dataclasses import replace
    from ..ir.types import DType
    from ..lower.target import host_target
    from ..schedule.gemm import packs_b, prepack
    target = target or host_target(1)
    constants, types, nodes = dict(graph.constants), dict(graph.types), []
    users = graph.consumers()
    for node in graph.nodes:
        a, b = (node.inputs + ("", ""))[:2] if node.op == "MatMul" else ("", "")
        if b in constants and types[b].rank == 2 and types[a].rank >= 2 and types[b].dtype == DType.float32 \
                and types[a].dtype == DType.float32 and len(users.get(b, [])) == 1:
            k, n = types[b].shape
            if packs_b(target, types[a].size // k, n, k, 4):
                new = b + "/packed"
                constants[new] = prepack(constants[b], target)
                types[new] = TensorType(types[b].dtype, constants[new].shape)
                node = replace(node, op="MatMulPacked", inputs=(a, new), attrs={"n": n})
        nodes.append(node)
    return eliminate_dead_code(graph.with_nodes(nodes, constants=constants, types=types))
