/* test_opt.c - the opt stage changes no numbers: every case of tests/ops/cases with and without it.
 *
 *   test_opt [--dir CASES] [NAME...]
 *
 * For each case of CASES/MANIFEST, on the reference interpreter, with every input and param
 * bound from NAME.safetensors:
 *   train step  the pipeline to the grad stage (forward, autodiff, optimizer) against the same
 *               through the opt stage (simplify, cse, dce2): every output, the loss, every
 *               param's gradient, and after the step's updates every param and optimizer state;
 *   inference   (cx.inference) the graph stage against the opt stage: every output.
 * Values must agree within the case's tolerance class (tests/ops/README.md); NaN agrees with
 * NaN and an infinity only with itself. One line per case with the node counts, then exactly
 * `opt: N passed, N failed`; exit status 1 if any case failed.
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ast.h"
#include "build.h"
#include "interp.h"
#include "passes.h"
#include "tensor_io.h"

#define ERR_LEN   1024
#define NAME_LEN  256
#define MAX_SHOWN 5

typedef struct Tol {
  const char *cls;
  double rtol, atol;
} Tol;

static const Tol tolerances[] = {
    {"elementwise", 1e-5, 1e-5},
    {"reduction", 1e-4, 1e-4},
};

typedef struct Case {
  const char *name;
  Tol tol;
  char *src;
  size_t len;
  char kl_path[NAME_LEN];
  Arena arena;
  Ast ast;
  Diag diag;
  KilnTensorFile fix;
  int ntensors;
  double worst;
} Case;

static bool case_fail(const Case *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool case_fail(const Case *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  %s: ", c->name);
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  return false;
}

static char *read_file(const char *path, size_t *len) {
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
  if (buf) buf[n] = '\0', *len = (size_t)n;
  return buf;
}

static DType from_kiln_dtype(KilnDType dt) {
  return dt == KILN_F64 ? DT_F64 : dt == KILN_I32 ? DT_I32 : DT_F32;
}

static double value_at(DType dt, const void *p, int64_t i) {
  switch (dt) {
  case DT_F32:
    return ((const float *)p)[i];
  case DT_F64:
    return ((const double *)p)[i];
  case DT_I32:
    return ((const int32_t *)p)[i];
  case DT_COUNT:
    break;
  }
  ir_fatal("test_opt: value of no dtype");
}

/* How far `got` (opt on) is from `want` (opt off) in units of the tolerance. */
static double tol_ratio(double got, double want, Tol tol) {
  if (isnan(got) || isnan(want)) return isnan(got) && isnan(want) ? 0 : INFINITY;
  if (isinf(want) || isinf(got)) return got == want ? 0 : INFINITY;
  return fabs(got - want) / (tol.atol + tol.rtol * fabs(want));
}

/* The value of one tensor (type t) with the opt stage against without; prints the first
 * mismatches. */
static bool compare(Case *c, const char *what, const Type *t, const void *got, const void *want) {
  int64_t n = ir_type_numel(t), bad = 0;
  c->ntensors++;
  for (int64_t i = 0; i < n; i++) {
    double g = value_at(t->dtype, got, i), w = value_at(t->dtype, want, i);
    double r = tol_ratio(g, w, c->tol);
    if (r > c->worst) c->worst = r;
    if (r <= 1) continue;
    if (bad++ < MAX_SHOWN)
      printf("  %s: %s[%lld]: %.9g with opt, %.9g without\n", c->name, what, (long long)i, g, w);
  }
  if (bad) case_fail(c, "%s: %lld of %lld values off", what, (long long)bad, (long long)n);
  return bad == 0;
}

