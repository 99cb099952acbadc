"""exp, log and tanh on float32 vectors as polynomials (Cephes' coefficients).

LLVM has no vector libm here: llvm.exp.v16f32 becomes 16 calls to expf, which made
sigmoid/SiLU/GELU/softmax layers (EfficientNet, ViT) many times slower than their
matmuls. These stay in registers. Accuracy: within 2 ulp of libm on normal
results; exp flushes results below 2^-126 to 0 (AVX-512's vscalefps gives the
denormals instead), overflow gives inf, NaN propagates."""
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


def _x86_register(module, ty):
    """Whether vectors of `ty` fill at most one register of the module's x86 target
    (codegen/model.py records its vector_bits): only then do that width's
    intrinsics exist. Float16 math runs widened to float32, twice the register."""
    bits = ty.count * (64 if ty.element == H.F64 else 32)
    return module.triple.startswith("x86_64") and bits <= getattr(module, "vector_bits", 0)


def exp_f32(b, module, x):
    if x.type.count == 16 and _x86_register(module, x.type):
        return _exp_scalef(b, module, x)
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


def _exp_scalef(b, module, x):
    """AVX-512: the same reduction and polynomial, then y * 2^n by vscalefps, which
    gives inf, denormals and 0 at the ends itself: a third fewer instructions than
    building 2^n in the exponent bits (sigmoid/SiLU layers are bound by this).
    The clamp is vminps/vmaxps with x second, which give x when it is NaN, so a NaN
    runs through to the result (no compare and blend at the end: a SiLU's 23
    instructions were 25)."""
    ty = x.type
    clamped = _x86_extreme(b, module, ">", _c(ty, -104.0), _x86_extreme(b, module, "<", _c(ty, 89.0), x))
    n = b.call(H.overloaded(module, "llvm.rint", ty), [b.fmul(clamped, _c(ty, 1.44269504088896341))])
    r = _fma(b, module, n, _c(ty, 2.12194440e-4), _fma(b, module, n, _c(ty, -0.693359375), clamped))
    p = _poly(b, r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                     1.6666665459e-1, 5.0000001201e-1], module)
    y = b.fadd(_fma(b, module, p, b.fmul(r, r), r), _c(ty, 1.0))
    scalef = H.intrinsic(module, "llvm.x86.avx512.mask.scalef.ps.512", ty,
                         [ty, ty, ty, ir.IntType(16), H.I32])
    return b.call(scalef, [y, n, H.zero(ty), ir.Constant(ir.IntType(16), -1), ir.Constant(H.I32, 4)])


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


def recip_f32(b, module, x):
    """1 / x from the hardware estimate (AVX-512: 14 bits, AVX: 12) and Newton
    steps, r + r (1 - x r) (one for 14 bits, two for 12: one left AVX2's sigmoid 3
    ulp off and failed ONNX's GRU tests): within 1-2 ulp, a third of a vdivps's
    time (sigmoid's division). An estimate of 0 (x huge or infinite) stays 0: the Newton step
    would make it NaN (0 x inf)."""
    lanes = x.type.count if _x86_register(module, x.type) else 0
    if lanes == 16:
        fn = H.intrinsic(module, "llvm.x86.avx512.rcp14.ps.512", x.type, [x.type, x.type, ir.IntType(16)])
        r = b.call(fn, [x, H.zero(x.type), ir.Constant(ir.IntType(16), -1)])
    elif lanes == 8:
        r = b.call(H.intrinsic(module, "llvm.x86.avx.rcp.ps.256", x.type, [x.type]), [x])
    else:
        return b.fdiv(_c(x.type, 1.0), x)
    one = _c(x.type, 1.0)
    if lanes == 16:      # min(err, 1) by vminps, which gives the 1 for a NaN: the estimate 0
        err = _fma(b, module, b.fneg(x), r, one)    # of x = inf stays 0 (a NaN x stays NaN, 1/0 is
        return _fma(b, module, r, _x86_extreme(b, module, "<", err, one), r)    # inf): no compare+blend
    refined = r
    for _ in range(2):     # 12 bits need two steps for 1 ulp
        err = _fma(b, module, b.fneg(x), refined, one)
        refined = _fma(b, module, refined, err, refined)
    return b.select(b.fcmp_ordered("==", r, H.zero(x.type)), r, refined)


