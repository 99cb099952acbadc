"""Training behaviour: losses against PyTorch, falling loss, fit(), schedules,
regularisation, and bad input (BAD_INPUTS row 22: NaN loss)."""
import numpy as np
import pytest

import nutshell as ns

nn = ns.nn


def small_mlp(out=3):
    ns.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, out))


LOSSES = [("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.1}), ("nll", {}),
          ("mse", {}), ("l1", {}), ("huber", {}), ("bce_with_logits", {})]


@pytest.mark.parametrize("loss,kw", LOSSES, ids=[f"{l}{'-ls' if k else ''}" for l, k in LOSSES])
def test_loss_and_first_step_match_pytorch(loss, kw, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = small_mlp()
    if loss == "nll":
        net = nn.Sequential(*[net[i] for i in range(3)], nn.LogSoftmax(dim=1))
    tnet = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    if loss == "nll":
        tnet.append(torch.nn.LogSoftmax(dim=1))
    tnet.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    x = rng.standard_normal((5, 6)).astype(np.float32)
    if loss in ("cross_entropy", "nll"):
        y = rng.integers(0, 3, 5)
    elif loss == "bce_with_logits":
        y = rng.integers(0, 2, (5, 3)).astype(np.float32)
    else:
        y = (rng.standard_normal((5, 3)) * 2).astype(np.float32)
    trainer = ns.compile_training(net, (5, 6), loss=loss, optimizer=ns.optim.SGD(lr=0.1), threads=1, **kw)
    got = trainer.step(x, y)
    torch_fn = {"cross_entropy": lambda o, t: F.cross_entropy(o, t, **kw), "nll": F.nll_loss,
                "mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss,
                "bce_with_logits": F.binary_cross_entropy_with_logits}[loss]
    opt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    want = torch_fn(tnet(torch.from_numpy(x)), torch.from_numpy(y))
    want.backward()
    opt.step()
    assert abs(got - want.item()) < 1e-5 * max(1, abs(want.item()))
    for name, value in tnet.state_dict().items():
        np.testing.assert_allclose(net.state_dict()[name], value.numpy(), rtol=1e-4, atol=1e-6)


def test_loss_falls_and_fit_history(rng):
    x = rng.standard_normal((256, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    net = small_mlp()
    trainer = ns.compile_training(net, (32, 6), optimizer=ns.optim.Adam(lr=0.01), threads=1)
    history = trainer.fit(x, y, epochs=8, batch_size=32, validation_data=(x, y), progress=False)
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert history["val_accuracy"][-1] > 0.8
    assert len(history["loss"]) == 8 and trainer.step_count == 64


def test_trained_values_reach_module_and_fresh_compile(rng):
    net = small_mlp()
    before = net.state_dict()
    trainer = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=0.5), threads=1)
    x, y = rng.standard_normal((4, 6)).astype(np.float32), np.array([0, 1, 2, 0])
    trainer.step(x, y)
    after = net.state_dict()
    assert not np.allclose(before["0.weight"], after["0.weight"])
    np.testing.assert_array_equal(trainer.parameters()["2.bias"], after["2.bias"])
    fresh = ns.compile(net, input_shape=(4, 6), threads=1)
    np.testing.assert_allclose(fresh(x), trainer.predict(x), rtol=1e-6)
    # values set on the module between steps are taken up by the next step
    net.load_state_dict(before)
    trainer.step(x, y)
    redo = small_mlp()
    redo.load_state_dict(before)
    again = ns.compile_training(redo, (4, 6), optimizer=ns.optim.SGD(lr=0.5), threads=1)
    again.step(x, y)
    np.testing.assert_allclose(net.state_dict()["0.weight"], redo.state_dict()["0.weight"], rtol=1e-6)


def test_lr_schedules():
    s = ns.optim
    assert s.StepSchedule(10, 0.5)(25, 1.0) == 0.25
    assert abs(s.ExponentialSchedule(0.9)(2, 1.0) - 0.81) < 1e-12
    cos = s.CosineSchedule(100, min_lr=0.1)
    assert cos(0, 1.0) == 1.0 and abs(cos(100, 1.0) - 0.1) < 1e-12 and abs(cos(50, 1.0) - 0.55) < 1e-12
    warm = s.LinearWarmup(4, s.CosineSchedule(10))
    assert [warm(i, 1.0) for i in range(4)] == [0.25, 0.5, 0.75, 1.0] and warm(4, 1.0) == 1.0


def test_schedule_drives_the_update(rng):
    net = small_mlp()
    trainer = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=1.0), threads=1)
    trainer.schedule = ns.optim.StepSchedule(1, 0.0)      # lr 1 for step 0, then 0
    x, y = rng.standard_normal((4, 6)).astype(np.float32), np.array([0, 1, 2, 0])
    trainer.step(x, y)
    frozen = net.state_dict()
    trainer.step(x, y)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, frozen[k])


