"""Helpers for tests/test_layers_torch.py: compile a module and run it."""
import numpy as np

import nutshell as ns


def run_module(module, *xs):
    """module traced on the example arrays xs (inference mode), compiled, run on them."""
    graph = module.trace(example_inputs=xs if len(xs) > 1 else xs[0])
    return ns.compile(graph, threads=1)(*xs)


def assert_matches(got, want, atol_scale=1e-5, rtol=1e-4):
    """rtol relative; atol scaled by the reference's magnitude (stated per test)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    atol = atol_scale * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def calling(module, **call):
    """A module whose forward(*xs) is module(*xs, **call), returning the tensors of
    the result (a tuple's None entries dropped), so keyword calls compile."""
    class Call(ns.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *xs):
            out = self.inner(*xs, **call)
            return tuple(o for o in out if o is not None) if isinstance(out, tuple) else out
    return Call()
