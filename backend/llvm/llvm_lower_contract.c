/* llvm_lower_contract.c - contraction kernels: batched matmul, conv2d and its gradients, the LSTM and its gradient. */
#include "llvm_priv.h"

#define CONTRACT_CHUNK_WORK 65536

static int64_t chunk_for(int64_t work_per_iter) {
  return CONTRACT_CHUNK_WORK / (work_per_iter > 0 ? work_per_iter : 1) + 1;
}

static LLVMValueRef fzero(Lower *L, LLVMTypeRef ft) { return lw_fc(L, ft, 0.0); }

/* p[at] += v */
static void accumulate(Lower *L, LLVMTypeRef ft, LLVMValueRef p, LLVMValueRef at, LLVMValueRef v) {
  lw_store(L, ft, p, at, lw_fadd(L, lw_load(L, ft, p, at), v));
}

/* ---- matmul ------------------------------------------------------------- */

/* Strides, in matrices, of a batch shape read as out's (NumPy broadcasting). */
static void batch_strides(const Type *t, const Type *out, int64_t *stride) {
  int ir = t->rank - 2, orank = out->rank - 2;
  int64_t s = 1, own[IR_MAX_RANK];
  for (int d = ir - 1; d >= 0; d--) own[d] = s, s *= t->dims[d];
  for (int d = 0; d < orank; d++) {
    int k = ir - orank + d;
    stride[d] = k >= 0 && t->dims[k] != 1 ? own[k] : 0;
  }
}

/* torch.matmul, rank >= 2, batch dims broadcast:
 *   out[..., i, j] = sum_k a[..., i, k] b[..., k, j].
 * One output row per iteration, i-k-j order: the j loop streams a row of b
 * into the row of out with FMAs, which the loop vectorizer widens. */
void lower_matmul(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *at = &n->in[0]->type, *bt = &n->in[1]->type, *ot = &n->type;
  LLVMTypeRef ft = lw_elt(L, ot->dtype);
  int64_t m = ot->dims[ot->rank - 2], nn = ot->dims[ot->rank - 1], kk = at->dims[at->rank - 1];
  int64_t sa[IR_MAX_RANK], sb[IR_MAX_RANK];
  batch_strides(at, ot, sa);
  batch_strides(bt, ot, sb);
  k->range = ir_type_numel(ot) / nn;
  k->min_chunk = chunk_for(kk * nn);
  LwLoop outer, lp, lj;
  LLVMValueRef r = lw_outer(L, &outer);
  LLVMValueRef t = lw_divc(L, r, m), i = lw_remc(L, r, m);
  LLVMValueRef aoff = lw_add(L, lw_mulc(L, lw_offset(L, t, ot->rank - 2, ot->dims, sa), m * kk),
                             lw_mulc(L, i, kk));
  LLVMValueRef boff = lw_mulc(L, lw_offset(L, t, ot->rank - 2, ot->dims, sb), kk * nn);
  LLVMValueRef o = lw_gep(L, ft, lw_out(L), lw_mulc(L, r, nn));
  LLVMValueRef a = lw_gep(L, ft, lw_in(L, 0), aoff), b = lw_gep(L, ft, lw_in(L, 1), boff);
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, nn));
  lw_store(L, ft, o, j, fzero(L, ft));
  lw_next(L, &lj);
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, kk));
  LLVMValueRef aip = lw_load(L, ft, a, p);
  LLVMValueRef brow = lw_gep(L, ft, b, lw_mulc(L, p, nn));
  j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, nn));
  accumulate(L, ft, o, j, lw_fmul(L, aip, lw_load(L, ft, brow, j)));
  lw_next(L, &lj);
  lw_next(L, &lp);
  lw_next(L, &outer);
}

/* ---- conv2d ------------------------------------------------------------- */

/* The output positions [lo, hi) whose input position o*s - pad + tap falls
 * inside [0, in): lo = ceil((pad - tap) / s) clamped at 0, hi = floor((in - 1
 * + pad - tap) / s) + 1 clamped to [0, out]. */
