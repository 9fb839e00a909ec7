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

#include "llvm_priv.h"

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

static int64_t fused_cost(OpKind op) {
  switch ((int)op) {
  case OP_SIGMOID:
  case OP_TANH:
  case OP_EXP:
  case OP_LOG:
  case OP_SILU:
  case OP_POW:
    return 16;
  case OP_GELU:
  case OP_GELU_GRAD:
    return 40;
  default:
    return 1;
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

/* n's value at flat index idx, in n's own element type. */
static LLVMValueRef fz_eval(Fz *f, const Node *n, LLVMValueRef idx) {
  Lower *L = f->L;
  if (f->cidx[n->id] == idx) return f->cval[n->id];
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  LLVMValueRef v;
  int a = fz_arg(f->k, n, 0, f->k->nreads);
  if (a >= 0) {
    v = lw_load(L, ft, lw_in(L, a), idx);
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
  for (int i = 0; i < k->nnodes; i++) cost += fused_cost(k->nodes[i]->op);
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
