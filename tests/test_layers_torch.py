"""PyTorch's layers in nutshell: the same state_dict loaded into both, the
nutshell module compiled, outputs compared with torch's on random inputs.

Tolerances (float32): rtol 1e-4 with atol 1e-5 times the output's magnitude,
except where a test says otherwise (attention's softmax over sums: 1e-4)."""
import numpy as np
import pytest

import nutshell as ns
from tests_support_layers import assert_matches, calling, run_module

torch = pytest.importorskip("torch", reason="torch is a test extra (pip install torch)")
tnn = torch.nn
nn = ns.nn


def _pair(tlayer, nlayer):
    """Copy torch's state_dict into the nutshell layer, which must take every key."""
    nlayer.load_state_dict({k: v.detach().numpy() for k, v in tlayer.state_dict().items()})
    return tlayer.eval(), nlayer.eval()


def _torch(tlayer, *xs):
    with torch.no_grad():
        out = tlayer(*[torch.from_numpy(x) for x in xs])
    return out


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3),
    dict(kernel_size=2, stride=2),
    dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, stride=2, groups=2, bias=False),
])
def test_conv_transpose2d(rng, kw):
    t, n = _pair(tnn.ConvTranspose2d(4, 6, **kw), nn.ConvTranspose2d(4, 6, **kw))
    assert n.weight.shape == tuple(t.weight.shape)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


def test_conv_transpose2d_output_size(rng):
    t, n = _pair(tnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1), nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1))
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    with torch.no_grad():
        want = t(torch.from_numpy(x), output_size=(8, 9)).numpy()
    assert_matches(run_module(calling(n, output_size=(8, 9)), x), want)
    with pytest.raises(ValueError, match="output_size"):
        run_module(calling(n, output_size=(12, 9)), x)


