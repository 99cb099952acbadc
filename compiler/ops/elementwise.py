"""Element-wise ops: broadcasting arithmetic and activations.

Each is a NumPy reference plus a scalar loop-IR expression; `map_nest` turns the
expression into a vectorised, broadcasting loop nest."""
import numpy as np

from ..lower.loop_ir import Call, Select, maximum, minimum, sigmoid
from ..lower.nests import map_nest
from .common import broadcast, require_float, same_dtype, tt
from .registry import gradient, register, zero_gradient


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


def _map(expr):
    """register()'s arguments of an element-wise op: its loop and its fusable expression."""
    return {"lower": _lower_map(expr), "expr": expr}


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
    register(_name, infer=_binary_infer, inputs=(2, 2), **_map(_expr),
             reference=(lambda f: lambda attrs, a, b: np.asarray(f(a, b)).astype(a.dtype))(_np))


@gradient("Add", "Sub")
def _add_sub_grad(g, node, dys, wanted):
    dy, (a, b) = dys[0], node.inputs
    db = g.neg(dy) if node.op == "Sub" else dy
    return [g.unbroadcast(dy, g.shape(a)) if wanted[0] else None,
            g.unbroadcast(db, g.shape(b)) if wanted[1] else None]


@gradient("Mul")
def _mul_grad(g, node, dys, wanted):
    dy, (a, b) = dys[0], node.inputs
    return [g.unbroadcast(g.mul(dy, b), g.shape(a)) if wanted[0] else None,
            g.unbroadcast(g.mul(dy, a), g.shape(b)) if wanted[1] else None]


@gradient("Div")
def _div_grad(g, node, dys, wanted):
    dy, (a, b), y = dys[0], node.inputs, node.outputs[0]
    return [g.unbroadcast(g.div(dy, b), g.shape(a)) if wanted[0] else None,
            g.unbroadcast(g.neg(g.div(g.mul(dy, y), b)), g.shape(b)) if wanted[1] else None]


def _sigmoid(x):
    return sigmoid(x)


def _softplus(x):
    """log(1 + e^x) without overflow: max(x, 0) + log(1 + e^-|x|)."""
    return maximum(x, 0.0) + Call("log", (1.0 + Call("exp", (-Call("abs", (x,)),)),))


