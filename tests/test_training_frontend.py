"""compile_training for any model (issue 15): several inputs, int64 token ids,
N-D cross_entropy with ignore_index and label smoothing, callable losses, tuple
outputs and frozen parameters (several trainers sharing modules, a GAN's:
tests/test_training_gan.py).

Each is compared with PyTorch run in float64 from the same start over three
steps: losses to 1e-3 relative, parameters to 2e-3 relative + 1e-5 (float32
against float64, as tests/test_training_parity.py)."""
import numpy as np
import pytest

import nutshell as ns

torch = pytest.importorskip("torch")
nn, tnn, F, TF = ns.nn, torch.nn, ns.nn.functional, torch.nn.functional


def _load_into_torch(ours, theirs):
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    return theirs.double()


def _t(a):
    a = torch.from_numpy(np.asarray(a))
    return a.double() if a.dtype == torch.float32 else a


def _close_loss(got, want):
    assert abs(got - want) <= 1e-3 * abs(want) + 1e-6, (got, want)


def _close_params(ours, theirs, names=None):
    got = ours.state_dict()
    for name, want in theirs.state_dict().items():
        if names is None or name in names:
            want = want.detach().numpy()
            assert np.all(np.abs(got[name] - want) <= 2e-3 * np.abs(want) + 1e-5), name


# ---- two inputs: masked imputation -------------------------------------------------

def both(build):
    """The same model class on ns.nn and on torch.nn: build(m) -> an instance."""
    return lambda m=nn: build(m)


@both
def Imputer(m):
    class Imputer(m.Module):
        def __init__(self):
            super().__init__()
            self.values, self.known, self.out = m.Linear(8, 16), m.Linear(8, 16), m.Linear(16, 8)

        def forward(self, x, mask):
            return self.out((self.values(x * mask) + self.known(mask)).tanh())
    return Imputer()


def _masked_mse(out, y, mask):
    missing = 1 - mask
    return ((out - y) ** 2 * missing).sum() / missing.sum()


def _imputation_data(rng, n=6):
    y = rng.standard_normal((n, 8)).astype(np.float32)
    mask = (rng.random((n, 8)) < 0.6).astype(np.float32)
    return y * mask, mask, y


def test_two_inputs_masked_imputation_matches_pytorch(rng, tmp_path):
    ns.manual_seed(0)
    ours = Imputer()
    theirs = _load_into_torch(ours, Imputer(tnn))
    x, mask, y = _imputation_data(rng)
    trainer = ns.compile_training(ours, example_inputs=(x, mask), example_targets=(y, mask),
                                  loss=lambda out, t: _masked_mse(out, t[0], t[1]),
                                  optimizer=ns.optim.Adam(lr=1e-2), threads=1)
    opt = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    for _ in range(3):
        x, mask, y = _imputation_data(rng)
        got = trainer.step((x, mask), (y, mask))
        opt.zero_grad()
        want = _masked_mse(theirs(_t(x), _t(mask)), _t(y), _t(mask))
        want.backward()
        opt.step()
        _close_loss(got, want.item())
    _close_params(ours, theirs)
    # predict, evaluate and fit take the tuples too, any number of rows
    x, mask, y = _imputation_data(rng, 9)
    want_out = theirs(_t(x), _t(mask)).detach().numpy()
    np.testing.assert_allclose(trainer.predict((x, mask)), want_out, rtol=2e-3, atol=1e-4)
    loss, accuracy = trainer.evaluate((x, mask), (y, mask))
    first = _masked_mse(*map(_t, (want_out[:6], y[:6], mask[:6]))).item()
    last = _masked_mse(*map(_t, (want_out[6:], y[6:], mask[6:]))).item()
    assert accuracy is None and abs(loss - (6 * first + 3 * last) / 9) < 1e-3 * abs(loss)
    history = trainer.fit((x, mask), (y, mask), epochs=2, batch_size=6, progress=False,
                          validation_data=((x, mask), (y, mask)))
    assert len(history["val_loss"]) == 2 and trainer.step_count == 5
    ort = pytest.importorskip("onnxruntime")
    trainer.export_onnx(tmp_path / "imputer.onnx", batch_size=9)
    session = ort.InferenceSession(str(tmp_path / "imputer.onnx"))
    got = session.run(None, {"input_0": x, "input_1": mask})[0]
    np.testing.assert_allclose(got, trainer.predict((x, mask)), rtol=1e-5, atol=1e-6)


