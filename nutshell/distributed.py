"""ns.distributed: data-parallel training over MPI (mpi4py, the `nutshell[mpi]` extra).

Run the same script under `mpiexec -n K python train.py`; each process is a
rank. rank() and world_size() work without MPI too (0 and 1).

MPI has no timeout: a rank whose peer hangs would wait forever. Each
collective here runs under a deadline kept by a watchdog thread (mpi4py releases
the GIL inside MPI calls); past it the rank prints which operation stalled and
aborts the whole job (MPI_Abort), so the launcher exits non-zero. The deadline
is set_timeout(s), or NUTSHELL_MPI_TIMEOUT in seconds (default 120). The
gradient buckets that overlap the backward (runtime/distributed_stages.py) are
non-blocking, polled between stages and waited for under the same deadline; the
last bucket, with nothing left to overlap, is a blocking all-reduce (MPICH's
Iallreduce of 25 MB took 31-46 ms here where Allreduce took 13-19 ms)."""
import os
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np



def _seconds(text, what):
    """A positive number of seconds (inf: no deadline); anything else a ValueError naming `what`."""
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {text!r}")
    return seconds


_timeout = [_seconds(os.environ.get("NUTSHELL_MPI_TIMEOUT", "120"), "NUTSHELL_MPI_TIMEOUT")]


def _launched_by_mpi():
    return any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK",
                                         "PMIX_RANK", "HYDRA_CONTROL_FD"))


def mpi():
    """mpi4py's MPI module (initialising MPI), or a clear ImportError."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("distributed training needs mpi4py and an MPI library: "
                          "pip install 'nutshell[mpi]' (or pip install mpi4py mpich)") from None
    return MPI


def comm():
    return mpi().COMM_WORLD


def rank():
    """This process's rank in the job (0 when not launched by mpiexec)."""
    return comm().Get_rank() if _launched_by_mpi() else 0


def world_size():
    """The number of ranks in the job (1 when not launched by mpiexec)."""
    return comm().Get_size() if _launched_by_mpi() else 1


def set_timeout(seconds):
    """How long a rank waits for its peers in a collective before it aborts the job."""
    _timeout[0] = _seconds(seconds, "timeout")


def timeout():
    return _timeout[0]


class _Watchdog:
    """A daemon thread that aborts the job when a watched call outlives its deadline."""

    def __init__(self):
        self.cond = threading.Condition()
        self.deadline, self.what, self.thread = None, None, None

    def _run(self):
        with self.cond:
            while True:
                if self.deadline is None:
                    self.cond.wait()
                    continue
                left = self.deadline - time.monotonic()
                if left <= 0:
                    _abort(f"no answer from the other ranks for {self.seconds:g} s during "
                           f"{self.what} (a rank died or hangs); ending the job")
                self.cond.wait(min(left, 3600))       # inf: no deadline (wait() cannot take inf)

    @contextmanager
    def watching(self, what, seconds):
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="nutshell-mpi-watchdog", daemon=True)
            self.thread.start()
        with self.cond:
            self.deadline, self.what, self.seconds = time.monotonic() + seconds, what, seconds
            self.cond.notify()
        try:
            yield
        finally:
            with self.cond:
                self.deadline = None


_watchdog = _Watchdog()


def watched(what, seconds=None):
    """Context: abort the job unless the block ends within `seconds` (the timeout)."""
    return _watchdog.watching(what, _timeout[0] if seconds is None else seconds)


def _abort(message):
    c = comm()
    line = f"nutshell.distributed: rank {c.Get_rank()} of {c.Get_size()}: {message}\n"
    os.write(sys.stderr.fileno(), line.encode())
    time.sleep(0.5)                  # let the launcher forward the line before it kills the job
    c.Abort(70)


def allreduce_sum(flat, bucket_elems, what="the gradient all-reduce"):
    """Sum `flat` (a contiguous NumPy array) across ranks in place, `bucket_elems`
    elements per call."""
    MPI = mpi()
    c = comm()
    with watched(what):
        for i in range(0, flat.size, bucket_elems):
            c.Allreduce(MPI.IN_PLACE, flat[i:i + bucket_elems], op=MPI.SUM)


def broadcast(arrays, what="the initial state broadcast", root=0):
    """Rank `root`'s values of `arrays` (contiguous NumPy arrays) everywhere, in place."""
    c = comm()
    with watched(what):
        for a in arrays:
            c.Bcast(np.ascontiguousarray(a).reshape(-1).view(np.uint8), root=root)


def barrier(what="a barrier"):
    c = comm()
    with watched(what):
        c.Barrier()
