"""Recurrent cells and Trilu: the registry's NumPy references against onnx's own
conformance outputs, the primitive expansion (compiled) against the references
over the attribute matrix, bad attributes, and (with torch) nn.LSTM / nn.GRU
against PyTorch's layers and torch.onnx.export'ed models against onnxruntime.
onnx's conformance cases themselves run in test_onnx_conformance.py.

Tolerances: float32 compiled results within rtol 1e-4 / atol 1e-5 of the
float64-accumulated reference (a few dozen multiply-adds per value)."""
import warnings

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.ops import get_op
from nutshell.compiler.passes.expand import expand_composites

RTOL, ATOL = 1e-4, 1e-5


def _conformance_cases(ops):
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases(None) if c.model is not None and
                c.model.graph.node[0].op_type in ops and "expanded" not in c.name]


@pytest.mark.parametrize("case", _conformance_cases({"LSTM", "GRU", "RNN", "Trilu"}), ids=lambda c: c.name)
def test_reference_matches_onnx(case):
    """The registry's reference reproduces onnx's expected outputs."""
    from onnx import helper
    node = case.model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    op = get_op(node.op_type)
    full = op.normalize_attrs(attrs, len([i for i in node.input if i]))
    by_name = {vi.name: a for vi, a in zip(case.model.graph.input, case.data_sets[0][0])}
    args = [by_name.get(i) for i in node.input]
    got = op.reference(full, *args)
    got = got if isinstance(got, tuple) else (got,)
    wanted = [g for g, out in zip(got, node.output) if out]
    for g, e in zip(wanted, case.data_sets[0][1]):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def _cell_graph(op, attrs, seq=4, batch=3, size=5, hidden=4, num_dir=1, state=True, peep=False,
                seq_lens=False):
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    layout = attrs.get("layout", 0)
    b = GraphBuilder(f"test_{op.lower()}")
    x_shape = (batch, seq, size) if layout else (seq, batch, size)
    st_shape = (batch, num_dir, hidden) if layout else (num_dir, batch, hidden)
    names = [b.add_input("X", "float32", x_shape),
             b.add_input("W", "float32", (num_dir, gates * hidden, size)),
             b.add_input("R", "float32", (num_dir, gates * hidden, hidden)),
             b.add_input("B", "float32", (num_dir, 2 * gates * hidden)),
             b.add_input("L", "int32", (batch,)) if seq_lens else "",
             b.add_input("H0", "float32", st_shape) if state else ""]
    if op == "LSTM":
        names += [b.add_input("C0", "float32", st_shape) if state else "",
                  b.add_input("P", "float32", (num_dir, 3 * hidden)) if peep else ""]
    outs = b.add_node(op, names, dict(attrs, hidden_size=hidden), num_outputs=3 if op == "LSTM" else 2)
    b.set_outputs(list(outs))
    return b.build()


MATRIX = [
    ("LSTM", {}, {}), ("LSTM", {"direction": "bidirectional"}, {"peep": True}),
    ("LSTM", {"direction": "reverse", "layout": 1, "input_forget": 1, "clip": 0.7}, {}),
    ("LSTM", {"activations": ("HardSigmoid", "Affine", "ScaledTanh"), "activation_alpha": (0.3, 0.5, 1.5),
              "activation_beta": (0.4, 0.1, 0.8)}, {"state": False}),
    ("LSTM", {"direction": "bidirectional", "layout": 1}, {"seq_lens": True}),
    ("GRU", {}, {}), ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}, {}),
    ("GRU", {"layout": 1, "activations": ("Sigmoid", "Relu", "LeakyRelu", "Softsign"),
             "direction": "bidirectional"}, {"state": False}),
    ("GRU", {"linear_before_reset": 1, "direction": "reverse"}, {"seq_lens": True}),
    ("RNN", {"direction": "bidirectional", "clip": 1.0}, {}), ("RNN", {"activations": ("Relu",)}, {}),
]


