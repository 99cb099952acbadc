"""The fused training-mode BatchNorm ops (compiler/ops/batchnorm_train.py):
compiled kernels against the NumPy reference (rtol 1e-4, atol 1e-5 scaled to the
output's magnitude: float32 sums of up to 32768 terms), bit-identical results at
any thread count, the gradient rule against float64 finite differences, the
float64 references against torch's batch_norm and its autograd (rtol 1e-10), and
the front end's use of them."""
import numpy as np
import pytest

import nutshell as ns
from conftest import assert_close
from nutshell.compiler.ir import GraphBuilder
from test_gradients import check_vjp

RTOL, ATOL = 1e-4, 1e-5
SHAPES = [(4, 8, 5, 7), (2, 3, 16, 16), (3, 5), (2, 4, 3), (8, 16, 4, 4), (1, 2, 2, 2, 3)]


def _graph(op, shapes, dtype="float32", **attrs):
    b = GraphBuilder(op.lower())
    names = [b.add_input(f"x{i}", dtype, s) for i, s in enumerate(shapes)]
    b.set_outputs(list(b.add_node(op, names, {"epsilon": 1e-5, **attrs}, num_outputs=3)))
    return b.build()


def _forward_case(shape, rng, dtype=np.float32, relu=0, residual=False):
    c = shape[1]
    graph = _graph("BatchNormTrain", [shape, (c,), (c,)] + [shape] * residual, np.dtype(dtype).name, relu=relu)
    feeds = {"x0": rng.normal(3.0, 2.0, shape), "x1": rng.uniform(0.5, 1.5, c), "x2": rng.normal(size=c)}
    if residual:
        feeds["x3"] = rng.normal(size=shape)
    return graph, {k: v.astype(dtype) for k, v in feeds.items()}


def _backward_case(shape, rng, dtype=np.float32, relu=0):
    c = shape[1]
    graph = _graph("BatchNormTrainGrad", [shape, shape] + [(c,)] * (3 + relu), np.dtype(dtype).name, relu=relu)
    x = rng.normal(3.0, 2.0, shape)
    axes = (0,) + tuple(range(2, len(shape)))
    feeds = {"x0": x, "x1": rng.normal(size=shape), "x2": rng.uniform(0.5, 1.5, c),
             "x3": x.mean(axis=axes), "x4": x.var(axis=axes)}
    if relu:                  # the forward's bias: about half the values masked
        feeds["x5"] = rng.normal(scale=0.5, size=c)
    return graph, {k: v.astype(dtype) for k, v in feeds.items()}


_forward_relu = lambda shape, rng: _forward_case(shape, rng, relu=1)
_forward_residual = lambda shape, rng: _forward_case(shape, rng, relu=1, residual=True)
_backward_relu = lambda shape, rng: _backward_case(shape, rng, relu=1)


@pytest.mark.parametrize("case", [_forward_case, _forward_relu, _forward_residual, _backward_case, _backward_relu],
                         ids=["forward", "forward_relu", "forward_residual", "backward", "backward_relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_matches_reference(case, shape, threads, rng):
    graph, feeds = case(shape, rng)
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=threads).run(feeds)
    for name in want:
        assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype
        assert_close(got[name], want[name], RTOL, ATOL)


@pytest.mark.parametrize("case", [_forward_residual, _backward_case, _backward_relu],
                         ids=["forward", "backward", "backward_relu"])
@pytest.mark.parametrize("vector_cap", [256, 32], ids=["avx2", "scalar"])
def test_narrow_isa_matches_reference(case, vector_cap, rng):
    """Narrower vectors split a row's sum into other parts: the same results."""
    graph, feeds = case((3, 5, 8, 12), rng)
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=2, vector_cap=vector_cap).run(feeds)
    for name in want:
        assert_close(got[name], want[name], RTOL, ATOL)


@pytest.mark.parametrize("case", [_forward_case, _backward_case, _backward_relu],
                         ids=["forward", "backward", "backward_relu"])
