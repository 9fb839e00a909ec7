/* llvm_lower_fused.c - a fused elementwise kernel: one loop computing a chain of elementwise ops
 * per element in registers.
 *
 * The launch (llvm_layout.c, "Planned programs") lists the chain's nodes in
 * order, the values it reads from memory (args[0..nreads)), and its outputs
 * (the chain's nodes with a home: k->out, then args[nreads..]). Each element
 * i of the iteration space evaluates the chain recursively: a node of the
 * chain or an inline elementwise node from its operands, a memory value by a
 * load at i mapped through broadcasting. Every output is stored only after
 * all of them are computed, so element i is read before it is written (in
 * place and @update outputs share their input's address).
 */
#include <stdlib.h>
#include <string.h>

#include "llvm_gemm.h"

#define FUSED_CHUNK_WORK 32768

bool llvm_fusable_op(OpKind op) {
  switch ((int)op) {
  case OP_CONST:
  case OP_NEG:
  case OP_RELU:
  case OP_SIGMOID:
  case OP_TANH:
  case OP_EXP:
  case OP_LOG:
  case OP_SQRT:
  case OP_RSQRT:
  case OP_ABS:
  case OP_GELU:
  case OP_SILU:
  case OP_POW:
  case OP_ADD:
  case OP_SUB:
  case OP_MUL:
  case OP_DIV:
  case OP_MAXIMUM:
  case OP_MINIMUM:
  case OP_GREATER:
  case OP_EQUAL:
  case OP_GELU_GRAD:
  case OP_RESHAPE:
    return true;
  default:
    return false;
  }
}

typedef struct Fz {
  Lower *L;
  Kernel *k;
  const Type *space;         /* the loop's shape: rows of its last dim */
  LLVMValueRef row, j, flat; /* flat = row * len + j */
  LLVMValueRef *cidx, *cval; /* by node id: the index last evaluated at and the value */
} Fz;

static int fz_arg(const Kernel *k, const Node *n, int from, int to) {
  for (int i = from; i < to; i++)
    if (k->args[i] == n) return i;
  return -1;
}

/* Strides of in read as the trailing dims of out (NumPy broadcasting). */
static void fz_strides(const Type *in, const Type *out, int64_t *stride) {
  int64_t s = 1, own[IR_MAX_RANK];
  for (int d = in->rank - 1; d >= 0; d--) own[d] = s, s *= in->dims[d];
  for (int d = 0; d < out->rank; d++) {
    int k = in->rank - out->rank + d;
    stride[d] = k >= 0 && in->dims[k] != 1 ? own[k] : 0;
  }
}

static bool same_dims(const Type *a, const Type *b) {
  if (a->rank != b->rank) return false;
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return false;
  return true;
}

/* The flat index into a of element idx of n (a an operand of n). At the
 * loop's own element of the loop's shape, the row part is loop invariant. */
static LLVMValueRef fz_index(Fz *f, const Node *n, const Node *a, LLVMValueRef idx) {
  Lower *L = f->L;
  int64_t na = ir_type_numel(&a->type);
  if (n->op == OP_RESHAPE || na == ir_type_numel(&n->type)) return idx;
  if (na == 1) return lw_i64(L, 0);
  int64_t stride[IR_MAX_RANK];
  int r = n->type.rank;
  fz_strides(&a->type, &n->type, stride);
  if (idx == f->flat && f->row && same_dims(&n->type, f->space))
    return lw_add(L, lw_offset(L, f->row, r - 1, n->type.dims, stride),
                  stride[r - 1] ? lw_mulc(L, f->j, stride[r - 1]) : lw_i64(L, 0));
  return lw_offset(L, idx, r, n->type.dims, stride);
}

/* An inline embedding at flat index idx: table[ids[row]][col], 0 (and KILN_ERR_RANGE) for an
 * id outside the table, as lower_embedding. */
