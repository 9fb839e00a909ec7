/* llvm_lower_reduce.c - reduction kernels: sum/mean/max over axes, softmax, log_softmax,
 * layer_norm, cross_entropy (and their gradients), pooling (and theirs).
 *
 * Shapes are static, so every row loop is vector code of a known length:
 * whole vectors of vec_width elements (512-bit with AVX-512, else 256-bit),
 * then at most one narrower vector of each power-of-two width down to a
 * scalar. A reduction keeps one accumulator per width and folds their lanes
 * at the end: sums are reassociated, as the vectorizer would; maxima keep
 * NaN (a row's +0 and -0 may come out either way). */
#include <math.h>
#include <string.h>

#include "llvm_gemm.h"
#include "llvm_priv.h"

#define REDUCE_CHUNK_WORK 32768
/* Vectors of output columns one iteration of a column reduction (reduced
 * dims before the innermost) accumulates in registers. */
#define REDUCE_BLOCK_VECS 8
/* Accumulators of one row reduction: one per width 1, 2, 4, ... 64. */
#define REDUCE_WIDTHS 7
/* Whole vectors of a row emitted as straight-line code rather than a loop. */
#define REDUCE_UNROLL 8
/* Most rows one iteration of a row kernel works on side by side, and the
 * most vectors live at once (three quarters of the AVX-512 registers). */
#define REDUCE_GROUP     4
#define REDUCE_LIVE_VECS 24

static int64_t chunk_for(int64_t work_per_iter) {
  return REDUCE_CHUNK_WORK / (work_per_iter > 0 ? work_per_iter : 1) + 1;
}

static void strides_of(const Type *t, int64_t *stride) {
  int64_t s = 1;
  for (int d = t->rank - 1; d >= 0; d--) stride[d] = s, s *= t->dims[d];
}

/* ---- Vectors ------------------------------------------------------------ */

/* Elements of ft in one vector register. */
static unsigned vec_width(Lower *L, LLVMTypeRef ft) {
  return (L->avx512 ? 64u : 32u) / (ft == L->f64 ? 8u : 4u);
}

static LLVMTypeRef vec_type(LLVMTypeRef et, unsigned w) {
  return w == 1 ? et : LLVMVectorType(et, w);
}

/* s in every one of w lanes (s itself when w = 1). */
static LLVMValueRef vsplat(Lower *L, LLVMValueRef s, unsigned w) {
  if (w == 1) return s;
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(s), w);
  LLVMValueRef v = LLVMBuildInsertElement(L->b, LLVMGetPoison(vt), s, lw_i32(L, 0), "");
  return LLVMBuildShuffleVector(L->b, v, LLVMGetPoison(vt),
                                LLVMConstNull(LLVMVectorType(L->i32, w)), "");
}

static LLVMValueRef vconst(Lower *L, LLVMTypeRef ft, double v, unsigned w) {
  return vsplat(L, lw_fc(L, ft, v), w);
}

static unsigned elt_align(Lower *L, LLVMTypeRef et) { return et == L->f64 ? 8u : 4u; }

/* The w elements of type et at base[i..]. */
static LLVMValueRef vload(Lower *L, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef i, unsigned w) {
  LLVMValueRef v = LLVMBuildLoad2(L->b, vec_type(et, w), lw_gep(L, et, base, i), "");
  LLVMSetAlignment(v, elt_align(L, et));
  return v;
}

static void vstore(Lower *L, LLVMTypeRef et, LLVMValueRef base, LLVMValueRef i, LLVMValueRef v) {
  LLVMValueRef st = LLVMBuildStore(L->b, v, lw_gep(L, et, base, i));
  LLVMSetAlignment(st, elt_align(L, et));
}

/* Lanes [from, from + n) of v. */
static LLVMValueRef vlanes(Lower *L, LLVMValueRef v, unsigned from, unsigned n) {
  LLVMValueRef idx[64];
  for (unsigned k = 0; k < n; k++) idx[k] = lw_i32(L, (int32_t)(from + k));
  return LLVMBuildShuffleVector(L->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(idx, n), "");
}

/* What a row reduction computes. */
typedef enum RowOp {
  ROW_SUM, /* reassociated */
  ROW_MAX, /* torch.amax: NaN if any element is */
  ROW_PEAK /* a max that may skip NaN: softmax's shift, where a NaN reaches the sum anyway */
} RowOp;

/* a and b combined by op. */
static LLVMValueRef combine(Lower *L, RowOp op, LLVMValueRef a, LLVMValueRef b) {
  switch (op) {
  case ROW_SUM:
    return lw_fadd_r(L, a, b);
  case ROW_MAX:
    return lw_fmax_nan(L, a, b);
  case ROW_PEAK:
    break;
  }
  return lw_select(L, lw_fcmp(L, LLVMRealOGT, a, b), a, b);
}

/* The accumulator after taking in x: the running max keeps the first NaN. */
static LLVMValueRef accumulate(Lower *L, RowOp op, LLVMValueRef acc, LLVMValueRef x) {
  return op == ROW_MAX ? lw_max_step(L, acc, x) : combine(L, op, acc, x);
}

/* The lanes of v combined into a scalar, upper half into lower half. */
static LLVMValueRef vfold(Lower *L, LLVMValueRef v, RowOp op) {
  if (LLVMGetTypeKind(LLVMTypeOf(v)) != LLVMVectorTypeKind) return v;
  unsigned w = LLVMGetVectorSize(LLVMTypeOf(v));
  for (; w > 2; w /= 2) v = combine(L, op, vlanes(L, v, 0, w / 2), vlanes(L, v, w / 2, w / 2));
  return combine(L, op, LLVMBuildExtractElement(L->b, v, lw_i32(L, 0), ""),
                 LLVMBuildExtractElement(L->b, v, lw_i32(L, 1), ""));
}

/* ---- Row loops ---------------------------------------------------------- */

/* What a row loop does with the w elements at index i (a scalar when w = 1). */
typedef void RowFn(Lower *L, LLVMValueRef i, unsigned w, void *cx);

/* Whether a row of d covers a vector of w lanes: whole vectors of vw, then
 * one of each narrower width the rest needs. */
static bool row_has(int64_t d, unsigned vw, unsigned w) {
  return w == vw ? d >= vw : (d % vw & w) != 0;
}

/* f over [0, d) at offsets from `at`, vector by vector: whole vectors of vw
 * (straight-line code for a few, else a loop), then the narrower ones. */
static void row_loop(Lower *L, unsigned vw, LLVMValueRef at, int64_t d, RowFn *f, void *cx) {
  int64_t nv = d / vw, done = nv * vw;
  if (nv <= REDUCE_UNROLL) {
    for (int64_t j = 0; j < nv; j++) f(L, lw_addc(L, at, j * vw), vw, cx);
  } else {
    LwLoop lp;
    LLVMValueRef j = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, nv));
    f(L, lw_add(L, at, lw_mulc(L, j, vw)), vw, cx);
    lw_next(L, &lp);
  }
  for (unsigned w = vw / 2; w >= 1; w /= 2)
    if (row_has(d, vw, w)) {
      f(L, lw_addc(L, at, done), w, cx);
      done += w;
    }
}

/* Several rows' loops interleaved vector by vector (independent work side
 * by side for the out-of-order core): f on each cx in turn. */
typedef struct RowGroup {
  RowFn *f;
  void **cx;
  int n;
} RowGroup;

static void group_step(Lower *L, LLVMValueRef i, unsigned w, void *p) {
  RowGroup *g = p;
  for (int r = 0; r < g->n; r++) g->f(L, i, w, g->cx[r]);
}

static void rows_loop(Lower *L, unsigned vw, int64_t d, RowFn *f, void **cx, int n) {
  RowGroup g = {f, cx, n};
  row_loop(L, vw, lw_i64(L, 0), d, group_step, &g);
}

/* The value a row reduction accumulates at i, w lanes of ft. */
typedef LLVMValueRef RowTerm(Lower *L, LLVMValueRef i, unsigned w, void *cx);

