"""The scheduling layer (compiler/schedule/): one table per target, the target's
description as the single cache-key source, and lowerings that take their
choices from the table (their results are the tests of test_ops.py, run per
vector width there)."""
import dataclasses

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.cuda.target import cuda_target
from nutshell.compiler.lower.target import CpuTarget, host_target
from nutshell.compiler.schedule import loops
from nutshell.compiler.schedule.tables import SCHEDULE_VERSION, TABLES, table_for, table_id


def test_every_table_fills_every_threshold_with_a_positive_number():
    for table in TABLES.values():
        for f in dataclasses.fields(table):
            value = getattr(table, f.name)
            assert f.name == "name" or isinstance(value, bool) or (isinstance(value, int) and value > 0), \
                (table.name, f.name)


@pytest.mark.parametrize("target, name", [
    (CpuTarget("x86_64-unknown-linux-gnu", "x86-64-v4", "+avx512f", 1, 512), "avx512"),
    (CpuTarget("x86_64-unknown-linux-gnu", "znver5", "+avx512f", 1, 512), "avx512"),
    (CpuTarget("x86_64-unknown-linux-gnu", "znver4", "+avx512f", 1, 512), "avx512-zen4"),
    (CpuTarget("x86_64-unknown-linux-gnu", "znver4", "+avx512f", 1, 256), "avx2"),
    (CpuTarget("x86_64-unknown-linux-gnu", "x86-64-v3", "+avx2", 1, 256), "avx2"),
    (CpuTarget("x86_64-unknown-linux-gnu", "x86-64-v4", "+avx512f", 1, 256), "avx2"),
    (CpuTarget("aarch64-linux-gnu", "generic", "+neon", 1, 128), "sse-neon"),
    (CpuTarget("x86_64-unknown-linux-gnu", "generic", "", 1, 32), "scalar"),
    (cuda_target("cuda", "sm_80"), "cuda-sm_80"),
    (cuda_target("cuda-emulated"), "cuda-sm_90"),
])
def test_each_target_gets_its_table(target, name):
    assert table_for(target).name == name


def test_the_description_names_everything_that_changes_the_code():
    wide, narrow = host_target(2, 512), host_target(2, 256)
    text = wide.description()
    for part in (wide.triple, f"cpu={wide.cpu}", f"threads=2", f"vector_bits={wide.vector_bits}",
                 f"schedule={table_for(wide).name}@{SCHEDULE_VERSION}#"):
        assert part in text
    assert wide.key() == text                       # the older name is the same source
    assert len({wide.description(), narrow.description(), host_target(1, 512).description(),
                host_target(2, 32).description()}) == 4


def test_parallel_thresholds_come_from_the_table():
    target = host_target(2)
    table = table_for(target)
    assert loops.loop_kind(target, table.parallel_min_work) == "parallel"
    assert loops.loop_kind(target, table.parallel_min_work - 1) == "serial"
    assert loops.worth_parallel(target, table.winograd_parallel_min_tiles, "winograd")
    assert not loops.worth_parallel(target, table.depthwise_parallel_min_work - 1, "depthwise")


def test_a_changed_threshold_changes_the_description(monkeypatch):
    """A table patched at run time (or edited) never shares a cache entry with the old one."""
    from nutshell.compiler.schedule import tables
    target = host_target(1, 256)
    before = target.description()
    monkeypatch.setattr(tables, "AVX2", dataclasses.replace(tables.AVX2, depthwise_row_tile=2))
    assert table_for(target).depthwise_row_tile == 2 and target.description() != before
    assert table_id(tables.AVX2) in target.description()


@pytest.mark.parametrize("switch", ["blocked_layout", "winograd"])
def test_a_variant_the_table_turns_off_is_not_used(rng, monkeypatch, switch):
    """The pipeline asks the target's table for its variants: off, the graph keeps plain
    Convs (and the results stay the reference's)."""
    from nutshell.compiler import ir
    from nutshell.compiler.passes.pipeline import optimize_graph
    from nutshell.compiler.schedule import tables
    b = ir.GraphBuilder("v", fold=False)
    x = b.add_input("x", "float32", (1, 32, 14, 14))
    w1 = b.add_constant(rng.standard_normal((32, 1, 3, 3)).astype(np.float32) * 0.3)
    w2 = b.add_constant(rng.standard_normal((64, 32, 1, 1)).astype(np.float32) * 0.3)
    w3 = b.add_constant(rng.standard_normal((64, 64, 3, 3)).astype(np.float32) * 0.1)
    y = b.add_node("Conv", [x, w1], {"group": 32, "pads": (1, 1, 1, 1)})
    y = b.add_node("Relu", [b.add_node("Conv", [y, w2])])
    y = b.add_node("Conv", [y, w3], {"pads": (1, 1, 1, 1)})
    b.set_outputs([y])
    g = b.build()
    op = {"blocked_layout": "ConvBlocked", "winograd": "WinogradConv"}[switch]
    target = host_target(1, 256)
    assert op in {n.op for n in optimize_graph(g, target=target).nodes}
    monkeypatch.setattr(tables, "AVX2", dataclasses.replace(tables.AVX2, **{switch: False}))
    assert op not in {n.op for n in optimize_graph(g, target=target).nodes}
    feeds = {"x": rng.standard_normal((1, 32, 14, 14)).astype(np.float32)}
    got = ns.compile(g, threads=1, vector_cap=256).run(feeds)[y]
    np.testing.assert_allclose(got, ns.run_reference(g, feeds)[y], rtol=1e-4, atol=1e-4)
