"""The Trainer: runs a compiled training step as one native call per batch.

State (parameters, optimizer slots, running statistics) lives in two sets of
buffers; each step reads one set and writes the other, then they swap, so no
copy is made and a refused step leaves the last good values in place. The
module's parameters point at the live set, as a PyTorch optimizer updates
them in place: net.state_dict() and a fresh ns.compile(net) see them.

Before each step (and each evaluation) the trainer takes up what changed on the
module since: values set with load_state_dict, or another trainer's update of a
shared submodule (an identity check per array, a copy only when it changed).
Frozen parameters are read from the module at every step, never written."""
import ctypes
import math

import numpy as np

from nutshell.compiler.errors import InputError
from nutshell.compiler.ir.types import DType
from nutshell.runtime.trainer_loops import TrainerLoops, split


class Trainer(TrainerLoops):
    def __init__(self, recipe, model, layout, optimizer, threads, check_nan=False):
        self.recipe, self.module, self.model, self.layout = recipe, recipe.module, model, layout
        self.optimizer, self.threads = optimizer, threads
        self.check_nan, self.schedule, self.step_count = check_nan, None, 0
        self.base_lr = optimizer.lr
        self.input_specs, self.target_specs = recipe.inputs, recipe.targets
        self.input_shape = self.input_specs[0][1]          # the first input's (the C bundle's)
        self.batch = self.input_shape[0] if self.input_shape else 1
        graph = model.graph
        self._params = dict(self.module.named_parameters())
        self._buffers = {full: (mod, name) for full, mod, name in self.module.named_buffers()}
        current = {}
        for name in layout["state"]:
            if name in self._params or name in self._buffers:
                current[name] = np.array(self._module_value(name), order="C")
            else:                                     # an optimizer slot
                owner, slot = name.rsplit(".", 1)
                current[name] = optimizer.initial_state(slot, self._params[owner].data).astype(np.float32, copy=False)
        self._tracked = layout["params"] + layout["buffers"]
        self._sets = [current, {k: np.empty_like(v) for k, v in current.items()}]
        self._live = 0
        self._lr = np.zeros((), np.float32)
        self._step = np.zeros(1, np.int64)
        self._loss = np.zeros(graph.types[layout["loss"]].shape, np.float32)
        in_names = graph.input_names()
        self._slot = {n: i for i, n in enumerate(in_names)}
        self._in_ptrs = [(ctypes.c_void_p * len(in_names))() for _ in range(2)]
        self._out_ptrs = [(ctypes.c_void_p * len(graph.outputs))() for _ in range(2)]
        for parity in range(2):
            src, dst = self._sets[parity], self._sets[1 - parity]
            ins, outs = self._in_ptrs[parity], self._out_ptrs[parity]
            for name in layout["state"]:
                ins[self._slot[name]] = src[name].ctypes.data
            ins[self._slot[layout["lr"]]] = self._lr.ctypes.data
            ins[self._slot[layout["step"]]] = self._step.ctypes.data
            outs[0] = self._loss.ctypes.data
            for k, name in enumerate(layout["state"]):
                outs[k + 1] = dst[name].ctypes.data
        self._publish()
        self._eval = {}

    # ---- state ----------------------------------------------------------------------
    def _module_value(self, name):
        """The module's current array for a parameter or buffer name."""
        p = self._params.get(name)
        if p is not None:
            return p._data if p._data is not None else p.data
        mod, bname = self._buffers[name]
        return mod._buffers[bname]

    def _publish(self):
        """Point the module's parameters and buffers at the live state."""
        live = self._sets[self._live]
        for name in self.layout["params"]:
            self._params[name]._data = live[name]
        for name in self.layout["buffers"]:
            mod, bname = self._buffers[name]
            mod._buffers[bname] = live[name]

    def _adopt_module_changes(self):
        """Take values set on the module since our last step: load_state_dict, or
        another trainer's step on a shared submodule (an identity check each)."""
        live, changed = self._sets[self._live], False
        for name in self._tracked:
            value = self._module_value(name)
            if value is not live[name]:
                np.copyto(live[name], value)
                changed = True
        if changed:
            self._publish()

    def parameters(self):
        """name -> array (copies) of the current parameters, PyTorch's names."""
        self._adopt_module_changes()
        live = self._sets[self._live]
        return {name: live[name].copy() for name in self.layout["params"]}

    def state(self):
        self._adopt_module_changes()
        live = self._sets[self._live]
        return {name: live[name].copy() for name in self.layout["state"]}

    def _restore(self, state):
        live = self._sets[self._live]
        for name, value in state.items():
            np.copyto(live[name], value)
        self._publish()

    def save(self, path):
        """Write a checkpoint (state, step count, schedule position) atomically."""
        from nutshell.runtime.checkpoint import save
        return save(self, path)

    def load(self, path):
        """Restore a checkpoint written by save() or fit(checkpoint=); a truncated,
        corrupted or foreign file raises CheckpointError and changes nothing."""
        from nutshell.runtime.checkpoint import load
        load(self, path)

    def learning_rate(self, step=None):
        step = self.step_count if step is None else step
        return self.schedule(step, self.base_lr) if self.schedule else self.base_lr

    # ---- checking a batch -----------------------------------------------------------
    def _arrays(self, given, specs, what):
        """The arrays of `given` (one array, or a tuple as the examples were) checked
        against specs."""
        return [self._array(x, name, shape, dtype)
                for x, (name, shape, dtype) in zip(split(given, specs, what), specs)]

    def _array(self, x, name, shape, dtype):
        classes = self.layout["class_targets"].get(name)
        if hasattr(x, "detach") and hasattr(x, "numpy"):      # a torch tensor
            x = x.detach().cpu().numpy()
        if dtype.is_float and name in self.layout["inputs"]:
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != tuple(shape):
                got = f"{getattr(x, 'shape', None)} {getattr(x, 'dtype', type(x).__name__)}"
                raise InputError(f"{name}: expected {tuple(shape)} float32, got {got} "
                                 "(the batch size is fixed at compile time)")
            return np.ascontiguousarray(x)
        y = np.asarray(x)
        kind = "integer class indices" if classes else "integer" if not dtype.is_float else "float"
        fits = np.issubdtype(y.dtype, np.number) if dtype.is_float else \
            y.dtype == np.bool_ if dtype == DType.bool else np.issubdtype(y.dtype, np.integer)
        if y.shape != tuple(shape) or not fits:
            raise InputError(f"{name}: expected {tuple(shape)} {kind}, got {y.shape} {y.dtype}")
        if classes:
            self._check_classes(y, name, *classes)
        return np.ascontiguousarray(y, dtype=dtype.numpy)

    @staticmethod
    def _check_classes(y, name, classes, ignore_index):
        counted = y[y != ignore_index] if ignore_index is not None else y
        lo, hi = (counted.min(), counted.max()) if counted.size else (0, 0)
        if lo < 0 or hi >= classes:
            also = f" or {ignore_index} (ignore_index)" if ignore_index is not None else ""
            raise InputError(f"{name}: class indices must be in [0, {classes}){also}, "
                             f"got values from {int(lo)} to {int(hi)}")

    # ---- one step -------------------------------------------------------------------
    def step(self, inputs, targets=None):
        """One training step (forward, loss, backward, update) as one native call;
        inputs and targets as the examples were given (an array or a tuple).
        Returns the loss."""
        xs = self._arrays(inputs, self.input_specs, "inputs")
        ys = self._arrays(targets, self.target_specs, "targets")
        lr = self.learning_rate()
        if not math.isfinite(lr):
            raise ValueError(f"learning rate at step {self.step_count} is {lr} (from the schedule)")
        data = dict(zip(self.layout["inputs"] + self.layout["targets"], xs + ys))
        if self.check_nan:
            self._refuse_nonfinite_data(data)
        self._adopt_module_changes()
        self._lr[()] = lr
        self._step[0] = self.step_count
        ins, outs = self._in_ptrs[self._live], self._out_ptrs[self._live]
        for name, array in data.items():
            ins[self._slot[name]] = array.ctypes.data
        frozen = {name: self._params[name].data for name in self.layout["frozen"]}
        for name, array in frozen.items():           # another trainer may have replaced them
            ins[self._slot[name]] = array.ctypes.data
        self.model.call(ins, outs)
        loss = float(self._loss)
        if self.check_nan:
            self._refuse_nonfinite_result(loss, {**data, **frozen})
        self._live = 1 - self._live
        self.step_count += 1
        self._publish()
        return loss

    def _refuse_nonfinite_data(self, data):
        for name, array in data.items():
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise FloatingPointError(f"{name} holds NaN or Inf at step {self.step_count}; the "
                                         "step was refused and the parameters are unchanged")

    def _refuse_nonfinite_result(self, loss, data):
        new = self._sets[1 - self._live]
        bad = [n for n, v in new.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
        if math.isfinite(loss) and not bad:
            return
        from nutshell.runtime.reference import first_nonfinite
        feeds = dict(self._sets[self._live], **data)
        feeds.update({self.layout["step"]: self._step, self.layout["lr"]: self._lr})
        node = first_nonfinite(self.model.graph, feeds)
        where = f"op {node.op} (node '{node.name}')" if node else "the update"
        what = "loss" if not math.isfinite(loss) else f"new value of {bad[0]}"
        raise FloatingPointError(f"non-finite {what} at step {self.step_count}: first produced by "
                                 f"{where}; the step was refused and the parameters keep the "
                                 "values they had before it")

    # ---- export ---------------------------------------------------------------------
    def export(self, out_dir, name=None, target_cpu=None, triple=None):
        """Ahead of time: OUT_DIR/NAME.h, NAME.o, libNAME.so with NAME_init_state,
        NAME_train_step, NAME_run and NAME_get/set_param, so a C program keeps
        training from the current state with no Python."""
        from nutshell.compiler.codegen.c_header import c_identifier
        from nutshell.runtime.aot import export_training
        simple = (len(self.layout["inputs"]) == 1 and len(self.layout["targets"]) == 1
                  and not self.layout["frozen"] and self.recipe.input_shape is not None
                  and all(i is None for _, i in self.layout["class_targets"].values()))
        if not simple:
            raise InputError("export() writes trainers with one float input (input_shape=), one "
                             "target, no frozen parameters and no ignore_index")
        self._adopt_module_changes()
        return export_training(self, out_dir, c_identifier(name or self.model.graph.name),
                               target_cpu, triple)

    def export_onnx(self, path, batch_size=None):
        """The module with its trained values as an ONNX inference model."""
        from nutshell.frontends.onnx_export import export_onnx
        self._adopt_module_changes()
        builder, _ = self.recipe.trace("inference", batch_size or self.batch)
        return export_onnx(builder.build(), path)