/* A reduction in progress: one accumulator per width the row covers (index log2 w). */
typedef struct RowAcc {
  LLVMTypeRef ft;
  RowOp op;
  unsigned vw;
  RowTerm *term;
  void *cx;
  LLVMValueRef var[REDUCE_WIDTHS];
  LLVMValueRef alt; /* a second whole-vector accumulator, taking every other vector */
  int nsteps;       /* whole vectors taken so far (straight-line code alternates) */
} RowAcc;

static unsigned log2u(unsigned w) {
  unsigned k = 0;
  while (w > 1) w /= 2, k++;
  return k;
}

/* Fresh accumulators (0, or -inf for a max) for rows of d, created where the
 * reduction starts; two for whole vectors when a row has several (half the
 * dependency chain). */
static void acc_init(Lower *L, RowAcc *a, LLVMTypeRef ft, RowOp op, int64_t d, RowTerm *term,
                     void *cx) {
  a->ft = ft, a->op = op, a->term = term, a->cx = cx, a->vw = vec_width(L, ft), a->nsteps = 0;
  double init = op == ROW_SUM ? 0.0 : -INFINITY;
  for (unsigned w = 1, k = 0; k < REDUCE_WIDTHS; w *= 2, k++)
    a->var[k] = w <= a->vw && row_has(d, a->vw, w)
                    ? lw_var(L, vec_type(ft, w), vconst(L, ft, init, w))
                    : NULL;
  a->alt =
      d >= 2 * (int64_t)a->vw ? lw_var(L, vec_type(ft, a->vw), vconst(L, ft, init, a->vw)) : NULL;
}

/* acc_w = acc_w (op) term(i). */
static void acc_step(Lower *L, LLVMValueRef i, unsigned w, void *p) {
  RowAcc *a = p;
  LLVMValueRef var = a->var[log2u(w)], t = a->term(L, i, w, a->cx);
  if (w == a->vw && a->alt && a->nsteps++ % 2) var = a->alt;
  lw_set(L, var, accumulate(L, a->op, lw_get(L, vec_type(a->ft, w), var), t));
}

/* The accumulators folded into one scalar (a row of 0 elements: 0 or -inf). */
static LLVMValueRef acc_result(Lower *L, RowAcc *a) {
  LLVMValueRef r = NULL;
  for (int k = REDUCE_WIDTHS - 1; k >= 0; k--) {
    if (!a->var[k]) continue;
    LLVMTypeRef vt = vec_type(a->ft, 1u << k);
    LLVMValueRef v = lw_get(L, vt, a->var[k]);
    if ((1u << k) == a->vw && a->alt) v = combine(L, a->op, v, lw_get(L, vt, a->alt));
    v = vfold(L, v, a->op);
    r = r ? combine(L, a->op, r, v) : v;
  }
  return r ? r : lw_fc(L, a->ft, a->op == ROW_SUM ? 0.0 : -INFINITY);
}

/* res[r] = op over i in [0, d) of term(i) in row cx[r], for n rows side by side. */
static void rows_reduce(Lower *L, LLVMTypeRef ft, int64_t d, RowOp op, RowTerm *term, void **cx,
                        int n, LLVMValueRef *res) {
  RowAcc a[REDUCE_GROUP];
  void *acx[REDUCE_GROUP];
  for (int r = 0; r < n; r++) acc_init(L, &a[r], ft, op, d, term, cx[r]), acx[r] = &a[r];
  rows_loop(L, vec_width(L, ft), d, acc_step, acx, n);
  for (int r = 0; r < n; r++) res[r] = acc_result(L, &a[r]);
}

/* Rows one iteration of a row kernel works on: up to REDUCE_GROUP rows of
 * straight-line code (at most REDUCE_UNROLL vectors each) while their
 * vectors, and `shared` rows of them (gamma, beta) loaded once, fit in
 * REDUCE_LIVE_VECS registers (a row's loads stay live across its passes),
 * as many as divide the row count. */
static int row_group(Lower *L, LLVMTypeRef ft, int64_t rows, int64_t d, int shared) {
  int64_t vw = vec_width(L, ft), nv = (d + vw - 1) / vw;
  if (nv > REDUCE_UNROLL) return 1;
  int g = REDUCE_GROUP;
  while (g > 1 && (rows % g || (g + shared) * nv > REDUCE_LIVE_VECS)) g /= 2;
  return g;
}

/* ---- sum, mean, max over axes ------------------------------------------- */

/* x's dims as a reduction sees them: size-1 dims dropped, neighbours both
 * reduced or both kept merged. */
typedef struct ReduceDims {
  int nk, nr; /* kept and reduced dims, in order */
  int64_t klen[IR_MAX_RANK], kstride[IR_MAX_RANK], rlen[IR_MAX_RANK], rstride[IR_MAX_RANK];
  bool inner_reduced; /* x's innermost (non-1) dim is reduced */
} ReduceDims;

static void reduce_dims(const Type *xt, const AttrVal *axes, ReduceDims *rd) {
  int64_t own[IR_MAX_RANK];
  bool reduced[IR_MAX_RANK] = {false};
  strides_of(xt, own);
  for (int k = 0; k < axes->n; k++) reduced[axes->i[k]] = true;
  rd->nk = rd->nr = 0;
  int last = -1; /* the kind of the dim appended last: 0 kept, 1 reduced */
  for (int d = 0; d < xt->rank; d++) {
    if (xt->dims[d] == 1) continue;
    bool r = reduced[d];
    int *n = r ? &rd->nr : &rd->nk;
    int64_t *len = r ? rd->rlen : rd->klen, *st = r ? rd->rstride : rd->kstride;
    if (last == (int)r && st[*n - 1] == own[d] * xt->dims[d]) {
      len[*n - 1] *= xt->dims[d];
      st[*n - 1] = own[d];
    } else {
      len[*n] = xt->dims[d];
      st[(*n)++] = own[d];
    }
    last = (int)r;
  }
  rd->inner_reduced = last == 1;
}

/* A reduction's kernel: x (element type xt) into values of ft. */
typedef struct Reduce {
  const ReduceDims *rd;
  LLVMTypeRef ft, xt;
  RowOp op;
  LLVMValueRef x;   /* x: its buffer, or with a prologue on the stack, shifted so that x + the
                       row's offset lands on its row there */
  LLVMValueRef off; /* x offset of the row being reduced */
  Epilogue *epi;    /* a row sum's fused epilogue, or NULL */
  Epilogue *oepi;   /* an epilogue over the output's space (one lane per element), or NULL */
  const Type *ot;   /* the output's type */
} Reduce;

/* x[off + i], w lanes, in ft. */
static LLVMValueRef term_reduce(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  Reduce *r = cx;
  return lw_fconv(L, vload(L, r->xt, r->x, lw_add(L, r->off, i), w), vec_type(r->ft, w));
}

/* The reduced dims before the innermost as loops around a row reduction of
 * the innermost (contiguous) one into a. */
static void inner_nest(Lower *L, Reduce *r, RowAcc *a, int level, LLVMValueRef off) {
  const ReduceDims *rd = r->rd;
  if (level == rd->nr - 1) {
    r->off = off;
    row_loop(L, a->vw, lw_i64(L, 0), rd->rlen[level], acc_step, a);
    return;
  }
  LwLoop lp;
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, rd->rlen[level]));
  inner_nest(L, r, a, level + 1, lw_add(L, off, lw_mulc(L, i, rd->rstride[level])));
  lw_next(L, &lp);
}

/* The anchor's vector handed to an epilogue at columns [j0, j0 + vl) of a row. */
typedef LLVMValueRef EpiVec(Lower *L, LLVMValueRef j0, unsigned vl, void *cx);

/* A fused epilogue (llvm_lower_fused.c) over the d elements of row `row` of
 * its space, vector by vector (the last one masked), the anchor's values
 * from f. */