def test_regularisers_change_the_step(rng):
    x, y = rng.standard_normal((4, 6)).astype(np.float32), np.array([0, 1, 2, 0])
    results = {}
    for name, kw in (("plain", {}), ("l2", {"l2": 0.1}), ("l1", {"l1": 0.1}), ("clip_value", {"clip_value": 1e-3}),
                     ("clip_norm", {"clip_norm": 1e-3}), ("max_norm", {"max_norm": 0.5})):
        net = small_mlp()
        trainer = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=0.5), threads=1, **kw)
        trainer.step(x, y)
        results[name] = net.state_dict()["0.weight"]
    for name in results:
        if name != "plain":
            assert not np.allclose(results[name], results["plain"]), name
    assert np.linalg.norm(results["max_norm"], axis=1).max() <= 0.5 + 1e-5
    start = small_mlp().state_dict()["0.weight"]
    assert np.abs(results["clip_value"] - start).max() <= 0.5 * 1e-3 + 1e-7


def test_dropout_masks_are_seeded_and_scaled(rng):
    ns.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 50), nn.Dropout(0.5), nn.Linear(50, 3))
    trainer = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=0.0), threads=1)
    x, y = rng.standard_normal((4, 6)).astype(np.float32), np.array([0, 1, 2, 0])
    losses = [trainer.step(x, y) for _ in range(3)]
    assert len(set(losses)) == 3                      # a new mask every step
    net.eval()
    quiet = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=0.0), threads=1)
    assert len({quiet.step(x, y) for _ in range(3)}) == 1


def test_batchnorm_running_statistics_update(rng):
    ns.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 16, 2))
    trainer = ns.compile_training(net, (4, 2, 6, 6), optimizer=ns.optim.SGD(lr=0.1), threads=1)
    x = (rng.standard_normal((4, 2, 6, 6)) * 3 + 1).astype(np.float32)
    trainer.step(x, np.array([0, 1, 0, 1]))
    state = net.state_dict()
    assert state["1.num_batches_tracked"] == 1
    assert not np.allclose(state["1.running_mean"], 0) and not np.allclose(state["1.running_var"], 1)


def test_augmentation_helpers(rng):
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    shifted = ns.augment.random_shift(x, 2, rng)
    assert shifted.shape == x.shape and not np.array_equal(shifted, x)
    cropped = ns.augment.random_crop(x, 24, rng, padding=0)
    assert cropped.shape == (8, 1, 24, 24)
    flipped = ns.augment.random_flip(x, rng, p=1.0)
    np.testing.assert_array_equal(flipped, x[..., ::-1])


# BAD_INPUTS row 22 and friends
def test_labels_out_of_range_are_rejected(rng):
    trainer = ns.compile_training(small_mlp(), (4, 6), threads=1)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    with pytest.raises(ns.InputError, match=r"\[0, 3\).*-1 to 3"):
        trainer.step(x, np.array([0, 1, 3, -1]))


