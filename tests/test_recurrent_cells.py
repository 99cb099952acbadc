"""ops/lstm_cell.py and gru_cell.py compiled against their NumPy references: the
cells and their backward ops on row counts that run serially and split across
threads, both gate orders; bad shapes are ShapeErrors. (Gradients by finite
differences: test_gradients.CASES.)"""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder

TOL = dict(rtol=1e-5, atol=1e-6)     # float32 transcendental polynomials vs NumPy's


@pytest.mark.parametrize("batch,hidden,order", [(3, 5, "ifco"), (4, 37, "iofc"), (64, 256, "ifco")])
def test_cell_and_its_gradient_match_the_reference(batch, hidden, order, rng):
    b = GraphBuilder("cell", fold=False)
    gates = b.add_input("gates", "float32", (batch, 4 * hidden))
    ins = {n: b.add_input(n, "float32", (batch, hidden)) for n in ("c_prev", "dh", "dc")}
    h, c, acts = b.add_node("LSTMCell", [gates, ins["c_prev"]], {"order": order}, num_outputs=3)
    dgates, dc_prev = b.add_node("LSTMCellGrad", [ins["dh"], ins["dc"], acts, c, ins["c_prev"]],
                                 {"order": order}, num_outputs=2)
    b.set_outputs([h, c, acts, dgates, dc_prev])
    g = b.build()
    feeds = {v.name: (rng.standard_normal(v.type.shape) * 2).astype(np.float32) for v in g.inputs}
    want = ns.run_reference(g, feeds)
    for threads in (1, 2):
        got = ns.compile(g, threads=threads).run(feeds)
        for name in (h, c, acts, dgates, dc_prev):
            np.testing.assert_allclose(got[name], want[name], **TOL, err_msg=name)


@pytest.mark.parametrize("batch,hidden,order", [(3, 5, "zrh"), (4, 37, "rzh"), (64, 384, "rzh")])
def test_gru_cell_and_its_gradient_match_the_reference(batch, hidden, order, rng):
    b = GraphBuilder("gru", fold=False)
    gx, gh = (b.add_input(n, "float32", (batch, 3 * hidden)) for n in ("gx", "gh"))
    h, dy = (b.add_input(n, "float32", (batch, hidden)) for n in ("h", "dy"))
    h_new, acts = b.add_node("GRUCell", [gx, gh, h], {"order": order}, num_outputs=2)
    grads = b.add_node("GRUCellGrad", [dy, acts, gh, h], {"order": order}, num_outputs=3)
    b.set_outputs([h_new, acts, *grads])
    g = b.build()
    feeds = {v.name: (rng.standard_normal(v.type.shape) * 2).astype(np.float32) for v in g.inputs}
    want = ns.run_reference(g, feeds)
    for threads in (1, 2):
        got = ns.compile(g, threads=threads).run(feeds)
        for name in (h_new, acts, *grads):
            np.testing.assert_allclose(got[name], want[name], **TOL, err_msg=name)


@pytest.mark.parametrize("gates,c_prev,order", [((3, 10), (3, 2), "ifco"), ((3, 8), (2, 2), "ifco"),
                                                ((3, 8), (3, 2), "ifcx"), ((3, 8), (3, 2), "ifc")])
def test_bad_shapes_and_orders(gates, c_prev, order):
    b = GraphBuilder("bad", fold=False)
    x, c = b.add_input("x", "float32", gates), b.add_input("c", "float32", c_prev)
    with pytest.raises(ns.ShapeError, match="LSTMCell"):
        b.add_node("LSTMCell", [x, c], {"order": order}, num_outputs=3)


def test_gru_cell_bad_shapes():
    b = GraphBuilder("bad", fold=False)
    gx, gh, h = (b.add_input(n, "float32", s) for n, s in (("gx", (3, 9)), ("gh", (3, 6)), ("h", (3, 3))))
    with pytest.raises(ns.ShapeError, match="GRUCell"):
        b.add_node("GRUCell", [gx, gh, h], {"order": "zrh"}, num_outputs=2)


