"""Winograd on small maps with the channels along the vectors (ops/winograd_small.py):
the forward (run-time weights, with the fused epilogue), the input gradient and the
weight gradient against the NumPy reference (tolerances as test_schedule_variants.py's:
rtol 1e-4, atol 1e-4; F(4x4, 3x3)'s tiles, whose rounding is ~10x F(2x2)'s, atol 5e-5 of the
largest output: ResNet-18 CIFAR's shapes measured 0.6-1.2e-5 of it), the same bits at 1 and 3 threads (the weight gradient's teams
sum their partials, on either path: within the tolerance there), the same bits as
the tile-row path's (the same sums in the same order), and the variant step's choice."""
import dataclasses

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler import ir
from nutshell.compiler.codegen.model import lower_nodes
from nutshell.compiler.lower.target import host_target
from nutshell.compiler.schedule import variants
from nutshell.compiler.schedule.gemm import panel_layout
from nutshell.compiler.schedule.variants import WINOGRAD, ConvShape, choose_conv_variant

PADS = {"pads": (1, 1, 1, 1)}
CASES = [(3, 32, 64, 7), (17, 64, 96, 4)]    # n, C, M, map: an odd map; images left over at 3 threads
# (channels in AVX-512's 32-column panels: both ways, C and M, along the channels)


def _graph(op, n, c, m, hw, epilogue=False):
    b = ir.GraphBuilder("small", fold=False)
    add = lambda name, shape: b.add_input(name, "float32", shape)
    if op == "Conv":
        names, attrs = [add("x", (n, c, hw, hw)), add("w", (m, c, 3, 3))], dict(PADS)
        if epilogue:       # bias, a fused residual and ReLU: the epilogue along M
            names += [add("b", (m,)), add("r", (n, m, hw, hw))]
            attrs["activation"] = "Relu"
    elif op == "ConvGradInput":
        names, attrs = [add("dy", (n, m, hw, hw)), add("w", (m, c, 3, 3))], dict(PADS, input_shape=(n, c, hw, hw))
    else:
        names, attrs = [add("x", (n, c, hw, hw)), add("dy", (n, m, hw, hw))], dict(PADS, weight_shape=(m, c, 3, 3))
    b.set_outputs([b.add_node(op, names, attrs)])
    return b.build()


def _feeds(graph, rng):
    return {v.name: rng.standard_normal(graph.types[v.name].shape).astype(np.float32) for v in graph.inputs}


def _run(graph, feeds, threads):
    return next(iter(ns.compile(graph, threads=threads).run(feeds).values()))


