/* test_ops.c - every op and model of tests/ops/cases on the reference interpreter vs PyTorch.
 *
 *   test_ops [--dir CASES] [NAME...]
 *
 * For each case of CASES/MANIFEST (or only the NAMEs given): parse and build
 * NAME.kl, run the pipeline to the graph stage, bind every input and param
 * from NAME.safetensors by name, run the interpreter, and compare every
 * output with `out.OUTPUT` and the train loss with its stored value, within
 * the case's tolerance class (tests/ops/README.md). When the fixture holds
 * gradients (`grad.PARAM`, or the sample `gradidx.PARAM` / `gradval.PARAM`)
 * and the pipeline has an autodiff pass, the case is built again, run
 * through autodiff (not the optimizer), and every param's recorded gradient
 * is compared too; without autodiff the gradients are reported as skipped.
 *
 * One line per case, then exactly `ops: N passed, N failed`; exit status 1
 * if any case failed.
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

#define ERR_LEN       1024
#define MAX_SHOWN     5 /* mismatches printed per tensor */
#define NAME_LEN      256
#define MAX_CASE_NAME 64

/* |got - want| <= atol + rtol * |want|; infinities exact; NaN never passes. */
typedef struct Tol {
  const char *cls;
  double rtol, atol;
} Tol;

static const Tol tolerances[] = {
    {"elementwise", 1e-5, 1e-5},
    {"reduction", 1e-4, 1e-4},
};

/* One case being checked: its source, syntax tree, fixture and tally. */
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
  double worst;    /* largest error / tolerance over every value compared */
  int ntensors;    /* tensors compared: outputs, loss, gradients */
  int ngrads;      /* gradients compared */
  bool grads_skip; /* the fixture has gradients, the pipeline no autodiff */
} Case;

/* ---- Small helpers ------------------------------------------------------ */

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
  if (buf) {
    buf[n] = '\0';
    *len = (size_t)n;
  }
  return buf;
}

static DType from_kiln_dtype(KilnDType dt) {
  return dt == KILN_F64 ? DT_F64 : dt == KILN_I32 ? DT_I32 : DT_F32;
}

static void *xcalloc(int64_t count, size_t size) {
  void *p = calloc((size_t)count + 1, size);
  if (!p) ir_fatal("test_ops: out of memory for %lld values", (long long)count);
  return p;
}

/* count elements of data (in dtype dt; NULL: zeros) as doubles; malloc'd. */
static double *to_doubles(DType dt, const void *data, int64_t count) {
  double *v = xcalloc(count, sizeof *v);
  if (!data) return v;
  for (int64_t i = 0; i < count; i++) {
    switch (dt) {
    case DT_F32:
      v[i] = ((const float *)data)[i];
      break;
    case DT_F64:
      v[i] = ((const double *)data)[i];
      break;
    case DT_I32:
      v[i] = ((const int32_t *)data)[i];
      break;
    case DT_COUNT:
      ir_fatal("test_ops: value of no dtype");
    }
  }
  return v;
}

/* "[1,2,3]": the flat index i of shape t as a C-order multi-index. */
static const char *index_str(const Type *t, int64_t i, char *buf, size_t len) {
  int64_t idx[IR_MAX_RANK];
  for (int d = t->rank - 1; d >= 0; d--) {
    idx[d] = t->dims[d] ? i % t->dims[d] : 0;
    i = t->dims[d] ? i / t->dims[d] : 0;
  }
  size_t n = (size_t)snprintf(buf, len, "[");
  for (int d = 0; d < t->rank && n < len; d++)
    n += (size_t)snprintf(buf + n, len - n, "%s%lld", d ? "," : "", (long long)idx[d]);
  if (n < len) snprintf(buf + n, len - n, "]");
  return buf;
}

static bool shape_matches(const Type *t, const KilnTensor *k) {
  if (k->rank != t->rank) return false;
  for (int d = 0; d < t->rank; d++)
    if (k->shape[d] != t->dims[d]) return false;
  return true;
}

static const char *kiln_type_str(const KilnTensor *k, char *buf, size_t len) {
  Type t = ir_type(from_kiln_dtype(k->dtype), k->rank, k->shape);
  return ir_type_str(&t, buf, len);
}

/* ---- Comparing ---------------------------------------------------------- */

/* How far one value is off, in units of its tolerance: <= 1 passes. */
static double tol_ratio(double got, double want, Tol tol) {
  if (isnan(got) || isnan(want)) return INFINITY;
  if (isinf(want) || isinf(got)) return got == want ? 0 : INFINITY;
  return fabs(got - want) / (tol.atol + tol.rtol * fabs(want));
}

