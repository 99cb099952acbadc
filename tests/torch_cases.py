"""Shared harness for tests/test_torch_frontend.py: the same model code run
under real PyTorch and traced by nutshell (reference interpreter and compiled)."""
import numpy as np

import nutshell as ns

try:
    import torch
except ImportError:       # the comparisons skip; see the tests' skip marks
    torch = None


def inputs(seed=0):
    """Named example arrays; each case names the ones it takes."""
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)     # noqa: E731
    return {
        "x": f(2, 3, 4), "y": f(2, 3, 4), "w": f(4, 5), "b3": f(2, 4, 5), "v": f(6), "s": f(3),
        "pos": (np.abs(f(2, 3, 4)) + 0.1).astype(np.float32),
        "ids": rng.integers(0, 4, (2, 3)).astype(np.int64),
        "i": rng.integers(-5, 6, (2, 3, 4)).astype(np.int64),
        "mask": rng.random((2, 3, 4)) < 0.5,
        "img": f(2, 3, 6, 6), "logits": f(5, 4), "labels": rng.integers(0, 4, (5,)).astype(np.int64),
        "prob": rng.uniform(0.05, 0.95, (5, 4)).astype(np.float32),
        "seq_logits": f(2, 4, 3), "seq_labels": rng.integers(0, 4, (2, 3)).astype(np.int64),
        "labels_ig": np.array([0, -100, 3, 1, -100], np.int64), "bits": (rng.random((5, 4)) < 0.5).astype(np.float32),
        "b5": f(5), "w4": f(4), "w4p": (rng.random(4) + 0.5).astype(np.float32), "s_pos": (rng.random(3) + 0.5).astype(np.float32),
        "k": f(4, 3, 3, 3), "kb": f(4), "kd": f(3, 1, 3, 3), "seq": f(2, 3, 10), "k1": f(4, 3, 3), "kt": f(3, 2, 3, 3),
    }


class Case(ns.nn.Module):
    def __init__(self, fn, lib):
        super().__init__()
        self.fn, self.lib = fn, lib

    def forward(self, *xs):
        return self.fn(self.lib, *xs)


def _torch_value(out):
    if isinstance(out, (tuple, list)):
        return [v for o in out for v in _torch_value(o)]
    return [out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)]


def torch_run(fn, arrays):
    return _torch_value(fn(torch, *[torch.from_numpy(a.copy()) for a in arrays]))


def trace(fn, arrays, float64=False):
    """float64=True keeps float64 arrays float64 (otherwise they trace as float32)."""
    examples = [ns.InputSpec(a.shape, ns.float64) if float64 and a.dtype == np.float64 else a for a in arrays]
    return Case(fn, ns).trace(example_inputs=tuple(examples))


def reference_run(fn, arrays, float64=False):
    graph = trace(fn, arrays, float64)
    outs = ns.run_reference(graph, dict(zip(graph.trace_state.inputs, arrays)))
    return [outs[v.name] for v in graph.outputs]


def check(got, expected, rtol=1e-5, atol=1e-6):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape, (g.shape, e.shape)
        assert g.dtype == e.dtype or (g.dtype, e.dtype) == (np.float32, np.float32), (g.dtype, e.dtype)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


class Bundle(ns.nn.Module):
    """Several cases in one graph, so that one compile checks a whole table."""

    def __init__(self, cases, slots):
        super().__init__()
        self.cases, self.slots = cases, slots

    def forward(self, *xs):
        outs = []
        for (fn, names) in self.cases:
            out = fn(ns, *[xs[self.slots[n]] for n in names])
            outs.extend(out if isinstance(out, (tuple, list)) else [out])
        return tuple(outs)


def compiled_run(cases, data):
    """Compile every case into one model; returns each case's outputs."""
    names = sorted({n for _, names in cases for n in names})
    slots = {n: i for i, n in enumerate(names)}
    model = ns.compile(Bundle(cases, slots).trace(example_inputs=tuple(data[n] for n in names)))
    outs = model(*[data[n] for n in names])
    return list(outs) if isinstance(outs, tuple) else [outs]