static void row_epilogue(Lower *L, Epilogue *epi, LLVMValueRef row, int64_t d, EpiVec *f,
                         void *cx) {
  unsigned vl = vec_width(L, L->f32);
  LLVMValueRef bits[64];
  LLVMTypeRef i1 = LLVMInt1TypeInContext(L->ctx);
  int64_t full = d / vl, tail = d % vl;
  if (full > 0) {
    for (unsigned l = 0; l < vl; l++) bits[l] = LLVMConstInt(i1, 1, false);
    LwLoop lp;
    LLVMValueRef j0 = lw_mulc(L, lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, full)), vl);
    lw_epilogue_store(epi, row, j0, LLVMConstVector(bits, vl), f(L, j0, vl, cx));
    lw_next(L, &lp);
  }
  if (tail > 0) {
    for (unsigned l = 0; l < vl; l++) bits[l] = LLVMConstInt(i1, l < tail, false);
    LLVMValueRef j0 = lw_i64(L, full * vl);
    lw_epilogue_store(epi, row, j0, LLVMConstVector(bits, vl), f(L, j0, vl, cx));
  }
}

/* A row sum's epilogue sees the sum (*cx) in every lane. */
static LLVMValueRef epi_splat(Lower *L, LLVMValueRef j0, unsigned vl, void *cx) {
  (void)j0;
  return vsplat(L, *(LLVMValueRef *)cx, vl);
}

/* Innermost dim reduced: output elements o0 .. o0 + g - 1 fold their
 * contiguous rows in vectors (g > 1 only with one reduced dim: rows side by
 * side). */
static void reduce_inner(Lower *L, Reduce *r, LLVMValueRef o0, int g, int64_t per, bool mean) {
  const ReduceDims *rd = r->rd;
  Reduce rows[REDUCE_GROUP];
  void *cx[REDUCE_GROUP];
  LLVMValueRef v[REDUCE_GROUP];
  if (g == 1) {
    RowAcc a;
    acc_init(L, &a, r->ft, r->op, rd->rlen[rd->nr - 1], term_reduce, r);
    inner_nest(L, r, &a, 0, lw_offset(L, o0, rd->nk, rd->klen, rd->kstride));
    v[0] = acc_result(L, &a);
  } else {
    for (int j = 0; j < g; j++) {
      rows[j] = *r, cx[j] = &rows[j];
      rows[j].off = lw_offset(L, lw_addc(L, o0, j), rd->nk, rd->klen, rd->kstride);
    }
    rows_reduce(L, r->ft, rd->rlen[0], r->op, term_reduce, cx, g, v);
  }
  for (int j = 0; j < g; j++) {
    if (mean) v[j] = lw_fdiv(L, v[j], lw_fc(L, r->ft, (double)per));
    if (r->oepi) { /* the element's epilogue (it stores the reduction when read later) */
      LLVMValueRef o = lw_addc(L, o0, j);
      int64_t last = r->ot->rank ? r->ot->dims[r->ot->rank - 1] : 1;
      LLVMTypeRef vt1 = LLVMVectorType(r->ft, 1);
      LLVMValueRef one = LLVMConstVector((LLVMValueRef[]){LLVMConstInt(L->i1, 1, 0)}, 1);
      LLVMValueRef v1 = LLVMBuildInsertElement(L->b, LLVMGetUndef(vt1), v[j], lw_i32(L, 0), "");
      lw_epilogue_store(r->oepi, lw_divc(L, o, last), lw_remc(L, o, last), one, v1);
      continue;
    }
    /* With an epilogue the sum has a buffer only when something reads it later. */
    if (!r->epi || L->k->anchor_store) lw_store(L, r->ft, lw_out(L), lw_addc(L, o0, j), v[j]);
  }
  for (int j = 0; r->epi && j < g; j++)
    row_epilogue(L, r->epi, lw_addc(L, o0, j), per, epi_splat, &v[j]);
}

/* A block of output columns: lanes of w at column offset col, each its own accumulator. */
typedef struct ColChunk {
  int64_t col;
  unsigned w;
  LLVMValueRef acc;
} ColChunk;

/* acc = op(acc, x row) for every chunk, over the reduced dims from level on. */
static void column_nest(Lower *L, Reduce *r, ColChunk *ch, int nch, int level, LLVMValueRef off) {
  const ReduceDims *rd = r->rd;
  if (level == rd->nr) {
    r->off = off;
    for (int c = 0; c < nch; c++) {
      LLVMValueRef t = term_reduce(L, lw_i64(L, ch[c].col), ch[c].w, r);
      LLVMValueRef acc = lw_get(L, vec_type(r->ft, ch[c].w), ch[c].acc);
      lw_set(L, ch[c].acc, accumulate(L, r->op, acc, t));
    }
    return;
  }
  LwLoop lp;
  LLVMValueRef i = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, rd->rlen[level]));
  column_nest(L, r, ch, nch, level + 1, lw_add(L, off, lw_mulc(L, i, rd->rstride[level])));
  lw_next(L, &lp);
}

/* out[obase + c] for c in [0, cw) over the rows at xbase: whole vectors then
 * narrower ones, accumulated in registers while the reduced dims stream
 * rows of x in order (the order of the interpreter's sums). */
static void reduce_columns(Lower *L, Reduce *r, LLVMValueRef xbase, LLVMValueRef obase, int64_t cw,
                           int64_t per, bool mean) {
  ColChunk ch[REDUCE_BLOCK_VECS + REDUCE_WIDTHS];
  int nch = 0;
  unsigned vw = vec_width(L, r->ft);
  int64_t col = 0;
  for (unsigned w = vw; w >= 1; w /= 2)
    for (; cw - col >= w; col += w) {
      ch[nch].col = col, ch[nch].w = w;
      ch[nch++].acc =
          lw_var(L, vec_type(r->ft, w), vconst(L, r->ft, r->op == ROW_SUM ? 0.0 : -INFINITY, w));
    }
  column_nest(L, r, ch, nch, 0, xbase);
  for (int c = 0; c < nch; c++) {
    LLVMValueRef v = lw_get(L, vec_type(r->ft, ch[c].w), ch[c].acc);
    if (mean) v = lw_fdiv(L, v, vconst(L, r->ft, (double)per, ch[c].w));
    vstore(L, r->ft, lw_out(L), lw_addc(L, obase, ch[c].col), v);
  }
}

/* Innermost dim kept: C contiguous output columns per row of the other kept
 * dims, in blocks of REDUCE_BLOCK_VECS vectors (the last block narrower, and
 * at least two blocks for threads to share); one iteration per (row, block). */
static void reduce_outer(Lower *L, Kernel *k, Reduce *r, int64_t count, int64_t per, bool mean) {
  const ReduceDims *rd = r->rd;
  int64_t c = rd->nk ? rd->klen[rd->nk - 1] : 1;
  int64_t vw = vec_width(L, r->ft), cb = REDUCE_BLOCK_VECS * vw;
  if (cb > c) cb = c;
  /* A single output row (a bias gradient) still splits in two for threads. */
  if (count == c && cb == c && c >= 2 * vw) cb = (c / 2 + vw - 1) / vw * vw;
  int64_t nfull = c / cb, rem = c % cb, nblk = nfull + (rem > 0);
  k->range = count / c * nblk;
  k->min_chunk = chunk_for(per * cb);
  LwLoop outer;
  LLVMValueRef t = lw_outer(L, &outer);
  LLVMValueRef row = lw_divc(L, t, nblk), col = lw_mulc(L, lw_remc(L, t, nblk), cb);
  LLVMValueRef xbase =
      lw_add(L, lw_offset(L, row, rd->nk > 0 ? rd->nk - 1 : 0, rd->klen, rd->kstride), col);
  LLVMValueRef obase = lw_add(L, lw_mulc(L, row, c), col);
  if (rem == 0) {
    reduce_columns(L, r, xbase, obase, cb, per, mean);
  } else {
    LwIf last;
    lw_if(L, &last, LLVMBuildICmp(L->b, LLVMIntEQ, col, lw_i64(L, nfull * cb), ""));
    reduce_columns(L, r, xbase, obase, rem, per, mean);
    lw_else(L, &last);
    reduce_columns(L, r, xbase, obase, cb, per, mean);
    lw_endif(L, &last);
  }
  lw_next(L, &outer);
}

