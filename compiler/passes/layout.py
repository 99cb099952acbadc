"""Layout propagation (TVM's AlterOpLayout, oneDNN's nChw16c): MobileNet-style
regions run in the blocked-channel layout of ops/blocked.py, with reorders only
at their edges.

A region is a connected set of ops that have a blocked form: pointwise (1x1,
stride 1), depthwise and stem (few input channels) convolutions with constant
weights, element-wise ops, GlobalAveragePool (a ReduceMean over the blocked
spatial axes) and pools (3-D, the lane axis's window 1). Only regions with both
pointwise and depthwise convolutions change: that is where NCHW vectors waste
lanes (MobileNet's inverted residuals); elsewhere the reorders into and out of a
region cost more than they win (a ResNet's 1x1 layers between 3x3 ones,
ConvNeXt's lone depthwise layers between transposes).
Outside such regions a stem convolution followed by a pool (ResNet's 7x7, SqueezeNet's
3x3) runs blocked with its activation and pool (_stem): the reorder after the pool
is a quarter of the size.
Every value keeps its NCHW name; its blocked twin is NAME/b16, and the NCHW one
is rebuilt (FromBlocked) only where an op outside a region, or an output, reads it."""
from ..ir.graph import Node
from ..ir.types import DType, TensorType
from ..ops import get_op
from ..ops.blocked import pack_bias, pack_dense, pack_depthwise, to_blocked
from ..ops.conv_common import window_geometry
from ..schedule.conv import blocked_layout_pays, stem_limits

POOLS = ("MaxPool", "AveragePool")


def _conv_kind(graph, node, direct_max):
    """'pointwise', 'depthwise', 'direct' or None: whether a Conv has a blocked kernel."""
    if node.op != "Conv" or node.inputs[1] not in graph.constants or \
            any(i and i not in graph.constants for i in node.inputs[2:3]):
        return None
    x, w = graph.types[node.inputs[0]], graph.types[node.inputs[1]]
    if x.rank != 4 or x.dtype != DType.float32:
        return None
    group, c = node.attrs.get("group", 1), x.shape[1]
    begin, end, strides, dil, _ = window_geometry(node.name, node.attrs, x.shape[2:], w.shape[2:])
    if group == c == w.shape[0] and w.shape[1] == 1:
        return "depthwise"
    if group == 1 and w.shape[2:] == (1, 1) and strides == (1, 1) and not any(begin + end):
        return "pointwise"
    if group == 1 and c <= direct_max:      # a stem: the image read in NCHW, written blocked
        return "direct"
    return None


def _blockable(graph, node, direct_max):
    if _conv_kind(graph, node, direct_max):
        return True
    out = graph.types[node.outputs[0]] if len(node.outputs) == 1 else None
    if out is None or out.rank != 4 or not out.dtype.is_float:
        return False
    if node.op == "GlobalAveragePool" or node.op in POOLS:
        return True
    return get_op(node.op).expr is not None and all(node.inputs)


def _stem(graph, node, consumers, limits):
    """A stem convolution (ResNet's 7x7 on the image) and the chain of sole readers
    after it up to its pooling, or nothing when no pool ends the chain: im2col's K
    (3 x 7 x 7) is short for the GEMM, and the pooled map is a quarter of the
    reorder's traffic (unpooled, the reorder costs more than the direct kernel wins)."""
    direct_max, min_taps = limits          # the target's (schedule/conv.py's stem_limits)
    if _conv_kind(graph, node, direct_max) != "direct" or graph.constants[node.inputs[1]][0].size < min_taps:
        return []
    chain = [node]
    while len(consumers.get(chain[-1].outputs[0], ())) == 1 and chain[-1].op not in POOLS:
        nxt = consumers[chain[-1].outputs[0]][0]
        if not _blockable(graph, nxt, direct_max) or _conv_kind(graph, nxt, direct_max) or len(nxt.inputs) != 1:
            break
        chain.append(nxt)
    return chain if chain[-1].op in POOLS else []


def _regions(graph, limits):
    """Ids of the blockable nodes in regions with pointwise and depthwise convolutions."""
    producers = graph.producers()
    parent = {}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    nodes = [n for n in graph.nodes if _blockable(graph, n, limits[0])]
    for n in nodes:
        parent[id(n)] = id(n)
    for n in nodes:
        for v in n.inputs:
            p = producers.get(v)
            if p is not None and id(p) in parent:
                parent[find(id(p))] = find(id(n))
    kinds = {}
    for n in nodes:
        kinds.setdefault(find(id(n)), set()).add(_conv_kind(graph, n, limits[0]))
    wanted = {root for root, found in kinds.items() if {"depthwise", "pointwise"} <= found}
    chosen = {id(n) for n in nodes if find(id(n)) in wanted}
    consumers = graph.consumers()
    for n in nodes:
        if id(n) not in chosen:
            chosen.update(id(m) for m in _stem(graph, n, consumers, limits))
    return chosen


def _lane_pool(attrs):
    attrs = dict(attrs)
    pads = attrs.get("pads") or (0, 0, 0, 0)
    attrs["kernel_shape"] = tuple(attrs["kernel_shape"]) + (1,)
    attrs["pads"] = tuple(pads[:2]) + (0,) + tuple(pads[2:]) + (0,)
    for key in ("strides", "dilations"):
        attrs[key] = tuple(attrs.get(key) or (1, 1)) + (1,)
    return attrs