def _variant(graph, threads=1):
    return [n.ctx.variant for n in lower_nodes(graph, host_target(threads), "v", {}, [])
            if n.ctx.variant is not None][0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n%d-%dx%d-map%d" % c)
@pytest.mark.parametrize("op", ["Conv", "Conv+epilogue", "ConvGradInput", "ConvGradWeight"])
def test_small_maps_along_the_channels_match_numpy_at_any_thread_count(op, case, rng, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    graph = _graph(op.split("+")[0], *case, epilogue=op.endswith("epilogue"))
    variant = _variant(graph)
    assert variant.algorithm == WINOGRAD and variant.channels_last
    feeds = _feeds(graph, rng)
    want = next(iter(ns.run_reference(graph, feeds).values()))
    one, three = _run(graph, feeds, 1), _run(graph, feeds, 3)
    atol = 1e-4 if variant.out_tile == 2 else 5e-5 * np.abs(want).max()
    np.testing.assert_allclose(one, want, rtol=1e-4, atol=atol)
    if op == "ConvGradWeight":
        np.testing.assert_allclose(three, want, rtol=1e-4, atol=atol)
    else:
        assert np.array_equal(three, one)


@pytest.mark.parametrize("op", ["Conv", "ConvGradInput", "ConvGradWeight"])
def test_the_same_bits_as_along_the_tile_rows(op, rng, monkeypatch):
    """Both ways sum U V over the channels in the same order (one k block each), with
    F(2x2, 3x3)'s tiles. At 2 threads: the forward's teams of images, the weight
    gradient's whole batch in one step."""
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    table = variants.table_or_host
    monkeypatch.setattr(variants, "table_or_host",
                        lambda target: dataclasses.replace(table(target), winograd_channels_last_tile=2))
    graph = _graph(op, 16, 64, 64, 4)
    feeds = _feeds(graph, rng)
    assert _variant(graph, 2).channels_last and _variant(graph, 2).out_tile == 2
    along_c = _run(graph, feeds, 2)
    monkeypatch.setattr(variants, "_channels_last", lambda target, shape, tile=2: ())
    assert not _variant(graph, 2).channels_last
    assert np.array_equal(_run(graph, feeds, 2), along_c)


def test_the_choice_follows_the_table():
    target = host_target(1)
    table = variants.table_or_host(target)
    row_tiles, tile = table.winograd_channels_last_row_tiles, table.winograd_channels_last_tile
    shape = lambda c, m, hw: ConvShape(32, (c, m), (3, 3), (1, 1), (1, 1), 1, (hw, hw))
    if table.winograd_channels_last:
        chosen = choose_conv_variant(shape(256, 256, 8), target)
        assert chosen.channels_last == panel_layout(256, target) and chosen.out_tile == tile
        if table.winograd_f4_weight_ratio < 512 * 512 // 32:     # F(4x4)'s 32 tiles too few for 512 x 512
            assert choose_conv_variant(shape(512, 512, 4), target).out_tile == 2
        assert choose_conv_variant(shape(64, 64, tile * row_tiles + tile), target).channels_last == ()
        # the rule counts the table's tiles: F(4x4)'s take maps twice F(2x2)'s width
        assert choose_conv_variant(shape(64, 64, tile * row_tiles), target).out_tile == tile
    panel = panel_layout(64, target)[1]
    assert choose_conv_variant(shape(64, panel + 8, 4), target).channels_last == ()   # panels would need padding


@pytest.mark.parametrize("case", [(1, 64, 64, 56), (2, 32, 96, 13), (3, 96, 32, 7)], ids=lambda c: "n%d-%dx%d-map%d" % c)
def test_constant_weights_take_f4_along_the_channels_where_the_table_says(case, rng, monkeypatch):
    """Inference: constant weights transformed once at compile time into F(4x4)'s Ut panels
    (passes/winograd.py), bias, a residual (added after the move back to NCHW) and ReLU,
    against the NumPy reference at 1 and 2 threads, within F(4x4)'s tolerance."""
    from nutshell.compiler.ops.conv_common import conv_reference
    from nutshell.compiler.passes.pipeline import optimize_graph
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    n, c, m, hw = case
    w = (rng.standard_normal((m, c, 3, 3)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    b = ir.GraphBuilder("const", fold=False)
    x, r = b.add_input("x", "float32", (n, c, hw, hw)), b.add_input("r", "float32", (n, m, hw, hw))
    conv = b.add_node("Conv", [x, b.add_constant(w, "w"), b.add_constant(bias, "b")], dict(PADS))
    b.set_outputs([b.add_node("Relu", [b.add_node("Add", [conv, r])])])
    graph = b.build()
    feeds = _feeds(graph, rng)
    nodes = [nd for nd in optimize_graph(graph).nodes if nd.op == "WinogradConv"]
    table = variants.table_or_host(None)
    expect_f4 = table.winograd_constant_f4 and table.winograd_channels_last_tile == 4 and \
        -(-hw // 4) <= table.winograd_constant_f4_row_tiles
    assert len(nodes) == 1 and (nodes[0].attrs.get("out_tile") == 4) == expect_f4
    want = np.maximum(conv_reference(dict(PADS), feeds["x"], w, bias, None) + feeds["r"], 0)
    for threads in (1, 2):
        got = _run(graph, feeds, threads)
        assert np.abs(got - want).max() <= 5e-5 * np.abs(want).max() + 1e-5, threads
