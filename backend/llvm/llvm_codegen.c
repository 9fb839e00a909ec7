/* llvm_codegen.c - a Program to one LLVM module: kernel functions, entry points, the descriptor,
 * the runtime wrappers.
 *
 * Calling convention, as built:
 *   kernel   void kiln_k<N>_<op>(ptr ctx, i64 begin, i64 end), internal; ctx
 *            points to [args..., out, &instance.status, scratch] (pointers). It
 *            loads them and calls kiln_k<N>_<op>.body(noalias ptrs..., begin,
 *            end), which is always inlined: noalias then holds inside.
 *   entry    i32 m_infer(ptr self, ptr inputs..., ptr outputs...);
 *            i32 m_train_step / m_grad(ptr self, ptr inputs..., ptr loss).
 *            NULL anywhere: KILN_ERR_NULL before anything is touched. Then
 *            status = 0; every kernel of the entry's subset in order, through
 *            kiln_parallel_for(pool, kernel, ctx, range, min_chunk) when the
 *            range spans more than one chunk, else called directly; copies
 *            (outputs that are sources or repeated, the loss, gradients into
 *            their slots, then the updates); returns status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "llvm_priv.h"
#include "llvm_twin.h"

/* kiln_instance (runtime/kiln_rt.h): {desc, mem, pool, nthreads, status}. */
enum { INST_MEM = 1, INST_POOL = 2, INST_STATUS = 4 };

typedef struct Codegen {
  Lower L;
  LLVMTypeRef inst_t, tensor_t, desc_t, entry_t, task_t, pfor_t;
  LLVMValueRef pfor, desc;
  char *name; /* the model's symbol prefix */
} Codegen;

static char *cg_sym(Codegen *cg, const char *suffix, char *buf, size_t len) {
  snprintf(buf, len, "%s_%s", cg->name, suffix);
  return buf;
}

/* ---- Types -------------------------------------------------------------- */

static void cg_types(Codegen *cg) {
  Lower *L = &cg->L;
  LLVMContextRef c = L->ctx;
  L->i1 = LLVMInt1TypeInContext(c);
  L->i8 = LLVMInt8TypeInContext(c);
  L->i32 = LLVMInt32TypeInContext(c);
  L->i64 = LLVMInt64TypeInContext(c);
  L->f32 = LLVMFloatTypeInContext(c);
  L->f64 = LLVMDoubleTypeInContext(c);
  L->ptr = LLVMPointerTypeInContext(c, 0);
  L->voidt = LLVMVoidTypeInContext(c);
  LLVMTypeRef p = L->ptr, i32 = L->i32, i64 = L->i64;
  LLVMTypeRef inst[] = {p, p, p, i32, i32};
  cg->inst_t = LLVMStructTypeInContext(c, inst, 5, 0);
  LLVMTypeRef tensor[] = {p, i32, i32, p, i64, i64, i32, i32, p};
  cg->tensor_t = LLVMStructTypeInContext(c, tensor, 9, 0);
  LLVMTypeRef entry[11] = {p, p, p, p, p, p, p, p, p, p, p};
  cg->entry_t = LLVMStructTypeInContext(c, entry, 11, 0);
  LLVMTypeRef desc[] = {i32, p,   i32, p,   i32, p,   i32, p,   i32,
                        p,   i32, p,   i32, p,   i32, i64, i64, cg->entry_t};
  cg->desc_t = LLVMStructTypeInContext(c, desc, 18, 0);
  LLVMTypeRef task[] = {p, i64, i64};
  cg->task_t = LLVMFunctionType(L->voidt, task, 3, 0);
  LLVMTypeRef pfor[] = {p, p, p, i64, i64};
  cg->pfor_t = LLVMFunctionType(L->voidt, pfor, 5, 0);
  cg->pfor = LLVMGetNamedFunction(L->mod, "kiln_parallel_for");
  if (!cg->pfor) cg->pfor = LLVMAddFunction(L->mod, "kiln_parallel_for", cg->pfor_t);
}

static void add_attr(Lower *L, LLVMValueRef fn, LLVMAttributeIndex at, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, at, LLVMCreateEnumAttribute(L->ctx, kind, 0));
}

static void add_str_attr(Lower *L, LLVMValueRef fn, const char *k, const char *v) {
  LLVMAddAttributeAtIndex(
      fn, LLVMAttributeFunctionIndex,
      LLVMCreateStringAttribute(L->ctx, k, (unsigned)strlen(k), v, (unsigned)strlen(v)));
}

/* ---- Kernels ------------------------------------------------------------ */

/* Buffer i of a kernel (args..., out): its byte range in mem, or false when
 * it lives elsewhere (an input, caller memory). */
static bool buf_range(const Program *p, const Kernel *k, int i, int64_t *lo, int64_t *hi) {
  const Node *n = i < k->nargs ? k->args[i] : k->out;
  const Node *src = i < k->nargs && k->via && k->via[i] ? k->via[i] : n;
  int64_t at = k->at ? k->at[i] : -1;
  if (at < 0 && src->op != OP_INPUT && !llvm_const_global(src)) at = p->layout.offset[src->id];
  if (at < 0) return false;
  if (src != n) at += k->shift[i];
  *lo = at;
  *hi = at + ir_type_numel(&n->type) * (int64_t)ir_dtype_size(n->type.dtype);
  return true;
}

