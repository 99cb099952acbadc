"""ns.nn.from_graph: torch-exported ONNX graphs trained like PyTorch trains them.

Tolerances: losses agree to 1e-4 relative (float32 sums over a few thousand
terms), parameters and running statistics to rtol 1e-3 / atol 1e-5 after a few
SGD steps (the two libraries round their reductions differently)."""
import io

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ops import get_op

torch = pytest.importorskip("torch", reason="torch is a test extra (pip install torch)")
tnn = torch.nn
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore:Converting a tensor")


def _export(net, *examples, training=True, names=None):
    buf = io.BytesIO()
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    net.train(training)
    torch.onnx.export(net, tuple(torch.from_numpy(e) for e in examples), buf, opset_version=17,
                      training=mode, do_constant_folding=False, dynamo=False,
                      input_names=names or [f"in{i}" for i in range(len(examples))])
    return buf.getvalue()


class _Seg(tnn.Module):
    """A small segmentation-style net: Conv, BatchNorm, a strided Conv, and back up."""

    def __init__(self, upsample):
        super().__init__()
        self.c1, self.bn = tnn.Conv2d(3, 8, 3, padding=1), tnn.BatchNorm2d(8)
        self.down = tnn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.up = tnn.ConvTranspose2d(8, 8, 2, stride=2) if upsample == "convtranspose" else None
        self.resize = upsample == "resize"
        self.head = tnn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.relu(self.down(torch.relu(self.bn(self.c1(x)))))
        if self.up is not None:
            y = torch.relu(self.up(y))
        if self.resize:
            y = tnn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(y)


def _needs_grads(*ops):
    missing = [op for op in ops if getattr(get_op(op), "grad", None) is None]
    if missing:
        pytest.skip(f"no gradient rule yet for {missing}")


@pytest.mark.parametrize("upsample", [None, "convtranspose", "resize"])
def test_train_mode_export_trains_like_pytorch(rng, upsample):
    _needs_grads(*{"convtranspose": ["ConvTranspose"], "resize": ["Resize"]}.get(upsample, []))
    torch.manual_seed(0)
    tnet = _Seg(upsample)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    net = ns.nn.from_graph(ns.load_onnx(_export(tnet, x)))
    tnet.train()
    expected = {k for k in tnet.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(net.state_dict()) == expected
    trainer = ns.compile_training(net, x.shape, loss="mse", optimizer=ns.optim.SGD(lr=0.1), threads=1)
    opt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    target = rng.standard_normal(trainer.predict(x).shape).astype(np.float32)
    for _ in range(3):
        loss = trainer.step(x, target)
        opt.zero_grad()
        tloss = tnn.functional.mse_loss(tnet(torch.from_numpy(x)), torch.from_numpy(target))
        tloss.backward()
        opt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4)
    got = net.state_dict()
    for name, value in tnet.state_dict().items():
        if name in got:
            np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


