/* cases.c - the test cases of a MANIFEST: loading, building, running on the interpreter. */
#include "cases.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "build.h"

#define ERR_LEN 1024

/* ---- Tolerances --------------------------------------------------------- */

const Tol tol_elementwise = {"elementwise", 1e-5, 1e-5};
const Tol tol_reduction = {"reduction", 1e-4, 1e-4};

const Tol *tol_lookup(const char *cls) {
  static const Tol *const classes[] = {&tol_elementwise, &tol_reduction};
  for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
    if (strcmp(classes[i]->cls, cls) == 0) return classes[i];
  return NULL;
}

double tol_ratio(double got, double want, Tol tol) {
  if (isnan(got) || isnan(want)) return isnan(got) && isnan(want) ? 0 : INFINITY;
  if (isinf(want) || isinf(got)) return got == want ? 0 : INFINITY;
  return fabs(got - want) / (tol.atol + tol.rtol * fabs(want));
}

/* ---- Loading a case ----------------------------------------------------- */

bool case_fail(TestCase *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  %s%s: ", c->name, c->note ? c->note : "");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  c->failed = true;
  return false;
}

bool case_load(TestCase *c, const char *dir) {
  char st_path[CASE_PATH_MAX], err[ERR_LEN];
  size_t len;
  snprintf(c->kl_path, sizeof c->kl_path, "%s/%s.kl", dir, c->name);
  snprintf(st_path, sizeof st_path, "%s/%s.safetensors", dir, c->name);
  c->src = read_file(c->kl_path, &len);
  if (!c->src) return case_fail(c, "cannot read %s", c->kl_path);
  if (kiln_safetensors_read(st_path, &c->fix, err, sizeof err) != 0) return case_fail(c, "%s", err);
  if (!case_parse(c, c->kl_path, c->src, len)) return case_fail(c, "%s does not parse", c->kl_path);
  return true;
}

bool case_parse(TestCase *c, const char *path, const char *src, size_t len) {
  diag_init(&c->diag, path, src, len);
  return parse_file(&c->ast, &c->arena, &c->diag, src, len);
}

void case_free(TestCase *c) {
  kiln_tensor_file_free(&c->fix);
  arena_free(&c->arena);
  free(c->src);
  c->src = NULL;
}

/* ---- Building and running ----------------------------------------------- */

Graph *case_graph(TestCase *c, Stage upto, const CaseBuild *b) {
  Graph *g = build_graph(&c->ast, NULL, 0, &c->diag);
  if (!g) {
    case_fail(c, "%s does not build", c->diag.file);
    return NULL;
  }
  PassCtx cx;
  pass_ctx_init(&cx);
  cx.verify = true;
  PassId stop = b && b->stop_after ? pass_lookup(b->stop_after) : PASS_COUNT;
  if (stop != PASS_COUNT) cx.stop_after = stop;
  cx.inference = b && b->inference;
  cx.target = b ? b->target : NULL;
  if (!pass_run_pipeline(g, upto, &cx)) {
    case_fail(c, "the pipeline to stage '%s' failed", stage_name(upto));
    ir_graph_free(g);
    return NULL;
  }
  return g;
}

/* Every input and param from the fixture. */
static bool bind_sources(TestCase *c, const Graph *g, Interp *it) {
  char err[ERR_LEN];
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_INPUT && n->op != OP_PARAM) continue;
    const KilnTensor *t = kiln_tensor_find(&c->fix, n->name);
    if (!t)
      return case_fail(c, "the fixture has no tensor for %s '%s'", ir_op_name(n->op), n->name);
    if (!interp_set(it, n->name, from_kiln_dtype(t->dtype), t->rank, t->shape, t->data, err,
                    sizeof err))
      return case_fail(c, "binding '%s': %s", n->name, err);
  }
  return true;
}

Interp *case_run(TestCase *c, const Graph *g) {
  char err[ERR_LEN];
  Interp *it = interp_new(g);
  if (!it) {
    case_fail(c, "out of memory for the interpreter");
    return NULL;
  }
  if (!bind_sources(c, g, it)) {
    interp_free(it);
    return NULL;
  }
  if (!interp_run(it, err, sizeof err)) {
    case_fail(c, "interp_run: %s", err);
    interp_free(it);
    return NULL;
  }
  return it;
}

/* ---- The command line and the MANIFEST ----------------------------------- */

bool case_args(CaseArgs *a, int argc, char **argv, const char *prog) {
  *a = (CaseArgs){.dir = ".", .only = calloc((size_t)argc, sizeof *a->only)};
  if (!a->only) ir_fatal("%s: out of memory for the command line", prog);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      a->dir = argv[++i];
    else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: %s [--dir CASES] [NAME...]\n", prog);
      free(a->only);
      a->only = NULL;
      return false;
    } else
      a->only[a->nonly++] = argv[i];
  }
  return true;
}

#define STR_(x) #x
#define STR(x)  STR_(x)

bool manifest_open(Manifest *m, const char *dir, const char *prog) {
  *m = (Manifest){.f = NULL};
  snprintf(m->path, sizeof m->path, "%s/MANIFEST", dir);
  m->f = fopen(m->path, "r");
  if (!m->f) fprintf(stderr, "%s: cannot read %s\n", prog, m->path);
  return m->f != NULL;
}

bool manifest_next(Manifest *m) {
  int r = fscanf(m->f, "%" STR(CASE_NAME_MAX) "s %" STR(CASE_NAME_MAX) "s", m->name, m->cls);
  m->malformed = r != 2 && r != EOF;
  return r == 2;
}

void manifest_close(Manifest *m) {
  fclose(m->f);
  m->f = NULL;
}

bool manifest_wanted(const char *name, char **only, int nonly, bool *seen) {
  bool hit = nonly == 0;
  for (int i = 0; i < nonly; i++)
    if (strcmp(only[i], name) == 0) {
      hit = true;
      if (seen) seen[i] = true;
    }
  return hit;
}

/* ---- Files and values --------------------------------------------------- */

char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  long n = -1;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
    buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) {
    buf[n] = '\0';
    *len = (size_t)n;
  }
  return buf;
}

DType from_kiln_dtype(KilnDType dt) {
  return dt == KILN_F64 ? DT_F64 : dt == KILN_I32 ? DT_I32 : DT_F32;
}