@pytest.mark.parametrize("make", [
    lambda: nn.ConvTranspose2d(3, 2, 3, stride=0), lambda: nn.ConvTranspose2d(3, 2, 3, padding=-1),
    lambda: nn.ConvTranspose2d(3, 2, 0), lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, output_padding=2),
    lambda: nn.ConvTranspose2d(3, 2, 3, groups=2), lambda: nn.Conv1d(3, 2, 3, dilation=0),
    lambda: nn.Conv1d(3, 2, 3, padding="full"), lambda: nn.Conv1d(3, 2, 3, stride=2, padding="same"),
    lambda: nn.Embedding(0, 3), lambda: nn.Embedding(4, 3, padding_idx=4), lambda: nn.LayerNorm(0),
    lambda: nn.GroupNorm(3, 4), lambda: nn.MultiheadAttention(6, 4), lambda: nn.PReLU(0),
    lambda: nn.GELU("fast"), lambda: nn.Upsample(scale_factor=2, mode="area"),
    lambda: nn.TransformerEncoderLayer(8, 2, activation="swish"),
])
def test_bad_arguments_are_clear_errors(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("kw", [dict(kernel_size=3), dict(kernel_size=5, stride=2, padding=2),
                                dict(kernel_size=3, padding="same", dilation=2, groups=3)])
def test_conv1d(rng, kw):
    t, n = _pair(tnn.Conv1d(3, 6, **kw), nn.Conv1d(3, 6, **kw))
    x = rng.standard_normal((2, 3, 17)).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


@pytest.mark.parametrize("kw", [
    dict(scale_factor=2), dict(scale_factor=2, mode="bilinear"),
    dict(scale_factor=2, mode="bilinear", align_corners=True), dict(size=(7, 5), mode="nearest"),
    dict(size=(9, 11), mode="bilinear"), dict(scale_factor=3, mode="nearest-exact"),
    dict(scale_factor=(2, 1.5), mode="bicubic"),
])
def test_upsample(rng, kw):
    """2-D; the 1-D and 3-D modes below."""
    t, n = tnn.Upsample(**kw), nn.Upsample(**kw)
    x = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


@pytest.mark.parametrize("shape,kw", [
    ((2, 3, 7), dict(scale_factor=2, mode="linear")), ((2, 3, 7), dict(size=5, mode="nearest")),
    ((1, 2, 3, 4, 2), dict(scale_factor=2, mode="trilinear", align_corners=True)),
])
def test_upsample_1d_3d(rng, shape, kw):
    t, n = tnn.Upsample(**kw), nn.Upsample(**kw)
    x = rng.standard_normal(shape).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


@pytest.mark.parametrize("padding_idx", [None, 1])
def test_embedding(rng, padding_idx):
    t, n = _pair(tnn.Embedding(10, 4, padding_idx=padding_idx), nn.Embedding(10, 4, padding_idx=padding_idx))
    idx = rng.integers(0, 10, (3, 5)).astype(np.int64)
    got = run_module(n, idx)
    np.testing.assert_array_equal(got, _torch(t, idx).numpy())


def test_embedding_from_pretrained(rng):
    table = rng.standard_normal((6, 3)).astype(np.float32)
    frozen, free = nn.Embedding.from_pretrained(table), nn.Embedding.from_pretrained(table, freeze=False)
    assert not frozen.weight.requires_grad and free.weight.requires_grad
    idx = np.array([[0, 5, 2]], np.int64)
    np.testing.assert_array_equal(run_module(frozen, idx), table[idx])


def test_embedding_padding_row_starts_at_zero():
    assert not nn.Embedding(5, 3, padding_idx=-1).weight.data[4].any()


@pytest.mark.parametrize("shape,kw", [((8,), {}), ((3, 8), dict(eps=1e-3)),
                                      ((8,), dict(elementwise_affine=False)), ((8,), dict(bias=False))])
def test_layer_norm(rng, shape, kw):
    t, n = _pair(tnn.LayerNorm(shape, **kw), nn.LayerNorm(shape, **kw))
    if t.weight is not None:          # non-trivial affine parameters
        n.load_state_dict({k: rng.standard_normal(v.shape).astype(np.float32)
                           for k, v in n.state_dict().items()})
        t.load_state_dict({k: torch.from_numpy(v) for k, v in n.state_dict().items()})
    x = rng.standard_normal((2, 5, 3, 8)).astype(np.float32) * 3 + 1
    assert_matches(run_module(n, x), _torch(t, x).numpy())


@pytest.mark.parametrize("groups,affine", [(2, True), (1, False), (6, True)])
def test_group_norm(rng, groups, affine):
    t, n = _pair(tnn.GroupNorm(groups, 6, affine=affine), nn.GroupNorm(groups, 6, affine=affine))
    x = rng.standard_normal((2, 6, 4, 5)).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


@pytest.mark.parametrize("kind,shape,kw", [
    ("BatchNorm1d", (4, 6), {}), ("BatchNorm1d", (4, 6, 5), dict(eps=1e-3)),
    ("BatchNorm1d", (4, 6, 5), dict(affine=False)),
    ("BatchNorm1d", (4, 6), dict(track_running_stats=False)),
    ("BatchNorm3d", (2, 6, 3, 4, 5), {}), ("BatchNorm2d", (2, 6, 4, 5), dict(affine=False)),
])
def test_batch_norm(rng, kind, shape, kw):
    t, n = getattr(tnn, kind)(6, **kw), getattr(nn, kind)(6, **kw)
    with torch.no_grad():
        if t.running_mean is not None:
            t.running_mean.uniform_(-1, 1), t.running_var.uniform_(0.5, 2)
        if t.weight is not None:
            t.weight.uniform_(0.5, 2), t.bias.uniform_(-1, 1)
    t, n = _pair(t, n)
    assert list(n.state_dict()) == list(t.state_dict())
    x = rng.standard_normal(shape).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


@pytest.mark.parametrize("make", [
    lambda m: m.GELU(), lambda m: m.GELU(approximate="tanh"), lambda m: m.SiLU(),
    lambda m: m.Softplus(), lambda m: m.Softplus(beta=2.0, threshold=3.0), lambda m: m.Mish(),
    lambda m: m.Hardswish(), lambda m: m.Hardsigmoid(), lambda m: m.PReLU(),
    lambda m: m.PReLU(num_parameters=3, init=0.1), lambda m: m.Identity(3, unused=0.5),
], ids=["gelu", "gelu_tanh", "silu", "softplus", "softplus_beta", "mish", "hardswish",
        "hardsigmoid", "prelu", "prelu_channels", "identity"])
def test_activations(rng, make):
    t, n = _pair(make(tnn), make(nn))
    x = (rng.standard_normal((2, 3, 4, 5)) * 4).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


def test_containers_and_unflatten(rng):
    def build(m):
        class Net(m.Module):
            def __init__(self):
                super().__init__()
                self.blocks = m.ModuleList([m.Linear(12, 12) for _ in range(2)])
                self.blocks.append(m.Linear(12, 6))
                self.heads = m.ModuleDict({"act": m.Tanh(), "proj": m.Linear(6, 6)})
                self.unflat = m.Unflatten(1, (2, 3))

            def forward(self, x):
                for block in self.blocks:
                    x = block(x)
                return self.unflat(self.heads["proj"](self.heads["act"](x)))
        return Net()
    torch.manual_seed(0)
    t, n = _pair(build(tnn), build(nn))
    assert list(n.state_dict()) == list(t.state_dict())
    assert len(n.blocks) == 3 and "act" in n.heads and list(n.heads) == ["act", "proj"]
    x = rng.standard_normal((4, 12)).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy())


