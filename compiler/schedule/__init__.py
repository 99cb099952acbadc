"""Schedules apart from algorithms: for each op family, the choices a lowering
leaves open (vector width, parallel loops, tiling, packing, the variant) made
from the target. Sits below lower/ and the graph passes: both ask it, and it
imports nothing of theirs (tests/test_layering.py)."""
