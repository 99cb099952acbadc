"""A data-parallel Trainer over MPI: each rank runs the `grads` half of the step on
its share of the batch, the ranks average their gradients (and loss, and
BatchNorm running statistics) with an in-place all-reduce over a flat float32
buffer (in 64 MB buckets), then every rank runs the same `apply` half. The initial
state is rank 0's, broadcast, so every rank holds the same state after each
step. Batch statistics stay per rank (as PyTorch DDP's BatchNorm).

The gradients, the loss and the new float buffers are written by the compiled
`grads` function straight into views of the flat buffer, so the all-reduce
needs no copy. State is double-buffered as in the Trainer."""
import ctypes
import math

import numpy as np

import nutshell.distributed as dist
from nutshell.compiler.errors import InputError
from nutshell.runtime.trainer import Trainer
from nutshell.training_split import grad_name

BUCKET_ELEMS = 1 << 24     # 64 MB per all-reduce call: one call for most nets (no overlap yet)


def _pointers(model, arrays):
    """ctypes pointer arrays for `model`'s inputs and outputs from name -> array."""
    names = model.graph.input_names()
    given = [arrays["in"].get(n) for n in names]           # data inputs are set per step
    ins = (ctypes.c_void_p * len(names))(*[a.ctypes.data if a is not None else None for a in given])
    outs = (ctypes.c_void_p * len(arrays["out"]))(*[a.ctypes.data for a in arrays["out"]])
    return ins, {n: i for i, n in enumerate(names)}, outs


class DistributedTrainer(Trainer):
    def __init__(self, recipe, grads_model, apply_model, layout, apply_state, optimizer, threads,
                 check_nan=False):
        self.recipe, self.module, self.model, self.layout = recipe, recipe.module, grads_model, layout
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
        self._layout_flat(grads_model.graph)
        self._wire(layout, apply_state)
        self._publish()
        self._eval = {}

    def _layout_flat(self, graph):
        """One float32 buffer: every gradient, the float buffers' new values, the loss."""
        self._averaged = [n for n in self.layout["buffers"] if self._sets[0][n].dtype == np.float32]
        sizes = [self._sets[0][p].size for p in self.layout["params"]]
        sizes += [self._sets[0][b].size for b in self._averaged] + [1]
        self._flat = np.zeros(sum(sizes), np.float32)
        views, at = [], 0
        for n in sizes:
            views.append(self._flat[at:at + n])
            at += n
        shapes = [self._sets[0][n].shape for n in self.layout["params"] + self._averaged]
        self._grads = {p: views[i].reshape(shapes[i]) for i, p in enumerate(self.layout["params"])}
        k = len(self.layout["params"])
        self._new_buffers = {b: views[k + i].reshape(shapes[k + i]) for i, b in enumerate(self._averaged)}
        self._loss = views[-1].reshape(graph.types[self.layout["loss"]].shape)

    def _wire(self, layout, apply_state):
        """Pointer arrays of both halves for both parities of the state sets."""
        self._grads_ptrs, self._apply_ptrs = [], []
        for parity in range(2):
            src, dst = self._sets[parity], self._sets[1 - parity]
            scalars = {layout["lr"]: self._lr, layout["step"]: self._step}
            outs = [self._loss] + [self._grads[p] for p in layout["params"]]
            outs += [self._new_buffers.get(b, dst[b]) for b in layout["buffers"]]
            ins = dict(src, **scalars)
            self._grads_ptrs.append(_pointers(self.model, {"in": ins, "out": outs}))
            ins = dict(src, **scalars, **{grad_name(p): g for p, g in self._grads.items()})
            self._apply_ptrs.append(_pointers(self.apply_model,
                                              {"in": ins, "out": [dst[n] for n in apply_state]}))

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
        ins, slot, outs = self._grads_ptrs[self._live]
        for name, array in zip(self.layout["inputs"] + self.layout["targets"], xs + ys):
            ins[slot[name]] = array.ctypes.data
        for name in self.layout["frozen"]:
            ins[slot[name]] = self._params[name].data.ctypes.data
        self.model.call(ins, outs)
        dist.allreduce_sum(self._flat, BUCKET_ELEMS)
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


def compile_distributed(recipe, optimizer, threads, check_nan, regularisation, how):
    """The DistributedTrainer for compile_training(..., distributed=how)."""
    import nutshell as ns
    from nutshell.training_split import build_apply_graph, build_grads_graph
    if how != "mpi":
        raise ValueError(f"distributed must be 'mpi' or None, got {how!r}")
    dist.mpi()                                    # a clear ImportError before compiling
    reg = dict(regularisation)
    clip = {k: reg.pop(k) for k in ("clip_norm", "clip_value", "max_norm") if k in reg}
    graph, layout = build_grads_graph(recipe, **reg)
    apply_graph, apply_state = build_apply_graph(graph, layout, optimizer, **clip)
    grads_model = ns.compile(graph, threads=threads)
    apply_model = ns.compile(apply_graph, threads=threads)
    return DistributedTrainer(recipe, grads_model, apply_model, layout, apply_state, optimizer,
                              threads, check_nan)
