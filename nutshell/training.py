"""ns.compile_training: one native function per training step.

The module is traced in training mode (parameters and buffers become state
inputs), the loss is appended, the autodiff pass adds the backward graph, the
optimizer adds its update as graph ops, and the whole step (forward, loss,
backward, regularisation, update) compiles to one function.

Any model trains: `example_inputs=` gives its inputs (an array or a tuple of
them, int64 token ids included), `example_targets=` its targets, and `loss=` is a
built-in name or a callable (output, target) -> scalar written with the tracing
API. Frozen parameters (requires_grad False) are inputs the step reads and never
updates, so trainers sharing submodules (a GAN's) see each other's updates."""
import math
import os
import threading

from nutshell.compiler.errors import CompileError
from nutshell.compiler.ir.graph import GraphBuilder
from nutshell.compiler.ir.types import DType
from nutshell.compiler.passes.autodiff import GradContext, differentiate
from nutshell.frontends import optim
from nutshell.frontends.losses import attach_loss, data_specs

OPTIMIZERS = {"sgd": lambda: optim.SGD(lr=0.01), "adam": optim.Adam, "adamw": optim.AdamW,
              "adagrad": optim.Adagrad, "rmsprop": optim.RMSprop}
REGULARISATION = {"l1": 0.0, "l2": 0.0, "clip_norm": None, "clip_value": None, "max_norm": None}
LOSS_OPTIONS = {"label_smoothing": 0.0, "ignore_index": None}
DISTRIBUTED_OPTIONS = {"bucket_cap_mb": None, "sync_batchnorm": False}   # with distributed= only


class Recipe:
    """How a trainer's graphs are traced: the module, its example inputs and targets
    and the loss. Kept so that evaluation models can be traced at any batch size."""

    def __init__(self, module, input_shape, example_inputs, example_targets, loss, loss_options):
        if (input_shape is None) == (example_inputs is None):
            raise TypeError("compile_training needs input_shape=(N, ...) or example_inputs=..., "
                            "not both")
        self.module, self.loss, self.loss_options = module, loss, loss_options
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.example_inputs = example_inputs
        self.targets = data_specs(example_targets, "target") if example_targets is not None else None
        self.targets_as_tuple = isinstance(example_targets, (tuple, list))
        self.inputs = None           # [(name, shape, DType)], known after the first trace

    def trace(self, mode, batch=None):
        """(builder, forward's result as Tensors) of the module traced in `mode`,
        with `batch` rows (default: the examples')."""
        b = GraphBuilder(type(self.module).__name__.lower() + ("_train" if mode == "training" else ""))
        result, module = {}, self.module
        forward, had_own = module.forward, "forward" in vars(module)

        def recording(*args, **kwargs):          # forward's result, tuples kept as they are
            result["out"] = forward(*args, **kwargs)
            return result["out"]

        object.__setattr__(module, "forward", recording)
        try:
            graph = module.trace(**self._shapes(batch), mode=mode, builder=b)
        finally:
            object.__setattr__(module, "forward", forward) if had_own else object.__delattr__(module, "forward")
        if self.inputs is None:
            names = getattr(graph.trace_state, "inputs", None) or ["input"]
            self.inputs = [(n, b.types[n].shape, b.types[n].dtype) for n in names]
        return b, result["out"]

    def _shapes(self, batch):
        if batch is None:
            return ({"input_shape": self.input_shape} if self.input_shape is not None else
                    {"example_inputs": self.example_inputs})
        if self.input_shape is not None:
            return {"input_shape": (batch,) + self.input_shape[1:]}
        from nutshell.frontends.dsl import InputSpec
        return {"example_inputs": [InputSpec((batch,) + s[1:], d) for _, s, d in self.inputs]}

    def add_loss(self, b, result, batch=None):
        """Append the targets and the loss to `b`; fixes the target specs on first use."""
        targets = self.targets
        if targets is not None and batch is not None:
            targets = [(n, (batch,) + s[1:], d) for n, s, d in targets]
        names = {id(p): n for n, p in self.module.named_parameters()}
        loss, resolved, classes = attach_loss(b, result, targets, self.loss, self.loss_options,
                                              self.targets_as_tuple, names)
        if self.targets is None:
            self.targets = resolved
        return loss, [n for n, _, _ in resolved], classes

    def eval_graph(self, batch, with_loss):
        """Forward (and the loss) reading the state as inputs, layers in inference mode."""
        b, result = self.trace("state", batch)
        if with_loss:
            loss, _, _ = self.add_loss(b, result, batch)
            if loss in [v.name for v in b.outputs]:
                loss = b.add_node("Identity", [loss])
            b.set_outputs([v.name for v in b.outputs] + [loss])
        return b.build()


