"""A data-parallel Trainer over MPI: each rank runs the `grads` half of the step on
its share of the batch, the ranks average their gradients (and loss, and
BatchNorm running statistics) with in-place all-reduces over a flat float32
buffer, then every rank runs the same `apply` half. The initial state is rank
0's, broadcast, so every rank holds the same state after each step. Batch
statistics stay per rank (as PyTorch DDP's BatchNorm) unless sync_batchnorm=True
(SyncBatchNorm: statistics of the global batch, summed across ranks mid-step).

The `grads` half runs in stages (runtime/distributed_stages.py): cut at the
SyncBatchNorm sums, and after each gradient bucket of bucket_cap_mb, whose
all-reduce then overlaps the rest of the backward. The gradients, the loss and
the new float buffers are written by the compiled stages straight into views of
the flat buffer, so the all-reduces need no copy. State is double-buffered as in
the Trainer."""
import ctypes
import math

import numpy as np

import nutshell.distributed as dist
from nutshell.compiler.errors import CompileError, InputError
from nutshell.runtime.distributed_stages import StagedGrads
from nutshell.runtime.trainer import Trainer
from nutshell.training_split import grad_name

BUCKET_CAP_MB = 25        # as DDP's bucket_cap_mb: one bucket (no overlap) for most small nets


def _pointers(model, arrays):
    """ctypes pointer arrays for `model`'s inputs and outputs from name -> array."""
    names = model.graph.input_names()
    given = [arrays["in"].get(n) for n in names]           # data inputs are set per step
    ins = (ctypes.c_void_p * len(names))(*[a.ctypes.data if a is not None else None for a in given])
    outs = (ctypes.c_void_p * len(arrays["out"]))(*[a.ctypes.data for a in arrays["out"]])
    return ins, {n: i for i, n in enumerate(names)}, outs