def test_compile_with_several_example_inputs(rng):
    ns.manual_seed(0)
    net = Imputer()
    x, mask, _ = _imputation_data(rng, 3)
    model = ns.compile(net, example_inputs=(x, mask), threads=1)
    want = _load_into_torch(net, Imputer(tnn))(_t(x), _t(mask)).detach().numpy()
    np.testing.assert_allclose(model(x, mask), want, rtol=1e-5, atol=1e-6)


# ---- int64 token ids, N-D cross_entropy ---------------------------------------------

V, D = 11, 6


def Tagger(m=nn, lookup="one_hot"):
    class Tagger(m.Module):
        """Token ids (N, T) -> logits (N, V, T), the layout cross_entropy takes;
        the embedding as a Gather (nn.Embedding) or a one-hot product."""

        def __init__(self):
            super().__init__()
            self.embed, self.head = m.Embedding(V, D), m.Linear(D, V)

        def forward(self, tokens):
            if lookup == "one_hot":
                x = m.functional.one_hot(tokens, V).type_as(self.head.weight) @ self.embed.weight
            else:
                x = self.embed(tokens)
            return self.head(x.tanh()).permute(0, 2, 1)
    return Tagger()


@pytest.mark.parametrize("lookup", ["one_hot", "gather"])
@pytest.mark.parametrize("options", [{}, {"ignore_index": 0}, {"ignore_index": 0, "label_smoothing": 0.1},
                                     {"label_smoothing": 0.2}])
def test_token_ids_and_nd_cross_entropy_match_pytorch(options, lookup, rng):
    ns.manual_seed(1)
    ours = Tagger(nn, lookup)
    theirs = _load_into_torch(ours, Tagger(tnn, lookup))
    tokens = rng.integers(0, V, (4, 5))
    trainer = ns.compile_training(ours, example_inputs=tokens, loss="cross_entropy",
                                  optimizer=ns.optim.SGD(lr=0.5, momentum=0.9), threads=1, **options)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        tokens, labels = rng.integers(0, V, (4, 5)), rng.integers(0, V, (4, 5))
        labels[0, :2] = 0
        got = trainer.step(tokens, labels)
        opt.zero_grad()
        want = TF.cross_entropy(theirs(_t(tokens)), _t(labels), **options)
        want.backward()
        opt.step()
        _close_loss(got, want.item())
    _close_params(ours, theirs)
    if "ignore_index" in options:            # the ignored value passes the range check
        labels[1, 1] = V
        with pytest.raises(ns.InputError, match=r"\[0, 11\) or 0 \(ignore_index\)"):
            trainer.step(tokens, labels)


