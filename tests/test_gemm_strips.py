"""A constant A stored in strips of the GEMM's rows (schedule/gemm.py's strips_of, lower/gemm.py's
a_strips): Winograd's transformed weights U[xi] on tables that take them (AVX2, Zen 4), so a tile's
broadcasts of A read one stream. The layout round-trips, and WinogradConv over strips gives the
reference's numbers and the same bits as over row-major U (the sums run in the same order)."""
import dataclasses

import numpy as np
import pytest

import nutshell as ns
from conftest import assert_close, random_feeds, single_op_graph
from nutshell.compiler.lower.target import CpuTarget, host_target
from nutshell.compiler.schedule import tables
from nutshell.compiler.schedule.gemm import strip_rows, strips_of, unstrip


@pytest.mark.parametrize("m, k, rows", [(24, 5, 6), (25, 7, 6), (4, 3, 6), (13, 16, 4), (6, 1, 6)])
def test_strips_round_trip_and_layout(m, k, rows, rng):
    a = rng.standard_normal((m, k)).astype(np.float32)
    s = strips_of(a, rows)
    assert s.shape == a.shape
    np.testing.assert_array_equal(unstrip(s, rows), a)
    flat, whole = s.reshape(-1), m - m % rows
    for r in range(m):       # A[row0 + i, kk] at row0 * k + kk * (the strip's rows) + i
        row0 = min(r - r % rows, whole)
        height = rows if row0 < whole else m - whole
        for kk in range(k):
            assert flat[row0 * k + kk * height + r - row0] == a[r, kk]


@pytest.mark.parametrize("x, w", [
    ((1, 16, 9, 10), (26, 16, 3, 3)),     # 4 strips of 6 and one of 2
    ((2, 16, 8, 8), (16, 16, 3, 3)),      # two strips of 6 and one of 4, two images
    ((1, 32, 14, 14), (48, 32, 3, 3)),    # whole strips only
])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cap", [256, 512])      # 512: this host's widest table (AVX-512's on Zen 4)
def test_winograd_over_strips_matches_reference_and_row_major_bits(x, w, threads, cap, rng, monkeypatch):
    graph = single_op_graph("Conv", [("float32", x), ("float32", w), ("float32", (w[0],))],
                            {"pads": (1, 1, 1, 1)},
                            {1: rng.normal(size=w).astype(np.float32), 2: rng.normal(size=w[0]).astype(np.float32)})
    feeds = random_feeds(graph, rng)
    want = ns.run_reference(graph, feeds)
    results = {}
    table = tables.table_for(host_target(1, cap))
    attr = next(k for k, v in vars(tables).items() if v is table)
    for strips in (True, False):
        monkeypatch.setattr(tables, attr, dataclasses.replace(table, a_strips=strips))
        compiled = ns.compile(graph, threads=threads, vector_cap=cap)
        node = next(n for n in compiled.graph.nodes if n.op == "WinogradConv")
        assert bool(node.attrs.get("a_strips")) == strips
        results[strips] = compiled.run(feeds)
        if strips:     # the reference of the stripped node undoes the strips
            for name in want:
                assert_close(ns.run_reference(compiled.graph, feeds)[name], want[name], 1e-4, 1e-5)
    for name in want:
        assert_close(results[True][name], want[name], 1e-4, 1e-5)
        np.testing.assert_array_equal(results[True][name], results[False][name])


def test_strips_follow_the_table():
    assert tables.table_for(host_target(1, 256)).a_strips
    assert not tables.AVX512.a_strips and not tables.SSE_NEON.a_strips and not tables.SCALAR.a_strips
    zen4 = CpuTarget("x86_64-unknown-linux-gnu", "znver4", "+avx512f", 1, 512)
    assert tables.table_for(zen4).a_strips and strip_rows(zen4) == tables.AVX512_ZEN4.gemm_mr
