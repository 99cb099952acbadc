"""A Trainer's evaluation and training loops: predict, evaluate (the trainer's own
loss, on models traced at the rows each chunk has) and fit with validation,
early stopping, schedules and augmentation. Inputs and targets are an array or
a tuple of arrays, as the examples were; rows are along dim 0 of each."""
import inspect

import numpy as np

from nutshell.compiler.errors import InputError


def _augmenter(augment):
    """Call ns.augment's functions (x, ..., rng, ...) and plain (x, rng) ones alike."""
    try:
        params = inspect.signature(augment).parameters
    except (TypeError, ValueError):
        return augment
    return (lambda xb, rng: augment(xb, rng=rng)) if "rng" in params else augment


def split(given, specs, what):
    """The items of `given`, one per spec: one array, or a tuple/list of them (None
    when a loss takes no targets)."""
    if not specs and given is None:
        return []
    if len(specs) == 1 and not (isinstance(given, (tuple, list)) and len(given) == 1
                                and hasattr(given[0], "shape")):
        return [given]
    if isinstance(given, (tuple, list)) and len(given) == len(specs):
        return list(given)
    count = len(given) if isinstance(given, (tuple, list)) else 0 if given is None else 1
    raise InputError(f"{what}: expected {len(specs)} arrays "
                     f"({', '.join(n for n, _, _ in specs)}), got {count}")