def _mha_pair(rng, **kw):
    t = tnn.MultiheadAttention(**kw)
    n = nn.MultiheadAttention(**kw)
    for p in t.parameters():        # biases start at zero in torch: make them matter
        p.data.uniform_(-0.5, 0.5)
    return _pair(t, n)


@pytest.mark.parametrize("call", [
    dict(), dict(need_weights=False), dict(average_attn_weights=False),
    dict(attn_mask=np.triu(np.ones((5, 5), bool), 1)),
    dict(attn_mask=np.random.default_rng(1).standard_normal((5, 5)).astype(np.float32)),
    dict(key_padding_mask=np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], bool)),
], ids=["plain", "no_weights", "per_head", "bool_mask", "float_mask", "key_padding"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_self_attention(rng, call, batch_first):
    t, n = _mha_pair(rng, embed_dim=8, num_heads=2, batch_first=batch_first)
    assert list(n.state_dict()) == list(t.state_dict())
    shape = (2, 5, 8) if batch_first else (5, 2, 8)
    x = rng.standard_normal(shape).astype(np.float32)
    tcall = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in call.items()}
    with torch.no_grad():
        want_out, want_w = t(*[torch.from_numpy(x)] * 3, **tcall)
    got = run_module(calling(n, **call), x, x, x)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == (1 if want_w is None else 2)
    assert_matches(got[0], want_out.numpy(), 1e-4)
    if want_w is not None:
        assert_matches(got[1], want_w.numpy(), 1e-4)


@pytest.mark.parametrize("kdim", [None, 6])
def test_multihead_cross_attention(rng, kdim):
    t, n = _mha_pair(rng, embed_dim=8, num_heads=4, batch_first=True, kdim=kdim, vdim=kdim)
    q = rng.standard_normal((2, 3, 8)).astype(np.float32)
    kv = rng.standard_normal((2, 7, kdim or 8)).astype(np.float32)
    want = _torch(t, q, kv, kv)[0].numpy()
    assert list(n.state_dict()) == list(t.state_dict())
    assert_matches(run_module(calling(n, need_weights=False), q, kv, kv), want, 1e-4)


def _randomize(t):
    """Non-default parameters (LayerNorm starts at ones and zeros, attention biases at 0)."""
    with torch.no_grad():
        for p in t.parameters():
            p.uniform_(-0.5, 0.5) if p.ndim == 1 else p.mul_(1.5)
    return t


_CAUSAL = np.triu(np.ones((5, 5), bool), 1)


