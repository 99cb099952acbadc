"""PyTorch model code a new user brings, run under torch and nutshell from one
state_dict: forward outputs and (float64 torch vs float32 nutshell) training
steps agree; plus the front-end gaps such code ran into."""
import os
import tempfile

import numpy as np
import pytest

import nutshell as ns

torch = pytest.importorskip("torch")
nn, F = ns.nn, ns.nn.functional


def _sync(ours, theirs):
    """torch's initial weights into ours, torch then float64."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return theirs.double()


def _t(a):
    a = torch.from_numpy(np.asarray(a))
    return a.double() if a.dtype == torch.float32 else a


# ---- front-end gaps ------------------------------------------------------------------

def test_arithmetic_with_none_is_a_type_error():
    class Bad(nn.Module):
        def forward(self, x):
            return x - None
    with pytest.raises(TypeError, match="NoneType"):
        ns.compile(Bad(), example_inputs=(np.ones((2, 3), np.float32),))
    with pytest.raises(TypeError):
        ns.ones(3) * None


def _train_grads(fn, *arrays):
    """d(sum of fn(params))/d(param) by one SGD(lr=1) step of a module holding `arrays`."""
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = (nn.Parameter(ns.tensor(v)) for v in arrays)

        def forward(self, x):
            return fn(self.a, self.b) + x.sum()
    m = Holder()
    before = [np.array(v) for v in m.state_dict().values()]
    trainer = ns.compile_training(m, example_inputs=(np.zeros(1, np.float32),), loss=lambda out, _: out.sum(),
                                  optimizer=ns.optim.SGD(lr=1.0), threads=1)
    trainer.step((np.zeros(1, np.float32),))
    return [b - np.array(a) for b, a in zip(before, m.state_dict().values())]


def test_maximum_and_minimum_split_tied_gradients_as_torch():
    a, b = np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 1.0, 3.0], np.float32)
    for ours, theirs in ((ns.maximum, torch.maximum), (ns.minimum, torch.minimum)):
        got = _train_grads(lambda p, q: ours(p, q).sum(), a, b)
        ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
        theirs(ta, tb).sum().backward()
        np.testing.assert_allclose(got[0], ta.grad.numpy(), atol=1e-6)
        np.testing.assert_allclose(got[1], tb.grad.numpy(), atol=1e-6)


def test_functional_embedding_padding_row_gets_no_gradient():
    ids = np.array([[0, 2, 1], [2, 2, 3]])

    class Lookup(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(ns.tensor(np.arange(12, dtype=np.float32).reshape(4, 3)))

        def forward(self, i):
            return F.embedding(i, self.table, padding_idx=2)
    m = Lookup()
    start = np.array(m.table.data)
    theirs = torch.tensor(start, requires_grad=True)
    torch.nn.functional.embedding(torch.from_numpy(ids), theirs, padding_idx=2).sum().backward()
    trainer = ns.compile_training(m, example_inputs=(ids,), loss=lambda out, _: out.sum(),
                                  optimizer=ns.optim.SGD(lr=1.0), threads=1)
    trainer.step((ids,))
    np.testing.assert_allclose(start - np.array(m.table.data), theirs.grad.numpy(), atol=1e-6)
    assert np.all(np.array(m.table.data)[2] == start[2])


def test_sin_and_cos_of_traced_tensors_match_torch():
    class Wave(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch_like_sin(self.fc(x)) + ns.cos(x) * 2 + x.sin()
    torch_like_sin = ns.sin
    ours = Wave()
    x = np.linspace(-40, 40, 12, dtype=np.float32).reshape(3, 4)
    compiled = ns.compile(ours, example_inputs=(x,))
    fc = torch.nn.Linear(4, 4)
    fc.load_state_dict({k.split(".")[1]: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    xt = _t(x)
    want = torch.sin(fc.double()(xt)) + torch.cos(xt) * 2 + xt.sin()
    np.testing.assert_allclose(compiled(x), want.detach().numpy(), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_exported_gelu_and_mish_pass_the_checker_and_run(approximate):
    ort = pytest.importorskip("onnxruntime")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            return F.gelu(self.fc(x), approximate=approximate) + F.mish(x).sum(-1, keepdim=True)
    m, x = Block(), np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    path = os.path.join(tempfile.mkdtemp(), "block.onnx")
    ns.export_onnx(m, path, input_shape=(3, 4))
    session = ort.InferenceSession(path)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, ns.compile(m, example_inputs=(x,))(x), rtol=1e-5, atol=1e-6)