static void tap_range(Lower *L, LLVMValueRef tap, int64_t pad, int64_t s, int64_t in, int64_t out,
                      LLVMValueRef *lo, LLVMValueRef *hi) {
  LLVMValueRef zero = lw_i64(L, 0), sv = lw_i64(L, s);
  LLVMValueRef num = LLVMBuildSub(L->b, lw_i64(L, pad + s - 1), tap, "");
  *lo = lw_smax(L, zero, LLVMBuildSDiv(L->b, num, sv, ""));
  LLVMValueRef top = LLVMBuildSub(L->b, lw_i64(L, in - 1 + pad), tap, "");
  LLVMValueRef h = lw_addc(L, LLVMBuildSDiv(L->b, top, sv, ""), 1);
  h = lw_select(L, LLVMBuildICmp(L->b, LLVMIntSLT, top, zero, ""), zero, h);
  *hi = lw_smin(L, h, lw_i64(L, out));
}

typedef struct ConvDims {
  int64_t nb, ci, h, w, co, kh, kw, ho, wo, s, p;
} ConvDims;

static ConvDims conv_dims(const Node *n, const Type *x, const Type *w, const Type *y) {
  ConvDims c = {x->dims[0], x->dims[1], x->dims[2], x->dims[3], w->dims[0], w->dims[2], w->dims[3],
                y->dims[2], y->dims[3], ir_attr_int(n, "stride"), ir_attr_int(n, "padding")};
  return c;
}

/* One tap of a plane pair, for every (oh, ow) whose input is inside:
 * dst[oh*Wo + ow] += wv src[ih*W + iw] (forward, scatter = false) or
 * dst[ih*W + iw] += wv src[oh*Wo + ow] (the input gradient, scatter = true),
 * ih = oh*s - p + kh, iw = ow*s - p + kw. */
static void conv_tap(Lower *L, const ConvDims *c, LLVMTypeRef ft, LLVMValueRef dst, LLVMValueRef src,
                     LLVMValueRef wv, LLVMValueRef kh, LLVMValueRef kw, bool scatter) {
  LLVMValueRef oh_lo, oh_hi, ow_lo, ow_hi;
  tap_range(L, kh, c->p, c->s, c->h, c->ho, &oh_lo, &oh_hi);
  tap_range(L, kw, c->p, c->s, c->w, c->wo, &ow_lo, &ow_hi);
  LwLoop lh, lw;
  LLVMValueRef oh = lw_for(L, &lh, oh_lo, oh_hi);
  LLVMValueRef ih = lw_add(L, lw_addc(L, lw_mulc(L, oh, c->s), -c->p), kh);
  LLVMValueRef yrow = lw_mulc(L, oh, c->wo), xrow = lw_mulc(L, ih, c->w);
  LLVMValueRef ow = lw_for(L, &lw, ow_lo, ow_hi);
  LLVMValueRef iw = lw_add(L, lw_addc(L, lw_mulc(L, ow, c->s), -c->p), kw);
  LLVMValueRef yat = lw_add(L, yrow, ow), xat = lw_add(L, xrow, iw);
  if (scatter)
    accumulate(L, ft, dst, xat, lw_fmul(L, wv, lw_load(L, ft, src, yat)));
  else
    accumulate(L, ft, dst, yat, lw_fmul(L, wv, lw_load(L, ft, src, xat)));
  lw_next(L, &lw);
  lw_next(L, &lh);
}

/* F.conv2d NCHW: out[n,co] = b[co] + sum_{ci,kh,kw} w[co,ci,kh,kw] x[n,ci] shifted
 * by the tap, zero in the padding. One output plane per iteration. */