def test_bit_identical_at_any_thread_count(case, rng):
    """Each row and each channel is summed by one thread in a fixed order."""
    graph, feeds = case((8, 24, 12, 12), rng)
    runs = [ns.compile(graph, threads=t).run(feeds) for t in (1, 2, 3)]
    for other in runs[1:]:
        for name in runs[0]:
            np.testing.assert_array_equal(other[name], runs[0][name])


def test_statistics_keep_precision_far_from_zero(rng):
    """Row sums, each row's squared deviations from its own mean, combined exactly:
    a mean of 1e4 with unit spread keeps the variance to float32 accuracy."""
    graph, feeds = _forward_case((4, 3, 16, 16), rng)
    feeds["x0"] = (1e4 + rng.standard_normal((4, 3, 16, 16))).astype(np.float32)
    got = ns.compile(graph, threads=1).run(feeds)
    want = ns.run_reference(graph, feeds)
    y, mean, var = graph.outputs
    np.testing.assert_allclose(got[var.name], want[var.name], rtol=1e-3)
    assert_close(got[y.name], want[y.name], 1e-3, 1e-3)


GRAD_CASES = [((2, 3, 4, 5), (0,), 0, False), ((3, 2, 3), (0, 1, 2), 0, False), ((4, 3), (0, 2), 0, False),
              ((2, 3, 4, 5), (0,), 1, False), ((2, 3, 4, 5), (0, 1), 1, True)]


@pytest.mark.parametrize("shape,use,relu,residual", GRAD_CASES, ids=str)
def test_gradient_matches_finite_differences(shape, use, relu, residual, rng):
    """The loss reads y (and the batch mean and variance where `use` says)."""
    c = shape[1]
    b = GraphBuilder("bn_grad")
    names = [b.add_input(f"x{i}", "float64", s) for i, s in enumerate([shape, (c,), (c,)] + [shape] * residual)]
    ys = b.add_node("BatchNormTrain", names, {"epsilon": 1e-3, "relu": relu}, num_outputs=3)
    terms = [b.add_node("ReduceSum", [b.add_node("Mul", [ys[k], b.add_constant(
        rng.standard_normal(b.types[ys[k]].shape), f"r{k}")])], {"keepdims": 0}) for k in use]
    loss = terms[0] if len(terms) == 1 else b.add_node("Sum", terms)
    b.set_outputs([loss])
    feeds = {"x0": rng.standard_normal(shape) * 2 + 1, "x1": rng.uniform(0.5, 2.0, c), "x2": rng.standard_normal(c)}
    if residual:
        feeds["x3"] = rng.standard_normal(shape)
    check_vjp(b.build(), names, loss, feeds, rng)


