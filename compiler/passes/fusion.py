"""Rewrites as data (TVM's FoldBatchnormToConv2D, Glow's fusions): each Rewrite
names a chain of ops, a condition and a replacement; one driver applies them.

    fold_batchnorm   Conv -> BatchNormalization      => Conv (weights and bias scaled)
    batchnorm_affine BatchNormalization (any other)  => Mul, Add by per-channel constants, which
                     element-wise fusion joins to their neighbours (DenseNet's BN -> ReLU)
    fuse_conv_residual  Add(Conv(x), r)              => Conv(x, w, b, r): r added in the epilogue
    fold_matmul_bias Add(MatMul(x, W), b), b per column => Gemm(x as rows, W, b): the bias
                     seeds the accumulators (a Linear on [N, T, C]: no pass over the product)
    fuse_*_relu      Conv|Gemm -> Relu               => the op with a Relu epilogue
    fuse_*_silu      Conv|Gemm -> y; Mul(y, Sigmoid(y)) => the op with a SiLU epilogue
                     (EfficientNet's swish; its value has two users, so it is not a chain)
    fuse_*_activation  Conv|Gemm -> Clip|HardSwish|...  => the op with that epilogue
                     (ReLU6 of MobileNet v2, hard-swish of v3; Clip's bounds as attributes)
    fuse_batchnorm_train_relu  BatchNormTrain [-> Add(., r)] -> Relu  => BatchNormTrain(x,
                     scale, bias[, r], relu=1); the ReLU gradient's masks read its output
                     (batchnorm_fusion.py)
    fuse_batchnorm_grad_mask  BatchNormTrainGrad(x, Where(y > 0, d, 0), ...) of such a
                     BatchNorm (no residual)  => BatchNormTrainGrad(x, d, ..., bias, relu=1):
                     the mask recomputed from x in the gradient's own passes
"""
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..ir.graph import Node
from ..ir.types import DType, TensorType
from . import batchnorm_fusion


@dataclass(frozen=True)
class Rewrite:
    name: str
    chain: tuple             # op names, each node's output 0 feeding the next's input 0
    condition: Callable      # (graph, nodes) -> bool
    apply: Callable          # (graph, nodes, constants, types) -> replacement node or nodes
    matches: Callable = None  # (graph, chain) -> node lists, for patterns other than chains


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
        for match in (rw.matches or _chains)(graph, rw.chain):
            if any(id(n) in replaced for n in match) or not rw.condition(graph, match):
                continue
            new_nodes[id(match[0])] = rw.apply(graph, match, constants, types)
            replaced.update({id(n): match for n in match})
        nodes = []
        for n in graph.nodes:
            new = new_nodes.get(id(n)) if id(n) in replaced else n
            nodes.extend(new if isinstance(new, list) else [new] if new is not None else [])
        graph = graph.with_nodes(nodes, constants=constants, types=types)
    return graph


def _const(graph, name):
    return graph.constants.get(name) if name else None


def _bn_foldable(graph, nodes):
    conv, bn = nodes
    return all(_const(graph, i) is not None for i in conv.inputs[1:] + bn.inputs[1:] if i) and \
        graph.types[conv.inputs[1]].dtype.is_float


def _bn_affine_coefficients(graph, bn):
    """(a, b) in float64 with BatchNorm(x) = a[c] * x + b[c], from constant statistics."""
    scale, bias, mean, var = (graph.constants[i].astype(np.float64) for i in bn.inputs[1:5])
    a = scale / np.sqrt(var + bn.attrs["epsilon"])
    return a, bias - mean * a


