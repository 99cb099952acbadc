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


# ---- models as PyTorch users write them ----------------------------------------------

import torch_models_more as zoo  # noqa: E402

_rng = np.random.default_rng(0)
_f32 = lambda *shape: _rng.standard_normal(shape).astype(np.float32)   # noqa: E731
_tce = torch.nn.functional.cross_entropy
_seq_ce = {lib.__name__: (lambda lib: lambda o, t: lib.nn.functional.cross_entropy(o.reshape(-1, 7), t.reshape(-1)))(lib)
           for lib in (ns, torch)}
_contrastive = {lib.__name__: (lambda lib: lambda o, t: zoo.contrastive_loss(lib, o, t))(lib) for lib in (ns, torch)}
_vae = {lib.__name__: (lambda lib: lambda o, t: zoo.vae_loss(lib, o, t))(lib) for lib in (ns, torch)}

# name: (builder, inputs, targets, (our loss, torch's loss), outputs compared)
MODELS = {
    "resnet_basic_block": (zoo.resnet_cifar, [_f32(2, 3, 8, 8)], _rng.integers(0, 5, 2),
                           ("cross_entropy", _tce), None),
    "seq2seq_gru": (zoo.seq2seq, [_rng.integers(0, 7, (2, 5)), _rng.integers(0, 7, (2, 4))],
                    _rng.integers(0, 7, (2, 4)), (_seq_ce["nutshell"], _seq_ce["torch"]), None),
    "vit_tiny": (zoo.vit_tiny, [_f32(2, 3, 8, 8)], _rng.integers(0, 3, 2), ("cross_entropy", _tce), None),
    "text_mean_pooling": (zoo.text_classifier, [np.array([[3, 4, 0, 0], [5, 1, 2, 9], [0, 0, 0, 0]])],
                          _rng.integers(0, 3, 3), ("cross_entropy", _tce), None),
    "siamese_contrastive": (zoo.siamese, [_f32(3, 1, 6, 6), _f32(3, 1, 6, 6)],
                            _rng.integers(0, 2, (3, 1)).astype(np.float32),
                            (_contrastive["nutshell"], _contrastive["torch"]), None),
    "cosine_similarity": (zoo.cosine_head, [_f32(4, 6), _f32(4, 6)], _f32(4),
                          ("mse", torch.nn.functional.mse_loss), None),
    "bmm_masked_fill_chunk": (zoo.misc_ops, [_f32(2, 2, 5, 5), _f32(2, 4, 2)], _f32(2, 1),
                              ("mse", torch.nn.functional.mse_loss), None),
    # randn_like draws differ between the libraries: compare mu and logvar, no training
    "vae": (zoo.vae, [_rng.uniform(0, 1, (4, 12)).astype(np.float32)], None, None, [1, 2]),
}


def _both(build):
    torch.manual_seed(0)
    theirs = build(torch)
    ours = build(ns)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return theirs, ours


def _flat(out):
    if isinstance(out, (tuple, list)):
        return [leaf for part in out for leaf in _flat(part)]
    return [out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)]


@pytest.mark.parametrize("name", MODELS)
def test_forward_matches_torch(name):
    build, inputs, _, _, picked = MODELS[name]
    theirs, ours = _both(build)
    theirs.eval()
    ours.eval()
    got = _flat(ns.compile(ours, example_inputs=tuple(inputs))(*inputs))
    want = _flat(theirs(*[torch.from_numpy(np.asarray(a)) for a in inputs]))
    picked = picked or range(len(want))
    for i in picked:
        np.testing.assert_allclose(got[i], want[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n, case in MODELS.items() if case[2] is not None])
def test_three_training_steps_match_float64_torch(name):
    build, inputs, targets, (ours_loss, theirs_loss), _ = MODELS[name]
    theirs, ours = _both(build)
    if name == "siamese_contrastive":              # Dropout2d's masks differ between the libraries
        theirs.cnn.drop.p = ours.cnn.drop.p = 0.0
    theirs.double().train()
    # SGD where a true gradient is 0 (attention's key bias: softmax ignores a shift of
    # every key; a channel ReLU has shut): Adam scales float32 rounding noise up to lr
    sgd = name in ("vit_tiny", "siamese_contrastive")
    optimizer = ns.optim.SGD(lr=0.1, momentum=0.9) if sgd else ns.optim.Adam(lr=1e-2)
    trainer = ns.compile_training(ours, example_inputs=tuple(inputs), example_targets=targets, loss=ours_loss,
                                  optimizer=optimizer, threads=1)
    opt = (torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9) if sgd
           else torch.optim.Adam(theirs.parameters(), lr=1e-2))
    for _ in range(3):
        got = trainer.step(tuple(inputs), targets)
        opt.zero_grad()
        want = theirs_loss(theirs(*[_t(a) for a in inputs]), _t(targets))
        want.backward()
        opt.step()
        assert abs(got - want.item()) <= 1e-4 * abs(want.item()) + 1e-5, (got, want.item())
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=2e-3, atol=2e-5, err_msg=key)


