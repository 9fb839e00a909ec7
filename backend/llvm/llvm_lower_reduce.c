/* llvm_lower_reduce.c - reduction kernels: sum/mean/max over axes, softmax, layer_norm (and its
 * gradient), pooling (and theirs). */
#include <math.h>

#include "llvm_priv.h"

#define REDUCE_CHUNK_WORK 32768

static int64_t chunk_for(int64_t work_per_iter) {
  return REDUCE_CHUNK_WORK / (work_per_iter > 0 ? work_per_iter : 1) + 1;
}

static void strides_of(const Type *t, int64_t *stride) {
  int64_t s = 1;
  for (int d = t->rank - 1; d >= 0; d--) stride[d] = s, s *= t->dims[d];
}

/* ---- sum, mean, max over axes ------------------------------------------- */

/* The reduced dims as loops (len, stride), adjacent ones merged. */
typedef struct ReduceLoops {
  int n;
  int64_t len[IR_MAX_RANK], stride[IR_MAX_RANK];
} ReduceLoops;

static void reduce_loops(const Type *xt, const AttrVal *axes, bool *reduced, ReduceLoops *rl) {
  int64_t own[IR_MAX_RANK];
  strides_of(xt, own);
  for (int d = 0; d < xt->rank; d++) reduced[d] = false;
  for (int k = 0; k < axes->n; k++) reduced[axes->i[k]] = true;
  rl->n = 0;
  for (int d = 0; d < xt->rank; d++) {
    if (!reduced[d] || xt->dims[d] == 1) continue;
    if (rl->n && d > 0 && reduced[d - 1] && rl->stride[rl->n - 1] == own[d] * xt->dims[d]) {
      rl->len[rl->n - 1] *= xt->dims[d];
      rl->stride[rl->n - 1] = own[d];
    } else {
      rl->len[rl->n] = xt->dims[d];
      rl->stride[rl->n++] = own[d];
    }
  }
}

/* acc = combine(acc, x[off + sum_l i_l stride_l]) over the loops from level on. */
static void reduce_nest(Lower *L, const ReduceLoops *rl, int level, LLVMValueRef off,
                        LLVMValueRef acc, OpKind op, LLVMTypeRef ft, LLVMTypeRef xt) {
  if (level == rl->n) {
    LLVMValueRef v = lw_fconv(L, lw_load(L, xt, lw_in(L, 0), off), ft);
    LLVMValueRef a = lw_get(L, ft, acc);
    lw_set(L, acc, op == OP_MAX ? lw_max_step(L, a, v) : lw_fadd_r(L, a, v));
    return;
  }
  LwLoop lp;
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, rl->len[level]));
  reduce_nest(L, rl, level + 1, lw_add(L, off, lw_mulc(L, i, rl->stride[level])), acc, op, ft, xt);
  lw_next(L, &lp);
}

/* torch.sum / mean / amax over axes: each output element loops over its
 * reduced positions; the output's layout is the input's with the reduced
 * dims at size 1, whatever keepdim says. */
void lower_reduce(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *xt = &n->in[0]->type;
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  bool reduced[IR_MAX_RANK];
  ReduceLoops rl;
  reduce_loops(xt, ir_attr_c(n, "axes"), reduced, &rl);
  Type kept = *xt;
  int64_t own[IR_MAX_RANK];
  strides_of(xt, own);
  for (int d = 0; d < xt->rank; d++)
    if (reduced[d]) kept.dims[d] = 1;
  int64_t count = ir_type_numel(&n->type), per = ir_type_numel(xt) / (count ? count : 1);
  k->range = count;
  k->min_chunk = chunk_for(per);
  LwLoop outer;
  LLVMValueRef o = lw_outer(L, &outer);
  LLVMValueRef base = lw_offset(L, o, kept.rank, kept.dims, own);
  LLVMValueRef acc = lw_var(L, ft, lw_fc(L, ft, n->op == OP_MAX ? -INFINITY : 0.0));
  reduce_nest(L, &rl, 0, base, acc, n->op, ft, lw_elt(L, xt->dtype));
  LLVMValueRef v = lw_get(L, ft, acc);
  if (n->op == OP_MEAN) v = lw_fdiv(L, v, lw_fc(L, ft, (double)per));
  lw_store(L, ft, lw_out(L), o, v);
  lw_next(L, &outer);
}

