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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cases.h"

#define ERR_LEN   1024
#define NAME_LEN  256
#define MAX_SHOWN 5

/* One case being checked: the loaded case and its tally. */
typedef struct Case {
  TestCase tc;
  int ntensors;
  double worst;
} Case;

/* The value of one tensor (type t) with the opt stage against without; prints the first
 * mismatches. */
static bool compare(Case *c, const char *what, const Type *t, const void *got, const void *want) {
  int64_t n = ir_type_numel(t), bad = 0;
  c->ntensors++;
  for (int64_t i = 0; i < n; i++) {
    double g = ir_value_at(t->dtype, got, i), w = ir_value_at(t->dtype, want, i);
    double r = tol_ratio(g, w, c->tc.tol);
    if (r > c->worst) c->worst = r;
    if (r <= 1) continue;
    if (bad++ < MAX_SHOWN)
      printf("  %s: %s[%lld]: %.9g with opt, %.9g without\n", c->tc.name, what, (long long)i, g, w);
  }
  if (bad) case_fail(&c->tc, "%s: %lld of %lld values off", what, (long long)bad, (long long)n);
  return bad == 0;
}

/* Outputs by name, the loss, gradients by param name. */
static bool compare_values(Case *c, const Graph *on, Interp *ion, const Graph *off, Interp *ioff) {
  bool ok = on->noutputs == off->noutputs && !on->loss == !off->loss && on->ngrads == off->ngrads;
  if (!ok) return case_fail(&c->tc, "the opt stage changed the outputs, the loss or the gradients");
  char what[NAME_LEN];
  for (int k = 0; k < on->noutputs; k++) {
    snprintf(what, sizeof what, "output %s", on->outputs[k].name);
    const Node *a = on->outputs[k].node, *b = interp_output(ioff, on->outputs[k].name);
    if (!b) return case_fail(&c->tc, "%s exists only with the opt stage", what);
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
  if (on->nupdates != off->nupdates) return case_fail(&c->tc, "the opt stage changed the updates");
  if (!interp_apply_updates(ion, err, sizeof err) || !interp_apply_updates(ioff, err, sizeof err))
    return case_fail(&c->tc, "interp_apply_updates: %s", err);
  bool ok = true;
  for (int k = 0; k < on->nupdates; k++) {
    const Node *t = on->updates[k].target;
    snprintf(what, sizeof what, "updated %s", t->name);
    const void *b = interp_source(ioff, t->name);
    if (!b) return case_fail(&c->tc, "'%s' is updated only with the opt stage", t->name);
    ok &= compare(c, what, &t->type, interp_source(ion, t->name), b);
  }
  return ok;
}

/* One configuration: the pipeline to `base` against the pipeline to the opt stage. */
static bool check_config(Case *c, Stage base, bool inference, int *nodes_off, int *nodes_on) {
  CaseBuild b = {.inference = inference};
  Graph *off = case_graph(&c->tc, base, &b), *on = off ? case_graph(&c->tc, STAGE_OPT, &b) : 0;
  Interp *ioff = on ? case_run(&c->tc, off) : NULL, *ion = ioff ? case_run(&c->tc, on) : NULL;
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
  Case c = {.tc = {.name = name, .tol = tol}};
  int train_off = 0, train_on = 0, inf_off = 0, inf_on = 0;
  bool ok = case_load(&c.tc, dir);
  if (ok) {
    bool train = check_config(&c, STAGE_GRAD, false, &train_off, &train_on);
    ok = check_config(&c, STAGE_GRAPH, true, &inf_off, &inf_on) && train;
  }
  printf("%-4s %-20s step %4d -> %4d nodes, inference %3d -> %3d, %2d tensors, worst %.3f\n",
         ok ? "ok" : "FAIL", name, train_off, train_on, inf_off, inf_on, c.ntensors, c.worst);
  case_free(&c.tc);
  return ok;
}

int main(int argc, char **argv) {
  CaseArgs a;
  if (!case_args(&a, argc, argv, "test_opt")) return 2;
  Manifest m;
  if (!manifest_open(&m, a.dir, "test_opt")) {
    free(a.only);
    return 1;
  }
  int passed = 0, failed = 0;
  while (manifest_next(&m)) {
    if (!manifest_wanted(m.name, a.only, a.nonly, NULL)) continue;
    const Tol *tol = tol_lookup(m.cls);
    if (tol && run_case(a.dir, m.name, *tol))
      passed++;
    else
      failed++;
  }
  manifest_close(&m);
  printf("opt: %d passed, %d failed\n", passed, failed);
  free(a.only);
  return failed ? 1 : 0;
}
