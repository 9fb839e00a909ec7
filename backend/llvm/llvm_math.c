/* llvm_math.c - transcendental functions as inline IR: f32 polynomials (vectorizable, no libm), f64
 * through libm.
 *
 * Accuracy of the f32 forms: largest relative error against libm in double
 * over 10^6 points of each range (test_llvm_diff's "math" check; the final
 * rounding to f32 alone is up to 6e-8):
 *   exp      Cody-Waite reduction x = n ln2 + r (ln2 split in two), Cephes'
 *            degree-7 polynomial for e^r on [-ln2/2, ln2/2], 2^n applied in two
 *            halves so results down to the subnormals round once.
 *            7.3e-8 over [-87, 88].
 *   log      x = m 2^e, m in [sqrt(1/2), sqrt 2), Cephes' degree-9 polynomial
 *            in f = m - 1, e ln2 added in two parts. 8.0e-8 over [e^-30, e^30].
 *   tanh     |x| < 0.625: odd polynomial (Cephes); else 1 - 2 / (e^2|x| + 1).
 *            1.4e-7 over [-10, 10].
 *   sigmoid  1 / (1 + e^-x). 1.5e-7 over [-30, 30].
 *   erf/erfc a = |x|; erf for a < 0.5: Taylor series to a^13 (truncation
 *            < 1e-9); else erfc(a) = t e^(-a^2) Q(t), t = 1 / (1 + a/2), Q a
 *            degree-9 least-squares fit of erfc(a) e^(a^2) / t over a in
 *            [0, 12] (relative error 5.2e-8), with a^2 split as hi + lo, hi
 *            exact in f32, and e^(-(hi + lo)) reduced from hi first, so the
 *            large exponent loses nothing. erfc keeps its relative accuracy
 *            in the tail, so gelu(x) = x Phi(x) uses Phi(x) = erfc(-x/sqrt 2)/2
 *            for x < 0 (no cancellation), 1 - erfc(x/sqrt 2)/2 above, with
 *            a^2 = x^2/2 split from x itself; gelu_grad's phi(x) =
 *            e^(-x^2/2) / sqrt(2 pi) reuses Phi's exponential: one exp for
 *            either. gelu: 3.8e-7 over [-4, 10].
 * Special values follow C: exp(+-inf) = inf, 0; log(0) = -inf, log(x < 0) =
 * NaN; NaN in, NaN out.
 */
#include <math.h>
#include <string.h>

#include "llvm_priv.h"

#define MATH_SQRT1_2      0.70710678118654752440
#define MATH_INV_SQRT_2PI 0.39894228040143267794
#define MATH_2_SQRTPI     1.12837916709551257390

/* ---- Constants of x's type (a scalar or a vector splat) ------------------ */

static LLVMValueRef splat(Lower *L, LLVMTypeRef like, LLVMValueRef scalar) {
  if (LLVMGetTypeKind(like) != LLVMVectorTypeKind) return scalar;
  unsigned n = LLVMGetVectorSize(like);
  LLVMValueRef v[64];
  for (unsigned i = 0; i < n && i < 64; i++) v[i] = scalar;
  return LLVMConstVector(v, n);
}

static LLVMTypeRef scalar_of(LLVMTypeRef t) {
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMGetElementType(t) : t;
}

static LLVMValueRef K(Lower *L, LLVMValueRef like, double v) {
  LLVMTypeRef t = LLVMTypeOf(like);
  return splat(L, t, LLVMConstReal(scalar_of(t), v));
}

/* The i32 type shaped like x (for bit manipulation of an f32). */
static LLVMTypeRef int_like(Lower *L, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMVectorType(L->i32, LLVMGetVectorSize(t))
                                                  : L->i32;
}

static LLVMValueRef KI(Lower *L, LLVMValueRef like, int32_t v) {
  return splat(L, int_like(L, like), LLVMConstInt(L->i32, (unsigned long long)(int64_t)v, 1));
}

