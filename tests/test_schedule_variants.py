"""The variant step (compiler/schedule/variants.py): each convolution's algorithm
(im2col GEMM, images batched in one GEMM, Winograd, depthwise) and its sizes are
decided once per node before lowering, recorded on the LowerContext; the
lowering runs what it is given. Forcing each variant on the same node must
match the NumPy reference (tolerances: float32 sums of at most a few hundred
products, Winograd's transforms included: rtol 1e-4, atol 1e-4)."""
import ast
import os

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler import ir
from nutshell.compiler.codegen.model import lower_nodes
from nutshell.compiler.lower.target import host_target
from nutshell.compiler.ops.registry import get_op
from nutshell.compiler.schedule.tables import table_for
from nutshell.compiler.schedule.variants import (DEPTHWISE, DIRECT, WINOGRAD, ConvShape, ConvVariant,
                                                 choose_conv_variant, choose_grad_input_variant,
                                                 choose_grad_weight_variant)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINO = ConvVariant(WINOGRAD, tile_columns=128, band_min_ratio=16)
NARROW_WINO = ConvVariant(WINOGRAD, tile_columns=4, band_min_ratio=1)    # bands of tile rows


def _graph(op, inputs, attrs):
    """One `op` node over graph inputs {name: shape}: weights stay run-time values."""
    b = ir.GraphBuilder("v", fold=False)
    names = [b.add_input(name, "float32", shape) for name, shape in inputs.items()]
    b.set_outputs([b.add_node(op, names, attrs)])
    return b.build()


def _forced(monkeypatch, op, variant):
    monkeypatch.setattr(get_op(op), "variant", lambda node, in_types, consts, target: variant)


def _check(graph, rng, threads=2):
    feeds = {v.name: rng.standard_normal(graph.types[v.name].shape).astype(np.float32) for v in graph.inputs}
    got = ns.compile(graph, threads=threads).run(feeds)
    for name, want in ns.run_reference(graph, feeds).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4)


def _lowered_variant(graph, threads=2):
    target = host_target(threads)
    lowered = list(lower_nodes(graph, target, "v", {}, []))
    return [n.ctx.variant for n in lowered if n.ctx.variant is not None]


CONV = {"x": (4, 16, 6, 6), "w": (16, 16, 3, 3)}
CONV_ATTRS = {"pads": (1, 1, 1, 1)}


