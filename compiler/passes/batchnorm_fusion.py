"""The ReLU (and a residual Add before it) after a training BatchNorm, fused into
BatchNormTrain (ops/batchnorm_train.py): the matcher and rewrite of passes/fusion.py's
fuse_batchnorm_train_relu.

    BatchNormTrain [-> Add(., r)] -> Relu  =>  BatchNormTrain(x, scale, bias[, r], relu=1)

and the comparisons `v > 0` of that ReLU's gradient read the fused op's output."""
from dataclasses import replace


def relu_after(graph, chain):
    """[BatchNormTrain, (Add,) Relu, Greater...]: the normalised value read by one Relu
    only, or by one Add of a residual computed before the BatchNorm whose sum only
    that Relu reads; and the comparisons `v > 0` of that Relu's gradient (autodiff's),
    which read the same from the ReLU's output. An Add of two BatchNorms' outputs (a
    ResNet downsample block: bn2 and the shortcut's conv1x1 + BN) goes to the later
    one, whose residual is then the earlier's output, written by it in full: one
    kernel can take only one Add."""
    users, outputs = graph.consumers(), set(graph.output_names())
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    producers = graph.producers()
    for bn in graph.nodes:
        if bn.op != "BatchNormTrain" or bn.attrs["relu"] or len(bn.inputs) > 3 or bn.outputs[0] in outputs:
            continue
        value, added = bn.outputs[0], []
        readers = users.get(value, [])
        residual = _residual(graph, readers[0], value) if len(readers) == 1 and readers[0].op == "Add" else None
        if residual and position.get(id(producers.get(residual)), -1) < position[id(bn)]:
            added, value = readers, readers[0].outputs[0]
            readers = [] if value in outputs else users.get(value, [])
        relus = [n for n in readers if n.op == "Relu"]
        masks = [n for n in readers if n.op == "Greater" and n.inputs[0] == value and _zero(graph, n.inputs[1])]
        if len(relus) == 1 and len(relus) + len(masks) == len(readers):
            yield [bn] + added + relus + masks


def _residual(graph, add, value):
    """The Add's other input when it has the normalised value's type (no broadcast)."""
    other = [i for i in add.inputs if i != value]
    if len(other) == 1 and graph.types[other[0]] == graph.types[value]:
        return other[0]
    return None


def _zero(graph, name):
    value = graph.constants.get(name)
    return value is not None and value.size == 1 and float(value.reshape(())) == 0.0


def fuse_relu(graph, nodes, constants, types):
    """The BatchNorm (given the residual) writes the ReLU's output; the masks read it."""
    bn, rest = nodes[0], nodes[1:]
    inputs = tuple(bn.inputs)
    if rest[0].op == "Add":
        inputs += (_residual(graph, rest[0], bn.outputs[0]),)
        rest = rest[1:]
    relu, masks = rest[0], rest[1:]
    out = relu.outputs[0]
    fused = replace(bn, inputs=inputs, outputs=(out,) + tuple(bn.outputs[1:]), attrs={**bn.attrs, "relu": 1})
    return [fused] + [replace(m, inputs=(out,) + tuple(m.inputs[1:])) for m in masks]