/* torch.sum / mean / amax over axes. The output's layout is the input's with
 * the reduced dims at size 1, whatever keepdim says. With the innermost dim
 * reduced, each output element reduces its rows in vectors; else the output's
 * rows are accumulated a vector block at a time while x streams past row by
 * row, never strided down a column. */
/* A row kernel's input x (args[0]) in rows of d, with the kernel's fused prologue (Kernel.npro)
 * computing each row before it is read: into x's home, or into rows on the stack (pro_stack)
 * when nothing else reads x. */
typedef struct ProRows {
  Epilogue *pro;   /* NULL: no prologue, x read from its home */
  LLVMValueRef xs; /* the stack rows, or NULL */
  int64_t d;
} ProRows;

static ProRows pro_rows_new(Lower *L, Kernel *k, LLVMTypeRef ft, int64_t rows, int64_t d) {
  ProRows pr = {.d = d};
  pr.pro = k->npro ? lw_prologue_new(L, k, (int)vec_width(L, ft)) : NULL;
  pr.xs = k->pro_stack ? lw_stack(L, ft, rows * d) : NULL;
  return pr;
}

/* Row `row` of x, held in stack row `slot` when x is not stored: computed first by the
 * prologue, if any. */
static LLVMValueRef pro_row(Lower *L, const ProRows *pr, LLVMTypeRef ft, LLVMValueRef slot,
                            LLVMValueRef row) {
  LLVMValueRef x = pr->xs ? lw_gep(L, ft, pr->xs, lw_mulc(L, slot, pr->d))
                          : lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, row, pr->d));
  if (pr->pro) lw_prologue_row(pr->pro, row, pr->d, x);
  return x;
}

/* A sum, mean or max, and its dims (rd); false for other ops. */
static bool reduction_dims(const Node *n, ReduceDims *rd) {
  if (n->op != OP_SUM && n->op != OP_MEAN && n->op != OP_MAX) return false;
  reduce_dims(&n->in[0]->type, ir_attr_c(n, "axes"), rd);
  return true;
}

bool llvm_reduce_out_epi(const Node *n) {
  ReduceDims rd;
  if (!reduction_dims(n, &rd)) return false;
  return n->type.dtype == DT_F32 && n->in[0]->type.dtype == DT_F32 && !ir_is_row_sum(n) &&
         rd.inner_reduced;
}

/* A reduction whose output element o reduces the contiguous run [o*per, (o+1)*per) of x
 * (the trailing dims reduced), made of whole rows of x's last dim: a prologue can compute x
 * row by row before the reduction reads the run. */
bool llvm_reduce_runs(const Node *n) {
  ReduceDims rd;
  if (!reduction_dims(n, &rd)) return false;
  const Type *xt = &n->in[0]->type;
  int64_t count = ir_type_numel(&n->type), per = ir_type_numel(xt) / (count ? count : 1);
  int64_t d = xt->rank ? xt->dims[xt->rank - 1] : 1;
  bool runs = rd.inner_reduced && rd.nr == 1 && rd.rstride[0] == 1 &&
              (rd.nk == 0 || (rd.nk == 1 && rd.kstride[0] == per));
  return runs && d >= 1 && per % d == 0;
}

/* With a prologue: the x rows of output elements o0 .. o0 + g - 1 (runs of per); returns the
 * base the reduction reads x from (on the stack: shifted back by o0's offset). */
static LLVMValueRef reduce_prologue(Lower *L, const ProRows *pr, LLVMValueRef o0, int g,
                                    int64_t per) {
  LwLoop lr;
  LLVMValueRef first = lw_mulc(L, o0, per / pr->d);
  LLVMValueRef r = lw_for(L, &lr, first, lw_add(L, first, lw_i64(L, g * per / pr->d)));
  pro_row(L, pr, L->f32, LLVMBuildSub(L->b, r, first, ""), r);
  lw_next(L, &lr);
  if (!pr->xs) return lw_in(L, 0);
  LLVMValueRef back = LLVMBuildNeg(L->b, lw_mulc(L, o0, per), "");
  return LLVMBuildGEP2(L->b, L->f32, pr->xs, &back, 1, "");
}

void lower_reduce(Lower *L, Kernel *k) {
  const Node *n = k->out;
  ReduceDims rd;
  reduce_dims(&n->in[0]->type, ir_attr_c(n, "axes"), &rd);
  Reduce r = {.rd = &rd,
              .ft = lw_elt(L, n->type.dtype),
              .xt = lw_elt(L, n->in[0]->type.dtype),
              .op = n->op == OP_MAX ? ROW_MAX : ROW_SUM,
              .x = lw_in(L, 0)};
  int64_t count = ir_type_numel(&n->type);
  int64_t per = ir_type_numel(&n->in[0]->type) / (count ? count : 1);
  if (!rd.inner_reduced) {
    IR_ASSERT(!k->nepi, "llvm: %s: an epilogue needs the last axis reduced", k->name);
    reduce_outer(L, k, &r, count, per, n->op == OP_MEAN);
    return;
  }
  int g = rd.nr == 1 ? row_group(L, r.ft, count, per, 0) : 1;
  bool out_epi = k->nepi && llvm_reduce_out_epi(n);
  r.epi = k->nepi && !out_epi ? lw_epilogue_new(L, k, (int)vec_width(L, r.ft)) : NULL;
  r.oepi = out_epi ? lw_epilogue_new(L, k, 1) : NULL;
  r.ot = &n->type;
  k->range = count / g;
  k->min_chunk = chunk_for(per * g * (k->nepi + k->npro + 1));
  const Type *xt = &n->in[0]->type;
  int64_t d = xt->rank ? xt->dims[xt->rank - 1] : 1;
  ProRows pr = pro_rows_new(L, k, r.xt, g * per / d, d);
  LwLoop outer;
  LLVMValueRef o0 = lw_mulc(L, lw_outer(L, &outer), g);
  if (pr.pro) r.x = reduce_prologue(L, &pr, o0, g, per);
  reduce_inner(L, &r, o0, g, per, n->op == OP_MEAN);
  lw_next(L, &outer);
  lw_epilogue_free(r.epi);
  lw_epilogue_free(r.oepi);
  lw_epilogue_free(pr.pro);
}

/* ---- softmax, log_softmax ----------------------------------------------- */

/* One row of a softmax-like kernel. */
typedef struct SoftRow {
  LLVMTypeRef ft;
  LLVMValueRef x, y; /* row pointers; y NULL: e^(x - m) is not stored */
  LLVMValueRef m, scale;
  LLVMValueRef dscale; /* cross_entropy_grad: dloss / P */
} SoftRow;

static LLVMValueRef term_x_soft(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  SoftRow *r = cx;
  return vload(L, r->ft, r->x, i, w);
}

/* e^(x - m), stored into y when there is one. */
static LLVMValueRef term_exp(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  SoftRow *r = cx;
  LLVMValueRef e = lw_exp(L, lw_fsub(L, vload(L, r->ft, r->x, i, w), vsplat(L, r->m, w)));
  if (r->y) vstore(L, r->ft, r->y, i, e);
  return e;
}

/* For n rows of d side by side: m = max x and s[r] = sum e^(x - m), e^(x - m)
 * stored into y where set. A NaN in x need not reach m: it makes s NaN, and
 * with it every result, as a NaN m would. */