@pytest.mark.parametrize("variant", [ConvVariant(DIRECT), ConvVariant(DIRECT, batched_columns=256), WINO,
                                     NARROW_WINO], ids=["im2col", "batched", "winograd", "winograd-bands"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_forced_conv_variant_is_the_one_lowered_and_matches_numpy(variant, threads, rng, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    _forced(monkeypatch, "Conv", variant)
    graph = _graph("Conv", CONV, CONV_ATTRS)
    assert _lowered_variant(graph, threads) == [variant]
    _check(graph, rng, threads)


def test_each_variant_lowers_to_different_code(monkeypatch):
    from nutshell.compiler.lower.loop_printer import print_kernel
    graph, code = _graph("Conv", CONV, CONV_ATTRS), set()
    for variant in (ConvVariant(DIRECT), ConvVariant(DIRECT, batched_columns=256), WINO):
        _forced(monkeypatch, "Conv", variant)
        node = next(iter(lower_nodes(graph, host_target(1), "v", {}, [])))
        code.add(print_kernel(node.kernel))
    assert len(code) == 3


def test_a_depthwise_conv_runs_either_variant(rng, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    graph = _graph("Conv", {"x": (2, 8, 7, 7), "w": (8, 1, 3, 3)}, {"pads": (1, 1, 1, 1), "group": 8})
    assert _lowered_variant(graph) == [ConvVariant(DEPTHWISE)]
    _check(graph, rng)
    _forced(monkeypatch, "Conv", ConvVariant(DIRECT))
    _check(graph, rng)


GRAD = {"input_shape": (2, 16, 8, 8), "pads": (1, 1, 1, 1)}


@pytest.mark.parametrize("variant", [ConvVariant(DIRECT), WINO, NARROW_WINO])
def test_a_forced_grad_input_variant_matches_numpy(variant, rng, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    _forced(monkeypatch, "ConvGradInput", variant)
    graph = _graph("ConvGradInput", {"dy": (2, 16, 8, 8), "w": (16, 16, 3, 3)}, GRAD)
    assert _lowered_variant(graph) == [variant]
    _check(graph, rng)


@pytest.mark.parametrize("phases", [False, True])
def test_strided_grad_input_col2im_either_way(phases, rng, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    _forced(monkeypatch, "ConvGradInput", ConvVariant(DIRECT, col2im_phases=phases))
    _check(_graph("ConvGradInput", {"dy": (2, 16, 4, 4), "w": (16, 8, 3, 3)},
                  {"input_shape": (2, 8, 8, 8), "pads": (1, 1, 1, 1), "strides": (2, 2)}), rng)


@pytest.mark.parametrize("variant", [ConvVariant(DIRECT, grad_k=1024), ConvVariant(DIRECT, grad_k=64, by_dots=True,
                                                                                  dot_tile=(4, 4)),
                                     ConvVariant(DIRECT, grad_k=64, by_dots=True, dot_tile=(3, 2)),
                                     ConvVariant(WINOGRAD, tile_columns=128), ConvVariant(WINOGRAD, tile_columns=4)],
                         ids=["gemm", "dots", "dots-3x2", "winograd", "winograd-bands"])
def test_a_forced_grad_weight_variant_matches_numpy(variant, rng, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    _forced(monkeypatch, "ConvGradWeight", variant)
    graph = _graph("ConvGradWeight", {"x": (2, 16, 8, 8), "dy": (2, 16, 8, 8)},
                   {"weight_shape": (16, 16, 3, 3), "pads": (1, 1, 1, 1)})
    assert _lowered_variant(graph) == [variant]
    _check(graph, rng)


def test_the_choices_follow_the_table():
    target = host_target(1)
    t = table_for(target)
    big = ConvShape(1, (64, 64), (3, 3), (1, 1), (1, 1), 1, (28, 28))
    assert choose_conv_variant(big, target).algorithm == WINOGRAD
    assert choose_conv_variant(ConvShape(1, (64, 64), (3, 3), (1, 1), (1, 1), 1, (28, 28), False),
                               target).algorithm == DIRECT     # weights too wide for Winograd's rounding
    small = ConvShape(8, (64, 64), (1, 1), (1, 1), (1, 1), 1, (7, 7))
    assert choose_conv_variant(small, target) == ConvVariant(DIRECT, batched_columns=t.conv_batched_columns)
    assert choose_grad_weight_variant(ConvShape(2, (3, 16), (3, 3), (2, 2), (1, 1), 1, (8, 8)), target).by_dots
    strided = ConvShape(2, (16, 8), (3, 3), (2, 2), (1, 1), 1, (8, 8))
    assert choose_grad_input_variant(strided, target).col2im_phases


def test_a_small_map_with_few_weights_runs_direct():
    """DenseNet's block 4 (128 -> 32 on 7x7, batch 1): in x out channels at most the
    table's winograd_small_map_max_weights run direct; more channels, a larger map or
    a batch keep Winograd."""
    target = host_target(1)
    t = table_for(target)
    side = int(t.winograd_small_map_pixels ** 0.5)
    shape = lambda n, c, m, hw: ConvShape(n, (c, m), (3, 3), (1, 1), (1, 1), 1, (hw, hw))
    assert 128 * 32 <= t.winograd_small_map_max_weights < 48 * 128
    assert choose_conv_variant(shape(1, 128, 32, side), target).algorithm == DIRECT
    assert choose_conv_variant(shape(1, 48, 128, side), target).algorithm == WINOGRAD
    assert choose_conv_variant(shape(1, 128, 32, 2 * side), target).algorithm == WINOGRAD
    assert choose_conv_variant(shape(4, 128, 32, side + 1), target).algorithm == WINOGRAD


def test_every_convolution_op_has_a_variant_hook():
    for op in ("Conv", "ConvGradInput", "ConvGradWeight", "ConvTranspose", "WinogradConv", "ConvBlocked"):
        assert get_op(op).variant is not None, op


DECIDERS = {"choose_conv_variant", "choose_grad_input_variant", "choose_grad_weight_variant", "takes_winograd",
            "winograd_applies", "winograd_pays_for", "winograd_conv_variant", "_winograd", "table_for", "_table",
            "winograd_pays", "blocked_layout_pays", "gemm_schedule", "k_blocking", "panel_layout", "packs_b",
            "block_bytes", "parallel_min_macs", "dense_accumulator_blocks", "depthwise_row_tile",
            "choose_blocked_tile", "dot_tile"}


def test_the_variant_step_is_the_only_place_variants_are_chosen():
    """No lowering (compiler/ops, compiler/lower) asks the variant rules or the tables
    for a convolution's variant: only the ops' description hooks (ops/conv_variants.py
    and a register call's `variant=`), which lower_nodes calls before lowering. A
    GEMM's tile, packing and k blocking come whole from schedule/gemm.py's gemm_plan."""
    bad = []
    for here, _, files in os.walk(os.path.join(ROOT, "compiler")):
        for f in files:
            path = os.path.relpath(os.path.join(here, f), ROOT)
            if not f.endswith(".py") or not path.startswith(("compiler/ops", "compiler/lower")) or \
                    path in ("compiler/ops/conv_variants.py", "compiler/lower/target.py"):   # (its description)
                continue
            tree = ast.parse(open(os.path.join(here, f)).read())
            given = [k.value for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "variant"]
            named = {v.id for v in given if isinstance(v, ast.Name)}      # a hook defined in the op's file
            given += [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in named]
            hooks = {id(n) for v in given for n in ast.walk(v)}
            for node in ast.walk(tree):
                name = node.id if isinstance(node, ast.Name) else node.name if isinstance(node, ast.alias) else None
                if name in DECIDERS and id(node) not in hooks and not isinstance(node, ast.alias):
                    bad.append(f"{path}:{node.lineno} asks {name}")
    assert not bad, "\n".join(bad)


def _forced_gemm(monkeypatch, **fields):
    """Every GEMM emitted with the default plan's fields replaced by `fields`."""
    from dataclasses import replace
    from nutshell.compiler.lower import gemm
    chosen = gemm.gemm_plan
    monkeypatch.setattr(gemm, "gemm_plan", lambda *a, **k: replace(chosen(*a, **k), **fields))


def _gemm_plans():
    from nutshell.compiler.schedule.gemm import GemmSchedule
    lanes = host_target(1).lanes(ir.DType.float32)
    return [dict(packs=False, dot_tile=(3, 2)), dict(packs=True), dict(packs=True, kc=24, k_blocks=4, block_bytes=1),
            dict(packs=False, tile=GemmSchedule(3, lanes, lanes)),
            dict(packs=True, tile=GemmSchedule(5, 2 * lanes, lanes), kc=16, k_blocks=5)]


@pytest.mark.parametrize("plan", range(5), ids=["direct", "packed", "k-blocks", "3-row-tile", "5-row-tile"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_forced_gemm_plan_matches_numpy(plan, threads, rng, monkeypatch):
    """MatMul's GEMM with each plan (B read in place or packed, k blocks, tiles) forced."""
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    _forced_gemm(monkeypatch, **_gemm_plans()[plan])
    _check(_graph("MatMul", {"a": (37, 80), "b": (80, 70)}, {}), rng, threads)
    _check(_graph("MatMul", {"a": (37, 80), "b": (80, 1)}, {}), rng, threads)     # n == 1: dot products
