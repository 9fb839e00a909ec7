/* interp_backward_nn.c - backward ops of the layers: conv2d, pooling, and the LSTM through time. */
#include "interp_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- conv2d ------------------------------------------------------------- */

/* Forward (interp_conv2d):
 *   y[n,co,oh,ow] = b[co] + sum_{ci,kh,kw} w[co,ci,kh,kw] x[n,ci,oh*s-p+kh,ow*s-p+kw].
 * Backward in x, the same taps scattered:
 *   dx[n,ci,oh*s-p+kh,ow*s-p+kw] += w[co,ci,kh,kw] dy[n,co,oh,ow], skipping the padding. */
bool interp_conv2d_grad_input(const InterpCtx *cx) {
  const Type *dyt = interp_in_type(cx, 0), *wt = interp_in_type(cx, 1), *ot = &cx->n->type;
  int64_t nb = ot->dims[0], ci_n = ot->dims[1], h = ot->dims[2], wd = ot->dims[3];
  int64_t co_n = wt->dims[0], kh_n = wt->dims[2], kw_n = wt->dims[3];
  int64_t ho = dyt->dims[2], wo = dyt->dims[3];
  int64_t s = ir_attr_int(cx->n, "stride"), p = ir_attr_int(cx->n, "padding");
  const double *dy = cx->in[0], *w = cx->in[1];
  memset(cx->out, 0, (size_t)ir_type_numel(ot) * sizeof(double));
  for (int64_t b = 0; b < nb; b++)
    for (int64_t co = 0; co < co_n; co++)
      for (int64_t ci = 0; ci < ci_n; ci++)
        for (int64_t kh = 0; kh < kh_n; kh++)
          for (int64_t kw = 0; kw < kw_n; kw++) {
            double wv = w[((co * ci_n + ci) * kh_n + kh) * kw_n + kw];
            const double *plane = dy + (b * co_n + co) * ho * wo;
            double *dx = cx->out + (b * ci_n + ci) * h * wd;
            for (int64_t oh = 0; oh < ho; oh++) {
              int64_t ih = oh * s - p + kh;
              if (ih < 0 || ih >= h) continue;
              for (int64_t ow = 0; ow < wo; ow++) {
                int64_t iw = ow * s - p + kw;
                if (iw >= 0 && iw < wd) dx[ih * wd + iw] += wv * plane[oh * wo + ow];
              }
            }
          }
  return true;
}

/* sum_{oh,ow} dy[oh,ow] x[oh*s-p+kh, ow*s-p+kw] over one pair of planes. */
static double conv_tap_dot(const double *dy, const double *x, int64_t h, int64_t wd, int64_t ho,
                           int64_t wo, int64_t s, int64_t p, int64_t kh, int64_t kw) {
  double acc = 0.0;
  for (int64_t oh = 0; oh < ho; oh++) {
    int64_t ih = oh * s - p + kh;
    if (ih < 0 || ih >= h) continue;
    for (int64_t ow = 0; ow < wo; ow++) {
      int64_t iw = ow * s - p + kw;
      if (iw >= 0 && iw < wd) acc += dy[oh * wo + ow] * x[ih * wd + iw];
    }
  }
  return acc;
}

/* Backward of conv2d in w:
 *   dw[co,ci,kh,kw] = sum_{n,oh,ow} dy[n,co,oh,ow] x[n,ci,oh*s-p+kh,ow*s-p+kw]. */
bool interp_conv2d_grad_weight(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0), *dyt = interp_in_type(cx, 1), *ot = &cx->n->type;
  int64_t nb = xt->dims[0], ci_n = xt->dims[1], h = xt->dims[2], wd = xt->dims[3];
  int64_t co_n = ot->dims[0], kh_n = ot->dims[2], kw_n = ot->dims[3];
  int64_t ho = dyt->dims[2], wo = dyt->dims[3];
  int64_t s = ir_attr_int(cx->n, "stride"), p = ir_attr_int(cx->n, "padding");
  for (int64_t co = 0; co < co_n; co++)
    for (int64_t ci = 0; ci < ci_n; ci++)
      for (int64_t kh = 0; kh < kh_n; kh++)
        for (int64_t kw = 0; kw < kw_n; kw++) {
          double acc = 0.0;
          for (int64_t b = 0; b < nb; b++)
            acc += conv_tap_dot(cx->in[1] + (b * co_n + co) * ho * wo,
                                cx->in[0] + (b * ci_n + ci) * h * wd, h, wd, ho, wo, s, p, kh, kw);
          cx->out[((co * ci_n + ci) * kh_n + kh) * kw_n + kw] = acc;
        }
  return true;
}

/* ---- Pooling ------------------------------------------------------------ */

/* Offset in a window (row length w) of its first maximum, or of its last NaN:
 * the element interp_max_pool2d returns, as PyTorch picks it. */
static int64_t window_argmax(const double *win, int64_t w, int64_t k) {
  double m = win[0];
  int64_t at = 0;
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < k; j++) {
      double v = win[i * w + j];
      if (v > m || isnan(v)) {
        m = v;
        at = i * w + j;
      }
    }
  return at;
}