static void rows_softmax_parts(Lower *L, SoftRow *r, int n, int64_t d, LLVMValueRef *s) {
  void *cx[REDUCE_GROUP];
  LLVMValueRef m[REDUCE_GROUP];
  for (int j = 0; j < n; j++) cx[j] = &r[j];
  rows_reduce(L, r[0].ft, d, ROW_PEAK, term_x_soft, cx, n, m);
  for (int j = 0; j < n; j++) r[j].m = m[j];
  rows_reduce(L, r[0].ft, d, ROW_SUM, term_exp, cx, n, s);
}

static void scale_softmax(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  SoftRow *r = cx;
  vstore(L, r->ft, r->y, i, lw_fmul(L, vload(L, r->ft, r->y, i, w), vsplat(L, r->scale, w)));
}

static void scale_log_softmax(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  SoftRow *r = cx;
  LLVMValueRef d = lw_fsub(L, vload(L, r->ft, r->x, i, w), vsplat(L, r->m, w));
  vstore(L, r->ft, r->y, i, lw_fsub(L, d, vsplat(L, r->scale, w)));
}

/* Lines along a non-innermost axis (x viewed as [outer, len, inner]), one
 * element at a time. */
static void softmax_strided(Lower *L, Kernel *k, int64_t len, int64_t inner) {
  const Node *n = k->out;
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
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

/* Each line along the axis (x viewed as [outer, len, inner]):
 *   m = max x;  s = sum e^(x - m);
 *   softmax = e^(x - m) / s;  log_softmax = (x - m) - log s.
 * Lines in parallel; along the innermost axis, three vector passes over
 * rows in L1, a few short rows side by side. */
void lower_softmax(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *t = &n->type;
  int64_t axis = ir_attr_int(n, "axis"), outer_n = 1, len = t->dims[axis], inner = 1;
  for (int d = 0; d < axis; d++) outer_n *= t->dims[d];
  for (int d = (int)axis + 1; d < t->rank; d++) inner *= t->dims[d];
  k->range = outer_n * inner;
  k->min_chunk = chunk_for(len * 20);
  if (inner > 1) {
    softmax_strided(L, k, len, inner);
    return;
  }
  bool soft = n->op == OP_SOFTMAX;
  LLVMTypeRef ft = lw_elt(L, t->dtype);
  int g = row_group(L, ft, outer_n, len, 0);
  k->range = outer_n / g;
  k->min_chunk = chunk_for(len * g * 20);
  SoftRow r[REDUCE_GROUP];
  void *cx[REDUCE_GROUP];
  LLVMValueRef s[REDUCE_GROUP], y[REDUCE_GROUP];
  ProRows pr = pro_rows_new(L, k, ft, g, len);
  LwLoop outer;
  LLVMValueRef row0 = lw_mulc(L, lw_outer(L, &outer), g);
  for (int j = 0; j < g; j++) {
    LLVMValueRef off = lw_mulc(L, lw_addc(L, row0, j), len);
    r[j] = (SoftRow){.ft = ft, .x = pro_row(L, &pr, ft, lw_i64(L, j), lw_addc(L, row0, j))};
    y[j] = lw_gep(L, ft, lw_out(L), off);
    r[j].y = soft ? y[j] : NULL;
    cx[j] = &r[j];
  }
  rows_softmax_parts(L, r, g, len, s);
  for (int j = 0; j < g; j++) {
    r[j].y = y[j];
    r[j].scale = soft ? lw_fdiv(L, lw_fc(L, ft, 1.0), s[j]) : lw_log(L, s[j]);
  }
  rows_loop(L, vec_width(L, ft), len, soft ? scale_softmax : scale_log_softmax, cx, g);
  lw_next(L, &outer);
  lw_epilogue_free(pr.pro);
}

/* ---- layer_norm and its gradient ---------------------------------------- */

typedef struct NormRow {
  LLVMTypeRef ft;
  LLVMValueRef x, dy, out, gamma, beta; /* row pointers (gamma, beta: the whole vectors) */
  LLVMValueRef mean, rstd, mg, mgx;
  LLVMValueRef row; /* the row's index */
  Epilogue *epi;    /* the kernel's fused epilogue, or NULL */
} NormRow;

/* Stores a row's output vector v (w lanes at i): with an epilogue, v widened
 * to its vectors (the lanes past w masked off) goes through the chain. */
static void norm_store(Lower *L, NormRow *r, LLVMValueRef i, unsigned w, LLVMValueRef v) {
  if (!r->epi) {
    vstore(L, r->ft, r->out, i, v);
    return;
  }
  unsigned vl = vec_width(L, r->ft);
  LLVMValueRef lanes[64], bits[64];
  for (unsigned l = 0; l < vl; l++) {
    lanes[l] = lw_i32(L, (int32_t)(l < w ? l : w));
    bits[l] = LLVMConstInt(LLVMInt1TypeInContext(L->ctx), l < w, false);
  }
  if (w == 1) v = vsplat(L, v, 2);
  if (w < vl) v = LLVMBuildShuffleVector(L->b, v, v, LLVMConstVector(lanes, vl), "");
  /* Rounded as if stored: no multiply-add contracted across into the chain. */
  LLVMTypeRef vt = LLVMTypeOf(v);
  const char *fence = "llvm.arithmetic.fence";
  unsigned id = LLVMLookupIntrinsicID(fence, strlen(fence));
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(L->mod, id, &vt, 1);
  v = LLVMBuildCall2(L->b, LLVMIntrinsicGetType(L->ctx, id, &vt, 1), f, &v, 1, "");
  lw_epilogue_store(r->epi, r->row, i, LLVMConstVector(bits, vl), v);
}

static LLVMValueRef term_x(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  NormRow *r = cx;
  return vload(L, r->ft, r->x, i, w);
}
static LLVMValueRef term_dev2(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  NormRow *r = cx;
  LLVMValueRef d = lw_fsub(L, vload(L, r->ft, r->x, i, w), vsplat(L, r->mean, w));
  return lw_fmul(L, d, d);
}
/* xhat = (x - mean) rstd */
static LLVMValueRef xhat_at(Lower *L, NormRow *r, LLVMValueRef i, unsigned w) {
  LLVMValueRef d = lw_fsub(L, vload(L, r->ft, r->x, i, w), vsplat(L, r->mean, w));
  return lw_fmul(L, d, vsplat(L, r->rstd, w));
}
/* g = dy gamma */
static LLVMValueRef term_g(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  NormRow *r = cx;
  return lw_fmul(L, vload(L, r->ft, r->dy, i, w), vload(L, r->ft, r->gamma, i, w));
}
static LLVMValueRef term_gx(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  return lw_fmul(L, term_g(L, i, w, cx), xhat_at(L, cx, i, w));
}

/* Sets the n rows' mean and rstd = 1 / sqrt(var + eps) (biased variance). */
static void norm_stats(Lower *L, NormRow *r, void **cx, int n, int64_t d, double eps) {
  LLVMTypeRef ft = r[0].ft;
  LLVMValueRef dn = lw_fc(L, ft, (double)d), v[REDUCE_GROUP];
  rows_reduce(L, ft, d, ROW_SUM, term_x, cx, n, v);
  for (int j = 0; j < n; j++) r[j].mean = lw_fdiv(L, v[j], dn);
  rows_reduce(L, ft, d, ROW_SUM, term_dev2, cx, n, v);
  for (int j = 0; j < n; j++) {
    LLVMValueRef var = lw_fdiv(L, v[j], dn);
    r[j].rstd = lw_fdiv(L, lw_fc(L, ft, 1.0), lw_sqrt(L, lw_fadd(L, var, lw_fc(L, ft, eps))));
  }
}

/* y = xhat gamma + beta */
static void norm_out(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  NormRow *r = cx;
  LLVMValueRef y = lw_fadd(L, lw_fmul(L, xhat_at(L, r, i, w), vload(L, r->ft, r->gamma, i, w)),
                           vload(L, r->ft, r->beta, i, w));
  norm_store(L, r, i, w, y);
}

/* The kernel's rows row0 .. row0 + n - 1 of d: x (pro_row: computed first by a prologue, if
 * any), dy and out row pointers. */
static void norm_rows(Lower *L, NormRow *r, void **cx, int n, LLVMValueRef row0, int64_t d,
                      bool grad, const ProRows *pr) {
  for (int j = 0; j < n; j++) {
    r[j] = r[0];
    r[j].row = lw_addc(L, row0, j);
    LLVMValueRef off = lw_mulc(L, r[j].row, d);
    r[j].x = pro_row(L, pr, r[0].ft, lw_i64(L, j), r[j].row);
    r[j].dy = grad ? lw_gep(L, r[0].ft, lw_in(L, 2), off) : NULL;
    r[j].out = lw_gep(L, r[0].ft, lw_out(L), off);
    cx[j] = &r[j];
  }
}

/* F.layer_norm over the last dim: y = (x - mean) rstd gamma + beta. Rows in
 * parallel, three vector passes over each, a few short rows side by side. */
void lower_layer_norm(Lower *L, Kernel *k) {
  const Type *t = &k->out->type;
  int64_t d = t->dims[t->rank - 1], rows = ir_type_numel(t) / d;
  NormRow r[REDUCE_GROUP] = {
      {.ft = lw_elt(L, t->dtype), .gamma = lw_in(L, 1), .beta = lw_in(L, 2)}};
  r[0].epi = k->nepi ? lw_epilogue_new(L, k, (int)vec_width(L, r[0].ft)) : NULL;
  void *cx[REDUCE_GROUP];
  int g = row_group(L, r[0].ft, rows, d, 2);
  k->range = rows / g;
  k->min_chunk = chunk_for(d * g * (4 + k->npro));
  ProRows pr = pro_rows_new(L, k, r[0].ft, g, d);
  LwLoop outer;
  norm_rows(L, r, cx, g, lw_mulc(L, lw_outer(L, &outer), g), d, false, &pr);
  norm_stats(L, r, cx, g, d, ir_attr_float(k->out, "eps"));
  rows_loop(L, vec_width(L, r[0].ft), d, norm_out, cx, g);
  lw_next(L, &outer);
  lw_epilogue_free(r[0].epi);
  lw_epilogue_free(pr.pro);
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)) */
static void norm_grad_out(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  NormRow *r = cx;
  LLVMValueRef v = lw_fsub(L, term_g(L, i, w, r), vsplat(L, r->mg, w));
  v = lw_fsub(L, v, lw_fmul(L, xhat_at(L, r, i, w), vsplat(L, r->mgx, w)));
  norm_store(L, r, i, w, lw_fmul(L, vsplat(L, r->rstd, w), v));
}