class _Rewriter:
    def __init__(self, graph, direct_max):
        self.graph, self.direct_max = graph, direct_max
        self.constants, self.types, self.nodes = dict(graph.constants), dict(graph.types), []
        self.blocked = {}         # NCHW name -> blocked twin
        self.plain = set(graph.input_names()) | set(graph.constants)   # NCHW values that exist

    def add(self, op, inputs, attrs, output, name):
        opdef = get_op(op)
        attrs = opdef.normalize_attrs(attrs, len(inputs))
        types = [self.types[i] if i else None for i in inputs]
        self.types[output] = opdef.infer(attrs, types, [self.constants.get(i) for i in inputs], name)[0]
        self.nodes.append(Node(op, tuple(inputs), (output,), attrs, name))
        return output

    def constant(self, name, array):
        self.constants[name] = array
        self.types[name] = TensorType(DType.from_numpy(array.dtype), array.shape)
        return name

    def need_plain(self, v):
        if v and v not in self.plain:
            self.add("FromBlocked", [self.blocked[v]], {"channels": self.graph.types[v].shape[1]}, v,
                     f"{v}/from_b16")
            self.plain.add(v)
        return v

    def need_blocked(self, v):
        if v not in self.blocked:
            self.blocked[v] = self.add("ToBlocked", [v], {}, f"{v}/b16", f"{v}/to_b16")
        return self.blocked[v]

    def keep(self, node):
        for v in node.inputs:
            self.need_plain(v)
        self.nodes.append(node)
        self.plain.update(node.outputs)

    def operand(self, v, channels):
        """A blocked element-wise operand: a blocked value, a constant made blocked
        (per-channel or scalar), or None when the value has no blocked form. A
        value of one channel broadcasts across channels in NCHW but not blocked
        (its channel is lane 0 of one block): only `channels` channels are blocked."""
        t = self.graph.types[v]
        if v in self.blocked:
            return self.blocked[v] if t.shape[1] == channels else None
        if not t.dtype.is_float:
            return None
        if v in self.graph.constants:
            array = self.graph.constants[v]
            if array.size == 1:
                return v
            if t.rank == 4 and t.shape[1] in (1, channels):
                if t.shape[1] == 1:
                    return self.constant(f"{v}/b16", array[..., None])
                return self.constant(f"{v}/b16", to_blocked(array))
            return None
        if t.rank == 4 and t.shape[1] == channels:
            return self.need_blocked(v)
        return None

    def conv(self, node, kind):
        """The Conv as ConvBlocked; False when its fused residual has no blocked form."""
        g = self.graph
        x, w = g.types[node.inputs[0]], g.constants[node.inputs[1]]
        residual = self.operand(node.inputs[3], w.shape[0]) if len(node.inputs) > 3 and node.inputs[3] else ""
        if residual is None:
            return False
        begin, end, strides, dil, _ = window_geometry(node.name, node.attrs, x.shape[2:], w.shape[2:])
        packed = pack_depthwise(w) if kind == "depthwise" else pack_dense(w)
        source = self.need_plain(node.inputs[0]) if kind == "direct" else self.need_blocked(node.inputs[0])
        inputs = [source, self.constant(f"{node.inputs[1]}/b16", packed)]
        if len(node.inputs) > 2:
            inputs.append(self.constant(f"{node.inputs[2]}/b16", pack_bias(g.constants[node.inputs[2]]))
                          if node.inputs[2] else "")
        if len(node.inputs) > 3:
            inputs.append(residual)
        attrs = {"depthwise": int(kind == "depthwise"), "channels": x.shape[1], "out_channels": w.shape[0],
                 "kernel_shape": tuple(w.shape[2:]), "strides": tuple(strides),
                 "pads": tuple(begin) + tuple(end), "dilations": tuple(dil),
                 "activation": node.attrs.get("activation")}
        self.blocked[node.outputs[0]] = self.add("ConvBlocked", inputs, attrs, f"{node.outputs[0]}/b16",
                                                 f"{node.name}/b16")
        return True

    def rewrite(self, node, region):
        out = node.outputs[0]
        kind = _conv_kind(self.graph, node, self.direct_max) if id(node) in region else None
        if kind and self.conv(node, kind):
            return
        if not kind and id(node) in region and any(v in self.blocked for v in node.inputs):
            channels = self.graph.types[out].shape[1]
            if node.op == "GlobalAveragePool":
                self.blocked[out] = self.add("ReduceMean", [self.blocked[node.inputs[0]]],
                                             {"axes": (2, 3), "keepdims": 1}, f"{out}/b16", f"{node.name}/b16")
                return
            if node.op in POOLS:      # a 3-D pool whose third axis (the 16 lanes) has a window of 1
                self.blocked[out] = self.add(node.op, [self.blocked[node.inputs[0]]], _lane_pool(node.attrs),
                                             f"{out}/b16", f"{node.name}/b16")
                return
            operands = [self.operand(v, channels) for v in node.inputs]
            if all(o is not None for o in operands):
                self.blocked[out] = self.add(node.op, operands, dict(node.attrs), f"{out}/b16", f"{node.name}/b16")
                return
        self.keep(node)


def block_channels(graph, target=None):
    """Needs: BatchNorm folded and epilogues fused (they ride along into ConvBlocked).
    Gives: regions with pointwise and depthwise Convs in the blocked layout (see above), NCHW
    values rebuilt where read outside; dead code elimination removes the rest. Only
    where `target`'s schedule table takes the layout (default: this CPU's does)."""
    if target is not None and not blocked_layout_pays(target):
        return graph
    limits = stem_limits(target)
    region = _regions(graph, limits)
    if not region:
        return graph
    r = _Rewriter(graph, limits[0])
    for node in graph.nodes:
        r.rewrite(node, region)
    for v in graph.output_names():
        r.need_plain(v)
    return graph.with_nodes(r.nodes, constants=r.constants, types=r.types)

