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


# --- tensor methods and torch.* functions: the same code under torch and nutshell ----------

from torch_cases import check, compiled_run, inputs, reference_run, torch, torch_run  # noqa: E402
from torch_models import tiny_gpt  # noqa: E402,F401  (test_training_frontend imports it from here)

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (test extra)")

def in_place_chain(t, x, y):
    z = x.clone()
    z.add_(y)
    z.mul_(2)
    z += 1
    z -= y
    z.clamp_(-1, 1)
    z.masked_fill_(y > 0, 0.5)
    w = y.clone()
    w.zero_()
    return z, x, w, y.clone().fill_(3.0)


def set_items(t, x, y, s):
    z = x.clone()
    z[:, 0] = 0.0
    z[1] = y[0]
    z[..., 1:3] = s.reshape(3, 1)
    z[0, :, -1] = z[0, :, 0] * 2
    z[:, 1:, :2] += 1
    return z, x


TENSOR_CASES = [
    ("shape", lambda t, x: x.reshape(x.shape[0], -1) * x.size(1) + x.dim() + x.ndim + x.numel() + x.size()[2], "x"),
    ("view", lambda t, x: x.view(-1, 4).view(4, 6), "x"),
    ("permute", lambda t, x: x.permute(2, 0, 1).contiguous(), "x"),
    ("transpose", lambda t, x: x.transpose(0, 2).transpose(-1, -2), "x"),
    ("t", lambda t, w: w.t() @ w.T.t(), "w"),
    ("unsqueeze", lambda t, x: x.unsqueeze(1).unsqueeze(-1), "x"),
    ("squeeze", lambda t, x: (x[:, :1].squeeze(), x[:, :1].squeeze(1), x.squeeze(0)), "x"),
    ("flatten", lambda t, x: (x.flatten(), x.flatten(1), x.flatten(0, 1), t.flatten(x, 1, 2)), "x"),
    ("unflatten", lambda t, x: x.flatten(1).unflatten(1, (3, -1)), "x"),
    ("sum", lambda t, x: (x.sum(), x.sum(1), x.sum((0, 2), keepdim=True), x.sum(dim=-1)), "x"),
    ("mean", lambda t, x: (x.mean(), x.mean(1), x.mean([0, 2], keepdim=True)), "x"),
    ("amax", lambda t, x: (x.amax(), x.amax(1), x.amin(-1, keepdim=True)), "x"),
    ("max_dim", lambda t, x: (*x.max(1), *x.min(dim=-1, keepdim=True), x.max(), x.max(x * 0.5)), "x"),
    ("argmax", lambda t, x: (x.argmax(), x.argmax(1), x.argmin(-1, keepdim=True)), "x"),
    ("numpy_names", lambda t, x: (x.sum(axis=1), x.mean(axis=(0, 2), keepdims=True), x.amax(axis=-1),
                                  (x > 0).any(), (x > -3).all(), (x > 0).any(1), (x > 0).all(dim=-1, keepdim=True)), "x"),
    ("var_std", lambda t, x: (x.var(-1), x.std(1, keepdim=True), x.var(0, unbiased=False)), "x"),
    ("logsumexp", lambda t, x: (x * 50).logsumexp(-1), "x"),
    ("norm", lambda t, x: (x.norm(), x.norm(dim=-1), x.norm(p=1, dim=1)), "x"),
    ("clamp", lambda t, x: (x.clamp(-0.5, 0.5), x.clamp(min=0.1), x.clamp(max=0), x.clip(-1, 1)), "x"),
    ("clamp_tensor", lambda t, x, y: x.clamp(min=y), "x y"),
    ("unary", lambda t, x, p: (x.exp(), p.log(), p.sqrt(), x.abs(), x.tanh(), x.sigmoid(), x.relu(),
                               p.rsqrt(), x.neg(), x.floor(), x.ceil(), x.sign(), p.reciprocal(),
                               x.square(), p.log1p(), x.expm1(), x.erf()), "x pos"),
    ("softmax", lambda t, x: (x.softmax(-1), x.softmax(dim=1), x.log_softmax(0), x.log_softmax(-1)), "x"),
    ("masked_fill", lambda t, x, m: (x.masked_fill(m & (t.arange(4) > 0), float("-inf")).softmax(-1),
                                    x.masked_fill(m, 2)), "x mask"),
    ("where_method", lambda t, x, y: x.where(x > y, y), "x y"),
    ("casts", lambda t, x, i: (x.long(), i.float(), i.to(t.float32), x.to(t.int64), (x > 0).float(),
                               x.to(dtype=t.float32), i.int().long()), "x i"),
    ("expand", lambda t, s: (s.unsqueeze(0).expand(4, 3), s.reshape(3, 1).expand(-1, 5), s.expand(2, 3)), "s"),
    ("expand_as", lambda t, x, s: s.reshape(3, 1).expand_as(x), "x s"),
    ("repeat", lambda t, s, w: (s.repeat(2), s.repeat(2, 3), w.repeat(1, 2)), "s w"),
    ("chunk", lambda t, x, v: (*x.chunk(2, -1), *v.chunk(4), *x.chunk(3, 1)), "x v"),
    ("split", lambda t, x, v: (*x.split(3, -1), *v.split([1, 2, 3]), *x.split(1, 0)), "x v"),
    ("unbind", lambda t, x: x.unbind(1), "x"),
    ("matmul", lambda t, x, w, b: (x @ w, x.matmul(w), t.matmul(x, b), t.bmm(x, b), x[0].mm(w)), "x w b3"),
    ("index_int", lambda t, x: (x[0], x[1, 2], x[-1, :, -2], x[:, 0]), "x"),
    ("index_slice", lambda t, x: (x[:, 1:], x[..., ::2], x[:, ::-1 if False else 2, 1:3], x[-1:, :2, 3:]), "x"),
    ("index_none", lambda t, x: (x[None], x[:, None, 1], x[..., None], x[..., 0], x[0, ..., 1], x[None, ..., None]), "x"),
    ("index_tensor", lambda t, w, ids: (w[ids], w[:, t.tensor([0, 2, 4])], w[[1, 3]], w[-ids - 1]), "w ids"),
    ("index_tensors", lambda t, x, ids: (x[t.arange(2), ids[:, 0] % 3], x[t.arange(2)[:, None], :, ids],
                                         x[ids[:, :2] % 2, ids[:, 1:] % 3, :], x[ids % 2, :, ids], x[0, ids % 3, 1:3],
                                         x[None, ids % 2, 2, None], x[..., ids[0]], x[ids % 2, ...]), "x ids"),
    ("arith", lambda t, x, y: (x + y, x - y, x * y, x / y, x + 1, 2 - x, 3 * x, 1 / (x * x + 1), -x, x ** 2,
                               x.abs() ** 0.5, 2 ** x, x ** 3, x.abs() ** y, x // 0.3, x % 0.7, +x), "x y"),
    ("arith_int", lambda t, i: (i + 1, i * 2, i - i, i / 2, i * 0.5, i // 3, i % 3, -i, i ** 2), "i"),
    ("arith_mixed", lambda t, x, i: (x + i, i * x, x / i.clamp(min=1)), "x i"),
    ("method_arith", lambda t, x, y: (x.add(y), x.sub(y, alpha=2), x.mul(y), x.div(y), x.pow(2),
                                      x.maximum(y), x.minimum(y), x.div(0.3, rounding_mode="floor"),
                                      x.div(0.3, rounding_mode="trunc")), "x y"),
    ("compare", lambda t, x, y: (x < y, x > y, x <= y, x >= 0, x == y, x != y, x == 0.0,
                                 x.eq(y), x.ne(y), x.lt(0), x.gt(y), x.le(y), x.ge(y)), "x y"),
    ("logic", lambda t, x, y, m: ((x > 0) & m, (x > 0) | (y > 0), ~m, m & ~(x < y)), "x y mask"),
    ("triu_tril", lambda t, w: (w.triu(), w.tril(-1), t.triu(w, 1), t.tril(w)), "w"),
    ("gather_cumsum", lambda t, x, i: (x.gather(2, i.clamp(0, 3)), x.gather(1, i[:, :2].clamp(0, 2)), x.cumsum(1),
                                       i.cumsum(-1), x.flip(0, 2), x.flip(-1), x.narrow(2, 1, 2),
                                       x.index_select(1, t.tensor([2, 0]))), "x i"),
    ("in_place", in_place_chain, "x y"),
    ("setitem", set_items, "x y s"),
    ("new", lambda t, x: (x + x.new_zeros(4), x * x.new_ones((3, 4)), x + x.new_full((4,), 2.0)), "x"),
]

FUNCTION_CASES = [
    ("cat", lambda t, x, y: (t.cat([x, y]), t.cat((x, y, x), dim=-1), t.cat([x, y], 1)), "x y"),
    ("stack", lambda t, x, y: (t.stack([x, y]), t.stack((x, y), dim=-1), t.stack([x, y], 1)), "x y"),
    ("where", lambda t, x, y: (t.where(x > 0, x, y), t.where(x > y, x, 0.0), t.where(y < 0, 1.0, y)), "x y"),
    ("min_max", lambda t, x, y: (t.minimum(x, y), t.maximum(x, y), t.clamp(x, -0.1, 0.2),
                                 t.max(x, 1)[0], t.max(x, 1).indices, t.amax(x, 1), t.sum(x, 1), t.mean(x)), "x y"),
    ("unary_fn", lambda t, x, p: (t.exp(x), t.log(p), t.sqrt(p), t.abs(x), t.tanh(x), t.sigmoid(x), t.relu(x),
                                  t.softmax(x, 1), t.log_softmax(x, dim=-1), t.flatten(x)), "x pos"),
    ("constants", lambda t, x: (x + t.zeros(4), x * t.ones(3, 4), x + t.full((2, 1, 1), 3.0),
                                x + t.zeros_like(x), x * t.ones_like(x), x + t.arange(4),
                                x * t.arange(0.5, 2.5, 0.5), t.arange(3) * 2, x.masked_fill(
                                    t.triu(t.ones(3, 4), diagonal=1).bool(), 0.0), x + t.eye(3, 4),
                                x + t.tensor([1.0, 2.0, 3.0, 4.0]), t.full((2,), 7)), "x"),
    ("einsum", lambda t, x, w, b: (t.einsum("bij,jk->bik", x, w), t.einsum("bij,bjk->bik", x, b)), "x w b3"),
]

ALL_CASES = TENSOR_CASES + FUNCTION_CASES


@needs_torch
@pytest.mark.parametrize("name,fn,args", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_traced_code_matches_torch(name, fn, args):
    """Each case traced and run by the reference interpreter (fast, per case);
    float32, rtol 1e-5 / atol 1e-6 (exact for integer and bool results)."""
    data = inputs()
    arrays = [data[n] for n in args.split()]
    check(reference_run(fn, arrays), torch_run(fn, arrays), rtol=1e-5, atol=1e-6)


# --- nn.functional ---------------------------------------------------------------------------

def F(lib):
    return lib.nn.functional


ACTIVATIONS = ["relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "softplus", "mish", "hardswish",
               "hardsigmoid", "hardtanh", "softsign", "logsigmoid", "sigmoid", "tanh"]

FUNCTIONAL_CASES = [
    ("activations", lambda t, x: tuple(getattr(F(t), a)(x * 4) for a in ACTIVATIONS), "x"),
    ("activation_args", lambda t, x: (F(t).leaky_relu(x, 0.2), F(t).elu(x, alpha=0.5), F(t).gelu(x, approximate="tanh"),
                                      F(t).softplus(x * 8, beta=2, threshold=3), F(t).hardtanh(x, -0.5, 0.3)), "x"),
    ("prelu", lambda t, img, s: (F(t).prelu(img, s), F(t).prelu(img, s[:1])), "img s"),
    ("softmax", lambda t, x: (F(t).softmax(x, dim=-1), F(t).log_softmax(x, 1), F(t).softmin(x, 0)), "x"),
    ("linear", lambda t, x, w, b5, logits: (F(t).linear(x, w.T), F(t).linear(logits, w.T, b5), F(t).linear(x, w.T, b5)),
     "x w b5 logits"),
    ("conv2d", lambda t, img, k, kb, kd: (F(t).conv2d(img, k, kb), F(t).conv2d(img, k, None, 2, 1),
                                          F(t).conv2d(img, k, kb, padding="same", dilation=2),
                                          F(t).conv2d(img, kd, groups=3, padding=1)), "img k kb kd"),
    ("conv1d", lambda t, seq, k1: (F(t).conv1d(seq, k1), F(t).conv1d(seq, k1, stride=2, padding=1)), "seq k1"),
    ("conv_transpose2d", lambda t, img, kt: F(t).conv_transpose2d(img, kt, stride=2, padding=1, output_padding=1),
     "img kt"),
    ("pools", lambda t, img: (F(t).max_pool2d(img, 2), F(t).max_pool2d(img, 3, 2, 1), F(t).avg_pool2d(img, 2),
                              F(t).avg_pool2d(img, 3, 1, 1, count_include_pad=False), F(t).avg_pool2d(img, 3, 2, 1),
                              F(t).adaptive_avg_pool2d(img, 1), F(t).adaptive_avg_pool2d(img, (3, 2)),
                              F(t).adaptive_max_pool2d(img, 1)), "img"),
    ("dropout_eval", lambda t, x: (F(t).dropout(x, 0.3, training=False), F(t).dropout(x, 0.0)), "x"),
    ("embedding", lambda t, ids, w: (F(t).embedding(ids, w), F(t).one_hot(ids, 5)), "ids w"),
    ("norms", lambda t, x, w4, b5, img, s, s_pos: (
        F(t).layer_norm(x, (4,), w4, w4 * 0.5), F(t).layer_norm(x, (3, 4)), F(t).group_norm(img, 3, s, s_pos),
        F(t).group_norm(img, 1), F(t).batch_norm(img, s, s_pos, s_pos, s), F(t).batch_norm(img, s, s_pos, training=True),
        F(t).normalize(x, dim=-1), F(t).normalize(x, p=1, dim=1), F(t).cosine_similarity(x, x * 2 + 1, dim=-1),
        F(t).pairwise_distance(x[0], x[1])), "x w4 b5 img s s_pos"),
    ("interpolate", lambda t, img: (F(t).interpolate(img, scale_factor=2), F(t).interpolate(img, size=(9, 7)),
                                    F(t).interpolate(img, size=(4, 5)), F(t).interpolate(img, scale_factor=2, mode="bilinear"),
                                    F(t).interpolate(img, size=(9, 4), mode="bilinear", align_corners=True),
                                    F(t).interpolate(img, size=(4, 5), mode="bilinear", align_corners=False),
                                    F(t).interpolate(img, size=(9, 7), mode="nearest-exact")), "img"),
    ("pad", lambda t, img: (F(t).pad(img, (1, 2)), F(t).pad(img, (1, 1, 2, 0), value=3.0),
                            F(t).pad(img, (1, 2, 2, 1), mode="reflect"), F(t).pad(img, (2, 1, 0, 3), mode="replicate"),
                            F(t).pad(img, (1, 2, 2, 1), mode="circular")), "img"),

    ("attention", lambda t, x, mask: (F(t).scaled_dot_product_attention(x, x * 0.5, x + 1),
                                         F(t).scaled_dot_product_attention(x, x, x, is_causal=True),
                                         F(t).scaled_dot_product_attention(x, x, x, attn_mask=mask[0, :, :3] | t.eye(3).bool()),
                                         F(t).scaled_dot_product_attention(x, x, x, attn_mask=x[0, :, :3], scale=0.3)),
     "x mask"),
    ("pixel_shuffle", lambda t, img: (F(t).pixel_shuffle(img.repeat(1, 4, 1, 1), 2), F(t).pixel_unshuffle(img, 3),
                                      F(t).pixel_shuffle(F(t).pixel_unshuffle(img, 2), 2)), "img"),
]

LOSS_CASES = [
    ("cross_entropy", lambda t, z, y, w: (F(t).cross_entropy(z, y), F(t).cross_entropy(z, y, reduction="sum"),
                                          F(t).cross_entropy(z, y, reduction="none"), F(t).cross_entropy(z * 30, y),
                                          F(t).cross_entropy(z, y, weight=w), F(t).cross_entropy(z, y, label_smoothing=0.1),
                                          F(t).cross_entropy(z, y, weight=w, label_smoothing=0.2, reduction="none"),
                                          F(t).cross_entropy(z, y, weight=w, label_smoothing=0.2),
                                          F(t).cross_entropy(z, y, ignore_index=1)), "logits labels w4p"),
    ("cross_entropy_ignore", lambda t, z, y, w: (F(t).cross_entropy(z, y), F(t).cross_entropy(z, y, weight=w),
                                                 F(t).cross_entropy(z, y, label_smoothing=0.1, weight=w),
                                                 F(t).cross_entropy(z, y, reduction="none", label_smoothing=0.3)),
     "logits labels_ig w4p"),
    ("cross_entropy_nd", lambda t, z, y, w: (F(t).cross_entropy(z, y), F(t).cross_entropy(z, y, weight=w, label_smoothing=0.1),
                                             F(t).cross_entropy(z, y, reduction="none"),
                                             F(t).cross_entropy(z.transpose(1, 2).reshape(-1, 4), y.reshape(-1))),
     "seq_logits seq_labels w4p"),
    ("cross_entropy_probs", lambda t, z, p, w: (F(t).cross_entropy(z, p.softmax(-1)), F(t).cross_entropy(z, p, weight=w),
                                                F(t).cross_entropy(z, p.softmax(-1), label_smoothing=0.2, reduction="sum")),
     "logits prob w4p"),
    ("nll_loss", lambda t, z, y, yi, w: (F(t).nll_loss(F(t).log_softmax(z, 1), y), F(t).nll_loss(z.log_softmax(1), yi, weight=w),
                                         F(t).nll_loss(z.log_softmax(-1), y, reduction="none")), "logits labels labels_ig w4p"),
    ("regression", lambda t, x, y: (F(t).mse_loss(x, y), F(t).l1_loss(x, y, reduction="sum"), F(t).smooth_l1_loss(x, y),
                                    F(t).smooth_l1_loss(x, y, beta=0.5, reduction="none"), F(t).smooth_l1_loss(x, y, beta=0.0),
                                    F(t).huber_loss(x, y), F(t).huber_loss(x, y, delta=0.7, reduction="sum"),
                                    F(t).mse_loss(x, y, reduction="none")), "x y"),
    ("binary", lambda t, p, z, bits, w: (F(t).binary_cross_entropy(p, bits), F(t).binary_cross_entropy(p, bits, weight=w),
                                         F(t).binary_cross_entropy_with_logits(z * 40, bits),
                                         F(t).binary_cross_entropy_with_logits(z, bits, pos_weight=w, reduction="none"),
                                         F(t).binary_cross_entropy_with_logits(z, p, weight=w, pos_weight=w),
                                         F(t).soft_margin_loss(z, bits * 2 - 1)), "prob logits bits w4p"),
    ("kl_div", lambda t, z, p: (F(t).kl_div(z.log_softmax(-1), p.softmax(-1), reduction="batchmean"),
                                F(t).kl_div(z.log_softmax(-1), p.log(), reduction="sum", log_target=True)), "logits prob"),
]

F_CASES = FUNCTIONAL_CASES + LOSS_CASES


@needs_torch
@pytest.mark.parametrize("name,fn,args", F_CASES, ids=[c[0] for c in F_CASES])
def test_functional_matches_torch(name, fn, args):
    """float32 through the reference interpreter: rtol 1e-5 / atol 1e-5."""
    data = inputs()
    arrays = [data[n] for n in args.split()]
    check(reference_run(fn, arrays), torch_run(fn, arrays), rtol=1e-5, atol=1e-5)


@needs_torch
@pytest.mark.parametrize("name,fn,args", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_losses_match_torch_in_float64(name, fn, args):
    """The losses' formulas are torch's, not approximations of them: float64, rtol 1e-10."""
    data = inputs()
    arrays = [data[n].astype(np.float64) if data[n].dtype == np.float32 else data[n] for n in args.split()]
    check(reference_run(fn, arrays, float64=True), torch_run(fn, arrays), rtol=1e-10, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("table", ["tensor", "functions", "functional", "losses"])
def test_compiled_tables_match_torch(table):
    """A whole table compiled as one native model; rtol 1e-5 / atol 1e-5
    (compiled transcendental functions are polynomial approximations)."""
    cases = {"tensor": TENSOR_CASES, "functions": FUNCTION_CASES, "functional": FUNCTIONAL_CASES,
             "losses": LOSS_CASES}[table]
    data = inputs(1)
    got = compiled_run([(fn, args.split()) for _, fn, args in cases], data)
    expected = [v for _, fn, args in cases for v in torch_run(fn, [data[n] for n in args.split()])]
    check(got, expected, rtol=1e-5, atol=1e-5)