static bool case_load(Case *c, const char *dir) {
  char st_path[NAME_LEN], err[ERR_LEN];
  snprintf(c->kl_path, sizeof c->kl_path, "%s/%s.kl", dir, c->name);
  snprintf(st_path, sizeof st_path, "%s/%s.safetensors", dir, c->name);
  c->src = read_file(c->kl_path, &c->len);
  if (!c->src) return case_fail(c, "cannot read %s", c->kl_path);
  if (kiln_safetensors_read(st_path, &c->fix, err, sizeof err) != 0) return case_fail(c, "%s", err);
  diag_init(&c->diag, c->kl_path, c->src, c->len);
  if (!parse_file(&c->ast, &c->arena, &c->diag, c->src, c->len))
    return case_fail(c, "%s does not parse", c->kl_path);
  return true;
}

static void case_free(Case *c) {
  kiln_tensor_file_free(&c->fix);
  arena_free(&c->arena);
  free(c->src);
}

/* A fresh graph through the pipeline to upto, verified after every pass; NULL on error. */
static Graph *case_graph(Case *c, Stage upto, bool inference) {
  Graph *g = build_graph(&c->ast, NULL, 0, &c->diag);
  if (!g) {
    case_fail(c, "%s does not build", c->kl_path);
    return NULL;
  }
  PassCtx cx;
  pass_ctx_init(&cx);
  cx.verify = true;
  cx.inference = inference;
  if (!pass_run_pipeline(g, upto, &cx)) {
    case_fail(c, "the pipeline to stage '%s' failed", stage_name(upto));
    ir_graph_free(g);
    return NULL;
  }
  return g;
}

/* An interpreter for g with its inputs and params bound, after one run; NULL on error. */
static Interp *case_run(Case *c, const Graph *g) {
  char err[ERR_LEN];
  Interp *it = interp_new(g);
  if (!it) {
    case_fail(c, "out of memory for the interpreter");
    return NULL;
  }
  bool ok = true;
  for (int i = 0; ok && i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_INPUT && n->op != OP_PARAM) continue;
    const KilnTensor *t = kiln_tensor_find(&c->fix, n->name);
    if (!t)
      ok = case_fail(c, "the fixture has no tensor for '%s'", n->name);
    else if (!interp_set(it, n->name, from_kiln_dtype(t->dtype), t->rank, t->shape, t->data, err,
                         sizeof err))
      ok = case_fail(c, "binding '%s': %s", n->name, err);
  }
  if (ok && !interp_run(it, err, sizeof err)) ok = case_fail(c, "interp_run: %s", err);
  if (!ok) interp_free(it);
  return ok ? it : NULL;
}

/* Outputs by name, the loss, gradients by param name. */
static bool compare_values(Case *c, const Graph *on, Interp *ion, const Graph *off, Interp *ioff) {
  bool ok = on->noutputs == off->noutputs && !on->loss == !off->loss && on->ngrads == off->ngrads;
  if (!ok) return case_fail(c, "the opt stage changed the outputs, the loss or the gradients");
  char what[NAME_LEN];
  for (int k = 0; k < on->noutputs; k++) {
    snprintf(what, sizeof what, "output %s", on->outputs[k].name);
    const Node *a = on->outputs[k].node, *b = interp_output(ioff, on->outputs[k].name);
    if (!b) return case_fail(c, "%s exists only with the opt stage", what);
    ok &= compare(c, what, &b->type, interp_value(ion, a), interp_value(ioff, b));
  }
  if (on->loss)
    ok &= compare(c, "loss", &on->loss->type, interp_value(ion, on->loss),
                  interp_value(ioff, off->loss));
  for (int k = 0; k < on->ngrads; k++) {
    const Node *p = on->grads[k].param, *q = ir_find_param(off, p->name);
    snprintf(what, sizeof what, "grad %s", p->name);
    ok &= compare(c, what, &p->type, interp_value(ion, on->grads[k].grad),
                  interp_value(ioff, ir_find_grad(off, q)));
  }
  return ok;
}

