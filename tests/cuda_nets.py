"""The small nets the CUDA tests compile (tests/test_cuda.py, tests/test_cuda_host.py),
and three SGD steps of one under a given target."""
import nutshell as ns
from nutshell.api import to_graph

nn = ns.nn


def lenet():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 84), nn.Tanh(),
                         nn.Linear(84, 10), nn.Softmax(1)), (2, 1, 28, 28)


def cnn_bn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.SiLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)), (2, 3, 16, 16)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 5),
                         nn.LogSoftmax(1)), (3, 1, 8, 8)


NETS = {"lenet": lenet, "cnn_bn": cnn_bn, "mlp": mlp}


def net_graph(net_name):
    net, shape = NETS[net_name]()
    net.eval()
    return to_graph(net, shape), shape


TRAIN_NETS = {
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), (4, 1, 8, 8)),
    "lenet": (lambda: nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                                    nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 84), nn.ReLU(),
                                    nn.Linear(84, 10)), (2, 1, 28, 28)),
    "cnn_bn": (lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)), (4, 1, 12, 12)),
}


TRAIN_NETS["conv_grads"] = (     # strided, dilated, grouped: ConvGradInput/Weight tiled and direct
    lambda: nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, stride=2, padding=2, dilation=2, groups=2), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.Flatten(), nn.Linear(64 * 8 * 8, 10)),
    (4, 4, 16, 16))


def sgd_steps(make, shape, start, x, y, target):
    """Three SGD-with-momentum steps of make() from the state `start` on `target`:
    (losses, parameters). (Adam's normalised update would amplify the last-bit
    differences of near-zero gradients into lr-sized ones.)"""
    net = make()
    net.load_state_dict(start)
    trainer = ns.compile_training(net, input_shape=shape, optimizer=ns.optim.SGD(lr=0.1, momentum=0.9),
                                  threads=1, target=target)
    return [trainer.step(x, y) for _ in range(3)], trainer.parameters()
