/* llvm_lower_data.c - data movement (reshape, permute, slice, broadcast, pad, concat, embedding)
 * and the elementwise losses (mse, bce). */
#include <math.h>

#include "llvm_priv.h"

#define DATA_CHUNK_WORK 65536

static int64_t chunk_for(int64_t work_per_iter) {
  return DATA_CHUNK_WORK / (work_per_iter > 0 ? work_per_iter : 1) + 1;
}

static void strides_of(const Type *t, int64_t *stride) {
  int64_t s = 1;
  for (int d = t->rank - 1; d >= 0; d--) stride[d] = s, s *= t->dims[d];
}

/* ---- Movement ----------------------------------------------------------- */

/* reshape: the same elements in the same order. */
void lower_copy(Lower *L, Kernel *k) {
  LLVMTypeRef et = lw_elt(L, k->out->type.dtype);
  k->range = ir_type_numel(&k->out->type);
  k->min_chunk = DATA_CHUNK_WORK;
  LwLoop lp;
  LLVMValueRef i = lw_outer(L, &lp);
  lw_store(L, et, lw_out(L), i, lw_load(L, et, lw_in(L, 0), i));
  lw_next(L, &lp);
}

/* ---- Transposing permutes: tiles through registers ---------------------- */

/* Elements of et in one vector register. */
static unsigned vec_width(Lower *L, LLVMTypeRef et) {
  return (L->avx512 ? 64u : 32u) / (et == L->f64 ? 8u : 4u);
}

static LLVMValueRef vload(Lower *L, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef i, unsigned w) {
  LLVMValueRef v = LLVMBuildLoad2(L->b, LLVMVectorType(et, w), lw_gep(L, et, base, i), "");
  LLVMSetAlignment(v, et == L->f64 ? 8u : 4u);
  return v;
}

static void vstore(Lower *L, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef i, LLVMValueRef v) {
  LLVMValueRef st = LLVMBuildStore(L->b, v, lw_gep(L, et, base, i));
  LLVMSetAlignment(st, et == L->f64 ? 8u : 4u);
}

/* v[r][c] becomes v[c][r] for w vectors of w lanes: one stage per bit k of
 * the index swaps that bit between r and c, a two-source shuffle of each
 * pair of vectors r, r + 2^k. */
void lw_transpose_tile(Lower *L, LLVMValueRef *v, unsigned w) {
  LLVMValueRef m0[64], m1[64];
  for (unsigned s = 1; s < w; s *= 2) {
    for (unsigned c = 0; c < w; c++) {
      m0[c] = lw_i32(L, (int32_t)(c & s ? w + c - s : c));
      m1[c] = lw_i32(L, (int32_t)(c & s ? w + c : c + s));
    }
    LLVMValueRef k0 = LLVMConstVector(m0, w), k1 = LLVMConstVector(m1, w);
    for (unsigned r = 0; r < w; r++)
      if (!(r & s)) {
        LLVMValueRef a = v[r], b = v[r + s];
        v[r] = LLVMBuildShuffleVector(L->b, a, b, k0, "");
        v[r + s] = LLVMBuildShuffleVector(L->b, a, b, k1, "");
      }
  }
}

/* A permute whose output rows (dim a, the last) run across x's rows and
 * whose dim b runs along them (stride 1 in x). */
typedef struct Transpose {
  LLVMTypeRef et;
  int64_t da, db, sa, ob; /* sizes of a and b; a's stride in x; b's stride in out */
  LLVMValueRef xbase, obase;
} Transpose;

/* out[ib, ia] = x[ib, ia] one element at a time over [b0, b1) x [a0, a1). */
static void transpose_scalar(Lower *L, const Transpose *t, LLVMValueRef b0, int64_t nb, int64_t a0,
                             int64_t a1) {
  LwLoop lb, la;
  LLVMValueRef ib = lw_add(L, b0, lw_for(L, &lb, lw_i64(L, 0), lw_i64(L, nb)));
  LLVMValueRef ia = lw_for(L, &la, lw_i64(L, a0), lw_i64(L, a1));
  LLVMValueRef v =
      lw_load(L, t->et, lw_in(L, 0), lw_add(L, t->xbase, lw_add(L, ib, lw_mulc(L, ia, t->sa))));
  lw_store(L, t->et, lw_out(L), lw_add(L, t->obase, lw_add(L, lw_mulc(L, ib, t->ob), ia)), v);
  lw_next(L, &la);
  lw_next(L, &lb);
}

