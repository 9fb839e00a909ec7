/* llvm_emit.c - ahead-of-time output: object files, assembly and LLVM IR text, to a file or a
 * stream. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llvm_priv.h"
#include "llvm_twin.h"

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

/* ---- Objects built in parallel -------------------------------------------
 * The kernels are split among nparts modules, each in its own LLVM context:
 * lowered on its own thread, then optimized and compiled on its own thread.
 * Twins (llvm_twin.c) are decided first, from every kernel lowered alone
 * (probed on the parts' threads, each in its part's context), which also
 * gives each kernel's size in IR instructions, what optimization and code
 * generation take time in proportion to: the largest kernel goes first, each
 * to the least loaded module, and twins to none. Module 0 also holds the
 * entry points and the descriptor; the others' kernels are hidden external
 * symbols it calls. */

typedef struct Part {
  LlvmModule m;
  const LlvmOptions *o;
  Program *prog;
  int index, nparts;
  TwinProbe
      *probes; /* by kernel index, shared: this part probes kernels index, index+nparts, ... */
  bool *mine;  /* by kernel index */
  bool main;
  double lower_t0, optimize_ms;
  char *data;
  size_t size;
  bool ok;
  char err[512];
} Part;

typedef struct Deal {
  int64_t size;
  int k;
} Deal;

static int deal_order(const void *a, const void *b) { /* largest first, then by index */
  const Deal *x = a, *y = b;
  return x->size != y->size ? (x->size < y->size ? 1 : -1) : x->k - y->k;
}

/* Kernel k goes to part i when mine[i][k]; false when out of memory. */
static bool deal_kernels(const Program *p, const int64_t *size, Part *parts, int nparts) {
  Deal *order = calloc((size_t)p->nkernels + 1, sizeof *order);
  if (!order) return false;
  int n = 0;
  for (int k = 0; k < p->nkernels; k++)
    if (size[k] > 0) order[n++] = (Deal){size[k], k};
  qsort(order, (size_t)n, sizeof *order, deal_order);
  int64_t load[LLVM_MAX_PARTS] = {0};
  for (int j = 0; j < n; j++) {
    int best = 0;
    for (int i = 1; i < nparts; i++)
      if (load[i] < load[best]) best = i;
    parts[best].mine[order[j].k] = true;
    load[best] += order[j].size;
  }
  free(order);
  return true;
}

static void *part_probe(void *arg) {
  Part *pt = arg;
  for (int k = pt->index; k < pt->prog->nkernels; k += pt->nparts)
    llvm_twin_probe(&pt->m, pt->prog, k, &pt->probes[k]);
  return NULL;
}

static void *part_lower(void *arg) {
  Part *pt = arg;
  llvm_module_lower_kernels(&pt->m, pt->prog, pt->mine, !pt->main);
  return NULL;
}

static void *part_compile(void *arg) {
  Part *pt = arg;
  LlvmTimes t = {0};
  LlvmOptions o = *pt->o;
  o.times = &t;
  pt->ok = llvm_module_finish(&pt->m, &o, pt->lower_t0, pt->err, sizeof pt->err);
  pt->ok = pt->ok &&
           emit_to_memory(&pt->m, LLVM_EMIT_OBJ, &pt->data, &pt->size, pt->err, sizeof pt->err);
  pt->optimize_ms = t.optimize_ms;
  return NULL;
}

/* Runs fn on every part, parts 1.. on threads of their own (on this thread
 * when a thread cannot start). */
static void run_parts(Part *parts, int nparts, void *(*fn)(void *)) {
  pthread_t tid[LLVM_MAX_PARTS];
  bool started[LLVM_MAX_PARTS] = {false};
  for (int i = 1; i < nparts; i++) started[i] = pthread_create(&tid[i], NULL, fn, &parts[i]) == 0;
  fn(&parts[0]);
  for (int i = 1; i < nparts; i++) {
    if (started[i])
      pthread_join(tid[i], NULL);
    else
      fn(&parts[i]);
  }
}

