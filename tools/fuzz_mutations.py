"""Mutations of ONNX models for tools/fuzz_loader.py: protobuf fields (dims,
attributes, initializers, nodes, types, opsets) and raw bytes (flips, truncation,
splices). Every case is a pure function of (seed model, base seed, case number),
so a failure is reproduced from its number alone."""
import math
import random

import onnx
from onnx import AttributeProto

HOSTILE_INTS = [0, -1, 1, 2, 3, -2, 7, 2 ** 31 - 1, -(2 ** 31), 2 ** 62, -(2 ** 62), 2 ** 63 - 1, 10 ** 6]
HOSTILE_FLOATS = [0.0, -1.0, 1e-30, 1e30, math.inf, -math.inf, math.nan, 0.5]
OP_TYPES = ["Relu", "Add", "Mul", "Conv", "MaxPool", "AveragePool", "Gemm", "MatMul", "Reshape",
            "Concat", "Softmax", "Transpose", "Gather", "Slice", "Pad", "Resize", "Expand", "Tile",
            "Identity", "Flatten", "ReduceMean", "Sigmoid", "Split", "Squeeze", "Unsqueeze", "Where",
            "Cast", "ConstantOfShape", "Shape", "Range", "TopK", "NoSuchOp", "BatchNormalization"]


def _pick(rng, seq):
    seq = list(seq)
    return seq[rng.randrange(len(seq))] if seq else None


def _int_value(rng, old=None):
    if old is not None and rng.random() < 0.4:      # kept inside int64: protobuf refuses more
        return max(-(2 ** 63), min(2 ** 63 - 1, old + rng.choice([-1, 1, old, -2 * old])))
    return rng.choice(HOSTILE_INTS)


def _dims(m):
    g = m.graph
    return [v.type.tensor_type.shape for v in list(g.input) + list(g.output) + list(g.value_info)
            if v.type.HasField("tensor_type")]


def mutate_dim(m, rng):
    shape = _pick(rng, _dims(m))
    if shape is None:
        return "no dims"
    roll = rng.random()
    if roll < 0.15 or not shape.dim:
        shape.dim.add().dim_value = rng.choice([1, 2, 3])
        return "added a dim"
    d = _pick(rng, shape.dim)
    if roll < 0.3:
        shape.dim.remove(d)
        return "removed a dim"
    if roll < 0.4:
        d.dim_param = "N"
        return "symbolic dim"
    d.dim_value = max(0, _int_value(rng, d.dim_value)) if rng.random() < 0.8 else _int_value(rng)
    return f"dim = {d.dim_value}"


def _attrs(m, kinds):
    return [(n, a) for n in m.graph.node for a in n.attribute if a.type in kinds]


def mutate_attr(m, rng):
    kinds = (AttributeProto.INT, AttributeProto.INTS, AttributeProto.FLOAT, AttributeProto.FLOATS,
             AttributeProto.STRING)
    found = _pick(rng, _attrs(m, kinds))
    if found is None:
        return "no attributes"
    node, a = found
    what = f"{node.op_type}.{a.name}"
    if rng.random() < 0.1:
        node.attribute.remove(a)
        return f"deleted {what}"
    if a.type == AttributeProto.INT:
        a.i = _int_value(rng, a.i)
    elif a.type == AttributeProto.FLOAT:
        a.f = rng.choice(HOSTILE_FLOATS)
    elif a.type == AttributeProto.STRING:
        a.s = rng.choice([b"", b"nearest", b"linear", b"cubic", b"reflect", b"edge", b"NOTSET", b"\xff"])
    elif a.type == AttributeProto.INTS:
        roll = rng.random()
        if roll < 0.2 or not a.ints:
            a.ints.append(_int_value(rng))
        elif roll < 0.35:
            del a.ints[rng.randrange(len(a.ints))]
        else:
            i = rng.randrange(len(a.ints))
            a.ints[i] = _int_value(rng, a.ints[i])
    elif a.floats:
        a.floats[rng.randrange(len(a.floats))] = rng.choice(HOSTILE_FLOATS)
    return f"changed {what}"


def mutate_initializer(m, rng):
    t = _pick(rng, m.graph.initializer)
    if t is None:
        return "no initializers"
    roll = rng.random()
    if roll < 0.25 and t.dims:
        i = rng.randrange(len(t.dims))
        t.dims[i] = _int_value(rng, t.dims[i])
    elif roll < 0.35:
        t.dims.append(rng.choice([1, 2, 0]))
    elif roll < 0.45:
        t.data_type = rng.randrange(0, 26)
    elif roll < 0.55 and t.raw_data:
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data))]
    elif t.data_type == onnx.TensorProto.INT64 and len(t.raw_data) <= 64 and len(t.raw_data) % 8 == 0:
        import numpy as np
        values = np.frombuffer(t.raw_data, np.int64).copy() if t.raw_data else np.array(list(t.int64_data))
        if values.size:
            values[rng.randrange(values.size)] = _int_value(rng, int(values[0]))
            t.ClearField("int64_data")
            t.raw_data = values.astype(np.int64).tobytes()
    else:
        data = bytearray(t.raw_data)
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        t.raw_data = bytes(data)
    return f"changed initializer {t.name}"