@pytest.mark.parametrize("k,n,kc,panel", [(130, 70, 64, 32), (128, 512, 128, 32), (5, 3, 8, 16)])
def test_pack_panels_and_packed_gemm_with_bias(k, n, kc, panel, rng):
    """PackPanels' layout is prepack()'s; MatMulPacked over it, with a bias C, is a @ b + c."""
    b = GraphBuilder("pack", fold=False)
    a, w = b.add_input("a", "float32", (9, k)), b.add_input("w", "float32", (k, n))
    c = b.add_input("c", "float32", (9, n))
    panels = b.add_node("PackPanels", [w], {"kc": kc, "panel": panel})
    y = b.add_node("MatMulPacked", [a, panels, c], {"n": n})
    b.set_outputs([panels, y])
    g = b.build()
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs}
    got = ns.compile(g).run(feeds)
    want = np.zeros((-(-k // kc) * kc, -(-n // panel) * panel), np.float32)
    want[:k, :n] = feeds["w"]
    np.testing.assert_array_equal(got[panels], want.reshape(-1, kc, want.shape[1] // panel, panel).transpose(0, 2, 1, 3))
    np.testing.assert_allclose(got[y], feeds["a"] @ feeds["w"] + feeds["c"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("constant", [False, True])
def test_a_weight_read_by_several_gemms_is_packed_once(constant, rng):
    """passes/recurrent.py's pack_shared_weights: one PackPanels (a constant: packed at
    compile time), the GEMMs MatMulPacked (bias kept), results as the reference's and
    the same bits at 1 and 2 threads."""
    b = GraphBuilder("shared", fold=False)
    w = b.add_constant((rng.standard_normal((128, 256)) / 8).astype(np.float32), "w") if constant else \
        b.add_input("w", "float32", (128, 256))
    h = b.add_input("h", "float32", (32, 128))
    for step in range(3):
        y = b.add_node("Gemm", [h, w, b.add_input(f"x{step}", "float32", (32, 256))])
        h = b.add_node("Mul", [y, b.add_input(f"s{step}", "float32", (32, 256))])   # not an epilogue
        h = b.add_node("Slice", [h, b.add_constant(np.array([0])), b.add_constant(np.array([128])),
                                 b.add_constant(np.array([1]))])
    b.set_outputs([h])
    g = b.build()
    ops = [n.op for n in ns.optimize_graph(g).nodes]
    assert ops.count("PackPanels") == (0 if constant else 1) and ops.count("MatMulPacked") == 3 and "Gemm" not in ops
    feeds = {v.name: (rng.standard_normal(v.type.shape) / 8).astype(np.float32) for v in g.inputs}
    one, two = (ns.compile(g, threads=t).run(feeds)[h] for t in (1, 2))
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, ns.run_reference(g, feeds)[h], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps,batch,hidden,reverse,given", [
    (3, 2, 5, 0, ()), (3, 2, 5, 1, ("dy",)), (1, 8, 37, 0, ("dh", "dc")), (1, 8, 37, 1, ("dy", "dh", "dc")),
    (4, 32, 128, 0, ("dy", "dh")), (4, 32, 128, 1, ("dy", "dh", "dc")), (5, 12, 20, 0, ("dc",)),
    (3, 11, 20, 1, ("dy", "dc")),      # 11 rows: threads of 6 and 5
    (12, 32, 16, 0, ("dy", "dh", "x")), (20, 7, 6, 1, ("dy", "x"))])   # dW's k (384, 140 rows) in blocks and a rest
def test_lstm_sequence_and_its_gradient_match_the_reference(steps, batch, hidden, reverse, given, rng):
    """ops/lstm_sequence.py: forward and backward over the whole sequence against the
    references, the same bits at 1 and 2 threads (rows split between threads, evenly
    or not)."""
    b = GraphBuilder("sequence", fold=False)
    ins = {n: b.add_input(n, "float32", s) for n, s in (
        ("xp", (steps * batch, 4 * hidden)), ("r_t", (hidden, 4 * hidden)), ("h0", (batch, hidden)),
        ("c0", (batch, hidden)), ("r", (4 * hidden, hidden)), ("bias", (4 * hidden,)))}
    attrs = {"order": "ifco" if hidden % 2 else "iofc", "reverse": reverse}
    biased = ["bias"] if steps % 2 else []
    outs = b.add_node("LSTMSequence", [ins[n] for n in ["xp", "r_t", "h0", "c0"] + biased], attrs, num_outputs=5)
    shapes = {"dy": (steps * batch, hidden), "dh": (batch, hidden), "dc": (batch, hidden)}
    seeds = [b.add_input(n, "float32", shapes[n]) if n in given else "" for n in ("dy", "dh", "dc")]
    x = [b.add_input("x", "float32", (steps * batch, 5))] if "x" in given else []   # dgates^T x too
    grads = b.add_node("LSTMSequenceGrad", [outs[4], outs[3], ins["c0"], ins["r"]] + seeds + [outs[0], ins["h0"]] + x,
                       attrs, num_outputs=5 + len(x))
    b.set_outputs(list(outs) + list(grads))
    g = b.build()
    feeds = {v.name: (rng.standard_normal(v.type.shape) * (0.3 if v.name.startswith("r") else 1)).astype(np.float32)
             for v in g.inputs}
    want = ns.run_reference(g, feeds)
    one, two = (ns.compile(g, threads=t).run(feeds) for t in (1, 2))
    for name in list(outs) + list(grads):
        np.testing.assert_allclose(one[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


@pytest.mark.parametrize("shapes,attrs", [
    ([(6, 12), (3, 12), (2, 3), (2, 3)], {"order": "ifcx"}),          # not the four gates
    ([(6, 12), (3, 12), (4, 3), (4, 3)], {"order": "ifco"}),          # rows not steps x batch
    ([(6, 12), (12, 3), (2, 3), (2, 3)], {"order": "ifco"}),          # W_hh not transposed
    ([(6, 12), (3, 12), (2, 3), (2, 3), (3,)], {"order": "ifco"}),    # bias not 4 x hidden
    ([(6, 12), (3, 12), (2, 3), (2, 3)], {"order": "ifco", "reverse": 2})])
def test_lstm_sequence_bad_inputs(shapes, attrs):
    b = GraphBuilder("bad", fold=False)
    ins = [b.add_input(f"x{i}", "float32", s) for i, s in enumerate(shapes)]
    with pytest.raises(ns.ShapeError, match="LSTMSequence"):
        b.add_node("LSTMSequence", ins, attrs, num_outputs=5)


class _BidirectionalNet(ns.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.head = ns.nn.LSTM(3, 8, bidirectional=True), ns.nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def test_an_lstm_input_weight_gradient_is_computed_by_its_sequence_gradient():
    """passes/recurrent.py's fold_input_weight_gradients: the Gemm(dgates, x, transA)
    of W_ih's gradient becomes LSTMSequenceGrad's sixth output (both directions)."""
    from nutshell.api import optimize_graph
    from nutshell.training import Recipe, as_optimizer, build_training_graph

    ns.manual_seed(0)
    recipe = Recipe(_BidirectionalNet(), (5, 8, 3), None, None, "mse", {})
    g = optimize_graph(build_training_graph(recipe, as_optimizer(ns.optim.Adam(lr=1e-2)))[0], verify_each=True)
    grads = [n for n in g.nodes if n.op == "LSTMSequenceGrad"]
    assert len(grads) == 2 and all(len(n.inputs) == 10 and len(n.outputs) == 6 for n in grads)
    dgates = {n.outputs[0] for n in grads}
    assert not [n for n in g.nodes if n.op == "Gemm" and n.inputs[0] in dgates]


def test_lstm_training_steps_same_bits_at_any_thread_count_and_as_per_step(monkeypatch):
    """nn.LSTM (both directions) trained through LSTMSequence: the parameters after two
    steps are the same bits at 1 and 2 threads (8 rows: two threads of 4), and equal
    the per-step expansion's (LSTMCell, as masked sequences take) to float32 rounding."""
    from nutshell.compiler.passes import recurrent

    def train(threads):
        ns.manual_seed(0)
        net = _BidirectionalNet()
        trainer = ns.compile_training(net, (5, 8, 3), loss="mse", optimizer=ns.optim.Adam(lr=1e-2), threads=threads)
        rng = np.random.default_rng(0)
        for _ in range(2):
            trainer.step(rng.standard_normal((5, 8, 3)).astype(np.float32),
                         rng.standard_normal((5, 8, 2)).astype(np.float32))
        return {k: np.array(v) for k, v in net.state_dict().items()}

    one, two = train(1), train(2)
    ns.manual_seed(0)
    initial = _BidirectionalNet().state_dict()["lstm.weight_hh_l0"]
    assert not np.allclose(initial, one["lstm.weight_hh_l0"])    # it trained
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    monkeypatch.setattr(recurrent, "WHOLE_SEQUENCE", False)
    per_step = train(1)
    for name in one:
        np.testing.assert_allclose(one[name], per_step[name], rtol=1e-5, atol=1e-6, err_msg=name)