static LLVMValueRef fz_embedding(Fz *f, const Node *n, LLVMValueRef idx) {
  Lower *L = f->L;
  const Type *tt = &n->in[1]->type;
  int64_t v = tt->dims[0], d = tt->dims[1];
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  int ids = fz_arg(f->k, n->in[0], 0, f->k->nreads);
  int table = fz_arg(f->k, n->in[1], 0, f->k->nreads);
  IR_ASSERT(ids >= 0 && table >= 0, "llvm: %s: embedding operands not read", f->k->name);
  bool own = idx == f->flat && f->row && same_dims(&n->type, f->space);
  LLVMValueRef row = own ? f->row : lw_divc(L, idx, d), col = own ? f->j : lw_remc(L, idx, d);
  LLVMValueRef bad, id = lw_load_index(L, ids, row, v, &bad);
  LwIf c;
  lw_if(L, &c, bad);
  lw_range_error(L);
  lw_endif(L, &c);
  LLVMValueRef at = lw_add(L, lw_mulc(L, lw_select(L, bad, lw_i64(L, 0), id), d), col);
  return lw_select(L, bad, lw_fc(L, ft, 0.0), lw_load(L, ft, lw_in(L, table), at));
}

static LLVMValueRef fz_eval(Fz *f, const Node *n, LLVMValueRef idx);

bool llvm_fused_gather(const Node *n) {
  return n->op == OP_PERMUTE || n->op == OP_SLICE || n->op == OP_BROADCAST || n->op == OP_PAD;
}

/* An inline permute, slice, broadcast or pad at flat index idx: its input at the element it
 * moves there (a pad: 0 outside its input, whose chain is evaluated at element 0 there). */
static LLVMValueRef fz_gather(Fz *f, const Node *n, LLVMValueRef idx) {
  Lower *L = f->L;
  const Type *ot = &n->type, *xt = &n->in[0]->type;
  int r = ot->rank;
  int64_t st[IR_MAX_RANK];
  if (n->op != OP_PAD) {
    int64_t base = llvm_gather_strides(n, st);
    LLVMValueRef at;
    if (idx == f->flat && f->row && same_dims(ot, f->space))
      at = lw_add(L, lw_offset(L, f->row, r - 1, ot->dims, st), lw_mulc(L, f->j, st[r - 1]));
    else
      at = lw_offset(L, idx, r, ot->dims, st);
    return fz_eval(f, n->in[0], lw_addc(L, at, base));
  }
  const AttrVal *before = ir_attr_c(n, "before");
  LLVMValueRef inside = LLVMConstInt(L->i1, 1, 0), at = lw_i64(L, 0), rest = idx;
  int64_t xs = 1;
  for (int d = r - 1; d >= 0; d--) {
    LLVMValueRef c = d > 0 ? lw_remc(L, rest, ot->dims[d]) : rest;
    if (d > 0) rest = lw_divc(L, rest, ot->dims[d]);
    LLVMValueRef xi = lw_addc(L, c, -before->i[d]);
    inside = LLVMBuildAnd(L->b, inside,
                          LLVMBuildICmp(L->b, LLVMIntULT, xi, lw_i64(L, xt->dims[d]), ""), "");
    at = lw_add(L, at, lw_mulc(L, xi, xs));
    xs *= xt->dims[d];
  }
  LLVMValueRef v = fz_eval(f, n->in[0], lw_select(L, inside, at, lw_i64(L, 0)));
  return lw_select(L, inside, v, LLVMConstNull(lw_elt(L, n->type.dtype)));
}

/* n's value at flat index idx, in n's own element type. */
static LLVMValueRef fz_eval(Fz *f, const Node *n, LLVMValueRef idx) {
  Lower *L = f->L;
  if (f->cidx[n->id] == idx) return f->cval[n->id];
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  LLVMValueRef v;
  int a = fz_arg(f->k, n, 0, f->k->nreads);
  if (a >= 0) {
    v = lw_load(L, ft, lw_in(L, a), idx);
  } else if (n->op == OP_EMBEDDING) {
    v = fz_embedding(f, n, idx);
  } else if (llvm_fused_gather(n)) {
    v = fz_gather(f, n, idx);
  } else if (n->op == OP_RESHAPE) {
    v = lw_fconv(L, fz_eval(f, n->in[0], idx), ft);
  } else {
    LLVMValueRef x[4];
    IR_ASSERT(n->nin <= 4, "llvm: fused node with %d operands", n->nin);
    for (int i = 0; i < n->nin; i++) {
      const Node *in = n->in[i];
      x[i] = in->op == OP_CONST ? lw_fc(L, ft, ir_attr_float(in, "value"))
                                : lw_fconv(L, fz_eval(f, in, fz_index(f, n, in, idx)), ft);
    }
    v = lw_map_value(L, n, x);
  }
  f->cidx[n->id] = idx;
  f->cval[n->id] = v;
  return v;
}

