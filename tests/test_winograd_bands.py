"""Winograd on one image at two threads when a thread's half of the map exceeds
TILE_COLUMNS tiles: bands of tile rows dividing the map, dealt to the threads as
they come (ops/winograd.py). Against the NumPy reference, tolerance as test_ops.py's
(rtol 1e-4, atol 1e-5 scaled to the output's magnitude)."""
import numpy as np
import pytest

import nutshell as ns
from conftest import assert_close, random_feeds, single_op_graph

F = "float32"
CASES = [   # input, weight; output channels at most half the input's, or few weights (the split's rules)
    ((1, 32, 27, 27), (128, 32, 3, 3)),     # 32 x 128 channels (SqueezeNet's): 14 rows, split in two or three
    ((1, 32, 38, 40), (16, 32, 3, 3)),      # 19 tile rows of 20: bands of one row
    ((1, 40, 36, 34), (18, 40, 3, 3)),      # 18 rows of 17: 6 bands of 3 rows (3 of 6 at 3 threads)
    ((1, 32, 56, 56), (16, 32, 3, 3)),      # 28 rows of 28: 14 bands of 2 rows, an even count (not 7 of 4)
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shapes", CASES, ids=lambda s: "x".join(map(str, s[0])))
def test_winograd_bands_dealt_to_threads(shapes, threads, rng):
    x, w = shapes
    graph = single_op_graph("Conv", [(F, x), (F, w), (F, (w[0],))], {"pads": (1, 1, 1, 1)},
                            {1: rng.normal(size=w).astype(np.float32), 2: rng.normal(size=w[0]).astype(np.float32)})
    compiled = ns.compile(graph, threads=threads)
    assert any(n.op == "WinogradConv" for n in compiled.graph.nodes)
    feeds = random_feeds(graph, rng)
    want = ns.run_reference(graph, feeds)
    got = compiled.run(feeds)
    for name in want:
        assert_close(got[name], want[name], 1e-4, 1e-5)


def test_winograd_bands_give_the_same_bits_at_any_thread_count(rng):
    """Bands of any height and count compute each output the same way (the 16 GEMMs'
    k order per column does not change with a band's width)."""
    x, w = CASES[-1]
    graph = single_op_graph("Conv", [(F, x), (F, w)], {"pads": (1, 1, 1, 1)},
                            {1: rng.normal(size=w).astype(np.float32)})
    feeds = random_feeds(graph, rng)
    outs = [ns.compile(graph, threads=t).run(feeds) for t in (1, 2, 3)]
    for out in outs[1:]:
        for name in out:
            assert np.array_equal(out[name], outs[0][name])
