"""ONNX import for training (ns.nn.from_graph): which initializers a user would
train, and a Graph in which those stay graph inputs instead of constants, so that
nothing folds them away or renames them (a torch export keeps PyTorch's
state_dict names).

Trained by default: float32 initializers of rank >= 1 with finite values whose
every use is a differentiable data slot (Conv/ConvTranspose/Gemm/MatMul weights
and biases, normalisation scales and biases, Gather's table, the operands of
arithmetic). Never: shape constants (integers), Resize scales and other
attribute-like inputs, scalars (attention scales), masks holding -inf, and
BatchNormalization's running statistics, which are buffers updated in training.

A training-mode BatchNormalization (torch.onnx.export(..., training=TRAINING))
becomes the inference node again: the GraphModule decides batch or running
statistics from its own train()/eval(), as PyTorch's layer does. A Dropout
node becomes a plain Dropout whose ratio the GraphModule applies in training."""
import numpy as np
import onnx
from onnx import helper

from nutshell.compiler.errors import GraphError
from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.ir.types import DType
from .external_data import load_tensors
from .onnx_import import _convert_node, _tensor_type, materialize_outputs, opset_of, read_model

# (op, input slot) pairs that carry data a gradient flows through; slot 0 always does.
_DATA_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
               "BatchNormalization": (1, 2), "LayerNormalization": (1, 2),
               "InstanceNormalization": (1, 2), "GroupNormalization": (1, 2), "PRelu": (1,),
               "Add": (1,), "Sub": (1,), "Mul": (1,), "Div": (1,), "Where": (1, 2),
               "LSTM": (1, 2, 3), "GRU": (1, 2, 3), "RNN": (1, 2, 3)}
_ANY_SLOT = {"Concat", "Sum", "Mean", "Max", "Min", "Einsum"}
_STAT_SLOTS = {"BatchNormalization": (3, 4)}
_NOT_WEIGHTS = {"Div"}         # x / c: a normalising constant, not a weight


def uses(nodes):
    """initializer-or-value name -> [(op, slot)] over `nodes` (ONNX or IR nodes)."""
    found = {}
    for node in nodes:
        op = getattr(node, "op_type", None) or node.op
        for slot, name in enumerate(node.input if hasattr(node, "op_type") else node.inputs):
            if name:
                found.setdefault(name, []).append((op, slot))
    return found


def _differentiable(op, slot):
    return slot == 0 or op in _ANY_SLOT or slot in _DATA_SLOTS.get(op, ())


def choose_state(tensors, used, trainable=None):
    """(parameter names, buffer names) among `tensors` (name -> array)."""
    buffers = {n for n, a in tensors.items() if a.dtype == np.float32 and used.get(n) and
               all(slot in _STAT_SLOTS.get(op, ()) for op, slot in used[n])}
    candidates = {n for n, a in tensors.items() if a.dtype == np.float32 and n in used and
                  n not in buffers and all(_differentiable(op, s) and s not in _STAT_SLOTS.get(op, ())
                                           for op, s in used[n])}
    if trainable is None:
        return sorted(n for n in candidates if _default_weight(tensors[n], used[n])), buffers
    if callable(trainable):
        chosen = [n for n in sorted(candidates) if trainable(n, tensors[n])]
    else:
        chosen = [trainable] if isinstance(trainable, str) else list(trainable)
        wrong = [n for n in chosen if n not in candidates]
        if wrong:
            raise ValueError(f"cannot train {wrong}: not float32 initializers the graph uses as "
                             f"data (trainable ones: {sorted(candidates)})")
    return chosen, buffers


def _default_weight(array, uses_of):
    return array.ndim >= 1 and bool(np.isfinite(array).all()) and \
        not all(op in _NOT_WEIGHTS for op, _ in uses_of)


def _rewrite(node, consumed):
    """Training-mode BatchNormalization -> the inference node (its statistics outputs
    unused); Dropout -> Dropout(ratio) without mask output. Others unchanged."""
    if node.op_type == "BatchNormalization":
        extra = [o for o in node.output[1:] if o]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("training_mode") and not any(o in consumed for o in extra):
            attrs.pop("training_mode")
            return helper.make_node("BatchNormalization", list(node.input[:5]), [node.output[0]],
                                    name=node.name, **attrs)
    return node


def _dropout_ratio(node, constants):
    """Dropout's ratio (input 1, or the old attribute), or None when it is not constant."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        return None if value is None else float(np.asarray(value))
    return float(attrs.get("ratio", 0.5))


def import_for_training(source, input_shapes=None, constant_inputs=None, trainable=None):
    """(Graph, {param: array}, {buffer: array}, {dropout output: ratio})."""
    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    model, _ = read_model(source)
    opset, g = opset_of(model), model.graph
    tensors = load_tensors(g.initializer)
    used = uses(g.node)
    params, buffers = choose_state(tensors, used, trainable)
    state = set(params) | set(buffers)
    builder = GraphBuilder(g.name or "onnx_model")
    for name, array in tensors.items():
        if name in state:
            builder.add_input(name, DType.float32, array.shape)
        else:
            builder.add_constant(array, name)
    for name, value in (constant_inputs or {}).items():
        builder.add_constant(np.asarray(value), name)
    for vi in g.input:
        if vi.name not in tensors and vi.name not in (constant_inputs or {}):
            builder.add_input(vi.name, *_tensor_type(vi, input_shapes))
    consumed = set(used) | {o.name for o in g.output}
    dropouts = {}
    for node in g.node:
        if node.op_type == "Dropout":
            ratio = _dropout_ratio(node, builder.constants)
            if ratio is not None and not any(o in consumed for o in node.output[1:] if o):
                builder.add_node("Identity", [node.input[0]], outputs=[node.output[0]], name=node.name)
                dropouts[node.output[0]] = ratio
                continue
        _convert_node(builder, _rewrite(node, consumed), opset)
    missing = [o.name for o in g.output if o.name not in builder.types]
    if missing:
        raise GraphError(f"graph outputs {missing} are never produced")
    builder.set_outputs([o.name for o in g.output])
    graph = materialize_outputs(builder)
    return (graph, {n: tensors[n].astype(np.float32) for n in params},
            {n: tensors[n].astype(np.float32) for n in buffers}, dropouts)
