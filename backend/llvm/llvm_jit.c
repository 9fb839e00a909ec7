/* llvm_jit.c - the JIT: ORC LLJIT over the model's objects (compiled in parallel, one module per
 * core), its runtime calls bound to this process's runtime. */
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include "kiln_rt.h"
#include "llvm_priv.h"

struct LlvmJit {
  LLVMOrcLLJITRef jit;
  const kiln_model_desc *desc;
};

static bool jit_error(LLVMErrorRef e, const char *what, char *err, size_t len) {
  if (!e) return true;
  char *msg = LLVMGetErrorMessage(e);
  snprintf(err, len, "internal error: %s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return false;
}

/* The runtime's entry points (kiln_rt_symbols) as absolute symbols, so the
 * generated code calls this process's own copies; libc and libm (memcpy,
 * exp for f64, ...) from the process's symbol table. */
static bool jit_bind_runtime(LlvmJit *j, char *err, size_t len) {
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
  size_t n = 0;
  while (kiln_rt_symbols[n].name) n++;
  LLVMOrcCSymbolMapPair *pairs = calloc(n + 1, sizeof *pairs);
  if (!pairs) return snprintf(err, len, "out of memory"), false;
  for (size_t i = 0; i < n; i++) {
    pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->jit, kiln_rt_symbols[i].name);
    pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)kiln_rt_symbols[i].addr;
    pairs[i].Sym.Flags.GenericFlags =
        LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
    pairs[i].Sym.Flags.TargetFlags = 0;
  }
  bool ok = jit_error(LLVMOrcJITDylibDefine(jd, LLVMOrcAbsoluteSymbols(pairs, n)),
                      "binding the runtime", err, len);
  free(pairs);
  LLVMOrcDefinitionGeneratorRef gen;
  if (ok)
    ok = jit_error(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                       &gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL),
                   "searching the process's symbols", err, len);
  if (ok) LLVMOrcJITDylibAddGenerator(jd, gen);
  return ok;
}

static bool jit_create(LlvmJit *j, char *err, size_t len) {
  LLVMOrcJITTargetMachineBuilderRef jtmb;
  if (!jit_error(LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb), "detecting the host", err, len))
    return false;
  LLVMOrcLLJITBuilderRef b = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(b, jtmb);
  return jit_error(LLVMOrcCreateLLJIT(&j->jit, b), "creating the JIT", err, len);
}

LlvmJit *llvm_jit_compile(const Graph *g, const LlvmOptions *o, char *err, size_t len) {
  LlvmJit *j = calloc(1, sizeof *j);
  if (!j) {
    snprintf(err, len, "out of memory");
    return NULL;
  }
  /* Objects compiled on one thread per core (llvm_emit.c), linked by the JIT. */
  LlvmObject objs[LLVM_MAX_PARTS];
  int n = llvm_build_objects(g, o, llvm_emit_parts_default(), objs, err, len);
  bool ok = n > 0 && jit_create(j, err, len) && jit_bind_runtime(j, err, len);
  for (int i = 0; i < n; i++) {
    if (ok) {
      LLVMMemoryBufferRef buf =
          LLVMCreateMemoryBufferWithMemoryRangeCopy(objs[i].data, objs[i].size, "kiln");
      ok = jit_error(LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), buf),
                     "adding an object", err, len);
    }
    free(objs[i].data);
  }
  char sym[256];
  snprintf(sym, sizeof sym, "%s_desc", g->name);
  if (ok) ok = (j->desc = llvm_jit_lookup(j, sym)) != NULL;
  if (ok) return j;
  if (!err[0]) snprintf(err, len, "internal error: the JIT found no %s", sym);
  llvm_jit_free(j);
  return NULL;
}

void *llvm_jit_lookup(LlvmJit *j, const char *symbol) {
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef e = LLVMOrcLLJITLookup(j->jit, &addr, symbol);
  if (e) {
    LLVMConsumeError(e);
    return NULL;
  }
  return (void *)(uintptr_t)addr;
}

const kiln_model_desc *llvm_jit_desc(LlvmJit *j) { return j->desc; }

void llvm_jit_free(LlvmJit *j) {
  if (!j) return;
  if (j->jit) LLVMConsumeError(LLVMOrcDisposeLLJIT(j->jit));
  free(j);
}
