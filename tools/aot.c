/* aot.c - kiln compile and kiln build: a model to a .so and its header, or to an executable. */
#define _DEFAULT_SOURCE /* realpath */
#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "llvm_backend.h"
#include "tensor_io.h"

/*
 * Linking uses the system's C compiler driver, found when Kiln was configured
 * (KILN_CC; the environment variable KILN_CC overrides it), and the plain
 * (never sanitized) libkilnrt built with Kiln (KILN_RT_LIB, KILN_RT_MAIN_LIB):
 *
 *   .so   cc -shared -o OUT m.o libkilnrt.a -lm -lpthread -Wl,--version-script=exports.map
 *         (the map exports exactly the SPEC §3 functions; the runtime stays local)
 *   exe   cc -o BIN m.o glue.c weights.s libkilnrt_main.a libkilnrt.a -lm -lpthread
 *         (glue.c binds the generic main to m_describe/m_infer; weights.s embeds the
 *         safetensors file with .incbin, or nothing)
 *
 * Every output is written inside a fresh folder next to it, then renamed into
 * place, so a failure never leaves a partial file.
 */
#ifndef KILN_CC
#define KILN_CC "cc"
#endif
#ifndef KILN_RT_LIB
#define KILN_RT_LIB "libkilnrt.a"
#endif
#ifndef KILN_RT_MAIN_LIB
#define KILN_RT_MAIN_LIB "libkilnrt_main.a"
#endif

#define PATH_LEN 4096
#define MAX_ARGV 32

/* The SPEC §3 functions a .so exports, as m_<suffix>. */
static const char *const exported[] = {"create", "destroy",    "set_threads", "load",
                                       "save",   "infer",      "train_step",  "grad",
                                       "param",  "param_grad", "describe",    "strerror"};

/* ---- Work folder -------------------------------------------------------- */

/* A temporary folder next to the output (same file system: rename works). */
typedef struct Work {
  char dir[PATH_LEN];
  char *files[LLVM_MAX_PARTS + 16];
  int nfiles;
} Work;

static int work_open(Work *w, const char *output) {
  memset(w, 0, sizeof *w);
  const char *slash = strrchr(output, '/');
  int n = slash ? (int)(slash - output) : 1;
  const char *parent = slash ? output : ".";
  if (slash == output) n = 1; /* "/x": the root */
  if (snprintf(w->dir, sizeof w->dir, "%.*s/.kiln-XXXXXX", n, parent) >= (int)sizeof w->dir)
    return cli_error("output path too long: '%s'", output);
  if (!mkdtemp(w->dir))
    return cli_error("cannot create a temporary folder next to '%s': %s", output, strerror(errno));
  return EXIT_OK;
}