static bool is_f64(LLVMValueRef x) {
  return scalar_of(LLVMTypeOf(x)) == LLVMDoubleTypeInContext(LLVMGetTypeContext(LLVMTypeOf(x)));
}

/* c[0] + x (c[1] + x (c[2] + ...)): Horner, highest degree last in c. */
static LLVMValueRef horner(Lower *L, LLVMValueRef x, const double *c, int n) {
  LLVMValueRef y = K(L, x, c[n - 1]);
  for (int i = n - 2; i >= 0; i--) y = lw_fadd(L, lw_fmul(L, y, x), K(L, x, c[i]));
  return y;
}

/* A call to a libm function of one double (the f64 path), lane by lane for a vector. */
static LLVMValueRef libm1(Lower *L, const char *name, LLVMValueRef x) {
  LLVMTypeRef ft = LLVMFunctionType(L->f64, &L->f64, 1, 0);
  LLVMValueRef f = LLVMGetNamedFunction(L->mod, name);
  if (!f) f = LLVMAddFunction(L->mod, name, ft);
  if (LLVMGetTypeKind(LLVMTypeOf(x)) != LLVMVectorTypeKind)
    return LLVMBuildCall2(L->b, ft, f, &x, 1, "");
  LLVMValueRef r = LLVMGetPoison(LLVMTypeOf(x));
  for (unsigned i = 0; i < LLVMGetVectorSize(LLVMTypeOf(x)); i++) {
    LLVMValueRef xi = LLVMBuildExtractElement(L->b, x, lw_i32(L, (int32_t)i), "");
    LLVMValueRef yi = LLVMBuildCall2(L->b, ft, f, &xi, 1, "");
    r = LLVMBuildInsertElement(L->b, r, yi, lw_i32(L, (int32_t)i), "");
  }
  return r;
}

static LLVMValueRef bits(Lower *L, LLVMValueRef x) {
  return LLVMBuildBitCast(L->b, x, int_like(L, x), "");
}
static LLVMValueRef from_bits(Lower *L, LLVMValueRef i, LLVMValueRef like) {
  return LLVMBuildBitCast(L->b, i, LLVMTypeOf(like), "");
}

/* 2^n for an integer n in [-126, 127], as an f32 of like's shape. */
static LLVMValueRef pow2i(Lower *L, LLVMValueRef n, LLVMValueRef like) {
  LLVMValueRef e =
      LLVMBuildShl(L->b, LLVMBuildAdd(L->b, n, KI(L, like, 127), ""), KI(L, like, 23), "");
  return from_bits(L, e, like);
}

/* ---- exp ---------------------------------------------------------------- */

/* y 2^n for an f32 y near 1 and an integral nf in [-150, 129], rounded once
 * even into the subnormals: one vscalefps for 16 lanes with AVX-512, else
 * 2^n applied in two halves (each a normal number built from its bits). */
static LLVMValueRef scale_pow2(Lower *L, LLVMValueRef y, LLVMValueRef nf) {
  LLVMTypeRef t = LLVMTypeOf(y);
  if (L->avx512 && LLVMGetTypeKind(t) == LLVMVectorTypeKind && LLVMGetVectorSize(t) == 16) {
    const char *name = "llvm.x86.avx512.mask.scalef.ps.512";
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    IR_ASSERT(id != 0, "llvm: no intrinsic %s", name);
    LLVMValueRef args[5] = {y, nf, y, LLVMConstInt(LLVMInt16TypeInContext(L->ctx), 0xffff, 0),
                            lw_i32(L, 4) /* the current rounding mode */};
    return LLVMBuildCall2(L->b, LLVMIntrinsicGetType(L->ctx, id, NULL, 0),
                          LLVMGetIntrinsicDeclaration(L->mod, id, NULL, 0), args, 5, "");
  }
  LLVMValueRef n = LLVMBuildFPToSI(L->b, nf, int_like(L, y), "");
  LLVMValueRef n1 = LLVMBuildAShr(L->b, n, KI(L, y, 1), "");
  LLVMValueRef n2 = LLVMBuildSub(L->b, n, n1, "");
  return lw_fmul(L, lw_fmul(L, y, pow2i(L, n1, y)), pow2i(L, n2, y));
}

