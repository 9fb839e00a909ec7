/* interp_backward.c - backward ops: masks, broadcast, pad, gelu, layer_norm, embedding, loss. */
#include "interp_priv.h"

#include <math.h>
#include <string.h>

/* 1 / sqrt(2 pi) and 1 / sqrt 2 (math.h's M_ constants are not C11). */
#define INTERP_INV_SQRT_2PI 0.39894228040143267794
#define INTERP_SQRT1_2      0.70710678118654752440

/* ---- Masks and movement ------------------------------------------------- */

static double greater_(double a, double b) { return a > b ? 1.0 : 0.0; }
static double equal_(double a, double b) { return a == b ? 1.0 : 0.0; }
static double first_(double a, double b) {
  (void)b;
  return a;
}

/* greater(a, b): out = 1 where a > b, else 0 (NaN compares false), broadcasting. */
bool interp_greater(const InterpCtx *cx) {
  interp_broadcast_map(&cx->n->type, cx->out, interp_in_type(cx, 0), cx->in[0],
                       interp_in_type(cx, 1), cx->in[1], greater_);
  return true;
}

/* equal(a, b): out = 1 where a == b, else 0, broadcasting. */
bool interp_equal(const InterpCtx *cx) {
  interp_broadcast_map(&cx->n->type, cx->out, interp_in_type(cx, 0), cx->in[0],
                       interp_in_type(cx, 1), cx->in[1], equal_);
  return true;
}

/* broadcast(x, shape): out[i] = x[i read with NumPy broadcasting]. */
bool interp_broadcast(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0);
  interp_broadcast_map(&cx->n->type, cx->out, xt, cx->in[0], xt, cx->in[0], first_);
  return true;
}

/* pad(x, before, after): out = 0, then out[before + i] = x[i] for every
 * index i of x (the adjoint of slice). */
bool interp_pad(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0), *ot = &cx->n->type;
  const AttrVal *before = ir_attr_c(cx->n, "before");
  memset(cx->out, 0, (size_t)ir_type_numel(ot) * sizeof(double));
  int64_t os[IR_MAX_RANK];
  interp_strides(ot, os);
  Walk w; /* over x, offsets into out */
  interp_walk_init(&w, xt->rank, xt->dims);
  for (int d = 0; d < xt->rank; d++) {
    w.stride[0][d] = os[d];
    w.off[0] += before->i[d] * os[d];
  }
  int64_t len = interp_walk_row_len(&w), rows = interp_walk_rows(&w);
  for (int64_t r = 0; r < rows; r++, interp_walk_next_row(&w))
    memcpy(cx->out + w.off[0], cx->in[0] + r * len, (size_t)len * sizeof(double));
  return true;
}

/* ---- Elementwise -------------------------------------------------------- */

/* Forward: gelu(x) = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2.
 * Backward: dx = dy (Phi(x) + x phi(x)), phi(x) = e^(-x^2 / 2) / sqrt(2 pi). */
bool interp_gelu_grad(const InterpCtx *cx) {
  const double *x = cx->in[0], *dy = cx->in[1];
  int64_t count = ir_type_numel(&cx->n->type);
  for (int64_t i = 0; i < count; i++) {
    double cdf = 0.5 * (1.0 + erf(x[i] * INTERP_SQRT1_2));
    double pdf = exp(-0.5 * x[i] * x[i]) * INTERP_INV_SQRT_2PI;
    cx->out[i] = dy[i] * (cdf + x[i] * pdf);
  }
  return true;
}

/* ---- layer_norm --------------------------------------------------------- */

/* Forward (interp_layer_norm), per row of D: xhat = (x - mean) rstd,
 * rstd = 1 / sqrt(var + eps), y = xhat gamma + beta.
 * Backward, with g = dy gamma:
 *   dx = rstd (g - mean(g) - xhat mean(g xhat)). */