void lower_conv2d(Lower *L, Kernel *k) {
  const Node *n = k->out;
  ConvDims c = conv_dims(n, &n->in[0]->type, &n->in[1]->type, &n->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  k->range = c.nb * c.co;
  k->min_chunk = chunk_for(c.ci * c.kh * c.kw * c.ho * c.wo);
  LwLoop outer, lz, lci, lkh, lkw;
  LLVMValueRef r = lw_outer(L, &outer);
  LLVMValueRef b = lw_divc(L, r, c.co), co = lw_remc(L, r, c.co);
  LLVMValueRef plane = lw_gep(L, ft, lw_out(L), lw_mulc(L, r, c.ho * c.wo));
  LLVMValueRef init = n->nin == 3 ? lw_load(L, ft, lw_in(L, 2), co) : fzero(L, ft);
  LLVMValueRef z = lw_for(L, &lz, lw_i64(L, 0), lw_i64(L, c.ho * c.wo));
  lw_store(L, ft, plane, z, init);
  lw_next(L, &lz);
  LLVMValueRef ci = lw_for(L, &lci, lw_i64(L, 0), lw_i64(L, c.ci));
  LLVMValueRef xp = lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.ci), ci), c.h * c.w));
  LLVMValueRef wbase = lw_mulc(L, lw_add(L, lw_mulc(L, co, c.ci), ci), c.kh * c.kw);
  LLVMValueRef kh = lw_for(L, &lkh, lw_i64(L, 0), lw_i64(L, c.kh));
  LLVMValueRef kw = lw_for(L, &lkw, lw_i64(L, 0), lw_i64(L, c.kw));
  LLVMValueRef wv = lw_load(L, ft, lw_in(L, 1), lw_add(L, wbase, lw_add(L, lw_mulc(L, kh, c.kw), kw)));
  conv_tap(L, &c, ft, plane, xp, wv, kh, kw, false);
  lw_next(L, &lkw);
  lw_next(L, &lkh);
  lw_next(L, &lci);
  lw_next(L, &outer);
}

/* conv2d_grad_input(dy, w): dx[n,ci,ih,iw] += w[co,ci,kh,kw] dy[n,co,oh,ow]
 * over every tap that reads it. One dx plane per iteration, so no two
 * threads write one element. */
void lower_conv2d_grad_input(Lower *L, Kernel *k) {
  const Node *n = k->out;
  ConvDims c = conv_dims(n, &n->type, &n->in[1]->type, &n->in[0]->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  k->range = c.nb * c.ci;
  k->min_chunk = chunk_for(c.co * c.kh * c.kw * c.ho * c.wo);
  LwLoop outer, lco, lkh, lkw;
  LLVMValueRef r = lw_outer(L, &outer);
  LLVMValueRef b = lw_divc(L, r, c.ci), ci = lw_remc(L, r, c.ci);
  LLVMValueRef plane = lw_gep(L, ft, lw_out(L), lw_mulc(L, r, c.h * c.w));
  lw_zero(L, plane, lw_i64(L, c.h * c.w * (int64_t)ir_dtype_size(n->type.dtype)));
  LLVMValueRef co = lw_for(L, &lco, lw_i64(L, 0), lw_i64(L, c.co));
  LLVMValueRef dyp = lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.co), co), c.ho * c.wo));
  LLVMValueRef wbase = lw_mulc(L, lw_add(L, lw_mulc(L, co, c.ci), ci), c.kh * c.kw);
  LLVMValueRef kh = lw_for(L, &lkh, lw_i64(L, 0), lw_i64(L, c.kh));
  LLVMValueRef kw = lw_for(L, &lkw, lw_i64(L, 0), lw_i64(L, c.kw));
  LLVMValueRef wv = lw_load(L, ft, lw_in(L, 1), lw_add(L, wbase, lw_add(L, lw_mulc(L, kh, c.kw), kw)));
  conv_tap(L, &c, ft, plane, dyp, wv, kh, kw, true);
  lw_next(L, &lkw);
  lw_next(L, &lkh);
  lw_next(L, &lco);
  lw_next(L, &outer);
}

/* conv2d_grad_weight(x, dy): dw[co,ci,kh,kw] = sum_{n,oh,ow} dy[n,co,oh,ow]
 * x[n,ci,oh*s-p+kh,ow*s-p+kw]. One weight per iteration. */