/* ---- softmax, log_softmax ----------------------------------------------- */

/* Each line along the axis (x viewed as [outer, len, inner]):
 *   m = max x;  s = sum e^(x - m);
 *   softmax = e^(x - m) / s;  log_softmax = (x - m) - log s. */
void lower_softmax(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *t = &n->type;
  LLVMTypeRef ft = lw_elt(L, t->dtype);
  int64_t axis = ir_attr_int(n, "axis"), outer_n = 1, len = t->dims[axis], inner = 1;
  for (int d = 0; d < axis; d++) outer_n *= t->dims[d];
  for (int d = (int)axis + 1; d < t->rank; d++) inner *= t->dims[d];
  k->range = outer_n * inner;
  k->min_chunk = chunk_for(len * 20);
  LwLoop outer, lp;
  LLVMValueRef l = lw_outer(L, &outer);
  LLVMValueRef base =
      lw_add(L, lw_mulc(L, lw_divc(L, l, inner), len * inner), lw_remc(L, l, inner));
  LLVMValueRef x = lw_in(L, 0), y = lw_out(L);
  LLVMValueRef m = lw_var(L, ft, lw_fc(L, ft, -INFINITY)), s = lw_var(L, ft, lw_fc(L, ft, 0.0));
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, len));
  LLVMValueRef at = lw_add(L, base, lw_mulc(L, i, inner));
  lw_set(L, m, lw_max_step(L, lw_get(L, ft, m), lw_load(L, ft, x, at)));
  lw_next(L, &lp);
  LLVMValueRef mv = lw_get(L, ft, m);
  i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, len));
  at = lw_add(L, base, lw_mulc(L, i, inner));
  LLVMValueRef e = lw_exp(L, lw_fsub(L, lw_load(L, ft, x, at), mv));
  if (n->op == OP_SOFTMAX) lw_store(L, ft, y, at, e);
  lw_set(L, s, lw_fadd_r(L, lw_get(L, ft, s), e));
  lw_next(L, &lp);
  LLVMValueRef sv = lw_get(L, ft, s);
  LLVMValueRef scale = n->op == OP_SOFTMAX ? lw_fdiv(L, lw_fc(L, ft, 1.0), sv) : lw_log(L, sv);
  i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, len));
  at = lw_add(L, base, lw_mulc(L, i, inner));
  if (n->op == OP_SOFTMAX)
    lw_store(L, ft, y, at, lw_fmul(L, lw_load(L, ft, y, at), scale));
  else
    lw_store(L, ft, y, at, lw_fsub(L, lw_fsub(L, lw_load(L, ft, x, at), mv), scale));
  lw_next(L, &lp);
  lw_next(L, &outer);
}

/* ---- layer_norm and its gradient ---------------------------------------- */

/* sum_i f(i) over [0, d) into a fresh accumulator. */
typedef LLVMValueRef RowTerm(Lower *L, LLVMValueRef i, void *cx);

static LLVMValueRef row_sum(Lower *L, LLVMTypeRef ft, int64_t d, RowTerm *f, void *cx) {
  LLVMValueRef acc = lw_var(L, ft, lw_fc(L, ft, 0.0));
  LwLoop lp;
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, d));
  lw_set(L, acc, lw_fadd_r(L, lw_get(L, ft, acc), f(L, i, cx)));
  lw_next(L, &lp);
  return lw_get(L, ft, acc);
}

typedef struct NormRow {
  LLVMTypeRef ft;
  LLVMValueRef x, dy, gamma; /* row pointers (gamma: the whole vector) */
  LLVMValueRef mean, rstd;
} NormRow;