void lower_fused(Lower *L, Kernel *k) {
  const Graph *g = L->p->g;
  int64_t numel = ir_type_numel(&k->out->type), cost = 0;
  for (int i = 0; i < k->nnodes; i++) cost += llvm_map_cost(k->nodes[i]->op);
  Fz f = {.L = L, .k = k};
  f.cidx = calloc((size_t)g->next_id + 1, sizeof *f.cidx);
  f.cval = calloc((size_t)g->next_id + 1, sizeof *f.cval);
  IR_ASSERT(f.cidx && f.cval, "llvm: out of memory lowering %s", k->name);
  /* Rows of the output's last dim when an operand broadcasts (its row
   * offset computed once per row), else one flat loop. */
  const Type *ot = &k->out->type;
  bool bcast = false;
  for (int a = 0; a < k->nreads; a++)
    bcast |= ir_type_numel(&k->args[a]->type) != numel && ir_type_numel(&k->args[a]->type) > 1;
  int64_t len = bcast && ot->rank > 0 ? ot->dims[ot->rank - 1] : 1;
  if (len < 1) len = 1;
  f.space = ot;
  k->range = numel / len;
  k->min_chunk = FUSED_CHUNK_WORK / ((cost > 0 ? cost : 1) * len) + 1;
  LwLoop outer, inner;
  LLVMValueRef i = lw_outer(L, &outer);
  if (len > 1) {
    f.row = i;
    f.j = lw_for(L, &inner, lw_i64(L, 0), lw_i64(L, len));
    i = f.flat = lw_add(L, lw_mulc(L, f.row, len), f.j);
  }
  int nouts = k->nargs - k->nreads + 1;
  LLVMValueRef *vals = calloc((size_t)nouts, sizeof *vals);
  IR_ASSERT(vals, "llvm: out of memory lowering %s", k->name);
  vals[0] = fz_eval(&f, k->out, i);
  for (int o = 1; o < nouts; o++) vals[o] = fz_eval(&f, k->args[k->nreads + o - 1], i);
  lw_store(L, lw_elt(L, k->out->type.dtype), lw_out(L), i, vals[0]);
  for (int o = 1; o < nouts; o++) {
    const Node *n = k->args[k->nreads + o - 1];
    lw_store(L, lw_elt(L, n->type.dtype), lw_in(L, k->nreads + o - 1), i, vals[o]);
  }
  if (len > 1) lw_next(L, &inner);
  lw_next(L, &outer);
  free(vals);
  free(f.cidx);
  free(f.cval);
}

/* ---- GEMM epilogues ------------------------------------------------------ */

/* A sum of the last axis with keepdim (softmax's and log_softmax's
 * gradients): its epilogue runs over the rows of its input, the row's sum in
 * every lane. */
static bool row_sum(const Node *n) {
  return ir_is_row_sum(n) && n->type.dtype == DT_F32 && n->in[0]->type.dtype == DT_F32;
}

const Type *llvm_epilogue_space(const Node *anchor) {
  return row_sum(anchor) ? &anchor->in[0]->type : &anchor->type;
}

int llvm_epilogue_trail(const Node *anchor) {
  if (anchor->op == OP_MATMUL) return llvm_matmul_gemm(anchor) ? 1 : 0;
  if (row_sum(anchor)) return 1;
  /* Convolutions (and the input gradient) as implicit GEMMs: rows of an image's plane. */
  if (anchor->op == OP_CONV2D) return llvm_conv2d_gemm(anchor) ? 2 : 0;
  if (anchor->op == OP_CONV2D_GRAD_INPUT) return llvm_conv2d_grad_input_gemm(anchor) ? 2 : 0;
  /* Row kernels (llvm_lower_reduce.c) hand each output vector of a row over. */
  if ((anchor->op == OP_LAYER_NORM || anchor->op == OP_LAYER_NORM_GRAD) &&
      anchor->type.dtype == DT_F32)
    return 1;
  /* Pooling gradients hand each finished dx plane over: rows of H*W. */
  if (llvm_pool_grad_epilogue(anchor)) return 2;
  /* Other reductions hand over each output element (rows of the output's last dim). */
  if (llvm_reduce_out_epi(anchor)) return 1;
  return 0;
}

