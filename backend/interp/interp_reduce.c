/* interp_reduce.c - reductions: sum/mean/max over axes, softmax, layer_norm, pooling. */
#include "interp_priv.h"

#include <math.h>

/* ---- sum, mean, max over axes ------------------------------------------- */

/* Whether dim d of the input is one of the node's (sorted) axes. */
static bool reduced_dim(const AttrVal *axes, int d) {
  for (int k = 0; k < axes->n; k++)
    if (axes->i[k] == d) return true;
  return false;
}

/* out = init; then out[kept index] = combine(out[...], x[index]) for every
 * element of x in C order. The output's layout is the input's with the
 * reduced dims at size 1 (keepdim only changes the rank, not the layout),
 * so its offset moves by that shape's strides, 0 along reduced dims. */
static void reduce(const InterpCtx *cx, double init, double (*combine)(double, double)) {
  const Type *xt = interp_in_type(cx, 0);
  const AttrVal *axes = ir_attr_c(cx->n, "axes");
  int64_t count = ir_type_numel(&cx->n->type);
  for (int64_t i = 0; i < count; i++) cx->out[i] = init;
  Type kept = *xt;
  for (int d = 0; d < xt->rank; d++)
    if (reduced_dim(axes, d)) kept.dims[d] = 1;
  Walk w;
  interp_walk_init(&w, xt->rank, xt->dims);
  interp_strides(xt, w.stride[0]);
  interp_broadcast_strides(&kept, xt, w.stride[1]);
  int64_t len = interp_walk_row_len(&w), rows = interp_walk_rows(&w);
  int64_t so = xt->rank ? w.stride[1][xt->rank - 1] : 0;
  for (int64_t r = 0; r < rows; r++, interp_walk_next_row(&w)) {
    const double *px = cx->in[0] + r * len;
    double *po = cx->out + w.off[1];
    for (int64_t j = 0; j < len; j++) po[j * so] = combine(po[j * so], px[j]);
  }
}

static double add_(double acc, double x) { return acc + x; }
/* torch.amax propagates NaN. */
static double max_(double acc, double x) { return x > acc || isnan(x) ? x : acc; }

/* torch.sum(x, dim=axes, keepdim): out = sum over axes of x (double accumulation). */
bool interp_sum(const InterpCtx *cx) {
  reduce(cx, 0.0, add_);
  return true;
}

/* torch.mean(x, dim=axes, keepdim): out = sum over axes of x / (product of their sizes). */
bool interp_mean(const InterpCtx *cx) {
  reduce(cx, 0.0, add_);
  const Type *xt = interp_in_type(cx, 0);
  int64_t count = ir_type_numel(&cx->n->type);
  int64_t per = ir_type_numel(xt) / count;
  for (int64_t i = 0; i < count; i++) cx->out[i] /= (double)per;
  return true;
}

/* torch.amax(x, dim=axes, keepdim): out = max over axes of x, NaN if any is. */
bool interp_max(const InterpCtx *cx) {
  reduce(cx, -INFINITY, max_);
  return true;
}

/* ---- softmax, log_softmax ----------------------------------------------- */

/* x viewed as [outer, len, inner] around axis. */
typedef struct AxisView {
  int64_t outer, len, inner;
} AxisView;

static AxisView axis_view(const Type *t, int64_t axis) {
  AxisView v = {1, t->dims[axis], 1};
  for (int d = 0; d < axis; d++) v.outer *= t->dims[d];
  for (int d = (int)axis + 1; d < t->rank; d++) v.inner *= t->dims[d];
  return v;
}

/* max_k x[k*s] and log sum_k e^(x[k*s] - max) of one line along the axis. */
static void line_max_lse(const double *x, int64_t len, int64_t s, double *max, double *lse) {
  double m = -INFINITY;
  for (int64_t k = 0; k < len; k++) m = max_(m, x[k * s]);
  double sum = 0.0;
  for (int64_t k = 0; k < len; k++) sum += exp(x[k * s] - m);
  *max = m;
  *lse = log(sum);
}

