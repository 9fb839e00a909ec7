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

/* Kernel k alone in a module: its bitcode (NULL when no entry point runs it). */
typedef struct Alone {
  LLVMMemoryBufferRef bc;
  const char *bytes;
  size_t size;
  uint64_t hash;
} Alone;

static int64_t count_instructions(LLVMValueRef fn) {
  int64_t n = 0;
  for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
    for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i)) n++;
  return n;
}

/* Lowers kernel k into a module of its own in tw's context, with tw's data layout. */
static void lower_alone(LlvmModule *tw, Program *p, bool *mine, int k, Alone *a, int64_t *size) {
  LlvmModule one = {.ctx = tw->ctx, .avx512 = tw->avx512};
  one.mod = LLVMModuleCreateWithNameInContext("kiln_twin", tw->ctx);
  LLVMSetDataLayout(one.mod, LLVMGetDataLayoutStr(tw->mod));
  Kernel *kn = &p->kernels[k];
  kn->fn = NULL;
  mine[k] = true;
  llvm_module_lower_kernels(&one, p, mine, false);
  mine[k] = false;
  if (kn->fn) {
    char name[96];
    snprintf(name, sizeof name, "%s.body", kn->name);
    LLVMValueRef body = LLVMGetNamedFunction(one.mod, name);
    IR_ASSERT(body, "llvm: kernel %s has no body function", kn->name);
    if (size) size[k] = count_instructions(body) + count_instructions(kn->fn);
    LLVMSetValueName2(body, "kiln_twin.body", 14);
    LLVMSetValueName2(kn->fn, "kiln_twin", 9);
    a->bc = LLVMWriteBitcodeToMemoryBuffer(one.mod);
    IR_ASSERT(a->bc, "llvm: out of memory comparing kernels");
    a->bytes = LLVMGetBufferStart(a->bc);
    a->size = LLVMGetBufferSize(a->bc);
    a->hash = XXH3_64bits(a->bytes, a->size);
    kn->fn = NULL; /* disposed with the module */
  }
  LLVMDisposeModule(one.mod);
}

static bool same_module(const Alone *a, const Alone *b) {
  return a->bc && b->bc && a->hash == b->hash && a->size == b->size &&
         memcmp(a->bytes, b->bytes, a->size) == 0;
}

/* Each kernel's twin: the first earlier kernel with the same bitcode (never a twin itself: a
 * twin's own match comes before it). */
static int mark_twins(Program *p, const Alone *alone, int64_t *size) {
  int ntwins = 0;
  for (int i = 0; i < p->nkernels; i++)
    for (int j = 0; j < i && alone[i].bc; j++)
      if (!p->kernels[j].twin && same_module(&alone[j], &alone[i])) {
        p->kernels[i].twin = &p->kernels[j];
        if (size) size[i] = 0;
        ntwins++;
        break;
      }
  return ntwins;
}

int llvm_twins_find(const Graph *g, const LlvmOptions *o, Program *p, int64_t *size, char *err,
                    size_t len) {
  LlvmModule tw = {0};
  if (!llvm_module_begin(&tw, g, o, p, true, err, len)) {
    llvm_module_dispose(&tw);
    return -1;
  }
  Alone *alone = calloc((size_t)p->nkernels + 1, sizeof *alone);
  bool *mine = calloc((size_t)p->nkernels + 1, sizeof *mine);
  IR_ASSERT(alone && mine, "llvm: out of memory comparing kernels");
  for (int k = 0; k < p->nkernels; k++) {
    if (size) size[k] = 0;
    lower_alone(&tw, p, mine, k, &alone[k], size);
  }
  int ntwins = mark_twins(p, alone, size);
  for (int k = 0; k < p->nkernels; k++)
    if (alone[k].bc) LLVMDisposeMemoryBuffer(alone[k].bc);
  free(alone);
  free(mine);
  llvm_module_dispose(&tw);
  return ntwins;
}