/* After the step's updates: every param and state, by name. */
static bool compare_updates(Case *c, const Graph *on, Interp *ion, const Graph *off, Interp *ioff) {
  char err[ERR_LEN], what[NAME_LEN];
  if (on->nupdates != off->nupdates) return case_fail(c, "the opt stage changed the updates");
  if (!interp_apply_updates(ion, err, sizeof err) || !interp_apply_updates(ioff, err, sizeof err))
    return case_fail(c, "interp_apply_updates: %s", err);
  bool ok = true;
  for (int k = 0; k < on->nupdates; k++) {
    const Node *t = on->updates[k].target;
    snprintf(what, sizeof what, "updated %s", t->name);
    const void *b = interp_source(ioff, t->name);
    if (!b) return case_fail(c, "'%s' is updated only with the opt stage", t->name);
    ok &= compare(c, what, &t->type, interp_source(ion, t->name), b);
  }
  return ok;
}

/* One configuration: the pipeline to `base` against the pipeline to the opt stage. */
static bool check_config(Case *c, Stage base, bool inference, int *nodes_off, int *nodes_on) {
  Graph *off = case_graph(c, base, inference), *on = off ? case_graph(c, STAGE_OPT, inference) : 0;
  Interp *ioff = on ? case_run(c, off) : NULL, *ion = ioff ? case_run(c, on) : NULL;
  bool ok = ion != NULL;
  if (ok) {
    *nodes_off = off->nnodes;
    *nodes_on = on->nnodes;
    ok = compare_values(c, on, ion, off, ioff);
    ok &= inference || compare_updates(c, on, ion, off, ioff);
  }
  interp_free(ion);
  interp_free(ioff);
  if (on) ir_graph_free(on);
  if (off) ir_graph_free(off);
  return ok;
}

static bool run_case(const char *dir, const char *name, Tol tol) {
  Case c = {.name = name, .tol = tol};
  int train_off = 0, train_on = 0, inf_off = 0, inf_on = 0;
  bool ok = case_load(&c, dir);
  if (ok) {
    bool train = check_config(&c, STAGE_GRAD, false, &train_off, &train_on);
    ok = check_config(&c, STAGE_GRAPH, true, &inf_off, &inf_on) && train;
  }
  printf("%-4s %-20s step %4d -> %4d nodes, inference %3d -> %3d, %2d tensors, worst %.3f\n",
         ok ? "ok" : "FAIL", name, train_off, train_on, inf_off, inf_on, c.ntensors, c.worst);
  case_free(&c);
  return ok;
}

static const Tol *tol_lookup(const char *cls) {
  for (size_t i = 0; i < sizeof tolerances / sizeof tolerances[0]; i++)
    if (strcmp(tolerances[i].cls, cls) == 0) return &tolerances[i];
  return NULL;
}

static bool wanted(const char *name, char **only, int nonly) {
  for (int i = 0; i < nonly; i++)
    if (strcmp(only[i], name) == 0) return true;
  return nonly == 0;
}

int main(int argc, char **argv) {
  const char *dir = ".";
  char **only = calloc((size_t)argc, sizeof *only);
  int nonly = 0;
  if (!only) return 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir = argv[++i];
    else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: test_opt [--dir CASES] [NAME...]\n");
      free(only);
      return 2;
    } else
      only[nonly++] = argv[i];
  }
  char path[NAME_LEN], name[65], cls[65];
  snprintf(path, sizeof path, "%s/MANIFEST", dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "test_opt: cannot read %s\n", path);
    free(only);
    return 1;
  }
  int passed = 0, failed = 0;
  while (fscanf(f, "%64s %64s", name, cls) == 2) {
    if (!wanted(name, only, nonly)) continue;
    const Tol *tol = tol_lookup(cls);
    if (tol && run_case(dir, name, *tol))
      passed++;
    else
      failed++;
  }
  fclose(f);
  printf("opt: %d passed, %d failed\n", passed, failed);
  free(only);
  return failed ? 1 : 0;
}
