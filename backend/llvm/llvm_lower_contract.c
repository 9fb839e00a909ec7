/* llvm_lower_contract.c - contraction kernels: batched matmul, conv2d and its gradients. */
#include "llvm_gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
static void lower_matmul_loops(Lower *L, Kernel *k) {
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
  LLVMValueRef aoff =
      lw_add(L, lw_mulc(L, lw_offset(L, t, ot->rank - 2, ot->dims, sa), m * kk), lw_mulc(L, i, kk));
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
  ConvDims c = {x->dims[0],
                x->dims[1],
                x->dims[2],
                x->dims[3],
                w->dims[0],
                w->dims[2],
                w->dims[3],
                y->dims[2],
                y->dims[3],
                ir_attr_int(n, "stride"),
                ir_attr_int(n, "padding")};
  return c;
}

/* One tap of a plane pair, for every (oh, ow) whose input is inside:
 * dst[oh*Wo + ow] += wv src[ih*W + iw] (forward, scatter = false) or
 * dst[ih*W + iw] += wv src[oh*Wo + ow] (the input gradient, scatter = true),
 * ih = oh*s - p + kh, iw = ow*s - p + kw. */
static void conv_tap(Lower *L, const ConvDims *c, LLVMTypeRef ft, LLVMValueRef dst,
                     LLVMValueRef src, LLVMValueRef wv, LLVMValueRef kh, LLVMValueRef kw,
                     bool scatter) {
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
static void lower_conv2d_loops(Lower *L, Kernel *k) {
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
  LLVMValueRef xp =
      lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.ci), ci), c.h * c.w));
  LLVMValueRef wbase = lw_mulc(L, lw_add(L, lw_mulc(L, co, c.ci), ci), c.kh * c.kw);
  LLVMValueRef kh = lw_for(L, &lkh, lw_i64(L, 0), lw_i64(L, c.kh));
  LLVMValueRef kw = lw_for(L, &lkw, lw_i64(L, 0), lw_i64(L, c.kw));
  LLVMValueRef wv =
      lw_load(L, ft, lw_in(L, 1), lw_add(L, wbase, lw_add(L, lw_mulc(L, kh, c.kw), kw)));
  conv_tap(L, &c, ft, plane, xp, wv, kh, kw, false);
  lw_next(L, &lkw);
  lw_next(L, &lkh);
  lw_next(L, &lci);
  lw_next(L, &outer);
}

/* conv2d_grad_input(dy, w): dx[n,ci,ih,iw] += w[co,ci,kh,kw] dy[n,co,oh,ow]
 * over every tap that reads it. One dx plane per iteration, so no two
 * threads write one element. */
static void lower_conv2d_grad_input_loops(Lower *L, Kernel *k) {
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
  LLVMValueRef dyp =
      lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.co), co), c.ho * c.wo));
  LLVMValueRef wbase = lw_mulc(L, lw_add(L, lw_mulc(L, co, c.ci), ci), c.kh * c.kw);
  LLVMValueRef kh = lw_for(L, &lkh, lw_i64(L, 0), lw_i64(L, c.kh));
  LLVMValueRef kw = lw_for(L, &lkw, lw_i64(L, 0), lw_i64(L, c.kw));
  LLVMValueRef wv =
      lw_load(L, ft, lw_in(L, 1), lw_add(L, wbase, lw_add(L, lw_mulc(L, kh, c.kw), kw)));
  conv_tap(L, &c, ft, plane, dyp, wv, kh, kw, true);
  lw_next(L, &lkw);
  lw_next(L, &lkh);
  lw_next(L, &lco);
  lw_next(L, &outer);
}

/* conv2d_grad_weight(x, dy): dw[co,ci,kh,kw] = sum_{n,oh,ow} dy[n,co,oh,ow]
 * x[n,ci,oh*s-p+kh,ow*s-p+kw]. One weight per iteration. */
static void lower_conv2d_grad_weight_loops(Lower *L, Kernel *k) {
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
  LLVMValueRef dyp =
      lw_gep(L, ft, lw_in(L, 1), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.co), co), c.ho * c.wo));
  LLVMValueRef xp =
      lw_gep(L, ft, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, b, c.ci), ci), c.h * c.w));
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

/* ---- GEMM-based lowerings (llvm_gemm.c) --------------------------------- */

/* lw_gemm, with the kernel's fused epilogue (k->nepi) if it has one. */
static void gemm_with_epilogue(Lower *L, Kernel *k, GemmOps *g) {
  g->epi = k->nepi ? lw_epilogue_new(L, k, L->avx512 ? 16 : 8) : NULL;
  lw_gemm(L, k, g);
  lw_epilogue_free(g->epi);
}

/* An operand [..., r, c] as the GEMM reads it: element strides of the
 * output's batch dims (0 where broadcast), then its rows and columns through
 * the operand's view (llvm_view.c; one atom each unless a reshape split them). */
typedef struct Strided {
  int64_t batch[IR_MAX_RANK];
  View v;
} Strided;

typedef struct MatmulOps {
  const Type *ot;
  Strided a, b;
} MatmulOps;

/* Operand t (read through view when it is an inline view of args[i]) as the
 * output ot's batch broadcasts it; false when a batch dim is split. */
static bool strided_of(const Type *t, const Node *view, const Type *ot, Strided *st) {
  memset(st, 0, sizeof *st);
  if (view) {
    if (!llvm_view_of(view, &st->v)) return false;
  } else {
    llvm_view_plain(t, &st->v);
  }
  int ir = t->rank - 2, orank = ot->rank - 2;
  for (int d = 0; d < orank; d++) {
    int k = ir - orank + d;
    int64_t s = 0;
    if (k >= 0 && !llvm_view_single(&st->v, k, &s)) return false;
    st->batch[d] = k >= 0 && t->dims[k] != 1 ? s : 0;
  }
  return true;
}

