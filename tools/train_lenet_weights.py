"""Produce nutshell/data/lenet5_mnist.npz, the weights `nutshell demo` classifies with.

Trains nutshell.models.lenet5 with PyTorch on the first 8,000 bundled MNIST
images (Adam, lr 1e-3, batch 64, 8 epochs, seed 0) and reports accuracy on the
last 2,000. Run once by a developer: `python tools/train_lenet_weights.py`.
(Once compiled training lands, the demo trains these weights itself.)"""
import numpy as np
import torch

from nutshell.datasets import mnist_split
from nutshell.models import lenet5


def main():
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = mnist_split()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for epoch in range(8):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (net(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out accuracy {acc:.4f}")
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    lenet5().load_state_dict(state)          # same names, same shapes
    np.savez_compressed("nutshell/data/lenet5_mnist.npz", **state)


if __name__ == "__main__":
    main()