def _fold_bn(graph, nodes, constants, types):
    conv, bn = nodes
    w = graph.constants[conv.inputs[1]].astype(np.float64)
    b = graph.constants[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2 and conv.inputs[2] \
        else np.zeros(w.shape[0])
    a, shift = _bn_affine_coefficients(graph, bn)
    dtype = graph.types[conv.inputs[1]].dtype.numpy
    wname, bname = f"{conv.name}/folded_w", f"{conv.name}/folded_b"
    constants[wname] = (w * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dtype)
    constants[bname] = (b * a + shift).astype(dtype)
    types[wname] = TensorType(graph.types[conv.inputs[1]].dtype, w.shape)
    types[bname] = TensorType(graph.types[conv.inputs[1]].dtype, (w.shape[0],))
    return replace(conv, inputs=(conv.inputs[0], wname, bname), outputs=bn.outputs)


def _fuse_relu(graph, nodes, constants, types):
    op, act = nodes
    return replace(op, outputs=act.outputs, attrs={**op.attrs, "activation": "Relu"})


def _swish(graph, chain):
    """[producer, Sigmoid, Mul] where Mul(y, Sigmoid(y)) and y, Sigmoid(y) have no
    other users and are not outputs."""
    users, outputs = graph.consumers(), set(graph.output_names())
    producers = graph.producers()
    for sig in graph.nodes:
        if sig.op != "Sigmoid":
            continue
        y = sig.inputs[0]
        src = producers.get(y)
        if src is None or src.op != chain[0] or src.outputs[0] != y or y in outputs \
                or sig.outputs[0] in outputs:
            continue
        mul = users.get(sig.outputs[0], [])
        if len(mul) == 1 and mul[0].op == "Mul" and set(mul[0].inputs) == {y, sig.outputs[0]} and \
                {id(n) for n in users.get(y, [])} == {id(sig), id(mul[0])}:
            yield [src, sig, mul[0]]


def _residual(graph, chain):
    """[Add, producer] where Add(y, r) adds a same-typed r to the producer's only use
    y. The fused node takes Add's place: r may be computed after the producer."""
    users, outputs = graph.consumers(), set(graph.output_names())
    producers = graph.producers()
    for add in graph.nodes:
        if add.op != "Add" or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
            continue
        for y, r in (add.inputs, add.inputs[::-1]):
            src = producers.get(y)
            if src is not None and src.op == chain[0] and src.outputs[0] == y and y not in outputs \
                    and len(users.get(y, [])) == 1 and graph.types[r] == graph.types[y]:
                yield [add, src]
                break


def _fuse_residual(graph, nodes, constants, types):
    add, op = nodes
    r = add.inputs[1] if add.inputs[0] == op.outputs[0] else add.inputs[0]
    inputs = tuple(op.inputs) + ("",) * (3 - len(op.inputs)) + (r,)
    return replace(op, inputs=inputs, outputs=add.outputs)


def _biased(graph, chain):
    """[Add, MatMul] where Add(y, b) is the MatMul's only use; the Gemm takes Add's
    place (b, a Slice of a packed bias, may be computed after the MatMul)."""
    users, outputs = graph.consumers(), set(graph.output_names())
    producers = graph.producers()
    for add in graph.nodes:
        src = producers.get(add.inputs[0]) if add.op == "Add" and add.inputs else None
        if src is not None and src.op == "MatMul" and add.inputs[0] not in outputs and \
                len(users.get(add.inputs[0], [])) == 1:
            yield [add, src]


def _bias_foldable(graph, nodes):
    """MatMul(x, W) with a 2-D W whose only use is Add(., b), b one value per column
    (a Linear's bias): a Gemm with b as its C. A constant W stays a MatMul, which
    prepack_weights packs once (a Gemm's B is packed at every run)."""
    add, mm = nodes
    y, b = mm.outputs[0], add.inputs[1]
    ty, tw = graph.types[y], graph.types[mm.inputs[1]]
    tb = graph.types.get(b)
    return mm.inputs[1] not in graph.constants and not mm.attrs and len(add.inputs) == 2 and \
        add.inputs[0] == y and b != y and tb is not None and tw.rank == 2 and \
        graph.types[mm.inputs[0]].rank >= 2 and ty.dtype.is_float and tb.dtype == ty.dtype and \
        graph.types[add.outputs[0]] == ty and tb.rank >= 1 and tb.shape[-1] == ty.shape[-1] and \
        all(d == 1 for d in tb.shape[:-1])


def _fold_bias(graph, nodes, constants, types):
    """Gemm(x as rows, W, b): the bias seeds the accumulators instead of a pass over
    the product (alias Reshapes around it when x has more than two dims)."""
    add, mm = nodes
    (x, w), (b, out) = mm.inputs, (add.inputs[1], add.outputs[0])
    tx, ty, tb = graph.types[x], graph.types[out], graph.types[b]
    made = []

    def reshaped(value, shape, name):      # name: the Reshape's output
        const = f"{name}/shape"
        constants[const] = np.asarray(shape, dtype=np.int64)
        types[const], types[name] = TensorType(DType.int64, (len(shape),)), TensorType(ty.dtype, tuple(shape))
        made.append(Node("Reshape", (value, const), (name,), {"allowzero": 0}, name))
        return name
    if tb.rank > 1:
        b = reshaped(b, tb.shape[-1:], f"{out}/bias")
    rows = int(np.prod(tx.shape[:-1], dtype=np.int64))
    x2 = x if tx.rank == 2 else reshaped(x, (rows, tx.shape[-1]), f"{out}/a")
    y2 = out if ty.rank == 2 else f"{out}/rows"
    types[y2] = TensorType(ty.dtype, (rows, ty.shape[-1]))
    made.append(replace(mm, op="Gemm", inputs=(x2, w, b), outputs=(y2,),
                        attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}))
    if y2 != out:
        reshaped(y2, ty.shape, out)
    return made


