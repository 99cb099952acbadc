"""LeNet-5 on MNIST, data-parallel over MPI, with checkpoints.

One machine, two ranks (each with one thread):
    mpiexec -n 2 python examples/distributed_mnist.py
Two machines, from a hostfile of `hostname:ranks` lines (the same Python
environment and this file on both):
    mpiexec -f hosts -n 4 python examples/distributed_mnist.py
Without mpiexec it trains in one process. Each rank takes its share of every
epoch's batches (global batch = ranks x --batch); rank 0 prints and writes the
checkpoint, and a run started again with the same --checkpoint resumes."""
import argparse

import nutshell as ns
from nutshell.datasets import mnist_split
from nutshell.models import lenet5


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32, help="rows per rank per step")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train", type=int, default=8000)
    p.add_argument("--checkpoint", default=None, help="resume from / save to this file")
    p.add_argument("--every", type=int, default=50, help="checkpoint every N steps")
    a = p.parse_args()
    rank, ranks = ns.distributed.rank(), ns.distributed.world_size()
    (x, y), (xv, yv) = mnist_split(a.train)
    ns.manual_seed(0)                                  # rank 0's initial weights are broadcast
    trainer = ns.compile_training(lenet5(), (a.batch, 1, 28, 28), optimizer=ns.optim.Adam(lr=1e-3),
                                  threads=a.threads, distributed="mpi" if ranks > 1 else None)
    history = trainer.fit(x, y, epochs=a.epochs, batch_size=a.batch, validation_data=(xv, yv),
                          progress=False, log=print if rank == 0 else (lambda line: None),
                          checkpoint=a.checkpoint, every=a.every)
    if rank == 0:
        print(f"{ranks} rank(s) x batch {a.batch}: validation accuracy "
              f"{history['val_accuracy'][-1]:.4f} after {trainer.step_count} steps")


if __name__ == "__main__":
    main()
