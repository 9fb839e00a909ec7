/* llvm_twin.c - kernels whose functions are identical share one (Kernel.twin).
 *
 * Models repeat themselves (a transformer's blocks, the optimizer's update of
 * every parameter), and LLVM's optimization and code generation, nearly all
 * of the compile time, grow with the IR. Twins are decided from the IR
 * itself, not from a key over the Kernel's fields (a field left out of such a
 * key would silently share a wrong function): every kernel is lowered alone
 * into a throwaway module, its two functions renamed to fixed names, and the
 * module written as bitcode, which holds all of it (instructions, flags,
 * parameter attributes such as noalias, the globals and declarations it
 * refers to, by name). Two kernels are twins when the bytes are the same. A
 * twin keeps its own buffers (ctx), range, min_chunk and scratch: only the
 * function is shared, so the same function may run over a different range
 * (an elementwise loop over rows of the same length).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/BitWriter.h>
#include <xxhash.h>

#include "llvm_twin.h"

static int64_t count_instructions(LLVMValueRef fn) {
  int64_t n = 0;
  for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
    for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i)) n++;
  return n;
}

void llvm_twin_probe(LlvmModule *m, Program *p, int k, TwinProbe *t) {
  LlvmModule one = {.ctx = m->ctx, .avx512 = m->avx512};
  one.mod = LLVMModuleCreateWithNameInContext("kiln_twin", m->ctx);
  LLVMSetDataLayout(one.mod, LLVMGetDataLayoutStr(m->mod));
  bool *mine = calloc((size_t)p->nkernels + 1, sizeof *mine);
  IR_ASSERT(mine, "llvm: out of memory comparing kernels");
  Kernel *kn = &p->kernels[k];
  kn->fn = NULL;
  mine[k] = true;
  llvm_module_lower_kernels(&one, p, mine, false);
  free(mine);
  memset(t, 0, sizeof *t);
  if (kn->fn) {
    char name[96];
    snprintf(name, sizeof name, "%s.body", kn->name);
    LLVMValueRef body = LLVMGetNamedFunction(one.mod, name);
    IR_ASSERT(body, "llvm: kernel %s has no body function", kn->name);
    t->size = count_instructions(body) + count_instructions(kn->fn);
    LLVMSetValueName2(body, "kiln_twin.body", 14);
    LLVMSetValueName2(kn->fn, "kiln_twin", 9);
    t->bc = LLVMWriteBitcodeToMemoryBuffer(one.mod);
    IR_ASSERT(t->bc, "llvm: out of memory comparing kernels");
    t->bytes = LLVMGetBufferStart(t->bc);
    t->nbytes = LLVMGetBufferSize(t->bc);
    t->hash = XXH3_64bits(t->bytes, t->nbytes);
    kn->fn = NULL; /* disposed with the module */
  }
  LLVMDisposeModule(one.mod);
}

static bool same_module(const TwinProbe *a, const TwinProbe *b) {
  return a->bc && b->bc && a->hash == b->hash && a->nbytes == b->nbytes &&
         memcmp(a->bytes, b->bytes, a->nbytes) == 0;
}

int llvm_twins_mark(Program *p, TwinProbe *t, int64_t *size) {
  int ntwins = 0;
  for (int i = 0; i < p->nkernels; i++) {
    p->kernels[i].twin = NULL;
    /* The first match is never a twin itself: a twin's own match comes before it. */
    for (int j = 0; j < i && t[i].bc && !p->kernels[i].twin; j++)
      if (!p->kernels[j].twin && same_module(&t[j], &t[i])) p->kernels[i].twin = &p->kernels[j];
    ntwins += p->kernels[i].twin != NULL;
    if (size) size[i] = p->kernels[i].twin ? 0 : t[i].size;
  }
  for (int i = 0; i < p->nkernels; i++)
    if (t[i].bc) LLVMDisposeMemoryBuffer(t[i].bc);
  return ntwins;
}

int llvm_twins_find(LlvmModule *m, Program *p) {
  TwinProbe *t = calloc((size_t)p->nkernels + 1, sizeof *t);
  IR_ASSERT(t, "llvm: out of memory comparing kernels");
  for (int k = 0; k < p->nkernels; k++) llvm_twin_probe(m, p, k, &t[k]);
  int ntwins = llvm_twins_mark(p, t, NULL);
  free(t);
  return ntwins;
}