void lower_conv2d_grad_weight(Lower *L, Kernel *k) {
  const Node *n = k->out;
  ConvDims c = conv_dims(n, &n->in[0]->type, &n->type, &n->in[1]->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  k->range = ir_type_numel(&n->type);
  k->min_chunk = chunk_for(c.nb * c.ho * c.wo);
  LwLoop outer, lb, lh, lw;
  LLVMValueRef r = lw_outer(L, &outer);
  LLVMValueRef kw = lw_remc(L, r, c.kw), kh = lw_remc(L, lw_divc(L, r, c.kw), c.kh);
  LLVMValueRef ci = lw_remc(L, lw_divc(L, r, c.kw * c.kh), c.ci);
  LLVMValueRef co = lw_divc(L, r, c.kw * c.kh * c.ci);
  LLVMValueRef acc = lw_var(L, ft, fzero(L, ft));
  LLVMValueRef oh_lo, oh_hi, ow_lo, ow_hi;
  tap_range(L, kh, c.p, c.s, c.h, c.ho, &oh_lo, &oh_hi);
  tap_range(L, kw, c.p, c.s, c.w, c.wo, &ow_lo, &ow_hi);
  LLVMValueRef b = lw_for(L, &lb, lw_i64(L, 0), lw_i64(L, c.nb));
  LLVMValueRef dyp = lw_gep(L, ft, lw_in(L, 1), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.co), co), c.ho * c.wo));
  LLVMValueRef xp = lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.ci), ci), c.h * c.w));
  LLVMValueRef oh = lw_for(L, &lh, oh_lo, oh_hi);
  LLVMValueRef ih = lw_add(L, lw_addc(L, lw_mulc(L, oh, c.s), -c.p), kh);
  LLVMValueRef ow = lw_for(L, &lw, ow_lo, ow_hi);
  LLVMValueRef iw = lw_add(L, lw_addc(L, lw_mulc(L, ow, c.s), -c.p), kw);
  LLVMValueRef prod = lw_fmul(L, lw_load(L, ft, dyp, lw_add(L, lw_mulc(L, oh, c.wo), ow)),
                              lw_load(L, ft, xp, lw_add(L, lw_mulc(L, ih, c.w), iw)));
  lw_set(L, acc, lw_fadd_r(L, lw_get(L, ft, acc), prod));
  lw_next(L, &lw);
  lw_next(L, &lh);
  lw_next(L, &lb);
  lw_store(L, ft, lw_out(L), r, lw_get(L, ft, acc));
  lw_next(L, &outer);
}

/* ---- lstm --------------------------------------------------------------- */

/* sum_{i<len} u[i] v[i] */
static LLVMValueRef dot(Lower *L, LLVMTypeRef ft, LLVMValueRef u, LLVMValueRef v, int64_t len) {
  LLVMValueRef acc = lw_var(L, ft, fzero(L, ft));
  LwLoop lp;
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, len));
  lw_set(L, acc, lw_fadd_r(L, lw_get(L, ft, acc), lw_fmul(L, lw_load(L, ft, u, i), lw_load(L, ft, v, i))));
  lw_next(L, &lp);
  return lw_get(L, ft, acc);
}

static void fill_zero(Lower *L, LLVMTypeRef ft, LLVMValueRef p, int64_t len) {
  LwLoop lp;
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, len));
  lw_store(L, ft, p, i, fzero(L, ft));
  lw_next(L, &lp);
}

typedef struct LstmDims {
  int64_t b, t, in, h;
} LstmDims;

static LstmDims lstm_dims(const Node *n) {
  const Type *xt = &n->in[0]->type;
  LstmDims d = {xt->dims[0], xt->dims[1], xt->dims[2], n->in[2]->type.dims[1]};
  return d;
}

/* z[g] = (b_ih[g] + b_hh[g]) + W_ih[g] . x_t + W_hh[g] . h, then the gate
 * nonlinearity when act (sigmoid, tanh for the g gates). */