/* Buffer i shares bytes with another buffer of the kernel (in place, or an
 * update written into its target): it must not be noalias. */
static bool buf_aliased(const Program *p, const Kernel *k, int i) {
  int64_t lo, hi, lo2, hi2;
  if (!buf_range(p, k, i, &lo, &hi)) return false;
  for (int j = 0; j <= k->nargs; j++)
    if (j != i && buf_range(p, k, j, &lo2, &hi2) && lo < hi2 && lo2 < hi) return true;
  return false;
}

/* The body: (noalias ptr x nbufs, i64 begin, i64 end), always inlined. */
static LLVMValueRef cg_kernel_body(Codegen *cg, Kernel *k, int nbufs) {
  Lower *L = &cg->L;
  LLVMTypeRef params[IR_MAX_ATTR_LEN + 64];
  IR_ASSERT(nbufs + 2 <= (int)(sizeof params / sizeof params[0]),
            "llvm: kernel %s has %d buffers, more than the backend supports", k->name, nbufs);
  for (int i = 0; i < nbufs; i++) params[i] = L->ptr;
  params[nbufs] = params[nbufs + 1] = L->i64;
  char name[96];
  snprintf(name, sizeof name, "%s.body", k->name);
  LLVMValueRef fn =
      LLVMAddFunction(L->mod, name, LLVMFunctionType(L->voidt, params, (unsigned)nbufs + 2, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  add_attr(L, fn, LLVMAttributeFunctionIndex, "alwaysinline");
  add_attr(L, fn, LLVMAttributeFunctionIndex, "nounwind");
  for (int i = 0; i < nbufs; i++)
    if (i > k->nargs || !buf_aliased(L->p, k, i))
      add_attr(L, fn, (LLVMAttributeIndex)(i + 1), "noalias");
  if (L->avx512) add_str_attr(L, fn, "prefer-vector-width", "512");
  return fn;
}

/* kiln_k<N>_<op>(ctx, begin, end): loads the buffer pointers, calls the body. */
static void cg_kernel_wrapper(Codegen *cg, Kernel *k, LLVMValueRef body, int nbufs) {
  Lower *L = &cg->L;
  k->fn = LLVMAddFunction(L->mod, k->name, cg->task_t);
  LLVMSetLinkage(k->fn, LLVMInternalLinkage);
  add_attr(L, k->fn, LLVMAttributeFunctionIndex, "nounwind");
  /* Kept out of line: inlining hundreds of small kernels into an entry point
   * costs compile time and buys nothing measurable. */
  add_attr(L, k->fn, LLVMAttributeFunctionIndex, "noinline");
  if (L->avx512) add_str_attr(L, k->fn, "prefer-vector-width", "512");
  LLVMPositionBuilderAtEnd(L->b, LLVMAppendBasicBlockInContext(L->ctx, k->fn, "entry"));
  LLVMValueRef args[IR_MAX_ATTR_LEN + 64];
  LLVMValueRef ctx = LLVMGetParam(k->fn, 0);
  for (int i = 0; i < nbufs; i++) args[i] = lw_load(L, L->ptr, ctx, lw_i64(L, i));
  args[nbufs] = LLVMGetParam(k->fn, 1);
  args[nbufs + 1] = LLVMGetParam(k->fn, 2);
  LLVMBuildCall2(L->b, LLVMGlobalGetValueType(body), body, args, (unsigned)nbufs + 2, "");
  LLVMBuildRetVoid(L->b);
}

/* A kernel on the GEMM template: its micro-kernel is unrolled by construction, so LLVM's loop
 * unrolling adds code (compile time: transformer -12% CPU) and no measurable speed. */
static bool gemm_kernel(const Node *n) {
  if (n->type.dtype != DT_F32) return false;
  return n->op == OP_MATMUL || n->op == OP_CONV2D || n->op == OP_CONV2D_GRAD_INPUT ||
         n->op == OP_CONV2D_GRAD_WEIGHT;
}

static void cg_kernel(Codegen *cg, Kernel *k) {
  Lower *L = &cg->L;
  int nbufs = k->nargs + 3;
  LLVMValueRef body = cg_kernel_body(cg, k, nbufs);
  LLVMValueRef bufs[IR_MAX_ATTR_LEN + 64];
  for (int i = 0; i < nbufs; i++) bufs[i] = LLVMGetParam(body, (unsigned)i);
  L->k = k;
  L->fn = body;
  L->bufs = bufs;
  L->begin = LLVMGetParam(body, (unsigned)nbufs);
  L->end = LLVMGetParam(body, (unsigned)nbufs + 1);
  L->entry_bb = LLVMAppendBasicBlockInContext(L->ctx, body, "entry");
  LLVMPositionBuilderAtEnd(L->b, L->entry_bb);
  LowerFn *lower = k->fused ? lower_fused : llvm_lowering(k->out->op);
  IR_ASSERT(lower, "llvm: op %s has no lowering", ir_op_name(k->out->op));
  L->no_unroll = !k->fused && gemm_kernel(k->out);
  lower(L, k);
  L->no_unroll = false;
  LLVMBuildRetVoid(L->b);
  if (k->min_chunk < 1) k->min_chunk = 1;
  L->bufs = NULL;
  cg_kernel_wrapper(cg, k, body, nbufs);
}

/* ---- Entry points ------------------------------------------------------- */

typedef struct Entry {
  EntryKind kind;
  LLVMValueRef fn, self, mem, pool, status;
  LLVMValueRef *in_arg;  /* by input index (declaration order): its argument or NULL */
  LLVMValueRef *out_arg; /* infer: by output */
  LLVMValueRef loss_arg;
  LLVMBasicBlockRef entry_bb;
} Entry;

/* Where node n's value is during this entry. */
static LLVMValueRef entry_ptr(Codegen *cg, Entry *e, const Node *n) {
  Lower *L = &cg->L;
  Program *p = L->p;
  if (n->op == OP_INPUT) {
    for (int i = 0; i < p->ninputs; i++)
      if (p->inputs[i] == n) {
        IR_ASSERT(e->in_arg[i], "llvm: entry %d reads input '%s', which it does not take",
                  (int)e->kind, n->name);
        return e->in_arg[i];
      }
  }
  if (e->kind == ENTRY_INFER && !ir_op_is_named_source(n->op))
    for (int i = 0; i < p->g->noutputs; i++)
      if (p->g->outputs[i].node == n) return e->out_arg[i];
  int64_t off = p->layout.offset[n->id];
  IR_ASSERT(off >= 0, "llvm: node %d (%s) has no place in memory", n->id, ir_op_name(n->op));
  return lw_gep(L, L->i8, e->mem, lw_i64(L, off));
}

static void entry_copy(Codegen *cg, LLVMValueRef dst, LLVMValueRef src, const Node *n) {
  int64_t bytes = ir_type_numel(&n->type) * (int64_t)ir_dtype_size(n->type.dtype);
  lw_copy(&cg->L, dst, src, lw_i64(&cg->L, bytes));
}

/* Buffer i of kernel k (args..., out) during this entry. */
static LLVMValueRef kernel_ptr(Codegen *cg, Entry *e, const Kernel *k, int i) {
  Lower *L = &cg->L;
  const Node *n = i < k->nargs ? k->args[i] : k->out;
  const Node *src = i < k->nargs && k->via && k->via[i] ? k->via[i] : n;
  LLVMValueRef ptr = k->at && k->at[i] >= 0   ? lw_gep(L, L->i8, e->mem, lw_i64(L, k->at[i]))
                     : llvm_const_global(src) ? lw_const_global(L, src)
                                              : entry_ptr(cg, e, src);
  return src != n && k->shift[i] ? lw_gep(L, L->i8, ptr, lw_i64(L, k->shift[i])) : ptr;
}

static void entry_run_kernel(Codegen *cg, Entry *e, Kernel *k) {
  Lower *L = &cg->L;
  int nbufs = k->nargs + 3;
  LLVMBasicBlockRef here = LLVMGetInsertBlock(L->b);
  LLVMPositionBuilderBefore(L->b, LLVMGetFirstInstruction(e->entry_bb));
  /* Named after the kernel: a twin's launch reads "call @<twin's function>(%<its own>.ctx)". */
  char name[96];
  snprintf(name, sizeof name, "%s.ctx", k->name);
  LLVMValueRef ctx = LLVMBuildArrayAlloca(L->b, L->ptr, lw_i64(L, nbufs), name);
  LLVMPositionBuilderAtEnd(L->b, here);
  /* An update written in place: not after an error (the step did not happen). */
  LLVMBasicBlockRef skip = NULL;
  if (k->writes_update && e->kind == ENTRY_TRAIN) {
    LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(L->ctx, e->fn, "update");
    skip = LLVMAppendBasicBlockInContext(L->ctx, e->fn, "next");
    LLVMValueRef st = LLVMBuildLoad2(L->b, L->i32, e->status, "");
    LLVMBuildCondBr(L->b, LLVMBuildICmp(L->b, LLVMIntEQ, st, lw_i32(L, 0), ""), run, skip);
    LLVMPositionBuilderAtEnd(L->b, run);
  }
  for (int i = 0; i <= k->nargs; i++)
    lw_store(L, L->ptr, ctx, lw_i64(L, i), kernel_ptr(cg, e, k, i));
  lw_store(L, L->ptr, ctx, lw_i64(L, k->nargs + 1), e->status);
  lw_store(L, L->ptr, ctx, lw_i64(L, k->nargs + 2),
           lw_gep(L, L->i8, e->mem, lw_i64(L, k->scratch_offset)));
  LLVMValueRef fn = k->twin ? k->twin->fn : k->fn; /* its own range, min_chunk and ctx */
  if (k->range > k->min_chunk) {
    LLVMValueRef a[5] = {e->pool, fn, ctx, lw_i64(L, k->range), lw_i64(L, k->min_chunk)};
    LLVMBuildCall2(L->b, cg->pfor_t, cg->pfor, a, 5, "");
  } else {
    LLVMValueRef a[3] = {ctx, lw_i64(L, 0), lw_i64(L, k->range)};
    LLVMBuildCall2(L->b, cg->task_t, fn, a, 3, "");
  }
  if (skip) {
    LLVMBuildBr(L->b, skip);
    LLVMPositionBuilderAtEnd(L->b, skip);
  }
}

/* Planned train step: update values that are sources are copied before any
 * kernel writes a target in place. */
static void entry_snapshots(Codegen *cg, Entry *e) {
  Lower *L = &cg->L;
  Program *p = L->p;
  for (int k = 0; k < p->g->nupdates; k++)
    if (p->layout.snap_offset[k] >= 0)
      entry_copy(cg, lw_gep(L, L->i8, e->mem, lw_i64(L, p->layout.snap_offset[k])),
                 entry_ptr(cg, e, p->g->updates[k].value), p->g->updates[k].value);
}

/* After the kernels: outputs not written in place, the loss, gradients, updates. */
static void entry_finish(Codegen *cg, Entry *e) {
  Lower *L = &cg->L;
  Program *p = L->p;
  const Graph *g = p->g;
  if (e->kind == ENTRY_INFER) {
    for (int i = 0; i < g->noutputs; i++) {
      const Node *n = g->outputs[i].node;
      LLVMValueRef at = entry_ptr(cg, e, n);
      if (at != e->out_arg[i]) entry_copy(cg, e->out_arg[i], at, n);
    }
    return;
  }
  LLVMValueRef loss =
      LLVMBuildLoad2(L->b, lw_elt(L, g->loss->type.dtype), entry_ptr(cg, e, g->loss), "");
  LLVMBuildStore(L->b, lw_fconv(L, loss, L->f32), e->loss_arg);
  for (int i = 0; i < g->ngrads; i++) {
    int64_t off = p->layout.grad_offset[g->grads[i].param->id];
    if (p->layout.offset[g->grads[i].grad->id] == off) continue; /* written in place */
    entry_copy(cg, lw_gep(L, L->i8, e->mem, lw_i64(L, off)), entry_ptr(cg, e, g->grads[i].grad),
               g->grads[i].param);
  }
  if (e->kind != ENTRY_TRAIN || g->nupdates == 0) return;
  /* No update after a bad label or id: the step did not happen. */
  LLVMValueRef st = LLVMBuildLoad2(L->b, L->i32, e->status, "");
  LLVMBasicBlockRef apply = LLVMAppendBasicBlockInContext(L->ctx, e->fn, "updates");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(L->ctx, e->fn, "done");
  LLVMBuildCondBr(L->b, LLVMBuildICmp(L->b, LLVMIntEQ, st, lw_i32(L, 0), ""), apply, done);
  LLVMPositionBuilderAtEnd(L->b, apply);
  for (int k = 0; !p->planned && k < g->nupdates; k++) /* every read before any write */
    if (p->layout.snap_offset[k] >= 0)
      entry_copy(cg, lw_gep(L, L->i8, e->mem, lw_i64(L, p->layout.snap_offset[k])),
                 entry_ptr(cg, e, g->updates[k].value), g->updates[k].value);
  for (int k = 0; k < g->nupdates; k++) {
    const GraphUpdate *u = &g->updates[k];
    if (p->layout.offset[u->value->id] >= 0 &&
        p->layout.offset[u->value->id] == p->layout.offset[u->target->id])
      continue; /* written in place by its kernel */
    LLVMValueRef src = p->layout.snap_offset[k] >= 0
                           ? lw_gep(L, L->i8, e->mem, lw_i64(L, p->layout.snap_offset[k]))
                           : entry_ptr(cg, e, u->value);
    entry_copy(cg, entry_ptr(cg, e, u->target), src, u->target);
  }
  LLVMBuildBr(L->b, done);
  LLVMPositionBuilderAtEnd(L->b, done);
}

/* if (any pointer argument is NULL) return KILN_ERR_NULL; */
static void entry_null_checks(Codegen *cg, Entry *e, unsigned nargs) {
  Lower *L = &cg->L;
  LLVMValueRef any = LLVMConstInt(L->i1, 0, 0);
  for (unsigned i = 0; i < nargs; i++)
    any = LLVMBuildOr(L->b, any, LLVMBuildIsNull(L->b, LLVMGetParam(e->fn, i), ""), "");
  LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(L->ctx, e->fn, "null");
  LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(L->ctx, e->fn, "run");
  LLVMBuildCondBr(L->b, any, bad, ok);
  LLVMPositionBuilderAtEnd(L->b, bad);
  LLVMBuildRet(L->b, lw_i32(L, KILN_ERR_NULL));
  LLVMPositionBuilderAtEnd(L->b, ok);
}

static LLVMValueRef cg_entry(Codegen *cg, EntryKind kind) {
  Lower *L = &cg->L;
  Program *p = L->p;
  const Graph *g = p->g;
  static const char *const names[ENTRY_COUNT] = {"infer", "grad", "train_step"};
  int nin = p->nentry_inputs[kind], nout = kind == ENTRY_INFER ? g->noutputs : 1;
  unsigned nargs = (unsigned)(1 + nin + nout);
  LLVMTypeRef *params = calloc(nargs, sizeof *params);
  LLVMValueRef *in_arg = calloc((size_t)p->ninputs + 1, sizeof *in_arg);
  LLVMValueRef *out_arg = calloc((size_t)nout + 1, sizeof *out_arg);
  IR_ASSERT(params && in_arg && out_arg, "llvm: out of memory building an entry point");
  for (unsigned i = 0; i < nargs; i++) params[i] = L->ptr;
  char sym[256];
  Entry e = {.kind = kind, .in_arg = in_arg, .out_arg = out_arg};
  e.fn = LLVMAddFunction(L->mod, cg_sym(cg, names[kind], sym, sizeof sym),
                         LLVMFunctionType(L->i32, params, nargs, 0));
  if (L->avx512) add_str_attr(L, e.fn, "prefer-vector-width", "512");
  /* The SLP vectorizer, which this keeps out, spends longer on an entry point's hundreds of
   * stores of buffer pointers into ctx arrays than on most kernels, for nothing measurable. */
  add_attr(L, e.fn, LLVMAttributeFunctionIndex, "noimplicitfloat");
  e.entry_bb = LLVMAppendBasicBlockInContext(L->ctx, e.fn, "entry");
  LLVMPositionBuilderAtEnd(L->b, e.entry_bb);
  entry_null_checks(cg, &e, nargs);
  e.self = LLVMGetParam(e.fn, 0);
  for (int i = 0; i < nin; i++)
    in_arg[p->entry_inputs[kind][i]] = LLVMGetParam(e.fn, (unsigned)(1 + i));
  for (int i = 0; i < nout; i++) out_arg[i] = LLVMGetParam(e.fn, (unsigned)(1 + nin + i));
  e.loss_arg = out_arg[0];
  e.mem = LLVMBuildLoad2(L->b, L->ptr, LLVMBuildStructGEP2(L->b, cg->inst_t, e.self, INST_MEM, ""),
                         "mem");
  e.pool = LLVMBuildLoad2(L->b, L->ptr,
                          LLVMBuildStructGEP2(L->b, cg->inst_t, e.self, INST_POOL, ""), "pool");
  e.status = LLVMBuildStructGEP2(L->b, cg->inst_t, e.self, INST_STATUS, "status");
  LLVMBuildStore(L->b, lw_i32(L, KILN_OK), e.status);
  if (p->planned && kind == ENTRY_TRAIN) entry_snapshots(cg, &e);
  for (int k = 0; k < p->nkernels; k++)
    if (p->runs[kind][k]) entry_run_kernel(cg, &e, &p->kernels[k]);
  entry_finish(cg, &e);
  LLVMBuildRet(L->b, LLVMBuildLoad2(L->b, L->i32, e.status, ""));
  free(params);
  free(in_arg);
  free(out_arg);
  return e.fn;
}

/* ---- The descriptor ----------------------------------------------------- */

static LLVMValueRef cg_global(Codegen *cg, LLVMValueRef init, const char *name) {
  return lw_private_constant(&cg->L, init, name);
}

static LLVMValueRef cg_string(Codegen *cg, const char *s) {
  return cg_global(cg, LLVMConstStringInContext(cg->L.ctx, s, (unsigned)strlen(s), 0), ".str");
}

static LLVMValueRef cg_i64_array(Codegen *cg, const int64_t *v, int n) {
  Lower *L = &cg->L;
  LLVMValueRef e[IR_MAX_RANK + 1] = {lw_i64(L, 0)};
  for (int i = 0; i < n; i++) e[i] = lw_i64(L, v[i]);
  return cg_global(cg, LLVMConstArray2(L->i64, e, (uint64_t)(n ? n : 1)), ".shape");
}

static kiln_init init_kind(const Node *p, double *args, int *nargs) {
  static const char *const names[] = {"zeros",   "ones",   "constant", "normal",
                                      "uniform", "glorot", "he"};
  const AttrVal *init = ir_attr_c(p, "init"), *a = ir_attr_c(p, "args");
  *nargs = a->n;
  for (int i = 0; i < a->n; i++) args[i] = a->f[i];
  for (int k = 0; k < 7; k++)
    if (init->s && strcmp(init->s, names[k]) == 0) {
      if (k == KILN_INIT_NORMAL && a->n == 1) { /* normal(std): mean 0 */
        args[0] = 0.0, args[1] = a->f[0], *nargs = 2;
      }
      return (kiln_init)k;
    }
  ir_fatal("llvm: param '%s' has an unknown init '%s'", p->name, init->s ? init->s : "");
}

/* One kiln_tensor_desc. */
static LLVMValueRef cg_tensor(Codegen *cg, const Node *n, const char *name, int64_t off,
                              int64_t grad_off) {
  Lower *L = &cg->L;
  double args[IR_MAX_ATTR_LEN + 2] = {0};
  int nargs = 0;
  kiln_init init = n->op == OP_PARAM ? init_kind(n, args, &nargs) : KILN_INIT_ZEROS;
  LLVMValueRef argv[IR_MAX_ATTR_LEN + 2];
  for (int i = 0; i < nargs; i++) argv[i] = lw_fc(L, L->f64, args[i]);
  LLVMValueRef args_g = nargs
                            ? cg_global(cg, LLVMConstArray2(L->f64, argv, (uint64_t)nargs), ".init")
                            : LLVMConstNull(L->ptr);
  kiln_dtype dt = n->type.dtype == DT_F64   ? KILN_DTYPE_F64
                  : n->type.dtype == DT_I32 ? KILN_DTYPE_I32
                                            : KILN_DTYPE_F32;
  LLVMValueRef f[9] = {cg_string(cg, name),
                       lw_i32(L, (int32_t)dt),
                       lw_i32(L, n->type.rank),
                       cg_i64_array(cg, n->type.dims, n->type.rank),
                       lw_i64(L, off < 0 ? 0 : off),
                       LLVMConstInt(L->i64, grad_off < 0 ? UINT64_MAX : (uint64_t)grad_off, 0),
                       lw_i32(L, (int32_t)init),
                       lw_i32(L, nargs),
                       args_g};
  return LLVMConstNamedStruct(cg->tensor_t, f, 9);
}

/* A global array of kiln_tensor_desc for nodes (names: the nodes' own, or names[]). */
static LLVMValueRef cg_tensors(Codegen *cg, Node *const *nodes, const char *const *names, int n,
                               bool mem) {
  Program *p = cg->L.p;
  if (n == 0) return LLVMConstNull(cg->L.ptr);
  LLVMValueRef *t = calloc((size_t)n, sizeof *t);
  IR_ASSERT(t, "llvm: out of memory building the descriptor");
  for (int i = 0; i < n; i++)
    t[i] = cg_tensor(cg, nodes[i], names ? names[i] : nodes[i]->name,
                     mem ? p->layout.offset[nodes[i]->id] : -1,
                     mem ? p->layout.grad_offset[nodes[i]->id] : -1);
  LLVMValueRef g = cg_global(cg, LLVMConstArray2(cg->tensor_t, t, (uint64_t)n), ".tensors");
  free(t);
  return g;
}

static LLVMValueRef cg_index_array(Codegen *cg, const int *v, int n) {
  Lower *L = &cg->L;
  if (n == 0) return LLVMConstNull(L->ptr);
  LLVMValueRef *e = calloc((size_t)n, sizeof *e);
  IR_ASSERT(e, "llvm: out of memory building the descriptor");
  for (int i = 0; i < n; i++) e[i] = lw_i32(L, v[i]);
  LLVMValueRef g = cg_global(cg, LLVMConstArray2(L->i32, e, (uint64_t)n), ".idx");
  free(e);
  return g;
}

/* ---- Runtime wrappers --------------------------------------------------- */

/* A function `m_<suffix>(params...)` returning rt(<extra first arg>, params...). */
static LLVMValueRef cg_wrapper(Codegen *cg, const char *suffix, const char *rt, LLVMTypeRef ret,
                               LLVMTypeRef *params, unsigned n, bool pass_desc) {
  Lower *L = &cg->L;
  char sym[256];
  LLVMValueRef fn = LLVMAddFunction(L->mod, cg_sym(cg, suffix, sym, sizeof sym),
                                    LLVMFunctionType(ret, params, n, 0));
  LLVMTypeRef rparams[4];
  unsigned rn = 0;
  if (pass_desc) rparams[rn++] = L->ptr;
  for (unsigned i = 0; i < n; i++) rparams[rn++] = params[i];
  LLVMTypeRef rt_t = LLVMFunctionType(ret, rparams, rn, 0);
  LLVMValueRef rf = LLVMGetNamedFunction(L->mod, rt);
  if (!rf) rf = LLVMAddFunction(L->mod, rt, rt_t);
  LLVMPositionBuilderAtEnd(L->b, LLVMAppendBasicBlockInContext(L->ctx, fn, "entry"));
  LLVMValueRef args[4];
  unsigned an = 0;
  if (pass_desc) args[an++] = cg->desc;
  for (unsigned i = 0; i < n; i++) args[an++] = LLVMGetParam(fn, i);
  LLVMValueRef r = LLVMBuildCall2(L->b, rt_t, rf, args, an, "");
  if (ret == L->voidt)
    LLVMBuildRetVoid(L->b);
  else
    LLVMBuildRet(L->b, r);
  return fn;
}

static void cg_descriptor(Codegen *cg, LLVMValueRef infer, LLVMValueRef grad, LLVMValueRef train) {
  Lower *L = &cg->L;
  Program *p = L->p;
  const Graph *g = p->g;
  LLVMTypeRef P = L->ptr, I32 = L->i32, I64 = L->i64, V = L->voidt;
  char sym[256];
  cg->desc = LLVMAddGlobal(L->mod, cg->desc_t, cg_sym(cg, "desc", sym, sizeof sym));
  LLVMSetGlobalConstant(cg->desc, 1);
  LLVMValueRef entry[11] = {
      cg_wrapper(cg, "create", "kiln_rt_create", I32, (LLVMTypeRef[]){P, I64}, 2, true),
      cg_wrapper(cg, "destroy", "kiln_rt_destroy", V, (LLVMTypeRef[]){P}, 1, false),
      cg_wrapper(cg, "set_threads", "kiln_rt_set_threads", I32, (LLVMTypeRef[]){P, I32}, 2, false),
      cg_wrapper(cg, "load", "kiln_rt_load", I32, (LLVMTypeRef[]){P, P}, 2, false),
      cg_wrapper(cg, "save", "kiln_rt_save", I32, (LLVMTypeRef[]){P, P}, 2, false),
      infer,
      train ? train : LLVMConstNull(P),
      grad ? grad : LLVMConstNull(P),
      cg_wrapper(cg, "param", "kiln_rt_param", P, (LLVMTypeRef[]){P, P}, 2, false),
      cg_wrapper(cg, "param_grad", "kiln_rt_param_grad", P, (LLVMTypeRef[]){P, P}, 2, false),
      cg_wrapper(cg, "strerror", "kiln_rt_strerror", P, (LLVMTypeRef[]){I32}, 1, false)};
  Node **outs = calloc((size_t)g->noutputs + 1, sizeof *outs);
  const char **onames = calloc((size_t)g->noutputs + 1, sizeof *onames);
  IR_ASSERT(outs && onames, "llvm: out of memory building the descriptor");
  for (int i = 0; i < g->noutputs; i++)
    outs[i] = g->outputs[i].node, onames[i] = g->outputs[i].name;
  LLVMValueRef f[18] = {
      lw_i32(L, KILN_ABI_VERSION),
      cg_string(cg, g->name),
      lw_i32(L, p->ninputs),
      cg_tensors(cg, p->inputs, NULL, p->ninputs, false),
      lw_i32(L, g->noutputs),
      cg_tensors(cg, outs, onames, g->noutputs, false),
      lw_i32(L, p->nparams),
      cg_tensors(cg, p->params, NULL, p->nparams, true),
      lw_i32(L, p->nstates),
      cg_tensors(cg, p->states, NULL, p->nstates, true),
      lw_i32(L, p->nentry_inputs[ENTRY_INFER]),
      cg_index_array(cg, p->entry_inputs[ENTRY_INFER], p->nentry_inputs[ENTRY_INFER]),
      lw_i32(L, p->has_train ? p->nentry_inputs[ENTRY_TRAIN] : 0),
      cg_index_array(cg, p->entry_inputs[ENTRY_TRAIN],
                     p->has_train ? p->nentry_inputs[ENTRY_TRAIN] : 0),
      lw_i32(L, p->has_train),
      lw_i64(L, (int64_t)p->layout.mem_bytes),
      lw_i64(L, (int64_t)p->layout.arena_bytes),
      LLVMConstNamedStruct(cg->entry_t, entry, 11)};
  LLVMSetInitializer(cg->desc, LLVMConstNamedStruct(cg->desc_t, f, 18));
  free(outs);
  free(onames);
  LLVMValueRef describe = LLVMAddFunction(L->mod, cg_sym(cg, "describe", sym, sizeof sym),
                                          LLVMFunctionType(P, NULL, 0, 0));
  LLVMPositionBuilderAtEnd(L->b, LLVMAppendBasicBlockInContext(L->ctx, describe, "entry"));
  LLVMBuildRet(L->b, cg->desc);
}

/* ---- The module --------------------------------------------------------- */

/* Whether LLVM's feature list ("+a,-b,...", later entries winning) ends with name on. */
static bool feature_on(const char *list, const char *name) {
  bool on = false;
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n + 1 && (p[0] == '+' || p[0] == '-') && strncmp(p + 1, name, n) == 0)
      on = p[0] == '+';
    p += len + (end ? 1 : 0);
  }
  return on;
}

