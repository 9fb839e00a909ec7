/* llvm_ir.c - small builders over the LLVM C API: constants, buffers, loops, locals, index math. */
#include <string.h>

#include <llvm-c/DebugInfo.h>

#include "llvm_priv.h"

/* ---- Constants and buffers ---------------------------------------------- */

LLVMTypeRef lw_elt(Lower *L, DType dt) {
  switch (dt) {
  case DT_F32:
    return L->f32;
  case DT_F64:
    return L->f64;
  case DT_I32:
    return L->i32;
  case DT_COUNT:
    break;
  }
  ir_fatal("llvm: a value has no dtype");
}

LLVMValueRef lw_i64(Lower *L, int64_t v) { return LLVMConstInt(L->i64, (unsigned long long)v, 1); }
LLVMValueRef lw_i32(Lower *L, int32_t v) { return LLVMConstInt(L->i32, (unsigned long long)v, 1); }
LLVMValueRef lw_fc(Lower *L, LLVMTypeRef ty, double v) { return LLVMConstReal(ty, v); }

LLVMValueRef lw_gep(Lower *L, LLVMTypeRef ty, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(L->b, ty, base, &idx, 1, "");
}

LLVMValueRef lw_load(Lower *L, LLVMTypeRef ty, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildLoad2(L->b, ty, lw_gep(L, ty, base, idx), "");
}

void lw_store(Lower *L, LLVMTypeRef ty, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v) {
  LLVMBuildStore(L->b, v, lw_gep(L, ty, base, idx));
}

LLVMValueRef lw_in(Lower *L, int i) {
  IR_ASSERT(i >= 0 && i < L->k->nargs, "llvm: kernel %s has no argument %d", L->k->name, i);
  return L->bufs[i];
}
LLVMValueRef lw_out(Lower *L) { return L->bufs[L->k->nargs]; }
LLVMValueRef lw_scratch(Lower *L) { return L->bufs[L->k->nargs + 2]; }

LLVMValueRef lw_load_index(Lower *L, int arg, LLVMValueRef p, int64_t limit, LLVMValueRef *bad) {
  LLVMValueRef id = LLVMBuildSExt(L->b, lw_load(L, L->i32, lw_in(L, arg), p), L->i64, "");
  *bad = LLVMBuildICmp(L->b, LLVMIntUGE, id, lw_i64(L, limit), "");
  return id;
}

void lw_range_error(Lower *L) {
  LLVMValueRef st = LLVMBuildStore(L->b, lw_i32(L, KILN_ERR_RANGE), L->bufs[L->k->nargs + 1]);
  LLVMSetOrdering(st, LLVMAtomicOrderingMonotonic);
  LLVMSetAlignment(st, 4);
}

/* ---- Control flow ------------------------------------------------------- */

static LLVMBasicBlockRef new_block(Lower *L, const char *name) {
  return LLVMAppendBasicBlockInContext(L->ctx, L->fn, name);
}

LLVMValueRef lw_for(Lower *L, LwLoop *lp, LLVMValueRef from, LLVMValueRef to) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(L->b);
  lp->head = new_block(L, "loop");
  LLVMBasicBlockRef body = new_block(L, "body");
  lp->exit = new_block(L, "done");
  LLVMBuildBr(L->b, lp->head);
  LLVMPositionBuilderAtEnd(L->b, lp->head);
  lp->i = LLVMBuildPhi(L->b, LLVMTypeOf(from), "i");
  LLVMAddIncoming(lp->i, &from, &pre, 1);
  LLVMBuildCondBr(L->b, LLVMBuildICmp(L->b, LLVMIntSLT, lp->i, to, ""), body, lp->exit);
  LLVMPositionBuilderAtEnd(L->b, body);
  return lp->i;
}

/* !llvm.loop !{!self, !{"llvm.loop.unroll.disable"}} on a loop's back edge. */
static void no_unroll(Lower *L, LLVMValueRef br) {
  static const char key[] = "llvm.loop.unroll.disable";
  LLVMMetadataRef s = LLVMMDStringInContext2(L->ctx, key, sizeof key - 1);
  LLVMMetadataRef ops[2] = {LLVMTemporaryMDNode(L->ctx, NULL, 0),
                            LLVMMDNodeInContext2(L->ctx, &s, 1)};
  LLVMMetadataRef loop = LLVMMDNodeInContext2(L->ctx, ops, 2);
  LLVMMetadataReplaceAllUsesWith(ops[0], loop);
  LLVMSetMetadata(br, LLVMGetMDKindIDInContext(L->ctx, "llvm.loop", 9),
                  LLVMMetadataAsValue(L->ctx, loop));
}