static void lstm_gates(Lower *L, LLVMTypeRef ft, LstmDims d, LLVMValueRef z, LLVMValueRef xt,
                       LLVMValueRef h, bool act) {
  LwLoop lg;
  LLVMValueRef g = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, 4 * d.h));
  LLVMValueRef acc = lw_fadd(L, lw_load(L, ft, lw_in(L, 3), g), lw_load(L, ft, lw_in(L, 4), g));
  acc = lw_fadd(L, acc, dot(L, ft, lw_gep(L, ft, lw_in(L, 1), lw_mulc(L, g, d.in)), xt, d.in));
  acc = lw_fadd(L, acc, dot(L, ft, lw_gep(L, ft, lw_in(L, 2), lw_mulc(L, g, d.h)), h, d.h));
  if (act) {
    LLVMValueRef is_g = LLVMBuildAnd(L->b, LLVMBuildICmp(L->b, LLVMIntSGE, g, lw_i64(L, 2 * d.h), ""),
                                     LLVMBuildICmp(L->b, LLVMIntSLT, g, lw_i64(L, 3 * d.h), ""), "");
    acc = lw_select(L, is_g, lw_tanh(L, acc), lw_sigmoid(L, acc));
  }
  lw_store(L, ft, z, g, acc);
  lw_next(L, &lg);
}

/* nn.LSTM(batch_first), h0 = c0 = 0, gates i, f, g, o:
 *   c = sigmoid(f) c + sigmoid(i) tanh(g);  h = sigmoid(o) tanh(c).
 * One sequence per iteration; z, h, c in the kernel's scratch. */
void lower_lstm(Lower *L, Kernel *k) {
  const Node *n = k->out;
  LstmDims d = lstm_dims(n);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  k->range = d.b;
  k->min_chunk = 1;
  LwLoop outer, lt, lj;
  LLVMValueRef b = lw_outer(L, &outer);
  LLVMValueRef z = lw_gep(L, ft, lw_scratch(L), lw_mulc(L, b, 6 * d.h));
  LLVMValueRef h = lw_gep(L, ft, z, lw_i64(L, 4 * d.h)), c = lw_gep(L, ft, z, lw_i64(L, 5 * d.h));
  fill_zero(L, ft, h, 2 * d.h);
  LLVMValueRef t = lw_for(L, &lt, lw_i64(L, 0), lw_i64(L, d.t));
  LLVMValueRef row = lw_add(L, lw_mulc(L, b, d.t), t);
  lstm_gates(L, ft, d, z, lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, row, d.in)), h, false);
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, d.h));
  LLVMValueRef ig = lw_sigmoid(L, lw_load(L, ft, z, j));
  LLVMValueRef fg = lw_sigmoid(L, lw_load(L, ft, z, lw_addc(L, j, d.h)));
  LLVMValueRef gg = lw_tanh(L, lw_load(L, ft, z, lw_addc(L, j, 2 * d.h)));
  LLVMValueRef og = lw_sigmoid(L, lw_load(L, ft, z, lw_addc(L, j, 3 * d.h)));
  LLVMValueRef cv = lw_fadd(L, lw_fmul(L, fg, lw_load(L, ft, c, j)), lw_fmul(L, ig, gg));
  lw_store(L, ft, c, j, cv);
  LLVMValueRef hv = lw_fmul(L, og, lw_tanh(L, cv));
  lw_store(L, ft, h, j, hv);
  lw_store(L, ft, lw_out(L), lw_add(L, lw_mulc(L, row, d.h), j), hv);
  lw_next(L, &lj);
  lw_next(L, &lt);
  lw_next(L, &outer);
}

/* ---- lstm_grad ---------------------------------------------------------- */

typedef struct LstmTape {
  LLVMValueRef gates, c, h, dz, dh, dc; /* as interp_lstm_grad's tape */
  LLVMValueRef dx, dwih, dwhh, db;      /* the packed result */
} LstmTape;

