"""exp, log and tanh on float32 vectors as polynomials (Cephes' coefficients).

LLVM has no vector libm here: llvm.exp.v16f32 becomes 16 calls to expf, which made
sigmoid/SiLU/GELU/softmax layers (EfficientNet, ViT) many times slower than their
matmuls. These stay in registers. Accuracy: within 2 ulp of libm on normal
results; exp flushes results below 2^-126 to 0 (no denormals), overflow gives
inf, NaN propagates."""
from llvmlite import ir

from . import llvm_helpers as H


def _c(ty, value):
    return ir.Constant(ty, [value] * ty.count) if isinstance(ty, ir.VectorType) else ir.Constant(ty, value)


def _int_type(ty):
    return ir.VectorType(H.I32, ty.count) if isinstance(ty, ir.VectorType) else H.I32


def _fma(b, module, x, y, z):
    return b.call(H.overloaded(module, "llvm.fma", x.type, 3), [x, y, z])


def _poly(b, x, coeffs, module):
    """Horner's rule with fused multiply-adds."""
    acc = _c(x.type, coeffs[0])
    for c in coeffs[1:]:
        acc = _fma(b, module, acc, x, _c(x.type, c))
    return acc


def _floor(b, module, x):
    return b.call(H.overloaded(module, "llvm.floor", x.type), [x])


def _select_lt(b, x, bound, then, other):
    return b.select(b.fcmp_ordered("<", x, _c(x.type, bound)), then, other)


def exp_f32(b, module, x):
    ty = x.type
    clamped = b.call(H.overloaded(module, "llvm.maxnum", ty, 2),
                     [b.call(H.overloaded(module, "llvm.minnum", ty, 2), [x, _c(ty, 88.72283)]),
                      _c(ty, -87.33654)])
    n = _floor(b, module, b.fadd(b.fmul(clamped, _c(ty, 1.44269504088896341)), _c(ty, 0.5)))
    r = _fma(b, module, n, _c(ty, 2.12194440e-4), _fma(b, module, n, _c(ty, -0.693359375), clamped))
    p = _poly(b, r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                     1.6666665459e-1, 5.0000001201e-1], module)
    y = b.fadd(_fma(b, module, p, b.fmul(r, r), r), _c(ty, 1.0))
    ity = _int_type(ty)
    # 2^n split in two factors so n = 128 (x near 88.7) does not overflow the exponent
    half = b.fptosi(b.fmul(n, _c(ty, 0.5)), ity)
    rest = b.sub(b.fptosi(n, ity), half)
    scale = lambda e: b.bitcast(b.shl(b.add(e, _c(ity, 127)), _c(ity, 23)), ty)
    y = b.fmul(b.fmul(y, scale(half)), scale(rest))
    y = b.select(b.fcmp_ordered(">", x, _c(ty, 88.72283)), _c(ty, float("inf")), y)
    y = _select_lt(b, x, -87.33654, _c(ty, 0.0), y)
    return b.select(b.fcmp_unordered("uno", x, x), x, y)


def log_f32(b, module, x):
    ty = x.type
    ity = _int_type(ty)
    # a denormal input is scaled into the normal range first (its exponent corrected)
    tiny = b.fcmp_ordered("<", x, _c(ty, 1.17549435e-38))
    xs = b.select(tiny, b.fmul(x, _c(ty, 8388608.0)), x)
    bits = b.bitcast(xs, ity)
    exponent = b.sitofp(b.sub(b.lshr(bits, _c(ity, 23)), _c(ity, 127)), ty)
    exponent = b.fsub(exponent, b.select(tiny, _c(ty, 23.0), _c(ty, 0.0)))
    mant = b.bitcast(b.or_(b.and_(bits, _c(ity, 0x007FFFFF)), _c(ity, 0x3F000000)), ty)   # [0.5, 1)
    small = b.fcmp_ordered("<", mant, _c(ty, 0.707106781186547524))
    exponent = b.fadd(exponent, b.select(small, _c(ty, 0.0), _c(ty, 1.0)))
    m = b.fsub(b.select(small, b.fadd(mant, mant), mant), _c(ty, 1.0))
    z = b.fmul(m, m)
    p = _poly(b, m, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                     1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                     3.3333331174e-1], module)
    y = b.fmul(b.fmul(p, m), z)
    y = _fma(b, module, exponent, _c(ty, -2.12194440e-4), y)
    y = _fma(b, module, z, _c(ty, -0.5), y)
    y = _fma(b, module, exponent, _c(ty, 0.693359375), b.fadd(m, y))
    # the edges libm defines: log(0) = -inf, log(<0) = NaN, log(inf) = inf, log(NaN) = NaN
    y = b.select(b.fcmp_ordered("==", x, _c(ty, 0.0)), _c(ty, float("-inf")), y)
    y = _select_lt(b, x, 0.0, _c(ty, float("nan")), y)
    y = b.select(b.fcmp_ordered("==", x, _c(ty, float("inf"))), x, y)
    return b.select(b.fcmp_unordered("uno", x, x), x, y)


def tanh_f32(b, module, x):
    ty = x.type
    ax = b.call(H.overloaded(module, "llvm.fabs", ty), [x])
    z = b.fmul(x, x)     # small |x|: odd polynomial, no cancellation
    small = b.fadd(x, b.fmul(b.fmul(x, z), _poly(b, z, [-5.70498872745e-3, 2.06390887954e-2,
                                                          -5.37397155531e-2, 1.33314422036e-1,
                                                          -3.33332819422e-1], module)))
    e = exp_f32(b, module, b.fmul(ax, _c(ty, 2.0)))       # large: 1 - 2 / (e^2|x| + 1)
    large = b.fsub(_c(ty, 1.0), b.fdiv(_c(ty, 2.0), b.fadd(e, _c(ty, 1.0))))
    large = b.call(H.overloaded(module, "llvm.copysign", ty, 2), [large, x])
    y = _select_lt(b, ax, 0.625, small, large)
    return b.select(b.fcmp_unordered("uno", x, x), x, y)


VECTOR_MATH = {"exp": exp_f32, "log": log_f32, "tanh": tanh_f32}
