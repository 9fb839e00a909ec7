/* interp_contract.c - contractions: batched matmul, conv2d, and the LSTM recurrence. */
#include "interp_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- matmul ------------------------------------------------------------- */

/* One [M,K] @ [K,N] product, i-k-j order so the inner loop streams rows of
 * b and out: out[i,j] = sum_k a[i,k] b[k,j], accumulated in double. */
static void gemm(const double *a, const double *b, double *out, int64_t m, int64_t k, int64_t n) {
  for (int64_t i = 0; i < m; i++) {
    double *o = out + i * n;
    for (int64_t j = 0; j < n; j++) o[j] = 0.0;
    for (int64_t p = 0; p < k; p++) {
      double aip = a[i * k + p];
      const double *brow = b + p * n;
      for (int64_t j = 0; j < n; j++) o[j] += aip * brow[j];
    }
  }
}

/* Type t without its last two dims: a matmul operand's batch shape. */
static Type batch_of(const Type *t) {
  Type b = *t;
  b.rank -= 2;
  return b;
}

/* torch.matmul for rank >= 2: out[..., i, j] = sum_k a[..., i, k] b[..., k, j],
 * the batch dims ("...") broadcast with NumPy's rules. */
bool interp_matmul(const InterpCtx *cx) {
  const Type *at = interp_in_type(cx, 0), *bt = interp_in_type(cx, 1), *ot = &cx->n->type;
  int64_t m = ot->dims[ot->rank - 2], n = ot->dims[ot->rank - 1], k = at->dims[at->rank - 1];
  Type ab = batch_of(at), bb = batch_of(bt), ob = batch_of(ot);
  Walk w; /* over the output's batch dims, offsets counted in matrices */
  interp_walk_init(&w, ob.rank, ob.dims);
  interp_broadcast_strides(&ab, &ob, w.stride[0]);
  interp_broadcast_strides(&bb, &ob, w.stride[1]);
  int64_t batches = ir_type_numel(&ob);
  for (int64_t t = 0; t < batches; t++, interp_walk_next(&w))
    gemm(cx->in[0] + w.off[0] * m * k, cx->in[1] + w.off[1] * k * n, cx->out + t * m * n, m, k, n);
  return true;
}

/* ---- conv2d ------------------------------------------------------------- */

/* One output channel plane += w * (input channel plane shifted by (kh, kw)):
 * the input row ih = oh*s - p + kh and column iw = ow*s - p + kw, zero
 * outside the input. */
static void conv_tap(double *plane, const double *x, double wv, int64_t h, int64_t wd, int64_t ho,
                     int64_t wo, int64_t s, int64_t p, int64_t kh, int64_t kw) {
  for (int64_t oh = 0; oh < ho; oh++) {
    int64_t ih = oh * s - p + kh;
    if (ih < 0 || ih >= h) continue;
    const double *xrow = x + ih * wd;
    double *orow = plane + oh * wo;
    for (int64_t ow = 0; ow < wo; ow++) {
      int64_t iw = ow * s - p + kw;
      if (iw >= 0 && iw < wd) orow[ow] += wv * xrow[iw];
    }
  }
}

/* F.conv2d, NCHW, x [N,Ci,H,W], w [Co,Ci,KH,KW], optional b [Co]:
 * out[n,co,oh,ow] = b[co] + sum_{ci,kh,kw} w[co,ci,kh,kw] x[n,ci,oh*s-p+kh,ow*s-p+kw],
 * x read as 0 in the padding. */
bool interp_conv2d(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0), *wt = interp_in_type(cx, 1), *ot = &cx->n->type;
  int64_t nb = xt->dims[0], ci_n = xt->dims[1], h = xt->dims[2], wd = xt->dims[3];
  int64_t co_n = wt->dims[0], kh_n = wt->dims[2], kw_n = wt->dims[3];
  int64_t ho = ot->dims[2], wo = ot->dims[3];
  int64_t s = ir_attr_int(cx->n, "stride"), p = ir_attr_int(cx->n, "padding");
  const double *x = cx->in[0], *w = cx->in[1], *bias = cx->n->nin == 3 ? cx->in[2] : NULL;
  for (int64_t b = 0; b < nb; b++)
    for (int64_t co = 0; co < co_n; co++) {
      double *plane = cx->out + (b * co_n + co) * ho * wo;
      for (int64_t i = 0; i < ho * wo; i++) plane[i] = bias ? bias[co] : 0.0;
      for (int64_t ci = 0; ci < ci_n; ci++)
        for (int64_t kh = 0; kh < kh_n; kh++)
          for (int64_t kw = 0; kw < kw_n; kw++)
            conv_tap(plane, x + (b * ci_n + ci) * h * wd,
                     w[((co * ci_n + ci) * kh_n + kh) * kw_n + kw], h, wd, ho, wo, s, p, kh, kw);
    }
  return true;
}

/* ---- lstm --------------------------------------------------------------- */

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* z[g] += sum_i v[i] w[g,i] for g < rows: v W^T, w row-major [rows, cols]. */
static void add_vec_wt(double *z, const double *v, const double *w, int64_t rows, int64_t cols) {
  for (int64_t g = 0; g < rows; g++) {
    const double *wrow = w + g * cols;
    double acc = 0.0;
    for (int64_t i = 0; i < cols; i++) acc += v[i] * wrow[i];
    z[g] += acc;
  }
}

/* One time step for one sequence, gates z = [i | f | g | o], each H long:
 * c = sigmoid(f) c + sigmoid(i) tanh(g);  h = sigmoid(o) tanh(c). */
static void lstm_cell(const double *z, double *h, double *c, int64_t hn) {
  for (int64_t j = 0; j < hn; j++) {
    double ig = sigmoid(z[j]), fg = sigmoid(z[hn + j]);
    double gg = tanh(z[2 * hn + j]), og = sigmoid(z[3 * hn + j]);
    c[j] = fg * c[j] + ig * gg;
    h[j] = og * tanh(c[j]);
  }
}

/* One-layer nn.LSTM(batch_first=True), h0 = c0 = 0: for t = 0..T-1,
 *   z = x_t W_ih^T + b_ih + h W_hh^T + b_hh     (gates i, f, g, o)
 *   c = sigmoid(f) c + sigmoid(i) tanh(g);  h = sigmoid(o) tanh(c);  out[:, t] = h. */
bool interp_lstm(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0);
  int64_t bn = xt->dims[0], tn = xt->dims[1], in_n = xt->dims[2], hn = cx->n->type.dims[2];
  const double *x = cx->in[0], *wih = cx->in[1], *whh = cx->in[2];
  const double *bih = cx->in[3], *bhh = cx->in[4];
  double *z = interp_scratch((size_t)(4 * hn), sizeof *z);
  double *h = interp_scratch((size_t)hn, sizeof *h), *c = interp_scratch((size_t)hn, sizeof *c);
  for (int64_t b = 0; b < bn; b++) {
    memset(h, 0, (size_t)hn * sizeof *h);
    memset(c, 0, (size_t)hn * sizeof *c);
    for (int64_t t = 0; t < tn; t++) {
      for (int64_t g = 0; g < 4 * hn; g++) z[g] = bih[g] + bhh[g];
      add_vec_wt(z, x + (b * tn + t) * in_n, wih, 4 * hn, in_n);
      add_vec_wt(z, h, whh, 4 * hn, hn);
      lstm_cell(z, h, c, hn);
      memcpy(cx->out + (b * tn + t) * hn, h, (size_t)hn * sizeof *h);
    }
  }
  free(z);
  free(h);
  free(c);
  return true;
}