bool llvm_matmul_view_ok(const Node *n, int i) {
  Strided st;
  return strided_of(&n->in[i]->type, n->in[i], &n->type, &st);
}

/* One atom of stride 1: a transposed A's rows or B's columns are adjacent floats. */
static bool unit_stride(const View *v, int d) {
  int64_t s;
  return llvm_view_single(v, d, &s) && s == 1;
}

static LLVMValueRef strided_at(Lower *L, const MatmulOps *mo, const Strided *st, LLVMValueRef t,
                               LLVMValueRef r, LLVMValueRef c) {
  int rank = st->v.rank;
  LLVMValueRef off = lw_offset(L, t, mo->ot->rank - 2, mo->ot->dims, st->batch);
  off = lw_addc(L, off, st->v.offset);
  return lw_add(
      L, off,
      lw_add(L, lw_view_digit(L, &st->v, rank - 2, r), lw_view_digit(L, &st->v, rank - 1, c)));
}

static LLVMValueRef matmul_map_a(Lower *L, const GemmOps *g, LLVMValueRef x) {
  return lw_view_maps(L, &((const MatmulOps *)g->user)->a.v, x);
}
static LLVMValueRef matmul_map_b(Lower *L, const GemmOps *g, LLVMValueRef x) {
  return lw_view_maps(L, &((const MatmulOps *)g->user)->b.v, x);
}

static LLVMValueRef matmul_a(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                             LLVMValueRef p) {
  const MatmulOps *mo = g->user;
  return lw_load(L, L->f32, lw_in(L, 0), strided_at(L, mo, &mo->a, t, i, p));
}

/* &A[t][i][p]: a_col when A's rows are adjacent floats (A read transposed), a_row when its
 * columns are. */
static LLVMValueRef matmul_aaddr(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                                 LLVMValueRef p) {
  const MatmulOps *mo = g->user;
  return lw_gep(L, L->f32, lw_in(L, 0), strided_at(L, mo, &mo->a, t, i, p));
}

/* &B[t][p][0]: rows of b contiguous (b.col == 1). */
static LLVMValueRef matmul_brow(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p) {
  const MatmulOps *mo = g->user;
  return lw_gep(L, L->f32, lw_in(L, 1), strided_at(L, mo, &mo->b, t, p, lw_i64(L, 0)));
}

/* &B[t][p][j]: b_col when B's columns are adjacent floats (B read transposed). */
static LLVMValueRef matmul_baddr(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                                 LLVMValueRef j) {
  const MatmulOps *mo = g->user;
  return lw_gep(L, L->f32, lw_in(L, 1), strided_at(L, mo, &mo->b, t, p, j));
}

static LLVMValueRef matmul_b(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                             LLVMValueRef j) {
  const MatmulOps *mo = g->user;
  return lw_load(L, L->f32, lw_in(L, 1), strided_at(L, mo, &mo->b, t, p, j));
}

/* The GEMM's batch, m, n, k of matmul n. */
static void matmul_dims(const Node *n, int64_t *batch, int64_t *m, int64_t *nn, int64_t *kk) {
  const Type *at = &n->in[0]->type, *ot = &n->type;
  *m = ot->dims[ot->rank - 2], *nn = ot->dims[ot->rank - 1], *kk = at->dims[at->rank - 1];
  *batch = ir_type_numel(ot) / (*m * *nn > 0 ? *m * *nn : 1);
}

bool llvm_matmul_gemm(const Node *n) {
  int64_t batch, m, nn, kk;
  matmul_dims(n, &batch, &m, &nn, &kk);
  return lw_gemm_ok(n->type.dtype, batch, m, nn, kk) && n->in[0]->type.dtype == DT_F32 &&
         n->in[1]->type.dtype == DT_F32;
}

/* torch.matmul, rank >= 2, batch dims broadcast: the GEMM template over the
 * output's batch (operands possibly read through permutes, k->view); the
 * row-loop version for other element types. */
void lower_matmul(Lower *L, Kernel *k) {
  const Node *n = k->out;
  if (!llvm_matmul_gemm(n)) {
    IR_ASSERT(!k->view && !k->nepi, "llvm: %s needs the GEMM", k->name);
    lower_matmul_loops(L, k);
    return;
  }
  int64_t batch, m, nn, kk;
  matmul_dims(n, &batch, &m, &nn, &kk);
  const Type *ot = &n->type;
  MatmulOps mo = {.ot = ot};
  bool ok = strided_of(&n->in[0]->type, k->view ? k->view[0] : NULL, ot, &mo.a) &&
            strided_of(&n->in[1]->type, k->view ? k->view[1] : NULL, ot, &mo.b);
  IR_ASSERT(ok, "llvm: %s reads a view the GEMM cannot", k->name);
  /* A's other stride: its rows' when its p is contiguous, else its p's. */
  int64_t a_ld = 0;
  bool acol = unit_stride(&mo.a.v, mo.a.v.rank - 2);
  if (!llvm_view_single(&mo.a.v, mo.a.v.rank - (acol ? 1 : 2), &a_ld)) a_ld = 0;
  int64_t b_ld = 0; /* B's row stride, for gathering its columns */
  if (!llvm_view_single(&mo.b.v, mo.b.v.rank - 2, &b_ld)) b_ld = 0;
  GemmOps g = {.batch = batch,
               .m = m,
               .n = nn,
               .k = kk,
               .a_ld = a_ld,
               .b_ld = b_ld,
               .load_a = matmul_a,
               .load_b = matmul_b,
               .a_col = acol ? matmul_aaddr : NULL,
               .a_row = unit_stride(&mo.a.v, mo.a.v.rank - 1) ? matmul_aaddr : NULL,
               .b_row = unit_stride(&mo.b.v, mo.b.v.rank - 1) ? matmul_brow : NULL,
               .b_col = unit_stride(&mo.b.v, mo.b.v.rank - 2) ? matmul_baddr : NULL,
               .map_a = mo.a.v.nmaps ? matmul_map_a : NULL,
               .map_b = mo.b.v.nmaps ? matmul_map_b : NULL,
               .user = &mo};
  gemm_with_epilogue(L, k, &g);
}

