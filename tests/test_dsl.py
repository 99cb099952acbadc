"""The DSL: PyTorch names, parameter counts, state_dict round trips, seeded init."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.models import alexnet, lenet5

nn = ns.nn


def test_alexnet_parameter_count_matches_the_paper():
    assert alexnet().num_parameters() == 62_378_344


def test_lenet_state_dict_names_follow_pytorch():
    names = list(lenet5().state_dict())
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
                     "9.weight", "9.bias", "11.weight", "11.bias"]


def test_batchnorm_buffers_in_state_dict():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                      "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert net.num_parameters() == 4 * 27 + 4 + 4 + 4


def test_seeded_init_is_reproducible_and_scaled():
    ns.manual_seed(7)
    a = nn.Linear(300, 200, init="he_normal").weight.data
    ns.manual_seed(7)
    b = nn.Linear(300, 200, init="he_normal").weight.data
    np.testing.assert_array_equal(a, b)
    assert abs(a.std() - np.sqrt(2 / 300)) < 0.005
    c = nn.Linear(300, 200, init="xavier_uniform").weight.data
    bound = np.sqrt(6 / 500)
    assert c.max() <= bound and c.min() >= -bound and c.std() > bound / 2


def test_load_state_dict_round_trip_and_errors():
    a, b = lenet5(), lenet5()
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    with pytest.raises(KeyError):
        b.load_state_dict({"0.weight": np.zeros((6, 1, 5, 5))})
    with pytest.raises(ValueError):
        b.load_state_dict({**a.state_dict(), "0.bias": np.zeros(7)})


def test_compile_module_directly(rng):
    net = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 8), nn.Maxout(2), nn.Softmax(dim=1))
    model = ns.compile(net, input_shape=(5, 20), threads=1)
    x = rng.standard_normal((5, 20)).astype(np.float32)
    graph = net.trace((5, 20))
    want = ns.run_reference(graph, {"input": x})[graph.outputs[0].name]
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-6)
    assert model(x).shape == (5, 4)


def test_every_layer_traces_and_compiles(rng):
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, init="he_uniform"), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 8, 3, stride=2, groups=2, init="xavier_normal"), nn.ELU(), nn.AvgPool2d(2),
        nn.MaxPool2d(2, stride=1, padding=1), nn.Sigmoid(), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 6), nn.LogSoftmax(dim=1))
    graph = net.trace((2, 3, 17, 17))
    x = rng.standard_normal((2, 3, 17, 17)).astype(np.float32)
    want = ns.run_reference(graph, {"input": x})[graph.outputs[0].name]
    np.testing.assert_allclose(ns.compile(graph, threads=2)(x), want, rtol=1e-4, atol=1e-5)


def test_torch_layers_agree(rng):
    """Same weights in torch and nutshell give the same outputs."""
    torch = pytest.importorskip("torch")
    tnet = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(400, 120),
                               torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
                               torch.nn.Linear(84, 10)).eval()
    net = lenet5()
    net.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        want = tnet(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ns.compile(net, input_shape=x.shape)(x), want, rtol=1e-3, atol=1e-4)