class TrainerLoops:
    # ---- the parts of a batch -------------------------------------------------------
    @staticmethod
    def _parts(given, specs, what):
        """The arrays of `given`, checked to have the examples' rows."""
        parts = [np.asarray(p.detach().cpu().numpy() if hasattr(p, "detach") else p)
                 for p in split(given, specs, what)]
        for p, (name, shape, _) in zip(parts, specs):
            if p.shape[1:] != tuple(shape[1:]):
                raise InputError(f"{name}: expected rows of shape {tuple(shape[1:])}, got an array "
                                 f"of shape {p.shape}")
        if len({len(p) for p in parts}) > 1:
            raise InputError(f"{what}: the arrays have different numbers of rows "
                             f"{[len(p) for p in parts]}")
        return parts

    @staticmethod
    def _as_given(parts):
        return parts[0] if len(parts) == 1 else tuple(parts)

    def _eval_model(self, batch, with_loss):
        key = (batch, with_loss)
        if key not in self._eval:
            import nutshell as ns
            self._eval[key] = ns.compile(self.recipe.eval_graph(batch, with_loss), threads=self.threads)
        return self._eval[key]

    def _state_feeds(self, model):
        """The live state (and the module's frozen parameters) for an evaluation model."""
        self._adopt_module_changes()
        live = self._sets[self._live]
        return {n: live[n] if n in live else self._module_value(n) for n in model.graph.input_names()
                if n in live or n in self._params or n in self._buffers}

    # ---- evaluation -----------------------------------------------------------------
    def predict(self, x, batch_size=None):
        """Network outputs for `x` (any number of rows) with the current state: an
        array, or a tuple when forward returns several."""
        xs = self._parts(x, self.input_specs, "inputs")
        batch = batch_size or self.batch
        model = self._eval_model(batch, False)
        feeds, names = self._state_feeds(model), set(model.graph.input_names())
        rows, chunks = len(xs[0]), []
        for i in range(0, rows, batch):
            n = min(batch, rows - i)
            for a, (name, shape, dtype) in zip(xs, self.input_specs):
                chunk = np.zeros((batch,) + tuple(shape[1:]), dtype.numpy)
                chunk[:n] = a[i:i + n]                   # the last chunk padded with zeros
                feeds[name] = chunk
            result = model.run({k: v for k, v in feeds.items() if k in names})
            chunks.append([result[v.name][:n] for v in model.outputs])
        return self._as_given([np.concatenate(parts) for parts in zip(*chunks)])

    def evaluate(self, x, y=None, batch_size=None):
        """(the trainer's loss, the mean over rows, and accuracy for a built-in class
        loss, else None) with the current state, layers in inference mode."""
        xs = self._parts(x, self.input_specs, "inputs")
        ys = self._parts(y, self.target_specs, "targets")
        batch = batch_size or self.batch
        rows, total, correct, counted = len(xs[0]), 0.0, 0, 0
        for i in range(0, rows, batch):
            n = min(batch, rows - i)
            model = self._eval_model(n, True)
            feeds = self._state_feeds(model)
            for a, (name, _, dtype) in zip(xs, self.input_specs):
                feeds[name] = np.ascontiguousarray(a[i:i + n], dtype=dtype.numpy)
            for a, (name, shape, dtype) in zip(ys, self.target_specs):
                feeds[name] = self._array(a[i:i + n], name, (n,) + tuple(shape[1:]), dtype)
            result = model.run({k: v for k, v in feeds.items() if k in model.graph.input_names()})
            total += float(result[model.outputs[-1].name]) * n
            if self.layout["class_labels"] and len(model.outputs) == 2:
                labels = feeds[self.layout["labels"]]
                ignore = self.layout["class_targets"][self.layout["labels"]][1]
                valid = labels != ignore if ignore is not None else np.ones(labels.shape, bool)
                hits = result[model.outputs[0].name].argmax(1) == labels
                correct, counted = correct + int((hits & valid).sum()), counted + int(valid.sum())
        accuracy = correct / counted if counted else None
        return total / max(rows, 1), accuracy

    # ---- fit ------------------------------------------------------------------------
    def fit(self, x, y=None, epochs=1, batch_size=None, validation_data=None, shuffle=True, seed=0,
            early_stopping=None, lr_schedule=None, augment=None, progress=True, log=None,
            checkpoint=None, every=None):
        """Train for `epochs` over (x, y); returns a history dict of per-epoch lists.

        early_stopping: patience in epochs without a better validation loss.
        lr_schedule: an ns.optim schedule, called with the step count.
        augment: ns.augment.random_shift (or any f(x_batch, rng) -> x_batch) applied
        to each batch's inputs.
        checkpoint: a path; fit resumes from it when it exists and saves there every
        `every` steps and after each epoch (runtime/checkpoint.py)."""
        from nutshell.runtime.checkpoint import FitCheckpoints
        from tqdm.auto import tqdm
        batch = batch_size or self.batch
        if batch != self.batch:
            raise InputError(f"batch_size {batch} differs from the compiled batch {self.batch}")
        xs = self._parts(x, self.input_specs, "inputs")
        ys = self._parts(y, self.target_specs, "targets")
        if ys and len(xs[0]) != len(ys[0]):
            raise InputError(f"fit: {len(xs[0])} input rows but {len(ys[0])} target rows")
        if lr_schedule is not None:
            self.schedule = lr_schedule
        augment = _augmenter(augment) if augment is not None else None
        rng = np.random.default_rng(seed)
        history = {"loss": [], "lr": []}
        if validation_data is not None:
            history.update(val_loss=[], val_accuracy=[])
        best, best_state, waited = np.inf, None, 0
        rank, ranks = getattr(self, "_shard", (0, 1))     # a distributed trainer's share
        steps = len(xs[0]) // (batch * ranks)
        saver = FitCheckpoints(self, checkpoint, every)
        first_epoch, first_step, order, losses = saver.start(rng, history)
        for epoch in range(first_epoch, epochs):
            if epoch > first_epoch or order is None:
                order = rng.permutation(len(xs[0])) if shuffle else np.arange(len(xs[0]))
                losses = [] if epoch > first_epoch or first_step == 0 else losses
            bar = tqdm(range(first_step if epoch == first_epoch else 0, steps), disable=not progress,
                       desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="step")
            for s in bar:
                at = (s * ranks + rank) * batch
                idx = order[at:at + batch]
                xb = self._as_given([a[idx] for a in xs])
                if augment is not None:
                    xb = augment(xb, rng)
                losses.append(self.step(xb, self._as_given([a[idx] for a in ys]) if ys else None))
                saver.after_step(epoch, s + 1, order, rng, losses, history)
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
            saver.after_step(epoch + 1, 0, None, rng, [], history, end_of_epoch=True)
        return history