/* e^(hi + lo), the argument given unevaluated as hi + lo (lo NULL: 0), for
 * f32: hi may be large (an exact a^2), |lo| small. The Cody-Waite reduction
 * takes n ln2 off hi before lo joins, so hi's size costs no accuracy. No NaN
 * handling: the callers select it. */
static LLVMValueRef exp_core(Lower *L, LLVMValueRef hi, LLVMValueRef lo) {
  static const double p[] = {1.0,
                             1.0,
                             5.0000001201E-1,
                             1.6666665459E-1,
                             4.1665795894E-2,
                             8.3334519073E-3,
                             1.3981999507E-3,
                             1.9875691500E-4};
  /* Clamp so n stays in [-150, 129]: outside, the result is 0 or inf anyway
   * (and lo, no longer needed, is dropped). Below -104 the result is 0: those
   * lanes compute e^0 and are replaced, since a multiply that underflows to
   * 0 through the subnormals costs a microcode assist of ~100 cycles on x86
   * (softmax rows under a causal mask are half -inf). */
  LLVMValueRef under = lw_fcmp(L, LLVMRealOLT, hi, K(L, hi, -104.0));
  LLVMValueRef xc = lw_select(L, lw_fcmp(L, LLVMRealOGT, hi, K(L, hi, 89.0)), K(L, hi, 89.0), hi);
  xc = lw_select(L, under, K(L, hi, 0.0), xc);
  if (lo) lo = lw_select(L, lw_fcmp(L, LLVMRealOEQ, xc, hi), lo, K(L, hi, 0.0));
  LLVMValueRef sum = lo ? lw_fadd(L, xc, lo) : xc;
  LLVMValueRef nf = lw_intrinsic1(L, "llvm.rint", lw_fmul(L, sum, K(L, hi, 1.44269504088896341)));
  LLVMValueRef r = lw_fsub(L, xc, lw_fmul(L, nf, K(L, hi, 0.693359375)));
  if (lo) r = lw_fadd(L, r, lo);
  r = lw_fsub(L, r, lw_fmul(L, nf, K(L, hi, -2.12194440e-4)));
  LLVMValueRef y = scale_pow2(L, horner(L, r, p, 8), nf);
  return lw_select(L, under, K(L, hi, 0.0), y);
}

LLVMValueRef lw_exp(Lower *L, LLVMValueRef x) {
  if (is_f64(x)) return libm1(L, "exp", x);
  return lw_select(L, lw_isnan(L, x), x, exp_core(L, x, NULL));
}

/* ---- log ---------------------------------------------------------------- */