def test_references_match_torch_float64(rng):
    torch = pytest.importorskip("torch")
    shape = (4, 6, 5, 3)
    graph, feeds = _forward_case(shape, rng, np.float64)
    x, w, bias = (torch.tensor(feeds[k], requires_grad=True) for k in ("x0", "x1", "x2"))
    y = torch.nn.functional.batch_norm(x, None, None, w, bias, training=True, eps=1e-5)
    ours = ns.run_reference(graph, feeds)
    np.testing.assert_allclose(ours[graph.outputs[0].name], y.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(shape)
    y.backward(torch.tensor(dy))
    back = _graph("BatchNormTrainGrad", [shape, shape, (6,), (6,), (6,)], "float64")
    grads = ns.run_reference(back, {"x0": feeds["x0"], "x1": dy, "x2": feeds["x1"],
                                    "x3": ours[graph.outputs[1].name], "x4": ours[graph.outputs[2].name]})
    for out, t in zip(back.outputs, (x, w, bias)):
        np.testing.assert_allclose(grads[out.name], t.grad.numpy(), rtol=1e-10, atol=1e-12)


def _training_ops(module, shape):
    from nutshell.training import Recipe, as_optimizer, build_training_graph
    x, y = np.zeros(shape, np.float32), np.zeros(shape[0], np.int64)
    recipe = Recipe(module, None, x, y, "cross_entropy", {})
    graph = build_training_graph(recipe, as_optimizer(ns.optim.SGD(lr=0.1)))[0]
    return {n.op for n in graph.nodes}


def test_relu_fused_after_autodiff():
    """BatchNorm -> ReLU: one BatchNormTrain(relu=1) writes the ReLU's value, which
    the ReLU gradient's mask reads; no Relu node is left."""
    from nutshell.api import optimize_graph
    from nutshell.training import Recipe, as_optimizer, build_training_graph
    nn = ns.nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    recipe = Recipe(net, None, np.zeros((2, 3, 8, 8), np.float32), np.zeros(2, np.int64), "cross_entropy", {})
    graph = optimize_graph(build_training_graph(recipe, as_optimizer(ns.optim.SGD(lr=0.1)))[0])
    bns = [n for n in graph.nodes if n.op == "BatchNormTrain"]
    assert len(bns) == 1 and bns[0].attrs["relu"] == 1
    assert not any(n.op == "Relu" for n in graph.nodes)


def _block(m, downsample):
    """A ResNet basic block (torch's or ours): relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
    class Block(m.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = m.Conv2d(4, 4, 3, padding=1, bias=False), m.BatchNorm2d(4)
            self.conv2, self.bn2 = m.Conv2d(4, 4, 3, padding=1, bias=False), m.BatchNorm2d(4)
            self.shortcut = m.Sequential(m.Conv2d(4, 4, 1, bias=False), m.BatchNorm2d(4)) if downsample \
                else m.Sequential()

        def forward(self, x):
            y = self.bn1(self.conv1(x)).relu()
            return (self.bn2(self.conv2(y)) + self.shortcut(x)).relu()
    return m.Sequential(m.Conv2d(3, 4, 3, padding=1), Block(), m.Flatten(), m.Linear(4 * 64, 3))


@pytest.mark.parametrize("downsample", [False, True], ids=["identity", "downsample"])
def test_residual_add_and_relu_fused(downsample):
    """The block's Add and ReLU run in one BatchNorm (the shortcut's, when the
    shortcut is traced after bn2)."""
    from nutshell.api import optimize_graph
    from nutshell.training import Recipe, as_optimizer, build_training_graph
    recipe = Recipe(_block(ns.nn, downsample), None, np.zeros((2, 3, 8, 8), np.float32), np.zeros(2, np.int64),
                    "cross_entropy", {})
    graph = optimize_graph(build_training_graph(recipe, as_optimizer(ns.optim.SGD(lr=0.1)))[0], verify_each=True)
    bns = [n for n in graph.nodes if n.op == "BatchNormTrain"]
    assert sum(len(n.inputs) == 4 and n.attrs["relu"] for n in bns) == 1
    assert not any(n.op == "Relu" for n in graph.nodes)


def test_front_end_uses_the_fused_ops_for_images_only():
    nn = ns.nn
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    assert {"BatchNormTrain", "BatchNormTrainGrad"} <= _training_ops(conv, (2, 3, 8, 8))
    mlp = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert "BatchNormTrain" not in _training_ops(mlp, (3, 5))


NETS = {"conv_bn_relu": lambda m: m.Sequential(m.Conv2d(3, 4, 3, padding=1), m.BatchNorm2d(4), m.ReLU(),
                                                m.Flatten(), m.Linear(4 * 64, 3)),
        "identity_block": lambda m: _block(m, False), "downsample_block": lambda m: _block(m, True)}


@pytest.mark.parametrize("net", sorted(NETS))
def test_running_statistics_follow_torch(net, rng):
    """Three steps: parameters and running statistics as torch's."""
    torch = pytest.importorskip("torch")
    ours, theirs = NETS[net](ns.nn), NETS[net](torch.nn)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    trainer = ns.compile_training(ours, input_shape=(5, 3, 8, 8), optimizer=ns.optim.SGD(lr=0.1), threads=1)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for _ in range(3):
        x, y = rng.standard_normal((5, 3, 8, 8)).astype(np.float32) * 2 + 1, rng.integers(0, 3, 5)
        trainer.step(x, y)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        opt.step()
    want = theirs.state_dict()
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, want[name].numpy(), rtol=2e-3, atol=1e-5, err_msg=name)