/* The w x w tiles of a full block of w rows of b starting at b0: w vector
 * loads along b, a transpose in registers, w vector stores along a; the
 * columns of a past the last whole tile one by one. */
static void transpose_block(Lower *L, const Transpose *t, LLVMValueRef b0, unsigned w) {
  LLVMValueRef v[64];
  LwLoop lp;
  LLVMValueRef a0 = lw_mulc(L, lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, t->da / w)), w);
  for (unsigned r = 0; r < w; r++) {
    LLVMValueRef ia = lw_addc(L, a0, r);
    v[r] =
        vload(L, t->et, lw_in(L, 0), lw_add(L, t->xbase, lw_add(L, b0, lw_mulc(L, ia, t->sa))), w);
  }
  lw_transpose_tile(L, v, w);
  for (unsigned r = 0; r < w; r++) {
    LLVMValueRef ib = lw_addc(L, b0, r);
    vstore(L, t->et, lw_out(L), lw_add(L, t->obase, lw_add(L, lw_mulc(L, ib, t->ob), a0)), v[r]);
  }
  lw_next(L, &lp);
  if (t->da % w) transpose_scalar(L, t, b0, w, t->da / w * w, t->da);
}

/* permute with x's innermost dim moved to output dim b (not the last, a):
 * each iteration takes a block of w rows of b (one index of the other dims)
 * through w x w register tiles, so loads and stores are whole vectors; a
 * last partial block goes one element at a time. */
static bool lower_transpose(Lower *L, Kernel *k, const int64_t *st) {
  const Type *ot = &k->out->type;
  LLVMTypeRef et = lw_elt(L, ot->dtype);
  unsigned w = vec_width(L, et);
  int r = ot->rank, a = r - 1, b = -1;
  for (int d = 0; d < a; d++)
    if (st[d] == 1 && ot->dims[d] > 1) b = d;
  if (r < 2 || st[a] == 1 || b < 0 || ot->dims[a] < w || ot->dims[b] < w) return false;
  int64_t os[IR_MAX_RANK], odims[IR_MAX_RANK], xst[IR_MAX_RANK], ost[IR_MAX_RANK];
  strides_of(ot, os);
  int no = 0;
  for (int d = 0; d < a; d++)
    if (d != b) odims[no] = ot->dims[d], xst[no] = st[d], ost[no++] = os[d];
  Transpose t = {.et = et, .da = ot->dims[a], .db = ot->dims[b], .sa = st[a], .ob = os[b]};
  int64_t nbb = (t.db + w - 1) / w;
  k->range = ir_type_numel(ot) / (t.da * t.db) * nbb;
  k->min_chunk = chunk_for(t.da * w);
  LwLoop outer;
  LwIf last;
  LLVMValueRef it = lw_outer(L, &outer);
  LLVMValueRef o = lw_divc(L, it, nbb), b0 = lw_mulc(L, lw_remc(L, it, nbb), w);
  t.xbase = lw_offset(L, o, no, odims, xst);
  t.obase = lw_offset(L, o, no, odims, ost);
  if (t.db % w == 0) {
    transpose_block(L, &t, b0, w);
  } else {
    lw_if(L, &last, LLVMBuildICmp(L->b, LLVMIntEQ, b0, lw_i64(L, (nbb - 1) * w), ""));
    transpose_scalar(L, &t, b0, t.db % w, 0, t.da);
    lw_else(L, &last);
    transpose_block(L, &t, b0, w);
    lw_endif(L, &last);
  }
  lw_next(L, &outer);
  return true;
}

/* permute, slice, broadcast: out[idx] = x[base + sum_d idx_d stride[d]],
 * rows of the output's last dim in parallel (a permute that moves x's
 * innermost dim: register tiles, lower_transpose). */
int64_t llvm_gather_strides(const Node *n, int64_t *st) {
  const Type *xt = &n->in[0]->type, *ot = &n->type;
  int64_t xs[IR_MAX_RANK], base = 0;
  strides_of(xt, xs);
  for (int d = 0; d < ot->rank; d++) {
    if (n->op == OP_PERMUTE) {
      st[d] = xs[ir_attr_c(n, "perm")->i[d]];
    } else if (n->op == OP_SLICE) {
      st[d] = xs[d];
      base += ir_attr_c(n, "begin")->i[d] * xs[d];
    } else { /* broadcast: 0 where x has size 1 or lacks the dim */
      int kd = xt->rank - ot->rank + d;
      st[d] = kd >= 0 && xt->dims[kd] != 1 ? xs[kd] : 0;
    }
  }
  return base;
}

