"""ONNX -> Graph. Parses with onnx's own parser and checker (external data is
never followed by onnx itself), sorts the nodes, converts attributes, maps
each op onto the registry and infers every type statically."""
import os
import stat

import networkx as nx
import numpy as np
import onnx
from onnx import helper, numpy_helper

from nutshell.compiler.errors import (GraphError, ModelLoadError, NutshellError, ShapeError,
                                      UnsupportedOpError, UnsupportedTypeError)
from nutshell.compiler.ir import GraphBuilder, Node
from nutshell.compiler.ir.types import DType
from nutshell.compiler.ops import has_op
from nutshell.compiler.ops.common import norm_axis
from .external_data import decode_tensor, inline_external_data, load_tensors
from .onnx_compose import ADAPTERS as COMPOSED
from nutshell.compiler.passes.expand import ADAPTERS as EXPANDED   # LSTM, GRU, RNN, Trilu

PROTOBUF_LIMIT = 2 ** 31
DOMAINS = ("", "ai.onnx", "nutshell")
_DTYPES = {onnx.TensorProto.FLOAT: DType.float32, onnx.TensorProto.DOUBLE: DType.float64,
           onnx.TensorProto.FLOAT16: DType.float16, onnx.TensorProto.INT8: DType.int8,
           onnx.TensorProto.INT16: DType.int16, onnx.TensorProto.INT32: DType.int32,
           onnx.TensorProto.INT64: DType.int64, onnx.TensorProto.UINT8: DType.uint8,
           onnx.TensorProto.UINT16: DType.uint16, onnx.TensorProto.UINT32: DType.uint32,
           onnx.TensorProto.UINT64: DType.uint64, onnx.TensorProto.BOOL: DType.bool}