/* x[n, ci, ih, iw] (plane base + ih*W + iw), 0 outside the input. */
static LLVMValueRef load_inside(Lower *L, LLVMValueRef buf, LLVMValueRef plane, LLVMValueRef ih,
                                LLVMValueRef iw, int64_t h, int64_t w) {
  LLVMValueRef ok = LLVMBuildAnd(L->b, LLVMBuildICmp(L->b, LLVMIntULT, ih, lw_i64(L, h), ""),
                                 LLVMBuildICmp(L->b, LLVMIntULT, iw, lw_i64(L, w), ""), "");
  LLVMValueRef at = lw_add(L, lw_mulc(L, plane, h * w), lw_add(L, lw_mulc(L, ih, w), iw));
  LLVMValueRef v = lw_load(L, L->f32, buf, lw_select(L, ok, at, lw_i64(L, 0)));
  return lw_select(L, ok, v, lw_fc(L, L->f32, 0.0));
}

/* i32 vector helpers for the convolutions' vector packers. */
static LLVMValueRef vsplat(Lower *L, int vl, LLVMValueRef x64) {
  return lw_gemm_splat(L, LLVMVectorType(L->i32, (unsigned)vl),
                       LLVMBuildTrunc(L->b, x64, L->i32, ""));
}
static LLVMValueRef vc(Lower *L, int vl, int64_t c) { return vsplat(L, vl, lw_i64(L, c)); }
static LLVMValueRef vadd(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAdd(L->b, a, b, "");
}
static LLVMValueRef vmulc(Lower *L, int vl, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : LLVMBuildMul(L->b, a, vc(L, vl, c), "");
}
static LLVMValueRef vdivc(Lower *L, int vl, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : LLVMBuildUDiv(L->b, a, vc(L, vl, c), "");
}
/* a - q * c, given q = a / c */
static LLVMValueRef vrem_of(Lower *L, int vl, LLVMValueRef a, LLVMValueRef q, int64_t c) {
  return LLVMBuildSub(L->b, a, vmulc(L, vl, q, c), "");
}
static LLVMValueRef vult(Lower *L, int vl, LLVMValueRef a, int64_t c) {
  return LLVMBuildICmp(L->b, LLVMIntULT, a, vc(L, vl, c), "");
}
static LLVMValueRef vand(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAnd(L->b, a, b, "");
}
/* A GEP without inbounds: vector bases may point before the buffer (masked lanes). */
static LLVMValueRef gep_raw(Lower *L, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildGEP2(L->b, L->f32, base, &idx, 1, "");
}

/* A convolution whose packed rows' masks come from tables (tap_mask, pixtap_mask), and whose
 * taps are shifted planes: stride 1, W = Wo. Else masks come from lane indices. */
static bool tap_table(const ConvDims *c) { return c->s == 1 && c->w == c->wo; }

/* What a tap mask table's entry (tap t, entry u) holds: the mask's bits. */
typedef struct MaskSpec {
  const ConvDims *c;
  bool grad_input; /* tap_mask: the input gradient's rows (else the forward's) */
  int64_t n, step; /* tap_mask: the row's columns, and columns per entry */
  int vl;
} MaskSpec;
typedef unsigned long long MaskBits(const MaskSpec *ms, int64_t t, int64_t u);

/* The module's constant table `name` of one width-bit mask per (tap, entry u < nent), built
 * on first use; the entry (q, u) loaded. */
static LLVMValueRef mask_entry(Lower *L, const char *name, const MaskSpec *ms, unsigned width,
                               int64_t nent, MaskBits *f, LLVMValueRef q, LLVMValueRef u) {
  int64_t kk = ms->c->kh * ms->c->kw;
  LLVMTypeRef bits = LLVMIntTypeInContext(L->ctx, width);
  LLVMValueRef table = LLVMGetNamedGlobal(L->mod, name);
  if (!table) {
    LLVMValueRef *vals = malloc((size_t)(kk * nent) * sizeof *vals);
    IR_ASSERT(vals, "llvm: out of memory");
    for (int64_t t = 0; t < kk; t++)
      for (int64_t e = 0; e < nent; e++) vals[t * nent + e] = LLVMConstInt(bits, f(ms, t, e), 0);
    LLVMValueRef init = LLVMConstArray2(bits, vals, (uint64_t)(kk * nent));
    free(vals);
    table = lw_private_constant(L, init, name);
  }
  return lw_load(L, bits, table, lw_add(L, lw_mulc(L, q, nent), u));
}

static LLVMValueRef as_lanes(Lower *L, LLVMValueRef m, int vl) {
  return LLVMBuildBitCast(L->b, m, LLVMVectorType(LLVMInt1TypeInContext(L->ctx), (unsigned)vl), "");
}

/* tap_mask's entry: the lanes of columns v*step .. v*step + VL inside for tap t. */
static unsigned long long row_bits(const MaskSpec *ms, int64_t t, int64_t v) {
  const ConvDims *c = ms->c;
  int64_t cols = ms->grad_input ? c->w : c->wo, rows = ms->grad_input ? c->ho : c->h;
  int64_t width = ms->grad_input ? c->wo : c->w, sign = ms->grad_input ? -1 : 1;
  unsigned long long m = 0;
  for (int l = 0; l < ms->vl; l++) {
    int64_t j = v * ms->step + l, a = j / cols, b = j % cols;
    int64_t r = a + sign * (t / c->kw - c->p), s = b + sign * (t % c->kw - c->p);
    if (j < ms->n && r >= 0 && r < rows && s >= 0 && s < width) m |= 1ull << l;
  }
  return m;
}

