"""The convolution gradients' GEMM paths at the shapes ResNet's downsampling layers
give them (stride 2, 3x3 and 1x1): the weight gradient's dY staging and dW
finish move data in register tiles (edge tiles when channels or pixels are not
a multiple of the lanes), the teams' partial sums added in team order. Each
case against the NumPy reference at 1 and 2 threads, and run twice for the same
bits. Tolerance: float32 sums of at most a few thousand products of values in
[-2, 2]: rtol 1e-4, atol 1e-4 x the largest |value|."""
import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler import ir

from conftest import assert_close, random_feeds, single_op_graph


def _check(graph, rng, threads):
    feeds = random_feeds(graph, rng)
    model = ns.compile(graph, threads=threads)
    got, again = model.run(feeds), model.run(feeds)
    for name, want in ns.run_reference(graph, feeds).items():
        assert_close(got[name], want, rtol=1e-4, atol_scale=1e-4)
        assert np.array_equal(got[name], again[name])


# (batch, in channels, out channels, map, kernel, stride): odd batches leave an image
# to the shared loop; 20, 24 or 33 channels, 5x5 and 3x3 maps need edge tiles; 1x1
# weight gradients with more than 64 input channels (fewer run as dot products); at
# 1x1 and 2x2 stride 3 no tap reaches some of dX's phases (zeroed, not computed)
SHAPES = [(2, 16, 32, 8, 3, 2), (3, 20, 24, 10, 3, 2), (5, 72, 32, 8, 1, 2), (3, 80, 20, 7, 1, 2),
          (4, 32, 16, 6, 3, 1), (3, 65, 33, 5, 1, 1), (2, 8, 16, 10, 1, 3), (2, 8, 16, 11, 2, 3)]


def _graph(op, shapes, attrs):
    return single_op_graph(op, [("float32", shape) for shape in shapes], attrs)


def _node(op, n, c, m, h, k, s):
    """(input shapes, attributes) of a `k` x `k` convolution node, forward or either
    gradient, stride `s`, padded to keep the map at stride 1."""
    o = (h + 2 * (k // 2) - k) // s + 1
    attrs = {"pads": (k // 2,) * 4, "strides": (s, s)}
    if op == "ConvGradWeight":
        return [(n, c, h, h), (n, m, o, o)], dict(attrs, weight_shape=(m, c, k, k))
    if op == "ConvGradInput":
        return [(n, m, o, o), (m, c, k, k)], dict(attrs, input_shape=(n, c, h, h))
    return [(n, c, h, h), (m, c, k, k)], attrs


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", ["ConvGradWeight", "ConvGradInput", "Conv"])
def test_against_reference(op, shape, threads, rng, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    _check(_graph(op, *_node(op, *shape)), rng, threads)


@pytest.mark.parametrize("phases", [False, True])
@pytest.mark.parametrize("geometry", [((6, 24, 16, 8, 3, 2), 64), ((4, 16, 20, 6, 1, 1), 80),
                                      ((5, 8, 12, 9, 3, 2), 50)], ids=["3x3s2", "1x1", "odd-map"])
@pytest.mark.parametrize("threads", [1, 2])
def test_input_gradient_with_images_in_one_gemm(geometry, phases, threads, rng, monkeypatch):
    """dY of several images side by side as the GEMM's columns (batched_columns), then
    col2im per image from its columns (3, 2 and, at 2 threads, 2 images a GEMM; 5 images
    on 2 threads leave one to the shared loop)."""
    from nutshell.compiler.ops.registry import get_op
    from nutshell.compiler.schedule.variants import DIRECT, ConvVariant
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    (n, c, m, h, k, s), columns = geometry
    monkeypatch.setattr(get_op("ConvGradInput"), "variant", lambda *a: ConvVariant(
        DIRECT, col2im_phases=phases and s > 1, batched_columns=columns))
    _check(_graph("ConvGradInput", *_node("ConvGradInput", n, c, m, h, k, s)), rng, threads)


def test_small_maps_input_gradient_batches_images():
    from nutshell.compiler.lower.target import host_target
    from nutshell.compiler.schedule.tables import table_for
    from nutshell.compiler.schedule.variants import ConvShape, choose_grad_input_variant
    target = host_target(1)
    columns = table_for(target).grad_input_batched_columns
    small = ConvShape(32, (256, 512), (3, 3), (2, 2), (1, 1), 1, (8, 8), dy_hw=(4, 4))
    assert choose_grad_input_variant(small, target).batched_columns == columns
    large = ConvShape(32, (64, 128), (3, 3), (2, 2), (1, 1), 1, (32, 32), dy_hw=(16, 16))
    assert choose_grad_input_variant(large, target).batched_columns == 0