def build_training_graph(recipe, optimizer, l1=0.0, l2=0.0, clip_norm=None, clip_value=None,
                         max_norm=None):
    """The training-step Graph and its layout: which inputs are state, data, scalars."""
    b, result = recipe.trace("training")
    ts = b.trace
    loss_value, targets, classes = recipe.add_loss(b, result)
    params = dict(recipe.module.named_parameters())
    stop = set(getattr(ts, "detached", ()))
    reached = _reached(b.nodes, loss_value, stop)
    frozen = [p for p in ts.params if p in getattr(ts, "frozen", ()) or p not in reached or
              not getattr(params[p], "requires_grad", True)]
    trainable = [p for p in ts.params if p not in frozen]
    if not trainable:
        raise CompileError("nothing to train: no parameter with requires_grad reaches the loss "
                           "(all are frozen, behind .detach() or unused)")
    g = GradContext(b)
    objective = loss_value
    weights = [p for p in trainable if len(b.types[p].shape) >= 2]
    for coef, term in ((l2, lambda p: g.mul(p, p)), (l1, lambda p: g.op("Abs", [p]))):
        if coef:
            for p in weights:
                objective = g.add(objective, g.scale(g.op("ReduceSum", [term(p)], keepdims=0), coef))

    graph = b.build()
    b, grads = differentiate(graph, objective, trainable, stop=stop)
    g = GradContext(b)
    grads = _clip(g, grads, clip_norm, clip_value)

    lr = b.add_input("learning_rate", DType.float32, ())
    t = g.op("Cast", [ts.step], to=1)
    scalar_names = optimizer.scalars(g, ts.step, t, lr)
    state_inputs, next_values = [], {}
    for p in trainable:
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
    state = trainable + ts.buffers + state_inputs
    outputs = [loss_value]
    for s in state:
        value = next_values.get(s, s)
        if value == s or value in outputs:            # must land in its own buffer
            value = b.add_node("Identity", [value])
        outputs.append(value)
    b.set_outputs(outputs)
    inputs = [n for n, _, _ in recipe.inputs]
    first_classes = classes.get(targets[0], (None, None))[0] if targets else None
    layout = {"state": state, "params": trainable, "frozen": frozen, "buffers": list(ts.buffers),
              "slots": state_inputs, "lr": lr, "step": ts.step, "inputs": inputs,
              "targets": targets, "class_targets": classes, "loss": loss_value,
              # the one-input, one-target form the C bundle (Trainer.export) is built on
              "input": inputs[0], "labels": targets[0] if targets else None,
              "class_labels": first_classes is not None, "classes": first_classes}
    return b.build(), layout


def _reached(nodes, loss, stop):
    """The values the loss's gradient reaches, not through `stop` (detached) values.
    A parameter it misses is read, never updated, as torch's optimizers skip a
    parameter whose .grad is None (a GAN's generator behind .detach())."""
    reached = {loss}
    for node in reversed(nodes):
        if any(o in reached and o not in stop for o in node.outputs if o):
            reached.update(i for i in node.inputs if i)
    return reached


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


