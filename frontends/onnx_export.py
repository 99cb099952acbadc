"""Graph (or ns.nn module) -> ONNX model that onnx's checker accepts and ONNX
Runtime runs. Ops map one to one; nutshell-only ops are written as standard ones."""
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nutshell.compiler.errors import UnsupportedOpError
from nutshell.compiler.ops import get_op

OPSET = 17
_ELEM = {dt: onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)) for dt in
         ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "bool")}


def _value_info(name, ttype):
    return helper.make_tensor_value_info(name, _ELEM[ttype.dtype.value], list(ttype.shape))


def _attrs(attrs):
    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            value = numpy_helper.from_array(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def _unary_chain(graph, node, extra_inits):
    """Gelu (ONNX opset 20) and Mish (18) written as opset-17 ops: Erf/Tanh/Softplus
    with Mul/Add, so the exported file passes the checker at OPSET."""
    x, out, name = node.inputs[0], node.outputs[0], node.name
    nodes, counter = [], iter(range(100))

    def const(value):
        cname = f"{name}/c{next(counter)}"
        dtype = graph.types[x].dtype.numpy
        extra_inits.append(numpy_helper.from_array(np.asarray(value, dtype), cname))
        return cname

    def op(kind, *inputs, final=False):
        result = out if final else f"{name}/t{next(counter)}"
        nodes.append(helper.make_node(kind, list(inputs), [result], name=f"{name}/{len(nodes)}"))
        return result
    if node.op == "Mish":
        op("Mul", x, op("Tanh", op("Softplus", x)), final=True)
    elif node.attrs.get("approximate", "none") == "tanh":
        cube = op("Mul", op("Mul", x, x), x)
        inner = op("Mul", op("Add", x, op("Mul", cube, const(0.044715))), const(np.sqrt(2 / np.pi)))
        op("Mul", op("Mul", x, const(0.5)), op("Add", op("Tanh", inner), const(1.0)), final=True)
    else:
        phi = op("Add", op("Erf", op("Mul", x, const(1 / np.sqrt(2)))), const(1.0))
        op("Mul", op("Mul", x, const(0.5)), phi, final=True)
    return nodes


def _export_node(graph, node, extra_inits):
    """ONNX nodes for one IR node (a list: some nutshell ops take two)."""
    if node.op in ("Gelu", "Mish"):
        return _unary_chain(graph, node, extra_inits)
    if node.op == "Maxout":
        x = node.inputs[0]
        shape = graph.types[x].shape
        k = node.attrs["pool_size"]
        grouped = np.asarray((shape[0], shape[1] // k, k) + tuple(shape[2:]), np.int64)
        shape_name = f"{node.name}/shape"
        extra_inits.append(numpy_helper.from_array(grouped, shape_name))
        mid = f"{node.name}/grouped"
        return [helper.make_node("Reshape", [x, shape_name], [mid], name=f"{node.name}/reshape"),
                helper.make_node("ReduceMax", [mid], list(node.outputs), name=node.name, axes=[2],
                                 keepdims=0)]
    if node.attrs.get("activation") == "Relu":     # a fused epilogue goes back to its own node
        inner = node.outputs[0] + "/pre_relu"
        first = replace(node, outputs=(inner,) + tuple(node.outputs[1:]),
                        attrs={k: v for k, v in node.attrs.items() if k != "activation"})
        return _export_node(graph, first, extra_inits) + [
            helper.make_node("Relu", [inner], [node.outputs[0]], name=node.name + "/relu")]
    if node.op in ("DropoutMask", "ConvGradInput", "ConvGradWeight", "MaxPoolGrad", "AveragePoolGrad"):
        raise UnsupportedOpError(node.op, detail="a training-only op has no ONNX form")
    defaults = get_op(node.op).attrs        # ours equal ONNX's; written only when they differ
    attrs = {k: v for k, v in node.attrs.items()
             if isinstance(v, np.ndarray) or k not in defaults or v != defaults[k] or k == "axes"}
    attrs.pop("spatial", None)                # legacy (opset < 9)
    attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}   # nutshell-internal
    if node.op == "ReduceMean" and len(node.inputs) > 1 and node.inputs[1]:
        attrs["axes"] = [int(a) for a in graph.constants[node.inputs[1]]]   # an attribute until opset 18
        return [helper.make_node(node.op, [node.inputs[0]], list(node.outputs), name=node.name,
                                 **_attrs(attrs))]
    if node.op == "ReduceSum" and attrs.get("axes") is not None:            # an input since opset 13
        axes_name = f"{node.name}/axes"
        extra_inits.append(numpy_helper.from_array(np.asarray(attrs.pop("axes"), np.int64), axes_name))
        return [helper.make_node(node.op, [node.inputs[0], axes_name], list(node.outputs),
                                 name=node.name, **_attrs(attrs))]
    return [helper.make_node(node.op, list(node.inputs), list(node.outputs), name=node.name,
                             **_attrs(attrs))]


def graph_to_onnx(graph):
    extra = []
    nodes = [n for node in graph.nodes for n in _export_node(graph, node, extra)]
    inits = [numpy_helper.from_array(np.asarray(a), name) for name, a in graph.constants.items()]
    g = helper.make_graph(nodes, graph.name, [_value_info(v.name, v.type) for v in graph.inputs],
                          [_value_info(v.name, v.type) for v in graph.outputs], inits + extra)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nutshell")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export_onnx(model, path, input_shape=None):
    """Write `model` (a Graph, or a module traced at `input_shape` in inference mode)
    as an ONNX file; returns the ModelProto."""
    from nutshell.frontends.dsl import Module
    graph = model.trace(input_shape) if isinstance(model, Module) else model
    proto = graph_to_onnx(graph)
    onnx.save(proto, path)
    return proto
