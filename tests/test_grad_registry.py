"""The gradient registry as a whole: every op has a VJP rule beside it or a stated
reason why not; every rule has a float64 finite-difference case in
test_gradients.CASES (checked there on the NumPy reference executor, relative
1e-6); composite ops (layer norm) differentiate through their primitives; and
backward graphs compile: float32 native results against the NumPy reference of the
same backward graph, relative 1e-4 (float32 rounding over short sums)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nutshell as ns
from nutshell.compiler.errors import CompileError
from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.ops import NON_DIFFERENTIABLE, all_ops
from nutshell.compiler.ops.registry import zero_gradient
from nutshell.compiler.passes.autodiff import differentiate
from nutshell.compiler.passes.expand import EXPANSIONS

from test_gradients import CASES, _build, _feed, check_vjp

# zero-gradient rules of ops whose outputs are not float: there is nothing to difference
NO_FLOAT_OUTPUT = {"Shape", "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "DropoutMask",
                   "RandomUniform"}


def test_every_op_has_a_rule_or_a_reason():
    """Composites (EXPANSIONS: LSTM & co.) differentiate through their primitive expansion."""
    missing = [n for n, op in all_ops().items()
               if op.grad is None and n not in NON_DIFFERENTIABLE and n not in EXPANSIONS]
    both = [n for n, op in all_ops().items() if op.grad is not None and n in NON_DIFFERENTIABLE]
    assert not missing, f"ops with neither a gradient rule nor a NON_DIFFERENTIABLE reason: {missing}"
    assert not both, f"ops with a rule that are also declared non-differentiable: {both}"
    assert all(reason for reason in NON_DIFFERENTIABLE.values())


def test_every_rule_has_a_finite_difference_case():
    cased = {c[0] for c in CASES}
    uncased = [n for n, op in all_ops().items() if (op.grad is not None or n in EXPANSIONS)
               and n not in cased and n not in NO_FLOAT_OUTPUT]
    assert not uncased, f"gradient rules without a case in test_gradients.CASES: {uncased}"
    assert all(all_ops()[n].grad is zero_gradient for n in NO_FLOAT_OUTPUT)


def test_non_differentiable_op_names_its_reason():
    b = GraphBuilder("nd")
    dy = b.add_input("dy", "float64", (2, 3))
    y = b.add_node("GatherGrad", [dy, b.add_constant(np.array([0, 2]))], {"axis": 0, "data_shape": (4, 3)})
    loss = b.add_node("ReduceSum", [y], {"keepdims": 0})
    b.set_outputs([loss])
    with pytest.raises(CompileError, match="second-order"):
        differentiate(b.build(), loss, ["dy"])


def _layer_norm_model(shape, axis):
    rng = np.random.default_rng(3)
    norm_shape = shape[axis:]
    r = helper.make_tensor("r", TensorProto.DOUBLE, shape, rng.standard_normal(shape).ravel())
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=axis, epsilon=1e-5),
             helper.make_node("Mul", ["y", "r"], ["yr"]),
             helper.make_node("ReduceSum", ["yr"], ["loss"], keepdims=0)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, s)
              for n, s in (("x", shape), ("scale", norm_shape), ("bias", norm_shape))]
    graph = helper.make_graph(nodes, "ln", inputs, [helper.make_tensor_value_info("loss", TensorProto.DOUBLE, [])],
                              initializer=[r])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("shape,axis", [((3, 5), -1), ((2, 3, 4), 1)])
def test_layer_norm_differentiates_through_its_primitives(shape, axis, rng):
    graph = ns.load_onnx(_layer_norm_model(shape, axis))
    feeds = {v.name: rng.standard_normal(v.type.shape) for v in graph.inputs}
    check_vjp(graph, ["x", "scale", "bias"], "loss", feeds, rng)


COMPILED = ["MaxPool", "AveragePool", "ConvTranspose", "Resize", "Gather", "Slice", "Pad", "Split", "Tile", "Einsum", "MatMul",
            "ReduceMax", "ReduceL2", "GlobalMaxPool", "Gelu", "Clip", "Max", "Pow", "Where", "PRelu", "LSTMCell", "GRUCell"]


@pytest.mark.parametrize("index", [i for i, c in enumerate(CASES) if c[0] in COMPILED],
                         ids=lambda i: f"{CASES[i][0]}-{i}")
def test_backward_graph_compiles(index, rng):
    case = CASES[index]
    graph, wrt, loss = _build(case, rng, "float32", square=True)
    builder, grads = differentiate(graph, loss, wrt)
    builder.set_outputs([grads[w] for w in wrt])
    backward = ns.verify(builder.build())
    feeds = {v.name: _feed(case[4], v.type.shape, rng).astype(np.float32) for v in backward.inputs}
    got = ns.compile(backward, threads=1).run(feeds)
    want = ns.run_reference(backward, feeds)
    for name, expected in want.items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("index_type", ["int64", "int32"])
def test_gather_grad_skips_out_of_range_indices(index_type):
    """An out-of-range index adds nothing and writes nowhere (the forward Gather
    already failed the run for it); repeated indices add up."""
    b = GraphBuilder("gather_grad")
    dy = b.add_input("dy", "float32", (2, 5, 3))
    idx = b.add_input("idx", index_type, (5,))
    y = b.add_node("GatherGrad", [dy, idx], {"axis": 1, "data_shape": (2, 4, 3)})
    b.set_outputs([y])
    graph = b.build()
    feeds = {"dy": np.arange(30, dtype=np.float32).reshape(2, 5, 3), "idx": np.array([1, 9, -1, 1, -7], index_type)}
    got = ns.compile(graph, threads=1).run(feeds)[y]
    want = np.zeros((2, 4, 3), np.float32)
    want[:, 1] = feeds["dy"][:, 0] + feeds["dy"][:, 3]
    want[:, 3] = feeds["dy"][:, 2]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ns.run_reference(graph, feeds)[y], want)


def _grads(op, arrays, attrs):
    b = GraphBuilder("ties")
    names = [b.add_input(f"x{i}", "float64", a.shape) for i, a in enumerate(arrays)]
    loss = b.add_node("ReduceSum", [b.add_node(op, names, attrs)], {"keepdims": 0})
    b.set_outputs([loss])
    builder, grads = differentiate(b.build(), loss, names)
    builder.set_outputs([grads[n] for n in names])
    values = ns.run_reference(builder.build(), {n: a for n, a in zip(names, arrays)})
    return [values[grads[n]] for n in names]


def test_ties_share_the_gradient_as_torch_does():
    """torch.maximum and torch.amax split a tie's gradient evenly among the tied inputs."""
    torch = pytest.importorskip("torch")
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 3.0])
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    torch.maximum(ta, tb).sum().backward()
    for got, want in zip(_grads("Max", [a, b], {}), (ta.grad, tb.grad)):
        np.testing.assert_array_equal(got, want.numpy())
    x = np.array([[1.0, 4.0, 4.0], [2.0, 2.0, 2.0]])
    tx = torch.tensor(x, requires_grad=True)
    torch.amax(tx, dim=1).sum().backward()
    np.testing.assert_allclose(_grads("ReduceMax", [x], {"axes": (1,), "keepdims": 0})[0], tx.grad.numpy())


@pytest.mark.parametrize("op,attrs,torch_fn", [
    ("Relu", {}, lambda torch, t: torch.relu(t)),
    ("LeakyRelu", {"alpha": 0.1}, lambda torch, t: torch.nn.functional.leaky_relu(t, 0.1)),
    ("HardSwish", {}, lambda torch, t: torch.nn.functional.hardswish(t)),
    ("Abs", {}, lambda torch, t: torch.abs(t)),
    ("Elu", {"alpha": 1.0}, lambda torch, t: torch.nn.functional.elu(t)),
    ("Clip", {"min": -1.0, "max": 1.0}, lambda torch, t: torch.clamp(t, -1.0, 1.0))],
    ids=lambda v: v if isinstance(v, str) else "")
def test_kinks_take_torchs_side(op, attrs, torch_fn):
    """At a kink (0, +-3, a clip bound) the rule returns the derivative PyTorch returns."""
    torch = pytest.importorskip("torch")
    x = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 0.5])
    tx = torch.tensor(x, requires_grad=True)
    torch_fn(torch, tx).sum().backward()
    np.testing.assert_allclose(_grads(op, [x], attrs)[0], tx.grad.numpy(), rtol=1e-12)
