/* llvm_view.c - inline views read in place, and constants kept in the module.
 *
 * A chain of inline reshapes, permutes and slices over a value with a place
 * in memory moves no data: its elements are the source's at offset + sum of
 * digit * stride. The chain is composed bottom up into atoms (size, stride):
 * the top's elements in C order are the mixed-radix numbers over the atoms,
 * innermost last, and top dim d owns a run of them. A permute reorders the
 * runs; a slice moves the offset and shortens one atom; a reshape regroups
 * the atoms, splitting one where a new dim boundary falls inside it (legal
 * only when the sizes divide). Chains that no atoms describe are computed
 * into scratch as before (llvm_layout.c). */
#include "llvm_priv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool llvm_view_map_op(OpKind op) {
  return op == OP_GELU || op == OP_SILU || op == OP_TANH || op == OP_SIGMOID || op == OP_RELU ||
         op == OP_NEG || op == OP_ABS || op == OP_EXP;
}

static bool view_op(const Node *n) {
  if (n->kernel != IR_KERNEL_INLINE || n->nin != 1) return false;
  if (n->in[0]->type.dtype != n->type.dtype) return false;
  if (llvm_view_map_op(n->op)) return n->type.dtype == DT_F32;
  return n->op == OP_RESHAPE || n->op == OP_PERMUTE || n->op == OP_SLICE;
}

LLVMValueRef lw_view_maps(Lower *L, const View *v, LLVMValueRef x) {
  for (int i = 0; i < v->nmaps; i++) x = lw_map_value(L, v->maps[i], &x);
  return x;
}

bool llvm_view_node(const Node *n) { return view_op(n); }

static bool push_atom(View *v, int64_t size, int64_t stride) {
  if (v->natoms == VIEW_MAX_ATOMS) return false;
  v->size[v->natoms] = size;
  v->stride[v->natoms] = stride;
  v->natoms++;
  return true;
}

void llvm_view_plain(const Type *t, View *v) {
  int64_t s = 1;
  v->src = NULL;
  v->offset = 0;
  v->nmaps = 0;
  v->natoms = t->rank;
  for (int d = t->rank - 1; d >= 0; d--) {
    v->size[d] = t->dims[d], v->stride[d] = s, s *= t->dims[d];
    v->first[d] = d;
  }
  v->first[t->rank] = t->rank;
  v->rank = t->rank;
}

static bool view_permute(View *v, const Node *n) {
  const AttrVal *perm = ir_attr_c(n, "perm");
  View o = *v;
  v->natoms = 0;
  for (int d = 0; d < o.rank; d++) {
    int s = (int)perm->i[d];
    v->first[d] = v->natoms;
    for (int a = o.first[s]; a < o.first[s + 1]; a++)
      if (!push_atom(v, o.size[a], o.stride[a])) return false;
  }
  v->first[o.rank] = v->natoms;
  return true;
}

/* A slice keeps the rank; a dim it narrows must be one atom. */
static bool view_slice(View *v, const Node *n) {
  const AttrVal *begin = ir_attr_c(n, "begin");
  for (int d = 0; d < v->rank; d++) {
    int64_t len = n->type.dims[d], b = begin->i[d];
    if (len == n->in[0]->type.dims[d]) continue;
    if (v->first[d + 1] - v->first[d] != 1) return false;
    int a = v->first[d];
    v->offset += b * v->stride[a];
    v->size[a] = len;
  }
  return true;
}

/* Regroups the atoms (size-1 atoms dropped, mergeable neighbours merged)
 * into the new dims. */
static bool view_reshape(View *v, const Type *t) {
  View o = *v;
  int n = 0;
  for (int a = 0; a < o.natoms; a++) {
    if (o.size[a] == 1) continue;
    if (n > 0 && o.stride[n - 1] == o.size[a] * o.stride[a]) {
      o.size[n - 1] *= o.size[a], o.stride[n - 1] = o.stride[a];
    } else {
      o.size[n] = o.size[a], o.stride[n] = o.stride[a], n++;
    }
  }
  v->natoms = 0;
  int a = 0;
  for (int d = 0; d < t->rank; d++) {
    int64_t left = t->dims[d];
    v->first[d] = v->natoms;
    while (left > 1) {
      if (a == n) return false;
      if (o.size[a] <= left) {
        if (left % o.size[a]) return false;
        left /= o.size[a];
        if (!push_atom(v, o.size[a], o.stride[a])) return false;
        a++;
      } else {
        if (o.size[a] % left) return false;
        if (!push_atom(v, left, o.stride[a] * (o.size[a] / left))) return false;
        o.size[a] /= left;
        left = 1;
      }
    }
  }
  v->first[t->rank] = v->natoms;
  v->rank = t->rank;
  return a == n;
}