def test_batch_shape_mismatch_is_rejected(rng):
    trainer = ns.compile_training(small_mlp(), (4, 6), threads=1)
    with pytest.raises(ns.InputError, match=r"expected \(4, 6\) float32"):
        trainer.step(rng.standard_normal((5, 6)).astype(np.float32), np.zeros(5, np.int64))
    with pytest.raises(ns.InputError, match="labels"):
        trainer.step(rng.standard_normal((4, 6)).astype(np.float32), np.zeros((4, 1), np.int64))


def test_nan_loss_names_the_op_and_keeps_last_good_parameters(rng):
    class LogNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return nn.apply("Log", [self.fc(x)])

    ns.manual_seed(1)
    net = LogNet()
    trainer = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=0.1), threads=1, check_nan=True)
    good = net.state_dict()
    x = rng.standard_normal((4, 6)).astype(np.float32) * 10
    with pytest.raises(FloatingPointError, match="Log"):
        trainer.step(x, np.array([0, 1, 2, 0]))
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, good[k])
    assert trainer.step_count == 0


def test_export_onnx_after_training(rng, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ns.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 16, 12), nn.Maxout(3), nn.Softmax(dim=1))
    trainer = ns.compile_training(net, (4, 1, 8, 8), optimizer=ns.optim.Adam(lr=0.01), threads=1)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    for _ in range(3):
        trainer.step(x, np.array([0, 1, 2, 3]))
    path = tmp_path / "trained.onnx"
    trainer.export_onnx(path)
    got = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, trainer.predict(x), rtol=1e-4, atol=1e-6)
    back = ns.compile(ns.load_onnx(path), threads=1)(x)          # and it round-trips
    np.testing.assert_allclose(back, got, rtol=1e-4, atol=1e-6)


def test_onnx_graph_trains_like_pytorch(rng):
    """A torch-exported ONNX network, loaded and trained: the same steps as torch."""
    torch = pytest.importorskip("torch")
    from onnx_models import torch_export
    t = torch.nn
    torch.manual_seed(0)
    tnet = t.Sequential(t.Conv2d(1, 4, 3, padding=1), t.ReLU(), t.MaxPool2d(2),
                        t.Flatten(), t.Linear(4 * 7 * 7, 10))
    x = rng.standard_normal((8, 1, 14, 14)).astype(np.float32)
    graph = ns.load_onnx(torch_export(tnet, torch.from_numpy(x), 13))
    net = ns.nn.from_graph(graph)
    tnet.train()
    trainer = ns.compile_training(net, (8, 1, 14, 14), optimizer=ns.optim.SGD(lr=0.1, momentum=0.9), threads=1)
    opt = torch.optim.SGD(tnet.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        y = rng.integers(0, 10, 8)
        loss = trainer.step(x, y)
        opt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tnet(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        opt.step()
        assert abs(loss - tloss.item()) < 1e-4
    trained = net.state_dict()
    for name, p in tnet.named_parameters():
        key = name if name in trained else None
        assert key is not None or p.ndim == 0, name
        np.testing.assert_allclose(trained[key], p.detach().numpy(), rtol=1e-3, atol=1e-5)


def test_onnx_graph_with_batchnorm_trains_like_the_dsl(rng, tmp_path):
    ns.manual_seed(0)
    make = lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(4 * 36, 5))
    dsl = make()
    ns.export_onnx(dsl, tmp_path / "m.onnx", (6, 1, 6, 6))
    net = ns.nn.from_graph(ns.load_onnx(tmp_path / "m.onnx"))
    x = rng.standard_normal((6, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    a = ns.compile_training(dsl, (6, 1, 6, 6), optimizer=ns.optim.Adam(lr=0.01), threads=1)
    b = ns.compile_training(net, (6, 1, 6, 6), optimizer=ns.optim.Adam(lr=0.01), threads=1)
    for _ in range(3):
        assert abs(a.step(x, y) - b.step(x, y)) < 1e-5
    want, got = dsl.state_dict(), net.state_dict()
    for name in ("0.weight", "1.weight", "1.running_mean", "1.running_var", "4.bias"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7)


# ---- issue 14 item 12: trainer and layer traps ------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: nn.Conv2d(1, 6, 0), "kernel_size must be a positive integer, got 0"),
    (lambda: nn.Conv2d(0, 6, 3), "in_channels"),
    (lambda: nn.Conv2d(1, 6, 3, stride=0), "stride"),
    (lambda: nn.Conv2d(1, 6, 3, padding=-1), "padding must be a non-negative integer"),
    (lambda: nn.Conv2d(1, 6, 3, padding="full"), "'same', 'valid'"),
    (lambda: nn.Conv2d(1, 6, 3, stride=2, padding="same"), "strided"),
    (lambda: nn.Linear(-3, 5), "Linear: in_features must be a positive integer, got -3"),
    (lambda: nn.Linear(3, 0), "out_features")])
def test_bad_layer_arguments_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), ((2, 5), 2)])
def test_conv_padding_same_and_valid_match_pytorch(kernel, dilation, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    for padding in ("same", "valid"):
        ns.manual_seed(0)
        conv = nn.Conv2d(3, 4, kernel, padding=padding, dilation=dilation)
        ref = torch.nn.Conv2d(3, 4, kernel, padding=padding, dilation=dilation)
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
        got = ns.compile(conv, input_shape=x.shape, threads=1)(x)
        want = ref(torch.from_numpy(x)).detach().numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_wrong_input_width_names_the_layer():
    net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(1176, 10))
    with pytest.raises(ns.ShapeError, match=r"Linear '3': expected in_features 1176, got 1200"):
        ns.compile(net, input_shape=(1, 1, 24, 14))
    with pytest.raises(ns.ShapeError, match=r"Conv2d '0': expected in_channels 1, got 3"):
        ns.compile(net, input_shape=(1, 3, 28, 28))