void lower_gather(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *ot = &n->type;
  LLVMTypeRef et = lw_elt(L, ot->dtype);
  int64_t st[IR_MAX_RANK], base = llvm_gather_strides(n, st);
  if (n->op == OP_PERMUTE && lower_transpose(L, k, st)) return;
  int r = ot->rank;
  int64_t len = r ? ot->dims[r - 1] : 1, sl = r ? st[r - 1] : 0;
  k->range = ir_type_numel(ot) / len;
  k->min_chunk = chunk_for(len);
  LwLoop outer, inner;
  LLVMValueRef row = lw_outer(L, &outer);
  LLVMValueRef from = lw_addc(L, lw_offset(L, row, r ? r - 1 : 0, ot->dims, st), base);
  LLVMValueRef j = lw_for(L, &inner, lw_i64(L, 0), lw_i64(L, len));
  LLVMValueRef v = lw_load(L, et, lw_in(L, 0), lw_add(L, from, lw_mulc(L, j, sl)));
  lw_store(L, et, lw_out(L), lw_add(L, lw_mulc(L, row, len), j), v);
  lw_next(L, &inner);
  lw_next(L, &outer);
}

/* pad(x, before, after): out = 0 except out[before + i] = x[i]. Each
 * output row is zeroed, and its middle copied when the row lies inside. */
void lower_pad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *xt = &n->in[0]->type, *ot = &n->type;
  const AttrVal *before = ir_attr_c(n, "before");
  LLVMTypeRef et = lw_elt(L, ot->dtype);
  int r = ot->rank;
  int64_t len = r ? ot->dims[r - 1] : 1, xlen = r ? xt->dims[r - 1] : 1, xs[IR_MAX_RANK];
  strides_of(xt, xs);
  k->range = ir_type_numel(ot) / len;
  k->min_chunk = chunk_for(len);
  LwLoop outer, lz, lc;
  LLVMValueRef row = lw_outer(L, &outer);
  LLVMValueRef orow = lw_mulc(L, row, len);
  LLVMValueRef z = lw_for(L, &lz, lw_i64(L, 0), lw_i64(L, len));
  lw_store(L, et, lw_out(L), lw_add(L, orow, z), LLVMConstNull(et));
  lw_next(L, &lz);
  LLVMValueRef inside = LLVMConstInt(L->i1, 1, 0), xoff = lw_i64(L, 0), rest = row;
  for (int d = r - 2; d >= 0; d--) {
    LLVMValueRef idx = d > 0 ? lw_remc(L, rest, ot->dims[d]) : rest;
    if (d > 0) rest = lw_divc(L, rest, ot->dims[d]);
    LLVMValueRef xi = lw_addc(L, idx, -before->i[d]);
    LLVMValueRef ok = LLVMBuildICmp(L->b, LLVMIntULT, xi, lw_i64(L, xt->dims[d]), "");
    inside = LLVMBuildAnd(L->b, inside, ok, "");
    xoff = lw_add(L, xoff, lw_mulc(L, xi, xs[d]));
  }
  LwIf c;
  lw_if(L, &c, inside);
  LLVMValueRef j = lw_for(L, &lc, lw_i64(L, 0), lw_i64(L, xlen));
  LLVMValueRef v = lw_load(L, et, lw_in(L, 0), lw_add(L, xoff, j));
  lw_store(L, et, lw_out(L), lw_add(L, lw_addc(L, orow, r ? before->i[r - 1] : 0), j), v);
  lw_next(L, &lc);
  lw_endif(L, &c);
  lw_next(L, &outer);
}

/* torch.cat: each outer index (dims before axis) takes every input's block
 * of len_k * inner elements in turn. */
void lower_concat(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *ot = &n->type;
  LLVMTypeRef et = lw_elt(L, ot->dtype);
  int64_t axis = ir_attr_int(n, "axis"), outer_n = 1, inner = 1;
  for (int d = 0; d < axis; d++) outer_n *= ot->dims[d];
  for (int d = (int)axis + 1; d < ot->rank; d++) inner *= ot->dims[d];
  int64_t total = ot->dims[axis] * inner;
  k->range = outer_n;
  k->min_chunk = chunk_for(total);
  LwLoop outer, lp;
  LLVMValueRef i = lw_outer(L, &outer);
  LLVMValueRef dst = lw_gep(L, et, lw_out(L), lw_mulc(L, i, total));
  int64_t at = 0;
  for (int a = 0; a < n->nin; a++) {
    int64_t block = n->in[a]->type.dims[axis] * inner;
    LLVMValueRef src = lw_gep(L, et, lw_in(L, a), lw_mulc(L, i, block));
    LLVMValueRef j = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, block));
    lw_store(L, et, dst, lw_addc(L, j, at), lw_load(L, et, src, j));
    lw_next(L, &lp);
    at += block;
  }
  lw_next(L, &outer);
}