def _fuse_silu(graph, nodes, constants, types):
    op, _, mul = nodes
    return replace(op, outputs=mul.outputs, attrs={**op.attrs, "activation": "Silu"})


ACTIVATIONS = ("Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu",
               "Softplus", "Mish", "Gelu")


def _activation(graph, chain):
    """[producer, act] for a one-input activation (Clip with constant scalar bounds)
    that is the producer's only user."""
    users, outputs = graph.consumers(), set(graph.output_names())
    for src in graph.nodes:
        if src.op != chain[0] or src.outputs[0] in outputs:
            continue
        nxt = users.get(src.outputs[0], [])
        if len(nxt) == 1 and nxt[0].op in ACTIVATIONS and nxt[0].inputs[0] == src.outputs[0] and \
                all(i == "" or (i in graph.constants and graph.constants[i].size == 1)
                    for i in nxt[0].inputs[1:]):
            yield [src, nxt[0]]


def _fuse_activation(graph, nodes, constants, types):
    op, act = nodes
    attrs = dict(act.attrs)
    for key, name in zip(("min", "max"), act.inputs[1:]):     # Clip's bounds become attributes
        if name:
            attrs[key] = float(graph.constants[name].reshape(()))
    return replace(op, outputs=act.outputs, attrs={**op.attrs, "activation": (act.op, tuple(sorted(attrs.items())))})


def _bn_constant(graph, nodes):
    bn = nodes[0]
    return graph.types[bn.inputs[0]].rank >= 2 and graph.types[bn.inputs[0]].dtype.is_float and \
        not bn.attrs.get("training_mode") and len(bn.outputs) == 1 and \
        all(i in graph.constants for i in bn.inputs[1:5])


def _bn_affine(graph, nodes, constants, types):
    bn = nodes[0]
    x = graph.types[bn.inputs[0]]
    shape = (-1,) + (1,) * (x.rank - 2)
    names = []
    for suffix, value in zip(("scale", "shift"), _bn_affine_coefficients(graph, bn)):
        name = f"{bn.name or bn.outputs[0]}/{suffix}"
        constants[name] = value.astype(x.dtype.numpy).reshape(shape)
        types[name] = TensorType(x.dtype, constants[name].shape)
        names.append(name)
    scaled = f"{bn.outputs[0]}/scaled"
    types[scaled] = x
    return [replace(bn, op="Mul", inputs=(bn.inputs[0], names[0]), outputs=(scaled,), attrs={}),
            replace(bn, op="Add", inputs=(scaled, names[1]), attrs={}, name=f"{bn.name}/shift")]


REWRITES = [
    Rewrite("fold_batchnorm", ("Conv", "BatchNormalization"), _bn_foldable, _fold_bn),
    Rewrite("batchnorm_affine", ("BatchNormalization",), _bn_constant, _bn_affine),
    Rewrite("fuse_conv_residual", ("Conv",), lambda g, n: "activation" not in n[1].attrs and len(n[1].inputs) < 4,
            _fuse_residual, _residual),
    Rewrite("fuse_conv_relu", ("Conv", "Relu"), lambda g, n: "activation" not in n[0].attrs, _fuse_relu),
    Rewrite("fold_matmul_bias", ("Add", "MatMul"), _bias_foldable, _fold_bias, _biased),
    Rewrite("fuse_gemm_relu", ("Gemm", "Relu"), lambda g, n: "activation" not in n[0].attrs, _fuse_relu),
    Rewrite("fuse_conv_silu", ("Conv",), lambda g, n: "activation" not in n[0].attrs, _fuse_silu, _swish),
    Rewrite("fuse_gemm_silu", ("Gemm",), lambda g, n: "activation" not in n[0].attrs, _fuse_silu, _swish),
    Rewrite("fuse_conv_activation", ("Conv",), lambda g, n: "activation" not in n[0].attrs, _fuse_activation,
            _activation),
    Rewrite("fuse_gemm_activation", ("Gemm",), lambda g, n: "activation" not in n[0].attrs, _fuse_activation,
            _activation),
    Rewrite("fuse_batchnorm_train_relu", ("BatchNormTrain",), lambda g, n: True, batchnorm_fusion.fuse_relu,
            batchnorm_fusion.relu_after),
    Rewrite("fuse_batchnorm_grad_mask", ("BatchNormTrainGrad",), lambda g, n: True, batchnorm_fusion.fuse_mask,
            batchnorm_fusion.masked_gradient),
]


def fuse(graph):
    """Needs: constants folded. Gives: BatchNorm folded into convolutions and ReLU or
    SiLU applied in the producing kernel's epilogue (passes over memory fewer)."""
    return apply_rewrites(graph, REWRITES)