@pytest.mark.parametrize("loss", ["l1", "huber", "bce_with_logits"])
def test_evaluate_and_val_loss_use_the_trainers_loss(loss, rng):
    torch = pytest.importorskip("torch")
    fn = {"l1": torch.nn.functional.l1_loss, "huber": torch.nn.functional.huber_loss,
          "bce_with_logits": torch.nn.functional.binary_cross_entropy_with_logits}[loss]
    x = rng.standard_normal((10, 6)).astype(np.float32)
    y = (rng.random((10, 3)) if loss == "bce_with_logits" else rng.standard_normal((10, 3)) * 3).astype(np.float32)
    trainer = ns.compile_training(small_mlp(), (4, 6), loss=loss, threads=1)
    got, accuracy = trainer.evaluate(x, y)           # 4 + 4 + 2 rows
    want = fn(torch.from_numpy(trainer.predict(x)), torch.from_numpy(y)).item()
    assert accuracy is None and abs(got - want) < 1e-5 * max(1.0, abs(want))
    history = trainer.fit(x[:8], y[:8], epochs=1, batch_size=4, validation_data=(x, y), progress=False)
    want = fn(torch.from_numpy(trainer.predict(x)), torch.from_numpy(y)).item()
    assert abs(history["val_loss"][0] - want) < 1e-5 * max(1.0, abs(want))


def test_load_state_dict_after_compile_training_is_used(rng):
    net = small_mlp()
    checkpoint = net.state_dict()
    trainer = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=0.5), threads=1)
    x, y = rng.standard_normal((4, 6)).astype(np.float32), np.array([0, 1, 2, 0])
    trainer.step(x, y)
    trained = net.state_dict()
    net.load_state_dict(checkpoint)                      # restore: predict and evaluate see it
    fresh = ns.compile(net, input_shape=(4, 6), threads=1)
    np.testing.assert_allclose(trainer.predict(x), fresh(x), rtol=1e-6)
    np.testing.assert_array_equal(trainer.parameters()["0.weight"], checkpoint["0.weight"])
    net.load_state_dict(trained)
    logits = ns.compile(net, input_shape=(4, 6), threads=1)(x)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert abs(trainer.evaluate(x, y)[0] + logp[np.arange(4), y].mean()) < 1e-5
    np.testing.assert_array_equal(trainer.state()["2.bias"], trained["2.bias"])