static bool f32_fusable(const Node *n) {
  if (!llvm_fusable_op(n->op) || n->type.dtype != DT_F32) return false;
  for (int i = 0; i < n->nin; i++)
    if (n->in[i]->type.dtype == DT_I32) return false;
  return true;
}

bool llvm_epilogue_loop_node(const Node *anchor, const Node *n) {
  return n->op == OP_CONST || (n->kernel == IR_KERNEL_INLINE && f32_fusable(n) &&
                               same_dims(&n->type, llvm_epilogue_space(anchor)));
}

/* A value the chain reads from memory: f32, and one offset per row plus a
 * stride along it (always so for one trailing dim; for two, when they are
 * read as one). */
static bool epilogue_read_ok(const Node *anchor, const Node *a, int trail) {
  if (a->type.dtype != DT_F32) return false;
  int64_t stride[IR_MAX_RANK];
  const Type *space = llvm_epilogue_space(anchor);
  int r = space->rank;
  fz_strides(&a->type, space, stride);
  return trail == 1 || stride[r - 2] == stride[r - 1] * space->dims[r - 1];
}

static bool in_seg(const Node *n, Node *const *seg, int nseg) {
  for (int i = 0; i < nseg; i++)
    if (seg[i] == n) return true;
  return false;
}

/* The operands of loop node n (depth bounds the inline nodes followed). */
static bool epilogue_inputs_ok(const Node *anchor, const Node *n, Node *const *seg, int nseg,
                               int trail, int depth) {
  if (depth > 32) return false;
  const Type *space = llvm_epilogue_space(anchor);
  for (int i = 0; i < n->nin; i++) {
    const Node *a = n->in[i];
    if (a->op == OP_CONST) continue;
    /* A row sum reaches the chain as the row's value in every lane. */
    if (a == anchor && space != &anchor->type) {
      if (n->op == OP_RESHAPE) return false;
      continue;
    }
    /* Values of other dims (reshapes' results) are stored, never read, in the loop. */
    if (!same_dims(&a->type, space)) {
      if (a == anchor || in_seg(a, seg, nseg) || n->op == OP_RESHAPE) return false;
    } else if (a == anchor || in_seg(a, seg, nseg)) {
      continue;
    }
    if (llvm_epilogue_loop_node(anchor, a)) {
      if (!epilogue_inputs_ok(anchor, a, seg, nseg, trail, depth + 1)) return false;
    } else if (!epilogue_read_ok(anchor, a, trail)) {
      return false;
    }
  }
  return true;
}

bool llvm_epilogue_ok(const Node *anchor, Node *const *seg, int nseg) {
  int trail = llvm_epilogue_trail(anchor);
  const Type *space = llvm_epilogue_space(anchor);
  if (!trail || (space->rank < trail + 1 && !llvm_reduce_out_epi(anchor))) return false;
  for (int i = 0; i < nseg; i++) {
    bool shaped = same_dims(&seg[i]->type, space) ||
                  (seg[i]->op == OP_RESHAPE && space == &anchor->type &&
                   ir_type_numel(&seg[i]->type) == ir_type_numel(&anchor->type));
    if (!f32_fusable(seg[i]) || !shaped || !epilogue_inputs_ok(anchor, seg[i], seg, nseg, trail, 0))
      return false;
  }
  return true;
}

/* ---- Prologues ------------------------------------------------------------ */

bool llvm_prologue_anchor(const Node *anchor) {
  const Node *x = anchor->nin > 0 ? anchor->in[0] : NULL;
  if (!x || anchor->type.dtype != DT_F32 || x->type.dtype != DT_F32 || x->type.rank < 1)
    return false;
  /* A row of x up to 64 KiB: the stack row when nothing else reads x. */
  int64_t count = ir_type_numel(&anchor->type), per = ir_type_numel(&x->type) / count;
  int64_t d = x->type.dims[x->type.rank - 1];
  if (anchor->op == OP_LAYER_NORM) return x->type.rank >= 2 && d <= 16384;
  /* Row kernels over the last axis: softmax and log_softmax, cross_entropy's logits. */
  if (anchor->op == OP_SOFTMAX || anchor->op == OP_LOG_SOFTMAX)
    return ir_attr_int(anchor, "axis") == x->type.rank - 1 && x->type.rank >= 2 && d <= 16384;
  if (anchor->op == OP_CROSS_ENTROPY) return x->type.rank >= 2 && d <= 16384;
  /* A reduction of runs of whole rows (llvm_reduce_runs), up to 64 KiB per output element. */
  return llvm_reduce_runs(anchor) && per <= 16384;
}