static bool write_file(const char *path, const char *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f) return false;
  bool ok = fwrite(data, 1, size, f) == size;
  return fclose(f) == 0 && ok;
}

int llvm_emit_parts_default(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > LLVM_MAX_PARTS ? LLVM_MAX_PARTS : (int)n;
}

int llvm_build_objects(const Graph *g, const LlvmOptions *o, int nparts, LlvmObject *objs,
                       char *err, size_t len) {
  if (nparts < 1) nparts = 1;
  if (nparts > LLVM_MAX_PARTS) nparts = LLVM_MAX_PARTS;
  Part parts[LLVM_MAX_PARTS];
  memset(parts, 0, sizeof parts);
  double t0 = llvm_now_ms();
  bool ok = llvm_module_begin(&parts[0].m, g, o, NULL, true, err, len);
  Program *prog = &parts[0].m.prog;
  for (int i = 1; ok && i < nparts; i++)
    ok = llvm_module_begin(&parts[i].m, g, o, prog, true, err, len);
  TwinProbe *probes = ok ? calloc((size_t)prog->nkernels + 1, sizeof *probes) : NULL;
  int64_t *size = ok ? calloc((size_t)prog->nkernels + 1, sizeof *size) : NULL;
  ok = ok && probes && size;
  for (int i = 0; ok && i < nparts; i++) {
    parts[i].o = o;
    parts[i].prog = prog;
    parts[i].index = i;
    parts[i].nparts = nparts;
    parts[i].probes = probes;
    parts[i].main = i == 0;
    parts[i].lower_t0 = t0;
    parts[i].mine = calloc((size_t)prog->nkernels + 1, sizeof *parts[i].mine);
    ok = parts[i].mine != NULL;
  }
  if (ok) { /* twins decided before the kernels are dealt: a twin is lowered in no module */
    run_parts(parts, nparts, part_probe);
    llvm_twins_mark(prog, probes, size);
    ok = deal_kernels(prog, size, parts, nparts);
  }
  if (ok) {
    run_parts(parts, nparts, part_lower);
    llvm_module_lower_entries(&parts[0].m, parts[0].mine);
    double t1 = llvm_now_ms();
    run_parts(parts, nparts, part_compile);
    double t2 = llvm_now_ms(), opt = 0;
    for (int i = 0; i < nparts; i++) {
      if (ok && !parts[i].ok) {
        snprintf(err, len, "%s", parts[i].err);
        ok = false;
      }
      opt = parts[i].optimize_ms > opt ? parts[i].optimize_ms : opt;
    }
    if (o->times) { /* wall clock; optimization: the slowest module's */
      o->times->lower_ms += t1 - t0;
      o->times->optimize_ms += opt;
      o->times->codegen_ms += t2 - t1 - opt;
    }
  }
  for (int i = 0; i < nparts; i++) {
    objs[i].data = ok ? parts[i].data : NULL;
    objs[i].size = ok ? parts[i].size : 0;
    if (!ok) free(parts[i].data);
  }
  free(probes);
  free(size);
  for (int i = nparts - 1; i >= 0; i--) {
    free(parts[i].mine);
    llvm_module_dispose(&parts[i].m);
  }
  return ok ? nparts : 0;
}

bool llvm_emit_objects(const Graph *g, const LlvmOptions *o, const char *const *paths, int nparts,
                       char *err, size_t len) {
  LlvmObject objs[LLVM_MAX_PARTS];
  int n = llvm_build_objects(g, o, nparts, objs, err, len);
  bool ok = n > 0;
  for (int i = 0; i < n; i++) {
    if (ok && !write_file(paths[i], objs[i].data, objs[i].size)) {
      snprintf(err, len, "cannot write %s", paths[i]);
      ok = false;
    }
    free(objs[i].data);
  }
  return ok;
}
