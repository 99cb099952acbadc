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

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (test extra)")

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
    ("index_tensor", lambda t, w, ids: (w[ids], w[:, t.tensor([0, 2, 4])], w[[1, 3]]), "w ids"),
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


@needs_torch
@pytest.mark.parametrize("table", ["tensor", "functions"])
def test_compiled_tables_match_torch(table):
    """A whole table compiled as one native model; rtol 1e-5 / atol 1e-5
    (compiled transcendental functions are polynomial approximations)."""
    cases = TENSOR_CASES if table == "tensor" else FUNCTION_CASES
    data = inputs(1)
    got = compiled_run([(fn, args.split()) for _, fn, args in cases], data)
    expected = [v for _, fn, args in cases for v in torch_run(fn, [data[n] for n in args.split()])]
    check(got, expected, rtol=1e-5, atol=1e-5)