static LLVMValueRef term_x(Lower *L, LLVMValueRef i, void *cx) {
  NormRow *r = cx;
  return lw_load(L, r->ft, r->x, i);
}
static LLVMValueRef term_dev2(Lower *L, LLVMValueRef i, void *cx) {
  NormRow *r = cx;
  LLVMValueRef d = lw_fsub(L, lw_load(L, r->ft, r->x, i), r->mean);
  return lw_fmul(L, d, d);
}
static LLVMValueRef term_g(Lower *L, LLVMValueRef i, void *cx) {
  NormRow *r = cx;
  return lw_fmul(L, lw_load(L, r->ft, r->dy, i), lw_load(L, r->ft, r->gamma, i));
}
static LLVMValueRef term_gx(Lower *L, LLVMValueRef i, void *cx) {
  NormRow *r = cx;
  LLVMValueRef xhat = lw_fmul(L, lw_fsub(L, lw_load(L, r->ft, r->x, i), r->mean), r->rstd);
  return lw_fmul(L, term_g(L, i, cx), xhat);
}

/* mean and rstd = 1 / sqrt(var + eps) of the row (biased variance). */
static void norm_stats(Lower *L, NormRow *r, int64_t d, double eps) {
  LLVMValueRef dn = lw_fc(L, r->ft, (double)d);
  r->mean = lw_fdiv(L, row_sum(L, r->ft, d, term_x, r), dn);
  LLVMValueRef var = lw_fdiv(L, row_sum(L, r->ft, d, term_dev2, r), dn);
  r->rstd = lw_fdiv(L, lw_fc(L, r->ft, 1.0), lw_sqrt(L, lw_fadd(L, var, lw_fc(L, r->ft, eps))));
}

/* F.layer_norm over the last dim: y = (x - mean) rstd gamma + beta. */
void lower_layer_norm(Lower *L, Kernel *k) {
  const Type *t = &k->out->type;
  int64_t d = t->dims[t->rank - 1];
  NormRow r = {.ft = lw_elt(L, t->dtype), .gamma = lw_in(L, 1)};
  k->range = ir_type_numel(t) / d;
  k->min_chunk = chunk_for(d * 4);
  LwLoop outer, lp;
  LLVMValueRef row = lw_outer(L, &outer);
  LLVMValueRef off = lw_mulc(L, row, d);
  r.x = lw_gep(L, r.ft, lw_in(L, 0), off);
  norm_stats(L, &r, d, ir_attr_float(k->out, "eps"));
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, d));
  LLVMValueRef xhat = lw_fmul(L, lw_fsub(L, lw_load(L, r.ft, r.x, i), r.mean), r.rstd);
  LLVMValueRef y =
      lw_fadd(L, lw_fmul(L, xhat, lw_load(L, r.ft, r.gamma, i)), lw_load(L, r.ft, lw_in(L, 2), i));
  lw_store(L, r.ft, lw_out(L), lw_add(L, off, i), y);
  lw_next(L, &lp);
  lw_next(L, &outer);
}

/* layer_norm_grad(x, gamma, dy), g = dy gamma:
 *   dx = rstd (g - mean(g) - xhat mean(g xhat)). */
void lower_layer_norm_grad(Lower *L, Kernel *k) {
  const Type *t = &k->out->type;
  int64_t d = t->dims[t->rank - 1];
  NormRow r = {.ft = lw_elt(L, t->dtype), .gamma = lw_in(L, 1)};
  k->range = ir_type_numel(t) / d;
  k->min_chunk = chunk_for(d * 8);
  LwLoop outer, lp;
  LLVMValueRef row = lw_outer(L, &outer);
  LLVMValueRef off = lw_mulc(L, row, d);
  r.x = lw_gep(L, r.ft, lw_in(L, 0), off);
  r.dy = lw_gep(L, r.ft, lw_in(L, 2), off);
  norm_stats(L, &r, d, ir_attr_float(k->out, "eps"));
  LLVMValueRef dn = lw_fc(L, r.ft, (double)d);
  LLVMValueRef mg = lw_fdiv(L, row_sum(L, r.ft, d, term_g, &r), dn);
  LLVMValueRef mgx = lw_fdiv(L, row_sum(L, r.ft, d, term_gx, &r), dn);
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, d));
  LLVMValueRef xhat = lw_fmul(L, lw_fsub(L, lw_load(L, r.ft, r.x, i), r.mean), r.rstd);
  LLVMValueRef v = lw_fsub(L, lw_fsub(L, term_g(L, i, &r), mg), lw_fmul(L, xhat, mgx));
  lw_store(L, r.ft, lw_out(L), lw_add(L, off, i), lw_fmul(L, r.rstd, v));
  lw_next(L, &lp);
  lw_next(L, &outer);
}