/* layer_norm_grad(x, gamma, dy), g = dy gamma:
 *   dx = rstd (g - mean(g) - xhat mean(g xhat)). */
void lower_layer_norm_grad(Lower *L, Kernel *k) {
  const Type *t = &k->out->type;
  int64_t d = t->dims[t->rank - 1], rows = ir_type_numel(t) / d;
  NormRow r[REDUCE_GROUP] = {{.ft = lw_elt(L, t->dtype), .gamma = lw_in(L, 1)}};
  r[0].epi = k->nepi ? lw_epilogue_new(L, k, (int)vec_width(L, r[0].ft)) : NULL;
  void *cx[REDUCE_GROUP];
  LLVMTypeRef ft = r[0].ft;
  int g = row_group(L, ft, rows, d, 1);
  k->range = rows / g;
  k->min_chunk = chunk_for(d * g * 8);
  LwLoop outer;
  const ProRows x = {.d = d}; /* layer_norm_grad takes no prologue: x from its home */
  norm_rows(L, r, cx, g, lw_mulc(L, lw_outer(L, &outer), g), d, true, &x);
  norm_stats(L, r, cx, g, d, ir_attr_float(k->out, "eps"));
  LLVMValueRef dn = lw_fc(L, ft, (double)d), v[REDUCE_GROUP];
  rows_reduce(L, ft, d, ROW_SUM, term_g, cx, g, v);
  for (int j = 0; j < g; j++) r[j].mg = lw_fdiv(L, v[j], dn);
  rows_reduce(L, ft, d, ROW_SUM, term_gx, cx, g, v);
  for (int j = 0; j < g; j++) r[j].mgx = lw_fdiv(L, v[j], dn);
  rows_loop(L, vec_width(L, ft), d, norm_grad_out, cx, g);
  lw_next(L, &outer);
  lw_epilogue_free(r[0].epi);
}

/* ---- cross_entropy and its gradient ------------------------------------- */

/* labels[p] (argument 1) as i64, and whether it lies outside [0, limit). */
static LLVMValueRef load_label(Lower *L, LLVMValueRef p, int64_t limit, LLVMValueRef *bad) {
  return lw_load_index(L, 1, p, limit, bad);
}

static LLVMValueRef ext(Lower *L, LLVMValueRef x) { return lw_fconv(L, x, L->f64); }

/* F.cross_entropy (mean), class-last: sum_p (m_p - x[p, y_p] + log s_p) / P,
 * the rows in order, summed in double. A label outside [0, C) sets
 * KILN_ERR_RANGE and its row is skipped. */
void lower_cross_entropy(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *lt = &n->in[0]->type;
  SoftRow r = {.ft = lw_elt(L, lt->dtype)};
  int64_t c = lt->dims[lt->rank - 1], rows = ir_type_numel(&n->in[1]->type);
  k->range = 1;
  k->min_chunk = 1;
  LwLoop outer, lp;
  LwIf cond;
  ProRows pr = pro_rows_new(L, k, r.ft, 1, c);
  lw_outer(L, &outer);
  LLVMValueRef sum = lw_var(L, L->f64, lw_fc(L, L->f64, 0.0));
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, rows)), bad, s;
  r.x = pro_row(L, &pr, r.ft, lw_i64(L, 0), p);
  LLVMValueRef y = load_label(L, p, c, &bad);
  lw_if(L, &cond, bad);
  lw_range_error(L);
  lw_else(L, &cond);
  rows_softmax_parts(L, &r, 1, c, &s);
  LLVMValueRef term = LLVMBuildFSub(L->b, ext(L, r.m), ext(L, lw_load(L, r.ft, r.x, y)), "");
  term = LLVMBuildFAdd(L->b, term, ext(L, lw_log(L, s)), "");
  lw_set(L, sum, LLVMBuildFAdd(L->b, lw_get(L, L->f64, sum), term, ""));
  lw_endif(L, &cond);
  lw_next(L, &lp);
  LLVMValueRef mean = lw_fdiv(L, lw_get(L, L->f64, sum), lw_fc(L, L->f64, (double)rows));
  lw_store(L, r.ft, lw_out(L), lw_i64(L, 0), lw_fconv(L, mean, r.ft));
  lw_next(L, &outer);
  lw_epilogue_free(pr.pro);
}

/* dz = e^(x - m) / s dloss / P (the label's own element fixed after). */
static void scale_ce(Lower *L, LLVMValueRef i, unsigned w, void *cx) {
  SoftRow *r = cx;
  LLVMValueRef sm = lw_fmul(L, vload(L, r->ft, r->y, i, w), vsplat(L, r->scale, w));
  vstore(L, r->ft, r->y, i, lw_fmul(L, sm, vsplat(L, r->dscale, w)));
}

/* cross_entropy_grad(logits, labels, dloss):
 * dz[p, c] = (softmax(z[p])[c] - [c == y_p]) dloss / P. Rows in parallel. */
