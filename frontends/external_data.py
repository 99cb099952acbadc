"""Tensors, with external data read only from inside the model's folder.

onnx's own loader is never allowed to follow `external_data.location`: every
TensorProto anywhere in the model (initializers, sparse initializers, attribute
tensors such as Constant's and ConstantOfShape's, subgraphs, functions) is found
here and read with the same rules: paths are canonicalised (symlinks resolved)
and must stay inside the model's folder, a model loaded from bytes has no folder
and so no external data, and offsets and lengths are checked against the file
before anything is allocated (BAD_INPUTS rows 3, 4 and 25; CVE-2022-25882,
CVE-2024-27318)."""
import os

import numpy as np
import onnx
from onnx import numpy_helper

from nutshell.compiler.errors import ModelLoadError, UnsupportedTypeError
from nutshell.compiler.ir.types import DType, checked_size


def _external_info(tensor):
    return {e.key: e.value for e in tensor.external_data}


def _read_external(tensor, base_dir, where):
    info = _external_info(tensor)
    if base_dir is None:
        raise ModelLoadError(f"{where} uses external data, but the model was loaded from bytes")
    location = info.get("location", "")
    if not location or os.path.isabs(location) or "\x00" in location:
        raise ModelLoadError(f"{where}: external data location '{location}' must be a relative path")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, path]) != root:
        raise ModelLoadError(f"{where}: external data '{location}' leads outside the model's folder")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{where}: external data file '{location}' does not exist")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelLoadError(f"{where}: external data offset/length are not integers") from None
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        DType.from_numpy(dtype)
    except (KeyError, ValueError, TypeError, UnsupportedTypeError):
        raise UnsupportedTypeError(f"{where} has unsupported element type {tensor.data_type}") from None
    shape = tuple(tensor.dims)
    expected = checked_size(shape) * np.dtype(dtype).itemsize
    size = os.path.getsize(path)
    length = expected if length is None else length
    if offset < 0 or length != expected or offset + length > size:
        raise ModelLoadError(f"{where}: external data (offset {offset}, length {length}) does not fit "
                             f"'{location}' ({size} bytes) or the tensor's {expected} bytes")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _graph_tensors(graph, where):
    """(TensorProto, description) for the graph's own tensors; subgraphs are returned
    separately so that the walk needs no recursion (nesting depth is the model's)."""
    tensors, subgraphs = [], []
    for t in graph.initializer:
        tensors.append((t, f"{where}initializer '{t.name}'"))
    for s in graph.sparse_initializer:
        tensors += [(s.values, f"{where}sparse initializer '{s.values.name}'"),
                    (s.indices, f"{where}sparse initializer '{s.values.name}' (indices)")]
    for node in graph.node:
        t, g = _node_tensors(node, where)
        tensors += t
        subgraphs += g
    return tensors, subgraphs


def _node_tensors(node, where):
    tensors, subgraphs = [], []
    for a in node.attribute:
        here = f"{where}attribute '{a.name}' of node '{node.name or node.op_type}'"
        sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors)
        tensors += [(t, here) for t in ([a.t] if a.HasField("t") else []) + list(a.tensors)]
        tensors += [(t, here) for s in sparse for t in (s.values, s.indices)]
        subgraphs += [(g, f"{here}: ") for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)]
    return tensors, subgraphs


def all_tensors(model):
    """Every TensorProto in the model, wherever it sits, with a description of where."""
    graphs = [(model.graph, "")]
    graphs += [(t.initialization, "training initialization: ") for t in model.training_info]
    graphs += [(t.algorithm, "training algorithm: ") for t in model.training_info]
    found = []
    for f in model.functions:
        for node in f.node:
            t, g = _node_tensors(node, f"function '{f.name}': ")
            found += t
            graphs += g
    while graphs:
        graph, where = graphs.pop()
        t, g = _graph_tensors(graph, where)
        found += t
        graphs += g
    return found


def inline_external_data(model, base_dir):
    """Read every external tensor anywhere in the model (confined to base_dir; none at
    all when base_dir is None) into the proto itself, so nothing downstream (onnx's
    checker, numpy_helper) ever resolves a path."""
    for tensor, where in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            data = _read_external(tensor, base_dir, where)
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
            tensor.raw_data = data.tobytes()


def decode_tensor(tensor, where):
    """The inline tensor as an array; sizes checked before numpy allocates anything."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:   # inline_external_data missed it
        raise ModelLoadError(f"{where} uses external data that was not confined")
    checked_size(tuple(tensor.dims))
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ModelLoadError(f"{where} cannot be decoded: {exc}") from None


def load_tensors(initializers):
    """name -> np.ndarray for every (inline) initializer, with checked sizes and types."""
    out = {}
    for tensor in initializers:
        array = decode_tensor(tensor, f"initializer '{tensor.name}'")
        try:
            DType.from_numpy(array.dtype)
        except UnsupportedTypeError:
            raise UnsupportedTypeError(f"initializer '{tensor.name}' has unsupported element type "
                                       f"{array.dtype}") from None
        out[tensor.name] = array
    return out