LLVMValueRef lw_log(Lower *L, LLVMValueRef x) {
  if (is_f64(x)) return libm1(L, "log", x);
  static const double p[] = {3.3333331174E-1,  -2.4999993993E-1, 2.0000714765E-1,
                             -1.6668057665E-1, 1.4249322787E-1,  -1.2420140846E-1,
                             1.1676998740E-1,  -1.1514610310E-1, 7.0376836292E-2};
  /* Subnormals: scale by 2^23 first. */
  LLVMValueRef tiny = lw_fcmp(L, LLVMRealOLT, x, K(L, x, 1.17549435e-38));
  LLVMValueRef xs = lw_select(L, tiny, lw_fmul(L, x, K(L, x, 8388608.0)), x);
  LLVMValueRef ib = bits(L, xs);
  LLVMValueRef e = LLVMBuildSub(L->b, LLVMBuildLShr(L->b, ib, KI(L, x, 23), ""), KI(L, x, 126), "");
  e = LLVMBuildSub(L->b, e, lw_select(L, tiny, KI(L, x, 23), KI(L, x, 0)), "");
  LLVMValueRef mb =
      LLVMBuildOr(L->b, LLVMBuildAnd(L->b, ib, KI(L, x, 0x007fffff), ""), KI(L, x, 0x3f000000), "");
  LLVMValueRef m = from_bits(L, mb, x); /* in [0.5, 1) */
  LLVMValueRef lo = lw_fcmp(L, LLVMRealOLT, m, K(L, x, 0.707106781186547524));
  e = LLVMBuildSub(L->b, e, lw_select(L, lo, KI(L, x, 1), KI(L, x, 0)), "");
  LLVMValueRef f = lw_fsub(L, lw_select(L, lo, lw_fadd(L, m, m), m), K(L, x, 1.0));
  LLVMValueRef ef = LLVMBuildSIToFP(L->b, e, LLVMTypeOf(x), "");
  LLVMValueRef z = lw_fmul(L, f, f);
  LLVMValueRef y = lw_fmul(L, lw_fmul(L, horner(L, f, p, 9), f), z);
  y = lw_fadd(L, y, lw_fmul(L, ef, K(L, x, -2.12194440e-4)));
  y = lw_fsub(L, y, lw_fmul(L, z, K(L, x, 0.5)));
  LLVMValueRef r = lw_fadd(L, lw_fadd(L, f, y), lw_fmul(L, ef, K(L, x, 0.693359375)));
  /* log 0 = -inf, log(inf) = inf, log(x < 0) = NaN, NaN stays. */
  r = lw_select(L, lw_fcmp(L, LLVMRealOEQ, x, K(L, x, 0.0)), K(L, x, -INFINITY), r);
  r = lw_select(L, lw_fcmp(L, LLVMRealOEQ, x, K(L, x, INFINITY)), x, r);
  return lw_select(L, lw_fcmp(L, LLVMRealULT, x, K(L, x, 0.0)), K(L, x, NAN), r);
}

/* ---- tanh, sigmoid ------------------------------------------------------ */

LLVMValueRef lw_tanh(Lower *L, LLVMValueRef x) {
  if (is_f64(x)) return libm1(L, "tanh", x);
  static const double p[] = {-3.33332819422E-1, 1.33314422036E-1, -5.37397155531E-2,
                             2.06390887954E-2, -5.70498872745E-3};
  LLVMValueRef z = lw_fmul(L, x, x);
  LLVMValueRef small = lw_fadd(L, lw_fmul(L, lw_fmul(L, horner(L, z, p, 5), z), x), x);
  LLVMValueRef a = lw_intrinsic1(L, "llvm.fabs", x);
  LLVMValueRef e = lw_exp(L, lw_fadd(L, a, a));
  LLVMValueRef big =
      lw_fsub(L, K(L, x, 1.0), lw_fdiv(L, K(L, x, 2.0), lw_fadd(L, e, K(L, x, 1.0))));
  big = lw_intrinsic2(L, "llvm.copysign", big, x);
  return lw_select(L, lw_fcmp(L, LLVMRealOLT, a, K(L, x, 0.625)), small, big);
}

LLVMValueRef lw_sigmoid(Lower *L, LLVMValueRef x) {
  LLVMValueRef e = lw_exp(L, lw_fneg(L, x));
  return lw_fdiv(L, K(L, x, 1.0), lw_fadd(L, K(L, x, 1.0), e));
}

LLVMValueRef lw_sqrt(Lower *L, LLVMValueRef x) { return lw_intrinsic1(L, "llvm.sqrt", x); }

/* ---- erf, erfc, the normal CDF ------------------------------------------ */

/* erf(a) / a for |a| < 0.5 by its Taylor series in a^2. */
static LLVMValueRef erf_small_over_a(Lower *L, LLVMValueRef a) {
  static const double c[] = {MATH_2_SQRTPI,         -MATH_2_SQRTPI / 3.0,  MATH_2_SQRTPI / 10.0,
                             -MATH_2_SQRTPI / 42.0, MATH_2_SQRTPI / 216.0, -MATH_2_SQRTPI / 1320.0,
                             MATH_2_SQRTPI / 9360.0};
  return horner(L, lw_fmul(L, a, a), c, 7);
}

