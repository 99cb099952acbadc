"""Every gradient rule against float64 central finite differences along random
directions (JAX's check_vjp): the rule's IR runs in the NumPy reference executor,
so this checks the rules themselves; compiled backward ops are checked against
their references in test_ops.py. Tolerance: relative 1e-6 on <grad, v>."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.passes.autodiff import differentiate

D = "float64"
EPS = 1e-6

# (op, input specs, attrs, constants, feed) -- a spec is a shape, None for a constant
# given below or "" for an omitted input; feed: False standard normal, True uniform
# in [0.5, 2] (a positive domain), "wide" normal times 4 (both sides of a hinge).
# attrs["__outputs"]: how many outputs; attrs["__use"]: which of them the loss reads.
I64 = lambda *v: np.array(v, np.int64)
F32 = lambda *v: np.array(v, np.float32)
CASES = [
    ("Add", [(3, 4), (4,)], {}, None, False),
    ("Sub", [(3, 1), (1, 5)], {}, None, False),
    ("Mul", [(2, 3, 4), (3, 1)], {}, None, False),
    ("Div", [(3, 4), (3, 4)], {}, None, True),
    ("Relu", [(5, 6)], {}, None, False),
    ("LeakyRelu", [(5, 6)], {"alpha": 0.1}, None, False),
    ("Elu", [(5, 6)], {"alpha": 0.5}, None, False),
    ("Sigmoid", [(4, 5)], {}, None, False),
    ("Tanh", [(4, 5)], {}, None, False),
    ("Exp", [(7,)], {}, None, False),
    ("Sin", [(4, 5)], {}, None, "wide"),
    ("Cos", [(4, 5)], {}, None, "wide"),
    ("Log", [(7,)], {}, None, True),
    ("Sqrt", [(7,)], {}, None, True),
    ("Neg", [(7,)], {}, None, False),
    ("Abs", [(7,)], {}, None, False),
    ("Reciprocal", [(7,)], {}, None, True),
    ("Ceil", [(7,)], {}, None, "wide"),
    ("Floor", [(7,)], {}, None, "wide"),
    ("Sign", [(7,)], {}, None, False),
    ("Erf", [(4, 5)], {}, None, False),
    ("Softplus", [(4, 5)], {}, None, "wide"),
    ("Softsign", [(4, 5)], {}, None, False),
    ("HardSigmoid", [(4, 5)], {"alpha": 0.3, "beta": 0.4}, None, "wide"),
    ("HardSwish", [(4, 5)], {}, None, "wide"),
    ("Selu", [(4, 5)], {}, None, False),
    ("Celu", [(4, 5)], {"alpha": 0.7}, None, False),
    ("ThresholdedRelu", [(4, 5)], {"alpha": 0.3}, None, False),
    ("Shrink", [(4, 5)], {"bias": 0.2, "lambd": 0.4}, None, False),
    ("Mish", [(4, 5)], {}, None, "wide"),
    ("Gelu", [(4, 5)], {}, None, "wide"),
    ("Gelu", [(4, 5)], {"approximate": "tanh"}, None, "wide"),
    ("Max", [(3, 4), (4,), (3, 1)], {}, None, False),
    ("Min", [(3, 4), (3, 4)], {}, None, False),
    ("Sum", [(3, 4), (4,)], {}, None, False),
    ("Mean", [(2, 3), (2, 3), (1, 3)], {}, None, False),
    ("Pow", [(3, 4), (3, 4)], {}, None, True),
    ("Pow", [(3, 4), None], {}, {1: np.array(3.0)}, False),
    ("Pow", [(3, 4), None], {}, {1: np.array(2, np.int64)}, False),
    ("PRelu", [(2, 3, 4, 5), (3, 1, 1)], {}, None, False),
    ("Clip", [(4, 5)], {"min": -0.5, "max": 0.5}, None, False),
    ("Clip", [(4, 5), None, None], {}, {1: np.array(-0.3), 2: np.array(0.6)}, False),
    ("Clip", [(4, 5), "", None], {}, {2: np.array(0.2)}, False),
    ("Clip", [(4, 5), (), (1, 5)], {}, None, False),       # bounds as inputs, lo > hi in places
    ("Mod", [(3, 4), (3, 4)], {"fmod": 1}, None, True),
    ("Where", [None, (3, 4), (4,)], {}, {0: np.arange(12).reshape(3, 4) % 3 == 0}, False),
    ("MatMul", [(3, 4), (4, 5)], {}, None, False),
    ("MatMul", [(2, 3, 4), (4, 5)], {}, None, False),
    ("MatMul", [(2, 2, 3, 4), (4, 5)], {}, None, False),
    ("MatMul", [(2, 3, 4), (2, 4, 5)], {}, None, False),
    ("MatMul", [(2, 1, 3, 4), (3, 4, 5)], {}, None, False),
    ("MatMul", [(4,), (2, 4, 5)], {}, None, False),
    ("MatMul", [(3, 4), (4,)], {}, None, False),
    ("MatMul", [(4,), (4,)], {}, None, False),
    ("Einsum", [(2, 3, 4), (2, 4, 5)], {"equation": "bij,bjk->bik"}, None, False),
    ("Einsum", [(3, 4), (4,)], {"equation": "ij,j->i"}, None, False),
    ("Einsum", [(3, 4)], {"equation": "ij->"}, None, False),
    ("Einsum", [(2, 3, 4), (4, 3)], {"equation": "...ij,ji->..."}, None, False),
    ("Einsum", [(3, 4), (5,)], {"equation": "ij,k->ik"}, None, False),
    ("Einsum", [(2, 3, 4), (1, 4, 5)], {"equation": "bij,bjk->bik"}, None, False),
    ("Gemm", [(3, 4), (4, 5), (5,)], {}, None, False),
    ("Gemm", [(4, 3), (5, 4), (3, 5)], {"transA": 1, "transB": 1, "alpha": 0.7, "beta": 1.5}, None, False),
    ("Gemm", [(3, 4), (5, 4), (1, 5)], {"transB": 1}, None, False),
    ("Gemm", [(4, 3), (4, 5)], {"transA": 1}, None, False),
    ("Conv", [(2, 3, 7, 7), (4, 3, 3, 3), (4,)], {"pads": (1, 1, 1, 1)}, None, False),
    ("Conv", [(1, 4, 9, 8), (6, 2, 3, 2)], {"strides": (2, 1), "group": 2, "dilations": (1, 2), "pads": (0, 1, 1, 0)}, None, False),
    ("ConvTranspose", [(1, 4, 5, 5), (4, 3, 3, 3), (3,)],
     {"strides": (2, 2), "pads": (1, 1, 1, 1), "output_padding": (1, 1)}, None, False),
    ("ConvTranspose", [(1, 2, 3, 3), (2, 2, 4, 4)], {"strides": (2, 2), "pads": (1, 1, 1, 1)}, None, False),
    ("ConvTranspose", [(2, 4, 4, 3), (4, 2, 2, 3)], {"group": 2, "strides": (1, 2), "dilations": (2, 1),
                                                      "pads": (0, 1, 1, 0)}, None, False),
    ("MaxPool", [(2, 2, 6, 6)], {"kernel_shape": (2, 2), "strides": (2, 2)}, None, False),
    ("MaxPool", [(1, 2, 7, 7)], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}, None, False),
    ("AveragePool", [(1, 2, 7, 7)], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}, None, False),
    ("AveragePool", [(1, 2, 6, 6)], {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "count_include_pad": 1}, None, False),
    ("MaxPool", [(2, 3, 9)], {"kernel_shape": (3,), "strides": (2,), "pads": (1, 0)}, None, False),
    ("AveragePool", [(2, 3, 9)], {"kernel_shape": (3,), "strides": (2,), "pads": (0, 1)}, None, False),
    ("GlobalAveragePool", [(2, 3, 4, 5)], {}, None, False),
    ("GlobalMaxPool", [(2, 3, 4, 5)], {}, None, False),
    ("Softmax", [(3, 6)], {"axis": -1}, None, False),
    ("Softmax", [(2, 3, 4)], {"axis": 1}, None, False),
    ("LogSoftmax", [(3, 6)], {"axis": 1}, None, False),
    ("Reshape", [(2, 6), None], {}, {1: np.array([3, 4])}, False),
    ("Flatten", [(2, 3, 4)], {"axis": 1}, None, False),
    ("Squeeze", [(3, 1, 4), None], {}, {1: I64(1)}, False),
    ("Unsqueeze", [(3, 4), None], {}, {1: I64(0, 2)}, False),
    ("Transpose", [(2, 3, 4)], {"perm": (1, 2, 0)}, None, False),
    ("Concat", [(2, 3), (2, 4)], {"axis": 1}, None, False),
    ("Split", [(4, 6)], {"axis": 1, "split": (2, 4), "__outputs": 2}, None, False),
    ("Split", [(6, 3), None], {"axis": 0, "__outputs": 3, "__use": (2,)}, {1: I64(1, 3, 2)}, False),
    ("Slice", [(5, 6), None, None, None, None], {}, {1: I64(1, 5), 2: I64(4, 0), 3: I64(0, 1), 4: I64(1, -2)}, False),
    ("Slice", [(5, 6), None, None, None, None], {}, {1: I64(0), 2: I64(5), 3: I64(0), 4: I64(2)}, False),
    ("Slice", [(5, 6), None, None, None, None], {}, {1: I64(-1), 2: I64(-9), 3: I64(0), 4: I64(-3)}, False),
    ("Slice", [(4, 6)], {"starts": (1,), "ends": (3,), "axes": (1,)}, None, False),
    ("Tile", [(2, 3), None], {}, {1: I64(2, 3)}, False),
    ("Pad", [(2, 3, 4), None], {}, {1: I64(0, 1, 2, 0, 2, -1)}, False),
    ("Pad", [(2, 3, 4), None], {"mode": "reflect"}, {1: I64(0, 2, 1, 0, 1, 3)}, False),
    ("Pad", [(2, 3, 4), None], {"mode": "edge"}, {1: I64(1, 0, 2, 0, 3, 1)}, False),
    ("Pad", [(2, 3, 4), None], {"mode": "wrap"}, {1: I64(0, 1, 2, 0, 2, 1)}, False),
    ("DepthToSpace", [(1, 8, 2, 3)], {"blocksize": 2}, None, False),
    ("DepthToSpace", [(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}, None, False),
    ("SpaceToDepth", [(1, 2, 4, 6)], {"blocksize": 2}, None, False),
    ("Gather", [(5, 3), None], {"axis": 0}, {1: I64(0, 2, 4, 2).reshape(2, 2)}, False),
    ("Gather", [(2, 5, 3), None], {"axis": 1}, {1: I64(3, -1, 3)}, False),
    ("Resize", [(1, 2, 3, 4), "", None], {"mode": "nearest"}, {2: F32(1, 1, 2, 2)}, False),
    ("Resize", [(1, 2, 3, 4), "", None], {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                          "nearest_mode": "floor"}, {2: F32(1, 1, 2, 3)}, False),
    ("Resize", [(1, 2, 3, 4), "", None], {"mode": "linear"}, {2: F32(1, 1, 2, 2)}, False),
    ("Resize", [(1, 2, 3, 4), "", "", None], {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
     {3: I64(1, 2, 5, 7)}, False),
    ("ReduceSum", [(3, 4, 5)], {"axes": (0, 2)}, None, False),
    ("ReduceMean", [(3, 4, 5)], {"axes": (1,), "keepdims": 0}, None, False),
    ("ReduceMax", [(3, 4, 5)], {"axes": (1,)}, None, False),
    ("ReduceMin", [(3, 4, 5), None], {"keepdims": 0}, {1: I64(0, 2)}, False),
    ("ReduceL1", [(3, 4)], {"axes": (1,)}, None, False),
    ("ReduceL2", [(3, 4)], {"axes": (0,)}, None, False),
    ("ReduceSumSquare", [(3, 4)], {"keepdims": 0}, None, False),
    ("ReduceLogSumExp", [(3, 4, 2)], {"axes": (1,)}, None, False),
    ("Expand", [(3, 1), None], {}, {1: np.array([2, 3, 4])}, False),
    ("Maxout", [(3, 8)], {"pool_size": 2}, None, False),
    ("Identity", [(3,)], {}, None, False),
    ("AllReduceSum", [(2, 3)], {}, None, False),
    ("Dropout", [(3, 4)], {}, None, False),
    ("Cast", [(3, 4)], {"to": 11}, None, False),
    ("LSTM", [(3, 2, 2), (1, 8, 2), (1, 8, 2), (1, 16)], {"hidden_size": 2, "__outputs": 3}, None, False),
    ("LSTMCell", [(3, 20), (3, 5)], {"order": "ifco", "__outputs": 3, "__use": (0, 1)}, None, False),
    ("LSTMCell", [(2, 8), (2, 2)], {"order": "iofc", "__outputs": 3, "__use": (0,)}, None, False),
    ("LSTMCell", [(2, 8), (2, 2)], {"order": "ifco", "__outputs": 3, "__use": (1,)}, None, False),
    ("LSTMSequence", [(6, 12), (3, 12), (2, 3), (2, 3)], {"order": "ifco", "__outputs": 5, "__use": (0, 1, 2)},
     None, False),
    ("LSTMSequence", [(6, 8), (2, 8), (3, 2), (3, 2)], {"order": "iofc", "reverse": 1, "__outputs": 5,
                                                        "__use": (0, 2)}, None, False),
    ("LSTMSequence", [(4, 8), (2, 8), (1, 2), (1, 2), (8,)], {"order": "ifco", "__outputs": 5, "__use": (1,)},
     None, False),
    ("GRU", [(3, 2, 2), (1, 6, 2), (1, 6, 2)], {"hidden_size": 2, "linear_before_reset": 1, "__outputs": 2},
     None, False),
    ("GRUCell", [(3, 15), (3, 15), (3, 5)], {"order": "rzh", "__outputs": 2, "__use": (0,)}, None, False),
    ("GRUCell", [(2, 6), (2, 6), (2, 2)], {"order": "zrh", "__outputs": 2, "__use": (0,)}, None, False),
    ("RNN", [(3, 2, 2), (2, 2, 2), (2, 2, 2)], {"hidden_size": 2, "direction": "bidirectional", "__outputs": 2},
     None, False),
    ("Trilu", [(2, 3, 4), None], {"upper": 0}, {1: I64(1)}, False),
    ("BatchNormalization", [(2, 3, 4, 5), (3,), (3,), None, None], {"epsilon": 1e-3},
     {3: np.array([0.1, -0.2, 0.3]), 4: np.array([0.5, 1.5, 2.0])}, False),
    ("BatchNormTrain", [(2, 3, 4, 5), (3,), (3,)], {"epsilon": 1e-3, "__outputs": 3}, None, False),
    ("BatchNormTrain", [(3, 2, 5), (2,), (2,)], {"relu": 1, "__outputs": 3, "__use": (0,)}, None, False),
]


def _build(case, rng, dtype=D, square=False):
    """A graph of the case's op and loss = sum_k <y_k, r_k> (<y_k * y_k, r_k> with
    `square`, so that no gradient is a constant) for random constants r_k; its
    differentiable inputs are the x's (`dtype`; float constants follow it)."""
    op, specs, attrs, consts, _ = case
    as_dtype = lambda a: a.astype(dtype) if a.dtype.kind == "f" else a
    attrs = dict(attrs)
    num_outputs, use = attrs.pop("__outputs", 1), attrs.pop("__use", None)
    b = GraphBuilder("grad_check")
    names = []
    for i, shape in enumerate(specs):
        if shape == "":
            names.append("")
        elif shape is None:
            names.append(b.add_constant(as_dtype(consts[i]), f"c{i}"))
        else:
            names.append(b.add_input(f"x{i}", dtype, shape))
    ys = b.add_node(op, names, attrs, num_outputs=num_outputs)
    ys = [ys] if isinstance(ys, str) else list(ys)
    terms = []
    for k in (use if use is not None else range(len(ys))):
        r = b.add_constant(rng.standard_normal(b.types[ys[k]].shape).astype(dtype), f"r{k}")
        y = b.add_node("Mul", [ys[k], ys[k]]) if square else ys[k]
        terms.append(b.add_node("ReduceSum", [b.add_node("Mul", [y, r])], {"keepdims": 0}))
    loss = terms[0] if len(terms) == 1 else b.add_node("Sum", terms)
    b.set_outputs([loss])
    return b.build(), [n for n in names if n.startswith("x")], loss


