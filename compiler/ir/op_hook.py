"""The op registry as the IR sees it. Building a graph needs each op's shape rule
and constant folding, but the ops sit above the IR (they lower to loops), so the
registry installs itself here when `compiler/ops` is imported instead of the IR
importing it: ir/ depends on nothing above it."""
from ..errors import GraphError

_registry = None


def install_op_registry(registry):
    """`registry` offers get_op(name), fold(...) and FoldBudget (ops/registry.py)."""
    global _registry
    _registry = registry


def op_registry():
    if _registry is None:
        raise GraphError("no op registry installed: import nutshell (or nutshell.compiler.ops) first")
    return _registry
