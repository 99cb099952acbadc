"""Trainer checkpoints: everything a run needs to continue bit for bit.

A checkpoint holds the trainer's state (parameters, buffers, optimizer slots),
its step count (which is also the schedule's position and the dropout masks'
counter: DropoutMask hashes (seed, step), so it has no other random state) and,
when fit writes it, the loop's position: epoch, step, the epoch's batch order,
the shuffle/augmentation generator's state and the history so far.

File: MAGIC, the payload's length (8 bytes, little-endian), its SHA-256, then
the payload (an .npz of the arrays and a JSON header). It is written to a
temporary file in the same folder, flushed to disk and renamed over the target,
so a crash leaves the old checkpoint or the new one, never half of one. Loading
checks everything before touching the trainer: a truncated, corrupted or
foreign file raises CheckpointError and the trainer is unchanged."""
import hashlib
import io
import json
import os
import tempfile

import numpy as np

from nutshell.compiler.errors import InputError

MAGIC = b"NUTSHELL-CKPT-1\n"
VERSION = 1


class CheckpointError(InputError):
    """A checkpoint file that cannot be loaded into this trainer."""


def _payload(trainer, fit_state):
    state = trainer.state()
    header = {"version": VERSION, "step_count": trainer.step_count,
              "optimizer": type(trainer.optimizer).__name__, "graph": trainer.model.graph.name,
              "names": list(state), "fit": None}
    arrays = {f"state/{i}": v for i, v in enumerate(state.values())}
    if fit_state is not None:
        header["fit"] = {k: v for k, v in fit_state.items() if k != "order"}
        if fit_state["order"] is not None:
            arrays["fit/order"] = np.asarray(fit_state["order"], np.int64)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save(trainer, path, fit_state=None):
    """Write `trainer`'s checkpoint to `path` atomically."""
    payload = _payload(trainer, fit_state)
    blob = MAGIC + len(payload).to_bytes(8, "little") + hashlib.sha256(payload).digest() + payload
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read(path):
    """(header, state arrays by name, fit order or None) from a checkpoint file,
    checked whole; CheckpointError when it is not a complete nutshell checkpoint."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not blob.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a nutshell checkpoint (no '{MAGIC[:-1].decode()}' "
                              "header)")
    head = len(MAGIC) + 8 + 32
    size = int.from_bytes(blob[len(MAGIC):len(MAGIC) + 8], "little") if len(blob) >= head else -1
    payload = blob[head:]
    if size != len(payload):
        raise CheckpointError(f"checkpoint {path} is truncated or padded: {len(payload)} bytes "
                              f"of payload, the header says {size}")
    if hashlib.sha256(payload).digest() != blob[len(MAGIC) + 8:head]:
        raise CheckpointError(f"checkpoint {path} is corrupted (SHA-256 mismatch)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            state = {n: z[f"state/{i}"] for i, n in enumerate(header["names"])}
            order = z["fit/order"] if "fit/order" in z.files else None
    except (ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable payload: {e}") from None
    if header.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {header.get('version')}, this "
                              f"nutshell reads version {VERSION}")
    return header, state, order


def _check_fits(trainer, header, state, path):
    live = trainer.state()
    if header["optimizer"] != type(trainer.optimizer).__name__:
        raise CheckpointError(f"checkpoint {path} was written by a {header['optimizer']} trainer, "
                              f"this one uses {type(trainer.optimizer).__name__}")
    missing, extra = sorted(set(live) - set(state)), sorted(set(state) - set(live))
    if missing or extra:
        raise CheckpointError(f"checkpoint {path} belongs to another model: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
    for name, value in state.items():
        if value.shape != live[name].shape or value.dtype != live[name].dtype:
            raise CheckpointError(f"checkpoint {path}: {name} is {value.shape} {value.dtype}, the "
                                  f"trainer's is {live[name].shape} {live[name].dtype}")


def load(trainer, path):
    """Restore `trainer` from `path`; returns the fit position saved with it (or
    None). Nothing changes unless the whole file is valid for this trainer."""
    header, state, order = read(path)
    _check_fits(trainer, header, state, path)
    trainer._restore(state)
    trainer.step_count = int(header["step_count"])
    fit = header.get("fit")
    if fit is not None:
        fit = dict(fit, order=order)
    return fit


class FitCheckpoints:
    """fit's side: resume from `path` when it exists, and save there every
    `every` steps (and at the end of each epoch). In a distributed run every
    rank resumes from the file and rank 0 alone writes it."""

    def __init__(self, trainer, path, every):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive number of steps, got {every!r}")
        self.trainer, self.path, self.every = trainer, path, every
        self.position = load(trainer, path) if path and os.path.exists(path) else None

    def start(self, rng, history):
        """(first epoch, first step, that epoch's batch order or None, its losses so far)."""
        p = self.position
        if p is None:
            return 0, 0, None, []
        rng.bit_generator.state = p["rng"]
        history.update(p["history"])
        return p["epoch"], p["step"], p["order"], list(p["losses"])

    def after_step(self, epoch, next_step, order, rng, losses, history, end_of_epoch=False):
        due = end_of_epoch or (self.every and self.trainer.step_count % self.every == 0)
        if not self.path or not due or getattr(self.trainer, "_shard", (0, 1))[0] != 0:
            return
        save(self.trainer, self.path, {"epoch": epoch, "step": next_step, "order": order,
                                       "rng": rng.bit_generator.state, "losses": losses,
                                       "history": history})