def _erf(x):
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), odd extension."""
    a = Call("abs", (x,))
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    y = 1.0 - poly * Call("exp", (-(a * a),))
    return Select(x < 0.0, -y, y)


def _np_erf(x):
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _clamp01(v):
    return maximum(minimum(v, 1.0), 0.0)


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
    "Sin": ({}, True, lambda at, x: np.sin(x), lambda at, x: Call("sin", (x,))),
    "Cos": ({}, True, lambda at, x: np.cos(x), lambda at, x: Call("cos", (x,))),
    "Log": ({}, True, lambda at, x: np.log(x), lambda at, x: Call("log", (x,))),
    "Sqrt": ({}, True, lambda at, x: np.sqrt(x), lambda at, x: Call("sqrt", (x,))),
    "Neg": ({}, False, lambda at, x: np.negative(x), lambda at, x: -x),
    "Abs": ({}, False, lambda at, x: np.abs(x),
            lambda at, x: Call("abs", (x,)) if x.dtype.is_float else Select(x < 0, -x, x)),
    "Ceil": ({}, True, lambda at, x: np.ceil(x), lambda at, x: Call("ceil", (x,))),
    "Floor": ({}, True, lambda at, x: np.floor(x), lambda at, x: Call("floor", (x,))),
    "Reciprocal": ({}, True, lambda at, x: (1 / x).astype(x.dtype), lambda at, x: 1.0 / x),
    "Sign": ({}, False, lambda at, x: np.sign(x),
             lambda at, x: Select(x > 0, 1, Select(x < 0, -1, 0)) if not x.dtype.is_float else
             Select(x > 0.0, 1.0, Select(x < 0.0, -1.0, x))),     # x: 0 or NaN
    "Erf": ({}, True, lambda at, x: _np_erf(x).astype(x.dtype), lambda at, x: _erf(x)),
    "Softplus": ({}, True, lambda at, x: np.logaddexp(0, x).astype(x.dtype), lambda at, x: _softplus(x)),
    "Softsign": ({}, True, lambda at, x: (x / (1 + np.abs(x))).astype(x.dtype),
                 lambda at, x: x / (1.0 + Call("abs", (x,)))),
    "HardSigmoid": ({"alpha": 0.2, "beta": 0.5}, True,
                    lambda at, x: np.clip(at["alpha"] * x + at["beta"], 0, 1).astype(x.dtype),
                    lambda at, x: _clamp01(x * at["alpha"] + at["beta"])),
    "HardSwish": ({}, True, lambda at, x: (x * np.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype),
                  lambda at, x: x * _clamp01(x * (1.0 / 6) + 0.5)),
    "Selu": ({"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}, True,
             lambda at, x: (at["gamma"] * np.where(x > 0, x, at["alpha"] * np.expm1(x))).astype(x.dtype),
             lambda at, x: Select(x > 0.0, x, (Call("exp", (x,)) - 1.0) * at["alpha"]) * at["gamma"]),
    "Celu": ({"alpha": 1.0}, True,
             lambda at, x: (np.maximum(x, 0) + np.minimum(0, at["alpha"] * np.expm1(x / at["alpha"]))).astype(x.dtype),
             lambda at, x: maximum(x, 0.0) + minimum((Call("exp", (x * (1.0 / at["alpha"]),)) - 1.0) * at["alpha"], 0.0)),
    "ThresholdedRelu": ({"alpha": 1.0}, True, lambda at, x: np.where(x > at["alpha"], x, 0).astype(x.dtype),
                        lambda at, x: Select(x > at["alpha"], x, 0.0)),
    "Shrink": ({"bias": 0.0, "lambd": 0.5}, False,
               lambda at, x: np.where(x < -at["lambd"], x + at["bias"],
                                      np.where(x > at["lambd"], x - at["bias"], 0)).astype(x.dtype),
               lambda at, x: Select(x < -at["lambd"], x + at["bias"], Select(x > at["lambd"], x - at["bias"], 0.0))),
    "Mish": ({}, True, lambda at, x: (x * np.tanh(np.logaddexp(0, x))).astype(x.dtype),
             lambda at, x: x * Call("tanh", (_softplus(x),))),
    "Gelu": ({"approximate": "none"}, True,
             lambda at, x: (0.5 * x * (1 + (np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))
                                            if at["approximate"] == "tanh" else _np_erf(x / np.sqrt(2))))).astype(x.dtype),
             lambda at, x: x * 0.5 * (1.0 + (Call("tanh", ((x + x * x * x * 0.044715) * float(np.sqrt(2 / np.pi)),))
                                              if at["approximate"] == "tanh" else _erf(x * float(1 / np.sqrt(2)))))),
}

for _name, (_attrs, _float, _ref, _expr) in UNARY.items():
    register(_name, attrs=_attrs, infer=_float_unary_infer if _float else _unary_infer,
             reference=(lambda r: lambda attrs, x: np.asarray(r(attrs, x)))(_ref),
             **_map(_expr))


def _gelu_slope(g, at, x):
    """d/dx of x * Phi(x) (exact) or of its tanh approximation."""
    if at["approximate"] == "tanh":
        c, k = float(np.sqrt(2 / np.pi)), 0.044715
        x2 = g.mul(x, x)
        t = g.unary("Tanh", g.scale(g.mul(x, g.add(g.scalar(1.0, x), g.scale(x2, k))), c))
        dt = g.scale(g.mul(g.sub(g.scalar(1.0, t), g.mul(t, t)), g.add(g.scalar(1.0, x), g.scale(x2, 3 * k))), c)
        return g.scale(g.add(g.add(g.scalar(1.0, t), t), g.mul(x, dt)), 0.5)
    cdf = g.scale(g.add(g.scalar(1.0, x), g.unary("Erf", g.scale(x, float(1 / np.sqrt(2))))), 0.5)
    pdf = g.scale(g.unary("Exp", g.scale(g.mul(x, x), -0.5)), float(1 / np.sqrt(2 * np.pi)))
    return g.add(cdf, g.mul(x, pdf))


def _mish_slope(g, at, x):
    t = g.unary("Tanh", g.unary("Softplus", x))
    return g.add(t, g.mul(g.mul(x, g.sub(g.scalar(1.0, t), g.mul(t, t))), g.unary("Sigmoid", x)))


# name: dx as a function of (GradContext, attrs, x, y, dy); at a kink, PyTorch's choice
UNARY_GRADS = {
    "Relu": lambda g, at, x, y, dy: g.keep(g.cmp("Greater", x, 0.0), dy),
    "LeakyRelu": lambda g, at, x, y, dy: g.where(g.cmp("Greater", x, 0.0), dy, g.scale(dy, at["alpha"])),
    "Elu": lambda g, at, x, y, dy: g.where(g.cmp("Greater", x, 0.0), dy,
                                           g.mul(dy, g.add(y, g.scalar(at["alpha"], y)))),
    "Sigmoid": lambda g, at, x, y, dy: g.mul(dy, g.mul(y, g.sub(g.scalar(1.0, y), y))),
    "Tanh": lambda g, at, x, y, dy: g.mul(dy, g.sub(g.scalar(1.0, y), g.mul(y, y))),
    "Exp": lambda g, at, x, y, dy: g.mul(dy, y),
    "Sin": lambda g, at, x, y, dy: g.mul(dy, g.unary("Cos", x)),
    "Cos": lambda g, at, x, y, dy: g.neg(g.mul(dy, g.unary("Sin", x))),
    "Log": lambda g, at, x, y, dy: g.div(dy, x),
    "Sqrt": lambda g, at, x, y, dy: g.div(g.scale(dy, 0.5), y),
    "Neg": lambda g, at, x, y, dy: g.neg(dy),
    "Abs": lambda g, at, x, y, dy: g.mul(dy, g.unary("Sign", x)),
    "Reciprocal": lambda g, at, x, y, dy: g.neg(g.mul(dy, g.mul(y, y))),
    "Erf": lambda g, at, x, y, dy: g.mul(dy, g.scale(g.unary("Exp", g.neg(g.mul(x, x))), float(2 / np.sqrt(np.pi)))),
    "Softplus": lambda g, at, x, y, dy: g.mul(dy, g.unary("Sigmoid", x)),
    "Softsign": lambda g, at, x, y, dy: g.div(dy, g.op("Pow", [g.add(g.scalar(1.0, x), g.unary("Abs", x)),
                                                                g.scalar(2.0, x)])),
    "HardSigmoid": lambda g, at, x, y, dy: g.keep(g.cmp("Greater", y, 0.0),
                                                  g.keep(g.cmp("Less", y, 1.0), g.scale(dy, at["alpha"]))),
    "HardSwish": lambda g, at, x, y, dy: g.keep(g.cmp("Greater", x, -3.0), g.where(
        g.cmp("GreaterOrEqual", x, 3.0), dy, g.mul(dy, g.add(g.scale(x, 1 / 3), g.scalar(0.5, x))))),
    "Selu": lambda g, at, x, y, dy: g.where(g.cmp("Greater", x, 0.0), g.scale(dy, at["gamma"]),
                                            g.mul(dy, g.add(y, g.scalar(at["gamma"] * at["alpha"], y)))),
    "Celu": lambda g, at, x, y, dy: g.where(g.cmp("Greater", x, 0.0), dy,
                                            g.mul(dy, g.add(g.scale(y, 1 / at["alpha"]), g.scalar(1.0, y)))),
    "ThresholdedRelu": lambda g, at, x, y, dy: g.keep(g.cmp("Greater", x, at["alpha"]), dy),
    "Shrink": lambda g, at, x, y, dy: g.where(g.cmp("Less", x, -at["lambd"]), dy,
                                              g.keep(g.cmp("Greater", x, at["lambd"]), dy)),
    "Mish": lambda g, at, x, y, dy: g.mul(dy, _mish_slope(g, at, x)),
    "Gelu": lambda g, at, x, y, dy: g.mul(dy, _gelu_slope(g, at, x)),
}
for _name, _rule in UNARY_GRADS.items():
    gradient(_name)((lambda r: lambda g, node, dys, wanted: [
        r(g, node.attrs, node.inputs[0], node.outputs[0], dys[0])])(_rule))
gradient("Ceil", "Floor", "Sign")(zero_gradient)


def _variadic_infer(attrs, types, consts, node):
    dtype = same_dtype(node, types)
    return [tt(dtype, broadcast(node, *[t.shape for t in types]))]


def _fold(fn):
    def combine(*xs):
        acc = xs[0]
        for x in xs[1:]:
            acc = fn(acc, x)
        return acc
    return combine


VARIADIC = {
    "Max": (np.maximum, maximum), "Min": (np.minimum, minimum), "Sum": (np.add, lambda a, b: a + b),
}
for _name, (_np, _expr) in VARIADIC.items():
    register(_name, inputs=(1, 1 << 16), infer=_variadic_infer,
             reference=(lambda f: lambda attrs, *xs: _fold(f)(*xs).astype(xs[0].dtype))(_np),
             **_map((lambda f: lambda at, *xs: _fold(f)(*xs))(_expr)))
register("Mean", inputs=(1, 1 << 16), infer=_variadic_infer,
         reference=lambda attrs, *xs: (_fold(np.add)(*xs) / len(xs)).astype(xs[0].dtype),
         **_map(lambda at, *xs: _fold(lambda a, b: a + b)(*xs) * (1.0 / len(xs))))


@gradient("Max", "Min", "Sum", "Mean")
def _variadic_grad(g, node, dys, wanted):
    dy, y, xs = dys[0], node.outputs[0], node.inputs
    if node.op == "Mean":
        dy = g.scale(dy, 1.0 / len(xs))
    if node.op in ("Max", "Min"):       # ties share the gradient evenly
        hits = [g.cast_like(g.op("Equal", [x, y]), dy) for x in xs]
        count = g.op("Sum", hits) if len(hits) > 1 else hits[0]
        return [g.unbroadcast(g.share_ties(h, dy, count), g.shape(x)) if w else None
                for x, h, w in zip(xs, hits, wanted)]
    return [g.unbroadcast(dy, g.shape(x)) if w else None for x, w in zip(xs, wanted)]


register("PRelu", inputs=(2, 2), infer=_binary_infer,
         reference=lambda attrs, x, s: np.where(x < 0, x * s, x).astype(x.dtype),
         **_map(lambda at, x, s: Select(x < 0.0, x * s, x)))


@gradient("PRelu")
def _prelu_grad(g, node, dys, wanted):
    (x, s), dy = node.inputs, dys[0]
    neg = g.cmp("Less", x, 0.0)
    return [g.unbroadcast(g.where(neg, g.mul(dy, s), dy), g.shape(x)) if wanted[0] else None,
            g.unbroadcast(g.keep(neg, g.mul(dy, x)), g.shape(s)) if wanted[1] else None]