bool interp_layer_norm_grad(const InterpCtx *cx) {
  const Type *t = &cx->n->type;
  int64_t d = t->dims[t->rank - 1], rows = ir_type_numel(t) / d;
  double eps = ir_attr_float(cx->n, "eps");
  const double *gamma = cx->in[1];
  for (int64_t r = 0; r < rows; r++) {
    const double *x = cx->in[0] + r * d, *dy = cx->in[2] + r * d;
    double *dx = cx->out + r * d, mean = 0.0, var = 0.0, sg = 0.0, sgx = 0.0;
    for (int64_t i = 0; i < d; i++) mean += x[i];
    mean /= (double)d;
    for (int64_t i = 0; i < d; i++) var += (x[i] - mean) * (x[i] - mean);
    double rstd = 1.0 / sqrt(var / (double)d + eps);
    for (int64_t i = 0; i < d; i++) {
      sg += dy[i] * gamma[i];
      sgx += dy[i] * gamma[i] * (x[i] - mean) * rstd;
    }
    for (int64_t i = 0; i < d; i++) {
      double xhat = (x[i] - mean) * rstd;
      dx[i] = rstd * (dy[i] * gamma[i] - sg / (double)d - xhat * sgx / (double)d);
    }
  }
  return true;
}

/* ---- embedding ---------------------------------------------------------- */

/* Forward: out[p, :] = table[ids[p], :].
 * Backward: dtable = 0, then dtable[ids[p], :] += dy[p, :] for every p, so
 * a repeated id accumulates. An id outside [0, vocab) is a run-time error. */
bool interp_embedding_grad(const InterpCtx *cx) {
  const Type *idt = interp_in_type(cx, 0), *ot = &cx->n->type;
  int64_t v = ot->dims[0], d = ot->dims[1], count = ir_type_numel(idt);
  memset(cx->out, 0, (size_t)ir_type_numel(ot) * sizeof(double));
  for (int64_t p = 0; p < count; p++) {
    double id = cx->in[0][p]; /* an i32, exact */
    if (id < 0 || id >= (double)v) {
      char at[INTERP_INDEX_STR_MAX];
      interp_index_str(idt, p, at, sizeof at);
      return interp_fail(cx, "embedding_grad: id %lld at %s is out of range [0, %lld)",
                         (long long)id, at, (long long)v);
    }
    double *row = cx->out + (int64_t)id * d;
    const double *dy = cx->in[1] + p * d;
    for (int64_t k = 0; k < d; k++) row[k] += dy[k];
  }
  return true;
}

/* ---- cross_entropy ------------------------------------------------------ */

/* softmax of one row of c logits into out. */
static void softmax_row(const double *z, double *out, int64_t c) {
  double m = -INFINITY, sum = 0.0;
  for (int64_t k = 0; k < c; k++) m = z[k] > m || isnan(z[k]) ? z[k] : m;
  for (int64_t k = 0; k < c; k++) sum += out[k] = exp(z[k] - m);
  for (int64_t k = 0; k < c; k++) out[k] /= sum;
}

/* Forward: loss = sum_p (logsumexp(z[p, :]) - z[p, y[p]]) / P over P rows.
 * Backward: dz[p, c] = (softmax(z[p, :])[c] - [c == y[p]]) dy / P. A label
 * outside [0, C) is a run-time error. */
bool interp_cross_entropy_grad(const InterpCtx *cx) {
  const Type *lt = interp_in_type(cx, 0), *yt = interp_in_type(cx, 1);
  int64_t c = lt->dims[lt->rank - 1], rows = ir_type_numel(yt);
  double scale = cx->in[2][0] / (double)rows;
  for (int64_t p = 0; p < rows; p++) {
    double y = cx->in[1][p]; /* an i32, exact */
    if (y < 0 || y >= (double)c) {
      char at[INTERP_INDEX_STR_MAX];
      interp_index_str(yt, p, at, sizeof at);
      return interp_fail(cx, "cross_entropy_grad: label %lld at %s is out of range [0, %lld)",
                         (long long)y, at, (long long)c);
    }
    double *dz = cx->out + p * c;
    softmax_row(cx->in[0] + p * c, dz, c);
    dz[(int64_t)y] -= 1.0;
    for (int64_t k = 0; k < c; k++) dz[k] *= scale;
  }
  return true;
}