/* Forward: y[n,c,oh,ow] = max_{i,j<k} x[n,c,oh*s+i,ow*s+j].
 * Backward: dx = 0, then each dy[n,c,oh,ow] goes to its window's first
 * maximum (overlapping windows accumulate). */
bool interp_max_pool2d_grad(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0), *dyt = interp_in_type(cx, 1);
  int64_t planes = xt->dims[0] * xt->dims[1], h = xt->dims[2], w = xt->dims[3];
  int64_t ho = dyt->dims[2], wo = dyt->dims[3];
  int64_t k = ir_attr_int(cx->n, "kernel"), s = ir_attr_int(cx->n, "stride");
  memset(cx->out, 0, (size_t)ir_type_numel(xt) * sizeof(double));
  for (int64_t p = 0; p < planes; p++)
    for (int64_t oh = 0; oh < ho; oh++)
      for (int64_t ow = 0; ow < wo; ow++) {
        int64_t start = p * h * w + oh * s * w + ow * s;
        cx->out[start + window_argmax(cx->in[0] + start, w, k)] +=
            cx->in[1][(p * ho + oh) * wo + ow];
      }
  return true;
}

/* Forward: y[n,c,oh,ow] = sum_{i,j<k} x[n,c,oh*s+i,ow*s+j] / k^2.
 * Backward: dx = 0, then dx[n,c,oh*s+i,ow*s+j] += dy[n,c,oh,ow] / k^2. */
bool interp_avg_pool2d_grad(const InterpCtx *cx) {
  const Type *dyt = interp_in_type(cx, 0), *ot = &cx->n->type;
  int64_t planes = ot->dims[0] * ot->dims[1], h = ot->dims[2], w = ot->dims[3];
  int64_t ho = dyt->dims[2], wo = dyt->dims[3];
  int64_t k = ir_attr_int(cx->n, "kernel"), s = ir_attr_int(cx->n, "stride");
  memset(cx->out, 0, (size_t)ir_type_numel(ot) * sizeof(double));
  for (int64_t p = 0; p < planes; p++)
    for (int64_t oh = 0; oh < ho; oh++)
      for (int64_t ow = 0; ow < wo; ow++) {
        double g = cx->in[0][(p * ho + oh) * wo + ow] / (double)(k * k);
        double *win = cx->out + p * h * w + oh * s * w + ow * s;
        for (int64_t i = 0; i < k; i++)
          for (int64_t j = 0; j < k; j++) win[i * w + j] += g;
      }
  return true;
}

/* ---- lstm --------------------------------------------------------------- */

typedef struct LstmDims {
  int64_t b, t, in, h; /* batch, steps, input size, hidden size */
} LstmDims;

/* The packed result of lstm_grad: [dx | dw_ih | dw_hh | db]. */
typedef struct LstmGrads {
  double *dx, *dwih, *dwhh, *db;
} LstmGrads;

/* The forward state lstm_grad keeps for one sequence. */
typedef struct LstmTape {
  double *gates;   /* [T][4H]: activated i, f, g, o of each step */
  double *c, *h;   /* [T+1][H]: c[0] = h[0] = 0, then each step's c and h */
  double *dz;      /* [4H]: scratch, the gradient of the gate pre-activations */
  double *dh, *dc; /* [H]: the gradients flowing into step t from step t+1 */
} LstmTape;

