"""ns.nn: layers with PyTorch's names (see frontends/layers.py)."""
from nutshell.frontends.dsl import Module, Parameter, Tensor, apply, manual_seed  # noqa: F401
from nutshell.frontends.layers import *  # noqa: F401,F403
from nutshell.nn import init  # noqa: F401
from nutshell.frontends.graph_module import GraphModule, from_graph  # noqa: F401
from nutshell.nn import functional  # noqa: F401,E402
