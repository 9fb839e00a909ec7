/* llvm_twin.h - kernels whose functions are identical (Kernel.twin), found from the lowered IR. */
#ifndef KILN_LLVM_TWIN_H
#define KILN_LLVM_TWIN_H

#include "llvm_priv.h"

/* A kernel lowered alone into a throwaway module: the module's bitcode, its
 * two functions renamed to fixed names (bc NULL when no entry point runs the
 * kernel), and the instructions of those functions. */
typedef struct TwinProbe {
  LLVMMemoryBufferRef bc;
  const char *bytes;
  size_t nbytes;
  uint64_t hash;
  int64_t size;
} TwinProbe;

/* Probes kernel k in m's context (with m's data layout); also sets its range
 * and min_chunk, which a twin keeps. Threads may probe different kernels of
 * one program at once, each in a context of its own. */
void llvm_twin_probe(LlvmModule *m, Program *p, int k, TwinProbe *t);
/* Given every kernel's probe: a kernel whose bitcode is the same as an
 * earlier kernel's becomes its twin (Kernel.twin): no module lowers it, its
 * launches call the earlier one's function. size[k] (when size is not NULL):
 * kernel k's instructions, 0 for a twin or a kernel nothing runs. Disposes
 * the probes; the count of twins. */
int llvm_twins_mark(Program *p, TwinProbe *t, int64_t *size);
/* Both, for every kernel, in m's context. */
int llvm_twins_find(LlvmModule *m, Program *p);

#endif