static bool f32_embedding(const Node *n) {
  return n->op == OP_EMBEDDING && n->type.dtype == DT_F32 && n->in[1]->type.dtype == DT_F32;
}

bool llvm_prologue_loop_node(const Node *x, const Node *n) {
  return n->op == OP_CONST ||
         (n->kernel == IR_KERNEL_INLINE && (f32_fusable(n) || f32_embedding(n)) &&
          same_dims(&n->type, &x->type));
}

/* The operands of prologue node n: consts, nodes of the chain, loop nodes (followed), or
 * f32 values read from memory (an embedding's ids: i32, read by its evaluator). */
static bool prologue_inputs_ok(const Node *x, const Node *n, Node *const *seg, int nseg,
                               int depth) {
  if (depth > 32) return false;
  for (int i = 0; i < n->nin; i++) {
    const Node *a = n->in[i];
    if (a->op == OP_CONST || in_seg(a, seg, nseg)) continue;
    if (f32_embedding(n)) continue; /* ids and table: read whole */
    /* A reshape keeps the flat index: an input of other dims is read at the same flat
     * positions (epi_eval), so it must be read from memory, f32, not evaluated. */
    if (n->op == OP_RESHAPE && !same_dims(&a->type, &x->type)) {
      if (a->type.dtype != DT_F32 || llvm_prologue_loop_node(x, a)) return false;
      continue;
    }
    if (llvm_prologue_loop_node(x, a)) {
      if (!prologue_inputs_ok(x, a, seg, nseg, depth + 1)) return false;
    } else if (a->type.dtype != DT_F32) {
      return false;
    }
  }
  return true;
}

bool llvm_prologue_ok(const Node *anchor, Node *const *seg, int nseg) {
  if (!llvm_prologue_anchor(anchor) || nseg < 1 || !in_seg(anchor->in[0], seg, nseg)) return false;
  const Node *x = anchor->in[0];
  for (int i = 1; i < anchor->nin; i++)
    if (in_seg(anchor->in[i], seg, nseg)) return false;
  for (int i = 0; i < nseg; i++)
    if (!f32_fusable(seg[i]) || !same_dims(&seg[i]->type, &x->type) ||
        !prologue_inputs_ok(x, seg[i], seg, nseg, 0))
      return false;
  return true;
}

struct Epilogue {
  Lower *L;
  Kernel *k;
  const Node *anchor; /* NULL for a prologue */
  const Type *space;  /* the chain's iteration space: the anchor's, or a row sum's input's */
  LLVMTypeRef vt;
  int vl, trail;
  int64_t ncols;      /* n: the product of the trailing dims */
  LLVMValueRef *cval; /* by node id: valid while cgen[id] == gen */
  int *cgen, gen;
  LLVMValueRef rowflat, j0, mask, v;
};

/* An evaluator over rows of ncols columns of space (the chain's last trail dims). */
static Epilogue *evaluator_new(Lower *L, Kernel *k, int vl, const Node *anchor, const Type *space,
                               int trail) {
  const Graph *g = L->p->g;
  Epilogue *e = calloc(1, sizeof *e);
  IR_ASSERT(e, "llvm: out of memory lowering %s", k->name);
  e->L = L;
  e->k = k;
  e->anchor = anchor;
  e->vl = vl;
  e->vt = LLVMVectorType(L->f32, (unsigned)vl);
  e->trail = trail;
  e->space = space;
  e->ncols = 1;
  for (int d = space->rank > trail ? space->rank - trail : 0; d < space->rank; d++)
    e->ncols *= space->dims[d];
  e->cval = calloc((size_t)g->next_id + 1, sizeof *e->cval);
  e->cgen = calloc((size_t)g->next_id + 1, sizeof *e->cgen);
  IR_ASSERT(e->cval && e->cgen, "llvm: out of memory lowering %s", k->name);
  return e;
}

Epilogue *lw_epilogue_new(Lower *L, Kernel *k, int vl) {
  const Node *a = k->nodes[0];
  return evaluator_new(L, k, vl, a, llvm_epilogue_space(a), llvm_epilogue_trail(a));
}

