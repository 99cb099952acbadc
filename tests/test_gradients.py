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

# (op, input specs (shape or None for a constant given below), attrs, constants, positive inputs?)
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
    ("Log", [(7,)], {}, None, True),
    ("Sqrt", [(7,)], {}, None, True),
    ("Neg", [(7,)], {}, None, False),
    ("Abs", [(7,)], {}, None, False),
    ("MatMul", [(3, 4), (4, 5)], {}, None, False),
    ("MatMul", [(2, 3, 4), (4, 5)], {}, None, False),
    ("Gemm", [(3, 4), (4, 5), (5,)], {}, None, False),
    ("Gemm", [(4, 3), (5, 4), (3, 5)], {"transA": 1, "transB": 1, "alpha": 0.7, "beta": 1.5}, None, False),
    ("Gemm", [(3, 4), (5, 4), (1, 5)], {"transB": 1}, None, False),
    ("Gemm", [(4, 3), (4, 5)], {"transA": 1}, None, False),
    ("Conv", [(2, 3, 7, 7), (4, 3, 3, 3), (4,)], {"pads": (1, 1, 1, 1)}, None, False),
    ("Conv", [(1, 4, 9, 8), (6, 2, 3, 2)], {"strides": (2, 1), "group": 2, "dilations": (1, 2), "pads": (0, 1, 1, 0)}, None, False),
    ("MaxPool", [(2, 2, 6, 6)], {"kernel_shape": (2, 2), "strides": (2, 2)}, None, False),
    ("MaxPool", [(1, 2, 7, 7)], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}, None, False),
    ("AveragePool", [(1, 2, 7, 7)], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}, None, False),
    ("AveragePool", [(1, 2, 6, 6)], {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "count_include_pad": 1}, None, False),
    ("GlobalAveragePool", [(2, 3, 4, 5)], {}, None, False),
    ("Softmax", [(3, 6)], {"axis": -1}, None, False),
    ("Softmax", [(2, 3, 4)], {"axis": 1}, None, False),
    ("LogSoftmax", [(3, 6)], {"axis": 1}, None, False),
    ("Reshape", [(2, 6), None], {}, {1: np.array([3, 4])}, False),
    ("Flatten", [(2, 3, 4)], {"axis": 1}, None, False),
    ("Transpose", [(2, 3, 4)], {"perm": (1, 2, 0)}, None, False),
    ("Concat", [(2, 3), (2, 4)], {"axis": 1}, None, False),
    ("ReduceSum", [(3, 4, 5)], {"axes": (0, 2)}, None, False),
    ("ReduceMean", [(3, 4, 5)], {"axes": (1,), "keepdims": 0}, None, False),
    ("Expand", [(3, 1), None], {}, {1: np.array([2, 3, 4])}, False),
    ("Maxout", [(3, 8)], {"pool_size": 2}, None, False),
    ("Identity", [(3,)], {}, None, False),
    ("BatchNormalization", [(2, 3, 4, 5), (3,), (3,), None, None], {"epsilon": 1e-3},
     {3: np.array([0.1, -0.2, 0.3]), 4: np.array([0.5, 1.5, 2.0])}, False),
]


def _build(case, rng):
    op, specs, attrs, consts, positive = case
    b = GraphBuilder("grad_check")
    names = []
    for i, shape in enumerate(specs):
        if shape is None:
            names.append(b.add_constant(consts[i], f"c{i}"))
        else:
            names.append(b.add_input(f"x{i}", D, shape))
    y = b.add_node(op, names, attrs)
    r = b.add_constant(rng.standard_normal(b.types[y].shape), "r")
    loss = b.add_node("ReduceSum", [b.add_node("Mul", [y, r])], {"keepdims": 0})
    b.set_outputs([loss])
    return b.build(), [n for n in names if n.startswith("x")], loss


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_gradient_matches_finite_differences(case, rng):
    graph, wrt, loss = _build(case, rng)
    positive = case[4]
    feeds = {v.name: (rng.uniform(0.5, 2.0, v.type.shape) if positive else
                      rng.standard_normal(v.type.shape)) for v in graph.inputs}
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
