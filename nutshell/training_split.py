"""The training step split where the gradients are complete, for data parallelism.

`grads` runs forward, loss and backward and returns the loss, each trainable
parameter's gradient and the new buffers (BatchNorm's running statistics);
`apply` takes the parameters, the (all-reduced) gradients and the optimizer's
slots and returns the updated parameters and slots. Between the two, ranks
average their gradients. Clipping and max_norm act in `apply`, on the averaged
gradient, as they would on the whole batch's; L1/L2 terms are part of each
rank's loss, so their gradients average to themselves."""
from nutshell.compiler.ir.graph import GraphBuilder
from nutshell.compiler.ir.types import DType
from nutshell.compiler.passes.autodiff import GradContext
from nutshell.frontends import optim
from nutshell.training import _clip, _max_norm, build_training_graph


class _GradientsOut(optim.Optimizer):
    """Stands in for the optimizer: each parameter's "update" is its gradient, so
    build_training_graph's outputs are the loss, the gradients and the buffers."""
    slots = ()

    def __init__(self):
        super().__init__(0.0)

    def scalars(self, g, step, t, lr):
        return {}

    def update(self, g, p, grad, state, s):
        return grad, {}


def grad_name(param):
    return f"{param}.grad"


def build_grads_graph(recipe, l1=0.0, l2=0.0):
    """(graph, layout): outputs loss, then per layout["state"] entry (params, then
    buffers) the parameter's gradient or the buffer's new value."""
    return build_training_graph(recipe, _GradientsOut(), l1=l1, l2=l2)


def build_apply_graph(grads_graph, layout, optimizer, clip_norm=None, clip_value=None,
                      max_norm=None):
    """(graph, state names): the update of params and slots from the gradients.
    Inputs are each parameter, its gradient (NAME.grad), its slots, the learning
    rate and the step; outputs the new values of the returned state names."""
    types = grads_graph.types
    b = GraphBuilder(grads_graph.name + "_apply")
    g = GradContext(b)
    params = layout["params"]
    for p in params:
        b.add_input(p, DType.float32, types[p].shape)
    grads = {p: b.add_input(grad_name(p), DType.float32, types[p].shape) for p in params}
    grads = _clip(g, grads, clip_norm, clip_value)
    lr = b.add_input(layout["lr"], DType.float32, ())
    step = b.add_input(layout["step"], types[layout["step"]].dtype, types[layout["step"]].shape)
    scalars = optimizer.scalars(g, step, g.op("Cast", [step], to=1), lr)
    slot_names, outputs, slot_outputs = [], [], []
    for p in params:
        slots = {s: b.add_input(f"{p}.{s}", DType.float32, types[p].shape) for s in optimizer.slots}
        new_p, new_slots = optimizer.update(g, p, grads[p], slots, scalars)
        if max_norm is not None and len(types[p].shape) >= 2:
            new_p = _max_norm(g, new_p, max_norm)
        outputs.append(new_p)
        for s, name in slots.items():
            slot_names.append(name)
            slot_outputs.append(new_slots[s])
    state = params + slot_names
    final = []
    for name, value in zip(state, outputs + slot_outputs):
        if value == name or value in final:       # must land in its own buffer
            value = b.add_node("Identity", [value])
        final.append(value)
    b.set_outputs(final)
    return b.build(), state