/* ---- Pooling ------------------------------------------------------------ */

typedef struct PoolDims {
  int64_t planes, h, w, ho, wo, k, s;
} PoolDims;

static PoolDims pool_dims(const Node *n, const Type *x, const Type *y) {
  PoolDims p = {x->dims[0] * x->dims[1],
                x->dims[2],
                x->dims[3],
                y->dims[2],
                y->dims[3],
                ir_attr_int(n, "kernel"),
                ir_attr_int(n, "stride")};
  return p;
}

/* F.max_pool2d / F.avg_pool2d (no padding): out[p,oh,ow] = max or mean of
 * the k x k window at x[p, oh*s, ow*s]; max keeps the first maximum, NaN
 * wins. Rows of the output in parallel. */
void lower_pool2d(Lower *L, Kernel *k) {
  const Node *n = k->out;
  PoolDims pd = pool_dims(n, &n->in[0]->type, &n->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  bool is_max = n->op == OP_MAX_POOL2D;
  k->range = pd.planes * pd.ho;
  k->min_chunk = chunk_for(pd.wo * pd.k * pd.k);
  LwLoop outer, lw, li, lj;
  LLVMValueRef r = lw_outer(L, &outer);
  LLVMValueRef p = lw_divc(L, r, pd.ho), oh = lw_remc(L, r, pd.ho);
  LLVMValueRef row0 = lw_add(L, lw_mulc(L, p, pd.h * pd.w), lw_mulc(L, oh, pd.s * pd.w));
  LLVMValueRef ow = lw_for(L, &lw, lw_i64(L, 0), lw_i64(L, pd.wo));
  LLVMValueRef start = lw_add(L, row0, lw_mulc(L, ow, pd.s));
  LLVMValueRef acc = lw_var(L, ft, is_max ? lw_load(L, ft, lw_in(L, 0), start) : lw_fc(L, ft, 0.0));
  LLVMValueRef i = lw_for(L, &li, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef v = lw_load(L, ft, lw_in(L, 0), lw_add(L, start, lw_add(L, lw_mulc(L, i, pd.w), j)));
  LLVMValueRef a = lw_get(L, ft, acc);
  lw_set(L, acc, is_max ? lw_max_step(L, a, v) : lw_fadd(L, a, v));
  lw_next(L, &lj);
  lw_next(L, &li);
  LLVMValueRef res = lw_get(L, ft, acc);
  if (!is_max) res = lw_fdiv(L, res, lw_fc(L, ft, (double)(pd.k * pd.k)));
  lw_store(L, ft, lw_out(L), lw_add(L, lw_mulc(L, r, pd.wo), ow), res);
  lw_next(L, &lw);
  lw_next(L, &outer);
}

/* max_pool2d_grad(x, dy): dx = 0, then each dy goes to its window's first
 * maximum (the last NaN, if any). Planes in parallel: overlapping windows
 * of one plane accumulate in one thread. */
void lower_max_pool2d_grad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  PoolDims pd = pool_dims(n, &n->in[0]->type, &n->in[1]->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  k->range = pd.planes;
  k->min_chunk = chunk_for(pd.ho * pd.wo * pd.k * pd.k);
  LwLoop outer, loh, low, li, lj;
  LLVMValueRef p = lw_outer(L, &outer);
  LLVMValueRef plane = lw_mulc(L, p, pd.h * pd.w);
  lw_zero(L, lw_gep(L, ft, lw_out(L), plane),
          lw_i64(L, pd.h * pd.w * (int64_t)ir_dtype_size(n->type.dtype)));
  LLVMValueRef oh = lw_for(L, &loh, lw_i64(L, 0), lw_i64(L, pd.ho));
  LLVMValueRef ow = lw_for(L, &low, lw_i64(L, 0), lw_i64(L, pd.wo));
  LLVMValueRef start =
      lw_add(L, plane, lw_add(L, lw_mulc(L, oh, pd.s * pd.w), lw_mulc(L, ow, pd.s)));
  LLVMValueRef m = lw_var(L, ft, lw_load(L, ft, lw_in(L, 0), start));
  LLVMValueRef at = lw_var(L, L->i64, lw_i64(L, 0));
  LLVMValueRef i = lw_for(L, &li, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef off = lw_add(L, lw_mulc(L, i, pd.w), j);
  LLVMValueRef v = lw_load(L, ft, lw_in(L, 0), lw_add(L, start, off));
  LLVMValueRef mv = lw_get(L, ft, m);
  LLVMValueRef take = LLVMBuildOr(L->b, lw_fcmp(L, LLVMRealOGT, v, mv), lw_isnan(L, v), "");
  lw_set(L, m, lw_select(L, take, v, mv));
  lw_set(L, at, lw_select(L, take, off, lw_get(L, L->i64, at)));
  lw_next(L, &lj);
  lw_next(L, &li);
  LLVMValueRef dst = lw_add(L, start, lw_get(L, L->i64, at));
  LLVMValueRef g =
      lw_load(L, ft, lw_in(L, 1),
              lw_add(L, lw_mulc(L, p, pd.ho * pd.wo), lw_add(L, lw_mulc(L, oh, pd.wo), ow)));
  lw_store(L, ft, lw_out(L), dst, lw_fadd(L, lw_load(L, ft, lw_out(L), dst), g));
  lw_next(L, &low);
  lw_next(L, &loh);
  lw_next(L, &outer);
}

/* avg_pool2d_grad(dy): dx = 0, then dx[window] += dy / k^2. */
void lower_avg_pool2d_grad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  PoolDims pd = pool_dims(n, &n->type, &n->in[0]->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  k->range = pd.planes;
  k->min_chunk = chunk_for(pd.ho * pd.wo * pd.k * pd.k);
  LwLoop outer, loh, low, li, lj;
  LLVMValueRef p = lw_outer(L, &outer);
  LLVMValueRef plane = lw_mulc(L, p, pd.h * pd.w);
  lw_zero(L, lw_gep(L, ft, lw_out(L), plane),
          lw_i64(L, pd.h * pd.w * (int64_t)ir_dtype_size(n->type.dtype)));
  LLVMValueRef oh = lw_for(L, &loh, lw_i64(L, 0), lw_i64(L, pd.ho));
  LLVMValueRef ow = lw_for(L, &low, lw_i64(L, 0), lw_i64(L, pd.wo));
  LLVMValueRef start =
      lw_add(L, plane, lw_add(L, lw_mulc(L, oh, pd.s * pd.w), lw_mulc(L, ow, pd.s)));
  LLVMValueRef dyat = lw_add(L, lw_mulc(L, p, pd.ho * pd.wo), lw_add(L, lw_mulc(L, oh, pd.wo), ow));
  LLVMValueRef g =
      lw_fdiv(L, lw_load(L, ft, lw_in(L, 0), dyat), lw_fc(L, ft, (double)(pd.k * pd.k)));
  LLVMValueRef i = lw_for(L, &li, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef dst = lw_add(L, start, lw_add(L, lw_mulc(L, i, pd.w), j));
  lw_store(L, ft, lw_out(L), dst, lw_fadd(L, lw_load(L, ft, lw_out(L), dst), g));
  lw_next(L, &lj);
  lw_next(L, &li);
  lw_next(L, &low);
  lw_next(L, &loh);
  lw_next(L, &outer);
}
