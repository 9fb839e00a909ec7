/* interp_loss.c - the losses, each a mean over all positions: mse, cross-entropy, the two BCEs. */
#include "interp_priv.h"

#include <math.h>
#include <stdlib.h>

static double sq_diff(double a, double b) { return (a - b) * (a - b); }

/* F.mse_loss(a, b) (mean), operands broadcast as PyTorch does:
 * out = sum (a - b)^2 / n over the n elements of the broadcast shape. */
bool interp_mse_loss(const InterpCtx *cx) {
  const Type *at = interp_in_type(cx, 0), *bt = interp_in_type(cx, 1);
  Type shape;
  IR_ASSERT(ir_broadcast(at, bt, &shape), "interp: mse_loss node %d does not broadcast", cx->n->id);
  int64_t n = ir_type_numel(&shape);
  double *d = interp_scratch((size_t)n, sizeof *d), sum = 0.0;
  interp_broadcast_map(&shape, d, at, cx->in[0], bt, cx->in[1], sq_diff);
  for (int64_t i = 0; i < n; i++) sum += d[i];
  free(d);
  cx->out[0] = sum / (double)n;
  return true;
}

/* log sum_c e^x[c] = m + log sum_c e^(x[c] - m), m = max_c x[c]. */
static double logsumexp(const double *x, int64_t c) {
  double m = -INFINITY, sum = 0.0;
  for (int64_t k = 0; k < c; k++) m = x[k] > m || isnan(x[k]) ? x[k] : m;
  if (isinf(m)) return m; /* all -inf: -inf; any +inf: +inf */
  for (int64_t k = 0; k < c; k++) sum += exp(x[k] - m);
  return m + log(sum);
}

/* F.cross_entropy (mean), class-last: logits [..., C], labels [...]:
 * out = sum_p (logsumexp(logits[p, :]) - logits[p, labels[p]]) / (number of p).
 * A label outside [0, C) is a run-time error. */
bool interp_cross_entropy(const InterpCtx *cx) {
  const Type *lt = interp_in_type(cx, 0), *yt = interp_in_type(cx, 1);
  int64_t c = lt->dims[lt->rank - 1], rows = ir_type_numel(yt);
  double sum = 0.0;
  for (int64_t p = 0; p < rows; p++) {
    double y = cx->in[1][p]; /* an i32, exact */
    if (y < 0 || y >= (double)c) {
      char at[INTERP_INDEX_STR_MAX];
      interp_index_str(yt, p, at, sizeof at);
      return interp_fail(cx, "cross_entropy: label %lld at %s is out of range [0, %lld)",
                         (long long)y, at, (long long)c);
    }
    const double *x = cx->in[0] + p * c;
    sum += logsumexp(x, c) - x[(int64_t)y];
  }
  cx->out[0] = sum / (double)rows;
  return true;
}

/* log clamped below at -100 as PyTorch does, so p = 0 or 1 gives a finite
 * loss; NaN stays NaN. */
static double clamped(double l) { return l < -100.0 ? -100.0 : l; }

/* F.binary_cross_entropy (mean):
 * out = mean(-(t max(log p, -100) + (1 - t) max(log(1 - p), -100))). */
bool interp_bce_loss(const InterpCtx *cx) {
  const double *p = cx->in[0], *t = cx->in[1];
  int64_t n = ir_type_numel(interp_in_type(cx, 0));
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++)
    sum -= t[i] * clamped(log(p[i])) + (1.0 - t[i]) * clamped(log1p(-p[i]));
  cx->out[0] = sum / (double)n;
  return true;
}

/* F.binary_cross_entropy_with_logits (mean), the stable form of
 * -(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))):
 * out = mean(max(z, 0) - z t + log(1 + e^-|z|)). */
bool interp_bce_with_logits(const InterpCtx *cx) {
  const double *z = cx->in[0], *t = cx->in[1];
  int64_t n = ir_type_numel(interp_in_type(cx, 0));
  double sum = 0.0;
  for (int64_t i = 0; i < n; i++) sum += fmax(z[i], 0.0) - z[i] * t[i] + log1p(exp(-fabs(z[i])));
  cx->out[0] = sum / (double)n;
  return true;
}
