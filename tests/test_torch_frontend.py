"""The PyTorch-shaped front end: model code written for torch, traced by nutshell,
compiled, and compared with the same code run under real PyTorch."""
import numpy as np
import pytest

import nutshell as ns


class TwoInputs(ns.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = ns.nn.Linear(4, 3)

    def forward(self, a, b):
        return self.fc(a) + b, (a,)


def test_trace_takes_several_example_inputs_and_returns_tuples():
    a = np.random.default_rng(0).standard_normal((2, 4))
    graph = TwoInputs().trace(example_inputs=(a, ns.InputSpec((2, 3))))
    assert [v.name for v in graph.inputs] == ["input_0", "input_1"]
    assert graph.trace_state.inputs == ["input_0", "input_1"]
    assert all(v.type.dtype == ns.float32 for v in graph.inputs)     # float64 examples trace as float32
    net = TwoInputs()
    y, a_out = ns.compile(net.trace(example_inputs=(a, a[:, :3])))(a.astype(np.float32),
                                                                 np.ones((2, 3), np.float32))
    w, bias = net.fc.weight.data, net.fc.bias.data
    np.testing.assert_allclose(y, a.astype(np.float32) @ w.T + bias + 1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a_out, a.astype(np.float32))


def test_trace_keeps_int64_inputs_and_the_input_shape_form():
    class Ids(ns.nn.Module):
        def forward(self, ids):
            return ids + 1
    graph = Ids().trace(example_inputs=np.zeros((2, 5), np.int64))
    assert [(v.name, v.type.dtype) for v in graph.inputs] == [("input", ns.int64)]
    graph = Ids().trace((3,), dtype=ns.int64)
    assert graph.inputs[0].type.shape == (3,)
    with pytest.raises(ValueError):
        Ids().trace((3,), example_inputs=np.zeros(3))