@pytest.mark.parametrize("rows,batch_size", [(1, None), (3, None), (9, None), (4, 2), (5, 8)])
def test_predict_takes_any_number_of_rows(rows, batch_size, rng):
    net = small_mlp()
    trainer = ns.compile_training(net, (4, 6), threads=1)
    x = rng.standard_normal((rows, 6)).astype(np.float32)
    want = np.concatenate([ns.compile(net, input_shape=(1, 6), threads=1)(x[i:i + 1]) for i in range(rows)])
    np.testing.assert_allclose(trainer.predict(x, batch_size=batch_size), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ns.InputError, match=r"rows of shape \(6,\)"):
        trainer.predict(x[0])


def test_fit_takes_the_augmentation_functions_as_they_are(rng):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    trainer = ns.compile_training(net, (4, 1, 8, 8), threads=1)
    x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    for augment in (ns.augment.random_shift, ns.augment.random_flip, ns.augment.random_crop,
                    lambda xb, rng: xb[..., ::-1]):
        history = trainer.fit(x, y, epochs=1, batch_size=4, augment=augment, progress=False)
        assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("name,cls", [("sgd", "SGD"), ("adam", "Adam"), ("AdamW", "AdamW"),
                                      ("rmsprop", "RMSprop"), ("adagrad", "Adagrad")])
def test_optimizer_by_name(name, cls, rng):
    trainer = ns.compile_training(small_mlp(), (4, 6), optimizer=name, threads=1)
    assert type(trainer.optimizer).__name__ == cls
    x = rng.standard_normal((4, 6)).astype(np.float32)
    assert np.isfinite(trainer.step(x, np.array([0, 1, 2, 0])))


def test_bad_optimizer_and_keywords_are_named():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'.*'adam'"):
        ns.compile_training(small_mlp(), (4, 6), optimizer="adamm")
    with pytest.raises(TypeError, match=r"optimizer must be an ns.optim optimizer"):
        ns.compile_training(small_mlp(), (4, 6), optimizer=0.01)
    with pytest.raises(ValueError, match="learning rate must be finite"):
        ns.compile_training(small_mlp(), (4, 6), optimizer=ns.optim.SGD(lr=float("nan")))
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['weight_decay'\]; "
                                        r"accepted: .*label_smoothing.*clip_norm"):
        ns.compile_training(small_mlp(), (4, 6), weight_decay=0.1)


# ---- issue 14 item 6: check_nan sees NaN inputs and non-finite new parameters --------

def test_check_nan_refuses_a_nan_input(rng):
    net = small_mlp()
    trainer = ns.compile_training(net, (4, 6), threads=1, check_nan=True)
    before = net.state_dict()
    x = rng.standard_normal((4, 6)).astype(np.float32)
    x[1, 2] = np.nan
    with pytest.raises(FloatingPointError, match="input holds NaN or Inf at step 0.*refused"):
        trainer.step(x, np.array([0, 1, 2, 0]))
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert trainer.step_count == 0


def test_check_nan_refuses_a_step_whose_new_parameters_overflow(rng):
    net = small_mlp()
    trainer = ns.compile_training(net, (4, 6), optimizer=ns.optim.SGD(lr=3e38), threads=1, check_nan=True)
    before = net.state_dict()
    x = rng.standard_normal((4, 6)).astype(np.float32) * 100
    with pytest.raises(FloatingPointError, match=r"non-finite new value of .* at step 0.*refused"):
        trainer.step(x, np.array([0, 1, 2, 0]))        # the loss is finite, the update is not
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert all(np.all(np.isfinite(v)) for v in trainer.parameters().values())
    trainer.schedule = lambda step, lr: float("nan")
    with pytest.raises(ValueError, match="learning rate at step 0 is nan"):
        trainer.step(x, np.array([0, 1, 2, 0]))