def _read_regular_file(path):
    """The bytes of a regular file. Opened without blocking and checked on the open
    descriptor: a FIFO, a device (/dev/zero) or a folder is refused at once, never
    read until memory runs out or waited on forever (BAD_INPUTS row 31)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                    else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                    else "not a regular file")
            raise ModelLoadError(f"{path} is {kind}, not a model file")
        if info.st_size >= PROTOBUF_LIMIT:
            raise ModelLoadError(f"{path} is {info.st_size} bytes, over protobuf's 2 GiB limit: save "
                                 "the weights as external data (onnx.save(..., "
                                 "save_as_external_data=True))")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(info.st_size)      # never more than was there when we looked
    finally:
        os.close(fd)


def read_model(source):
    """ModelProto from a path or bytes; garbage and invalid models are ModelLoadErrors."""
    base_dir = None
    try:
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            path = os.fspath(source)
            data = _read_regular_file(path)
            base_dir = os.path.dirname(os.path.abspath(path))
        model = onnx.load_model_from_string(data)
    except NutshellError:
        raise
    except OSError as exc:
        raise ModelLoadError(f"cannot read model: {exc}") from None
    except Exception as exc:   # protobuf raises several types for garbage
        raise ModelLoadError(f"not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    inline_external_data(model, base_dir)          # confined reads; onnx never follows paths
    known = {v.name for v in model.graph.input} | {t.name for t in model.graph.initializer}
    ordered = sorted_nodes(model.graph, known)      # ONNX Runtime takes unsorted graphs too
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelLoadError(f"the ONNX checker rejects the model: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError("the model has no graph")
    return model, base_dir


def opset_of(model):
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def _type_name(elem_type):
    try:
        return helper.tensor_dtype_to_string(elem_type)
    except (KeyError, ValueError):        # a number no ONNX version defines
        return f"{elem_type} (unknown)"


def _tensor_type(value_info, input_shapes):
    name = value_info.name
    if not value_info.type.HasField("tensor_type"):
        raise UnsupportedTypeError(f"value '{name}' has no tensor type information")
    ttype = value_info.type.tensor_type
    if ttype.elem_type == onnx.TensorProto.UNDEFINED:
        raise UnsupportedTypeError(f"value '{name}' has an undefined element type")
    if ttype.elem_type not in _DTYPES:
        raise UnsupportedTypeError(f"value '{name}' has element type "
                                   f"{_type_name(ttype.elem_type)}, "
                                   f"not one of {', '.join(d.value for d in DType)}")
    if name in (input_shapes or {}):
        return _DTYPES[ttype.elem_type], tuple(input_shapes[name])
    if not ttype.HasField("shape"):
        raise ShapeError(f"input '{name}' has no shape; pass input_shapes={{'{name}': (...)}}")
    shape = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            shape.append(d.dim_value)
        else:
            raise ShapeError(f"input '{name}' has symbolic dimension '{d.dim_param or '?'}'; "
                             f"pass input_shapes={{'{name}': (...)}} to fix it")
    return _DTYPES[ttype.elem_type], tuple(shape)


def _attr_value(attr, node_name):
    value = helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        return decode_tensor(value, f"attribute '{attr.name}' of node '{node_name}'")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value)
    return value


def sorted_nodes(graph, known):
    """Nodes in an order where each reads only what came before; cycles, undefined
    and duplicate values are GraphErrors (BAD_INPUTS rows 16-18)."""
    producer = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out and (out in producer or out in known):
                raise GraphError(f"value '{out}' is defined twice (node '{node.name or node.op_type}')")
            if out:
                producer[out] = i
    deps = nx.DiGraph()
    deps.add_nodes_from(range(len(graph.node)))
    for i, node in enumerate(graph.node):
        for name in node.input:
            if not name or name in known:
                continue
            if name not in producer:
                raise GraphError(f"node '{node.name or node.op_type}' reads undefined value '{name}'")
            deps.add_edge(producer[name], i)
    try:
        order = list(nx.lexicographical_topological_sort(deps))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(deps)
        names = [graph.node[a].name or graph.node[a].op_type for a, _ in cycle]
        raise GraphError(f"the graph has a cycle through nodes {names}") from None
    return [graph.node[i] for i in order]


def load_onnx(source, input_shapes=None, constant_inputs=None):
    """An ONNX model (path or bytes) as a static, verified Graph. input_shapes fixes
    symbolic dimensions; constant_inputs bakes given inputs in as constants."""
    model, _ = read_model(source)
    opset = opset_of(model)
    g = model.graph
    builder = GraphBuilder(g.name or "onnx_model")
    tensors = load_tensors(g.initializer)
    for name, array in tensors.items():
        builder.add_constant(array, name)
    for name, value in (constant_inputs or {}).items():
        builder.add_constant(np.asarray(value), name)
    for vi in g.input:
        if vi.name not in tensors and vi.name not in (constant_inputs or {}):
            dtype, shape = _tensor_type(vi, input_shapes)
            builder.add_input(vi.name, dtype, shape)
    for node in g.node:        # sorted by read_model
        _convert_node(builder, node, opset)
    missing = [o.name for o in g.output if o.name not in builder.types]
    if missing:
        raise GraphError(f"graph outputs {missing} are never produced")
    for o in g.output:       # a declared element type must be what the graph computes (as ORT checks)
        declared = o.type.tensor_type.elem_type if o.type.HasField("tensor_type") else 0
        if declared and _DTYPES.get(declared) != builder.types[o.name].dtype:
            name = _DTYPES[declared].value if declared in _DTYPES else f"element type {declared}"
            raise UnsupportedTypeError(f"output '{o.name}' is declared {name} but computes "
                                       f"{builder.types[o.name].dtype.value}")
    builder.set_outputs([o.name for o in g.output])
    graph = materialize_outputs(builder)
    graph.onnx_source = (source, input_shapes, constant_inputs)   # ns.nn.from_graph re-imports it
    return graph


def materialize_outputs(builder):
    """An output that folded to a constant (or is an input) still needs a buffer of
    its own: copy it with an Identity node."""
    producers = {o for n in builder.nodes for o in n.outputs}
    for i, v in enumerate(builder.outputs):
        if v.name in producers:
            continue
        if v.name in builder.constants:
            source = builder.fresh(v.name + "/const")
            builder.constants[source] = builder.constants.pop(v.name)
            builder.types[source] = builder.types[v.name]
            builder.nodes.append(Node("Identity", (source,), (v.name,), {}, v.name + "/copy"))
    return builder.build()


def _convert_node(builder, node, opset):
    name = node.name or f"{node.op_type}_{len(builder.nodes)}"
    if node.domain not in DOMAINS or not (has_op(node.op_type) or node.op_type in _ADAPTERS):
        raise UnsupportedOpError(node.op_type if not node.domain else f"{node.domain}.{node.op_type}",
                                 opset, name)
    attrs = {a.name: _attr_value(a, name) for a in node.attribute}
    if node.op_type == "Split":           # the output count is a (hidden) attribute
        attrs["_outputs"] = len(node.output)
    if node.op_type == "Constant":
        from nutshell.compiler.ops.shape_ops import constant_value
        builder.add_constant(np.array(constant_value(attrs, name)), node.output[0])
        return
    adapt = _ADAPTERS.get(node.op_type)
    if adapt is not None and adapt(builder, node, attrs, opset, name):
        return
    try:
        builder.add_node(node.op_type, list(node.input), attrs, outputs=list(node.output), name=name)
    except UnsupportedOpError as exc:
        raise UnsupportedOpError(node.op_type, opset, name, str(exc)) from None


def _softmax_v1(builder, node, attrs, opset, name):
    """Softmax before opset 13 normalises over the flattened dims from `axis` on."""
    if opset >= 13:
        return False
    x = node.input[0]
    shape = builder.types[x].shape
    axis = norm_axis(name, attrs.get("axis", 1), max(len(shape), 1))
    if axis == len(shape) - 1:
        builder.add_node(node.op_type, [x], {"axis": -1}, outputs=list(node.output), name=name)
        return True
    flat = builder.add_node("Flatten", [x], {"axis": axis}, name=name + "/flatten")
    soft = builder.add_node(node.op_type, [flat], {"axis": 1}, name=name)
    shape_const = builder.add_constant(np.asarray(shape, dtype=np.int64))
    builder.add_node("Reshape", [soft, shape_const], {}, outputs=list(node.output), name=name + "/reshape")
    return True


def _batchnorm(builder, node, attrs, opset, name):
    for key in ("is_test", "consumed_inputs"):
        attrs.pop(key, None)
    return COMPOSED["BatchNormalization"](builder, node, attrs, opset, name)


def _dropout(builder, node, attrs, opset, name):
    """Inference Dropout: the output is the input, the optional mask all true."""
    attrs.pop("is_test", None)
    training = node.input[2] if len(node.input) > 2 and node.input[2] else None
    ratio = node.input[1] if len(node.input) > 1 and node.input[1] else None
    off = training is None or (training in builder.constants and not builder.constants[training].any())
    no_drop = ratio in builder.constants and not builder.constants[ratio].any()
    if not (off or no_drop):    # random masks in an imported graph: train through the DSL instead
        raise UnsupportedOpError("Dropout", opset, name, "training_mode in an ONNX graph")
    if len(node.output) < 2 or not node.output[1]:
        return False
    builder.add_node("Identity", [node.input[0]], outputs=[node.output[0]], name=name)
    builder.add_constant(np.ones(builder.types[node.input[0]].shape, bool), node.output[1])
    return True


_ADAPTERS = {**COMPOSED, **EXPANDED, "Softmax": _softmax_v1, "LogSoftmax": _softmax_v1,
             "Dropout": _dropout,
             "BatchNormalization": _batchnorm}