/* The host's features, then KILN_CPU_FEATURES's (docs/LLVM.md): "-avx512f" emits the AVX2
 * kernels on an AVX-512 host, so one machine tests both. */
static char *cg_features(bool *ours) {
  char *host = LLVMGetHostCPUFeatures();
  const char *extra = getenv("KILN_CPU_FEATURES");
  *ours = extra && *extra;
  if (!*ours) return host;
  size_t n = strlen(host) + strlen(extra) + 2;
  char *both = malloc(n);
  if (both) snprintf(both, n, "%s%s%s", host, *host ? "," : "", extra);
  LLVMDisposeMessage(host);
  return both;
}

static bool cg_target(LlvmModule *m, bool pic, char *err, size_t len) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  LLVMInitializeNativeAsmParser();
  char *triple = LLVMGetDefaultTargetTriple(), *cpu = LLVMGetHostCPUName();
  bool ours;
  char *features = cg_features(&ours), *msg = NULL;
  LLVMTargetRef target;
  bool ok = features && !LLVMGetTargetFromTriple(triple, &target, &msg);
  if (!features) snprintf(err, len, "out of memory reading the CPU's features");
  if (ok) {
    m->tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                    pic ? LLVMRelocPIC : LLVMRelocDefault, LLVMCodeModelDefault);
    LLVMSetTarget(m->mod, triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(m->tm);
    LLVMSetModuleDataLayout(m->mod, dl);
    LLVMDisposeTargetData(dl);
    m->avx512 = feature_on(features, "avx512f");
  } else if (features) {
    snprintf(err, len, "no LLVM target for %s: %s", triple, msg ? msg : "");
  }
  LLVMDisposeMessage(msg);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  if (ours)
    free(features);
  else
    LLVMDisposeMessage(features);
  return ok;
}