/* Softmax (log_softmax when as_log) of every line along the node's axis. */
static void softmax_lines(const InterpCtx *cx, bool as_log) {
  AxisView v = axis_view(&cx->n->type, ir_attr_int(cx->n, "axis"));
  for (int64_t o = 0; o < v.outer; o++)
    for (int64_t i = 0; i < v.inner; i++) {
      int64_t base = o * v.len * v.inner + i;
      const double *x = cx->in[0] + base;
      double *y = cx->out + base, m, lse;
      line_max_lse(x, v.len, v.inner, &m, &lse);
      for (int64_t k = 0; k < v.len; k++) {
        double t = x[k * v.inner] - m - lse;
        y[k * v.inner] = as_log ? t : exp(t);
      }
    }
}

/* F.softmax(x, axis): out = e^(x - m) / sum e^(x - m), m the line's max (for stability). */
bool interp_softmax(const InterpCtx *cx) {
  softmax_lines(cx, false);
  return true;
}

/* F.log_softmax(x, axis): out = x - m - log sum e^(x - m). */
bool interp_log_softmax(const InterpCtx *cx) {
  softmax_lines(cx, true);
  return true;
}

/* ---- layer_norm --------------------------------------------------------- */

/* F.layer_norm over the last dim D:
 *   mean = sum x / D;  var = sum (x - mean)^2 / D  (biased)
 *   out = (x - mean) / sqrt(var + eps) * gamma + beta. */
bool interp_layer_norm(const InterpCtx *cx) {
  const Type *t = &cx->n->type;
  int64_t d = t->dims[t->rank - 1], rows = ir_type_numel(t) / d;
  double eps = ir_attr_float(cx->n, "eps");
  const double *gamma = cx->in[1], *beta = cx->in[2];
  for (int64_t r = 0; r < rows; r++) {
    const double *x = cx->in[0] + r * d;
    double *y = cx->out + r * d, mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < d; i++) mean += x[i];
    mean /= (double)d;
    for (int64_t i = 0; i < d; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (double)d;
    double rstd = 1.0 / sqrt(var + eps);
    for (int64_t i = 0; i < d; i++) y[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
  }
  return true;
}

/* ---- Pooling ------------------------------------------------------------ */

/* Visits every k x k window (stride s, no padding) of an NCHW input, writing
 * out[n,c,oh,ow] = pool(window starting at x[n,c,oh*s,ow*s], row length W). */
static void pool2d(const InterpCtx *cx, double (*pool)(const double *, int64_t, int64_t)) {
  const Type *xt = interp_in_type(cx, 0), *ot = &cx->n->type;
  int64_t planes = xt->dims[0] * xt->dims[1], h = xt->dims[2], w = xt->dims[3];
  int64_t ho = ot->dims[2], wo = ot->dims[3];
  int64_t k = ir_attr_int(cx->n, "kernel"), s = ir_attr_int(cx->n, "stride");
  for (int64_t p = 0; p < planes; p++)
    for (int64_t oh = 0; oh < ho; oh++)
      for (int64_t ow = 0; ow < wo; ow++) {
        const double *win = cx->in[0] + p * h * w + oh * s * w + ow * s;
        cx->out[(p * ho + oh) * wo + ow] = pool(win, w, k);
      }
}

/* The first maximum of a window (a later equal value does not replace it;
 * the gradient goes to the first), NaN if any is, as PyTorch. */
static double window_max(const double *win, int64_t w, int64_t k) {
  double m = win[0];
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < k; j++) m = max_(m, win[i * w + j]);
  return m;
}

static double window_mean(const double *win, int64_t w, int64_t k) {
  double sum = 0.0;
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < k; j++) sum += win[i * w + j];
  return sum / (double)(k * k);
}

/* F.max_pool2d(x, k, s): out[n,c,oh,ow] = max_{i,j<k} x[n,c,oh*s+i,ow*s+j]. */
bool interp_max_pool2d(const InterpCtx *cx) {
  pool2d(cx, window_max);
  return true;
}

/* F.avg_pool2d(x, k, s): out[n,c,oh,ow] = sum_{i,j<k} x[n,c,oh*s+i,ow*s+j] / k^2. */
bool interp_avg_pool2d(const InterpCtx *cx) {
  pool2d(cx, window_mean);
  return true;
}
