"""The schedule step: a finished kernel's loop nest in, the same nest with its
loops' kinds chosen out. Lowerings emit algorithm-only nests: every loop serial
(or vector), the ones whose iterations are independent marked with a
`parallel_candidate=(family, work)`; this decides, from the target's table, which
of them run split across threads. It runs once on every kernel, for CPU and
CUDA alike, before code generation and before the CUDA grid mapping (which reads
the parallel loops): lower_nodes in codegen/model.py calls it."""
from dataclasses import replace

from ..lower.loop_ir import For, Kernel
from .loops import loop_kind


def schedule_kernel(kernel: Kernel, target) -> Kernel:
    """`kernel` with each candidate loop made parallel where its work pays for a
    fork/join on `target` (schedule/loops.py); a new kernel, the input untouched."""
    return replace(kernel, body=_scheduled(kernel.body, target))


def _scheduled(stmts, target):
    return [_scheduled_loop(s, target) if isinstance(s, For) else s for s in stmts]


def _scheduled_loop(loop, target):
    kind = loop.kind
    if loop.parallel_candidate is not None:
        family, work = loop.parallel_candidate
        kind = loop_kind(target, work, family)
    return replace(loop, kind=kind, body=_scheduled(loop.body, target))
