"""Whole modules written for PyTorch, under nutshell: compiled and trained
against the same code under torch, printed, pickled, frozen, initialised."""
import numpy as np
import pytest

import nutshell as ns
from torch_cases import torch
from torch_models import PicklableNet, mlp, nano_gpt, positional_encoding, small_net, tiny_gpt

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (test extra)")


@needs_torch
def test_a_module_written_for_torch_compiles_and_matches():
    """Multi-input (int64 ids and targets), tuple output, a Parameter and a buffer
    used in forward, torch's state_dict loaded; float32, rtol 1e-4 / atol 1e-5."""
    torch.manual_seed(0)
    ref = tiny_gpt(torch)
    net = tiny_gpt(ns)
    net.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(0)
    ids, targets = rng.integers(0, 7, (3, 5)), rng.integers(-1, 7, (3, 5))
    model = ns.compile(net.trace(example_inputs=(ids, targets)))
    logits, loss = model(ids, targets)
    ref_logits, ref_loss = ref(torch.from_numpy(ids), torch.from_numpy(targets))
    np.testing.assert_allclose(logits, ref_logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, ref_loss.item(), rtol=1e-4)


@needs_torch
def test_tables_built_eagerly_in_init_match_torch():
    net, ref = positional_encoding(ns), positional_encoding(torch)
    np.testing.assert_allclose(net.pe, ref.pe.numpy(), rtol=1e-6, atol=1e-7)
    x = np.random.default_rng(0).standard_normal((7, 2, 6)).astype(np.float32)
    got = ns.compile(net.trace(example_inputs=x))(x)
    np.testing.assert_allclose(got, ref(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)
    eager = ns.arange(6).reshape(2, 3).float().softmax(-1)
    np.testing.assert_allclose(eager.numpy(), torch.arange(6).reshape(2, 3).float().softmax(-1).numpy(), rtol=1e-6)
    assert ns.tensor([1, 2, 3]).sum().item() == 6 and float(ns.ones(1) * 2) == 2.0


@needs_torch
def test_module_tree_prints_walks_and_applies_as_torch():
    net, ref = small_net(ns), small_net(torch)
    assert str(net) == str(ref)
    assert [n for n, _ in net.named_children()] == [n for n, _ in ref.named_children()]
    assert [type(m).__name__ for m in net.modules()] == [type(m).__name__ for m in ref.modules()]
    seen, ref_seen = [], []
    net.apply(lambda m: seen.append(type(m).__name__))
    ref.apply(lambda m: ref_seen.append(type(m).__name__))
    assert seen == ref_seen


def test_pickle_round_trips_parameters_and_compiles_the_same():
    import pickle
    net = PicklableNet().eval()
    copy = pickle.loads(pickle.dumps(net))
    for (k, a), (k2, b) in zip(net.state_dict().items(), copy.state_dict().items()):
        assert k == k2 and np.array_equal(a, b)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(ns.compile(net, input_shape=x.shape)(x), ns.compile(copy, input_shape=x.shape)(x))


def test_requires_grad_freezes_parameters_in_the_training_trace():
    net = small_net(ns)
    net.features.requires_grad_(False)
    net.head[1].bias.requires_grad = False
    graph = net.trace((2, 1, 8, 8), mode="training")
    frozen = set(graph.trace_state.frozen)
    assert frozen == {"features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
                      "head.1.bias"}
    assert set(graph.trace_state.params) - frozen == {"head.1.weight"}
    assert all(not p.requires_grad for p in net.features.parameters())


def test_tensor_misuse_gets_clear_errors():
    class Bad(ns.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)
    for fn, error in [(lambda x: x if x.sum() > 0 else -x, ns.InputError),
                      (lambda x: x.reshape(5, -1), ns.ShapeError),
                      (lambda x: x[0, 0, 0, 0], IndexError),
                      (lambda x: x[x > 0], ns.UnsupportedOpError),
                      (lambda x: x.view(-1, -1), ns.ShapeError)]:
        with pytest.raises(error):
            Bad(fn).trace((2, 3, 4))
    with pytest.raises(TypeError):
        Bad(lambda x: x)(np.zeros(3))


@needs_torch
def test_training_a_torch_written_model_follows_torch():
    """compile_training on F.cross_entropy (ignore_index, label smoothing) and a
    Parameter used in forward: SGD losses as torch's for 5 steps (float32, rtol 1e-4)."""
    torch.manual_seed(0)
    ref, net = mlp(torch), mlp(ns)
    net.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    y[2] = -1

    def loss(lib, out, t):
        return lib.nn.functional.cross_entropy(out, t, ignore_index=-1, label_smoothing=0.1)
    trainer = ns.compile_training(net, example_inputs=x, example_targets=y, threads=1,
                                  loss=lambda out, t: loss(ns, out, t), optimizer=ns.optim.SGD(lr=0.5))
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        expected = loss(torch, ref(torch.from_numpy(x)), torch.from_numpy(y))
        expected.backward()
        opt.step()
        np.testing.assert_allclose(float(trainer.step(x, y)), expected.item(), rtol=1e-4)


INITS = [("normal_", dict(mean=0.5, std=0.02)), ("uniform_", dict(a=-2, b=1)), ("constant_", dict(val=0.3)),
         ("zeros_", {}), ("ones_", {}), ("eye_", {}), ("xavier_uniform_", dict(gain=2.0)), ("xavier_normal_", {}),
         ("kaiming_uniform_", dict(a=5 ** 0.5)), ("kaiming_normal_", dict(mode="fan_out", nonlinearity="relu")),
         ("trunc_normal_", dict(std=0.5, a=-0.6, b=0.6)), ("orthogonal_", dict(gain=1.5))]


@needs_torch
@pytest.mark.parametrize("name,kwargs", INITS, ids=[n for n, _ in INITS])
def test_nn_init_draws_torch_distributions(name, kwargs):
    """Same distribution as torch.nn.init on a 64x128 weight: mean and std within
    5% of torch's std, the 1%/99% quantiles within 20% (statistical: 8192 draws
    put the mean within ~1.5% and a 1% quantile within ~6% of the std, 1 sigma;
    exact for the deterministic ones)."""
    ns.manual_seed(0)          # seeded draws: the statistical bounds pass or fail for good
    torch.manual_seed(0)
    module = ns.nn.Linear(128, 64)
    module.apply(lambda m: getattr(ns.nn.init, name)(m.weight, **kwargs) if isinstance(m, ns.nn.Linear) else None)
    ref = getattr(torch.nn.init, name)(torch.empty(64, 128), **kwargs).numpy()
    got = module.weight.data
    for stat, tol in ((np.mean, 0.05), (np.std, 0.05), (lambda v: np.quantile(v, 0.01), 0.2),
                      (lambda v: np.quantile(v, 0.99), 0.2)):
        np.testing.assert_allclose(stat(got), stat(ref), rtol=0, atol=tol * np.std(ref) + 1e-7)
    if name == "orthogonal_":
        np.testing.assert_allclose(got @ got.T, 2.25 * np.eye(64), atol=1e-4)




@needs_torch
def test_nano_gpt_infers_and_trains_as_torch():
    """nanoGPT's code (tied embedding, causal SDPA, init by apply): last-position
    logits as torch's (atol 1e-6), SGD losses as torch's for 3 steps (rtol 1e-5)."""
    torch.manual_seed(0)
    ref, net = nano_gpt(torch), nano_gpt(ns)
    assert str(net) == str(ref)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    net.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, (3, 8)), rng.integers(-1, 11, (3, 8))
    logits = ns.compile(net, example_inputs=(idx,))(idx)
    np.testing.assert_allclose(logits, ref(torch.from_numpy(idx))[0].detach().numpy(), atol=1e-6)
    trainer = ns.compile_training(net, example_inputs=(idx, targets), example_targets=targets,
                                  loss=lambda out, y: out[1], optimizer=ns.optim.SGD(lr=0.5), threads=1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        expected = ref(torch.from_numpy(idx), torch.from_numpy(targets))[1]
        expected.backward()
        opt.step()
        np.testing.assert_allclose(float(trainer.step((idx, targets), targets)), expected.item(), rtol=1e-5)


def test_random_draws_have_their_distributions():
    """randn via the inverse normal CDF: Acklam's quantile within 2e-9 relative of
    torch's ndtri (float64); 20000 draws' moments within 4 standard errors."""
    from nutshell.frontends.random import inverse_normal_cdf

    class Draws(ns.nn.Module):
        def forward(self, x):
            return ns.randn_like(x), ns.rand(200, 100), ns.bernoulli(ns.full((200, 100), 0.3)), x * 0 + ns.randn(200, 100)
    x = np.zeros((200, 100), np.float32)
    normal, uniform, coin, normal2 = ns.compile(Draws().trace(example_inputs=x))(x)
    se = 1 / np.sqrt(x.size)
    for values, mean, std in ((normal, 0, 1), (normal2, 0, 1), (uniform, 0.5, 12 ** -0.5), (coin, 0.3, 0.21 ** 0.5)):
        assert abs(values.mean() - mean) < 4 * std * se and abs(values.std() - std) < 4 * std * se
    assert not np.array_equal(normal, normal2)
    if torch is not None:
        class Quantile(ns.nn.Module):
            def forward(self, p):
                return inverse_normal_cdf(p)
        p = np.concatenate([np.linspace(1e-7, 1 - 1e-7, 10001), [1e-12, 0.02425, 0.97575]])
        graph = Quantile().trace(example_inputs=(ns.InputSpec(p.shape, ns.float64),))
        got = ns.run_reference(graph, {"input": p})[graph.outputs[0].name]
        expected = torch.special.ndtri(torch.from_numpy(p)).numpy()
        np.testing.assert_array_less(np.abs(got - expected), 2e-9 * np.maximum(np.abs(expected), 1e-3))


def tiny_vae(lib):
    nn, F = lib.nn, lib.nn.functional

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.mu, self.logvar = nn.Linear(8, 16), nn.Linear(16, 2), nn.Linear(16, 2)
            self.dec = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 8))

        def forward(self, x):
            h = F.relu(self.enc(x))
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + lib.randn_like(mu) * (0.5 * logvar).exp()
            return self.dec(z), mu, logvar
    return VAE()


def test_a_vae_samples_afresh_each_step_and_trains():
    """The reparameterisation's randn_like draws new noise every step (losses at
    a fixed batch differ), reproducibly (same seed, same losses), and the ELBO falls."""
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)

    def elbo(out, target):
        recon, mu, logvar = out
        kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1).mean()
        return ns.nn.functional.mse_loss(recon, target, reduction="sum") / target.shape[0] + kl

    runs = []
    for _ in range(2):
        ns.manual_seed(3)
        trainer = ns.compile_training(tiny_vae(ns), example_inputs=x, example_targets=x, loss=elbo,
                                      optimizer=ns.optim.Adam(lr=1e-2), threads=1)
        runs.append([float(trainer.step(x, x)) for _ in range(40)])
    assert runs[0] == runs[1]
    assert np.mean(runs[0][-5:]) < 0.8 * np.mean(runs[0][:5])
    frozen = ns.compile_training(tiny_vae(ns), example_inputs=x, example_targets=x, loss=elbo,
                                 optimizer=ns.optim.SGD(lr=0.0), threads=1)
    assert len({float(frozen.step(x, x)) for _ in range(5)}) == 5       # same weights, new noise
