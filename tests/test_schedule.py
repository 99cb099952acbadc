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
from nutshell.compiler.schedule.tables import SCHEDULE_VERSION, TABLES, table_for


def test_every_table_fills_every_threshold_with_a_positive_number():
    for table in TABLES.values():
        for f in dataclasses.fields(table):
            value = getattr(table, f.name)
            assert f.name == "name" or (isinstance(value, int) and value > 0), (table.name, f.name)


@pytest.mark.parametrize("target, name", [
    (CpuTarget("x86_64-unknown-linux-gnu", "x86-64-v4", "+avx512f", 1, 512), "avx512"),
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
                 f"schedule={table_for(wide).name}@{SCHEDULE_VERSION}"):
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