def _feed(kind, shape, rng):
    if kind is True:
        return rng.uniform(0.5, 2.0, shape)
    return rng.standard_normal(shape) * (4.0 if kind == "wide" else 1.0)


def check_vjp(graph, wrt, loss, feeds, rng):
    """<analytic gradient, v> against central differences of the loss along a random v."""
    builder, grads = differentiate(graph, loss, wrt)
    builder.set_outputs([loss] + [grads[w] for w in wrt])
    gradient_graph = ns.verify(builder.build())
    values = ns.run_reference(gradient_graph, feeds)
    f = lambda fd: float(ns.run_reference(graph, fd)[loss])
    for w in wrt:
        v = rng.standard_normal(feeds[w].shape)
        plus = dict(feeds, **{w: feeds[w] + EPS * v})
        minus = dict(feeds, **{w: feeds[w] - EPS * v})
        numeric = (f(plus) - f(minus)) / (2 * EPS)
        analytic = float(np.sum(values[grads[w]] * v))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), (w, numeric, analytic)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_gradient_matches_finite_differences(case, rng):
    graph, wrt, loss = _build(case, rng)
    feeds = {v.name: _feed(case[4], v.type.shape, rng) for v in graph.inputs}
    check_vjp(graph, wrt, loss, feeds, rng)