/* The lanes of a stride-1 convolution's packed row that are inside, for tap q = (kh, kw) and
 * columns j0 .. j0+VL (j0 a multiple of VL: B's vectors start at whole vectors): a constant
 * table of one VL-bit mask per (tap, vector) of the n columns, so packing loads a mask instead
 * of dividing lane indices. Forward: columns (oh, ow) read x at (oh-p+kh, ow-p+kw), inside
 * [0, H) x [0, W); input gradient: columns (ih, iw) read dy at (ih+p-kh, iw+p-kw), inside
 * [0, Ho) x [0, Wo). */
static LLVMValueRef tap_mask(Lower *L, const ConvDims *c, bool grad_input, LLVMValueRef q,
                             LLVMValueRef j0, int64_t n, int vl) {
  MaskSpec ms = {.c = c, .grad_input = grad_input, .n = n, .step = vl, .vl = vl};
  char name[128];
  snprintf(name, sizeof name, "kiln_tapmask_%c%lldx%lld_%lldx%lld_%lldx%lld_p%lld_v%d",
           grad_input ? 'i' : 'f', (long long)c->kh, (long long)c->kw, (long long)c->h,
           (long long)c->w, (long long)c->ho, (long long)c->wo, (long long)c->p, vl);
  return as_lanes(
      L, mask_entry(L, name, &ms, (unsigned)vl, (n + vl - 1) / vl, row_bits, q, lw_divc(L, j0, vl)),
      vl);
}

/* Forward im2col row p = (ci, kh, kw), columns j0.. = (oh, ow): x[ci][oh*s-p+kh][ow*s-p+kw];
 * contiguous (a masked load) when s = 1 and W = Wo, else a gather. */
static LLVMValueRef convf_bvec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                               LLVMValueRef j0, int vl) {
  const ConvDims *c = g->user;
  int64_t kk = c->kh * c->kw;
  LLVMValueRef ci = lw_divc(L, p, kk), q = lw_remc(L, p, kk);
  LLVMValueRef kh = lw_addc(L, lw_divc(L, q, c->kw), -c->p),
               kw = lw_addc(L, lw_remc(L, q, c->kw), -c->p);
  LLVMValueRef plane =
      gep_raw(L, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, t, c->ci), ci), c->h * c->w));
  if (tap_table(c))
    return lw_gemm_load_masked(
        L, vl, gep_raw(L, plane, lw_add(L, j0, lw_add(L, lw_mulc(L, kh, c->w), kw))),
        tap_mask(L, c, false, q, j0, g->n, vl));
  LLVMValueRef jv = lw_gemm_lanes(L, j0, vl);
  LLVMValueRef ohv = vdivc(L, vl, jv, c->wo), owv = vrem_of(L, vl, jv, ohv, c->wo);
  LLVMValueRef ihv = vadd(L, vmulc(L, vl, ohv, c->s), vsplat(L, vl, kh));
  LLVMValueRef iwv = vadd(L, vmulc(L, vl, owv, c->s), vsplat(L, vl, kw));
  LLVMValueRef ok =
      vand(L, vand(L, vult(L, vl, ihv, c->h), vult(L, vl, iwv, c->w)), vult(L, vl, jv, g->n));
  return lw_gemm_gather(L, vl, plane, vadd(L, vmulc(L, vl, ihv, c->w), iwv), ok);
}

/* Input-gradient row p = (co, kh, kw), columns j0.. = (ih, iw): dy[co][(ih+p-kh)/s][(iw+p-kw)/s]
 * where that divides and is inside. */
static LLVMValueRef convi_bvec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                               LLVMValueRef j0, int vl) {
  const ConvDims *c = g->user;
  int64_t kk = c->kh * c->kw;
  LLVMValueRef co = lw_divc(L, p, kk), q = lw_remc(L, p, kk);
  LLVMValueRef dh = LLVMBuildSub(L->b, lw_i64(L, c->p), lw_divc(L, q, c->kw), "");
  LLVMValueRef dw = LLVMBuildSub(L->b, lw_i64(L, c->p), lw_remc(L, q, c->kw), "");
  LLVMValueRef plane =
      gep_raw(L, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, t, c->co), co), c->ho * c->wo));
  if (tap_table(c)) {
    return lw_gemm_load_masked(
        L, vl, gep_raw(L, plane, lw_add(L, j0, lw_add(L, lw_mulc(L, dh, c->wo), dw))),
        tap_mask(L, c, true, q, j0, g->n, vl));
  }
  LLVMValueRef jv = lw_gemm_lanes(L, j0, vl);
  LLVMValueRef ihv = vdivc(L, vl, jv, c->w), iwv = vrem_of(L, vl, jv, ihv, c->w);
  LLVMValueRef th = vadd(L, ihv, vsplat(L, vl, dh)), tw = vadd(L, iwv, vsplat(L, vl, dw));
  LLVMValueRef ok = vand(L, vand(L, vult(L, vl, th, c->ho * c->s), vult(L, vl, tw, c->wo * c->s)),
                         vult(L, vl, jv, g->n));
  if (c->s != 1) {
    LLVMValueRef zero = vc(L, vl, 0);
    LLVMValueRef qh = vdivc(L, vl, th, c->s), qw = vdivc(L, vl, tw, c->s);
    ok = vand(L, ok, LLVMBuildICmp(L->b, LLVMIntEQ, vrem_of(L, vl, th, qh, c->s), zero, ""));
    ok = vand(L, ok, LLVMBuildICmp(L->b, LLVMIntEQ, vrem_of(L, vl, tw, qw, c->s), zero, ""));
    th = qh, tw = qw;
  }
  return lw_gemm_gather(L, vl, plane, vadd(L, vmulc(L, vl, th, c->wo), tw), ok);
}

