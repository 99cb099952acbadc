"""The blocked-channel layout: ToBlocked/FromBlocked/ConvBlocked against NumPy, and
the layout pass's structure (which regions change) and numbers at 1 and 2 threads."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder, verify
from nutshell.compiler.ops import get_op
from nutshell.compiler.ops.blocked import from_blocked, pack_dense, pack_depthwise, to_blocked
from nutshell.compiler.passes.pipeline import run_pipeline

TOL = dict(rtol=1e-4, atol=1e-4)     # float32 sums of up to 600 products vs float64


def _const(b, rng, shape, scale=0.3):
    return b.add_constant((rng.standard_normal(shape) * scale).astype(np.float32))


def inverted_residual(rng, n=1, c=24, hw=(14, 14), expand=72, k=5, stride=1, se=True):
    """MobileNet v3's block: 1x1 expand, HardSwish, depthwise kxk, squeeze-excitation,
    1x1 project, residual Add."""
    b = GraphBuilder("block", fold=False)
    x = b.add_input("x", "float32", (n, c) + hw)
    y = b.add_node("HardSwish", [b.add_node("Conv", [x, _const(b, rng, (expand, c, 1, 1)),
                                                      _const(b, rng, (expand,))])])
    y = b.add_node("Relu", [b.add_node("Conv", [y, _const(b, rng, (expand, 1, k, k)), _const(b, rng, (expand,))],
                                       {"group": expand, "pads": (k // 2,) * 4, "strides": (stride, stride)})])
    if se:
        s = b.add_node("Relu", [b.add_node("Conv", [b.add_node("GlobalAveragePool", [y]),
                                                    _const(b, rng, (8, expand, 1, 1)), _const(b, rng, (8,))])])
        s = b.add_node("HardSigmoid", [b.add_node("Conv", [s, _const(b, rng, (expand, 8, 1, 1)),
                                                           _const(b, rng, (expand,))])])
        y = b.add_node("Mul", [y, s])
    z = b.add_node("Conv", [y, _const(b, rng, (c, expand, 1, 1)), _const(b, rng, (c,))])
    if stride == 1:
        z = b.add_node("Add", [z, x])
    b.set_outputs([z])
    return verify(b.build()), z


def _check(g, out, rng, threads=(1, 2)):
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs}
    want = ns.run_reference(g, feeds)[out]
    optimised = run_pipeline(g, verify_each=True)
    np.testing.assert_allclose(ns.run_reference(optimised, feeds)[out], want, **TOL)
    for t in threads:
        np.testing.assert_allclose(ns.compile(g, threads=t).run(feeds)[out], want, **TOL)
    return optimised


@pytest.mark.parametrize("shape", [(2, 21, 3, 5), (1, 35, 7, 9), (3, 16, 16, 2)])
@pytest.mark.parametrize("vector_cap", [512, 256, 32])
def test_reorders_round_trip(rng, shape, vector_cap):
    """Register-tile transposes: full and edge tiles along pixels and channels, the
    padding channels written as zeros, 16/8/1-lane vectors, 1 and 2 threads."""
    x = rng.standard_normal(shape).astype(np.float32)
    blocked = to_blocked(x)
    c = shape[1]
    assert blocked.shape == (shape[0], -(-c // 16)) + shape[2:] + (16,) and not blocked[:, -1, ..., c % 16 or 16:].any()
    np.testing.assert_array_equal(from_blocked(blocked, c), x)
    b = GraphBuilder("reorder", fold=False)
    v = b.add_input("x", "float32", x.shape)
    mid = b.add_node("ToBlocked", [v])
    out = b.add_node("FromBlocked", [b.add_node("Exp", [mid])], {"channels": c})
    b.set_outputs([mid, out])
    for threads in (1, 2):
        got = ns.compile(b.build(), threads=threads, vector_cap=vector_cap).run({"x": x})
        np.testing.assert_array_equal(got[mid], blocked)
        np.testing.assert_allclose(got[out], np.exp(x), rtol=1e-6)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2), dict(n=2, c=16, expand=40, k=3, hw=(9, 7)),
                                dict(se=False, c=3, expand=20, hw=(5, 5)), dict(c=32, expand=96, hw=(7, 7))])
def test_inverted_residual_runs_blocked(rng, kw):
    g, out = inverted_residual(rng, **kw)
    optimised = _check(g, out, rng)
    ops = [n.op for n in optimised.nodes]
    assert ops.count("ToBlocked") == 1 and ops.count("FromBlocked") == 1 and "Conv" not in ops
    assert ops.count("ConvBlocked") == (5 if kw.get("se", True) else 3)


@pytest.mark.parametrize("cout, k, stride, hw, pad", [(16, 3, 2, 224, 1), (32, 3, 2, 33, 1), (24, 5, 1, 17, 2),
                                                  (16, 3, 2, 33, 0), (32, 3, 2, 34, 0)])
def test_stem_writes_blocked(rng, cout, k, stride, hw, pad):
    """A 3-channel first convolution reads the NCHW image and writes blocked output
    (unpadded: read in place, the last input row and column unread where 34 is even)."""
    b = GraphBuilder("stem", fold=False)
    x = b.add_input("x", "float32", (2, 3, hw, hw))
    y = b.add_node("Relu", [b.add_node("Conv", [x, _const(b, rng, (cout, 3, k, k)), _const(b, rng, (cout,))],
                                       {"pads": (pad,) * 4, "strides": (stride, stride)})])
    y = b.add_node("Conv", [y, _const(b, rng, (cout, 1, 3, 3))], {"group": cout, "pads": (1,) * 4})
    z = b.add_node("Conv", [y, _const(b, rng, (8, cout, 1, 1))])
    b.set_outputs([z])
    optimised = _check(verify(b.build()), z, rng)
    assert [n.op for n in optimised.nodes] == ["ConvBlocked"] * 3 + ["FromBlocked"]


def test_values_read_outside_are_rebuilt(rng):
    """A value inside a region that is also an output, or read by an op with no
    blocked form (Softmax over channels), is rebuilt in NCHW there."""
    b = GraphBuilder("outside", fold=False)
    x = b.add_input("x", "float32", (1, 20, 6, 6))
    y = b.add_node("Relu", [b.add_node("Conv", [x, _const(b, rng, (20, 20, 1, 1))])])
    d = b.add_node("Conv", [y, _const(b, rng, (20, 1, 3, 3))], {"group": 20, "pads": (1,) * 4})
    z = b.add_node("Conv", [d, _const(b, rng, (12, 20, 1, 1))])
    b.set_outputs([y, b.add_node("Softmax", [d], {"axis": 1}), z])
    g = verify(b.build())
    optimised = _check(g, z, rng)
    assert [n.op for n in optimised.nodes].count("FromBlocked") == 3
    feeds = {"x": rng.standard_normal((1, 20, 6, 6)).astype(np.float32)}
    want = ns.run_reference(g, feeds)
    got = ns.compile(g, threads=1).run(feeds)
    for name in g.output_names():
        np.testing.assert_allclose(got[name], want[name], **TOL)


@pytest.mark.filterwarnings("ignore:invalid value encountered")   # the reference's padding lanes
def test_padding_lanes_never_reach_real_channels(rng):
    """0 / 0 in the padding lanes (channels 20..31) is NaN there; the next pointwise
    convolution reads only real channels, so its output is exact."""
    b = GraphBuilder("nan", fold=False)
    x = b.add_input("x", "float32", (1, 20, 5, 5))
    y = b.add_node("Conv", [x, _const(b, rng, (20, 20, 1, 1))])
    d = b.add_node("Conv", [y, _const(b, rng, (20, 1, 3, 3))], {"group": 20, "pads": (1,) * 4})
    q = b.add_node("Div", [d, b.add_node("Add", [b.add_node("Abs", [d]), b.add_constant(np.float32(1))])])
    q = b.add_node("Div", [q, b.add_node("Abs", [y])])      # a real 1/|y|, NaN in the padding
    z = b.add_node("Conv", [q, _const(b, rng, (7, 20, 1, 1))])
    b.set_outputs([z])
    optimised = _check(verify(b.build()), z, rng)
    assert [n.op for n in optimised.nodes].count("FromBlocked") == 1     # the Divs ran blocked


def test_regions_without_both_kinds_stay_nchw(rng):
    """ResNet's 1x1 and 3x3 layers, or ConvNeXt's lone depthwise layer: no reorders."""
    b = GraphBuilder("resnet_like", fold=False)
    x = b.add_input("x", "float32", (1, 16, 8, 8))
    y = b.add_node("Relu", [b.add_node("Conv", [x, _const(b, rng, (16, 16, 1, 1))])])
    y = b.add_node("Conv", [y, _const(b, rng, (16, 16, 3, 3))], {"pads": (1,) * 4})
    y = b.add_node("Conv", [y, _const(b, rng, (16, 1, 7, 7))], {"group": 16, "pads": (3,) * 4})
    b.set_outputs([b.add_node("Transpose", [y], {"perm": (0, 2, 3, 1)})])
    optimised = run_pipeline(verify(b.build()))
    assert not {"ConvBlocked", "ToBlocked", "FromBlocked"} & {n.op for n in optimised.nodes}


@pytest.mark.parametrize("pool, attrs", [
    ("MaxPool", {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
    ("MaxPool", {"kernel_shape": (3, 3), "strides": (2, 2), "ceil_mode": 1}),        # GoogLeNet's
    ("AveragePool", {"kernel_shape": (2, 2), "strides": (2, 2), "pads": (0, 0, 1, 1), "count_include_pad": 1})])
@pytest.mark.parametrize("k", [7, 3])
def test_stem_chain_runs_blocked_up_to_its_pool(rng, pool, attrs, k):
    """ResNet's 7x7 stem, SqueezeNet's 3x3: the conv, its activation and pool run blocked
    (a 3-D pool whose lane axis has a window of 1), one reorder after the pool; the
    next 3x3 stays NCHW."""
    b = GraphBuilder("stem", fold=False)
    x = b.add_input("x", "float32", (2, 3, 23, 23))
    y = b.add_node("Conv", [x, _const(b, rng, (20, 3, k, k)), _const(b, rng, (20,))],
                   {"strides": (2, 2), "pads": (k // 2,) * 4})
    y = b.add_node(pool, [b.add_node("Relu", [y])], attrs)
    z = b.add_node("Conv", [y, _const(b, rng, (8, 20, 3, 3))], {"pads": (1,) * 4})
    b.set_outputs([z])
    ops = [n.op for n in _check(verify(b.build()), z, rng).nodes]
    assert ops.count("ConvBlocked") == 1 and ops.count("FromBlocked") == 1 and "Conv" in ops
    assert ops.index("ConvBlocked") < ops.index(pool) < ops.index("FromBlocked")


def test_stem_without_a_pool_stays_nchw(rng):
    """A stem whose chain reaches no pool (RegNet's 3x3, ViT's 16x16 patches): the
    reorder of its whole map would cost more than the direct kernel wins, no reorders."""
    b = GraphBuilder("unpooled_stem", fold=False)
    x = b.add_input("x", "float32", (1, 3, 32, 32))
    y = b.add_node("Relu", [b.add_node("Conv", [x, _const(b, rng, (16, 3, 3, 3))],
                                       {"strides": (2, 2), "pads": (1,) * 4})])
    patches = b.add_node("Conv", [x, _const(b, rng, (24, 3, 16, 16))], {"strides": (16, 16)})
    b.set_outputs([b.add_node("Conv", [y, _const(b, rng, (8, 16, 3, 3))]), patches])
    assert "ConvBlocked" not in {n.op for n in run_pipeline(verify(b.build())).nodes}


def test_conv_blocked_reference_matches_conv(rng):
    """ConvBlocked's NumPy reference unpacks its weights back to the Conv's."""
    w = rng.standard_normal((20, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    attrs = dict(depthwise=0, channels=3, out_channels=20, kernel_shape=(3, 3), strides=(2, 2),
                 pads=(1, 1, 1, 1), dilations=(1, 1), activation=None)
    got = get_op("ConvBlocked").reference(attrs, x, pack_dense(w))
    want = get_op("Conv").reference({"pads": (1, 1, 1, 1), "strides": (2, 2)}, x, w)
    np.testing.assert_allclose(from_blocked(got, 20), want, rtol=1e-6)
    wd = rng.standard_normal((20, 1, 3, 3)).astype(np.float32)
    xb = to_blocked(rng.standard_normal((1, 20, 6, 6)).astype(np.float32))
    got = get_op("ConvBlocked").reference(dict(attrs, depthwise=1, channels=20, strides=(1, 1)), xb, pack_depthwise(wd))
    want = get_op("Conv").reference({"pads": (1, 1, 1, 1), "group": 20}, from_blocked(xb, 20), wd)
    np.testing.assert_allclose(from_blocked(got, 20), want, rtol=1e-6)


@pytest.mark.parametrize("vector_cap", [256, 32])
def test_blocked_kernels_on_narrower_vectors(rng, vector_cap):
    """AVX2 (two 8-lane vectors per block) and scalar code give the same numbers."""
    g, out = inverted_residual(rng, n=2, c=20, expand=40, k=3, hw=(6, 9), stride=2)
    feeds = {"x": rng.standard_normal((2, 20, 6, 9)).astype(np.float32)}
    want = ns.run_reference(g, feeds)[out]
    np.testing.assert_allclose(ns.compile(g, threads=1, vector_cap=vector_cap).run(feeds)[out], want, **TOL)


def test_batchnorm_becomes_affine_and_fuses_with_relu(rng):
    """A BatchNorm that follows no Conv (DenseNet's pre-activation) is a per-channel
    Mul and Add, one loop with its ReLU."""
    b = GraphBuilder("bn", fold=False)
    x = b.add_input("x", "float32", (2, 5, 4, 4))
    stats = [b.add_constant(v.astype(np.float32)) for v in
             (rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5), rng.random(5) + 0.5)]
    y = b.add_node("Relu", [b.add_node("BatchNormalization", [x] + stats, {"epsilon": 1e-3})])
    b.set_outputs([y])
    g = verify(b.build())
    optimised = _check(g, y, rng)
    assert [n.op for n in optimised.nodes] == ["FusedElementwise"]
    assert [step[0] for step in optimised.nodes[0].attrs["program"]] == ["Mul", "Add", "Relu"]


@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="needs a C compiler")
def test_blocked_model_in_an_aot_bundle(rng, tmp_path):
    """The blocked kernels link into a C bundle like any other and give the JIT's bits."""
    from nutshell.runtime.aot import AotModel
    from nutshell.runtime.model import aligned_empty
    g, out = inverted_residual(rng, n=1, c=16, expand=48, k=3, hw=(10, 10))
    model = ns.compile(g, threads=2)
    assert "ConvBlocked" in {n.op for n in model.graph.nodes}
    model.export(tmp_path, name="mb")
    lib = AotModel(tmp_path / "libmb.so", "mb", model.graph)
    x = rng.standard_normal((1, 16, 10, 10)).astype(np.float32)
    got = lib.run({"x": x}, aligned_empty(model.arena_size), threads=2)[out]
    np.testing.assert_array_equal(got, model.run({"x": x})[out])


def test_one_channel_value_is_broadcast_in_nchw(rng):
    """A 1-channel map (a spatial attention) times a 20-channel one broadcasts over
    channels in NCHW; blocked it would not, so that Mul reads NCHW values."""
    b = GraphBuilder("attention", fold=False)
    x = b.add_input("x", "float32", (1, 20, 6, 6))
    y = b.add_node("Conv", [x, _const(b, rng, (20, 1, 3, 3))], {"group": 20, "pads": (1,) * 4})
    a = b.add_node("Sigmoid", [b.add_node("Conv", [y, _const(b, rng, (1, 20, 1, 1))])])
    z = b.add_node("Conv", [b.add_node("Mul", [y, a]), _const(b, rng, (8, 20, 1, 1))])
    b.set_outputs([z])
    _check(verify(b.build()), z, rng)


@pytest.mark.parametrize("k, stride, dil, hw, pads", [
    (3, 1, 1, (14, 14), (1, 1, 1, 1)), (5, 1, 1, (14, 14), (2, 2, 2, 2)), (5, 2, 1, (14, 13), (2, 2, 2, 2)),
    (5, 1, 1, (7, 7), (2, 2, 2, 2)), (5, 1, 1, (3, 4), (2, 2, 2, 2)), (3, 2, 1, (23, 30), (1, 1, 1, 1)),
    (3, 1, 2, (9, 11), (2, 1, 2, 3)), (3, 2, 1, (8, 8), (0, 1, 1, 0)), (5, 1, 1, (2, 2), (4, 4, 4, 4))])
@pytest.mark.parametrize("vector_cap", [512, 256])
def test_depthwise_border_windows(rng, k, stride, dil, hw, pads, vector_cap):
    """Blocked depthwise windows sum only their taps inside the input (chosen when the
    code is generated): border rows and columns, maps smaller than the window, windows
    wholly in the padding, dilation, uneven pads; 20 channels (a partial last block)."""
    c = 20
    x = rng.standard_normal((2, c) + hw).astype(np.float32)
    w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    attrs = dict(depthwise=1, channels=c, out_channels=c, kernel_shape=(k, k), strides=(stride, stride),
                 pads=pads, dilations=(dil, dil), activation="Silu")
    b = GraphBuilder("depthwise", fold=False)
    y = b.add_node("ConvBlocked", [b.add_input("x", "float32", to_blocked(x).shape),
                                   b.add_constant(pack_depthwise(w)), b.add_constant(np.pad(bias, (0, 12)))], attrs)
    b.set_outputs([y])
    want = get_op("Conv").reference({"pads": pads, "group": c, "strides": (stride, stride),
                                     "dilations": (dil, dil), "activation": "Silu"}, x, w, bias)
    for threads in (1, 2):
        got = ns.compile(b.build(), threads=threads, vector_cap=vector_cap).run({"x": to_blocked(x)})[y]
        np.testing.assert_allclose(from_blocked(got, c), want, **TOL)