Epilogue *lw_prologue_new(Lower *L, Kernel *k, int vl) {
  return evaluator_new(L, k, vl, NULL, &k->args[0]->type, 1);
}

int64_t lw_epilogue_cost(const Epilogue *e) {
  int64_t cost = 0;
  for (int i = 1; i < e->k->nnodes; i++) cost += llvm_map_cost(e->k->nodes[i]->op);
  return cost;
}

void lw_epilogue_free(Epilogue *e) {
  if (!e) return;
  free(e->cval);
  free(e->cgen);
  free(e);
}

/* Read a (arg index ai) at the current row and lanes: a masked vector load
 * when it runs along the row, a broadcast scalar when constant along it, a
 * gather otherwise. */
static LLVMValueRef epi_load(Epilogue *e, const Node *a, int ai) {
  Lower *L = e->L;
  const Type *t = e->space;
  int64_t stride[IR_MAX_RANK] = {0}; /* gcc -O3 cannot see that rank 0 reads none */
  fz_strides(&a->type, t, stride);
  int64_t sj = t->rank ? stride[t->rank - 1] : 0; /* rank 0: a reduction's scalar */
  LLVMValueRef base = lw_offset(L, e->rowflat, t->rank - e->trail, t->dims, stride);
  base = lw_add(L, base, lw_mulc(L, e->j0, sj));
  LLVMValueRef p = lw_gep(L, L->f32, lw_in(L, ai), base);
  if (sj == 0) return lw_gemm_splat(L, e->vt, LLVMBuildLoad2(L->b, L->f32, p, ""));
  if (sj == 1) return lw_gemm_load_masked(L, e->vl, p, e->mask);
  LLVMValueRef lanes = lw_gemm_lanes(L, lw_i64(L, 0), e->vl);
  LLVMTypeRef it = LLVMVectorType(L->i32, (unsigned)e->vl);
  LLVMValueRef idx = LLVMBuildMul(L->b, lanes, lw_gemm_splat(L, it, lw_i32(L, (int32_t)sj)), "");
  return lw_gemm_gather(L, e->vl, p, idx, e->mask);
}

/* An inline embedding of the space's dims at the current row and lanes: the row of the table
 * its id names, 0 (and KILN_ERR_RANGE) for an id outside the table, as lower_embedding. */
static LLVMValueRef epi_embedding(Epilogue *e, const Node *n) {
  Lower *L = e->L;
  Kernel *k = e->k;
  int ids = fz_arg(k, n->in[0], k->epi_args, k->epi_args + k->nreads);
  int table = fz_arg(k, n->in[1], k->epi_args, k->epi_args + k->nreads);
  IR_ASSERT(ids >= 0 && table >= 0, "llvm: %s: embedding operands not read", k->name);
  int64_t v = n->in[1]->type.dims[0], d = n->in[1]->type.dims[1];
  LLVMValueRef bad, id = lw_load_index(L, ids, e->rowflat, v, &bad);
  LwIf c;
  lw_if(L, &c, bad);
  lw_range_error(L);
  lw_endif(L, &c);
  LLVMValueRef at = lw_add(L, lw_mulc(L, lw_select(L, bad, lw_i64(L, 0), id), d), e->j0);
  LLVMValueRef x = lw_gemm_load_masked(L, e->vl, lw_gep(L, L->f32, lw_in(L, table), at), e->mask);
  return LLVMBuildSelect(L->b, bad, LLVMConstNull(e->vt), x, "");
}

static LLVMValueRef epi_eval(Epilogue *e, const Node *n) {
  Lower *L = e->L;
  Kernel *k = e->k;
  if (n == e->anchor) return e->v;
  if (e->cgen[n->id] == e->gen) return e->cval[n->id];
  LLVMValueRef v;
  int a = fz_arg(k, n, k->epi_args, k->epi_args + k->nreads);
  if (a >= 0) {
    v = epi_load(e, n, a);
  } else if (n->op == OP_EMBEDDING) {
    v = epi_embedding(e, n);
  } else if (n->op == OP_CONST) {
    v = lw_fc(L, e->vt, ir_attr_float(n, "value"));
  } else if (n->op == OP_RESHAPE) {
    const Node *in = n->in[0];
    int ai = fz_arg(k, in, k->epi_args, k->epi_args + k->nreads);
    if (!e->anchor && ai >= 0 && !same_dims(&in->type, e->space)) {
      /* A prologue's reshape of a value of other dims: the same flat positions of it. */
      LLVMValueRef at = lw_add(L, lw_mulc(L, e->rowflat, e->ncols), e->j0);
      v = lw_gemm_load_masked(L, e->vl, lw_gep(L, L->f32, lw_in(L, ai), at), e->mask);
    } else {
      v = epi_eval(e, in);
    }
  } else {
    LLVMValueRef x[4];
    IR_ASSERT(n->nin <= 4, "llvm: epilogue node with %d operands", n->nin);
    for (int i = 0; i < n->nin; i++) x[i] = epi_eval(e, n->in[i]);
    v = lw_map_value(L, n, x);
  }
  e->cgen[n->id] = e->gen;
  e->cval[n->id] = v;
  return v;
}

