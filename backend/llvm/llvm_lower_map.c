/* llvm_lower_map.c - elementwise kernels: unary math, broadcasting binary ops, constants, masks. */
#include <math.h>

#include "llvm_priv.h"

/* Work per thread chunk, in element-operations: smaller chunks cost more in
 * synchronization than they gain. */
#define MAP_CHUNK_WORK 32768

static LLVMValueRef K(Lower *L, LLVMValueRef like, double v) {
  return lw_fc(L, LLVMTypeOf(like), v);
}

/* The op's value on x[] (its operands, in the output's float type). */
LLVMValueRef lw_map_value(Lower *L, const Node *n, LLVMValueRef *x) {
  switch ((int)n->op) { /* the elementwise subset; others never reach here */
  case OP_CONST:
    return lw_fc(L, lw_elt(L, n->type.dtype), ir_attr_float(n, "value"));
  case OP_NEG:
    return lw_fneg(L, x[0]);
  case OP_RELU: /* x < 0 ? 0 : x, NaN kept */
    return lw_select(L, lw_fcmp(L, LLVMRealOLT, x[0], K(L, x[0], 0.0)), K(L, x[0], 0.0), x[0]);
  case OP_SIGMOID:
    return lw_sigmoid(L, x[0]);
  case OP_TANH:
    return lw_tanh(L, x[0]);
  case OP_EXP:
    return lw_exp(L, x[0]);
  case OP_LOG:
    return lw_log(L, x[0]);
  case OP_SQRT:
    return lw_sqrt(L, x[0]);
  case OP_RSQRT:
    return lw_fdiv(L, K(L, x[0], 1.0), lw_sqrt(L, x[0]));
  case OP_ABS:
    return lw_intrinsic1(L, "llvm.fabs", x[0]);
  case OP_GELU:
    return lw_gelu(L, x[0]);
  case OP_SILU:
    return lw_fmul(L, x[0], lw_sigmoid(L, x[0]));
  case OP_POW:
    return lw_pow(L, x[0], ir_attr_float(n, "exponent"));
  case OP_ADD:
    return lw_fadd(L, x[0], x[1]);
  case OP_SUB:
    return lw_fsub(L, x[0], x[1]);
  case OP_MUL:
    return lw_fmul(L, x[0], x[1]);
  case OP_DIV:
    return lw_fdiv(L, x[0], x[1]);
  case OP_MAXIMUM:
    return lw_fmax_nan(L, x[0], x[1]);
  case OP_MINIMUM:
    return lw_fmin_nan(L, x[0], x[1]);
  case OP_GREATER:
    return lw_select(L, lw_fcmp(L, LLVMRealOGT, x[0], x[1]), K(L, x[0], 1.0), K(L, x[0], 0.0));
  case OP_EQUAL:
    return lw_select(L, lw_fcmp(L, LLVMRealOEQ, x[0], x[1]), K(L, x[0], 1.0), K(L, x[0], 0.0));
  case OP_GELU_GRAD:
    return lw_gelu_grad(L, x[0], x[1]);
  default:
    ir_fatal("llvm: %s is not an elementwise op", ir_op_name(n->op));
  }
}

int64_t llvm_map_cost(OpKind op) {
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

/* Operand i of the node: a constant folded into the code, or a buffer read
 * at an offset. */
static LLVMValueRef operand(Lower *L, const Node *n, int i, LLVMValueRef idx, LLVMTypeRef ft) {
  const Node *a = n->in[i];
  if (a->op == OP_CONST) return lw_fc(L, ft, ir_attr_float(a, "value"));
  return lw_fconv(L, lw_load(L, lw_elt(L, a->type.dtype), lw_in(L, i), idx), ft);
}

/* Strides of in read as the trailing dims of out (NumPy broadcasting): 0
 * where in has size 1 or lacks the dim. */
static void broadcast_strides(const Type *in, const Type *out, int64_t *stride) {
  int64_t s = 1, own[IR_MAX_RANK];
  for (int d = in->rank - 1; d >= 0; d--) own[d] = s, s *= in->dims[d];
  for (int d = 0; d < out->rank; d++) {
    int k = in->rank - out->rank + d;
    stride[d] = k >= 0 && in->dims[k] != 1 ? own[k] : 0;
  }
}

void lower_map(Lower *L, Kernel *k) {
  const Node *n = k->out;
  const Type *ot = &n->type;
  LLVMTypeRef ft = lw_elt(L, ot->dtype);
  int64_t numel = ir_type_numel(ot);
  bool flat = true;
  for (int i = 0; i < n->nin; i++)
    if (n->in[i]->op != OP_CONST && ir_type_numel(&n->in[i]->type) != numel) flat = false;
  LLVMValueRef x[2];
  LwLoop outer, inner;
  if (flat || ot->rank == 0) {
    /* Same shapes (up to leading 1s): one flat loop, what the vectorizer likes best. */
    k->range = numel;
    k->min_chunk = MAP_CHUNK_WORK / llvm_map_cost(n->op);
    LLVMValueRef i = lw_outer(L, &outer);
    for (int a = 0; a < n->nin; a++) x[a] = operand(L, n, a, i, ft);
    lw_store(L, ft, lw_out(L), i, lw_map_value(L, n, x));
    lw_next(L, &outer);
    return;
  }
  /* Broadcasting: rows of the output's last dim; each operand's row offset
   * from the row index, its stride along the row 0 or 1. */
  int r = ot->rank;
  int64_t len = ot->dims[r - 1], stride[2][IR_MAX_RANK];
  for (int a = 0; a < n->nin; a++) broadcast_strides(&n->in[a]->type, ot, stride[a]);
  k->range = numel / len;
  k->min_chunk = MAP_CHUNK_WORK / (llvm_map_cost(n->op) * len) + 1;
  LLVMValueRef row = lw_outer(L, &outer);
  LLVMValueRef base[2];
  for (int a = 0; a < n->nin; a++) base[a] = lw_offset(L, row, r - 1, ot->dims, stride[a]);
  LLVMValueRef j = lw_for(L, &inner, lw_i64(L, 0), lw_i64(L, len));
  for (int a = 0; a < n->nin; a++)
    x[a] = operand(L, n, a, stride[a][r - 1] ? lw_add(L, base[a], j) : base[a], ft);
  lw_store(L, ft, lw_out(L), lw_add(L, lw_mulc(L, row, len), j), lw_map_value(L, n, x));
  lw_next(L, &inner);
  lw_next(L, &outer);
}

void lower_const(Lower *L, Kernel *k) { lower_map(L, k); }

/* causal_mask(n): out[i, j] = 0 for j <= i, -inf above. */
void lower_causal_mask(Lower *L, Kernel *k) {
  const Type *t = &k->out->type;
  int64_t n = t->dims[0];
  LLVMTypeRef ft = lw_elt(L, t->dtype);
  k->range = n;
  k->min_chunk = n;
  LwLoop outer, inner;
  LLVMValueRef i = lw_outer(L, &outer);
  LLVMValueRef j = lw_for(L, &inner, lw_i64(L, 0), lw_i64(L, n));
  LLVMValueRef v = lw_select(L, LLVMBuildICmp(L->b, LLVMIntSLE, j, i, ""), lw_fc(L, ft, 0.0),
                             lw_fc(L, ft, -INFINITY));
  lw_store(L, ft, lw_out(L), lw_add(L, lw_mulc(L, i, n), j), v);
  lw_next(L, &inner);
  lw_next(L, &outer);
}

void lower_source(Lower *L, Kernel *k) {
  ir_fatal("llvm: source %s has no kernel", ir_op_name(k->out->op));
}
