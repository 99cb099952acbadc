"""Static IR: dtypes, tensor types, Graph/Node/Value, printer, verifier."""
from .types import DType, TensorType, float32, float64, int32, int64, boolean
from .graph import Graph, Node, Value, GraphBuilder
from .printer import print_graph
from .verifier import verify
from .parser import parse_graph

__all__ = ["DType", "TensorType", "float32", "float64", "int32", "int64", "boolean",
           "Graph", "Node", "Value", "GraphBuilder", "print_graph", "verify", "parse_graph"]