@pytest.mark.parametrize("perm", [(0, 3, 1, 2), (0, 2, 3, 1)])
def test_cross_entropy_on_permuted_logits(perm, rng):
    """Logits moved to class dim 1 by a permute: read untransposed, class axis 3
    (0, 3, 1, 2); (0, 2, 3, 1) reorders the other dims and keeps the Transpose."""
    ns.manual_seed(0)
    ours, theirs = nn.Linear(4, 5), tnn.Linear(4, 5).double()
    theirs.load_state_dict({k: _t(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((2, 3, 6, 4)).astype(np.float32)

    class Permuted(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = ours

        def forward(self, v):
            return self.head(v).permute(*perm)

    net = Permuted()
    labels = rng.integers(0, 5, (2,) + tuple(np.empty((2, 3, 6, 5)).transpose(perm).shape[2:]))
    trainer = ns.compile_training(net, example_inputs=x, example_targets=labels, threads=1,
                                  optimizer=ns.optim.SGD(lr=0.1), ignore_index=1, label_smoothing=0.1)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for _ in range(2):
        got = trainer.step(x, labels)
        opt.zero_grad()
        want = TF.cross_entropy(theirs(_t(x)).permute(*perm), _t(labels), ignore_index=1, label_smoothing=0.1)
        want.backward()
        opt.step()
        _close_loss(got, want.item())
    _close_params(net.head, theirs)


@pytest.mark.parametrize("lookup", ["one_hot", "gather"])
def test_callable_loss_on_tuple_outputs_and_two_token_inputs(lookup, rng):
    """The design's example: (src, tgt_in) -> logits, loss on reshaped logits."""
    def Seq2Seq(m=nn):
        class Seq2Seq(m.Module):
            def __init__(self):
                super().__init__()
                self.embed, self.head = m.Embedding(V, D), m.Linear(D, V)

            def lookup(self, ids):
                if lookup == "gather":
                    return self.embed(ids)
                return m.functional.one_hot(ids, V).type_as(self.head.weight) @ self.embed.weight

            def forward(self, src, tgt_in):
                context = self.lookup(src).mean(1, keepdim=True)
                return self.head((self.lookup(tgt_in) + context).tanh()), context
        return Seq2Seq()

    ns.manual_seed(2)
    ours = Seq2Seq()
    theirs = _load_into_torch(ours, Seq2Seq(tnn))
    src, tgt_in, tgt_out = (rng.integers(0, V, (3, n)) for n in (4, 5, 5))
    trainer = ns.compile_training(
        ours, example_inputs=(src, tgt_in), example_targets=tgt_out,
        loss=lambda out, y: F.cross_entropy(out[0].reshape(-1, V), y.reshape(-1), ignore_index=0,
                                            label_smoothing=0.05) + 0.1 * (out[1] ** 2).mean(),
        optimizer=ns.optim.Adam(lr=3e-2), threads=1)
    opt = torch.optim.Adam(theirs.parameters(), lr=3e-2)
    for _ in range(3):
        src, tgt_in, tgt_out = (rng.integers(0, V, (3, n)) for n in (4, 5, 5))
        got = trainer.step((src, tgt_in), tgt_out)
        opt.zero_grad()
        logits, context = theirs(_t(src), _t(tgt_in))
        want = TF.cross_entropy(logits.reshape(-1, V), _t(tgt_out).reshape(-1), ignore_index=0,
                                label_smoothing=0.05) + 0.1 * (context ** 2).mean()
        want.backward()
        opt.step()
        _close_loss(got, want.item())
    _close_params(ours, theirs)
    logits, context = trainer.predict((src, tgt_in))
    assert logits.shape == (3, 5, V) and context.shape == (3, 1, D)


def test_loss_errors_are_clear(rng):
    tokens = rng.integers(0, V, (4, 5))
    with pytest.raises(ns.ShapeError, match=r"float scalar.*\.mean\(\)"):
        ns.compile_training(Tagger(), example_inputs=tokens, example_targets=tokens,
                            loss=lambda out, y: out)
    with pytest.raises(ns.ShapeError, match=r"int64 class labels of shape \(4, 5\)"):
        ns.compile_training(Tagger(), example_inputs=tokens, example_targets=tokens[:, :3])
    with pytest.raises(TypeError, match="called with target None, as no example_targets"):
        ns.compile_training(Tagger(), example_inputs=tokens, loss=lambda out, y: F.cross_entropy(out, y.long()))
    with pytest.raises(ValueError, match=r"loss 'mse' takes no \['ignore_index'\]"):
        ns.compile_training(nn.Linear(3, 2), (4, 3), loss="mse", ignore_index=0)


# ---- frozen parameters ------------------------------------------------------------

@pytest.mark.parametrize("how", ["module", "parameter"])
def test_frozen_parameters_are_read_never_updated(how, rng):
    ns.manual_seed(3)
    ours = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    theirs = _load_into_torch(ours, tnn.Sequential(tnn.Linear(6, 8), tnn.Tanh(), tnn.Linear(8, 3)))
    if how == "module":
        ours[0].requires_grad_(False)
    else:
        ours[0].weight.requires_grad = False
    theirs[0].requires_grad_(how != "module")
    theirs[0].weight.requires_grad_(False)
    before = ours.state_dict()
    trainer = ns.compile_training(ours, (5, 6), optimizer=ns.optim.Adam(lr=1e-2, weight_decay=0.1),
                                  threads=1, l2=0.0)
    assert "0.weight" in trainer.layout["frozen"] and "0.weight" not in trainer.layout["state"]
    opt = torch.optim.Adam([p for p in theirs.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        x, y = rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 3, 5)
        got = trainer.step(x, y)
        opt.zero_grad()
        want = TF.cross_entropy(theirs(_t(x)), _t(y))
        want.backward()
        opt.step()
        _close_loss(got, want.item())
    np.testing.assert_array_equal(ours.state_dict()["0.weight"], before["0.weight"])
    _close_params(ours, theirs)
    ours[0].weight.data = np.zeros((8, 6), np.float32)      # read afresh at every step
    trainer.step(x, y)
    assert not np.any(ours.state_dict()["0.weight"])


def test_everything_frozen_is_an_error():
    net = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ns.CompileError, match="nothing to train"):
        ns.compile_training(net, (4, 3))


def test_builtin_loss_sums_over_paired_outputs(rng):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 2), nn.Linear(5, 3)

        def forward(self, x):
            return self.a(x), self.b(x)

    ns.manual_seed(6)
    net = TwoHeads()
    x = rng.standard_normal((4, 5)).astype(np.float32)
    ya, yb = rng.standard_normal((4, 2)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    trainer = ns.compile_training(net, example_inputs=x, example_targets=(ya, yb), loss="mse",
                                  optimizer=ns.optim.SGD(lr=0.0), threads=1)
    outs = trainer.predict(x)
    want = ((outs[0] - ya) ** 2).mean() + ((outs[1] - yb) ** 2).mean()
    assert abs(trainer.step(x, (ya, yb)) - want) < 1e-5
    with pytest.raises(TypeError, match="pairs each output with a target"):
        ns.compile_training(net, example_inputs=x, example_targets=ya, loss="mse")
    with pytest.raises(ns.InputError, match="expected 2 arrays"):
        trainer.step(x, ya)
    with pytest.raises(ns.InputError, match="export"):
        trainer.export("unused")


def test_steps_take_torch_tensors_and_check_integer_inputs(rng):
    ns.manual_seed(7)
    net = Tagger(nn)
    tokens, labels = rng.integers(0, V, (4, 5)), rng.integers(0, V, (4, 5))
    trainer = ns.compile_training(net, example_inputs=torch.from_numpy(tokens), threads=1)
    a = trainer.step(torch.from_numpy(tokens), torch.from_numpy(labels))
    assert np.isfinite(a) and trainer.predict(torch.from_numpy(tokens)).shape == (4, V, 5)
    with pytest.raises(ns.InputError, match=r"input: expected \(4, 5\) integer, got \(4, 5\) float"):
        trainer.step(tokens.astype(np.float32), labels)


def test_a_model_that_returns_its_own_loss_trains_like_pytorch():
    """nanoGPT's pattern: forward(ids, targets) -> (logits, loss), no example_targets."""
    from torch_models import tiny_gpt
    torch.manual_seed(0)
    theirs, ours = tiny_gpt(torch), tiny_gpt(ns)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    theirs.double()
    rng = np.random.default_rng(0)
    ids, targets = rng.integers(0, 7, (3, 5)), rng.integers(-1, 7, (3, 5))
    # SGD, not Adam: the key bias's true gradient is 0 (softmax ignores a shift of
    # every key), and Adam would scale float32-vs-float64 rounding noise up to lr
    trainer = ns.compile_training(ours, example_inputs=(ids, targets), loss=lambda out, _: out[1],
                                  optimizer=ns.optim.SGD(lr=0.2, momentum=0.9), threads=1)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.2, momentum=0.9)
    for _ in range(3):
        ids, targets = rng.integers(0, 7, (3, 5)), rng.integers(-1, 7, (3, 5))
        got = trainer.step((ids, targets))
        opt.zero_grad()
        want = theirs(_t(ids), _t(targets))[1]
        want.backward()
        opt.step()
        _close_loss(got, want.item())
    _close_params(ours, theirs)
    loss, accuracy = trainer.evaluate((ids, targets))
    assert accuracy is None and abs(loss - theirs(_t(ids), _t(targets))[1].item()) < 1e-3 * loss