def mutate_node(m, rng):
    g = m.graph
    node = _pick(rng, g.node)
    if node is None:
        return "no nodes"
    names = [v.name for v in g.input] + [t.name for t in g.initializer] + [o for n in g.node for o in n.output]
    roll = rng.random()
    if roll < 0.2:
        node.op_type = rng.choice(OP_TYPES)
    elif roll < 0.35 and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(names + ["", "ghost"])
    elif roll < 0.45:
        node.input.append(rng.choice(names + [""]))
    elif roll < 0.52 and node.input:
        del node.input[rng.randrange(len(node.input))]
    elif roll < 0.6:
        node.output.append(f"extra{rng.randrange(3)}")
    elif roll < 0.68 and node.output:
        node.output[rng.randrange(len(node.output))] = rng.choice(names + ["fresh"])
    elif roll < 0.76:
        g.node.remove(node)
    elif roll < 0.84:
        g.node.append(node)        # a copy: outputs defined twice
    elif roll < 0.92:
        order = list(g.node)
        rng.shuffle(order)
        del g.node[:]
        g.node.extend(order)
    else:
        node.domain = rng.choice(["", "ai.onnx", "com.microsoft", "nutshell"])
    return f"changed node {node.op_type}"


def mutate_types(m, rng):
    g = m.graph
    roll = rng.random()
    if roll < 0.4:
        v = _pick(rng, list(g.input) + list(g.output))
        v.type.tensor_type.elem_type = rng.randrange(0, 26)
        return f"elem_type of {v.name}"
    if roll < 0.6:
        v = _pick(rng, list(g.input) + list(g.output))
        v.type.ClearField("tensor_type") if rng.random() < 0.5 else v.type.tensor_type.ClearField("shape")
        return f"type info of {v.name}"
    if roll < 0.8 and m.opset_import:
        m.opset_import[0].version = rng.choice([1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, 22, 99, -1])
        return f"opset {m.opset_import[0].version}"
    m.ir_version = rng.choice([0, 1, 3, 7, 8, 10, 11, 99])
    return f"ir_version {m.ir_version}"


PROTO_MUTATIONS = [(mutate_dim, 2), (mutate_attr, 4), (mutate_initializer, 3), (mutate_node, 3),
                   (mutate_types, 1)]


def _structure_positions(data, m):
    """Byte positions outside big weight blobs: flips there hit the graph's structure."""
    spans = []
    for t in m.graph.initializer:
        if len(t.raw_data) > 64:
            start = data.find(t.raw_data)
            if start >= 0:
                spans.append((start, start + len(t.raw_data)))
    spans.sort()
    cuts, last = [], 0
    for a, b in spans:
        cuts.append((last, a))
        last = b
    cuts.append((last, len(data)))
    return [c for c in cuts if c[1] > c[0]]


def mutate_bytes(data, m, rng):
    data = bytearray(data)
    roll = rng.random()
    if roll < 0.2:
        return bytes(data[:rng.randrange(len(data))]), "truncated"
    if roll < 0.3:
        a, b = sorted(rng.randrange(len(data)) for _ in range(2))
        at = rng.randrange(len(data))
        return bytes(data[:at] + data[a:b] + data[at:]), "spliced"
    spans = _structure_positions(bytes(data), m) if rng.random() < 0.9 else [(0, len(data))]
    for _ in range(rng.randint(1, 8)):
        a, b = _pick(rng, spans)
        data[rng.randrange(a, b)] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    return bytes(data), "byte flips"


def make_case(seeds, base_seed, number):
    """(seed name, mutated bytes, description) for case `number`."""
    rng = random.Random(f"{base_seed}:{number}")
    name = sorted(seeds)[rng.randrange(len(seeds))]
    m = onnx.load_model_from_string(seeds[name])
    steps = []
    funcs, weights = zip(*PROTO_MUTATIONS)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if rng.random() < 0.75:
            steps.append(rng.choices(funcs, weights)[0](m, rng))
    data = m.SerializeToString()
    if not steps or rng.random() < 0.3:
        data, what = mutate_bytes(data, m, rng)
        steps.append(what)
    return name, data, steps