void lw_next(Lower *L, LwLoop *lp) {
  LLVMValueRef next = LLVMBuildNSWAdd(L->b, lp->i, LLVMConstInt(LLVMTypeOf(lp->i), 1, 0), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(L->b);
  LLVMAddIncoming(lp->i, &next, &latch, 1);
  LLVMValueRef br = LLVMBuildBr(L->b, lp->head);
  if (L->no_unroll) no_unroll(L, br);
  LLVMPositionBuilderAtEnd(L->b, lp->exit);
}

LLVMValueRef lw_outer(Lower *L, LwLoop *lp) { return lw_for(L, lp, L->begin, L->end); }

void lw_if(Lower *L, LwIf *c, LLVMValueRef cond) {
  c->then_bb = new_block(L, "then");
  c->else_bb = new_block(L, "else");
  c->done = NULL;
  LLVMBuildCondBr(L->b, cond, c->then_bb, c->else_bb);
  LLVMPositionBuilderAtEnd(L->b, c->then_bb);
}

void lw_else(Lower *L, LwIf *c) {
  c->done = new_block(L, "endif");
  LLVMBuildBr(L->b, c->done);
  LLVMPositionBuilderAtEnd(L->b, c->else_bb);
}

void lw_endif(Lower *L, LwIf *c) {
  if (!c->done) { /* no else: the else block is the join */
    LLVMBuildBr(L->b, c->else_bb);
    LLVMPositionBuilderAtEnd(L->b, c->else_bb);
    return;
  }
  LLVMBuildBr(L->b, c->done);
  LLVMPositionBuilderAtEnd(L->b, c->done);
}

/* An alloca of ty at the top of the kernel's entry block (so SROA and the stack frame see it
 * once), the builder left where it was. */
static LLVMValueRef entry_alloca(Lower *L, LLVMTypeRef ty, const char *name) {
  LLVMBasicBlockRef here = LLVMGetInsertBlock(L->b);
  LLVMValueRef first = LLVMGetFirstInstruction(L->entry_bb);
  if (first)
    LLVMPositionBuilderBefore(L->b, first);
  else
    LLVMPositionBuilderAtEnd(L->b, L->entry_bb);
  LLVMValueRef v = LLVMBuildAlloca(L->b, ty, name);
  LLVMPositionBuilderAtEnd(L->b, here);
  return v;
}

LLVMValueRef lw_private_constant(Lower *L, LLVMValueRef init, const char *name) {
  LLVMValueRef g = LLVMAddGlobal(L->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetUnnamedAddr(g, 1);
  return g;
}

LLVMValueRef lw_stack(Lower *L, LLVMTypeRef elt, int64_t count) {
  LLVMValueRef v = entry_alloca(L, LLVMArrayType2(elt, (uint64_t)count), "stack");
  LLVMSetAlignment(v, 64);
  return v;
}

LLVMValueRef lw_var(Lower *L, LLVMTypeRef ty, LLVMValueRef init) {
  LLVMValueRef v = entry_alloca(L, ty, "");
  LLVMBuildStore(L->b, init, v);
  return v;
}

LLVMValueRef lw_get(Lower *L, LLVMTypeRef ty, LLVMValueRef var) {
  return LLVMBuildLoad2(L->b, ty, var, "");
}
void lw_set(Lower *L, LLVMValueRef var, LLVMValueRef v) { LLVMBuildStore(L->b, v, var); }

/* ---- Integers ----------------------------------------------------------- */

LLVMValueRef lw_add(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildNSWAdd(L->b, a, b, "");
}
LLVMValueRef lw_mul(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildNSWMul(L->b, a, b, "");
}
LLVMValueRef lw_addc(Lower *L, LLVMValueRef a, int64_t c) {
  return c ? lw_add(L, a, lw_i64(L, c)) : a;
}
LLVMValueRef lw_mulc(Lower *L, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : lw_mul(L, a, lw_i64(L, c));
}
LLVMValueRef lw_divc(Lower *L, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : LLVMBuildUDiv(L->b, a, lw_i64(L, c), "");
}
LLVMValueRef lw_remc(Lower *L, LLVMValueRef a, int64_t c) {
  return c == 1 ? lw_i64(L, 0) : LLVMBuildURem(L->b, a, lw_i64(L, c), "");
}
LLVMValueRef lw_smax(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(L->b, LLVMBuildICmp(L->b, LLVMIntSGT, a, b, ""), a, b, "");
}
LLVMValueRef lw_smin(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(L->b, LLVMBuildICmp(L->b, LLVMIntSLT, a, b, ""), a, b, "");
}

LLVMValueRef lw_offset(Lower *L, LLVMValueRef flat, int rank, const int64_t *dims,
                       const int64_t *stride) {
  LLVMValueRef off = lw_i64(L, 0);
  for (int d = rank - 1; d >= 0; d--) {
    if (dims[d] == 1) continue;
    LLVMValueRef idx = d > 0 ? lw_remc(L, flat, dims[d]) : flat;
    if (stride[d]) off = lw_add(L, off, lw_mulc(L, idx, stride[d]));
    if (d > 0) flat = lw_divc(L, flat, dims[d]);
  }
  return off;
}

/* ---- Floats ------------------------------------------------------------- */

static LLVMValueRef with_flags(LLVMValueRef v, LLVMFastMathFlags f) {
  if (LLVMCanValueUseFastMathFlags(v)) LLVMSetFastMathFlags(v, f);
  return v;
}

LLVMValueRef lw_fadd(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return with_flags(LLVMBuildFAdd(L->b, a, b, ""), LLVMFastMathAllowContract);
}
LLVMValueRef lw_fsub(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return with_flags(LLVMBuildFSub(L->b, a, b, ""), LLVMFastMathAllowContract);
}
LLVMValueRef lw_fmul(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return with_flags(LLVMBuildFMul(L->b, a, b, ""), LLVMFastMathAllowContract);
}
LLVMValueRef lw_fdiv(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFDiv(L->b, a, b, "");
}
LLVMValueRef lw_fadd_r(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  return with_flags(LLVMBuildFAdd(L->b, a, b, ""),
                    LLVMFastMathAllowContract | LLVMFastMathAllowReassoc);
}
LLVMValueRef lw_fneg(Lower *L, LLVMValueRef a) { return LLVMBuildFNeg(L->b, a, ""); }
LLVMValueRef lw_select(Lower *L, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(L->b, c, a, b, "");
}
LLVMValueRef lw_fcmp(Lower *L, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(L->b, p, a, b, "");
}
LLVMValueRef lw_isnan(Lower *L, LLVMValueRef x) { return lw_fcmp(L, LLVMRealUNO, x, x); }

LLVMValueRef lw_fmax_nan(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef m = lw_select(L, lw_fcmp(L, LLVMRealOGT, a, b), a, b);
  return lw_select(L, lw_fcmp(L, LLVMRealUNO, a, b), lw_fadd(L, a, b), m);
}
LLVMValueRef lw_fmin_nan(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef m = lw_select(L, lw_fcmp(L, LLVMRealOLT, a, b), a, b);
  return lw_select(L, lw_fcmp(L, LLVMRealUNO, a, b), lw_fadd(L, a, b), m);
}
LLVMValueRef lw_max_step(Lower *L, LLVMValueRef acc, LLVMValueRef x) {
  /* x > acc is false for a NaN x; UGT is "greater or unordered". With acc
   * NaN already, x > NaN is unordered too and the NaN would be replaced, so
   * keep a NaN acc. */
  LLVMValueRef take =
      LLVMBuildAnd(L->b, lw_fcmp(L, LLVMRealUGT, x, acc), lw_fcmp(L, LLVMRealORD, acc, acc), "");
  return lw_select(L, take, x, acc);
}

LLVMValueRef lw_fconv(Lower *L, LLVMValueRef x, LLVMTypeRef to) {
  LLVMTypeRef from = LLVMTypeOf(x);
  if (from == to) return x;
  if (LLVMGetTypeKind(from) == LLVMIntegerTypeKind) return LLVMBuildSIToFP(L->b, x, to, "");
  return LLVMBuildFPCast(L->b, x, to, "");
}

static LLVMValueRef intrinsic(Lower *L, const char *name, LLVMTypeRef *over, int nover,
                              LLVMValueRef *args, int nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  IR_ASSERT(id != 0, "llvm: no intrinsic %s", name);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(L->mod, id, over, (size_t)nover);
  LLVMTypeRef ft = LLVMIntrinsicGetType(L->ctx, id, over, (size_t)nover);
  return LLVMBuildCall2(L->b, ft, f, args, (unsigned)nargs, "");
}

LLVMValueRef lw_intrinsic1(Lower *L, const char *name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return intrinsic(L, name, &t, 1, &x, 1);
}

LLVMValueRef lw_intrinsic2(Lower *L, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef args[2] = {x, y};
  return intrinsic(L, name, &t, 1, args, 2);
}

void lw_zero(Lower *L, LLVMValueRef dst, LLVMValueRef bytes) {
  LLVMTypeRef over[2] = {L->ptr, L->i64};
  LLVMValueRef args[4] = {dst, LLVMConstInt(L->i8, 0, 0), bytes, LLVMConstInt(L->i1, 0, 0)};
  intrinsic(L, "llvm.memset", over, 2, args, 4);
}

void lw_copy(Lower *L, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef bytes) {
  LLVMTypeRef over[3] = {L->ptr, L->ptr, L->i64};
  LLVMValueRef args[4] = {dst, src, bytes, LLVMConstInt(L->i1, 0, 0)};
  intrinsic(L, "llvm.memcpy", over, 3, args, 4);
}