/* v's lanes in e->mask to p. */
static void epi_masked_store(Epilogue *e, LLVMValueRef p, LLVMValueRef v) {
  Lower *L = e->L;
  LLVMTypeRef over[2] = {e->vt, L->ptr};
  LLVMValueRef args[4] = {v, p, lw_i32(L, 4), e->mask};
  const char *name = "llvm.masked.store";
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(L->mod, id, over, 2);
  LLVMBuildCall2(L->b, LLVMIntrinsicGetType(L->ctx, id, over, 2), f, args, 4, "");
}

static void epi_store(Epilogue *e, LLVMValueRef buf, LLVMValueRef v) {
  Lower *L = e->L;
  LLVMValueRef at = lw_add(L, lw_mulc(L, e->rowflat, e->ncols), e->j0);
  epi_masked_store(e, lw_gep(L, L->f32, buf, at), v);
}

void lw_prologue_row(Epilogue *e, LLVMValueRef rowflat, int64_t d, LLVMValueRef dst) {
  Lower *L = e->L;
  Kernel *k = e->k;
  int first_out = k->epi_args + k->nreads, nouts = k->pro_outs;
  LLVMValueRef vals[64];
  IR_ASSERT(nouts <= 64, "llvm: %s has %d prologue outputs", k->name, nouts);
  LwLoop lv;
  LLVMValueRef j0 =
      lw_mulc(L, lw_for(L, &lv, lw_i64(L, 0), lw_i64(L, (d + e->vl - 1) / e->vl)), e->vl);
  LLVMValueRef lanes = lw_gemm_lanes(L, lw_i64(L, 0), e->vl);
  LLVMTypeRef it = LLVMVectorType(L->i32, (unsigned)e->vl);
  LLVMValueRef left = LLVMBuildTrunc(L->b, LLVMBuildSub(L->b, lw_i64(L, d), j0, ""), L->i32, "");
  e->gen++;
  e->rowflat = rowflat, e->j0 = j0, e->v = NULL;
  e->mask = LLVMBuildICmp(L->b, LLVMIntSLT, lanes, lw_gemm_splat(L, it, left), "");
  /* Every value before any store, as the epilogues. */
  LLVMValueRef x = epi_eval(e, k->args[0]);
  for (int o = 0; o < nouts; o++) vals[o] = epi_eval(e, k->args[first_out + o]);
  epi_masked_store(e, lw_gep(L, L->f32, dst, j0), x);
  for (int o = 0; o < nouts; o++) epi_store(e, lw_in(L, first_out + o), vals[o]);
  lw_next(L, &lv);
}

void lw_epilogue_store(Epilogue *e, LLVMValueRef rowflat, LLVMValueRef j0, LLVMValueRef mask,
                       LLVMValueRef v) {
  Kernel *k = e->k;
  e->gen++;
  e->rowflat = rowflat, e->j0 = j0, e->mask = mask, e->v = v;
  int first_out = k->epi_args + k->nreads + k->pro_outs, nouts = k->nargs - first_out;
  LLVMValueRef vals[64];
  IR_ASSERT(nouts <= 64, "llvm: %s has %d epilogue outputs", k->name, nouts);
  /* Every value before any store: an output may share its input's address. */
  for (int o = 0; o < nouts; o++) vals[o] = epi_eval(e, k->args[first_out + o]);
  if (k->anchor_store && e->space == &e->anchor->type) epi_store(e, lw_out(e->L), v);
  for (int o = 0; o < nouts; o++) epi_store(e, lw_in(e->L, first_out + o), vals[o]);
}