def test_eval_mode_forward_matches_pytorch(rng):
    torch.manual_seed(1)
    tnet = _Seg("resize")
    with torch.no_grad():        # running statistics that are not the defaults
        tnet.bn.running_mean.uniform_(-1, 1), tnet.bn.running_var.uniform_(0.5, 2)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    net = ns.nn.from_graph(_export(tnet, x)).eval()
    tnet.eval()
    with torch.no_grad():
        want = tnet(torch.from_numpy(x)).numpy()
    got = ns.compile(net.trace(x.shape), threads=1)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_trains_weights_not_scales_or_shapes(rng):
    torch.manual_seed(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    source = _export(_Seg("resize"), x)
    names = {n for n, _ in ns.nn.from_graph(source).named_parameters()}
    assert names == {"c1.weight", "c1.bias", "bn.weight", "bn.bias", "down.weight", "down.bias",
                     "head.weight", "head.bias"}
    frozen = ns.nn.from_graph(source, trainable=["head.weight", "head.bias"])
    assert [n for n, _ in frozen.named_parameters()] == ["head.weight", "head.bias"]
    convs = ns.nn.from_graph(source, trainable=lambda name, array: array.ndim == 4)
    assert {n for n, _ in convs.named_parameters()} == {"c1.weight", "down.weight", "head.weight"}
    with pytest.raises(ValueError, match="cannot train"):
        ns.nn.from_graph(source, trainable=["no.such.weight"])


def _steps_like_torch(tnet, net, inputs, target, steps=3, lr=0.1):
    """SGD steps on MSE in both; the losses and then the parameters agree."""
    trainer = ns.compile_training(net, example_inputs=inputs, example_targets=target, loss="mse",
                                  optimizer=ns.optim.SGD(lr=lr), threads=1)
    tnet.train()
    opt = torch.optim.SGD(tnet.parameters(), lr=lr)
    for _ in range(steps):
        loss = trainer.step(inputs, target)
        opt.zero_grad()
        tloss = tnn.functional.mse_loss(tnet(*[torch.from_numpy(x) for x in inputs]),
                                        torch.from_numpy(target))
        tloss.backward()
        opt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4)
    got = net.state_dict()
    for name, value in tnet.named_parameters():
        np.testing.assert_allclose(got[name], value.detach().numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


def test_embedding_layernorm_matmul_weights_train(rng):
    class Tok(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.proj = tnn.Embedding(11, 6), tnn.Linear(6, 4)
            self.norm = tnn.LayerNorm(6)

        def forward(self, ids):
            return self.proj(self.norm(self.emb(ids)) * 0.5)
    torch.manual_seed(0)
    tnet = Tok()
    ids = rng.integers(0, 11, (2, 5)).astype(np.int64)
    net = ns.nn.from_graph(_export(tnet, ids, training=False))
    names = {n for n, _ in net.named_parameters()}
    assert names == {"emb.weight", "norm.weight", "norm.bias", "proj.weight", "proj.bias"}
    _steps_like_torch(tnet, net, (ids,), rng.standard_normal((2, 5, 4)).astype(np.float32))


def test_several_inputs(rng):
    class Two(tnn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = tnn.Linear(4, 3), tnn.Linear(5, 3)

        def forward(self, x, y):
            return torch.tanh(self.a(x)) * self.b(y)
    torch.manual_seed(0)
    tnet = Two()
    x, y = (rng.standard_normal((2, n)).astype(np.float32) for n in (4, 5))
    net = ns.nn.from_graph(_export(tnet, x, y, training=False))
    assert net.data_inputs == ["in0", "in1"]
    with torch.no_grad():
        want = tnet(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    got = ns.compile(net.trace(example_inputs=(x, y)), threads=1)(x, y)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="takes 2 input"):
        net.trace(x.shape)
    _steps_like_torch(tnet, net, (x, y), rng.standard_normal((2, 3)).astype(np.float32))


def test_plain_graph_state_names_never_collide(rng):
    """Graphs without their ONNX file (built in memory) still train: the lifted
    constants' names are reserved before any traced value is named."""
    torch.manual_seed(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    graph = ns.load_onnx(_export(_Seg(None), x))
    del graph.onnx_source             # as if built in memory: decomposed BatchNorm, folded names
    net = ns.nn.from_graph(graph)
    trainer = ns.compile_training(net, x.shape, loss="mse", threads=1)
    target = np.zeros(trainer.predict(x).shape, np.float32)
    first = trainer.step(x, target)
    for _ in range(3):
        last = trainer.step(x, target)
    assert np.isfinite(first) and last < first


def test_a_graph_whose_file_is_gone_still_trains(rng, tmp_path):
    torch.manual_seed(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "seg.onnx"
    path.write_bytes(_export(_Seg(None), x, training=False))
    graph = ns.load_onnx(path)
    path.unlink()
    net = ns.nn.from_graph(graph)
    assert net.num_parameters() > 0
    trainer = ns.compile_training(net, x.shape, loss="mse", threads=1)
    assert np.isfinite(trainer.step(x, np.zeros(trainer.predict(x).shape, np.float32)))


def test_dropout_in_a_training_export(rng):
    torch.manual_seed(0)
    tnet = tnn.Sequential(tnn.Linear(6, 16), tnn.ReLU(), tnn.Dropout(0.5), tnn.Linear(16, 3))
    x = rng.standard_normal((4, 6)).astype(np.float32)
    net = ns.nn.from_graph(_export(tnet, x))
    tnet.eval()
    with torch.no_grad():
        want = tnet(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ns.compile(net.eval().trace(x.shape), threads=1)(x), want,
                               rtol=1e-5, atol=1e-6)
    trainer = ns.compile_training(net.train(), x.shape, loss="mse", threads=1)
    a, b = (trainer.step(x, np.zeros((4, 3), np.float32)) for _ in range(2))
    assert np.isfinite(a) and np.isfinite(b)