/* Weight-gradient row p = (n, oh, ow), columns j0.. = (ci, kh, kw): x[n][ci][oh*s-p+kh][ow*s-p+kw].
 */
static LLVMValueRef convw_bvec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                               LLVMValueRef j0, int vl) {
  const ConvDims *c = g->user;
  (void)t;
  int64_t hw = c->ho * c->wo, kk = c->kh * c->kw;
  LLVMValueRef b = lw_divc(L, p, hw), pix = lw_remc(L, p, hw);
  LLVMValueRef ih0 = lw_addc(L, lw_mulc(L, lw_divc(L, pix, c->wo), c->s), -c->p);
  LLVMValueRef iw0 = lw_addc(L, lw_mulc(L, lw_remc(L, pix, c->wo), c->s), -c->p);
  LLVMValueRef jv = lw_gemm_lanes(L, j0, vl);
  LLVMValueRef civ = vdivc(L, vl, jv, kk), qv = vrem_of(L, vl, jv, civ, kk);
  LLVMValueRef khv = vdivc(L, vl, qv, c->kw), kwv = vrem_of(L, vl, qv, khv, c->kw);
  LLVMValueRef ihv = vadd(L, khv, vsplat(L, vl, ih0)), iwv = vadd(L, kwv, vsplat(L, vl, iw0));
  LLVMValueRef ok =
      vand(L, vand(L, vult(L, vl, ihv, c->h), vult(L, vl, iwv, c->w)), vult(L, vl, jv, g->n));
  LLVMValueRef img = gep_raw(L, lw_in(L, 0), lw_mulc(L, b, c->ci * c->h * c->w));
  LLVMValueRef idx = vadd(L, vmulc(L, vl, civ, c->h * c->w), vadd(L, vmulc(L, vl, ihv, c->w), iwv));
  return lw_gemm_gather(L, vl, img, idx, ok);
}

/* Lanes p0 .. p0+vl of a depth running over (image b, pixel pix), p = b*hw + pix, hw >= vl:
 * the first lane's image b0 and pixel pix0, the lanes in image b0 + 1 (second), and each
 * lane's pixel within its image (pix, i32). */
typedef struct PixLanes {
  int64_t hw;
  LLVMValueRef b0, pix0, second, pix;
} PixLanes;

static PixLanes pix_lanes(Lower *L, LLVMValueRef p0, int64_t hw, int vl) {
  PixLanes pl = {.hw = hw, .b0 = lw_divc(L, p0, hw), .pix0 = lw_remc(L, p0, hw)};
  LLVMValueRef pv = lw_gemm_lanes(L, pl.pix0, vl);
  pl.second = LLVMBuildICmp(L->b, LLVMIntUGE, pv, vc(L, vl, hw), "");
  pl.pix = LLVMBuildSelect(L->b, pl.second, vadd(L, pv, vc(L, vl, -hw)), pv, "");
  return pl;
}

/* A vector along the depth across two images: lanes in `first` from at[l], lanes in
 * `second` (the next image's) from at[next + l]; 0 elsewhere. Two masked loads. */
static LLVMValueRef two_image_load(Lower *L, int vl, LLVMValueRef at, int64_t next,
                                   LLVMValueRef first, LLVMValueRef second) {
  LLVMValueRef v0 = lw_gemm_load_masked(L, vl, at, first);
  LLVMValueRef v1 = lw_gemm_load_masked(L, vl, gep_raw(L, at, lw_i64(L, next)), second);
  return LLVMBuildSelect(L->b, second, v1, v0, "");
}

/* Lane l of the vector at base0[pix0 + l] while it is in image b0, and at
 * base0[stride + pix0 + l - hw] (image b0 + 1, stride floats further) after; lanes off in
 * ok 0. */
static LLVMValueRef pix_load(Lower *L, int vl, const PixLanes *pl, LLVMValueRef base0,
                             int64_t stride, LLVMValueRef ok) {
  LLVMValueRef first = vand(L, ok, LLVMBuildNot(L->b, pl->second, ""));
  return two_image_load(L, vl, gep_raw(L, base0, pl->pix0), stride - pl->hw, first,
                        vand(L, ok, pl->second));
}

/* Forward: per image, C[co][oh*Wo+ow] = W[co][ci*KK+q] . im2col[ci*KK+q][pix]. */
static LLVMValueRef convf_a(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                            LLVMValueRef p) {
  (void)t;
  return lw_load(L, L->f32, lw_in(L, 1), lw_add(L, lw_mulc(L, i, g->k), p));
}

static LLVMValueRef convf_arow(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                               LLVMValueRef p) {
  (void)t;
  return lw_gep(L, L->f32, lw_in(L, 1), lw_add(L, lw_mulc(L, i, g->k), p));
}

static LLVMValueRef convf_b(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                            LLVMValueRef j) {
  const ConvDims *c = g->user;
  int64_t kk = c->kh * c->kw;
  LLVMValueRef ci = lw_divc(L, p, kk), q = lw_remc(L, p, kk);
  LLVMValueRef kh = lw_divc(L, q, c->kw), kw = lw_remc(L, q, c->kw);
  LLVMValueRef oh = lw_divc(L, j, c->wo), ow = lw_remc(L, j, c->wo);
  LLVMValueRef ih = lw_add(L, lw_addc(L, lw_mulc(L, oh, c->s), -c->p), kh);
  LLVMValueRef iw = lw_add(L, lw_addc(L, lw_mulc(L, ow, c->s), -c->p), kw);
  return load_inside(L, lw_in(L, 0), lw_add(L, lw_mulc(L, t, c->ci), ci), ih, iw, c->h, c->w);
}