def test_sequential_of_an_ordered_dict_keeps_names_and_slices():
    from collections import OrderedDict
    seq = nn.Sequential(OrderedDict([("fc", nn.Linear(3, 4)), ("act", nn.ReLU(inplace=True)),
                                     ("out", nn.Linear(4, 2))]))
    assert list(seq.state_dict()) == ["fc.weight", "fc.bias", "out.weight", "out.bias"]
    assert isinstance(seq[:2], nn.Sequential) and len(seq[:2]) == 2
    with pytest.raises(TypeError, match="Sequential takes modules"):
        nn.Sequential(nn.Linear(2, 2), "relu")


def test_parameter_data_takes_torch_in_place_initialisers():
    fc = nn.Linear(3, 4)
    fc.weight.data.uniform_(-0.5, 0.5)
    fc.bias.data.zero_()
    assert np.all(np.abs(np.array(fc.weight.data)) <= 0.5) and np.all(np.array(fc.bias.data) == 0)
    fc.bias.data.fill_(0.25)
    fc.weight.data.copy_(torch.ones(4, 3))
    fc.weight.data.mul_(2.0)
    assert np.all(fc.state_dict()["bias"] == 0.25) and np.all(fc.state_dict()["weight"] == 2.0)
    assert type(fc.weight.data * 2) is np.ndarray      # arithmetic gives plain arrays
    assert fc.weight.data.size(1) == 3 and fc.weight.data.size() == (4, 3) and fc.weight.data.size == 12


def test_dropout2d_zeroes_whole_channels_in_training():
    x = np.ones((2, 6, 3, 3), np.float32)

    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(ns.ones(1))
            self.drop = nn.Dropout2d(0.5)

        def forward(self, x):
            return self.drop(x * self.scale)
    m = Drop()
    trainer = ns.compile_training(m, example_inputs=(x,), loss=lambda out, _: out.sum(),
                                  optimizer=ns.optim.SGD(lr=0.0), threads=1)
    loss = trainer.step((x,))
    assert loss % 18 == 0            # each kept channel adds 9 values of 2 (1 / (1 - p))
    assert ns.compile(m, example_inputs=(x,))(x).sum() == x.sum()    # identity at inference


_x4 = _f32(2, 4, 4, 4)
_pair = (_f32(3, 5), _f32(3, 5))
_bags = (np.array([[1, 2, 0], [3, 3, 4]]),)
LAYERS = {
    "ReLU6": (lambda lib: lib.nn.ReLU6(inplace=True), (_x4 * 4,)),
    "Hardtanh": (lambda lib: lib.nn.Hardtanh(-0.5, 0.5), (_x4,)),
    "CosineSimilarity": (lambda lib: lib.nn.CosineSimilarity(dim=1), _pair),
    "PairwiseDistance": (lambda lib: lib.nn.PairwiseDistance(), _pair),
    "AdaptiveMaxPool2d": (lambda lib: lib.nn.AdaptiveMaxPool2d((2, 2)), (_x4,)),
    "Softmax2d": (lambda lib: lib.nn.Softmax2d(), (_x4,)),
    "PixelShuffle": (lambda lib: lib.nn.PixelShuffle(2), (_x4,)),
    "EmbeddingBag_mean": (lambda lib: lib.nn.EmbeddingBag(6, 3), _bags),
    "EmbeddingBag_sum": (lambda lib: lib.nn.EmbeddingBag(6, 3, mode="sum"), _bags),
    "EmbeddingBag_max": (lambda lib: lib.nn.EmbeddingBag(6, 3, mode="max"), _bags),
    "EmbeddingBag_padding": (lambda lib: lib.nn.EmbeddingBag(6, 3, padding_idx=0), _bags),
}


@pytest.mark.parametrize("name", LAYERS)
def test_small_layers_match_torch(name):
    build, inputs = LAYERS[name]
    theirs, ours = _both(build)
    got = ns.compile(ours, example_inputs=inputs)(*inputs)
    want = theirs(*[torch.from_numpy(a) for a in inputs]).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_parameter_list_registers_its_parameters():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.ps = nn.ParameterList([nn.Parameter(ns.ones(3) * (i + 1)) for i in range(2)])

        def forward(self, x):
            return x * self.ps[0] + self.ps[1]
    m = Scaled()
    assert list(m.state_dict()) == ["ps.0", "ps.1"] and len(m.ps) == 2
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(ns.compile(m, example_inputs=(x,))(x), np.full((2, 3), 3.0))


def test_vectorised_sin_and_cos_stay_within_float32_rounding():
    """The polynomial lowering (compiler/codegen/vector_math.py) against float64 NumPy:
    within 2e-7 absolute for |x| <= 1e4; NaN and +-inf give NaN, as libm's."""
    class Wave(nn.Module):
        def forward(self, x):
            return ns.sin(x), ns.cos(x)
    x = np.linspace(-1e4, 1e4, 4096, dtype=np.float32).reshape(64, 64)
    x[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    sin, cos = ns.compile(Wave(), example_inputs=(x,))(x)
    assert np.isnan(sin[0, :3]).all() and np.isnan(cos[0, :3]).all() and sin[0, 3] == 0 and cos[0, 3] == 1
    wide = x[1:].astype(np.float64)
    assert np.abs(sin[1:] - np.sin(wide)).max() < 2e-7 and np.abs(cos[1:] - np.cos(wide)).max() < 2e-7
    assert ns.nn.Linear(3, 4).weight.size(1) == 3 and ns.nn.Linear(3, 4).weight.size() == (4, 3)