/* F.embedding: out[p, :] = table[ids[p], :]; an id outside [0, V) sets
 * KILN_ERR_RANGE and zeroes its row. */
void lower_embedding(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *tt = &n->in[1]->type;
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  int64_t v = tt->dims[0], d = tt->dims[1];
  k->range = ir_type_numel(&n->in[0]->type);
  k->min_chunk = chunk_for(d);
  LwLoop outer, lp;
  LwIf c;
  LLVMValueRef p = lw_outer(L, &outer), bad;
  LLVMValueRef id = lw_load_index(L, 0, p, v, &bad);
  LLVMValueRef dst = lw_gep(L, ft, lw_out(L), lw_mulc(L, p, d));
  lw_if(L, &c, bad);
  lw_range_error(L);
  lw_zero(L, dst, lw_i64(L, d * (int64_t)ir_dtype_size(n->type.dtype)));
  lw_else(L, &c);
  LLVMValueRef src = lw_gep(L, ft, lw_in(L, 1), lw_mulc(L, id, d));
  LLVMValueRef j = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, d));
  lw_store(L, ft, dst, j, lw_load(L, ft, src, j));
  lw_next(L, &lp);
  lw_endif(L, &c);
  lw_next(L, &outer);
}

/* embedding_grad(ids, dy): dtable = 0, dtable[ids[p], :] += dy[p, :]; rows
 * of repeated ids accumulate, so one thread does it all. */
void lower_embedding_grad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  int64_t v = n->type.dims[0], d = n->type.dims[1], count = ir_type_numel(&n->in[0]->type);
  k->range = 1;
  k->min_chunk = 1;
  LwLoop outer, lp, lj;
  LwIf c;
  lw_outer(L, &outer);
  lw_zero(L, lw_out(L), lw_i64(L, v * d * (int64_t)ir_dtype_size(n->type.dtype)));
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, count)), bad;
  LLVMValueRef id = lw_load_index(L, 0, p, v, &bad);
  lw_if(L, &c, bad);
  lw_range_error(L);
  lw_else(L, &c);
  LLVMValueRef dst = lw_gep(L, ft, lw_out(L), lw_mulc(L, id, d));
  LLVMValueRef src = lw_gep(L, ft, lw_in(L, 1), lw_mulc(L, p, d));
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, d));
  lw_store(L, ft, dst, j, lw_fadd(L, lw_load(L, ft, dst, j), lw_load(L, ft, src, j)));
  lw_next(L, &lj);
  lw_endif(L, &c);
  lw_next(L, &lp);
  lw_next(L, &outer);
}

/* ---- Losses: one iteration, sums in double ------------------------------ */

static LLVMValueRef ext(Lower *L, LLVMValueRef x) { return lw_fconv(L, x, L->f64); }

/* Stores sum / count (rounded to the output's type). */
static void store_mean(Lower *L, Kernel *k, LLVMValueRef sum, int64_t count) {
  LLVMTypeRef ft = lw_elt(L, k->out->type.dtype);
  LLVMValueRef mean = lw_fdiv(L, lw_get(L, L->f64, sum), lw_fc(L, L->f64, (double)count));
  lw_store(L, ft, lw_out(L), lw_i64(L, 0), lw_fconv(L, mean, ft));
}

