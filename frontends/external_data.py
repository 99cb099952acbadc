"""Initializers, with external data read only from inside the model's folder.

onnx's own loader is never allowed to follow `external_data.location`: paths are
canonicalised (symlinks resolved) and must stay inside the model's folder, and
offsets and lengths are checked against the file before anything is allocated
(BAD_INPUTS rows 3 and 4; CVE-2022-25882, CVE-2024-27318)."""
import os

import numpy as np
import onnx
from onnx import numpy_helper

from nutshell.compiler.errors import ModelLoadError, UnsupportedTypeError
from nutshell.compiler.ir.types import DType, checked_size


def _external_info(tensor):
    return {e.key: e.value for e in tensor.external_data}


def _read_external(tensor, base_dir):
    info = _external_info(tensor)
    where = f"initializer '{tensor.name}'"
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


def inline_external_data(graph, base_dir):
    """Read every external initializer (confined to base_dir) into the proto itself."""
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            data = _read_external(tensor, base_dir)
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
            tensor.raw_data = data.tobytes()


def load_tensors(initializers):
    """name -> np.ndarray for every (inline) initializer, with checked sizes and types."""
    out = {}
    for tensor in initializers:
        checked_size(tuple(tensor.dims))
        try:
            array = numpy_helper.to_array(tensor)
        except Exception as exc:
            raise ModelLoadError(f"initializer '{tensor.name}' cannot be decoded: {exc}") from None
        try:
            DType.from_numpy(array.dtype)
        except UnsupportedTypeError:
            raise UnsupportedTypeError(f"initializer '{tensor.name}' has unsupported element type "
                                       f"{array.dtype}") from None
        out[tensor.name] = array
    return out