class DistributedTrainer(Trainer):
    def __init__(self, recipe, grads, apply_model, layout, apply_state, optimizer, threads,
                 check_nan=False):
        plan, stage_models, (order, groups) = grads
        self.recipe, self.module, self.layout = recipe, recipe.module, layout
        self.model = _WholeStep(plan.graph)
        self.apply_model, self.optimizer, self.threads = apply_model, optimizer, threads
        self.check_nan, self.schedule, self.step_count = check_nan, None, 0
        self.base_lr = optimizer.lr
        self.input_specs, self.target_specs = recipe.inputs, recipe.targets
        self.input_shape = self.input_specs[0][1]
        self.batch = self.input_shape[0] if self.input_shape else 1
        self._shard = (dist.rank(), dist.world_size())
        self._params = dict(self.module.named_parameters())
        self._buffers = {full: (mod, name) for full, mod, name in self.module.named_buffers()}
        self.layout = dict(layout, state=layout["params"] + layout["buffers"] + apply_state[
            len(layout["params"]):], slots=apply_state[len(layout["params"]):])
        current = {}
        for name in self.layout["state"]:
            if name in self._params or name in self._buffers:
                current[name] = np.array(self._module_value(name), order="C")
            else:
                owner, slot = name.rsplit(".", 1)
                current[name] = optimizer.initial_state(slot, self._params[owner].data).astype(np.float32)
        dist.broadcast(list(current.values()))          # every rank starts from rank 0's state
        self._tracked = layout["params"] + layout["buffers"]
        self._sets = [current, {k: np.empty_like(v) for k, v in current.items()}]
        self._live = 0
        self._lr = np.zeros((), np.float32)
        self._step = np.zeros(1, np.int64)
        buckets = self._layout_flat(plan.graph, order, groups)
        self._wire(layout, apply_state, plan, stage_models, buckets)
        self._publish()
        self._eval = {}

    def _layout_flat(self, graph, order, groups):
        """One float32 buffer: the loss, the float buffers' new values and every
        gradient, in `order` (output indices); returns the buckets as (view of the
        flat buffer, output indices)."""
        outputs = graph.outputs
        sizes = {i: outputs[i].type.size for i in order}
        self._flat = np.zeros(sum(sizes.values()), np.float32)
        self._out_views, at = {}, 0
        for i in order:
            self._out_views[i] = self._flat[at:at + sizes[i]].reshape(outputs[i].type.shape)
            at += sizes[i]
        params = self.layout["params"]
        self._grads = {p: self._out_views[1 + k] for k, p in enumerate(params)}
        first = 1 + len(params)
        self._new_buffers = {b: self._out_views[first + k] for k, b in enumerate(self.layout["buffers"])
                             if first + k in self._out_views}
        self._loss = self._out_views[0]
        buckets, at = [], 0
        for group in groups:
            n = sum(sizes[i] for i in group)
            buckets.append((self._flat[at:at + n], group))
            at += n
        return buckets

    def _wire(self, layout, apply_state, plan, stage_models, buckets):
        """The stages' and the apply half's pointer arrays for both parities of the state sets."""
        per_step = set(self.layout["inputs"] + self.layout["targets"] + self.layout["frozen"])
        ins, outs = [], []
        self._apply_ptrs = []
        for parity in range(2):
            src, dst = self._sets[parity], self._sets[1 - parity]
            scalars = {layout["lr"]: self._lr, layout["step"]: self._step}
            ins.append(dict(src, **scalars))
            outs.append([self._out_views.get(i) for i in range(len(plan.graph.outputs))])
            for k, b in enumerate(layout["buffers"]):
                if outs[-1][1 + len(layout["params"]) + k] is None:
                    outs[-1][1 + len(layout["params"]) + k] = dst[b]
            apply_ins = dict(src, **scalars, **{grad_name(p): g for p, g in self._grads.items()})
            self._apply_ptrs.append(_pointers(self.apply_model,
                                              {"in": apply_ins, "out": [dst[n] for n in apply_state]}))
        self._staged = StagedGrads(plan, stage_models, ins, outs, buckets, per_step)

    def step(self, inputs, targets=None):
        """One data-parallel step on this rank's share of the batch; every rank must
        call it. Returns the loss averaged over all ranks (the global batch's)."""
        xs = self._arrays(inputs, self.input_specs, "inputs")
        ys = self._arrays(targets, self.target_specs, "targets")
        lr = self.learning_rate()
        if not math.isfinite(lr):
            raise ValueError(f"learning rate at step {self.step_count} is {lr} (from the schedule)")
        self._adopt_module_changes()
        self._lr[()] = lr
        self._step[0] = self.step_count
        per_step = dict(zip(self.layout["inputs"] + self.layout["targets"], xs + ys))
        per_step.update({name: self._params[name].data for name in self.layout["frozen"]})
        self._staged.run(self._live, per_step)
        self._flat *= np.float32(1.0 / self._shard[1])
        dst = self._sets[1 - self._live]
        for name, value in self._new_buffers.items():
            np.copyto(dst[name], value)
        ins, _, outs = self._apply_ptrs[self._live]
        self.apply_model.call(ins, outs)
        loss = float(self._loss)
        if self.check_nan:
            self._refuse_nonfinite(loss, dst)
        self._live = 1 - self._live
        self.step_count += 1
        self._publish()
        return loss

    def _refuse_nonfinite(self, loss, new):
        bad = [n for n, v in new.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
        if math.isfinite(loss) and not bad:
            return
        what = "loss" if not math.isfinite(loss) else f"new value of {bad[0]}"
        raise FloatingPointError(f"non-finite {what} at step {self.step_count} (on every rank: the "
                                 "values are averaged); the step was refused and the parameters "
                                 "keep the values they had before it")

    def save(self, path):
        """Rank 0 writes the checkpoint (the state is the same on every rank)."""
        if self._shard[0] == 0:
            super().save(path)
        dist.barrier("saving a checkpoint")
        return path

    def export(self, *args, **kwargs):
        raise InputError("export a distributed trainer's bundle from a single-process trainer "
                         "(compile_training without distributed=); the C bundle's training "
                         "step splits into NAME_train_grads / NAME_train_apply for MPI")


class _WholeStep:
    """The whole `grads` graph, for what asks a trainer's model for its graph (checkpoints)."""

    def __init__(self, graph):
        self.graph = graph


def _same_on_every_rank(graph, order, groups):
    """Every rank must cut the same gradients into the same buckets and sync the same
    BatchNorms: a model or option that differs by rank would pair all-reduces that do
    not match (a hang until the watchdog, or sums of unrelated values)."""
    import hashlib
    syncs = [str(graph.types[n.outputs[0]]) for n in graph.nodes if n.op == "AllReduceSum"]
    batches = [str(v.type) for v in graph.inputs] if syncs else []   # SyncBatchNorm's count assumes one batch
    layout = repr(([(graph.outputs[i].name, str(graph.outputs[i].type)) for i in order],
                   [[int(i) for i in g] for g in groups], syncs, batches))
    with dist.watched("the ranks' check of the step's layout"):
        every = dist.comm().allgather(hashlib.sha256(layout.encode()).hexdigest())
    odd = [r for r, d in enumerate(every) if d != every[0]]
    if odd:
        raise CompileError(f"rank(s) {odd} built a distributed step other than rank 0's (the model, "
                           "bucket_cap_mb, sync_batchnorm, or with it the batch size differ between ranks): "
                           "every rank must compile the same step")


def compile_distributed(recipe, optimizer, threads, check_nan, regularisation, how,
                        bucket_cap_mb=None, sync_batchnorm=False):
    """The DistributedTrainer for compile_training(..., distributed=how)."""
    import nutshell as ns
    from nutshell.frontends.batch_stats import shared_by_ranks
    from nutshell.training_split import build_apply_graph, build_grads_graph
    from nutshell.training_stages import buckets, split_stages
    if how != "mpi":
        raise ValueError(f"distributed must be 'mpi' or None, got {how!r}")
    cap = BUCKET_CAP_MB if bucket_cap_mb is None else bucket_cap_mb
    if not (isinstance(cap, (int, float)) and cap > 0):
        raise ValueError(f"bucket_cap_mb must be a positive number of megabytes, got {cap!r}")
    dist.mpi()                                    # a clear ImportError before compiling
    reg = dict(regularisation)
    clip = {k: reg.pop(k) for k in ("clip_norm", "clip_value", "max_norm") if k in reg}
    with shared_by_ranks(dist.world_size() if sync_batchnorm else 1):
        graph, layout = build_grads_graph(recipe, **reg)
    apply_graph, apply_state = build_apply_graph(graph, layout, optimizer, **clip)
    order, groups, cuts = buckets(graph, layout, cap * 2 ** 20)
    _same_on_every_rank(graph, order, groups)
    plan = split_stages(graph, cuts)
    stage_models = [ns.compile(g, threads=threads) if g is not None else None for g in plan.stages]
    apply_model = ns.compile(apply_graph, threads=threads)
    return DistributedTrainer(recipe, (plan, stage_models, (order, groups)), apply_model, layout,
                              apply_state, optimizer, threads, check_nan)