/* A comparison of n values: got[k] against want[k], where value k is element
 * at[k] of a tensor of type shape (at NULL: element k). */
typedef struct Compare {
  const char *tensor;
  const Type *shape;
  const double *got, *want;
  const int64_t *at;
  int64_t n;
} Compare;

/* Prints the first mismatches and the largest absolute and relative error. */
static void report_mismatches(const Case *c, const Compare *m, int64_t bad) {
  char ty[IR_TYPE_STR_MAX], ix[IR_TYPE_STR_MAX];
  printf("  %s: %s %s: %lld of %lld values off (%s: rtol %g, atol %g)\n", c->name, m->tensor,
         ir_type_str(m->shape, ty, sizeof ty), (long long)bad, (long long)m->n, c->tol.cls,
         c->tol.rtol, c->tol.atol);
  double max_abs = 0, max_rel = 0;
  int64_t at_abs = -1, at_rel = -1;
  for (int64_t k = 0, shown = 0; k < m->n; k++) {
    int64_t i = m->at ? m->at[k] : k;
    double got = m->got[k], want = m->want[k], err = fabs(got - want);
    if (tol_ratio(got, want, c->tol) > 1 && shown++ < MAX_SHOWN)
      printf("    %s got %.9g want %.9g (abs %.3g)\n", index_str(m->shape, i, ix, sizeof ix), got,
             want, err);
    if (isnan(err) || isinf(err)) continue;
    if (err > max_abs) max_abs = err, at_abs = i;
    if (want != 0 && err / fabs(want) > max_rel) max_rel = err / fabs(want), at_rel = i;
  }
  printf("    largest finite abs error %.3g", max_abs);
  if (at_abs >= 0) printf(" at %s", index_str(m->shape, at_abs, ix, sizeof ix));
  printf(", largest rel error %.3g", max_rel);
  if (at_rel >= 0) printf(" at %s", index_str(m->shape, at_rel, ix, sizeof ix));
  printf("\n");
}

static bool compare(Case *c, const Compare *m) {
  int64_t bad = 0;
  for (int64_t k = 0; k < m->n; k++) {
    double r = tol_ratio(m->got[k], m->want[k], c->tol);
    if (r > 1) bad++;
    if (r > c->worst) c->worst = r;
  }
  c->ntensors++;
  if (bad) report_mismatches(c, m, bad);
  return bad == 0;
}

/* A node's value against a whole fixture tensor of the same shape. */
static bool compare_full(Case *c, const char *tensor, const Node *n, const void *value,
                         const KilnTensor *want) {
  char a[IR_TYPE_STR_MAX], b[IR_TYPE_STR_MAX];
  if (!shape_matches(&n->type, want) || want->dtype == KILN_I32)
    return case_fail(c, "%s: the graph computes %s, the fixture holds %s", tensor,
                     ir_type_str(&n->type, a, sizeof a), kiln_type_str(want, b, sizeof b));
  int64_t count = ir_type_numel(&n->type);
  double *got = to_doubles(n->type.dtype, value, count);
  double *w = to_doubles(from_kiln_dtype(want->dtype), want->data, count);
  Compare m = {tensor, &n->type, got, w, NULL, count};
  bool ok = compare(c, &m);
  free(got);
  free(w);
  return ok;
}

/* A node's value at the flat indices of `idx` against the values `val`. */
static bool compare_sampled(Case *c, const char *tensor, const Node *n, const void *value,
                            const KilnTensor *idx, const KilnTensor *val) {
  int64_t count = ir_type_numel(&n->type), k = kiln_tensor_numel(idx);
  if (idx->dtype != KILN_I32 || idx->rank != 1 || val->dtype == KILN_I32 || val->rank != 1 ||
      kiln_tensor_numel(val) != k)
    return case_fail(c, "%s: the sample must be i32[k] indices and f32[k] values", tensor);
  double *all = to_doubles(n->type.dtype, value, count), *got = xcalloc(k, sizeof *got);
  int64_t *at = xcalloc(k, sizeof *at);
  bool ok = true;
  for (int64_t j = 0; ok && j < k; j++) {
    at[j] = ((const int32_t *)idx->data)[j];
    if (at[j] < 0 || at[j] >= count)
      ok = case_fail(c, "%s: sample index %lld outside [0, %lld)", tensor, (long long)at[j],
                     (long long)count);
    else
      got[j] = all[at[j]];
  }
  double *w = ok ? to_doubles(from_kiln_dtype(val->dtype), val->data, k) : NULL;
  Compare m = {tensor, &n->type, got, w, at, k};
  if (ok) ok = compare(c, &m);
  free(all);
  free(got);
  free(at);
  free(w);
  return ok;
}