/* a with its low 12 significand bits cleared: ah^2 is exact in f32. */
static LLVMValueRef split_hi(Lower *L, LLVMValueRef a) {
  return from_bits(L, LLVMBuildAnd(L->b, bits(L, a), KI(L, a, (int32_t)0xfffff000u), ""), a);
}

/* e^(-a^2) for f32 a >= 0 (or -a, or inf), with a^2 split as hi + lo from
 * a itself so the large exponent loses nothing; scale multiplies a^2 (0.5:
 * e^(-a^2/2)). */
static LLVMValueRef exp_neg_sq(Lower *L, LLVMValueRef a, double scale) {
  LLVMValueRef ah = split_hi(L, a);
  LLVMValueRef hi = lw_fmul(L, lw_fmul(L, ah, ah), K(L, a, -scale));
  LLVMValueRef lo = lw_fmul(L, lw_fmul(L, lw_fsub(L, a, ah), lw_fadd(L, a, ah)), K(L, a, -scale));
  return exp_core(L, hi, lo);
}

/* erfc(a) for f32 a >= 0 given e = e^(-a^2): t e Q(t), t = 1 / (1 + a/2),
 * Q(t) ~ erfc(a) e^(a^2) / t fitted over a in [0, 12] (relative error 5.2e-8
 * with these f32 coefficients; beyond 12 the result underflows). */
static LLVMValueRef erfc_from(Lower *L, LLVMValueRef a, LLVMValueRef e) {
  static const double q[] = {0.282075167, 0.282626808,  0.240741089, 0.214958191,   -0.0655689314,
                             0.356651902, -0.588414609, 0.365109742, -0.0951193795, 0.00693999417};
  LLVMValueRef t = lw_fdiv(L, K(L, a, 1.0), lw_fadd(L, K(L, a, 1.0), lw_fmul(L, a, K(L, a, 0.5))));
  return lw_fmul(L, lw_fmul(L, t, horner(L, t, q, 10)), e);
}

LLVMValueRef lw_erf(Lower *L, LLVMValueRef x) {
  if (is_f64(x)) return libm1(L, "erf", x);
  LLVMValueRef a = lw_intrinsic1(L, "llvm.fabs", x);
  LLVMValueRef small = lw_fmul(L, x, erf_small_over_a(L, a));
  LLVMValueRef erfc = erfc_from(L, a, exp_neg_sq(L, a, 1.0));
  LLVMValueRef big = lw_intrinsic2(L, "llvm.copysign", lw_fsub(L, K(L, x, 1.0), erfc), x);
  LLVMValueRef r = lw_select(L, lw_fcmp(L, LLVMRealOLT, a, K(L, x, 0.5)), small, big);
  return lw_select(L, lw_isnan(L, x), x, r);
}

/* Phi(x) for f32 x, and e^(-x^2/2) (which erfc needs) into *e: erfc(|u|)/2
 * for u = x / sqrt 2 <= 0, 1 - erfc(u)/2 above (Phi > 1/2 there, so the
 * difference costs no relative accuracy). */
static LLVMValueRef normal_cdf_e(Lower *L, LLVMValueRef x, LLVMValueRef *e) {
  LLVMValueRef u = lw_fmul(L, x, K(L, x, MATH_SQRT1_2));
  LLVMValueRef a = lw_intrinsic1(L, "llvm.fabs", u);
  /* a^2 = x^2 / 2 from x itself: rounding x / sqrt 2 first would cost 2a^2 ulps. */
  *e = exp_neg_sq(L, lw_intrinsic1(L, "llvm.fabs", x), 0.5);
  LLVMValueRef half_erfc = lw_fmul(L, K(L, x, 0.5), erfc_from(L, a, *e));
  LLVMValueRef pos = lw_fsub(L, K(L, x, 1.0), half_erfc);
  LLVMValueRef r = lw_select(L, lw_fcmp(L, LLVMRealOGT, u, K(L, x, 0.0)), pos, half_erfc);
  return lw_select(L, lw_isnan(L, x), x, r);
}