static bool cg_verify(LlvmModule *m, const char *when, char *err, size_t len) {
  char *msg = NULL;
  if (!LLVMVerifyModule(m->mod, LLVMReturnStatusAction, &msg)) {
    LLVMDisposeMessage(msg);
    return true;
  }
  snprintf(err, len, "internal error: the LLVM module is invalid %s: %s", when, msg ? msg : "");
  LLVMDisposeMessage(msg);
  return false;
}

static bool cg_optimize(LlvmModule *m, int level, char *err, size_t len) {
  char pipeline[32];
  snprintf(pipeline, sizeof pipeline, "default<O%d>", level < 0 ? 0 : level > 3 ? 3 : level);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, level >= 2);
  LLVMPassBuilderOptionsSetSLPVectorization(po, level >= 2);
  LLVMPassBuilderOptionsSetLoopUnrolling(po, level >= 2);
  LLVMErrorRef e = LLVMRunPasses(m->mod, pipeline, m->tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (!e) return true;
  char *msg = LLVMGetErrorMessage(e);
  snprintf(err, len, "internal error: LLVM passes failed: %s", msg);
  LLVMDisposeErrorMessage(msg);
  return false;
}

static void cg_init(Codegen *cg, LlvmModule *m, Program *p) {
  memset(cg, 0, sizeof *cg);
  cg->L.ctx = m->ctx;
  cg->L.mod = m->mod;
  cg->L.b = LLVMCreateBuilderInContext(m->ctx);
  cg->L.p = p;
  cg->L.avx512 = m->avx512;
  cg->name = (char *)p->g->name;
  cg_types(cg);
}

