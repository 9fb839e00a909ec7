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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cases.h"

#define MAX_SHOWN 5 /* mismatches printed per tensor */
#define NAME_LEN  256

/* One case being checked: the loaded case and its tally. */
typedef struct Case {
  TestCase tc;
  double worst;    /* largest error / tolerance over every value compared */
  int ntensors;    /* tensors compared: outputs, loss, gradients */
  int ngrads;      /* gradients compared */
  bool grads_skip; /* the fixture has gradients, the pipeline no autodiff */
} Case;

/* ---- Small helpers ------------------------------------------------------ */

static void *xcalloc(int64_t count, size_t size) {
  void *p = calloc((size_t)count + 1, size);
  if (!p) ir_fatal("test_ops: out of memory for %lld values", (long long)count);
  return p;
}

/* count elements of data (in dtype dt; NULL: zeros) as doubles; malloc'd. */
static double *to_doubles(DType dt, const void *data, int64_t count) {
  double *v = xcalloc(count, sizeof *v);
  for (int64_t i = 0; data && i < count; i++) v[i] = ir_value_at(dt, data, i);
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

/* How far one value is off, in units of its tolerance: <= 1 passes. Against a fixture a NaN
 * never passes, not even where the fixture holds one. */
static double fixture_ratio(double got, double want, Tol tol) {
  return isnan(got) || isnan(want) ? INFINITY : tol_ratio(got, want, tol);
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
  Tol tol = c->tc.tol;
  printf("  %s: %s %s: %lld of %lld values off (%s: rtol %g, atol %g)\n", c->tc.name, m->tensor,
         ir_type_str(m->shape, ty, sizeof ty), (long long)bad, (long long)m->n, tol.cls, tol.rtol,
         tol.atol);
  double max_abs = 0, max_rel = 0;
  int64_t at_abs = -1, at_rel = -1;
  for (int64_t k = 0, shown = 0; k < m->n; k++) {
    int64_t i = m->at ? m->at[k] : k;
    double got = m->got[k], want = m->want[k], err = fabs(got - want);
    if (fixture_ratio(got, want, tol) > 1 && shown++ < MAX_SHOWN)
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
    double r = fixture_ratio(m->got[k], m->want[k], c->tc.tol);
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
    return case_fail(&c->tc, "%s: the graph computes %s, the fixture holds %s", tensor,
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
    return case_fail(&c->tc, "%s: the sample must be i32[k] indices and f32[k] values", tensor);
  double *all = to_doubles(n->type.dtype, value, count), *got = xcalloc(k, sizeof *got);
  int64_t *at = xcalloc(k, sizeof *at);
  bool ok = true;
  for (int64_t j = 0; ok && j < k; j++) {
    at[j] = ((const int32_t *)idx->data)[j];
    if (at[j] < 0 || at[j] >= count)
      ok = case_fail(&c->tc, "%s: sample index %lld outside [0, %lld)", tensor, (long long)at[j],
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

/* ---- Forward: outputs and loss ------------------------------------------ */

/* The loss name of the model's train statement, or NULL. */
static const char *train_loss_name(const Block *m) {
  for (int i = 0; i < m->nbody; i++)
    if (m->body[i].kind == ST_TRAIN) return m->body[i].name;
  return NULL;
}

static bool check_forward(Case *c) {
  Graph *g = case_graph(&c->tc, STAGE_GRAPH, NULL);
  Interp *it = g ? case_run(&c->tc, g) : NULL;
  bool ok = it != NULL;
  char name[NAME_LEN];
  for (int i = 0; it && i < g->noutputs; i++) {
    const Node *n = g->outputs[i].node;
    snprintf(name, sizeof name, "out.%s", g->outputs[i].name);
    const KilnTensor *want = kiln_tensor_find(&c->tc.fix, name);
    if (!want)
      ok = case_fail(&c->tc, "the fixture has no %s", name);
    else
      ok &= compare_full(c, name, n, interp_value(it, n), want);
  }
  const char *loss = train_loss_name(c->tc.ast.model);
  if (it && loss && g->loss) {
    const KilnTensor *want = kiln_tensor_find(&c->tc.fix, loss);
    if (!want)
      ok = case_fail(&c->tc, "the fixture has no loss '%s'", loss);
    else
      ok &= compare_full(c, loss, g->loss, interp_value(it, g->loss), want);
  }
  interp_free(it);
  if (g) ir_graph_free(g);
  return ok;
}

/* ---- Gradients ---------------------------------------------------------- */

/* The fixture's reference for param p: whole (*full) or sampled. */
static bool find_grad_ref(const TestCase *c, const Node *p, const KilnTensor **full,
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

static bool fixture_has_grads(const TestCase *c, const Graph *g) {
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
  if (!find_grad_ref(&c->tc, p, &full, &idx, &val))
    return case_fail(&c->tc, "the fixture has no gradient for param '%s'", p->name);
  const Node *gn = ir_find_grad(g, p);
  if (gn && !ir_type_eq(&gn->type, &p->type))
    return case_fail(&c->tc, "the gradient of '%s' is %s, the param %s", p->name,
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
    return case_fail(&c->tc, "the fixture has only one of gradidx.%s and gradval.%s", p->name,
                     p->name);
  }
  if (!ok && !gn)
    case_fail(&c->tc, "(autodiff recorded no gradient for '%s': zeros compared)", p->name);
  return ok;
}

/* The run stops after autodiff, before the optimizer makes any state: case_run binds every
 * source there is. */
static bool check_grads(Case *c) {
  Graph *g = case_graph(&c->tc, STAGE_GRAD, &(CaseBuild){.stop_after = "autodiff"});
  if (!g) return false;
  bool ok = true;
  if (!fixture_has_grads(&c->tc, g)) {
    ir_graph_free(g);
    return true;
  }
  if (g->ngrads == 0) {
    c->grads_skip = true;
    ir_graph_free(g);
    return true;
  }
  Interp *it = case_run(&c->tc, g);
  ok = it != NULL;
  for (int i = 0; it && i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_PARAM) ok &= check_param_grad(c, g, it, g->nodes[i]);
  interp_free(it);
  ir_graph_free(g);
  return ok;
}

/* ---- The driver --------------------------------------------------------- */

static bool run_case(const char *dir, const char *name, Tol tol) {
  Case c = {.tc = {.name = name, .tol = tol}};
  bool ok = case_load(&c.tc, dir);
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
  case_free(&c.tc);
  return ok;
}

int main(int argc, char **argv) {
  CaseArgs a;
  if (!case_args(&a, argc, argv, "test_ops")) return 2;
  Manifest m;
  if (!manifest_open(&m, a.dir, "test_ops")) {
    free(a.only);
    return 1;
  }
  bool *seen = xcalloc(argc, sizeof *seen);
  int passed = 0, failed = 0;
  while (manifest_next(&m)) {
    if (!manifest_wanted(m.name, a.only, a.nonly, seen)) continue;
    const Tol *tol = tol_lookup(m.cls);
    if (!tol) {
      printf("FAIL %-20s unknown tolerance class '%s' in MANIFEST\n", m.name, m.cls);
      failed++;
    } else if (run_case(a.dir, m.name, *tol))
      passed++;
    else
      failed++;
  }
  if (m.malformed) {
    printf("FAIL %s: a line is not `NAME CLASS`\n", m.path);
    failed++;
  }
  manifest_close(&m);
  for (int i = 0; i < a.nonly; i++)
    if (!seen[i]) {
      printf("FAIL %-20s no such case in %s\n", a.only[i], m.path);
      failed++;
    }
  printf("ops: %d passed, %d failed\n", passed, failed);
  free(a.only);
  free(seen);
  return failed ? 1 : 0;
}