def _shared_values(m, kind):
    """A BatchNorm whose values other nodes read too: the fusion must leave them as they were."""
    class Net(m.Module):
        def __init__(self):
            super().__init__()
            self.conv0, self.conv1 = m.Conv2d(3, 4, 3, padding=1), m.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn, self.fc = m.BatchNorm2d(4), m.Linear(4 * 64, 3)

        def forward(self, x):
            r = self.conv0(x)
            y = self.bn(self.conv1(r))
            if kind == "residual_read_again":
                out = (y + r).relu() + r * 2.0
            elif kind == "normalised_read_twice":
                out = y.relu() + y
            else:                                   # the sum read twice
                a = y + r
                out = a.relu() * a
            return self.fc(out.flatten(1))
    return Net()


@pytest.mark.parametrize("kind", ["residual_read_again", "normalised_read_twice", "sum_read_twice"])
def test_values_other_nodes_read_survive_the_fusion(kind, rng):
    """Three steps against torch (rtol 2e-3 as above): the residual read by another
    node too, the normalised value or the residual sum read besides the ReLU."""
    torch = pytest.importorskip("torch")
    ours, theirs = _shared_values(ns.nn, kind), _shared_values(torch.nn, kind)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    trainer = ns.compile_training(ours, input_shape=(3, 3, 8, 8), optimizer=ns.optim.SGD(lr=0.1), threads=2)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for _ in range(3):
        x, y = rng.standard_normal((3, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, 3)
        loss = trainer.step(x, y)
        opt.zero_grad()
        want = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
        want.backward()
        opt.step()
        np.testing.assert_allclose(loss, want.item(), rtol=2e-3)
    want = theirs.state_dict()
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, want[name].numpy(), rtol=2e-3, atol=1e-5, err_msg=name)

def test_bad_inputs_raise_nutshell_errors():
    with pytest.raises(ns.ShapeError):
        _graph("BatchNormTrain", [(2, 3, 4, 4), (4,), (3,)])
    with pytest.raises(ns.ShapeError):
        _graph("BatchNormTrainGrad", [(2, 3, 4, 4), (2, 3, 4, 5), (3,), (3,), (3,)])
    with pytest.raises(ns.ShapeError):
        _graph("BatchNormTrain", [(2,), (2,), (2,)])
    with pytest.raises(ns.UnsupportedTypeError):
        _graph("BatchNormTrain", [(2, 3, 4), (3,), (3,)], dtype="int64")


def _mixed(op, shapes, dtypes):
    b = GraphBuilder(op.lower())
    names = [b.add_input(f"x{i}", d, s) for i, (s, d) in enumerate(zip(shapes, dtypes))]
    b.add_node(op, names, {"epsilon": 1e-5}, num_outputs=3)


def test_per_channel_inputs_of_another_dtype_raise_shape_errors():
    """scale, bias, mean and var of a dtype other than x's: a ShapeError naming the
    input, not llvmlite's ValueError from the kernel mixing float and double."""
    with pytest.raises(ns.ShapeError, match="scale must be float64"):
        _mixed("BatchNormTrain", [(2, 3, 4, 4), (3,), (3,)], ["float64", "float32", "float64"])
    with pytest.raises(ns.ShapeError, match="bias must be float32"):
        _mixed("BatchNormTrain", [(2, 3, 4, 4), (3,), (3,)], ["float32", "float32", "float64"])
    with pytest.raises(ns.ShapeError, match="var must be float32"):
        _mixed("BatchNormTrainGrad", [(2, 3, 4, 4)] * 2 + [(3,)] * 3, ["float32"] * 4 + ["float64"])