/* Only what some entry point runs. */
static bool kernel_needed(const Program *p, int k) {
  return p->runs[ENTRY_INFER][k] ||
         (p->has_train && (p->runs[ENTRY_GRAD][k] || p->runs[ENTRY_TRAIN][k]));
}

void llvm_module_lower_kernels(LlvmModule *m, Program *p, const bool *mine, bool external) {
  Codegen cg;
  cg_init(&cg, m, p);
  for (int k = 0; k < p->nkernels; k++) {
    if (!kernel_needed(p, k) || (mine && !mine[k]) || p->kernels[k].twin) continue;
    cg_kernel(&cg, &p->kernels[k]);
    if (external) { /* called from the entry points' module; not exported from the .so */
      LLVMSetLinkage(p->kernels[k].fn, LLVMExternalLinkage);
      LLVMSetVisibility(p->kernels[k].fn, LLVMHiddenVisibility);
    }
  }
  LLVMDisposeBuilder(cg.L.b);
}

void llvm_module_lower_entries(LlvmModule *m, const bool *mine) {
  Codegen cg;
  Program *p = &m->prog;
  cg_init(&cg, m, p);
  for (int k = 0; k < p->nkernels; k++) /* the other modules' kernels */
    if (kernel_needed(p, k) && mine && !mine[k] && !p->kernels[k].twin)
      p->kernels[k].fn = LLVMAddFunction(m->mod, p->kernels[k].name, cg.task_t);
  LLVMValueRef infer = cg_entry(&cg, ENTRY_INFER);
  LLVMValueRef grad = p->has_train ? cg_entry(&cg, ENTRY_GRAD) : NULL;
  LLVMValueRef train = p->has_train ? cg_entry(&cg, ENTRY_TRAIN) : NULL;
  cg_descriptor(&cg, infer, grad, train);
  LLVMDisposeBuilder(cg.L.b);
}

