"""ns.compile_training: one native function per training step.

The module is traced in training mode (parameters and buffers become state
inputs), the loss is appended, the autodiff pass adds the backward graph, the
optimizer adds its update as graph ops, and the whole step (forward, loss,
backward, regularisation, update) compiles to one function."""
from nutshell.compiler.ir.graph import GraphBuilder
from nutshell.compiler.ir.types import DType
from nutshell.compiler.passes.autodiff import GradContext, differentiate
from nutshell.frontends.losses import CLASS_LABELS, get_loss
from nutshell.frontends.optim import SGD

def build_training_graph(module, input_shape, loss="cross_entropy", optimizer=None,
                         label_smoothing=0.0, l1=0.0, l2=0.0, clip_norm=None, clip_value=None,
                         max_norm=None):
    """The training-step Graph and its layout: which inputs are state, data, scalars."""
    optimizer = optimizer or SGD(lr=0.01)
    forward = module.trace(input_shape, mode="training")
    ts = forward.trace_state
    output = forward.outputs[0]
    loss_fn = get_loss(loss)
    b = GraphBuilder(forward.name + "_train")
    b.inputs, b.nodes = list(forward.inputs), list(forward.nodes)
    b.constants, b.types = dict(forward.constants), dict(forward.types)
    g = GradContext(b)
    if loss in CLASS_LABELS:
        labels = b.add_input("labels", DType.int64, (input_shape[0],))
    else:
        labels = b.add_input("labels", DType.float32, output.type.shape)
    kwargs = {"label_smoothing": label_smoothing} if label_smoothing else {}
    loss_value = loss_fn(g, output.name, labels, **kwargs)
    objective = loss_value
    weights = [p for p in ts.params if len(b.types[p].shape) >= 2]
    for coef, term in ((l2, lambda p: g.mul(p, p)), (l1, lambda p: g.op("Abs", [p]))):
        if coef:
            for p in weights:
                objective = g.add(objective, g.scale(g.op("ReduceSum", [term(p)], keepdims=0), coef))

    graph = b.build()
    b, grads = differentiate(graph, objective, ts.params)
    g = GradContext(b)
    grads = _clip(g, grads, clip_norm, clip_value)

    lr = b.add_input("learning_rate", DType.float32, ())
    t = g.op("Cast", [ts.step], to=1)
    scalar_names = optimizer.scalars(g, ts.step, t, lr)
    state_inputs, next_values = [], {}
    for p in ts.params:
        slots = {}
        for slot in optimizer.slots:
            slots[slot] = b.add_input(f"{p}.{slot}", DType.float32, b.types[p].shape)
            state_inputs.append(slots[slot])
        new_p, new_slots = optimizer.update(g, p, grads[p], slots, scalar_names)
        if max_norm is not None and len(b.types[p].shape) >= 2:
            new_p = _max_norm(g, new_p, max_norm)
        next_values[p] = new_p
        next_values.update({slots[k]: v for k, v in new_slots.items()})
    next_values.update(ts.updates)
    state = ts.params + ts.buffers + state_inputs
    outputs = [loss_value]
    for s in state:
        value = next_values.get(s, s)
        if value == s or value in outputs:            # must land in its own buffer
            value = b.add_node("Identity", [value])
        outputs.append(value)
    b.set_outputs(outputs)
    layout = {"state": state, "params": list(ts.params), "buffers": list(ts.buffers),
              "slots": state_inputs, "lr": lr, "step": ts.step,
              "input": forward.inputs[1].name, "labels": labels, "loss": loss_value,
              "class_labels": loss in CLASS_LABELS, "classes": output.type.shape[-1]}
    return b.build(), layout


def _clip(g, grads, clip_norm, clip_value):
    if clip_value is not None:
        v = float(clip_value)
        for p, d in grads.items():
            hi, lo = g.scalar(v, d), g.scalar(-v, d)
            grads[p] = g.where(g.op("Greater", [d, hi]), hi, g.where(g.op("Less", [d, lo]), lo, d))
    if clip_norm is not None:
        squares = [g.op("ReduceSum", [g.mul(d, d)], keepdims=0) for d in grads.values()]
        total = squares[0]
        for sq in squares[1:]:
            total = g.add(total, sq)
        norm = g.op("Sqrt", [total])
        coef = g.div(g.scalar(float(clip_norm), norm), g.add(norm, g.scalar(1e-6, norm)))
        scale = g.where(g.op("Less", [coef, g.scalar(1.0, coef)]), coef, g.scalar(1.0, coef))
        grads = {p: g.mul(d, scale) for p, d in grads.items()}
    return grads


def _max_norm(g, w, limit):
    """Rescale each output unit's incoming weights to norm <= limit."""
    rank = len(g.shape(w))
    norm = g.op("Sqrt", [g.reduce_sum(g.mul(w, w), list(range(1, rank)))])
    factor = g.div(g.scalar(float(limit), norm), g.add(norm, g.scalar(1e-7, norm)))
    return g.mul(w, g.where(g.op("Greater", [norm, g.scalar(float(limit), norm)]), factor,
                            g.scalar(1.0, norm)))


def compile_training(module, input_shape, loss="cross_entropy", optimizer=None, threads=None,
                     check_nan=False, **regularisation):
    """Compile the whole training step of `module` to one native function.

    loss: cross_entropy | nll | mse | l1 | huber | bce_with_logits (or a callable).
    regularisation: label_smoothing, l1, l2, clip_norm, clip_value, max_norm.
    check_nan: after each step, a non-finite loss raises FloatingPointError naming
    the first op that produced it, and the parameters stay at their last good values."""
    from nutshell.api import c_identifier, optimize_graph
    from nutshell.compiler.codegen.model import build_model
    from nutshell.compiler.lower.target import host_target
    from nutshell.runtime.jit import JitModule
    from nutshell.runtime.model import CompiledModel
    from nutshell.runtime.trainer import Trainer
    optimizer = optimizer or SGD(lr=0.01)
    graph, layout = build_training_graph(module, input_shape, loss, optimizer, **regularisation)
    graph = optimize_graph(graph)
    target = host_target(threads)
    code = build_model(graph, target, c_identifier(graph.name))
    model = CompiledModel(graph, code, JitModule(code.llvm_ir, target), target)
    return Trainer(module, model, layout, optimizer, tuple(input_shape), threads, check_nan)