/* 1x1, stride 1, no padding: im2col is x itself. */
static LLVMValueRef conv1x1_row(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p) {
  const ConvDims *c = g->user;
  return lw_gep(L, L->f32, lw_in(L, 0),
                lw_mulc(L, lw_add(L, lw_mulc(L, t, c->ci), p), c->h * c->w));
}

static bool conv_is_1x1(const ConvDims *c) {
  return c->kh == 1 && c->kw == 1 && c->s == 1 && c->p == 0;
}

int64_t llvm_gemm_depth(const Node *n) {
  if (n->op == OP_MATMUL) return n->in[0]->type.dims[n->in[0]->type.rank - 1];
  const Type *w = &n->in[1]->type; /* conv2d: ci * kh * kw; its input gradient: co * kh * kw */
  return w->dims[n->op == OP_CONV2D_GRAD_INPUT ? 0 : 1] * w->dims[2] * w->dims[3];
}

static bool all_f32(const Node *n) {
  for (int i = 0; i < n->nin; i++)
    if (n->in[i]->type.dtype != DT_F32) return false;
  return n->type.dtype == DT_F32;
}

bool llvm_conv2d_gemm(const Node *n) {
  ConvDims c = conv_dims(n, &n->in[0]->type, &n->in[1]->type, &n->type);
  return all_f32(n) && lw_gemm_ok(n->type.dtype, c.nb, c.co, c.ho * c.wo, c.ci * c.kh * c.kw);
}

bool llvm_conv2d_grad_input_gemm(const Node *n) {
  ConvDims c = conv_dims(n, &n->type, &n->in[1]->type, &n->in[0]->type);
  return all_f32(n) && lw_gemm_ok(n->type.dtype, c.nb, c.ci, c.h * c.w, c.co * c.kh * c.kw);
}

/* A stride-1 convolution's im2col rows as taps read in place (GemmTaps): the forward's row
 * (ci, kh, kw) is x's plane ci shifted by (kh-p)*W + kw-p, the input gradient's (co, kh, kw)
 * dy's plane co shifted by (p-kh)*Wo + p-kw. */
static LLVMValueRef taps_mask_f(Lower *L, const GemmOps *g, int q, LLVMValueRef j0, int vl) {
  return tap_mask(L, g->user, false, lw_i64(L, q), j0, g->n, vl);
}
static LLVMValueRef taps_mask_i(Lower *L, const GemmOps *g, int q, LLVMValueRef j0, int vl) {
  return tap_mask(L, g->user, true, lw_i64(L, q), j0, g->n, vl);
}

static bool conv_taps(Lower *L, const ConvDims *c, bool grad_input, GemmTaps *tp) {
  int64_t kk = c->kh * c->kw;
  if (!tap_table(c) || conv_is_1x1(c) || kk > GEMM_TAPS_MAX) return false;
  tp->taps = (int)kk;
  tp->src = lw_in(L, 0);
  tp->stride = grad_input ? c->ho * c->wo : c->h * c->w;
  tp->image = (grad_input ? c->co : c->ci) * tp->stride;
  int64_t row = grad_input ? c->wo : c->w, sign = grad_input ? -1 : 1;
  for (int64_t q = 0; q < kk; q++)
    tp->off[q] = sign * ((q / c->kw - c->p) * row + q % c->kw - c->p);
  tp->mask = grad_input ? taps_mask_i : taps_mask_f;
  return true;
}

void lower_conv2d(Lower *L, Kernel *k) {
  const Node *n = k->out;
  ConvDims c = conv_dims(n, &n->in[0]->type, &n->in[1]->type, &n->type);
  if (!llvm_conv2d_gemm(n)) {
    IR_ASSERT(!k->nepi, "llvm: %s has an epilogue without the GEMM", k->name);
    lower_conv2d_loops(L, k);
    return;
  }
  GemmOps g = {.batch = c.nb,
               .m = c.co,
               .n = c.ho * c.wo,
               .k = c.ci * c.kh * c.kw,
               .load_a = convf_a,
               .load_b = convf_b,
               .a_row = convf_arow,
               .b_row = conv_is_1x1(&c) ? conv1x1_row : NULL,
               .b_vec = conv_is_1x1(&c) ? NULL : convf_bvec,
               .bias = n->nin == 3 ? lw_in(L, 2) : NULL,
               .a_shared = true,
               .user = &c};
  GemmTaps tp;
  if (conv_taps(L, &c, false, &tp)) g.b_taps = &tp;
  gemm_with_epilogue(L, k, &g);
}

/* Input gradient: per image, dX[ci][ih*W+iw] = W^T[ci][co*KK+q] . dYcol[co*KK+q][pix],
 * dYcol = dy[n, co, (ih+p-kh)/s, (iw+p-kw)/s] where that divides and is inside. */
static LLVMValueRef convi_a(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                            LLVMValueRef p) {
  const ConvDims *c = g->user;
  (void)t;
  int64_t kk = c->kh * c->kw;
  LLVMValueRef co = lw_divc(L, p, kk), q = lw_remc(L, p, kk);
  return lw_load(L, L->f32, lw_in(L, 1),
                 lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, co, c->ci), i), kk), q));
}

/* (ih + p - tap) / s when it is a whole output position in [0, out), else ok false. */
static LLVMValueRef out_pos(Lower *L, const ConvDims *c, LLVMValueRef in, LLVMValueRef tap,
                            int64_t out, LLVMValueRef *ok) {
  LLVMValueRef d = LLVMBuildSub(L->b, lw_addc(L, in, c->p), tap, "");
  *ok = LLVMBuildICmp(L->b, LLVMIntULT, d, lw_i64(L, out * c->s), "");
  if (c->s == 1) return d;
  LLVMValueRef dd = lw_select(L, *ok, d, lw_i64(L, 0));
  *ok = LLVMBuildAnd(L->b, *ok,
                     LLVMBuildICmp(L->b, LLVMIntEQ, lw_remc(L, dd, c->s), lw_i64(L, 0), ""), "");
  return lw_divc(L, dd, c->s);
}