void lower_cross_entropy_grad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *lt = &n->in[0]->type;
  SoftRow r = {.ft = lw_elt(L, lt->dtype)};
  int64_t c = lt->dims[lt->rank - 1], rows = ir_type_numel(&n->in[1]->type);
  k->range = rows;
  k->min_chunk = chunk_for(c * 20);
  LwLoop outer;
  LwIf cond;
  LLVMValueRef p = lw_outer(L, &outer), bad, s;
  LLVMValueRef y = load_label(L, p, c, &bad);
  r.y = lw_gep(L, r.ft, lw_out(L), lw_mulc(L, p, c));
  lw_if(L, &cond, bad);
  lw_range_error(L);
  lw_zero(L, r.y, lw_i64(L, c * (int64_t)ir_dtype_size(lt->dtype)));
  lw_else(L, &cond);
  r.x = lw_gep(L, r.ft, lw_in(L, 0), lw_mulc(L, p, c));
  rows_softmax_parts(L, &r, 1, c, &s);
  LLVMValueRef ey = lw_load(L, r.ft, r.y, y);
  r.dscale = lw_fdiv(L, lw_load(L, r.ft, lw_in(L, 2), lw_i64(L, 0)), lw_fc(L, r.ft, (double)rows));
  r.scale = lw_fdiv(L, lw_fc(L, r.ft, 1.0), s);
  row_loop(L, vec_width(L, r.ft), lw_i64(L, 0), c, scale_ce, &r);
  LLVMValueRef sm = lw_fsub(L, lw_fmul(L, ey, r.scale), lw_fc(L, r.ft, 1.0));
  lw_store(L, r.ft, r.y, y, lw_fmul(L, sm, r.dscale));
  lw_endif(L, &cond);
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

/* 2x2 windows at stride 2 (f32) go VL output columns at a time: each window row of 2 VL
 * inputs is one masked load, split into its even and odd columns by shuffles, and a
 * gradient's two columns are merged back the same way. Other windows: scalar loops. */
static bool pool_by_vectors(Lower *L, const PoolDims *pd, LLVMTypeRef ft) {
  return ft == L->f32 && pd->k == 2 && pd->s == 2;
}

/* Lanes from, from + 2, ... of v: vl of them. */
static LLVMValueRef every_other(Lower *L, LLVMValueRef v, unsigned vl, unsigned from) {
  LLVMValueRef idx[32];
  for (unsigned l = 0; l < vl; l++) idx[l] = lw_i32(L, (int32_t)(from + 2 * l));
  return LLVMBuildShuffleVector(L->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(idx, vl),
                                "");
}

/* The 2x2 windows of vl output columns whose first window row starts at x[at] (rows w
 * apart): e[2i + j] holds element (i, j) of each window; lanes at or past `left` (output
 * columns) are 0 and nothing past them is read. */
static void window_vecs(Lower *L, LLVMValueRef x, LLVMValueRef at, int64_t w, LLVMValueRef left,
                        unsigned vl, LLVMValueRef e[4]) {
  LLVMValueRef in = lw_gemm_lanes_below(L, (int)(2 * vl), lw_mulc(L, left, 2));
  for (int i = 0; i < 2; i++) {
    LLVMValueRef row =
        lw_gemm_load_masked(L, (int)(2 * vl), lw_gep(L, L->f32, x, lw_addc(L, at, i * w)), in);
    e[2 * i] = every_other(L, row, vl, 0);
    e[2 * i + 1] = every_other(L, row, vl, 1);
  }
}

static void pool2d_vectors(Lower *L, Kernel *k, const PoolDims *pd, bool is_max) {
  unsigned vl = vec_width(L, L->f32);
  k->range = pd->planes * pd->ho;
  k->min_chunk = chunk_for(pd->wo * 4);
  LwLoop outer, lv;
  LLVMValueRef r = lw_outer(L, &outer);
  LLVMValueRef p = lw_divc(L, r, pd->ho), oh = lw_remc(L, r, pd->ho);
  LLVMValueRef row0 = lw_add(L, lw_mulc(L, p, pd->h * pd->w), lw_mulc(L, oh, 2 * pd->w));
  int64_t nv = (pd->wo + vl - 1) / vl;
  LLVMValueRef ow0 = lw_mulc(L, lw_for(L, &lv, lw_i64(L, 0), lw_i64(L, nv)), vl);
  LLVMValueRef left = LLVMBuildSub(L->b, lw_i64(L, pd->wo), ow0, ""), e[4];
  window_vecs(L, lw_in(L, 0), lw_add(L, row0, lw_mulc(L, ow0, 2)), pd->w, left, vl, e);
  LLVMValueRef acc = is_max ? e[0] : lw_fadd(L, vconst(L, L->f32, 0.0, vl), e[0]);
  for (int i = 1; i < 4; i++) acc = is_max ? lw_max_step(L, acc, e[i]) : lw_fadd(L, acc, e[i]);
  if (!is_max) acc = lw_fdiv(L, acc, vconst(L, L->f32, 4.0, vl));
  lw_gemm_store_masked(L, acc, lw_gep(L, L->f32, lw_out(L), lw_add(L, lw_mulc(L, r, pd->wo), ow0)),
                       lw_gemm_lanes_below(L, (int)vl, left));
  lw_next(L, &lv);
  lw_next(L, &outer);
}

/* F.max_pool2d / F.avg_pool2d (no padding): out[p,oh,ow] = max or mean of
 * the k x k window at x[p, oh*s, ow*s]; max keeps the first maximum, NaN
 * wins. Rows of the output in parallel. */
