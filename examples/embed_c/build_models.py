"""Make the bundles and data the C examples use (run by the Makefile):

  lenet.h / liblenet.so      LeNet-5 trained for 2 epochs with the compiled step, batch 100
  mlp_train.h / mlp_train.o  an MLP's training step (Adam, batch 64) from its initial weights
  t10k-*-ubyte               the bundled MNIST test set, uncompressed IDX

    python build_models.py BUILD_DIR [--target-cpu CPU]"""
import argparse
import gzip
import os
from importlib import resources

import nutshell as ns
from nutshell.datasets import mnist_split
from nutshell.models import lenet5


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("build")
    p.add_argument("--target-cpu")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    os.makedirs(args.build, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with resources.files("nutshell.data").joinpath(name + ".gz").open("rb") as f:
            data = gzip.decompress(f.read())
        with open(os.path.join(args.build, name), "wb") as f:
            f.write(data)
    (x, y), (xv, yv) = mnist_split()
    ns.manual_seed(0)
    net = lenet5()
    trainer = ns.compile_training(net, (64, 1, 28, 28), optimizer=ns.optim.Adam(lr=1e-3), threads=2)
    trainer.fit(x, y, epochs=args.epochs, batch_size=64, progress=False)
    print(f"LeNet-5 trained {args.epochs} epochs: held-out accuracy {trainer.evaluate(xv, yv)[1] * 100:.2f}%")
    model = ns.compile(net, input_shape=(100, 1, 28, 28), threads=2)
    model.export(args.build, name="lenet", target_cpu=args.target_cpu)

    ns.manual_seed(0)
    nn = ns.nn
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    step = ns.compile_training(mlp, (64, 1, 28, 28), optimizer=ns.optim.Adam(lr=1e-3), threads=2)
    step.export(args.build, name="mlp_train", target_cpu=args.target_cpu)
    print(f"wrote the bundles and the IDX files to {args.build}")


if __name__ == "__main__":
    main()