/* F.mse_loss (mean), operands broadcast: sum (a - b)^2 / n. */
void lower_mse_loss(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *at = &n->in[0]->type, *bt = &n->in[1]->type;
  Type sh;
  IR_ASSERT(ir_broadcast(at, bt, &sh), "llvm: mse_loss operands do not broadcast");
  LLVMTypeRef ft = lw_elt(L, at->dtype);
  int64_t count = ir_type_numel(&sh), st[2][IR_MAX_RANK];
  for (int a = 0; a < 2; a++) {
    const Type *t = &n->in[a]->type;
    int64_t own[IR_MAX_RANK];
    strides_of(t, own);
    for (int d = 0; d < sh.rank; d++) {
      int kd = t->rank - sh.rank + d;
      st[a][d] = kd >= 0 && t->dims[kd] != 1 ? own[kd] : 0;
    }
  }
  k->range = 1;
  k->min_chunk = 1;
  LwLoop outer, lp;
  lw_outer(L, &outer);
  LLVMValueRef sum = lw_var(L, L->f64, lw_fc(L, L->f64, 0.0));
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, count));
  LLVMValueRef a = lw_load(L, ft, lw_in(L, 0), lw_offset(L, i, sh.rank, sh.dims, st[0]));
  LLVMValueRef b = lw_load(L, ft, lw_in(L, 1), lw_offset(L, i, sh.rank, sh.dims, st[1]));
  LLVMValueRef dv = LLVMBuildFSub(L->b, ext(L, a), ext(L, b), "");
  lw_set(L, sum, lw_fadd_r(L, lw_get(L, L->f64, sum), LLVMBuildFMul(L->b, dv, dv, "")));
  lw_next(L, &lp);
  store_mean(L, k, sum, count);
  lw_next(L, &outer);
}

/* log1p(u) = log(1 + u) u / ((1 + u) - 1), exact enough for tiny u. */
static LLVMValueRef log1p_(Lower *L, LLVMValueRef u) {
  LLVMTypeRef ft = LLVMTypeOf(u);
  LLVMValueRef w = lw_fadd(L, lw_fc(L, ft, 1.0), u);
  LLVMValueRef dw = LLVMBuildFSub(L->b, w, lw_fc(L, ft, 1.0), "");
  LLVMValueRef r = lw_fmul(L, lw_log(L, w), lw_fdiv(L, u, dw));
  return lw_select(L, lw_fcmp(L, LLVMRealOEQ, dw, lw_fc(L, ft, 0.0)), u, r);
}

/* F.binary_cross_entropy: mean(-(t max(log p, -100) + (1 - t) max(log(1 - p), -100)));
 * F.binary_cross_entropy_with_logits: mean(max(z, 0) - z t + log(1 + e^-|z|)). */
void lower_bce(Lower *L, Kernel *k) {
  const Node *n = k->out;
  LLVMTypeRef ft = lw_elt(L, n->in[0]->type.dtype);
  int64_t count = ir_type_numel(&n->in[0]->type);
  k->range = 1;
  k->min_chunk = 1;
  LwLoop outer, lp;
  lw_outer(L, &outer);
  LLVMValueRef sum = lw_var(L, L->f64, lw_fc(L, L->f64, 0.0));
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, count));
  LLVMValueRef x = lw_load(L, ft, lw_in(L, 0), i), t = lw_load(L, ft, lw_in(L, 1), i);
  LLVMValueRef xd = ext(L, x), td = ext(L, t), one = lw_fc(L, L->f64, 1.0), term;
  if (n->op == OP_BCE_LOSS) {
    LLVMValueRef m100 = lw_fc(L, L->f64, -100.0);
    LLVMValueRef lp1 = ext(L, lw_log(L, x));
    LLVMValueRef lp0 = ext(L, log1p_(L, lw_fneg(L, x)));
    lp1 = lw_select(L, lw_fcmp(L, LLVMRealOLT, lp1, m100), m100, lp1);
    lp0 = lw_select(L, lw_fcmp(L, LLVMRealOLT, lp0, m100), m100, lp0);
    term = lw_fneg(L, LLVMBuildFAdd(L->b, LLVMBuildFMul(L->b, td, lp1, ""),
                                    LLVMBuildFMul(L->b, LLVMBuildFSub(L->b, one, td, ""), lp0, ""),
                                    ""));
  } else {
    LLVMValueRef zero = lw_fc(L, L->f64, 0.0);
    LLVMValueRef pos = lw_select(L, lw_fcmp(L, LLVMRealOGT, xd, zero), xd, zero);
    LLVMValueRef e = lw_exp(L, lw_fneg(L, lw_intrinsic1(L, "llvm.fabs", x)));
    term = LLVMBuildFAdd(L->b, LLVMBuildFSub(L->b, pos, LLVMBuildFMul(L->b, xd, td, ""), ""),
                         ext(L, log1p_(L, e)), "");
  }
  lw_set(L, sum, lw_fadd_r(L, lw_get(L, L->f64, sum), term));
  lw_next(L, &lp);
  store_mean(L, k, sum, count);
  lw_next(L, &outer);
}
