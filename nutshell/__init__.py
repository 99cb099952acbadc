"""nutshell: a neural-network graph compiler. DSL or ONNX in, SIMD machine code out.

    import nutshell as ns
    net = ns.nn.Sequential(ns.nn.Conv2d(1, 6, 5, padding=2), ns.nn.ReLU(), ...)
    model = ns.compile(net, input_shape=(1, 1, 28, 28), threads=2)
    y = model(x)
"""
from nutshell.compiler.errors import (CompileError, GraphError, InputError, ModelLoadError,
                                      NutshellError, ShapeError, UnsupportedOpError,
                                      UnsupportedTypeError)
from nutshell.compiler.ir import Graph, print_graph, verify
from nutshell.api import compile, optimize_graph, to_graph
from nutshell.runtime.reference import run_reference
from nutshell.frontends.dsl import InputSpec, manual_seed
from nutshell.compiler.ir.types import DType
from nutshell import augment, distributed, nn, optim
from nutshell.frontends.torch_functions import *  # noqa: F401,F403,A004  (torch.* names: cat, zeros, ...)
from nutshell.frontends import torch_functions as _torch_functions
from nutshell.training import compile_training


def load_onnx(path, input_shapes=None, constant_inputs=None):
    """Load an ONNX model (path or bytes) as a static Graph; see frontends/onnx_import.py."""
    from nutshell.frontends.onnx_import import load_onnx as _load
    return _load(path, input_shapes=input_shapes, constant_inputs=constant_inputs)


def export_onnx(model, path, input_shape=None):
    """Write a Graph or an ns.nn module (traced at input_shape) as an ONNX model."""
    from nutshell.frontends.onnx_export import export_onnx as _export
    return _export(model, path, input_shape)


float32, float64, int32, int64, bool = (DType.float32, DType.float64, DType.int32, DType.int64,
                                       DType.bool)
float, long = float32, int64   # noqa: A001  (torch.float / torch.long)

__version__ = "0.1.0"
__all__ = ["compile", "compile_training", "load_onnx", "nn", "optim", "Graph", "print_graph", "verify", "run_reference",
           "manual_seed", "InputSpec", "export_onnx", "optimize_graph", "to_graph", "NutshellError", "ModelLoadError",
           "UnsupportedOpError", "UnsupportedTypeError", "ShapeError", "GraphError",
           "CompileError", "InputError", "float32", "float64", "int32", "int64", "bool", "float",
           "long"] + _torch_functions.__all__