@pytest.mark.parametrize("kw,call", [
    (dict(), dict()),
    (dict(norm_first=True, activation="gelu"), dict(src_mask=_CAUSAL)),
    (dict(batch_first=False), dict(src_key_padding_mask=np.array([[0, 0, 0, 1, 1], [0] * 5], bool))),
    (dict(bias=False), dict(is_causal=True, src_mask=_CAUSAL)),
], ids=["post_norm", "pre_norm_gelu_causal", "seq_first_padding", "no_bias"])
def test_transformer_encoder_layer(rng, kw, call):
    kw = dict(dict(d_model=8, nhead=2, dim_feedforward=16, batch_first=True), **kw)
    t, n = _pair(_randomize(tnn.TransformerEncoderLayer(**kw)), nn.TransformerEncoderLayer(**kw))
    assert list(n.state_dict()) == list(t.state_dict())
    shape = (2, 5, 8) if kw["batch_first"] else (5, 2, 8)
    x = rng.standard_normal(shape).astype(np.float32)
    tcall = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in call.items()}
    with torch.no_grad():
        want = t(torch.from_numpy(x), **tcall).numpy()
    assert_matches(run_module(calling(n, **call), x), want, 1e-4)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_decoder_stack(rng, norm_first):
    def build(m):
        layer = m.TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True,
                                          norm_first=norm_first)
        return m.TransformerDecoder(layer, num_layers=2, norm=m.LayerNorm(8))
    torch.manual_seed(0)
    t, n = _pair(_randomize(build(tnn)), build(nn))
    assert list(n.state_dict()) == list(t.state_dict())
    tgt = rng.standard_normal((2, 4, 8)).astype(np.float32)
    memory = rng.standard_normal((2, 6, 8)).astype(np.float32)
    causal = np.triu(np.ones((4, 4), bool), 1)
    with torch.no_grad():
        want = t(torch.from_numpy(tgt), torch.from_numpy(memory), tgt_mask=torch.from_numpy(causal)).numpy()
    assert_matches(run_module(calling(n, tgt_mask=causal), tgt, memory), want, 1e-4)


def test_transformer_encoder_stack(rng):
    def build(m):
        return m.TransformerEncoder(m.TransformerEncoderLayer(8, 2, 16, batch_first=True), 3)
    torch.manual_seed(0)
    t, n = _pair(_randomize(build(tnn)), build(nn))
    assert list(n.state_dict()) == list(t.state_dict())
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    assert_matches(run_module(n, x), _torch(t, x).numpy(), 1e-4)


@pytest.mark.filterwarnings("ignore:Support for mismatched")
def test_attention_masks_as_graph_inputs(rng):
    """Masks traced as inputs (bool key padding, float attention mask), not constants."""
    t, n = _mha_pair(rng, embed_dim=8, num_heads=2, batch_first=True)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    padding = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], bool)
    additive = rng.standard_normal((5, 5)).astype(np.float32)

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = n

        def forward(self, x, padding, additive):
            return self.attn(x, x, x, key_padding_mask=padding, attn_mask=additive)[0]
    tx = torch.from_numpy(x)
    with torch.no_grad():
        want = t(tx, tx, tx, key_padding_mask=torch.from_numpy(padding),
                 attn_mask=torch.from_numpy(additive))[0].numpy()
    assert_matches(run_module(Masked(), x, padding, additive), want, 1e-4)


@pytest.mark.parametrize("make", [
    lambda m: m.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, bias=False),
    lambda m: m.Conv1d(3, 6, 3, padding="same", dilation=2, groups=3),
    lambda m: m.Upsample(scale_factor=2), lambda m: m.Upsample(size=(3, 4), mode="bilinear"),
    lambda m: m.GELU(approximate="tanh"), lambda m: m.Softplus(2.5, 3), lambda m: m.PReLU(3),
    lambda m: m.LayerNorm(4, bias=False), lambda m: m.GroupNorm(2, 4, affine=False),
    lambda m: m.Embedding(5, 3, padding_idx=0), lambda m: m.Unflatten(1, (2, 3)),
    lambda m: m.BatchNorm1d(6, affine=False, track_running_stats=False),
    lambda m: m.Sequential(m.BatchNorm3d(4, eps=1e-3), m.SiLU(), m.Mish(), m.Identity()),
    lambda m: m.TransformerEncoderLayer(8, 2, 16, batch_first=True, activation="gelu"),
])
def test_print_matches_torch(make):
    assert repr(make(nn)) == repr(make(tnn))