@pytest.mark.parametrize("op,attrs,shape", MATRIX, ids=[f"{m[0]}-{i}" for i, m in enumerate(MATRIX)])
def test_expansion_matches_reference(op, attrs, shape, rng):
    """A cell node (left for the pass) compiled as primitives equals the reference."""
    graph = _cell_graph(op, attrs, num_dir=2 if attrs.get("direction") == "bidirectional" else 1, **shape)
    assert not any(n.op == op for n in expand_composites(graph).nodes)
    feeds = {v.name: rng.uniform(-1, 1, v.type.shape).astype(np.float32) for v in graph.inputs}
    if "L" in feeds:
        feeds["L"] = np.array([4, 1, 2], np.int32)
    model = ns.compile(graph, threads=1)
    got = model.run(feeds)
    node = graph.nodes[0]
    want = get_op(op).reference(node.attrs, *[feeds.get(i) if i else None for i in node.inputs])
    for out, w in zip(node.outputs, want):
        np.testing.assert_allclose(got[out], w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("attrs,detail", [
    ({"activations": ("Sigmoid", "Gelu", "Tanh")}, "activations"),
    ({"direction": "sideways"}, "direction"),
    ({"layout": 2}, "layout"),
])
def test_unsupported_attributes(attrs, detail):
    with pytest.raises(ns.UnsupportedOpError, match=f"LSTM.*{detail}"):
        _cell_graph("LSTM", attrs)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_sequence_lens_match_onnxruntime(op, rng):
    """Shorter sequences in both directions (the reverse pass starts at each one's
    end): outputs zero past the end, states from the last valid step, as ORT."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto as TP
    from onnx import helper
    T, B, I, H, G = 5, 3, 4, 3, {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    specs = [("X", TP.FLOAT, (T, B, I)), ("W", TP.FLOAT, (2, G * H, I)), ("R", TP.FLOAT, (2, G * H, H)),
             ("B", TP.FLOAT, (2, 2 * G * H)), ("L", TP.INT32, (B,)), ("H0", TP.FLOAT, (2, B, H))]
    outs = ["Y", "Yh"] + (["Yc"] if op == "LSTM" else [])
    node = helper.make_node(op, [s[0] for s in specs], outs, hidden_size=H, direction="bidirectional")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(*s) for s in specs],
                              [helper.make_tensor_value_info(o, TP.FLOAT, [None]) for o in outs])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString()
    feeds = {n: rng.uniform(-1, 1, shape).astype(np.float32) for n, t, shape in specs if t == TP.FLOAT}
    feeds["L"] = np.array([5, 1, 3], np.int32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ns.compile(ns.load_onnx(data), threads=1).run(feeds)
    for out, w in zip(outs, want):
        np.testing.assert_allclose(got[out], w, rtol=RTOL, atol=ATOL)


def test_bad_shapes():
    b = GraphBuilder("bad")
    x = b.add_input("X", "float32", (4, 3, 5))
    w = b.add_input("W", "float32", (1, 16, 6))
    r = b.add_input("R", "float32", (1, 16, 4))
    with pytest.raises(ns.ShapeError, match="W"):
        b.add_node("LSTM", [x, w, r], {"hidden_size": 4})


def test_sequence_lengths_out_of_range():
    """Steps are unrolled: a hostile length is refused, not compiled for hours."""
    with pytest.raises(ns.UnsupportedOpError, match="unrolled"):
        _cell_graph("GRU", {}, seq=100_000, batch=1, size=1, hidden=1)
    with pytest.raises(ns.ShapeError, match="one time step"):
        _cell_graph("RNN", {}, seq=0)
    with pytest.raises(ns.UnsupportedOpError, match="unrolled"):
        ns.nn.LSTM(2, 2).trace((5000, 1, 2))


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 2])
def test_trilu_node(upper, k, rng):
    b = GraphBuilder("trilu")
    x = b.add_input("x", "float32", (2, 4, 6))
    inputs = [x] + ([b.add_input("k", "int64", ())] if k is not None else [])
    b.set_outputs([b.add_node("Trilu", inputs, {"upper": upper})])
    graph = b.build()
    feeds = {"x": rng.standard_normal((2, 4, 6)).astype(np.float32)}
    if k is not None:
        feeds["k"] = np.array(k, np.int64)
    want = (np.triu if upper else np.tril)(feeds["x"], k or 0)
    np.testing.assert_array_equal(ns.compile(graph, threads=1).run(feeds)[graph.output_names()[0]], want)


# ----- PyTorch's layers and exporter -----

class _Flat(ns.nn.Module):
    """(output, state) flattened into a tuple of outputs, for tracing."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        out, state = self.rnn(x)
        return (out,) + (state if isinstance(state, tuple) else (state,))


def _torch():
    return pytest.importorskip("torch", reason="torch compares nn.LSTM/GRU with PyTorch's")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layers_match_torch(kind, batch_first):
    """2 layers, bidirectional: same state_dict keys and order, same outputs and states."""
    torch = _torch()
    torch.manual_seed(0)
    t = getattr(torch.nn, kind)(5, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    m = getattr(ns.nn, kind)(5, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    assert list(m.state_dict()) == list(t.state_dict())
    assert m.num_parameters() == sum(p.numel() for p in t.parameters())
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    shape = (3, 4, 5) if batch_first else (4, 3, 5)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = list(ns.compile(_Flat(m), input_shape=shape, threads=1).run({"input": x}).values())
    with torch.no_grad():
        out, state = t(torch.from_numpy(x))
    for g, w in zip(got, (out,) + (state if isinstance(state, tuple) else (state,))):
        np.testing.assert_allclose(g, w.numpy(), rtol=RTOL, atol=ATOL)


def test_lstm_with_initial_state_unbatched():
    """A given (h_0, c_0) and an unbatched [T, I] input, as PyTorch takes them."""
    torch = _torch()
    t = torch.nn.LSTM(3, 2, num_layers=2)
    m = ns.nn.LSTM(3, 2, num_layers=2)
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    rng = np.random.default_rng(1)
    x, h0, c0 = (rng.standard_normal(s).astype(np.float32) for s in ((5, 3), (2, 2), (2, 2)))

    class WithState(ns.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = m

        def forward(self, x):
            b = x.builder
            h, c = (ns.nn.constant(b, v) for v in (h0, c0))
            out, (hn, cn) = self.lstm(x, (h, c))
            return out, hn, cn

    got = list(ns.compile(WithState(), input_shape=x.shape, threads=1).run({"input": x}).values())
    with torch.no_grad():
        out, (hn, cn) = t(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    for g, w in zip(got, (out, hn, cn)):
        np.testing.assert_allclose(g, w.numpy(), rtol=RTOL, atol=ATOL)


def _export_and_compare(model, x):
    """torch.onnx.export (opset 17) -> ns.load_onnx, against onnxruntime on the same file."""
    import io
    torch = _torch()
    ort = pytest.importorskip("onnxruntime")
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.from_numpy(x),), f, opset_version=17, dynamo=False,
                          input_names=["x"])
    data = f.getvalue()
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ns.compile(ns.load_onnx(data), threads=1).run({"x": x})
    assert len(got) == len(want)
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    return data


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_export_matches_onnxruntime(kind):
    torch = _torch()
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(5, 4, num_layers=2, bidirectional=True, batch_first=True)

        def forward(self, x):
            out, state = self.rnn(x)
            return (out,) + (state if isinstance(state, tuple) else (state,))

    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    _export_and_compare(Net(), x)


def test_torch_transformer_with_triu_mask_matches_onnxruntime():
    import onnx
    torch = _torch()
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tr = torch.nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                           dim_feedforward=32, dropout=0.0, batch_first=True)

        def forward(self, x):
            causal = torch.triu(torch.full((x.shape[1], x.shape[1]), float("-inf")), diagonal=1)
            return self.tr(x, x, tgt_mask=causal)

    x = np.random.default_rng(0).standard_normal((2, 7, 16)).astype(np.float32)
    data = _export_and_compare(Net(), x)
    assert "Trilu" in {n.op_type for n in onnx.load_from_string(data).graph.node}


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_three_training_steps_match_torch(kind):
    """2 layers, bidirectional, batch_first, a Linear head, mse, SGD with momentum:
    parameters after 3 steps equal PyTorch's float64 run to rtol 2e-3 / atol 1e-5
    (test_training_parity.py's tolerance)."""
    torch = _torch()
    torch.manual_seed(0)

    def build(m, dtype=None):
        class Net(m.Module):
            def __init__(self):
                super().__init__()
                self.rnn = getattr(m, kind)(3, 4, num_layers=2, bidirectional=True, batch_first=True)
                self.head = m.Linear(8, 2)

            def forward(self, x):
                return self.head(self.rnn(x)[0])
        return Net()

    ours, theirs = build(ns.nn), build(torch.nn)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    exact = theirs.double()
    shape = (2, 3, 3)
    trainer = ns.compile_training(ours, shape, loss="mse", optimizer=ns.optim.SGD(lr=0.1, momentum=0.9),
                                  threads=1)
    opt = torch.optim.SGD(exact.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.standard_normal((2, 3, 2)).astype(np.float32)
        loss = trainer.step(x, y)
        opt.zero_grad()
        tloss = torch.nn.functional.mse_loss(exact(torch.from_numpy(x).double()), torch.from_numpy(y).double())
        tloss.backward()
        opt.step()
        assert abs(loss - tloss.item()) <= 2e-3 * abs(tloss.item()) + 1e-5
    got = ours.state_dict()
    for name, want in exact.state_dict().items():
        np.testing.assert_allclose(got[name], want.numpy(), rtol=2e-3, atol=1e-5, err_msg=name)