/* Forward through one sequence, recording activated gates, c and h. */
static void lstm_tape_forward(Lower *L, LLVMTypeRef ft, LstmDims d, LstmTape *tp, LLVMValueRef x) {
  LwLoop lt, lj;
  fill_zero(L, ft, tp->c, d.h);
  fill_zero(L, ft, tp->h, d.h);
  LLVMValueRef t = lw_for(L, &lt, lw_i64(L, 0), lw_i64(L, d.t));
  LLVMValueRef z = lw_gep(L, ft, tp->gates, lw_mulc(L, t, 4 * d.h));
  lstm_gates(L, ft, d, z, lw_gep(L, ft, x, lw_mulc(L, t, d.in)), lw_gep(L, ft, tp->h, lw_mulc(L, t, d.h)), true);
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, d.h));
  LLVMValueRef at = lw_add(L, lw_mulc(L, t, d.h), j), next = lw_addc(L, at, d.h);
  LLVMValueRef cv = lw_fadd(L, lw_fmul(L, lw_load(L, ft, z, lw_addc(L, j, d.h)), lw_load(L, ft, tp->c, at)),
                            lw_fmul(L, lw_load(L, ft, z, j), lw_load(L, ft, z, lw_addc(L, j, 2 * d.h))));
  lw_store(L, ft, tp->c, next, cv);
  lw_store(L, ft, tp->h, next, lw_fmul(L, lw_load(L, ft, z, lw_addc(L, j, 3 * d.h)), lw_tanh(L, cv)));
  lw_next(L, &lj);
  lw_next(L, &lt);
}

/* interp_backward_nn.c's lstm_gate_grads: dz of step t, dc for step t-1. */
static void lstm_tape_gates(Lower *L, LLVMTypeRef ft, LstmDims d, LstmTape *tp, LLVMValueRef t) {
  LwLoop lj;
  LLVMValueRef one = lw_fc(L, ft, 1.0);
  LLVMValueRef gt = lw_gep(L, ft, tp->gates, lw_mulc(L, t, 4 * d.h));
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, d.h));
  LLVMValueRef i = lw_load(L, ft, gt, j), f = lw_load(L, ft, gt, lw_addc(L, j, d.h));
  LLVMValueRef g = lw_load(L, ft, gt, lw_addc(L, j, 2 * d.h)), o = lw_load(L, ft, gt, lw_addc(L, j, 3 * d.h));
  LLVMValueRef at = lw_add(L, lw_mulc(L, t, d.h), j);
  LLVMValueRef tc = lw_tanh(L, lw_load(L, ft, tp->c, lw_addc(L, at, d.h))), dh = lw_load(L, ft, tp->dh, j);
  LLVMValueRef dc = lw_fadd(L, lw_load(L, ft, tp->dc, j),
                            lw_fmul(L, lw_fmul(L, dh, o), lw_fsub(L, one, lw_fmul(L, tc, tc))));
  lw_store(L, ft, tp->dz, j, lw_fmul(L, lw_fmul(L, lw_fmul(L, dc, g), i), lw_fsub(L, one, i)));
  lw_store(L, ft, tp->dz, lw_addc(L, j, d.h),
           lw_fmul(L, lw_fmul(L, lw_fmul(L, dc, lw_load(L, ft, tp->c, at)), f), lw_fsub(L, one, f)));
  lw_store(L, ft, tp->dz, lw_addc(L, j, 2 * d.h), lw_fmul(L, lw_fmul(L, dc, i), lw_fsub(L, one, lw_fmul(L, g, g))));
  lw_store(L, ft, tp->dz, lw_addc(L, j, 3 * d.h),
           lw_fmul(L, lw_fmul(L, lw_fmul(L, dh, tc), o), lw_fsub(L, one, o)));
  lw_store(L, ft, tp->dc, j, lw_fmul(L, dc, f));
  lw_next(L, &lj);
}