def as_optimizer(optimizer):
    """An Optimizer from an instance, a class or a name ("sgd", "adam", ...)."""
    if optimizer is None:
        return optim.SGD(lr=0.01)
    if isinstance(optimizer, str):
        make = OPTIMIZERS.get(optimizer.lower())
        if make is None:
            raise ValueError(f"unknown optimizer '{optimizer}' (choose from {sorted(OPTIMIZERS)}, "
                             "or pass one such as ns.optim.Adam(lr=1e-3))")
        optimizer = make()
    elif isinstance(optimizer, type) and issubclass(optimizer, optim.Optimizer):
        optimizer = optimizer()
    if not isinstance(optimizer, optim.Optimizer):
        raise TypeError(f"optimizer must be an ns.optim optimizer such as ns.optim.Adam(lr=1e-3) "
                        f"or one of {sorted(OPTIMIZERS)}, got {type(optimizer).__name__}")
    if not math.isfinite(optimizer.lr):
        raise ValueError(f"learning rate must be finite, got {optimizer.lr}")
    return optimizer


_OPTIMISED = {}     # the step graph's key -> its optimised graph, for this process's recompiles
_OPTIMISED_LOCK = threading.Lock()   # trainers may be compiled from several threads at once


def _optimised(graph, target, key=None):
    """optimize_graph(graph), once per step graph in this process: compiling the same
    step again (a new trainer, a sweep) skips the passes, as the model cache skips
    code generation. Keyed as the model cache is (text, constants, target, compiler);
    a step's weights are its inputs, not constants, so the key stays small."""
    from nutshell.api import optimize_graph
    from nutshell.runtime.model_cache import graph_key
    key = key or graph_key(graph, target, "unoptimised")
    with _OPTIMISED_LOCK:
        optimised = _OPTIMISED.get(key)
    if optimised is None:
        optimised = optimize_graph(graph)
        with _OPTIMISED_LOCK:
            _OPTIMISED[key] = optimised
            while len(_OPTIMISED) > 8:
                _OPTIMISED.pop(next(iter(_OPTIMISED)))
    return optimised


def _cpu_step_model(graph, cpu, name):
    """The step's CompiledModel through the model cache. A step this cache holds (a
    hint file, keyed by the step graph before the passes, says so) starts the child
    that checks the entry's object now: its start-up overlaps the passes and the
    hashing instead of following them (a fresh process's cached compile)."""
    from nutshell.runtime.jit import DiskCache
    from nutshell.runtime.model_cache import cached_model, graph_key
    from nutshell.runtime.object_check import LinkCheck
    key = graph_key(graph, cpu, "unoptimised")
    hint = DiskCache(key, ".step")
    with _OPTIMISED_LOCK:
        seen = key in _OPTIMISED
    check = LinkCheck(cpu) if hint.enabled and not seen and os.path.exists(hint.path) else None
    try:
        model = cached_model(_optimised(graph, cpu, key), cpu, name, check)
    finally:
        if check is not None:
            check.close()         # unused when the passes or the build failed
    if model.code.llvm_ir is not None:
        hint.store(b"")
    return model


def _check_placement(target, arch, threads, distributed, options):
    """Where the step runs, checked before any tracing: no option silently ignored,
    none of the wrong type (the distributed ones too, though one process ignores them)."""
    from nutshell.compiler.lower.target import checked_threads
    checked_threads(threads)
    if target != "cpu" and distributed is not None:
        raise CompileError(f"distributed={distributed!r} compiles its stages for the CPU; target={target!r} "
                           "is not supported with it")
    if target == "cpu" and arch is not None:
        raise CompileError(f"arch={arch!r} is for target='cuda' or 'cuda-emulated', not 'cpu'")
    cap = options.get("bucket_cap_mb")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0):
        raise ValueError(f"bucket_cap_mb must be a positive number of megabytes, got {cap!r}")
    if not isinstance(options.get("sync_batchnorm", False), bool):
        raise TypeError(f"sync_batchnorm must be True or False, got {options['sync_batchnorm']!r}")


