"""ns.distributed: data-parallel training over MPI (mpi4py, the `nutshell[mpi]` extra).

Run the same script under `mpiexec -n K python train.py`; each process is a
rank. rank() and world_size() work without MPI too (0 and 1).

MPI has no timeout: a rank whose peer hangs would wait forever. Every
collective here is non-blocking and polled against a deadline (the watchdog);
past it the rank prints which operation stalled and aborts the whole job
(MPI_Abort), so the launcher exits non-zero. The deadline is set_timeout(s),
or NUTSHELL_MPI_TIMEOUT in seconds (default 120)."""
import os
import sys
import time

import numpy as np

_timeout = [float(os.environ.get("NUTSHELL_MPI_TIMEOUT", "120"))]
SPIN_S = 0.02              # poll without sleeping this long: a step's all-reduce is ms


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
    if not seconds > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}")
    _timeout[0] = float(seconds)


def timeout():
    return _timeout[0]


def wait(requests, what, seconds=None):
    """Complete `requests`, or abort the job after `seconds` (the watchdog)."""
    MPI = mpi()
    seconds = _timeout[0] if seconds is None else seconds
    start = time.monotonic()
    while not MPI.Request.Testall(requests):
        waited = time.monotonic() - start
        if waited > seconds:
            _abort(f"no answer from the other ranks for {seconds:g} s during {what} (a rank died "
                   "or hangs); ending the job")
        if waited > SPIN_S:
            time.sleep(0.0005)       # leave the core to the ranks still computing


def _abort(message):
    c = comm()
    sys.stderr.write(f"nutshell.distributed: rank {c.Get_rank()} of {c.Get_size()}: {message}\n")
    sys.stderr.flush()
    c.Abort(70)


def allreduce_sum(flat, bucket_elems, what="the gradient all-reduce"):
    """Sum `flat` (a contiguous NumPy array) across ranks in place, in buckets of
    `bucket_elems` elements, all in flight at once."""
    MPI = mpi()
    c = comm()
    requests = [c.Iallreduce(MPI.IN_PLACE, flat[i:i + bucket_elems], op=MPI.SUM)
                for i in range(0, flat.size, bucket_elems)]
    wait(requests, what)


def broadcast(arrays, what="the initial state broadcast", root=0):
    """Rank `root`'s values of `arrays` (contiguous NumPy arrays) everywhere, in place."""
    c = comm()
    wait([c.Ibcast(np.ascontiguousarray(a).reshape(-1).view(np.uint8), root=root)
          for a in arrays], what)


def barrier(what="a barrier"):
    wait([comm().Ibarrier()], what)