static LLVMValueRef convi_b(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                            LLVMValueRef j) {
  const ConvDims *c = g->user;
  int64_t kk = c->kh * c->kw;
  LLVMValueRef co = lw_divc(L, p, kk), q = lw_remc(L, p, kk);
  LLVMValueRef kh = lw_divc(L, q, c->kw), kw = lw_remc(L, q, c->kw);
  LLVMValueRef okh, okw;
  LLVMValueRef oh = out_pos(L, c, lw_divc(L, j, c->w), kh, c->ho, &okh);
  LLVMValueRef ow = out_pos(L, c, lw_remc(L, j, c->w), kw, c->wo, &okw);
  LLVMValueRef ok = LLVMBuildAnd(L->b, okh, okw, "");
  LLVMValueRef at = lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, t, c->co), co), c->ho * c->wo),
                           lw_add(L, lw_mulc(L, oh, c->wo), ow));
  LLVMValueRef v = lw_load(L, L->f32, lw_in(L, 0), lw_select(L, ok, at, lw_i64(L, 0)));
  return lw_select(L, ok, v, lw_fc(L, L->f32, 0.0));
}

static LLVMValueRef conv1x1_dyrow(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p) {
  const ConvDims *c = g->user;
  return lw_gep(L, L->f32, lw_in(L, 0),
                lw_mulc(L, lw_add(L, lw_mulc(L, t, c->co), p), c->ho * c->wo));
}

void lower_conv2d_grad_input(Lower *L, Kernel *k) {
  const Node *n = k->out;
  ConvDims c = conv_dims(n, &n->type, &n->in[1]->type, &n->in[0]->type);
  if (!llvm_conv2d_grad_input_gemm(n)) {
    IR_ASSERT(!k->nepi, "llvm: %s has an epilogue without the GEMM", k->name);
    lower_conv2d_grad_input_loops(L, k);
    return;
  }
  GemmOps g = {.batch = c.nb,
               .m = c.ci,
               .n = c.h * c.w,
               .k = c.co * c.kh * c.kw,
               .load_a = convi_a,
               .load_b = convi_b,
               .b_row = conv_is_1x1(&c) ? conv1x1_dyrow : NULL,
               .b_vec = conv_is_1x1(&c) ? NULL : convi_bvec,
               .a_shared = true,
               .user = &c};
  GemmTaps tp;
  if (conv_taps(L, &c, true, &tp)) g.b_taps = &tp;
  gemm_with_epilogue(L, k, &g);
}

/* Weight gradient: dW[co][ci*KK+q] = sum over (n, pix) of dy[n][co][pix] im2col_n[ci*KK+q][pix]. */
static LLVMValueRef convw_a(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                            LLVMValueRef p) {
  const ConvDims *c = g->user;
  (void)t;
  int64_t hw = c->ho * c->wo;
  LLVMValueRef b = lw_divc(L, p, hw), pix = lw_remc(L, p, hw);
  return lw_load(L, L->f32, lw_in(L, 1),
                 lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, b, c->co), i), hw), pix));
}

static LLVMValueRef convw_b(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                            LLVMValueRef j) {
  const ConvDims *c = g->user;
  (void)t;
  int64_t hw = c->ho * c->wo, kk = c->kh * c->kw;
  LLVMValueRef b = lw_divc(L, p, hw), pix = lw_remc(L, p, hw);
  LLVMValueRef oh = lw_divc(L, pix, c->wo), ow = lw_remc(L, pix, c->wo);
  LLVMValueRef ci = lw_divc(L, j, kk), q = lw_remc(L, j, kk);
  LLVMValueRef kh = lw_divc(L, q, c->kw), kw = lw_remc(L, q, c->kw);
  LLVMValueRef ih = lw_add(L, lw_addc(L, lw_mulc(L, oh, c->s), -c->p), kh);
  LLVMValueRef iw = lw_add(L, lw_addc(L, lw_mulc(L, ow, c->s), -c->p), kw);
  return load_inside(L, lw_in(L, 0), lw_add(L, lw_mulc(L, b, c->ci), ci), ih, iw, c->h, c->w);
}

/* The weight gradient's A row co along p = (n, pix): dy[n][co][pix], contiguous within an
 * image. */
static LLVMValueRef convw_avec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                               LLVMValueRef p0, int vl, LLVMValueRef in) {
  const ConvDims *c = g->user;
  (void)t;
  int64_t hw = c->ho * c->wo;
  PixLanes pl = pix_lanes(L, p0, hw, vl);
  LLVMValueRef base =
      gep_raw(L, lw_in(L, 1), lw_mulc(L, lw_add(L, lw_mulc(L, pl.b0, c->co), i), hw));
  return pix_load(L, vl, &pl, base, c->co * hw, in);
}

/* Masks of a stride-1 weight gradient's tap columns kept in a constant table at most this
 * many entries long (9 taps of 28 x 28 images: 7056, 28 KiB). */
#define PIXTAP_MAX 16384

/* pixtap_mask's entry: for tap t and depths u .. u+VL of an image (u < hw), bit l (lanes
 * in the image) or VL + l (lanes in the next) when the tap's input is inside. */
static unsigned long long pix_bits(const MaskSpec *ms, int64_t t, int64_t u) {
  const ConvDims *c = ms->c;
  int64_t hw = c->ho * c->wo;
  unsigned long long m = 0;
  for (int l = 0; l < ms->vl; l++) {
    int64_t d = u + l, pix = d % hw;
    int64_t ih = pix / c->w + t / c->kw - c->p, iw = pix % c->w + t % c->kw - c->p;
    if (ih >= 0 && ih < c->h && iw >= 0 && iw < c->w) m |= 1ull << (l + (d >= hw ? ms->vl : 0));
  }
  return m;
}