def compile_training(module, input_shape=None, loss="cross_entropy", optimizer=None, threads=None,
                     check_nan=False, example_inputs=None, example_targets=None, distributed=None,
                     target="cpu", arch=None, **options):
    """Compile the whole training step of `module` to one native function.

    input_shape: the one float32 input's shape, or example_inputs: an array or a
    tuple of arrays (any dtypes: int64 token ids too) as forward takes them.
    example_targets: an array or a tuple (default: class labels for cross_entropy
    and nll, float targets of the output's shape otherwise; none for a callable
    loss, which is then given None: `loss=lambda out, _: out[1]` when forward
    returns the loss itself).
    loss: cross_entropy | nll | mse | l1 | huber | bce_with_logits, or a callable
    (output, target) -> scalar Tensor, output as forward returns it.
    optimizer: an ns.optim optimizer or a name ("sgd", "adam", "adamw", ...).
    options: label_smoothing, ignore_index (built-in class losses); l1, l2,
    clip_norm, clip_value, max_norm (regularisation).
    check_nan: a step whose loss or new state holds NaN or Inf raises
    FloatingPointError naming the first op that produced it, and is refused: the
    parameters keep the values they had before it.
    distributed: "mpi" for data parallelism across the ranks of `mpiexec -n K`
    (runtime/distributed.py; ns.distributed.rank(), world_size()), with options
    bucket_cap_mb (gradients all-reduced in buckets of this size, overlapping
    the backward; default 25) and sync_batchnorm (BatchNorm statistics over the
    global batch, as SyncBatchNorm; default False: per rank, as DDP); both
    mean nothing in one process, which holds the whole batch.
    target: "cpu", or "cuda" / "cuda-emulated" (the step's kernels on a GPU, or the
    same kernels run on this CPU), arch the PTX's (sm_80, sm_90; default: the GPU's)."""
    from nutshell.api import c_identifier
    from nutshell.compiler.lower.target import host_target
    from nutshell.runtime.trainer import Trainer
    unknown = sorted(set(options) - set(REGULARISATION) - set(LOSS_OPTIONS) - set(DISTRIBUTED_OPTIONS))
    if unknown:
        accepted = ["input_shape", "loss", "optimizer", "threads", "check_nan", "example_inputs",
                    "example_targets", "distributed", "target", "arch"] + list(LOSS_OPTIONS) + \
            list(REGULARISATION) + list(DISTRIBUTED_OPTIONS)
        raise TypeError(f"compile_training got unexpected keyword argument(s) {unknown}; "
                        f"accepted: {', '.join(accepted)}")
    _check_placement(target, arch, threads, distributed, options)
    optimizer = as_optimizer(optimizer)
    loss_options = {k: options[k] for k in LOSS_OPTIONS
                    if k in options and options[k] != LOSS_OPTIONS[k]}
    regularisation = {k: options[k] for k in REGULARISATION if k in options}
    recipe = Recipe(module, input_shape, example_inputs, example_targets, loss, loss_options)
    if distributed is not None:
        parallel = {k: options[k] for k in DISTRIBUTED_OPTIONS if k in options}
        from nutshell.runtime.distributed import compile_distributed
        return compile_distributed(recipe, optimizer, threads, check_nan, regularisation, distributed,
                                   **parallel)
    graph, layout = build_training_graph(recipe, optimizer, **regularisation)
    if target != "cpu":       # "cuda" / "cuda-emulated": the whole step as GPU kernels
        from nutshell.runtime.cuda import compile_cuda
        model = compile_cuda(graph, target, c_identifier(graph.name), arch)
    else:
        model = _cpu_step_model(graph, host_target(threads), c_identifier(graph.name))
    trainer = Trainer(recipe, model, layout, optimizer, threads, check_nan)
    trainer.regularisation = regularisation          # the AOT bundle's split step rebuilds with it
    return trainer
