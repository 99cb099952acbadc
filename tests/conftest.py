import numpy as np
import pytest

from nutshell.compiler.ir import GraphBuilder


def single_op_graph(op, input_specs, attrs=None, const_inputs=None, num_outputs=1):
    """A graph of one `op` node. input_specs: list of (dtype, shape) or None for an
    omitted optional input; const_inputs: index -> array fed as a constant."""
    b = GraphBuilder(f"test_{op.lower()}")
    names = []
    for i, spec in enumerate(input_specs):
        if spec is None:
            names.append("")
        elif const_inputs and i in const_inputs:
            names.append(b.add_constant(const_inputs[i], f"c{i}"))
        else:
            names.append(b.add_input(f"x{i}", spec[0], spec[1]))
    out = b.add_node(op, names, attrs or {})
    b.set_outputs([out] if isinstance(out, str) else list(out))
    return b.build()


def random_feeds(graph, rng, low=-2.0, high=2.0):
    feeds = {}
    for v in graph.inputs:
        dt = v.type.dtype.numpy
        if np.issubdtype(dt, np.floating):
            feeds[v.name] = rng.uniform(low, high, v.type.shape).astype(dt)
        elif dt == np.bool_:
            feeds[v.name] = rng.integers(0, 2, v.type.shape).astype(bool)
        else:
            feeds[v.name] = rng.integers(-5, 6, v.type.shape).astype(dt)
    return feeds


def assert_close(got, want, rtol, atol_scale):
    """rtol relative, atol scaled to the reference's magnitude (stated per test)."""
    atol = atol_scale * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="session")
def _private_kernel_cache(tmp_path_factory):
    """Tests compile into a cache of their own, not the user's ~/.cache/nutshell."""
    import os
    os.environ.setdefault("NUTSHELL_CACHE_DIR", str(tmp_path_factory.mktemp("kernel_cache")))
