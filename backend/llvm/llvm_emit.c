/* llvm_emit.c - ahead-of-time output: object files, assembly and LLVM IR text, to a file or a
 * stream. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llvm_priv.h"

static bool emit_to_memory(LlvmModule *m, LlvmEmitKind kind, char **data, size_t *size, char *err,
                           size_t len) {
  if (kind == LLVM_EMIT_IR) {
    *data = LLVMPrintModuleToString(m->mod);
    *size = strlen(*data);
    return true;
  }
  char *msg = NULL;
  LLVMMemoryBufferRef buf = NULL;
  LLVMCodeGenFileType ft = kind == LLVM_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile;
  if (LLVMTargetMachineEmitToMemoryBuffer(m->tm, m->mod, ft, &msg, &buf)) {
    snprintf(err, len, "internal error: LLVM code generation failed: %s", msg ? msg : "");
    LLVMDisposeMessage(msg);
    return false;
  }
  *size = LLVMGetBufferSize(buf);
  *data = malloc(*size + 1);
  if (*data) memcpy(*data, LLVMGetBufferStart(buf), *size);
  LLVMDisposeMemoryBuffer(buf);
  if (!*data) snprintf(err, len, "out of memory emitting code");
  return *data != NULL;
}

static void free_data(LlvmEmitKind kind, char *data) {
  if (kind == LLVM_EMIT_IR)
    LLVMDisposeMessage(data);
  else
    free(data);
}

/* The module's bytes in the requested form; *data freed with free_data. */
static bool emit_bytes(const Graph *g, const LlvmOptions *o, LlvmEmitKind kind, char **data,
                       size_t *size, char *err, size_t len) {
  LlvmModule m = {0};
  bool ok = llvm_module_build(&m, g, o, true, err, len);
  double t0 = llvm_now_ms();
  ok = ok && emit_to_memory(&m, kind, data, size, err, len);
  if (o->times) o->times->codegen_ms += llvm_now_ms() - t0;
  llvm_module_dispose(&m);
  return ok;
}

bool llvm_print(const Graph *g, const LlvmOptions *o, LlvmEmitKind kind, FILE *out, char *err,
                size_t len) {
  if (kind == LLVM_EMIT_OBJ) {
    snprintf(err, len, "an object file is not text");
    return false;
  }
  char *data = NULL;
  size_t size = 0;
  if (!emit_bytes(g, o, kind, &data, &size, err, len)) return false;
  bool ok = fwrite(data, 1, size, out) == size;
  free_data(kind, data);
  if (!ok) snprintf(err, len, "cannot write the output");
  return ok;
}

/* Writes path.tmp.XXXXXX, then renames it over path: never a partial file. */
bool llvm_emit(const Graph *g, const LlvmOptions *o, LlvmEmitKind kind, const char *path, char *err,
               size_t len) {
  char *data = NULL;
  size_t size = 0;
  if (!emit_bytes(g, o, kind, &data, &size, err, len)) return false;
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 16);
  bool ok = tmp != NULL;
  int fd = -1;
  if (ok) snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
  if (ok) fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
  if (fd >= 0 && !f) close(fd);
  ok = f && fwrite(data, 1, size, f) == size;
  if (f && fclose(f) != 0) ok = false;
  if (ok && rename(tmp, path) != 0) ok = false;
  if (!ok) {
    snprintf(err, len, "cannot write %s", path);
    if (fd >= 0) remove(tmp);
  }
  free(tmp);
  free_data(kind, data);
  return ok;
}
