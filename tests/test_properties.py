"""Property tests (hypothesis): random broadcasting shapes and conv/pool geometries,
compiled code against the NumPy reference (rtol 1e-4, atol 1e-5 scaled)."""
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import nutshell as ns
from conftest import assert_close, random_feeds, single_op_graph

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
dims = st.integers(1, 19)


@st.composite
def broadcast_pair(draw):
    shape = draw(st.lists(dims, min_size=1, max_size=4))
    other = [d if draw(st.booleans()) else 1 for d in shape]
    cut = draw(st.integers(0, len(other) - 1))
    return tuple(shape), tuple(other[cut:])


@SETTINGS
@given(broadcast_pair(), st.sampled_from(["Add", "Sub", "Mul", "Div"]), st.booleans(), st.integers(1, 2))
def test_broadcasting_binary_ops(shapes, op, swap, threads):
    a, b = shapes if not swap else shapes[::-1]
    graph = single_op_graph(op, [("float32", a), ("float32", b)])
    feeds = random_feeds(graph, np.random.default_rng(0), 0.5, 2.0)
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=threads).run(feeds)
    for k in want:
        assert_close(got[k], want[k], 1e-5, 1e-6)


@st.composite
def conv_case(draw):
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 4))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, (k[0] - 1) * dil[0] + 1 - pads[0] - pads[2]), 14))
    w = draw(st.integers(max(1, (k[1] - 1) * dil[1] + 1 - pads[1] - pads[3]), 14))
    n = draw(st.integers(1, 3))
    return (n, cin, h, w), (cout, cin // group) + k, dict(group=group, strides=stride,
                                                            dilations=dil, pads=pads)


@SETTINGS
@given(conv_case(), st.booleans(), st.integers(1, 2))
def test_conv_geometries(case, with_bias, threads):
    xs, ws, attrs = case
    rng = np.random.default_rng(1)
    specs = [("float32", xs), ("float32", ws)] + ([("float32", (ws[0],))] if with_bias else [])
    consts = {1: rng.standard_normal(ws).astype(np.float32)}
    if with_bias:
        consts[2] = rng.standard_normal(ws[0]).astype(np.float32)
    graph = single_op_graph("Conv", specs, attrs, consts)
    feeds = random_feeds(graph, rng)
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=threads).run(feeds)
    for k in want:
        assert_close(got[k], want[k], 1e-4, 1e-5)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 1), st.integers(1, 2),
       st.sampled_from(["MaxPool", "AveragePool"]), st.booleans(), st.integers(4, 13))
def test_pool_geometries(k, s, p, n, op, ceil, size):
    p = min(p, k // 2)
    attrs = dict(kernel_shape=(k, k), strides=(s, s), pads=(p, p, p, p), ceil_mode=int(ceil))
    graph = single_op_graph(op, [("float32", (n, 2, size, size + 1))], attrs)
    feeds = random_feeds(graph, np.random.default_rng(2))
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=1).run(feeds)
    for key in want:
        assert_close(got[key], want[key], 1e-5, 1e-6)