bool llvm_view_of(const Node *top, View *v) {
  const Node *chain[64];
  int n = 0;
  const Node *x = top;
  while (view_op(x)) {
    if (n == (int)(sizeof chain / sizeof chain[0])) return false;
    chain[n++] = x;
    x = x->in[0];
  }
  if (n == 0) return false;
  memset(v, 0, sizeof *v);
  llvm_view_plain(&x->type, v);
  v->src = x;
  for (int i = n - 1; i >= 0; i--) {
    const Node *c = chain[i];
    if (llvm_view_map_op(c->op)) {
      if (v->nmaps == VIEW_MAX_MAPS) return false;
      v->maps[v->nmaps++] = c;
      continue;
    }
    bool ok = c->op == OP_PERMUTE ? view_permute(v, c)
              : c->op == OP_SLICE ? view_slice(v, c)
                                  : view_reshape(v, &c->type);
    if (!ok) return false;
  }
  return true;
}

bool llvm_view_contiguous(const View *v) {
  int64_t next = 0; /* the stride the next atom needs, 0: none yet */
  for (int a = v->natoms - 1; a >= 0; a--) {
    if (v->size[a] == 1) continue;
    if (v->stride[a] != (next ? next : 1)) return false;
    next = v->stride[a] * v->size[a];
  }
  return true;
}

bool llvm_view_single(const View *v, int d, int64_t *stride) {
  int64_t s = 0;
  int n = 0;
  for (int a = v->first[d]; a < v->first[d + 1]; a++)
    if (v->size[a] != 1) s = v->stride[a], n++;
  if (n > 1) return false;
  *stride = s;
  return true;
}

LLVMValueRef lw_view_digit(Lower *L, const View *v, int d, LLVMValueRef x) {
  LLVMValueRef off = lw_i64(L, 0);
  int64_t inner = 1;
  for (int a = v->first[d + 1] - 1; a >= v->first[d]; a--) {
    if (v->size[a] == 1) continue;
    LLVMValueRef q = inner > 1 ? lw_divc(L, x, inner) : x;
    if (a > v->first[d]) q = lw_remc(L, q, v->size[a]);
    off = lw_add(L, off, lw_mulc(L, q, v->stride[a]));
    inner *= v->size[a];
  }
  return off;
}

/* ---- Constants in the module --------------------------------------------- */

#define CONST_GLOBAL_BYTES (64 * 1024)

bool llvm_const_global(const Node *n) {
  if (n->kernel != IR_KERNEL_INLINE || (n->op != OP_CONST && n->op != OP_CAUSAL_MASK)) return false;
  DType dt = n->type.dtype;
  if (dt != DT_F32 && dt != DT_F64 && dt != DT_I32) return false;
  return ir_type_numel(&n->type) * (int64_t)ir_dtype_size(dt) <= CONST_GLOBAL_BYTES;
}

static LLVMValueRef const_elt(Lower *L, LLVMTypeRef et, DType dt, double v) {
  return dt == DT_I32 ? LLVMConstInt(et, (unsigned long long)(int64_t)v, 1) : LLVMConstReal(et, v);
}

LLVMValueRef lw_const_global(Lower *L, const Node *n) {
  char name[64];
  snprintf(name, sizeof name, "kiln_const%d", n->id);
  LLVMValueRef g = LLVMGetNamedGlobal(L->mod, name);
  if (g) return g;
  DType dt = n->type.dtype;
  LLVMTypeRef et = lw_elt(L, dt);
  int64_t numel = ir_type_numel(&n->type);
  LLVMValueRef *vals = malloc((size_t)(numel ? numel : 1) * sizeof *vals);
  IR_ASSERT(vals, "llvm: out of memory");
  if (n->op == OP_CONST) {
    LLVMValueRef c = const_elt(L, et, dt, ir_attr_float(n, "value"));
    for (int64_t i = 0; i < numel; i++) vals[i] = c;
  } else { /* causal_mask [s, s]: 0 on and below the diagonal, -inf above */
    int64_t s = n->type.dims[0];
    for (int64_t i = 0; i < numel; i++)
      vals[i] = const_elt(L, et, dt, i % s <= i / s ? 0.0 : -INFINITY);
  }
  LLVMValueRef init = LLVMConstArray2(et, vals, (uint64_t)numel);
  free(vals);
  g = lw_private_constant(L, init, name);
  LLVMSetAlignment(g, 64);
  return g;
}