static double sigmoid_(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Forward through one sequence x [T, I], as interp_lstm, recording the tape:
 *   z = W_ih x_t + b_ih + W_hh h + b_hh;  i, f, o = sigmoid, g = tanh;
 *   c' = f c + i g;  h' = o tanh(c'). */
static void lstm_forward_tape(const InterpCtx *cx, const double *x, LstmDims d, LstmTape *tp) {
  const double *wih = cx->in[1], *whh = cx->in[2], *bih = cx->in[3], *bhh = cx->in[4];
  int64_t hn = d.h;
  memset(tp->c, 0, (size_t)hn * sizeof(double));
  memset(tp->h, 0, (size_t)hn * sizeof(double));
  for (int64_t t = 0; t < d.t; t++) {
    double *z = tp->gates + t * 4 * hn;
    const double *xt = x + t * d.in, *hp = tp->h + t * hn;
    for (int64_t g = 0; g < 4 * hn; g++) {
      double acc = bih[g] + bhh[g];
      for (int64_t k = 0; k < d.in; k++) acc += wih[g * d.in + k] * xt[k];
      for (int64_t k = 0; k < hn; k++) acc += whh[g * hn + k] * hp[k];
      z[g] = g >= 2 * hn && g < 3 * hn ? tanh(acc) : sigmoid_(acc);
    }
    for (int64_t j = 0; j < hn; j++) {
      double c = z[hn + j] * tp->c[t * hn + j] + z[j] * z[2 * hn + j];
      tp->c[(t + 1) * hn + j] = c;
      tp->h[(t + 1) * hn + j] = z[3 * hn + j] * tanh(c);
    }
  }
}

/* The gate gradients dz of step t from dh (including dy[t]) and dc; leaves
 * in dc the gradient for step t-1's cell:
 *   do = dh tanh(c);  dc += dh o (1 - tanh(c)^2);
 *   di = dc g;  df = dc c_prev;  dg = dc i;  dc_prev = dc f;
 *   dz = (di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)). */
static void lstm_gate_grads(LstmTape *tp, int64_t t, int64_t hn) {
  const double *gt = tp->gates + t * 4 * hn;
  for (int64_t j = 0; j < hn; j++) {
    double i = gt[j], f = gt[hn + j], g = gt[2 * hn + j], o = gt[3 * hn + j];
    double tc = tanh(tp->c[(t + 1) * hn + j]), dh = tp->dh[j];
    double dc = tp->dc[j] + dh * o * (1.0 - tc * tc);
    tp->dz[j] = dc * g * i * (1.0 - i);
    tp->dz[hn + j] = dc * tp->c[t * hn + j] * f * (1.0 - f);
    tp->dz[2 * hn + j] = dc * i * (1.0 - g * g);
    tp->dz[3 * hn + j] = dh * tc * o * (1.0 - o);
    tp->dc[j] = dc * f;
  }
}

/* Through the gates' linear maps: dx_t = W_ih^T dz, dh_prev = W_hh^T dz,
 * dW_ih += dz x_t^T, dW_hh += dz h_prev^T, db += dz. */
static void lstm_linear_grads(const InterpCtx *cx, const double *xt, double *dxt, LstmDims d,
                              LstmTape *tp, int64_t t, LstmGrads *gr) {
  const double *wih = cx->in[1], *whh = cx->in[2], *hp = tp->h + t * d.h;
  memset(dxt, 0, (size_t)d.in * sizeof(double));
  memset(tp->dh, 0, (size_t)d.h * sizeof(double));
  for (int64_t g = 0; g < 4 * d.h; g++) {
    double dz = tp->dz[g];
    for (int64_t k = 0; k < d.in; k++) {
      dxt[k] += dz * wih[g * d.in + k];
      gr->dwih[g * d.in + k] += dz * xt[k];
    }
    for (int64_t k = 0; k < d.h; k++) {
      tp->dh[k] += dz * whh[g * d.h + k];
      gr->dwhh[g * d.h + k] += dz * hp[k];
    }
    gr->db[g] += dz;
  }
}

/* Backward through time for one sequence (dy [T, H]), from t = T-1 down. */
static void lstm_backward_seq(const InterpCtx *cx, const double *x, const double *dy, double *dx,
                              LstmDims d, LstmTape *tp, LstmGrads *gr) {
  memset(tp->dh, 0, (size_t)d.h * sizeof(double));
  memset(tp->dc, 0, (size_t)d.h * sizeof(double));
  for (int64_t t = d.t - 1; t >= 0; t--) {
    for (int64_t j = 0; j < d.h; j++) tp->dh[j] += dy[t * d.h + j];
    lstm_gate_grads(tp, t, d.h);
    lstm_linear_grads(cx, x + t * d.in, dx + t * d.in, d, tp, t, gr);
  }
}

/* lstm_grad(x, w_ih, w_hh, b_ih, b_hh, dy): backward through time of
 * interp_lstm for every sequence of the batch (forward recomputed, h0 = c0
 * = 0), packed as [dx (B*T*I) | dw_ih (4H*I) | dw_hh (4H*H) | db (4H)]; db
 * is the gradient of b_ih and of b_hh alike. */
bool interp_lstm_grad(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0);
  LstmDims d = {xt->dims[0], xt->dims[1], xt->dims[2], interp_in_type(cx, 2)->dims[1]};
  memset(cx->out, 0, (size_t)ir_type_numel(&cx->n->type) * sizeof(double));
  LstmGrads gr = {cx->out, NULL, NULL, NULL};
  gr.dwih = gr.dx + d.b * d.t * d.in;
  gr.dwhh = gr.dwih + 4 * d.h * d.in;
  gr.db = gr.dwhh + 4 * d.h * d.h;
  LstmTape tp = {
      .gates = interp_scratch((size_t)(d.t * 4 * d.h), sizeof(double)),
      .c = interp_scratch((size_t)((d.t + 1) * d.h), sizeof(double)),
      .h = interp_scratch((size_t)((d.t + 1) * d.h), sizeof(double)),
      .dz = interp_scratch((size_t)(4 * d.h), sizeof(double)),
      .dh = interp_scratch((size_t)d.h, sizeof(double)),
      .dc = interp_scratch((size_t)d.h, sizeof(double)),
  };
  for (int64_t b = 0; b < d.b; b++) {
    const double *x = cx->in[0] + b * d.t * d.in;
    lstm_forward_tape(cx, x, d, &tp);
    lstm_backward_seq(cx, x, cx->in[5] + b * d.t * d.h, gr.dx + b * d.t * d.in, d, &tp, &gr);
  }
  free(tp.gates);
  free(tp.c);
  free(tp.h);
  free(tp.dz);
  free(tp.dh);
  free(tp.dc);
  return true;
}