/* A path inside the work folder, remembered for cleanup. */
static const char *work_path(Work *w, const char *name) {
  if (w->nfiles == (int)(sizeof w->files / sizeof w->files[0])) return NULL;
  size_t n = strlen(w->dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (!p) return NULL;
  snprintf(p, n, "%s/%s", w->dir, name);
  w->files[w->nfiles++] = p;
  return p;
}

static void work_close(Work *w) {
  for (int i = 0; i < w->nfiles; i++) {
    unlink(w->files[i]);
    free(w->files[i]);
  }
  if (w->dir[0]) rmdir(w->dir);
  w->nfiles = 0;
}

static int move_into_place(const char *from, const char *to) {
  if (rename(from, to) != 0) return cli_error("cannot write '%s': %s", to, strerror(errno));
  return EXIT_OK;
}

/* ---- Running the C compiler driver -------------------------------------- */

extern char **environ;

static const char *cc_path(void) {
  const char *env = getenv("KILN_CC");
  return env && *env ? env : KILN_CC;
}

static int run_cc(const Options *o, const char *const *argv) {
  if (o->verbose) {
    fprintf(stderr, "kiln:");
    for (int i = 0; argv[i]; i++) fprintf(stderr, " %s", argv[i]);
    fprintf(stderr, "\n");
  }
  pid_t pid;
  int st = posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
  if (st != 0) {
    fprintf(stderr, "kiln: internal error: cannot run the C compiler '%s': %s\n", argv[0],
            strerror(st));
    return EXIT_INTERNAL;
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return EXIT_INTERNAL;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return EXIT_OK;
  fprintf(stderr, "kiln: internal error: linking with '%s' failed\n", argv[0]);
  return EXIT_INTERNAL;
}

/* ---- Files we write ----------------------------------------------------- */

static int write_text(const char *path, bool (*fn)(const Graph *, const LlvmOptions *, FILE *),
                      const Graph *g, const LlvmOptions *lo) {
  FILE *f = fopen(path, "w");
  if (!f) return cli_error("cannot write '%s': %s", path, strerror(errno));
  bool ok = fn(g, lo, f);
  if (fclose(f) != 0 || !ok) return cli_error("cannot write '%s'", path);
  return EXIT_OK;
}

static bool glue_writer(const Graph *g, const LlvmOptions *lo, FILE *f) {
  (void)lo;
  return llvm_write_main_glue(g, f);
}

/* { global: m_create; ... local: *; }; */
static bool version_script(const Graph *g, const LlvmOptions *lo, FILE *f) {
  (void)lo;
  fprintf(f, "{\n  global:\n");
  for (size_t i = 0; i < sizeof exported / sizeof *exported; i++)
    fprintf(f, "    %s_%s;\n", g->name, exported[i]);
  fprintf(f, "  local: *;\n};\n");
  return true;
}

/* The assembler string for a path: quotes and backslashes escaped; control characters refused. */
static bool asm_quote(const char *s, char *out, size_t len) {
  size_t n = 0;
  for (; *s; s++) {
    if ((unsigned char)*s < 0x20 || n + 3 >= len) return false;
    if (*s == '"' || *s == '\\') out[n++] = '\\';
    out[n++] = *s;
  }
  out[n] = '\0';
  return true;
}

/* kiln_embedded_weights (64-byte aligned) and its size: the file's bytes, or none. */
static int write_weights_asm(const char *path, const char *weights) {
  char abs[PATH_MAX], quoted[2 * PATH_MAX + 8];
  if (weights && (!realpath(weights, abs) || !asm_quote(abs, quoted, sizeof quoted)))
    return cli_error("%s: cannot use this path: %s", weights, strerror(errno));
  FILE *f = fopen(path, "w");
  if (!f) return cli_error("cannot write '%s': %s", path, strerror(errno));
  fprintf(f, "\t.section .rodata.kiln_weights,\"a\"\n\t.balign 64\n"
             "\t.globl kiln_embedded_weights\nkiln_embedded_weights:\n");
  if (weights) fprintf(f, "\t.incbin \"%s\"\n", quoted);
  fprintf(f, ".Lkiln_weights_end:\n\t.byte 0\n\t.balign 8\n"
             "\t.globl kiln_embedded_weights_size\nkiln_embedded_weights_size:\n"
             "\t.quad .Lkiln_weights_end - kiln_embedded_weights\n"
             "\t.section .note.GNU-stack,\"\",@progbits\n");
  if (fclose(f) != 0) return cli_error("cannot write '%s'", path);
  return EXIT_OK;
}

/* ---- Checking embedded weights ------------------------------------------ */

/* Every param of g in the file with its dtype and shape, nothing else but
 * optimizer state (optim.*), as kiln_rt_load will check it at run time. */
static int check_weights(const Graph *g, const char *path) {
  KilnTensorFile f;
  char err[1024];
  if (kiln_safetensors_read(path, &f, err, sizeof err) != 0) return cli_error("%s", err);
  int rc = EXIT_OK;
  for (int i = 0; !rc && i < f.n; i++) {
    const KilnTensor *t = &f.tensors[i];
    const Node *p = strncmp(t->name, "optim.", 6) == 0 ? NULL : ir_find_param(g, t->name);
    char have[256], want[256];
    if (!p && strncmp(t->name, "optim.", 6) != 0) {
      rc = cli_error("%s: unexpected tensor '%s': the model has no param of that name", path,
                     t->name);
    } else if (p && (cli_kiln_dtype(p->type.dtype) != t->dtype || p->type.rank != t->rank ||
                     memcmp(p->type.dims, t->shape, sizeof *t->shape * (size_t)t->rank) != 0)) {
      KilnTensor v = cli_tensor_view(p, NULL, NULL);
      snprintf(have, sizeof have, "%s", kiln_dtype_lower_name(t->dtype));
      snprintf(want, sizeof want, "%s", kiln_dtype_lower_name(v.dtype));
      char hs[200], ws[200];
      hs[0] = ws[0] = '\0';
      for (int k = 0; k < t->rank; k++)
        snprintf(hs + strlen(hs), sizeof hs - strlen(hs), "%s%lld", k ? ", " : "",
                 (long long)t->shape[k]);
      for (int k = 0; k < v.rank; k++)
        snprintf(ws + strlen(ws), sizeof ws - strlen(ws), "%s%lld", k ? ", " : "",
                 (long long)v.shape[k]);
      rc = cli_error("%s: tensor '%s' is %s[%s], the model expects %s[%s]", path, t->name, have, hs,
                     want, ws);
    }
  }
  for (int i = 0; !rc && i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_PARAM && !kiln_tensor_find(&f, g->nodes[i]->name))
      rc = cli_error("%s: missing param '%s'", path, g->nodes[i]->name);
  kiln_tensor_file_free(&f);
  return rc;
}

/* ---- kiln compile ------------------------------------------------------- */

typedef enum Emit { EMIT_SO, EMIT_OBJ, EMIT_HEADER, EMIT_LLVM, EMIT_ASM, EMIT_BAD } Emit;

static Emit emit_kind(const char *s) {
  static const char *const names[] = {"so", "obj", "header", "llvm", "asm"};
  for (int i = 0; s && i < EMIT_BAD; i++)
    if (strcmp(s, names[i]) == 0) return (Emit)i;
  return s ? EMIT_BAD : EMIT_SO;
}

/* OUT with its .so replaced by .h (or .h appended). */
static int header_path(const char *out, char *buf, size_t len) {
  size_t n = strlen(out);
  if (n > 3 && strcmp(out + n - 3, ".so") == 0) n -= 3;
  if (snprintf(buf, len, "%.*s.h", (int)n, out) >= (int)len)
    return cli_error("output path too long: '%s'", out);
  return EXIT_OK;
}

/* The object, linked into OUT.so with the runtime; then the header next to it. */
static int compile_so(const Options *o, const Graph *g, const LlvmOptions *lo, Work *w,
                      double *link_ms) {
  char err[1024], hpath[PATH_LEN];
  const char *objs[LLVM_MAX_PARTS];
  /* Code generation on --threads threads (default: one per core). */
  int nparts = o->threads > 0 ? o->threads : llvm_emit_parts_default();
  if (nparts > LLVM_MAX_PARTS) nparts = LLVM_MAX_PARTS;
  bool paths_ok = true;
  for (int i = 0; i < nparts; i++) {
    char name[32];
    snprintf(name, sizeof name, "model%d.o", i);
    paths_ok &= (objs[i] = work_path(w, name)) != NULL;
  }
  const char *map = work_path(w, "exports.map");
  const char *so = work_path(w, "model.so"), *h = work_path(w, "model.h");
  if (!paths_ok || !map || !so || !h) return cli_error("out of memory");
  int rc = header_path(o->output, hpath, sizeof hpath);
  if (!rc && !llvm_emit_objects(g, lo, objs, nparts, err, sizeof err))
    rc = cli_error("code generation failed: %s", err);
  if (!rc) rc = write_text(map, version_script, g, lo);
  char vs[PATH_LEN + 32];
  snprintf(vs, sizeof vs, "-Wl,--version-script=%s", map);
  const char *argv[LLVM_MAX_PARTS + 16] = {cc_path(), "-shared", "-o", so};
  int na = 4;
  for (int i = 0; i < nparts; i++) argv[na++] = objs[i];
  const char *tail[] = {KILN_RT_LIB,         "-lm", "-lpthread", vs, "-Wl,-z,noexecstack",
                        "-Wl,--no-undefined"};
  for (size_t i = 0; i < sizeof tail / sizeof *tail; i++) argv[na++] = tail[i];
  argv[na] = NULL;
  double t0 = cli_now_ms();
  if (!rc) rc = run_cc(o, argv);
  if (!rc) rc = write_text(h, llvm_write_header, g, lo);
  if (lo->times) *link_ms += cli_now_ms() - t0;
  if (!rc) rc = move_into_place(so, o->output);
  if (!rc) rc = move_into_place(h, hpath);
  return rc;
}

static int compile_one(const Options *o, const Graph *g, const LlvmOptions *lo, Emit e, Work *w,
                       double *link_ms) {
  char err[1024];
  if (e == EMIT_SO) return compile_so(o, g, lo, w, link_ms);
  const char *tmp = work_path(w, "out");
  if (!tmp) return cli_error("out of memory");
  int rc = EXIT_OK;
  if (e == EMIT_HEADER)
    rc = write_text(tmp, llvm_write_header, g, lo);
  else if (!llvm_emit(g, lo,
                      e == EMIT_OBJ   ? LLVM_EMIT_OBJ
                      : e == EMIT_ASM ? LLVM_EMIT_ASM
                                      : LLVM_EMIT_IR,
                      tmp, err, sizeof err))
    rc = cli_error("code generation failed: %s", err);
  if (!rc) rc = move_into_place(tmp, o->output);
  return rc;
}

int cmd_compile(Options *o) {
  Emit e = emit_kind(o->emit);
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  if (!o->output) return cli_usage_error(o->cmd, "missing -o OUT");
  if (e == EMIT_BAD)
    return cli_usage_error(o->cmd, "unknown --emit '%s' (expected so, obj, header, llvm or asm)",
                           o->emit);
  Loaded m;
  o->passes.inference = o->no_train;
  int rc = cli_load_model(o, &m, STAGE_PLANNED);
  LlvmTimes times = {0};
  LlvmOptions lo = {.opt_level = o->opt_level, .train = !o->no_train, .times = &times};
  Work w = {0};
  if (!rc) rc = work_open(&w, o->output);
  double t0 = cli_now_ms(), link_ms = 0;
  if (!rc) rc = compile_one(o, m.graph, &lo, e, &w, &link_ms);
  if (!rc && o->verbose) {
    fprintf(stderr, "kiln: compiled %s to %s in %.1f ms\n", m.graph->name, o->output,
            cli_now_ms() - t0);
    plan_report(stderr, m.graph);
  }
  if (!rc && o->time_passes) {
    pass_print_times(stderr, &o->passes);
    llvm_print_times(stderr, &times);
    if (e == EMIT_SO) fprintf(stderr, "%-16s %10.3f\n", "link+header", link_ms);
  }
  work_close(&w);
  cli_loaded_free(&m);
  return rc;
}

/* ---- kiln build --------------------------------------------------------- */

static int build_exe(const Options *o, const Graph *g, Work *w) {
  LlvmOptions lo = {.opt_level = o->opt_level, .train = false};
  char err[1024];
  const char *obj = work_path(w, "model.o"), *glue = work_path(w, "glue.c");
  const char *wasm = work_path(w, "weights.s"), *exe = work_path(w, "model");
  if (!obj || !glue || !wasm || !exe) return cli_error("out of memory");
  int rc = o->weights ? check_weights(g, o->weights) : EXIT_OK;
  if (!rc && !llvm_emit(g, &lo, LLVM_EMIT_OBJ, obj, err, sizeof err))
    rc = cli_error("code generation failed: %s", err);
  if (!rc) rc = write_text(glue, glue_writer, g, &lo);
  if (!rc) rc = write_weights_asm(wasm, o->weights);
  const char *argv[] = {cc_path(),        "-O1",       "-o",  exe,         obj, glue, wasm,
                        KILN_RT_MAIN_LIB, KILN_RT_LIB, "-lm", "-lpthread", NULL};
  if (!rc) rc = run_cc(o, argv);
  if (!rc) rc = move_into_place(exe, o->output);
  return rc;
}

int cmd_build(Options *o) {
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  if (!o->output) return cli_usage_error(o->cmd, "missing -o BIN");
  Loaded m;
  o->passes.inference = true;
  int rc = cli_load_model(o, &m, STAGE_PLANNED);
  Work w = {0};
  if (!rc) rc = work_open(&w, o->output);
  if (!rc) rc = build_exe(o, m.graph, &w);
  if (!rc && o->verbose) fprintf(stderr, "kiln: built %s\n", o->output);
  work_close(&w);
  cli_loaded_free(&m);
  return rc;
}
