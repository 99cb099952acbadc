"""What `nutshell info` reports: op histogram, parameters, FLOPs, memory."""
from collections import Counter

import numpy as np


def node_flops(graph, node):
    """Multiply-adds count 2 FLOPs; element-wise ops one per output element."""
    out = graph.types[node.outputs[0]] if node.outputs and node.outputs[0] else None
    if out is None:
        return 0
    if node.op == "Conv":
        w = graph.types[node.inputs[1]]
        return 2 * out.size * int(np.prod(w.shape[1:]))
    if node.op in ("MatMul", "Gemm"):
        a = graph.types[node.inputs[0]]
        k = a.shape[0] if node.op == "Gemm" and node.attrs.get("transA") else a.shape[-1]
        return 2 * out.size * k
    if node.op in ("Reshape", "Flatten", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Shape"):
        return 0
    return out.size


def graph_stats(graph):
    params = sum(int(a.size) for a in graph.constants.values() if np.issubdtype(a.dtype, np.floating))
    return {
        "ops": Counter(n.op for n in graph.nodes),
        "parameters": params,
        "flops": sum(node_flops(graph, n) for n in graph.nodes),
        "inputs": [(v.name, str(v.type)) for v in graph.inputs],
        "outputs": [(v.name, str(v.type)) for v in graph.outputs],
    }


def unsupported_ops(model_proto):
    """Every (domain.op, opset) of an ONNX model that nutshell cannot take, all at once."""
    from nutshell.compiler.ops import has_op
    from nutshell.frontends.onnx_import import _ADAPTERS, DOMAINS, opset_of
    opset = opset_of(model_proto)
    missing = sorted({(f"{n.domain}.{n.op_type}" if n.domain else n.op_type)
                      for n in model_proto.graph.node
                      if n.domain not in DOMAINS or not (has_op(n.op_type) or n.op_type in _ADAPTERS)})
    return [(op, opset) for op in missing]
