"""Helpers for tests/test_layers_torch.py: compile a module and run it."""
import numpy as np

import nutshell as ns
from nutshell.compiler.ir.types import DType


def run_module(module, x, dtype=DType.float32):
    """module traced at x's shape (inference mode), compiled, run on x."""
    graph = module.trace(x.shape, dtype=dtype)
    return ns.compile(graph, threads=1)(x)


def assert_matches(got, want, atol_scale=1e-5, rtol=1e-4):
    """rtol relative; atol scaled by the reference's magnitude (stated per test)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    atol = atol_scale * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def slice_inputs(module, fn, split, kv=None):
    """A one-input module holding `module` and calling fn(module, a, b): a = x[:, :split],
    b = x[:, split:] (or the constant kv), so two-input layers compile through the
    one-input trace."""
    from nutshell.frontends.layers_ops import as_tensor, narrow

    class Two(ns.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            if kv is not None:
                return fn(self.inner, x, as_tensor(x, kv))
            return fn(self.inner, narrow(x, 1, 0, split), narrow(x, 1, split, x.shape[1]))
    return Two()
