"""The ReLU (and a residual Add before it) after a training BatchNorm, fused into
BatchNormTrain and its gradient (ops/batchnorm_train.py): the matchers and rewrites
of passes/fusion.py's fuse_batchnorm_train_relu and fuse_batchnorm_grad_mask.

    BatchNormTrain [-> Add(., r)] -> Relu  =>  BatchNormTrain(x, scale, bias[, r], relu=1)

and the comparisons `v > 0` of that ReLU's gradient read the fused op's output;
without a residual, that mask moves into the gradient:

    BatchNormTrainGrad(x, Where(y > 0, d, 0), scale, mean, var)
        =>  BatchNormTrainGrad(x, d, scale, mean, var, bias, relu=1)"""
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


def masked_gradient(graph, chain):
    """[BatchNormTrainGrad, Where, Greater]: the gradient of a BatchNormTrain(x, scale,
    bias, relu=1) (no residual, whose gradient would need the masked dy itself) whose
    dy is Where(y > 0, d, 0), the mask and the masked d read by nothing else."""
    users, outputs, producers = graph.consumers(), set(graph.output_names()), graph.producers()
    private = lambda node: node is not None and node.outputs[0] not in outputs and \
        len(users.get(node.outputs[0], [])) == 1
    for grad in graph.nodes:
        if grad.op != "BatchNormTrainGrad" or grad.attrs["relu"]:
            continue
        where = producers.get(grad.inputs[1])
        if not private(where) or where.op != "Where" or not _zero(graph, where.inputs[2]) or \
                graph.types[where.inputs[1]] != graph.types[grad.inputs[1]]:
            continue
        cond = producers.get(where.inputs[0])
        if not private(cond) or cond.op != "Greater" or not _zero(graph, cond.inputs[1]):
            continue
        bn = producers.get(cond.inputs[0])
        if bn is not None and bn.op == "BatchNormTrain" and bn.attrs["relu"] and len(bn.inputs) == 3 and \
                cond.inputs[0] == bn.outputs[0] and bn.attrs["epsilon"] == grad.attrs["epsilon"] and \
                tuple(grad.inputs[i] for i in (0, 2, 3, 4)) == (bn.inputs[0], bn.inputs[1]) + tuple(bn.outputs[1:]):
            yield [grad, where, cond]


def fuse_mask(graph, nodes, constants, types):
    """The gradient reads d unmasked and the forward's bias, and masks it itself."""
    grad, where, _ = nodes
    bn = graph.producers()[graph.producers()[where.inputs[0]].inputs[0]]
    inputs = (grad.inputs[0], where.inputs[1]) + tuple(grad.inputs[2:5]) + (bn.inputs[2],)
    return replace(grad, inputs=inputs, attrs={**grad.attrs, "relu": 1})
