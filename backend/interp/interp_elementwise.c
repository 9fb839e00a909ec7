/* interp_elementwise.c - source ops, unary math and broadcasting binary ops. */
#include "interp_priv.h"

#include <math.h>

/* math.h's M_SQRT1_2 is an XSI extension, not C11. */
#define INTERP_SQRT1_2 0.70710678118654752440

/* ---- Sources ------------------------------------------------------------ */

/* input: the data interp_set bound (already in out). */
bool interp_input(const InterpCtx *cx) {
  if (cx->bound) return true;
  return interp_fail(cx, "input '%s' is not set", cx->n->name);
}

/* param: the data interp_set bound (already in out). */
bool interp_param(const InterpCtx *cx) {
  if (cx->bound) return true;
  return interp_fail(cx, "param '%s' is not set", cx->n->name);
}

/* state: optimizer state (momentum, Adam's moments, the step), bound like a
 * param or by interp_apply_updates; zeros until then (fresh torch.optim state). */
bool interp_state(const InterpCtx *cx) {
  if (cx->bound) return true;
  int64_t count = ir_type_numel(&cx->n->type);
  for (int64_t i = 0; i < count; i++) cx->out[i] = 0.0;
  return true;
}

/* const: out[i] = value for every element of its type. */
bool interp_const(const InterpCtx *cx) {
  double v = ir_attr_float(cx->n, "value");
  int64_t count = ir_type_numel(&cx->n->type);
  for (int64_t i = 0; i < count; i++) cx->out[i] = v;
  return true;
}

/* causal_mask: out[i][j] = 0 for j <= i, -inf for j > i. */
bool interp_causal_mask(const InterpCtx *cx) {
  int64_t n = cx->n->type.dims[0];
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) cx->out[i * n + j] = j <= i ? 0.0 : -INFINITY;
  return true;
}

/* ---- Unary -------------------------------------------------------------- */

/* out[i] = f(in[i]). */
static bool map1(const InterpCtx *cx, double (*f)(double)) {
  const double *x = cx->in[0];
  int64_t count = ir_type_numel(&cx->n->type);
  for (int64_t i = 0; i < count; i++) cx->out[i] = f(x[i]);
  return true;
}

static double neg_(double x) { return -x; }
/* max(x, 0), NaN propagating like torch.relu. */
static double relu_(double x) { return x < 0 ? 0.0 : x; }
/* 1 / (1 + e^-x): e^-x overflows to inf for x << 0, giving 0. */
static double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }
static double rsqrt_(double x) { return 1.0 / sqrt(x); }
/* F.gelu exact: 0.5 x (1 + erf(x / sqrt 2)). */
static double gelu_(double x) { return 0.5 * x * (1.0 + erf(x * INTERP_SQRT1_2)); }
/* F.silu: x sigmoid(x). */
static double silu_(double x) { return x * sigmoid_(x); }

/* -x */
bool interp_neg(const InterpCtx *cx) { return map1(cx, neg_); }
/* max(x, 0) */
bool interp_relu(const InterpCtx *cx) { return map1(cx, relu_); }
/* 1 / (1 + e^-x) */
bool interp_sigmoid(const InterpCtx *cx) { return map1(cx, sigmoid_); }
/* tanh x */
bool interp_tanh(const InterpCtx *cx) { return map1(cx, tanh); }
/* e^x */
bool interp_exp(const InterpCtx *cx) { return map1(cx, exp); }
/* ln x: -inf at 0, NaN below */
bool interp_log(const InterpCtx *cx) { return map1(cx, log); }
/* sqrt x: NaN below 0 */
bool interp_sqrt(const InterpCtx *cx) { return map1(cx, sqrt); }
/* 1 / sqrt x */
bool interp_rsqrt(const InterpCtx *cx) { return map1(cx, rsqrt_); }
/* |x| */
bool interp_abs(const InterpCtx *cx) { return map1(cx, fabs); }
/* 0.5 x (1 + erf(x / sqrt 2)) */
bool interp_gelu(const InterpCtx *cx) { return map1(cx, gelu_); }
/* x / (1 + e^-x) */
bool interp_silu(const InterpCtx *cx) { return map1(cx, silu_); }

/* torch.pow(x, c): C's pow, so pow(-8, 1/3) is NaN and pow(x, 0) is 1. */
bool interp_pow(const InterpCtx *cx) {
  double c = ir_attr_float(cx->n, "exponent");
  const double *x = cx->in[0];
  int64_t count = ir_type_numel(&cx->n->type);
  for (int64_t i = 0; i < count; i++) cx->out[i] = pow(x[i], c);
  return true;
}

/* ---- Binary, broadcasting ----------------------------------------------- */

static bool map2(const InterpCtx *cx, double (*f)(double, double)) {
  interp_broadcast_map(&cx->n->type, cx->out, interp_in_type(cx, 0), cx->in[0],
                       interp_in_type(cx, 1), cx->in[1], f);
  return true;
}

static double add_(double a, double b) { return a + b; }
static double sub_(double a, double b) { return a - b; }
static double mul_(double a, double b) { return a * b; }
static double div_(double a, double b) { return a / b; }
/* torch.maximum / torch.minimum propagate a NaN from either side. */
static double maximum_(double a, double b) { return isnan(a) || isnan(b) ? NAN : a > b ? a : b; }
static double minimum_(double a, double b) { return isnan(a) || isnan(b) ? NAN : a < b ? a : b; }

/* a + b */
bool interp_add(const InterpCtx *cx) { return map2(cx, add_); }
/* a - b */
bool interp_sub(const InterpCtx *cx) { return map2(cx, sub_); }
/* a * b */
bool interp_mul(const InterpCtx *cx) { return map2(cx, mul_); }
/* a / b: IEEE, so x/0 is +-inf and 0/0 NaN */
bool interp_div(const InterpCtx *cx) { return map2(cx, div_); }
/* max(a, b), NaN if either is */
bool interp_maximum(const InterpCtx *cx) { return map2(cx, maximum_); }
/* min(a, b), NaN if either is */
bool interp_minimum(const InterpCtx *cx) { return map2(cx, minimum_); }