/* dx_t = W_ih^T dz, dh = W_hh^T dz, dW_ih += dz x_t^T, dW_hh += dz h_prev^T, db += dz. */
static void lstm_tape_linear(Lower *L, LLVMTypeRef ft, LstmDims d, LstmTape *tp, LLVMValueRef xt,
                             LLVMValueRef dxt, LLVMValueRef t) {
  LwLoop lg, lk;
  LLVMValueRef hp = lw_gep(L, ft, tp->h, lw_mulc(L, t, d.h));
  fill_zero(L, ft, dxt, d.in);
  fill_zero(L, ft, tp->dh, d.h);
  LLVMValueRef g = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, 4 * d.h));
  LLVMValueRef dz = lw_load(L, ft, tp->dz, g);
  LLVMValueRef wih = lw_gep(L, ft, lw_in(L, 1), lw_mulc(L, g, d.in));
  LLVMValueRef dwih = lw_gep(L, ft, tp->dwih, lw_mulc(L, g, d.in));
  LLVMValueRef kx = lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, d.in));
  accumulate(L, ft, dxt, kx, lw_fmul(L, dz, lw_load(L, ft, wih, kx)));
  accumulate(L, ft, dwih, kx, lw_fmul(L, dz, lw_load(L, ft, xt, kx)));
  lw_next(L, &lk);
  LLVMValueRef whh = lw_gep(L, ft, lw_in(L, 2), lw_mulc(L, g, d.h));
  LLVMValueRef dwhh = lw_gep(L, ft, tp->dwhh, lw_mulc(L, g, d.h));
  LLVMValueRef kh = lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, d.h));
  accumulate(L, ft, tp->dh, kh, lw_fmul(L, dz, lw_load(L, ft, whh, kh)));
  accumulate(L, ft, dwhh, kh, lw_fmul(L, dz, lw_load(L, ft, hp, kh)));
  lw_next(L, &lk);
  accumulate(L, ft, tp->db, g, dz);
  lw_next(L, &lg);
}

/* lstm_grad(x, w_ih, w_hh, b_ih, b_hh, dy) -> [dx | dw_ih | dw_hh | db]:
 * backward through time, forward recomputed per sequence. The weight
 * gradients sum over the batch, so one iteration does everything. */
void lower_lstm_grad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  LstmDims d = lstm_dims(n);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  k->range = 1;
  k->min_chunk = 1;
  LwLoop outer, lb, lt, lj;
  lw_outer(L, &outer);
  LLVMValueRef s = lw_scratch(L);
  LstmTape tp;
  tp.gates = s;
  tp.c = lw_gep(L, ft, s, lw_i64(L, d.t * 4 * d.h));
  tp.h = lw_gep(L, ft, tp.c, lw_i64(L, (d.t + 1) * d.h));
  tp.dz = lw_gep(L, ft, tp.h, lw_i64(L, (d.t + 1) * d.h));
  tp.dh = lw_gep(L, ft, tp.dz, lw_i64(L, 4 * d.h));
  tp.dc = lw_gep(L, ft, tp.dh, lw_i64(L, d.h));
  tp.dx = lw_out(L);
  tp.dwih = lw_gep(L, ft, tp.dx, lw_i64(L, d.b * d.t * d.in));
  tp.dwhh = lw_gep(L, ft, tp.dwih, lw_i64(L, 4 * d.h * d.in));
  tp.db = lw_gep(L, ft, tp.dwhh, lw_i64(L, 4 * d.h * d.h));
  fill_zero(L, ft, lw_out(L), ir_type_numel(&n->type));
  LLVMValueRef b = lw_for(L, &lb, lw_i64(L, 0), lw_i64(L, d.b));
  LLVMValueRef x = lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, b, d.t * d.in));
  LLVMValueRef dy = lw_gep(L, ft, lw_in(L, 5), lw_mulc(L, b, d.t * d.h));
  LLVMValueRef dx = lw_gep(L, ft, tp.dx, lw_mulc(L, b, d.t * d.in));
  lstm_tape_forward(L, ft, d, &tp, x);
  fill_zero(L, ft, tp.dh, d.h);
  fill_zero(L, ft, tp.dc, d.h);
  LLVMValueRef tt = lw_for(L, &lt, lw_i64(L, 0), lw_i64(L, d.t));
  LLVMValueRef t = LLVMBuildSub(L->b, lw_i64(L, d.t - 1), tt, "");
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, d.h));
  accumulate(L, ft, tp.dh, j, lw_load(L, ft, dy, lw_add(L, lw_mulc(L, t, d.h), j)));
  lw_next(L, &lj);
  lstm_tape_gates(L, ft, d, &tp, t);
  lstm_tape_linear(L, ft, d, &tp, lw_gep(L, ft, x, lw_mulc(L, t, d.in)),
                   lw_gep(L, ft, dx, lw_mulc(L, t, d.in)), t);
  lw_next(L, &lt);
  lw_next(L, &lb);
  lw_next(L, &outer);
}