def test_front_end_rejects_what_torch_rejects():
    """A BatchNorm over another channel count (affine=False once trained a 1-channel
    layer on 3 channels silently), and training statistics of one value per channel
    (torch: "Expected more than 1 value per channel"): ShapeErrors naming the layer."""
    nn = ns.nn
    for bn in (nn.BatchNorm2d(4), nn.BatchNorm2d(1, affine=False)):
        net = nn.Sequential(nn.Conv2d(1, 3, 3), bn, nn.Flatten(), nn.Linear(3 * 36, 3))
        with pytest.raises(ns.ShapeError, match="BatchNorm2d '1': expected num_features"):
            ns.compile_training(net, (2, 1, 8, 8), optimizer=ns.optim.SGD(lr=0.1))
    single = nn.Sequential(nn.Conv2d(1, 4, 8), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ns.ShapeError, match="more than 1 value per channel"):
        ns.compile_training(single, (1, 1, 8, 8), optimizer=ns.optim.SGD(lr=0.1))
    ns.compile_training(single, (2, 1, 8, 8), optimizer=ns.optim.SGD(lr=0.1))    # two values: fine
    single.eval()
    assert ns.compile(single, input_shape=(1, 1, 8, 8))(np.ones((1, 1, 8, 8), np.float32)).shape == (1, 3)


def test_relu_mask_reference_is_the_forwards(rng):
    """BatchNormTrainGrad(relu=1)'s mask is exactly where the forward's y > 0 (both
    compiled), so masking dy itself changes no value."""
    shape, c = (4, 6, 5, 5), 6
    fwd, feeds = _forward_relu(shape, rng)
    y, mean, var = (v.name for v in fwd.outputs)
    out = ns.compile(fwd, threads=1).run(feeds)
    grad, _ = _backward_relu(shape, rng)
    dy = rng.normal(size=shape).astype(np.float32)
    got = ns.compile(grad, threads=2).run({"x0": feeds["x0"], "x1": dy, "x2": feeds["x1"], "x3": out[mean],
                                           "x4": out[var], "x5": feeds["x2"]})
    plain, _ = _backward_case(shape, rng)
    want = ns.compile(plain, threads=2).run({"x0": feeds["x0"], "x1": np.where(out[y] > 0, dy, np.float32(0)),
                                             "x2": feeds["x1"], "x3": out[mean], "x4": out[var]})
    for a, b in zip(grad.outputs, plain.outputs):
        np.testing.assert_array_equal(got[a.name], want[b.name])


@pytest.mark.parametrize("net", ["plain", "residual"])
def test_gradient_mask_fusion_trains_bit_identically(net, rng, monkeypatch):
    """The ReLU mask folded into BatchNormTrainGrad (passes/batchnorm_fusion.py):
    a BN + ReLU net's steps bit-identical to those with the separate masking pass
    (a residual block's gradient keeps it: the residual reads the masked dy)."""
    import nutshell.training as training
    from nutshell.compiler.passes import fusion
    m = ns.nn

    class Block(m.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.bn2 = m.Conv2d(4, 4, 3, padding=1), m.BatchNorm2d(4), m.BatchNorm2d(4)

        def forward(self, x):
            h = m.functional.relu(self.bn(self.conv(x)))
            return m.functional.relu(self.bn2(h) + x) if net == "residual" else h

    x = rng.standard_normal((4, 4, 6, 6)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    runs = []
    for folded in (True, False):
        if not folded:
            monkeypatch.setattr(fusion, "REWRITES", [r for r in fusion.REWRITES
                                                     if r.name != "fuse_batchnorm_grad_mask"])
            monkeypatch.setattr(training, "_OPTIMISED", {})
        ns.manual_seed(0)
        model = m.Sequential(Block(), m.Flatten(), m.Linear(4 * 6 * 6, 10))
        trainer = ns.compile_training(model, input_shape=x.shape, optimizer=ns.optim.SGD(lr=0.1, momentum=0.9),
                                      threads=2)
        runs.append(([trainer.step(x, y) for _ in range(3)], trainer.state(), trainer.model.graph))
    (l1, s1, g1), (l2, s2, _) = runs
    assert l1 == l2
    for k in s2:
        np.testing.assert_array_equal(s1[k], s2[k], err_msg=k)
    assert sum(n.op == "BatchNormTrainGrad" and n.attrs["relu"] == 1 for n in g1.nodes) == 1