/* ---- Loading a case ----------------------------------------------------- */

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

/* A fresh graph from the case's syntax tree, through the pipeline to upto
 * (stopping after `stop_after` when it is a pass). NULL on an error. */
static Graph *case_graph(Case *c, Stage upto, PassId stop_after) {
  Graph *g = build_graph(&c->ast, NULL, 0, &c->diag);
  if (!g) {
    case_fail(c, "%s does not build", c->kl_path);
    return NULL;
  }
  PassCtx cx;
  pass_ctx_init(&cx);
  cx.verify = true;
  if (stop_after != PASS_COUNT) cx.stop_after = stop_after;
  if (!pass_run_pipeline(g, upto, &cx)) {
    case_fail(c, "the pipeline to stage '%s' failed", stage_name(upto));
    ir_graph_free(g);
    return NULL;
  }
  return g;
}

/* The loss name of the model's train statement, or NULL. */
static const char *train_loss_name(const Case *c) {
  const Block *m = c->ast.model;
  for (int i = 0; i < m->nbody; i++)
    if (m->body[i].kind == ST_TRAIN) return m->body[i].name;
  return NULL;
}

/* Every input and param from the fixture. (No state: the gradient run stops
 * after autodiff, before the optimizer makes any.) */
static bool bind_sources(Case *c, const Graph *g, Interp *it) {
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

/* An interpreter for g with every source bound, after a run; NULL on error. */
static Interp *case_run(Case *c, const Graph *g) {
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

/* ---- Forward: outputs and loss ------------------------------------------ */

static bool check_forward(Case *c) {
  Graph *g = case_graph(c, STAGE_GRAPH, PASS_COUNT);
  Interp *it = g ? case_run(c, g) : NULL;
  bool ok = it != NULL;
  char name[NAME_LEN];
  for (int i = 0; it && i < g->noutputs; i++) {
    const Node *n = g->outputs[i].node;
    snprintf(name, sizeof name, "out.%s", g->outputs[i].name);
    const KilnTensor *want = kiln_tensor_find(&c->fix, name);
    if (!want)
      ok = case_fail(c, "the fixture has no %s", name);
    else
      ok &= compare_full(c, name, n, interp_value(it, n), want);
  }
  const char *loss = train_loss_name(c);
  if (it && loss && g->loss) {
    const KilnTensor *want = kiln_tensor_find(&c->fix, loss);
    if (!want)
      ok = case_fail(c, "the fixture has no loss '%s'", loss);
    else
      ok &= compare_full(c, loss, g->loss, interp_value(it, g->loss), want);
  }
  interp_free(it);
  if (g) ir_graph_free(g);
  return ok;
}

/* ---- Gradients ---------------------------------------------------------- */

/* The fixture's reference for param p: whole (*full) or sampled. */
static bool find_grad_ref(const Case *c, const Node *p, const KilnTensor **full,
                          const KilnTensor **idx, const KilnTensor **val) {
  char name[NAME_LEN];
  snprintf(name, sizeof name, "grad.%s", p->name);
  *full = kiln_tensor_find(&c->fix, name);
  snprintf(name, sizeof name, "gradidx.%s", p->name);
  *idx = kiln_tensor_find(&c->fix, name);
  snprintf(name, sizeof name, "gradval.%s", p->name);
  *val = kiln_tensor_find(&c->fix, name);
  return *full || *idx || *val;
}

static bool fixture_has_grads(const Case *c, const Graph *g) {
  const KilnTensor *full, *idx, *val;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_PARAM && find_grad_ref(c, g->nodes[i], &full, &idx, &val))
      return true;
  return false;
}

/* One param's gradient; a param autodiff recorded nothing for counts as zero. */
static bool check_param_grad(Case *c, const Graph *g, const Interp *it, const Node *p) {
  const KilnTensor *full, *idx, *val;
  char name[NAME_LEN], a[IR_TYPE_STR_MAX], b[IR_TYPE_STR_MAX];
  if (!find_grad_ref(c, p, &full, &idx, &val))
    return case_fail(c, "the fixture has no gradient for param '%s'", p->name);
  const Node *gn = ir_find_grad(g, p);
  if (gn && !ir_type_eq(&gn->type, &p->type))
    return case_fail(c, "the gradient of '%s' is %s, the param %s", p->name,
                     ir_type_str(&gn->type, a, sizeof a), ir_type_str(&p->type, b, sizeof b));
  const void *value = gn ? interp_value(it, gn) : NULL; /* NULL: zeros */
  bool ok;
  c->ngrads++;
  if (full) {
    snprintf(name, sizeof name, "grad.%s", p->name);
    ok = compare_full(c, name, p, value, full);
  } else if (idx && val) {
    snprintf(name, sizeof name, "gradval.%s", p->name);
    ok = compare_sampled(c, name, p, value, idx, val);
  } else {
    return case_fail(c, "the fixture has only one of gradidx.%s and gradval.%s", p->name, p->name);
  }
  if (!ok && !gn) case_fail(c, "(autodiff recorded no gradient for '%s': zeros compared)", p->name);
  return ok;
}

static bool check_grads(Case *c) {
  PassId autodiff = pass_lookup("autodiff");
  Graph *g = case_graph(c, STAGE_GRAD, autodiff);
  if (!g) return false;
  bool ok = true;
  if (!fixture_has_grads(c, g)) {
    ir_graph_free(g);
    return true;
  }
  if (g->ngrads == 0) {
    c->grads_skip = true;
    ir_graph_free(g);
    return true;
  }
  Interp *it = case_run(c, g);
  ok = it != NULL;
  for (int i = 0; it && i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_PARAM) ok &= check_param_grad(c, g, it, g->nodes[i]);
  interp_free(it);
  ir_graph_free(g);
  return ok;
}

/* ---- The driver --------------------------------------------------------- */

static bool run_case(const char *dir, const char *name, Tol tol) {
  Case c = {.name = name, .tol = tol};
  bool ok = case_load(&c, dir);
  if (ok) {
    bool forward = check_forward(&c);
    ok = check_grads(&c) && forward;
  }
  printf("%-4s %-20s %-11s %2d outputs+loss", ok ? "ok" : "FAIL", name, tol.cls,
         c.ntensors - c.ngrads);
  if (c.grads_skip)
    printf(", gradients skipped (no autodiff pass)");
  else
    printf(", %2d gradients", c.ngrads);
  printf(", worst %.3f of tolerance\n", c.worst);
  case_free(&c);
  return ok;
}

/* Tolerance class by name; NULL if unknown. */
static const Tol *tol_lookup(const char *cls) {
  for (size_t i = 0; i < sizeof tolerances / sizeof tolerances[0]; i++)
    if (strcmp(tolerances[i].cls, cls) == 0) return &tolerances[i];
  return NULL;
}

static bool wanted(const char *name, char **only, int nonly, bool *seen) {
  if (nonly == 0) return true;
  bool hit = false;
  for (int i = 0; i < nonly; i++)
    if (strcmp(only[i], name) == 0) hit = seen[i] = true;
  return hit;
}

int main(int argc, char **argv) {
  const char *dir = ".";
  int nonly = 0;
  char **only = xcalloc(argc, sizeof *only);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir = argv[++i];
    else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: test_ops [--dir CASES] [NAME...]\n");
      free(only);
      return 2;
    } else
      only[nonly++] = argv[i];
  }
  char path[NAME_LEN];
  snprintf(path, sizeof path, "%s/MANIFEST", dir);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "test_ops: cannot read %s\n", path);
    free(only);
    return 1;
  }
  bool *seen = xcalloc(argc, sizeof *seen);
  int passed = 0, failed = 0;
  char name[MAX_CASE_NAME + 1], cls[MAX_CASE_NAME + 1];
  int r;
  while ((r = fscanf(f, "%64s %64s", name, cls)) == 2) {
    if (!wanted(name, only, nonly, seen)) continue;
    const Tol *tol = tol_lookup(cls);
    if (!tol) {
      printf("FAIL %-20s unknown tolerance class '%s' in MANIFEST\n", name, cls);
      failed++;
    } else if (run_case(dir, name, *tol))
      passed++;
    else
      failed++;
  }
  if (r != EOF) {
    printf("FAIL %s: a line is not `NAME CLASS`\n", path);
    failed++;
  }
  fclose(f);
  for (int i = 0; i < nonly; i++)
    if (!seen[i]) {
      printf("FAIL %-20s no such case in %s\n", only[i], path);
      failed++;
    }
  printf("ops: %d passed, %d failed\n", passed, failed);
  free(only);
  free(seen);
  return failed ? 1 : 0;
}
