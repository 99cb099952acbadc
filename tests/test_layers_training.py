"""PyTorch's layers trained in nutshell: the same initial state_dict, the same
SGD steps as torch, the same losses and parameters afterwards.

Tolerances: losses to 1e-4 relative, parameters to rtol 1e-3 / atol 1e-5 after
three steps (float32, reductions summed in different orders)."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ops import get_op

torch = pytest.importorskip("torch", reason="torch is a test extra (pip install torch)")
tnn = torch.nn
nn = ns.nn


def _needs_grads(*ops):
    missing = [op for op in ops if getattr(get_op(op), "grad", None) is None]
    if missing:
        pytest.skip(f"no gradient rule yet for {missing}")


def _train_both(tnet, net, inputs, target, loss, tloss, steps=3, lr=0.1):
    tnet.train(), net.train()
    net.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    trainer = ns.compile_training(net, example_inputs=inputs, example_targets=target, loss=loss,
                                  optimizer=ns.optim.SGD(lr=lr), threads=1)
    opt = torch.optim.SGD(tnet.parameters(), lr=lr)
    tin = tuple(torch.from_numpy(x) for x in inputs)
    for _ in range(steps):
        got = trainer.step(inputs, target)
        opt.zero_grad()
        want = tloss(tnet(*tin), torch.from_numpy(target))
        want.backward()
        opt.step()
        assert got == pytest.approx(want.item(), rel=1e-4)
    trained = net.state_dict()
    for name, value in tnet.state_dict().items():
        np.testing.assert_allclose(trained[name], value.detach().numpy(), rtol=1e-3, atol=1e-5,
                                   err_msg=name)


def _tokens(m, padding_idx):
    class Tokens(m.Module):
        def __init__(self):
            super().__init__()
            self.emb = m.Embedding(12, 8, padding_idx=padding_idx)
            self.block = m.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                                   activation="gelu", norm_first=True)
            self.head = m.Linear(8, 4)

        def forward(self, ids):
            return self.head(self.block(self.emb(ids)).mean(1))
    return Tokens()


def test_embedding_transformer_trains_like_pytorch(rng):
    _needs_grads("Gather", "Slice", "Gelu")
    torch.manual_seed(0)
    ids = rng.integers(0, 12, (3, 5)).astype(np.int64)
    ids[0, :2] = 0                                  # padding tokens: their row stays fixed
    labels = rng.integers(0, 4, 3).astype(np.int64)
    _train_both(_tokens(tnn, 0), _tokens(nn, 0), (ids,), labels, "cross_entropy",
                tnn.functional.cross_entropy)


def _decoder(m):
    return m.Sequential(m.Conv2d(3, 8, 3, padding=1), m.GroupNorm(2, 8), m.SiLU(),
                        m.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
                        m.Upsample(scale_factor=2, mode="bilinear"), m.Conv2d(4, 2, 1))


def test_conv_transpose_upsample_decoder_trains_like_pytorch(rng):
    _needs_grads("ConvTranspose", "Resize")
    torch.manual_seed(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = rng.standard_normal((2, 2, 20, 20)).astype(np.float32)
    _train_both(_decoder(tnn), _decoder(nn), (x,), y, "mse", tnn.functional.mse_loss)


@pytest.mark.parametrize("make,ops", [
    (lambda m: m.GELU(), ["Gelu"]), (lambda m: m.Softplus(beta=2.0), ["Softplus"]),
    (lambda m: m.Mish(), ["Mish"]), (lambda m: m.Hardswish(), ["HardSwish"]),
    (lambda m: m.PReLU(6), ["PRelu"]), (lambda m: m.LayerNorm(6), []),
], ids=["gelu", "softplus", "mish", "hardswish", "prelu", "layernorm"])
def test_activation_mlp_trains_like_pytorch(rng, make, ops):
    _needs_grads(*ops)
    torch.manual_seed(0)
    build = lambda m: m.Sequential(m.Linear(5, 6), make(m), m.Linear(6, 3))
    x = rng.standard_normal((4, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 4).astype(np.int64)
    _train_both(build(tnn), build(nn), (x,), labels, "cross_entropy", tnn.functional.cross_entropy)


def test_frozen_pretrained_embedding_stays(rng):
    _needs_grads("Gather")
    table = rng.standard_normal((7, 4)).astype(np.float32)
    net = nn.Sequential(nn.Embedding.from_pretrained(table), nn.Flatten(), nn.Linear(12, 2))
    before = net[2].weight.data.copy()
    ids = rng.integers(0, 7, (5, 3)).astype(np.int64)
    trainer = ns.compile_training(net, example_inputs=ids, loss="cross_entropy", threads=1)
    for _ in range(2):
        trainer.step(ids, rng.integers(0, 2, 5).astype(np.int64))
    state = net.state_dict()
    np.testing.assert_array_equal(state["0.weight"], table)
    assert not np.allclose(state["2.weight"], before)