void lower_pool2d(Lower *L, Kernel *k) {
  const Node *n = k->out;
  PoolDims pd = pool_dims(n, &n->in[0]->type, &n->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  bool is_max = n->op == OP_MAX_POOL2D;
  if (pool_by_vectors(L, &pd, ft)) {
    pool2d_vectors(L, k, &pd, is_max);
    return;
  }
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

/* A pooling gradient with a fused epilogue accumulates each dx plane in a stack buffer of at
 * most this many floats (64 KiB; 112 x 112 planes fit), then hands it to the epilogue. */
#define POOL_PLANE_MAX 16384

bool llvm_pool_grad_epilogue(const Node *n) {
  const Type *t = &n->type;
  return (n->op == OP_MAX_POOL2D_GRAD || n->op == OP_AVG_POOL2D_GRAD) && t->dtype == DT_F32 &&
         t->rank == 4 && t->dims[2] * t->dims[3] <= POOL_PLANE_MAX;
}

/* The windows of a pooling gradient: one dx plane per iteration (so overlapping windows of
 * a plane accumulate in one thread), zeroed first: the plane p's elements in the output, or
 * with an epilogue a stack buffer (rounded up to whole vectors) that pool_windows_end hands
 * over vector by vector while it is in L1, so the gradient itself is stored only when
 * something reads it (the relu mask's product is what the backward needs). Then every
 * output position, with start its window's first element in the plane and dyat its dy
 * element. pool_windows_end closes the loops. */
typedef struct PoolWindows {
  LwLoop outer, loh, low;
  LLVMValueRef p, plane; /* the plane, and the index of its first element in x and dx */
  LLVMValueRef dx;       /* the plane's first dx element (in the output or on the stack) */
  LLVMValueRef start, dyat;
  LLVMValueRef left; /* by vectors: the output columns from this window on */
  unsigned vl;       /* by vectors (pool_by_vectors): output columns per step; else 0 */
  int64_t hw;
  Epilogue *epi;
} PoolWindows;

static void pool_windows_begin(Lower *L, Kernel *k, const PoolDims *pd, PoolWindows *pw) {
  const Node *n = k->out;
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  unsigned vl = vec_width(L, L->f32);
  pw->hw = pd->h * pd->w;
  pw->vl = pool_by_vectors(L, pd, ft) ? vl : 0;
  pw->epi = k->nepi ? lw_epilogue_new(L, k, (int)vl) : NULL;
  int64_t epi_work = pw->epi ? pw->hw * (lw_epilogue_cost(pw->epi) + 1) : 0;
  k->range = pd->planes;
  k->min_chunk = chunk_for(pd->ho * pd->wo * pd->k * pd->k + epi_work);
  int64_t len = pw->epi ? (pw->hw + vl - 1) / vl * vl : pw->hw;
  LLVMValueRef stack = pw->epi ? lw_stack(L, ft, len) : NULL;
  pw->p = lw_outer(L, &pw->outer);
  pw->plane = lw_mulc(L, pw->p, pw->hw);
  pw->dx = stack ? stack : lw_gep(L, ft, lw_out(L), pw->plane);
  /* By vectors every dx element of the windows is stored, so only what no window covers
   * (rows and columns left over, the stack buffer's tail) needs zeros first. */
  bool covered = pw->vl && pd->h == 2 * pd->ho && pd->w == 2 * pd->wo && len == pw->hw;
  if (!covered) lw_zero(L, pw->dx, lw_i64(L, len * (int64_t)ir_dtype_size(n->type.dtype)));
  LLVMValueRef oh = lw_for(L, &pw->loh, lw_i64(L, 0), lw_i64(L, pd->ho)), ow;
  if (pw->vl) {
    int64_t nv = (pd->wo + vl - 1) / vl;
    ow = lw_mulc(L, lw_for(L, &pw->low, lw_i64(L, 0), lw_i64(L, nv)), vl);
    pw->left = LLVMBuildSub(L->b, lw_i64(L, pd->wo), ow, "");
  } else {
    ow = lw_for(L, &pw->low, lw_i64(L, 0), lw_i64(L, pd->wo));
  }
  pw->start = lw_add(L, lw_mulc(L, oh, pd->s * pd->w), lw_mulc(L, ow, pd->s));
  pw->dyat = lw_add(L, lw_mulc(L, pw->p, pd->ho * pd->wo), lw_add(L, lw_mulc(L, oh, pd->wo), ow));
}

/* By vectors: the windows' gradients g[2i + j] (element (i, j) of each window, 0 added as
 * the scalar loops add to a zeroed dx) stored into dx, window row by window row. */
static void pool_store_windows(Lower *L, const PoolDims *pd, PoolWindows *pw, LLVMValueRef g[4]) {
  LLVMValueRef in = lw_gemm_lanes_below(L, (int)(2 * pw->vl), lw_mulc(L, pw->left, 2));
  LLVMValueRef zero = vconst(L, L->f32, 0.0, pw->vl);
  for (int i = 0; i < 2; i++) {
    LLVMValueRef row =
        lw_gemm_interleave(L, lw_fadd(L, zero, g[2 * i]), lw_fadd(L, zero, g[2 * i + 1]));
    lw_gemm_store_masked(L, row, lw_gep(L, L->f32, pw->dx, lw_addc(L, pw->start, i * pd->w)), in);
  }
}

/* By vectors: the vl dy elements of the windows. */
static LLVMValueRef pool_dy(Lower *L, PoolWindows *pw, LLVMValueRef dy) {
  return lw_gemm_load_masked(L, (int)pw->vl, lw_gep(L, L->f32, dy, pw->dyat),
                             lw_gemm_lanes_below(L, (int)pw->vl, pw->left));
}

/* The plane's final dx at [j0, j0 + vl), from the stack buffer. */
static LLVMValueRef epi_plane(Lower *L, LLVMValueRef j0, unsigned vl, void *cx) {
  return vload(L, L->f32, ((PoolWindows *)cx)->dx, j0, vl);
}

static void pool_windows_end(Lower *L, PoolWindows *pw) {
  lw_next(L, &pw->low);
  lw_next(L, &pw->loh);
  if (pw->epi) row_epilogue(L, pw->epi, pw->p, pw->hw, epi_plane, pw);
  lw_next(L, &pw->outer);
  lw_epilogue_free(pw->epi);
}

/* dx[at] += g in the plane. */
static void pool_add(Lower *L, LLVMTypeRef ft, PoolWindows *pw, LLVMValueRef at, LLVMValueRef g) {
  lw_store(L, ft, pw->dx, at, lw_fadd(L, lw_load(L, ft, pw->dx, at), g));
}

/* max_pool2d_grad(x, dy): dx = 0, then each dy goes to its window's first
 * maximum (the last NaN, if any). */
void lower_max_pool2d_grad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  PoolDims pd = pool_dims(n, &n->in[0]->type, &n->in[1]->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  PoolWindows pw;
  pool_windows_begin(L, k, &pd, &pw);
  LwLoop li, lj;
  LLVMValueRef x = lw_gep(L, ft, lw_in(L, 0), pw.plane);
  if (pw.vl) { /* the same first maximum (or last NaN), lane by lane */
    LLVMValueRef e[4], g[4];
    window_vecs(L, x, pw.start, pd.w, pw.left, pw.vl, e);
    LLVMTypeRef it = LLVMVectorType(L->i32, pw.vl);
    LLVMValueRef mv = e[0], at = LLVMConstNull(it);
    for (int i = 1; i < 4; i++) {
      LLVMValueRef take =
          LLVMBuildOr(L->b, lw_fcmp(L, LLVMRealOGT, e[i], mv), lw_isnan(L, e[i]), "");
      mv = lw_select(L, take, e[i], mv);
      at = lw_select(L, take, lw_gemm_splat(L, it, lw_i32(L, i)), at);
    }
    LLVMValueRef dy = pool_dy(L, &pw, lw_in(L, 1)), zero = vconst(L, L->f32, 0.0, pw.vl);
    for (int i = 0; i < 4; i++)
      g[i] = lw_select(
          L, LLVMBuildICmp(L->b, LLVMIntEQ, at, lw_gemm_splat(L, it, lw_i32(L, i)), ""), dy, zero);
    pool_store_windows(L, &pd, &pw, g);
    pool_windows_end(L, &pw);
    return;
  }
  LLVMValueRef m = lw_var(L, ft, lw_load(L, ft, x, pw.start));
  LLVMValueRef at = lw_var(L, L->i64, lw_i64(L, 0));
  LLVMValueRef i = lw_for(L, &li, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef off = lw_add(L, lw_mulc(L, i, pd.w), j);
  LLVMValueRef v = lw_load(L, ft, x, lw_add(L, pw.start, off));
  LLVMValueRef mv = lw_get(L, ft, m);
  LLVMValueRef take = LLVMBuildOr(L->b, lw_fcmp(L, LLVMRealOGT, v, mv), lw_isnan(L, v), "");
  lw_set(L, m, lw_select(L, take, v, mv));
  lw_set(L, at, lw_select(L, take, off, lw_get(L, L->i64, at)));
  lw_next(L, &lj);
  lw_next(L, &li);
  LLVMValueRef g = lw_load(L, ft, lw_in(L, 1), pw.dyat);
  pool_add(L, ft, &pw, lw_add(L, pw.start, lw_get(L, L->i64, at)), g);
  pool_windows_end(L, &pw);
}

/* avg_pool2d_grad(dy): dx = 0, then dx[window] += dy / k^2. */
void lower_avg_pool2d_grad(Lower *L, Kernel *k) {
  const Node *n = k->out;
  PoolDims pd = pool_dims(n, &n->type, &n->in[0]->type);
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  PoolWindows pw;
  pool_windows_begin(L, k, &pd, &pw);
  LwLoop li, lj;
  if (pw.vl) {
    LLVMValueRef q = lw_fdiv(L, pool_dy(L, &pw, lw_in(L, 0)), vconst(L, L->f32, 4.0, pw.vl));
    LLVMValueRef g[4] = {q, q, q, q};
    pool_store_windows(L, &pd, &pw, g);
    pool_windows_end(L, &pw);
    return;
  }
  LLVMValueRef g =
      lw_fdiv(L, lw_load(L, ft, lw_in(L, 0), pw.dyat), lw_fc(L, ft, (double)(pd.k * pd.k)));
  LLVMValueRef i = lw_for(L, &li, lw_i64(L, 0), lw_i64(L, pd.k));
  LLVMValueRef j = lw_for(L, &lj, lw_i64(L, 0), lw_i64(L, pd.k));
  pool_add(L, ft, &pw, lw_add(L, pw.start, lw_add(L, lw_mulc(L, i, pd.w), j)), g);
  lw_next(L, &lj);
  lw_next(L, &li);
  pool_windows_end(L, &pw);
}
