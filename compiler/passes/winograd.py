"""Winograd weights: a 3x3 stride-1 Conv with constant weights becomes a
WinogradConv holding G w G^T, computed once here instead of at every run
(F(2x2)'s U [16, M, C], or F(4x4)'s Ut [36, C, M] in the GEMM's panels where the
variant step runs it along the channels: ops/winograd_small.py)."""
from dataclasses import replace

import numpy as np

from ..ir.types import TensorType
from ..ops import winograd, winograd_small
from ..ops.conv_common import window_geometry
from ..ops.conv_variants import conv_variant
from ..schedule.conv import winograd_pays
from ..schedule.gemm import strip_rows, strips_of
from ..schedule.variants import WINOGRAD


def winograd_weights(graph, target=None):
    """Needs: BatchNorm folded and epilogues fused (they ride along). Gives: eligible
    convolutions (ops/winograd.py's rules: shape, and weights whose range keeps the
    transform precise) as WinogradConv over transformed weights, where `target`'s
    schedule table takes Winograd (default: this CPU's does)."""
    if target is not None and not winograd_pays(target):
        return graph
    rows = strip_rows(target)
    constants, types, nodes = dict(graph.constants), dict(graph.types), []
    for node in graph.nodes:
        w = graph.constants.get(node.inputs[1]) if node.op == "Conv" else None
        x_t = graph.types[node.inputs[0]] if w is not None else None
        if w is None or x_t.rank != 4 or not graph.types[node.inputs[1]].dtype.is_float:
            nodes.append(node)
            continue
        begin, end = window_geometry(node.name, node.attrs, x_t.shape[2:], w.shape[2:])[:2]
        in_types, consts = [graph.types[i] if i else None for i in node.inputs], [None, w]
        variant = conv_variant(node, in_types, consts, target)
        if variant.algorithm != WINOGRAD:   # the variant step's rule
            nodes.append(node)
            continue
        name = f"{node.name}/winograd_w"
        attrs = {"pads": tuple(begin) + tuple(end)}
        if variant.channels_last:     # F(4x4) along the channels: Ut[xi] [C, M] in the GEMM's panels
            constants[name] = winograd_small.transform_weights_panels(w, variant.out_tile, *variant.channels_last)
            attrs.update(out_tile=variant.out_tile, panels=tuple(variant.channels_last))
        else:
            u = winograd.transform_weights(w)
            constants[name] = np.stack([strips_of(ui, rows) for ui in u]) if rows else u
            if rows:     # U[xi] in strips of the GEMM's rows (schedule/gemm.py's strips_of)
                attrs["a_strips"] = rows
        types[name] = TensorType(graph.types[node.inputs[1]].dtype, constants[name].shape)
        if node.attrs.get("activation"):
            attrs["activation"] = node.attrs["activation"]
        nodes.append(replace(node, op="WinogradConv", inputs=(node.inputs[0], name) + tuple(node.inputs[2:]),
                             attrs=attrs))
    return graph.with_nodes(nodes, constants=constants, types=types)
