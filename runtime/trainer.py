"""The Trainer: runs a compiled training step as one native call per batch.

State (parameters, optimizer slots, running statistics) lives in two sets of
buffers; each step reads one set and writes the other, then they swap, so no
copy is made and a failed step leaves the last good values in place. The
module's parameters point at the live set, as a PyTorch optimizer updates
them in place: net.state_dict() and a fresh ns.compile(net) see them."""
import ctypes

import numpy as np

from nutshell.compiler.errors import InputError


class Trainer:
    def __init__(self, module, model, layout, optimizer, input_shape, threads, check_nan=False):
        self.module, self.model, self.layout = module, model, layout
        self.optimizer, self.input_shape, self.threads = optimizer, input_shape, threads
        self.check_nan, self.schedule, self.step_count = check_nan, None, 0
        self.base_lr = optimizer.lr
        graph = model.graph
        types = graph.types
        self._params = dict(module.named_parameters())
        self._buffers = {full: (mod, name) for full, mod, name in module.named_buffers()}
        current = {}
        for name in layout["state"]:
            if name in self._params:
                current[name] = self._params[name].data.copy()
            elif name in self._buffers:
                mod, bname = self._buffers[name]
                current[name] = mod._buffers[bname].copy()
            else:                                     # an optimizer slot
                owner, slot = name.rsplit(".", 1)
                current[name] = optimizer.initial_state(slot, self._params[owner].data).astype(np.float32)
        self._sets = [current, {k: np.empty_like(v) for k, v in current.items()}]
        self._live = 0
        self._lr = np.zeros((), np.float32)
        self._step = np.zeros(1, np.int64)
        self._loss = np.zeros(types[layout["loss"]].shape, np.float32)
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
        self._x_type = types[layout["input"]]
        self._y_type = types[layout["labels"]]
        self._publish()
        self._eval = {}

    # ---- state ----------------------------------------------------------------------
    def _publish(self):
        """Point the module's parameters and buffers at the live state."""
        live = self._sets[self._live]
        for name in self.layout["params"]:
            self._params[name]._data = live[name]
        for name in self.layout["buffers"]:
            mod, bname = self._buffers[name]
            mod._buffers[bname] = live[name]

    def _adopt_module_changes(self):
        """Take values the user set on the module since the last step (load_state_dict)."""
        live = self._sets[self._live]
        for name in self.layout["params"]:
            data = self._params[name].data
            if data is not live[name]:
                np.copyto(live[name], data)
                self._params[name]._data = live[name]
        for name in self.layout["buffers"]:
            mod, bname = self._buffers[name]
            if mod._buffers[bname] is not live[name]:
                np.copyto(live[name], mod._buffers[bname])
                mod._buffers[bname] = live[name]

    def parameters(self):
        """name -> array (copies) of the current parameters, PyTorch's names."""
        live = self._sets[self._live]
        return {name: live[name].copy() for name in self.layout["params"]}

    def state(self):
        live = self._sets[self._live]
        return {name: live[name].copy() for name in self.layout["state"]}

    def learning_rate(self, step=None):
        step = self.step_count if step is None else step
        return self.schedule(step, self.base_lr) if self.schedule else self.base_lr

    # ---- one step -------------------------------------------------------------------
    def _check_batch(self, x, labels):
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != self._x_type.shape:
            got = f"{getattr(x, 'shape', None)} {getattr(x, 'dtype', type(x).__name__)}"
            raise InputError(f"input: expected {self._x_type.shape} float32, got {got} "
                             "(the batch size is fixed at compile time)")
        y = np.asarray(labels)
        if self.layout["class_labels"]:
            if y.shape != self._y_type.shape or not np.issubdtype(y.dtype, np.integer):
                raise InputError(f"labels: expected {self._y_type.shape} integer class indices, "
                                 f"got {y.shape} {y.dtype}")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.layout["classes"]:
                raise InputError(f"labels: class indices must be in [0, {self.layout['classes']}), "
                                 f"got values from {lo} to {hi}")
            y = np.ascontiguousarray(y, dtype=np.int64)
        else:
            if y.shape != self._y_type.shape:
                raise InputError(f"targets: expected {self._y_type.shape}, got {y.shape}")
            y = np.ascontiguousarray(y, dtype=np.float32)
        return np.ascontiguousarray(x), y

    def step(self, x, labels):
        """One training step (forward, loss, backward, update) as one native call;
        returns the loss."""
        x, y = self._check_batch(x, labels)
        self._adopt_module_changes()
        self._lr[()] = self.learning_rate()
        self._step[0] = self.step_count
        ins, outs = self._in_ptrs[self._live], self._out_ptrs[self._live]
        ins[self._slot[self.layout["input"]]] = x.ctypes.data
        ins[self._slot[self.layout["labels"]]] = y.ctypes.data
        self.model.call(ins, outs)
        loss = float(self._loss)
        if self.check_nan and not np.isfinite(loss):
            raise FloatingPointError(self._explain_nonfinite(x, y))
        self._live = 1 - self._live
        self.step_count += 1
        self._publish()
        return loss

    def _explain_nonfinite(self, x, y):
        from nutshell.runtime.reference import first_nonfinite
        feeds = dict(self._sets[self._live])
        feeds.update({self.layout["input"]: x, self.layout["labels"]: y, self.layout["step"]: self._step})
        feeds[self.layout["lr"]] = self._lr
        node = first_nonfinite(self.model.graph, feeds)
        where = f"op {node.op} (node '{node.name}')" if node else "the loss"
        return (f"non-finite loss at step {self.step_count}: first produced by {where}; "
                "the parameters keep their last finite values")

    # ---- evaluation and fit ---------------------------------------------------------
    def _eval_model(self, batch):
        if batch not in self._eval:
            import nutshell as ns
            graph = self.module.trace((batch,) + self.input_shape[1:], mode="state")
            self._eval[batch] = ns.compile(graph, threads=self.threads)
        return self._eval[batch]

    def predict(self, x, batch_size=None):
        """Network outputs for `x` (any number of rows) with the current state."""
        batch = batch_size or self.input_shape[0]
        model = self._eval_model(batch)
        live = self._sets[self._live]
        feeds = {n: live[n] for n in model.graph.input_names() if n in live}
        outs = []
        for i in range(0, len(x), batch):
            chunk = np.ascontiguousarray(x[i:i + batch], dtype=np.float32)
            rows = len(chunk)
            if rows < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - rows,) + chunk.shape[1:], np.float32)])
            feeds["input"] = chunk
            outs.append(model.run(feeds)[model.graph.outputs[0].name][:rows])
        return np.concatenate(outs)

    def evaluate(self, x, y):
        """(mean cross-entropy loss, accuracy) for class labels, (MSE, None) otherwise."""
        out = self.predict(x)
        if self.layout["class_labels"]:
            z = out - out.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            loss = float(-logp[np.arange(len(y)), y].mean())
            return loss, float((out.argmax(1) == y).mean())
        return float(((out - y) ** 2).mean()), None

    def fit(self, x, y, epochs=1, batch_size=None, validation_data=None, shuffle=True, seed=0,
            early_stopping=None, lr_schedule=None, augment=None, progress=True, log=None):
        """Train for `epochs` over (x, y); returns a history dict of per-epoch lists.

        early_stopping: patience in epochs without a better validation loss.
        lr_schedule: an ns.optim schedule, called with the step count.
        augment: function (x_batch, rng) -> x_batch applied to each batch."""
        from tqdm.auto import tqdm
        batch = batch_size or self.input_shape[0]
        if batch != self.input_shape[0]:
            raise InputError(f"batch_size {batch} differs from the compiled batch {self.input_shape[0]}")
        if lr_schedule is not None:
            self.schedule = lr_schedule
        rng = np.random.default_rng(seed)
        history = {"loss": [], "lr": []}
        if validation_data is not None:
            history.update(val_loss=[], val_accuracy=[])
        best, best_state, waited = np.inf, None, 0
        steps = len(x) // batch
        for epoch in range(epochs):
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            losses = []
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                       leave=False, unit="step")
            for s in bar:
                idx = order[s * batch:(s + 1) * batch]
                xb = x[idx]
                if augment is not None:
                    xb = augment(xb, rng)
                losses.append(self.step(xb, y[idx]))
                if s % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
            bar.close()
            history["loss"].append(float(np.mean(losses)))
            history["lr"].append(self.learning_rate())
            line = f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f}"
            if validation_data is not None:
                vl, va = self.evaluate(*validation_data)
                history["val_loss"].append(vl)
                history["val_accuracy"].append(va)
                line += f", val_loss {vl:.4f}" + (f", val_accuracy {va:.4f}" if va is not None else "")
                if early_stopping is not None:
                    if vl < best - 1e-12:
                        best, best_state, waited = vl, self.state(), 0
                    else:
                        waited += 1
                        if waited >= early_stopping:
                            self._restore(best_state)
                            history["stopped_early"] = epoch + 1
                            if log is not None or progress:
                                (log or print)(line + " (early stop: best weights restored)")
                            break
            if log is not None or progress:
                (log or print)(line)
        return history

    def export(self, out_dir, name=None, target_cpu=None, triple=None):
        """Ahead of time: OUT_DIR/NAME.h, NAME.o, libNAME.so with NAME_init_state,
        NAME_train_step, NAME_run and NAME_get/set_param, so a C program keeps
        training from the current state with no Python."""
        from nutshell.api import c_identifier
        from nutshell.runtime.aot import export_training
        return export_training(self, out_dir, c_identifier(name or self.model.graph.name),
                               target_cpu, triple)

    def export_onnx(self, path, batch_size=None):
        """The module with its trained values as an ONNX inference model."""
        from nutshell.frontends.onnx_export import export_onnx
        return export_onnx(self.module, path, ((batch_size or self.input_shape[0]),) + self.input_shape[1:])

    def _restore(self, state):
        live = self._sets[self._live]
        for name, value in state.items():
            np.copyto(live[name], value)