/* The lanes of the weight gradient's tap column q along p0 .. p0+VL (hw >= VL, s = 1,
 * W = Wo) whose input is inside, from a constant table indexed by (q, p0 mod hw): bits
 * 0..VL-1 for the lanes in image p0 / hw, bits VL..2VL-1 (*second) for those in the next
 * image. NULL when the table would be too long. */
static LLVMValueRef pixtap_mask(Lower *L, const ConvDims *c, LLVMValueRef q, LLVMValueRef pix0,
                                int vl, LLVMValueRef *second) {
  int64_t hw = c->ho * c->wo;
  if (c->kh * c->kw * hw > PIXTAP_MAX || !tap_table(c)) return NULL;
  MaskSpec ms = {.c = c, .vl = vl};
  char name[128];
  snprintf(name, sizeof name, "kiln_pixtap_%lldx%lld_%lldx%lld_p%lld_v%d", (long long)c->kh,
           (long long)c->kw, (long long)c->h, (long long)c->w, (long long)c->p, vl);
  LLVMValueRef m = mask_entry(L, name, &ms, (unsigned)(2 * vl), hw, pix_bits, q, pix0);
  LLVMTypeRef bits = LLVMTypeOf(m), half = LLVMIntTypeInContext(L->ctx, (unsigned)vl);
  LLVMValueRef hi = LLVMBuildLShr(L->b, m, LLVMConstInt(bits, (unsigned long long)vl, 0), "");
  *second = as_lanes(L, LLVMBuildTrunc(L->b, hi, half, ""), vl);
  return as_lanes(L, LLVMBuildTrunc(L->b, m, half, ""), vl);
}

/* The weight gradient's B column j = (ci, kh, kw) along p = (n, oh, ow): the tap's input
 * x[n][ci][oh*s-p+kh][ow*s-p+kw], 0 in the padding. Stride 1 and W = Wo make it x's plane
 * shifted by (kh-p)*W + kw-p (two masked loads, the lanes inside from a table when it is
 * short); otherwise a gather. */
static LLVMValueRef convw_bcvec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef j,
                                LLVMValueRef p0, int vl, LLVMValueRef in) {
  const ConvDims *c = g->user;
  (void)t;
  int64_t kk = c->kh * c->kw, plane = c->h * c->w, hw = c->ho * c->wo;
  LLVMValueRef ci = lw_divc(L, j, kk), q = lw_remc(L, j, kk);
  LLVMValueRef kh = lw_addc(L, lw_divc(L, q, c->kw), -c->p),
               kw = lw_addc(L, lw_remc(L, q, c->kw), -c->p);
  LLVMValueRef b0 = lw_divc(L, p0, hw), pix0 = lw_remc(L, p0, hw);
  LLVMValueRef second, first = pixtap_mask(L, c, q, pix0, vl, &second);
  if (first) {
    LLVMValueRef at = lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, b0, c->ci), ci), plane),
                             lw_add(L, pix0, lw_add(L, lw_mulc(L, kh, c->w), kw)));
    return two_image_load(L, vl, gep_raw(L, lw_in(L, 0), at), c->ci * plane - hw,
                          vand(L, in, first), vand(L, in, second));
  }
  PixLanes pl = pix_lanes(L, p0, hw, vl);
  LLVMValueRef ohv = vdivc(L, vl, pl.pix, c->wo), owv = vrem_of(L, vl, pl.pix, ohv, c->wo);
  LLVMValueRef ihv = vadd(L, vmulc(L, vl, ohv, c->s), vsplat(L, vl, kh));
  LLVMValueRef iwv = vadd(L, vmulc(L, vl, owv, c->s), vsplat(L, vl, kw));
  LLVMValueRef ok = vand(L, in, vand(L, vult(L, vl, ihv, c->h), vult(L, vl, iwv, c->w)));
  LLVMValueRef base =
      gep_raw(L, lw_in(L, 0), lw_mulc(L, lw_add(L, lw_mulc(L, pl.b0, c->ci), ci), plane));
  int64_t stride = c->ci * plane;
  if (tap_table(c)) {
    LLVMValueRef shift = lw_add(L, lw_mulc(L, kh, c->w), kw);
    return pix_load(L, vl, &pl, gep_raw(L, base, shift), stride, ok);
  }
  LLVMValueRef img = LLVMBuildSelect(L->b, pl.second, vc(L, vl, stride), vc(L, vl, 0), "");
  LLVMValueRef idx = vadd(L, img, vadd(L, vmulc(L, vl, ihv, c->w), iwv));
  return lw_gemm_gather(L, vl, base, idx, ok);
}

void lower_conv2d_grad_weight(Lower *L, Kernel *k) {
  const Node *n = k->out;
  ConvDims c = conv_dims(n, &n->in[0]->type, &n->type, &n->in[1]->type);
  if (!lw_gemm_ok(n->type.dtype, 1, c.co, c.ci * c.kh * c.kw, c.nb * c.ho * c.wo)) {
    lower_conv2d_grad_weight_loops(L, k);
    return;
  }
  GemmOps g = {.batch = 1,
               .m = c.co,
               .n = c.ci * c.kh * c.kw,
               .k = c.nb * c.ho * c.wo,
               .load_a = convw_a,
               .load_b = convw_b,
               .user = &c};
  /* Vectors along the depth (within an image, or across two: hw >= VL), transposed into B's
   * panels; else B's rows gathered. */
  if (c.ho * c.wo >= (L->avx512 ? 16 : 8))
    g.a_vec = convw_avec, g.b_cvec = convw_bcvec;
  else
    g.b_vec = convw_bvec;
  lw_gemm(L, k, &g);
}
