"""Rewrites as data (TVM's FoldBatchnormToConv2D, Glow's fusions): each Rewrite
names a chain of ops, a condition and a replacement; one driver applies them.

    fold_batchnorm   Conv -> BatchNormalization      => Conv (weights and bias scaled)
    fuse_activation  Conv|Gemm|MatMul -> Relu        => the op with a Relu epilogue
"""
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..ir.types import TensorType


@dataclass(frozen=True)
class Rewrite:
    name: str
    chain: tuple             # op names, each node's output 0 feeding the next's input 0
    condition: Callable      # (graph, nodes) -> bool
    apply: Callable          # (graph, nodes, constants, types) -> replacement node


def _chains(graph, chain):
    """Matches of `chain` whose inner values have one user and are not outputs."""
    users = graph.consumers()
    outputs = set(graph.output_names())
    for node in graph.nodes:
        if node.op != chain[0]:
            continue
        match = [node]
        while len(match) < len(chain):
            value = match[-1].outputs[0]
            nxt = users.get(value, [])
            if value in outputs or len(nxt) != 1 or nxt[0].op != chain[len(match)] or \
                    nxt[0].inputs[0] != value:
                break
            match.append(nxt[0])
        if len(match) == len(chain):
            yield match


def apply_rewrites(graph, rewrites):
    """Needs: a verified graph. Gives: each rewrite applied wherever its chain matches."""
    for rw in rewrites:
        constants, types = dict(graph.constants), dict(graph.types)
        replaced, new_nodes = {}, {}
        for match in _chains(graph, rw.chain):
            if any(id(n) in replaced for n in match) or not rw.condition(graph, match):
                continue
            new_nodes[id(match[0])] = rw.apply(graph, match, constants, types)
            replaced.update({id(n): match for n in match})
        nodes = [new_nodes.get(id(n), None) if id(n) in replaced else n for n in graph.nodes]
        graph = graph.with_nodes([n for n in nodes if n is not None], constants=constants, types=types)
    return graph


def _const(graph, name):
    return graph.constants.get(name) if name else None


def _bn_foldable(graph, nodes):
    conv, bn = nodes
    return all(_const(graph, i) is not None for i in conv.inputs[1:] + bn.inputs[1:] if i) and \
        graph.types[conv.inputs[1]].dtype.is_float


def _fold_bn(graph, nodes, constants, types):
    conv, bn = nodes
    w = graph.constants[conv.inputs[1]].astype(np.float64)
    b = graph.constants[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] \
        else np.zeros(w.shape[0])
    scale, shift, mean, var = (graph.constants[i].astype(np.float64) for i in bn.inputs[1:5])
    a = scale / np.sqrt(var + bn.attrs["epsilon"])
    dtype = graph.types[conv.inputs[1]].dtype.numpy
    wname, bname = f"{conv.name}/folded_w", f"{conv.name}/folded_b"
    constants[wname] = (w * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dtype)
    constants[bname] = ((b - mean) * a + shift).astype(dtype)
    types[wname] = TensorType(graph.types[conv.inputs[1]].dtype, w.shape)
    types[bname] = TensorType(graph.types[conv.inputs[1]].dtype, (w.shape[0],))
    return replace(conv, inputs=(conv.inputs[0], wname, bname), outputs=bn.outputs)


def _fuse_relu(graph, nodes, constants, types):
    op, act = nodes
    return replace(op, outputs=act.outputs, attrs={**op.attrs, "activation": "Relu"})


REWRITES = [
    Rewrite("fold_batchnorm", ("Conv", "BatchNormalization"), _bn_foldable, _fold_bn),
    Rewrite("fuse_conv_relu", ("Conv", "Relu"), lambda g, n: "activation" not in n[0].attrs, _fuse_relu),
    Rewrite("fuse_gemm_relu", ("Gemm", "Relu"), lambda g, n: "activation" not in n[0].attrs, _fuse_relu),
]


def fuse(graph):
    """Needs: constants folded. Gives: BatchNorm folded into convolutions and ReLU
    applied in the producing kernel's epilogue (one pass over memory fewer)."""
    return apply_rewrites(graph, REWRITES)
