"""Which loops of a lowering run in parallel: one rule, the target's thresholds
(tables.py). A lowering marks a loop whose iterations are independent with the
work under it (`parallel_candidate=(family, work)`); the schedule step
(kernels.py) asks here whether it runs "parallel" or "serial". `family` names
the threshold: maps, reductions and pools use the general one; a few op families
whose element costs differ have their own (each measured, tables.py)."""
from .tables import table_for

FAMILIES = {
    "map": "parallel_min_work",             # element-wise maps, reductions, pools, copies
    "depthwise": "depthwise_parallel_min_work",   # blocked depthwise convolutions
    "winograd": "winograd_parallel_min_tiles",    # Winograd transforms (work in tiles)
    "col2im": "col2im_parallel_min_work",   # a gradient's scatter of columns back to the image
    "gemm": "gemm_parallel_min_macs",       # a GEMM's row or column blocks (work in multiply-adds)
    "teams": None,      # always: the lowering already made one iteration per share (thread teams,
                        # chunks sized by the thread count, a GPU's points)
}


def worth_parallel(target, work, family="map"):
    """Whether `work` (the family's unit) under a loop pays for a fork/join."""
    threshold = FAMILIES[family]
    return threshold is None or work >= getattr(table_for(target), threshold)


def splits(target, candidate):
    """Whether the schedule step will make a loop marked `candidate` = (family, work)
    parallel: asked ahead only by a lowering that gives each thread its own scratch
    slot under that loop (the slot's size is the lowering's; the rule stays here)."""
    family, work = candidate
    return worth_parallel(target, work, family)


def loop_kind(target, work, family="map"):
    return "parallel" if worth_parallel(target, work, family) else "serial"