LLVMValueRef lw_normal_cdf(Lower *L, LLVMValueRef x) {
  LLVMValueRef u = lw_fmul(L, x, K(L, x, MATH_SQRT1_2)), e;
  if (is_f64(x)) return lw_fmul(L, K(L, x, 0.5), lw_fadd(L, K(L, x, 1.0), libm1(L, "erf", u)));
  return normal_cdf_e(L, x, &e);
}

/* dy (Phi(x) + x phi(x)), phi(x) = e^(-x^2/2) / sqrt(2 pi): in f32 the
 * exponential is Phi's own. */
LLVMValueRef lw_gelu_grad(Lower *L, LLVMValueRef x, LLVMValueRef dy) {
  LLVMValueRef cdf, e;
  if (is_f64(x)) {
    cdf = lw_normal_cdf(L, x);
    e = libm1(L, "exp", lw_fmul(L, lw_fmul(L, x, x), K(L, x, -0.5)));
  } else {
    cdf = normal_cdf_e(L, x, &e);
  }
  LLVMValueRef pdf = lw_fmul(L, e, K(L, x, MATH_INV_SQRT_2PI));
  return lw_fmul(L, dy, lw_fadd(L, cdf, lw_fmul(L, x, pdf)));
}

LLVMValueRef lw_gelu(Lower *L, LLVMValueRef x) { return lw_fmul(L, x, lw_normal_cdf(L, x)); }

/* ---- pow with a literal exponent ---------------------------------------- */

/* x^n by repeated squaring, n a small non-negative integer. */
static LLVMValueRef powi(Lower *L, LLVMValueRef x, int n) {
  LLVMValueRef r = NULL, s = x;
  for (; n; n >>= 1) {
    if (n & 1) r = r ? lw_fmul(L, r, s) : s;
    if (n > 1) s = lw_fmul(L, s, s);
  }
  return r ? r : K(L, x, 1.0);
}

/* torch.pow(x, c) with C's pow semantics: integer c exact by multiplication
 * (negative x allowed), c = 0.5 a square root, else e^(c log x) (NaN for
 * x < 0). */
LLVMValueRef lw_pow(Lower *L, LLVMValueRef x, double c) {
  if (c == 0.0) return K(L, x, 1.0);
  if (c == 0.5) return lw_sqrt(L, x);
  if (c == (double)(int)c && c >= -64 && c <= 64) {
    LLVMValueRef p = powi(L, x, c < 0 ? -(int)c : (int)c);
    return c < 0 ? lw_fdiv(L, K(L, x, 1.0), p) : p;
  }
  if (c == -0.5) return lw_fdiv(L, K(L, x, 1.0), lw_sqrt(L, x));
  if (is_f64(x)) {
    LLVMTypeRef args[2] = {L->f64, L->f64};
    LLVMTypeRef ft = LLVMFunctionType(L->f64, args, 2, 0);
    LLVMValueRef f = LLVMGetNamedFunction(L->mod, "pow");
    if (!f) f = LLVMAddFunction(L->mod, "pow", ft);
    LLVMValueRef av[2] = {x, K(L, x, c)};
    return LLVMBuildCall2(L->b, ft, f, av, 2, "");
  }
  /* Fractional c: x^c = x^floor(c) * x^frac(c) keeps log's error small. */
  double whole = (double)(int64_t)c;
  if (c < 0 && whole != c) whole -= 1.0;
  double frac = c - whole;
  LLVMValueRef xf =
      frac == 0.5 ? lw_sqrt(L, x) : lw_exp(L, lw_fmul(L, lw_log(L, x), K(L, x, frac)));
  LLVMValueRef xw = whole >= -64 && whole <= 64
                        ? lw_pow(L, x, whole)
                        : lw_exp(L, lw_fmul(L, lw_log(L, x), K(L, x, whole)));
  LLVMValueRef r = lw_fmul(L, xw, xf);
  return lw_select(L, lw_fcmp(L, LLVMRealOLT, x, K(L, x, 0.0)), K(L, x, NAN), r);
}