def nan_extreme(b, module, op, x, y, y_is_number=False):
    """max (op '>') or min ('<') of floats that propagates NaN, as IEEE maximum,
    NumPy and PyTorch do (llvm.maxnum and a bare compare-select drop it).
    `y op x ? y : x` is one vmaxps/vminps and gives x when either is NaN: enough
    when y is a constant number (ReLU's 0). Otherwise a NaN y is blended in after
    it; on x86 the vmaxps is the intrinsic, so LLVM cannot merge the two selects
    into compare, compare, or, blend: a reduction passes its accumulator as x,
    whose chain stays vmaxps + blend."""
    if y_is_number:
        return b.select(b.fcmp_ordered(op, y, x), y, x)
    pick = _x86_extreme(b, module, op, y, x) or b.select(b.fcmp_ordered(op, y, x), y, x)
    return b.select(b.fcmp_unordered("uno", y, y), y, pick)


_X86_EXTREME = {(16, 32): "avx512.{}.ps.512", (8, 64): "avx512.{}.pd.512",
                (8, 32): "avx.{}.ps.256", (4, 64): "avx.{}.pd.256"}


def _x86_extreme(b, module, op, a, c):
    """vmaxps/vminps(a, c): a op c ? a : c, c when either is NaN; None off x86."""
    ty = a.type
    if not (isinstance(ty, ir.VectorType) and _x86_register(module, ty)):
        return None
    name = _X86_EXTREME.get((ty.count, 32 if ty.element == H.F32 else 64))
    if name is None or ty.element not in (H.F32, H.F64):
        return None
    wide = name.startswith("avx512")
    fn = H.intrinsic(module, "llvm.x86." + name.format("max" if op == ">" else "min"), ty,
                     [ty, ty] + ([H.I32] if wide else []))
    return b.call(fn, [a, c] + ([ir.Constant(H.I32, 4)] if wide else []))


def _sin_quadrant(b, module, x, shift):
    """sin(x + shift * pi/2): x - j pi/2 in three parts (Cody-Waite) leaves r in
    [-pi/4, pi/4]; quadrant j picks +-sin(r) or +-cos(r) (Cephes' sinf/cosf
    polynomials). Within 2 ulp for |x| < 1e4; NaN and inf give NaN."""
    ty = x.type
    ity = _int_type(ty)
    j = _floor(b, module, _fma(b, module, x, _c(ty, 0.63661977236758134), _c(ty, 0.5)))
    r = x
    for part in (-1.5703125, -4.837512969970703125e-4, -7.54978995489188216e-8):
        r = _fma(b, module, j, _c(ty, part), r)
    r2 = b.fmul(r, r)
    sin_r = _fma(b, module, b.fmul(r, r2), _poly(b, r2, [-1.9515295891e-4, 8.3321608736e-3,
                                                          -1.6666654611e-1], module), r)
    cos_r = _fma(b, module, b.fmul(r2, r2), _poly(b, r2, [2.443315711809948e-5, -1.388731625493765e-3,
                                                          4.166664568298827e-2], module),
                 _fma(b, module, r2, _c(ty, -0.5), _c(ty, 1.0)))
    q = b.and_(b.add(b.fptosi(j, ity), _c(ity, shift)), _c(ity, 3))
    odd = b.icmp_signed("!=", b.and_(q, _c(ity, 1)), _c(ity, 0))
    value = b.select(odd, cos_r, sin_r)
    negate = b.icmp_signed("!=", b.and_(q, _c(ity, 2)), _c(ity, 0))
    return b.select(negate, b.fneg(value), value)


def sin_f32(b, module, x):
    return _sin_quadrant(b, module, x, 0)


def cos_f32(b, module, x):
    return _sin_quadrant(b, module, x, 1)


VECTOR_MATH = {"exp": exp_f32, "log": log_f32, "tanh": tanh_f32, "recip": recip_f32,
               "sin": sin_f32, "cos": cos_f32}