bool llvm_module_begin(LlvmModule *m, const Graph *g, const LlvmOptions *o, Program *shared,
                       bool pic, char *err, size_t len) {
  if (!m->ctx) {
    m->ctx = LLVMContextCreate();
    m->owns_ctx = true;
  }
  m->mod = LLVMModuleCreateWithNameInContext(g->name, m->ctx);
  m->owns_module = true;
  if (!shared && !llvm_program_build(&m->prog, g, o)) {
    snprintf(err, len, "out of memory lowering model '%s'", g->name);
    return false;
  }
  return cg_target(m, pic, err, len);
}

bool llvm_module_finish(LlvmModule *m, const LlvmOptions *o, double lower_t0, char *err,
                        size_t len) {
  if (!cg_verify(m, "after lowering", err, len)) return false;
  double t1 = llvm_now_ms();
  if (!cg_optimize(m, o->opt_level, err, len)) return false;
#ifndef NDEBUG
  if (!cg_verify(m, "after optimization", err, len)) return false;
#endif
  if (o->times) {
    o->times->lower_ms += t1 - lower_t0;
    o->times->optimize_ms += llvm_now_ms() - t1;
  }
  return true;
}

bool llvm_module_build(LlvmModule *m, const Graph *g, const LlvmOptions *o, bool pic, char *err,
                       size_t len) {
  if (!llvm_module_begin(m, g, o, NULL, pic, err, len)) return false;
  double t0 = llvm_now_ms();
  llvm_twins_find(m, &m->prog);
  llvm_module_lower_kernels(m, &m->prog, NULL, false);
  llvm_module_lower_entries(m, NULL);
  return llvm_module_finish(m, o, t0, err, len);
}

double llvm_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void llvm_print_times(FILE *f, const LlvmTimes *t) {
  fprintf(f, "%-16s %10.3f\n", "llvm.lower", t->lower_ms);
  fprintf(f, "%-16s %10.3f\n", "llvm.optimize", t->optimize_ms);
  fprintf(f, "%-16s %10.3f\n", "llvm.codegen", t->codegen_ms);
}

void llvm_module_dispose(LlvmModule *m) {
  if (m->mod && m->owns_module) LLVMDisposeModule(m->mod);
  if (m->tm) LLVMDisposeTargetMachine(m->tm);
  if (m->ctx && m->owns_ctx) LLVMContextDispose(m->ctx);
  llvm_program_free(&m->prog);
  m->mod = NULL;
  m->tm = NULL;
  m->ctx = NULL;
}
