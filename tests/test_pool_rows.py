"""MaxPool by rows (ops/pool.py's _max_by_rows: the max down the window into a padded
plane, then along its rows): padding, ceil mode, dilation, integers, the blocked
layout, NaN and the parallel loop against the NumPy reference. Max is exact: results compared bit for bit."""
import numpy as np
import pytest

import nutshell as ns
from conftest import random_feeds, single_op_graph

CASES = [   # (dtype, input shape, attrs)
    ("float32", (1, 3, 13, 17), {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 0, 0, 1), "ceil_mode": 1}),
    ("float32", (2, 2, 12, 12), {"kernel_shape": (3, 2), "strides": (1, 2), "dilations": (2, 1)}),
    ("float32", (1, 2, 7, 7), {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}),
    ("float32", (1, 16, 64, 64), {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}),     # a parallel loop
    ("float32", (1, 2, 12, 12), {"kernel_shape": (9, 9), "pads": (4, 4, 4, 4)}),     # the general nest
    ("int8", (1, 3, 9, 9), {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
    ("int32", (1, 2, 8, 8), {"kernel_shape": (2, 2), "strides": (2, 2)}),
    # the blocked layout's NCHW16c: a window of 1 on the lane axis (ceil mode, one-sided pads)
    ("float32", (1, 2, 9, 11, 16), {"kernel_shape": (3, 3, 1), "strides": (2, 2, 1), "pads": (1, 0, 0, 0, 1, 0),
                                    "ceil_mode": 1}),
    ("float32", (1, 4, 33, 33, 16), {"kernel_shape": (3, 3, 1), "strides": (2, 2, 1), "pads": (1, 1, 0, 1, 1, 0)}),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}-{sorted(c[2].items())}")
def test_maxpool_by_rows_matches_reference(case, threads, rng):
    dtype, shape, attrs = case
    graph = single_op_graph("MaxPool", [(dtype, shape)], attrs)
    feeds = random_feeds(graph, rng)
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=threads).run(feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_maxpool_by_rows_propagates_nan(rng):
    """A NaN in a window makes its max NaN wherever it sits (NumPy's maximum)."""
    graph = single_op_graph("MaxPool", [("float32", (1, 2, 9, 11))],
                            {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)})
    feeds = random_feeds(graph, rng)
    x = next(iter(feeds.values()))
    x[0, 0, 0, 0], x[0, 0, 4, 7], x[0, 1, 8, 10] = np.nan, np.nan, np.inf
    got = ns.compile(graph, threads=1).run(feeds)
    want = ns.run_reference(graph, feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
        assert np.isnan(got[name]).sum() == np.isnan(want[name]).sum() > 0
