"""Element-wise ops: broadcasting arithmetic and activations.

Each is a NumPy reference plus a scalar loop-IR expression; `map_nest` turns the
expression into a vectorised, broadcasting loop nest."""
import numpy as np

from ..lower.loop_ir import Call, Select, maximum
from ..lower.nests import map_nest
from .common import broadcast, require_float, same_dtype, tt
from .registry import register


def _binary_infer(attrs, types, consts, node):
    dtype = same_dtype(node, types)
    return [tt(dtype, broadcast(node, types[0].shape, types[1].shape))]


def _unary_infer(attrs, types, consts, node):
    return [types[0]]


def _float_unary_infer(attrs, types, consts, node):
    require_float(node, types[0])
    return [types[0]]


def _lower_map(fn):
    def lower(ctx):
        fn_attrs = (lambda *xs: fn(ctx.attrs, *xs))
        ins = [b for b in ctx.inputs]
        map_nest(ctx, ctx.outputs[0], ctx.out_types[0].shape, ins,
                 [t.shape for t in ctx.in_types], fn_attrs)
    return lower


def _int_div(a, b):
    if np.issubdtype(np.result_type(a), np.integer):
        return (np.trunc(a / b)).astype(np.result_type(a))   # C semantics, as ONNX
    return a / b


BINARY = {
    "Add": (np.add, lambda at, a, b: a + b),
    "Sub": (np.subtract, lambda at, a, b: a - b),
    "Mul": (np.multiply, lambda at, a, b: a * b),
    "Div": (_int_div, lambda at, a, b: a / b),
}

for _name, (_np, _expr) in BINARY.items():
    register(_name, infer=_binary_infer, inputs=(2, 2), lower=_lower_map(_expr),
             reference=(lambda f: lambda attrs, a, b: np.asarray(f(a, b)).astype(a.dtype))(_np))


def _sigmoid(x):
    return 1.0 / (1.0 + Call("exp", (-x,)))


# name: (attrs, float only?, NumPy reference, loop IR expression)
UNARY = {
    "Relu": ({}, False, lambda at, x: np.maximum(x, 0).astype(x.dtype),
             lambda at, x: maximum(x, 0)),
    "LeakyRelu": ({"alpha": 0.01}, True,
                  lambda at, x: np.where(x >= 0, x, x * at["alpha"]).astype(x.dtype),
                  lambda at, x: Select(x >= 0.0, x, x * at["alpha"])),
    "Elu": ({"alpha": 1.0}, True,
            lambda at, x: np.where(x > 0, x, at["alpha"] * np.expm1(x)).astype(x.dtype),
            lambda at, x: Select(x > 0.0, x, (Call("exp", (x,)) - 1.0) * at["alpha"])),
    "Sigmoid": ({}, True, lambda at, x: (1 / (1 + np.exp(-x))).astype(x.dtype),
                lambda at, x: _sigmoid(x)),
    "Tanh": ({}, True, lambda at, x: np.tanh(x), lambda at, x: Call("tanh", (x,))),
    "Exp": ({}, True, lambda at, x: np.exp(x), lambda at, x: Call("exp", (x,))),
    "Log": ({}, True, lambda at, x: np.log(x), lambda at, x: Call("log", (x,))),
    "Sqrt": ({}, True, lambda at, x: np.sqrt(x), lambda at, x: Call("sqrt", (x,))),
    "Neg": ({}, False, lambda at, x: np.negative(x), lambda at, x: -x),
    "Abs": ({}, False, lambda at, x: np.abs(x),
            lambda at, x: Call("abs", (x,)) if x.dtype.is_float else Select(x < 0, -x, x)),
}

for _name, (_attrs, _float, _ref, _expr) in UNARY.items():
    register(_name, attrs=_attrs, infer=_float_unary_infer if _float else _unary_infer,
             reference=(lambda r: lambda attrs, x: np.asarray(r(attrs, x)))(_ref),
             lower=_lower_map(_expr))
