/* test_llvm_diff.c - every op case and model through the LLVM JIT vs the reference interpreter.
 *
 *   test_llvm_diff [--dir CASES] [--bench MODEL.kl] [NAME...]
 *
 * For each case of CASES/MANIFEST (tests/ops/README.md): build NAME.kl to the
 * graph stage, JIT-compile it, create an instance through the descriptor,
 * write the fixture's params at their offsets, call m_infer with the
 * fixture's inputs and compare every output with the interpreter's on the
 * same data, within the case's tolerance class. Then build it to the grad
 * stage (autodiff and optimizer), call m_grad and compare the loss and every
 * param's gradient, then two m_train_step calls against two interpreter
 * steps (params and optimizer state after each). Also: the op table has a
 * lowering for every op, NULL arguments and out-of-range ids give their
 * status codes. Prints the first mismatches and the largest error, then
 * `diff: N passed, N failed`.
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cases.h"
#include "invoke.h"
#include "kiln_rt.h"
#include "llvm_backend.h"

#define ERR_LEN  1024
#define MAX_SHOW 5

/* ---- Comparing ---------------------------------------------------------- */

/* One case being checked: the loaded case (failed: any check failed; note " (planned)" while
 * checking the fused and planned graph) and its tally. */
typedef struct Case {
  TestCase tc;
  double worst;
  int ntensors;
} Case;

/* got (JIT) vs want (interpreter), both of n's type; elements marked in loose (NULL: none)
 * within loose_atol instead. */
static void compare_loose(Case *c, const char *what, const Node *n, const void *got,
                          const void *want, Tol t, const bool *loose, double loose_atol) {
  int64_t count = ir_type_numel(&n->type), bad = 0, shown = 0;
  double max_abs = 0, max_rel = 0;
  Tol lt = {t.cls, t.rtol, loose_atol};
  for (int64_t i = 0; i < count; i++) {
    double g = ir_value_at(n->type.dtype, got, i), w = ir_value_at(n->type.dtype, want, i);
    double r = tol_ratio(g, w, loose && loose[i] ? lt : t), e = fabs(g - w);
    if (r > c->worst) c->worst = r;
    if (r > 1 && shown++ < MAX_SHOW)
      printf("  %s: %s[%lld] got %.9g want %.9g\n", c->tc.name, what, (long long)i, g, w);
    if (r > 1) bad++;
    if (isfinite(e) && e > max_abs) max_abs = e;
    if (isfinite(e) && w != 0 && e / fabs(w) > max_rel) max_rel = e / fabs(w);
  }
  c->ntensors++;
  if (bad)
    case_fail(&c->tc, "%s: %lld of %lld off (%s); largest abs error %.3g, rel %.3g", what,
              (long long)bad, (long long)count, t.cls, max_abs, max_rel);
}

static void compare(Case *c, const char *what, const Node *n, const void *got, const void *want,
                    Tol t) {
  compare_loose(c, what, n, got, want, t, NULL, 0);
}

/* m_grad and m_train_step write the loss as a float whatever its dtype (SPEC §3). */
static void compare_loss(Case *c, const char *what, const Node *loss, float got, const void *want,
                         Tol t) {
  double wide = got;
  compare(c, what, loss, loss->type.dtype == DT_F64 ? (const void *)&wide : (const void *)&got,
          want, t);
}

/* ---- Calling entry points ----------------------------------------------- */

typedef void *P;
/* Calls an entry point: args[0] is the instance, then n - 1 pointers (libffi). */
/* Graphs for the JIT: fused into the LLVM backend's launches. */
static const CaseBuild *llvm_build(void) {
  static CaseBuild b;
  b.target = llvm_fuse_target();
  return &b;
}

static int invoke(void (*f)(void), P *a, int n) { return kiln_invoke(f, a[0], a + 1, n - 1); }

/* ---- Cases -------------------------------------------------------------- */

/* The fixture's data for a source, converted to the node's dtype (malloc'd). */
static void *source_data(TestCase *c, const Node *n) {
  int64_t count = ir_type_numel(&n->type);
  void *out = calloc((size_t)count + 1, ir_dtype_size(n->type.dtype));
  if (n->op == OP_STATE) return out;
  const KilnTensor *t = kiln_tensor_find(&c->fix, n->name);
  if (!t || kiln_tensor_numel(t) != count) {
    case_fail(c, "the fixture has no tensor '%s' of %lld elements", n->name, (long long)count);
    return out;
  }
  for (int64_t i = 0; i < count; i++) {
    double v = ir_value_at(from_kiln_dtype(t->dtype), t->data, i);
    if (n->type.dtype == DT_F32) ((float *)out)[i] = (float)v;
    if (n->type.dtype == DT_F64) ((double *)out)[i] = v;
    if (n->type.dtype == DT_I32) ((int32_t *)out)[i] = (int32_t)v;
  }
  return out;
}

static Interp *interp_for(TestCase *c, const Graph *g) {
  char err[ERR_LEN];
  Interp *it = interp_new(g);
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (!ir_op_is_named_source(n->op)) continue;
    void *d = source_data(c, n);
    if (!interp_set(it, n->name, n->type.dtype, n->type.rank, n->type.dims, d, err, sizeof err))
      case_fail(c, "interp_set %s: %s", n->name, err);
    free(d);
  }
  if (!interp_run(it, err, sizeof err)) case_fail(c, "interp_run: %s", err);
  return it;
}

static size_t bytes_of(const Node *n) {
  return (size_t)ir_type_numel(&n->type) * ir_dtype_size(n->type.dtype);
}

/* A JIT instance with the fixture's params written at their offsets. */
static kiln_instance *jit_instance(TestCase *c, const kiln_model_desc *d, const Graph *g) {
  kiln_instance *self = NULL;
  if (d->entry.create((void **)&self, 1) != 0 || !self) return case_fail(c, "create failed"), NULL;
  for (int i = 0; i < d->nparams; i++) {
    const Node *p = ir_find_param(g, d->params[i].name);
    if (!p) {
      case_fail(c, "descriptor param '%s' is not in the graph", d->params[i].name);
      continue;
    }
    void *data = source_data(c, p);
    memcpy(self->mem + d->params[i].offset, data, bytes_of(p));
    free(data);
  }
  return self;
}

/* The entry's input pointers (fixture data, malloc'd) into args[1..]. */
static int input_args(TestCase *c, const kiln_model_desc *d, const Graph *g, const int32_t *idx,
                      int n, P *args) {
  for (int i = 0; i < n; i++) {
    const Node *in = ir_find_input(g, d->inputs[idx[i]].name);
    args[1 + i] = in ? source_data(c, in) : calloc(1, 8);
  }
  return 1 + n;
}

/* planned: the JIT compiles the fused and planned graph (STAGE_PLANNED), the
 * interpreter runs the unannotated one; outputs, params and state match by
 * position and name. */
static void check_forward(Case *c, double *compile_ms, bool planned) {
  Graph *g = case_graph(&c->tc, STAGE_GRAPH, NULL);
  if (!g) return;
  Graph *jg = planned ? case_graph(&c->tc, STAGE_PLANNED, llvm_build()) : g;
  if (!jg) {
    ir_graph_free(g);
    return;
  }
  char err[ERR_LEN] = "";
  LlvmOptions o = {.opt_level = 2, .train = false};
  double t0 = (double)clock();
  LlvmJit *j = llvm_jit_compile(jg, &o, err, sizeof err);
  *compile_ms = ((double)clock() - t0) * 1e3 / CLOCKS_PER_SEC;
  Interp *it = interp_for(&c->tc, g);
  if (!j) {
    case_fail(&c->tc, "llvm_jit_compile: %s", err);
  } else {
    const kiln_model_desc *d = llvm_jit_desc(j);
    kiln_instance *self = jit_instance(&c->tc, d, g);
    P args[256] = {self};
    int n = input_args(&c->tc, d, g, d->infer_inputs, d->ninfer_inputs, args);
    int nin = n;
    for (int i = 0; i < d->noutputs; i++) args[n++] = calloc(bytes_of(g->outputs[i].node) + 8, 1);
    int rc = invoke(d->entry.infer, args, n);
    if (rc != 0) case_fail(&c->tc, "infer returned %d", rc);
    for (int i = 0; rc == 0 && i < d->noutputs; i++) {
      const Node *on = g->outputs[i].node;
      char what[300];
      snprintf(what, sizeof what, "out.%s", g->outputs[i].name);
      compare(c, what, on, args[nin + i], interp_value(it, on), c->tc.tol);
    }
    /* A NULL argument: KILN_ERR_NULL, nothing touched. */
    if (n > 1) {
      P keep = args[n - 1];
      args[n - 1] = NULL;
      if (invoke(d->entry.infer, args, n) != KILN_ERR_NULL)
        case_fail(&c->tc, "a NULL output did not give 1");
      args[n - 1] = keep;
    }
    for (int i = 1; i < n; i++) free(args[i]);
    d->entry.destroy(self);
    llvm_jit_free(j);
  }
  interp_free(it);
  if (jg != g) ir_graph_free(jg);
  ir_graph_free(g);
}

/* m_grad, then two m_train_step calls, against the interpreter. */
static void check_train(Case *c, bool planned) {
  Graph *g = case_graph(&c->tc, STAGE_GRAD, NULL);
  if (!g) return;
  if (!g->loss || g->ngrads == 0) {
    ir_graph_free(g);
    return;
  }
  Graph *jg = planned ? case_graph(&c->tc, STAGE_PLANNED, llvm_build()) : g;
  if (!jg) {
    ir_graph_free(g);
    return;
  }
  char err[ERR_LEN] = "", what[300];
  LlvmOptions o = {.opt_level = 2, .train = true};
  LlvmJit *j = llvm_jit_compile(jg, &o, err, sizeof err);
  if (!j) {
    case_fail(&c->tc, "llvm_jit_compile (train%s): %s", planned ? ", planned" : "", err);
    if (jg != g) ir_graph_free(jg);
    ir_graph_free(g);
    return;
  }
  const kiln_model_desc *d = llvm_jit_desc(j);
  Interp *it = interp_for(&c->tc, g);
  kiln_instance *self = jit_instance(&c->tc, d, g);
  P args[256] = {self};
  int n = input_args(&c->tc, d, g, d->train_inputs, d->ntrain_inputs, args);
  float loss = 0;
  args[n++] = &loss;
  Tol t = tol_reduction;
  int rc = invoke(d->entry.grad, args, n);
  if (rc != 0) case_fail(&c->tc, "grad returned %d", rc);
  if (rc == 0) compare_loss(c, "loss", g->loss, loss, interp_value(it, g->loss), t);
  /* Adam divides by sqrt(v): a gradient that is zero but for rounding (the
   * key bias of attention: softmax ignores a per-row constant; one element of a
   * weight whose terms cancel) becomes a step of about lr either way, so the
   * elements of such params (largest gradient below 1e-6) and such elements
   * (below 1e-5 of their param's largest) are compared within lr per step. */
  bool **tiny = calloc((size_t)d->nparams + 1, sizeof *tiny);
  for (int i = 0; rc == 0 && i < d->nparams; i++) {
    const Node *p = ir_find_param(g, d->params[i].name), *gn = ir_find_grad(g, p);
    snprintf(what, sizeof what, "grad.%s", p->name);
    if (!gn) continue;
    compare(c, what, p, self->mem + d->params[i].grad_offset, interp_value(it, gn), t);
    if (g->optim.kind != OPTIM_ADAM) continue;
    int64_t count = ir_type_numel(&gn->type);
    double gmax = 0;
    for (int64_t k = 0; k < count; k++)
      gmax = fmax(gmax, fabs(ir_value_at(gn->type.dtype, interp_value(it, gn), k)));
    tiny[i] = calloc((size_t)(count > 0 ? count : 1), sizeof **tiny);
    for (int64_t k = 0; tiny[i] && k < count; k++)
      tiny[i][k] =
          gmax < 1e-6 || fabs(ir_value_at(gn->type.dtype, interp_value(it, gn), k)) < 1e-5 * gmax;
  }
  for (int step = 0; rc == 0 && step < 2; step++) {
    if (step > 0 && !interp_run(it, err, sizeof err)) case_fail(&c->tc, "interp_run: %s", err);
    rc = invoke(d->entry.train_step, args, n);
    if (rc != 0) case_fail(&c->tc, "train_step returned %d", rc);
    compare_loss(c, "train loss", g->loss, loss, interp_value(it, g->loss), t);
    interp_apply_updates(it, err, sizeof err);
    for (int i = 0; i < d->nparams; i++) {
      snprintf(what, sizeof what, "step %d param %s", step + 1, d->params[i].name);
      const Node *p = ir_find_param(g, d->params[i].name);
      compare_loose(c, what, p, self->mem + d->params[i].offset, interp_source(it, p->name), t,
                    tiny[i], 2.0 * g->optim.lr * (step + 1));
    }
    for (int i = 0; i < d->nstate; i++) {
      snprintf(what, sizeof what, "step %d %s", step + 1, d->state[i].name);
      const Node *s = ir_find_named_source(g, d->state[i].name);
      compare(c, what, s, self->mem + d->state[i].offset, interp_source(it, s->name), t);
    }
  }
  for (int i = 1; i < n - 1; i++) free(args[i]);
  for (int i = 0; i < d->nparams; i++) free(tiny[i]);
  free(tiny);
  d->entry.destroy(self);
  interp_free(it);
  llvm_jit_free(j);
  if (jg != g) ir_graph_free(jg);
  ir_graph_free(g);
}

/* The JIT unplanned and planned (forward, gradients, two steps) against the interpreter. */
static void run_checks(Case *c, double *ms, double *pms) {
  check_forward(c, ms, false);
  check_train(c, false);
  c->tc.note = " (planned)";
  check_forward(c, pms, true);
  check_train(c, true);
}

static bool run_case(const char *dir, const char *name, Tol tol) {
  Case c = {.tc = {.name = name, .tol = tol}};
  double ms = 0, pms = 0;
  if (case_load(&c.tc, dir)) run_checks(&c, &ms, &pms);
  printf(
      "%-4s %-20s %-11s %2d tensors, worst %.3f of tolerance, compile %.0f ms (planned %.0f ms)\n",
      c.tc.failed ? "FAIL" : "ok", name, tol.cls, c.ntensors, c.worst, ms, pms);
  case_free(&c.tc);
  return !c.tc.failed;
}

/* ---- Random models -------------------------------------------------------
 * --random N: N random models in the language (seeded), each run as a case (run_checks) with
 * random inputs and params, and its fused graphs checked for one launch per kernel: chains of
 * elementwise ops, broadcast rows and columns, reductions over either axis (kept or not, full),
 * softmax over either axis, transposes, slices, concats, reshapes, products with fresh weights,
 * layer norms, convolutions and poolings of a value seen as an image, embeddings, cross-entropy
 * and mse losses, in any order, so fusion and the backend meet groups no hand-written case has. */

static uint64_t rnd_state;
static uint32_t rnd(void) {
  rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(rnd_state >> 33);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }

typedef struct RandVal {
  char name[16];
  int rank; /* 2: [r, c]; 1: [c]; 0: a scalar */
  int r, c;
} RandVal;

typedef struct RandModel {
  RandVal v[48];
  int nv, nparams;
  char decl[2048], body[8192];
  size_t ndecl, nbody;
} RandModel;

static void rm_decl(RandModel *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rm_decl(RandModel *m, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(m->decl + m->ndecl, sizeof m->decl - m->ndecl, fmt, ap);
  va_end(ap);
  if (w > 0 && m->ndecl + (size_t)w < sizeof m->decl) m->ndecl += (size_t)w;
}

/* "vN = <expr>" for a new value of the given shape. */
static void rm_let(RandModel *m, int rank, int r, int c, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void rm_let(RandModel *m, int rank, int r, int c, const char *fmt, ...) {
  if (m->nv >= 48) return;
  RandVal *v = &m->v[m->nv];
  snprintf(v->name, sizeof v->name, "v%d", m->nv);
  v->rank = rank, v->r = r, v->c = c;
  char expr[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(expr, sizeof expr, fmt, ap);
  va_end(ap);
  int w = snprintf(m->body + m->nbody, sizeof m->body - m->nbody, "  %s = %s\n", v->name, expr);
  if (w > 0 && m->nbody + (size_t)w < sizeof m->body) m->nbody += (size_t)w, m->nv++;
}

/* A value of rank 2 (the pool always has one: x). */
static const RandVal *rm_pick2(RandModel *m) {
  for (int t = 0; t < 16; t++) {
    const RandVal *v = &m->v[rnd_int(0, m->nv - 1)];
    if (v->rank == 2) return v;
  }
  return &m->v[0];
}

/* Another rank-2 value of a's shape, or NULL. */
static const RandVal *rm_same(RandModel *m, const RandVal *a) {
  for (int t = 0; t < 16; t++) {
    const RandVal *v = &m->v[rnd_int(0, m->nv - 1)];
    if (v->rank == 2 && v->r == a->r && v->c == a->c) return v;
  }
  return NULL;
}

static void rm_step(RandModel *m) {
  static const char *const unary[] = {"relu", "tanh", "sigmoid", "abs", "gelu", "silu"};
  static const char *const binary[] = {"+", "-", "*"};
  const RandVal *a = rm_pick2(m);
  char an[16];
  snprintf(an, sizeof an, "%s", a->name);
  int r = a->r, c = a->c, p = m->nparams;
  switch (rnd_int(0, 19)) {
  case 0:
  case 1:
    rm_let(m, 2, r, c, "%s(%s)", unary[rnd_int(0, 5)], an);
    break;
  case 2:
    rm_let(m, 2, r, c, "exp(tanh(%s)) * 0.5", an);
    break;
  case 3:
  case 4: {
    const RandVal *b = rm_same(m, a);
    if (b && rnd() % 5 == 0)
      rm_let(m, 2, r, c, "maximum(%s, %s)", an, b->name);
    else if (b && rnd() % 4)
      rm_let(m, 2, r, c, "%s %s %s", an, binary[rnd_int(0, 2)], b->name);
    else if (rnd() % 2) /* a broadcast row */
      rm_let(m, 2, r, c, "%s %s %s(%s, axis=0)", an, binary[rnd_int(0, 2)],
             rnd() % 2 ? "sum" : "mean", an);
    else /* a broadcast column */
      rm_let(m, 2, r, c, "%s %s max(%s, axis=1, keepdim=true)", an, binary[rnd_int(0, 2)], an);
    break;
  }
  case 5:
    rm_let(m, 2, r, 1, "%s(%s * %s, axis=1, keepdim=true)", rnd() % 2 ? "sum" : "mean", an, an);
    break;
  case 6:
    rm_let(m, 1, 1, r, "sum(%s, axis=1) * 0.5 + 1", an);
    break;
  case 7:
    rm_let(m, 2, r, c, "%s(%s, axis=%d)", rnd() % 2 ? "softmax" : "log_softmax", an, rnd_int(0, 1));
    break;
  case 8:
    rm_let(m, 2, c, r, "transpose(%s, 0, 1)", an);
    break;
  case 9: {
    int k = rnd_int(1, 20);
    rm_decl(m, "  param w%d: f32[%d, %d] = zeros\n  param b%d: f32[%d] = zeros\n", p, c, k, p, k);
    rm_let(m, 2, r, k, rnd() % 2 ? "%s @ w%d + b%d" : "relu(%s @ w%d) * b%d", an, p, p);
    m->nparams++;
    break;
  }
  case 10:
    rm_decl(m, "  param g%d: f32[%d] = ones\n  param h%d: f32[%d] = zeros\n", p, c, p, c);
    rm_let(m, 2, r, c, "layer_norm(%s, g%d, h%d)", an, p, p);
    m->nparams++;
    break;
  case 11:
    rm_let(m, 0, 1, 1, "sum(%s * %s) * 0.1", an, an);
    break;
  case 12: /* a slice, along either axis */
    if (r > 1 && rnd() % 2)
      rm_let(m, 2, r - 1, c, "%s[1:, :]", an);
    else if (c > 1)
      rm_let(m, 2, r, c - 1, "%s[:, :-1]", an);
    break;
  case 13: { /* concat with a value of the same width, or of the same height */
    const RandVal *b = rm_pick2(m);
    if (b->c == c)
      rm_let(m, 2, r + b->r, c, "concat([%s, %s], 0)", an, b->name);
    else if (b->r == r)
      rm_let(m, 2, r, c + b->c, "concat([%s, %s], 1)", an, b->name);
    break;
  }
  case 14:
    rm_let(m, 2, c, r, "reshape(%s, [%d, %d])", an, c, r);
    break;
  case 15: /* a convolution over the value as one image, its two channels stacked */
    rm_decl(m, "  param k%d: f32[2, 1, 3, 3] = zeros\n  param kb%d: f32[2] = zeros\n", p, p);
    rm_let(m, 2, 2 * r, c,
           "reshape(conv2d(reshape(%s, [1, 1, %d, %d]), k%d, kb%d, padding=1), "
           "[%d, %d])",
           an, r, c, p, p, 2 * r, c);
    m->nparams++;
    break;
  case 16: /* 2x2 pooling of the value as one image */
    if (r >= 2 && c >= 2)
      rm_let(m, 2, r / 2, c / 2, "reshape(%s(reshape(%s, [1, 1, %d, %d]), 2), [%d, %d])",
             rnd() % 2 ? "max_pool2d" : "avg_pool2d", an, r, c, r / 2, c / 2);
    break;
  case 17: { /* rows of a table by id (ids named e<N>_<rows>: random_fixture's range) */
    int v = rnd_int(2, 12);
    rm_decl(m, "  input e%d_%d: i32[%d]\n  param t%d: f32[%d, %d] = zeros\n", p, v, r, p, v, c);
    rm_let(m, 2, r, c, "embedding(e%d_%d, t%d) %s %s", p, v, p, binary[rnd_int(0, 2)], an);
    m->nparams++;
    break;
  }
  case 18: /* cross-entropy of the rows against labels (l<N>_<classes>) */
    rm_decl(m, "  input l%d_%d: i32[%d]\n", p, c, r);
    rm_let(m, 0, 1, 1, "cross_entropy(%s, l%d_%d)", an, p, c);
    m->nparams++;
    break;
  default: { /* division, log, pow, minimum, an mse loss */
    const RandVal *b = rm_same(m, a);
    const char *bn = b ? b->name : an;
    switch (rnd_int(0, 4)) {
    case 0:
      rm_let(m, 2, r, c, "%s / (abs(%s) + 1)", an, bn);
      break;
    case 1:
      rm_let(m, 2, r, c, "log(abs(%s) + 1)", an);
      break;
    case 2:
      rm_let(m, 2, r, c, "pow(%s, 3) * 0.1", an);
      break;
    case 3:
      rm_let(m, 2, r, c, "minimum(%s, %s)", an, bn);
      break;
    default:
      rm_let(m, 0, 1, 1, "mse_loss(%s, %s)", an, bn);
      break;
    }
    break;
  }
  }
}

/* The source of random model `seed` (malloc'd). */
static char *random_model(uint64_t seed) {
  rnd_state = seed * 0x9E3779B97F4A7C15ULL + 7;
  RandModel *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  int r = rnd_int(1, 9), c = rnd_int(1, 40);
  rm_decl(m, "  input x: f32[%d, %d]\n  param p: f32[%d, %d] = zeros\n", r, c, r, c);
  m->v[0] = (RandVal){.name = "x", .rank = 2, .r = r, .c = c};
  m->v[1] = (RandVal){.name = "p", .rank = 2, .r = r, .c = c};
  m->nv = 2;
  rm_let(m, 2, r, c, "x * p");
  int steps = rnd_int(3, 16);
  for (int i = 0; i < steps; i++) rm_step(m);
  /* The loss: the last few values through tanh, squared and summed, so that gradients stay
   * near 1 and two training steps do not diverge (a quartic loss's steps blow up, and its
   * rounding with them); the last two values are outputs. */
  char loss[1024] = "", outs[64] = "";
  size_t nl = 0;
  for (int i = m->nv - 1; i >= 2 && i >= m->nv - 3; i--) {
    int w = snprintf(loss + nl, sizeof loss - nl, "%ssum(tanh(%s) * tanh(%s))", nl ? " + " : "",
                     m->v[i].name, m->v[i].name);
    if (w > 0) nl += (size_t)w;
  }
  snprintf(outs, sizeof outs, "%s%s%s", m->v[m->nv - 1].name, m->nv > 3 ? ", " : "",
           m->nv > 3 ? m->v[m->nv - 2].name : "");
  size_t cap = m->ndecl + m->nbody + sizeof loss + 256;
  char *src = malloc(cap);
  if (src)
    snprintf(src, cap,
             "model rand%llu {\n%s\n%s  loss = %s\n  output %s\n  train loss with %s\n}\n",
             (unsigned long long)seed, m->decl, m->body, loss, outs,
             seed % 2 ? "adam(lr = 0.01)" : "sgd(lr = 0.1, momentum = 0.9)");
  free(m);
  return src;
}

/* Every input and param of c's graph: normal values, seeded (c->fix, as a fixture would). */
static bool random_fixture(Case *c, uint64_t seed) {
  Graph *g = case_graph(&c->tc, STAGE_GRAPH, NULL);
  if (!g) return false;
  int n = 0;
  c->tc.fix.tensors = calloc((size_t)g->nnodes + 1, sizeof *c->tc.fix.tensors);
  rnd_state = seed + 12345;
  for (int i = 0; c->tc.fix.tensors && i < g->nnodes; i++) {
    const Node *s = g->nodes[i];
    if (s->op != OP_INPUT && s->op != OP_PARAM) continue;
    KilnTensor *t = &c->tc.fix.tensors[n++];
    int64_t count = ir_type_numel(&s->type);
    t->name = strdup(s->name);
    t->dtype = KILN_F32;
    t->rank = s->type.rank;
    for (int d = 0; d < t->rank; d++) t->shape[d] = s->type.dims[d];
    t->nbytes = (size_t)count * sizeof(float);
    t->data = calloc((size_t)count + 1, sizeof(float));
    /* i32 inputs (ids, labels: NAME_RANGE) in [0, RANGE); f32 about normal (four uniforms) */
    const char *range = s->type.dtype == DT_I32 ? strrchr(s->name, '_') : NULL;
    for (int64_t k = 0; t->data && k < count; k++) {
      double u = 0;
      for (int j = 0; j < 4; j++) u += rnd() / 4294967296.0;
      ((float *)t->data)[k] =
          range ? (float)(rnd() % (uint32_t)atoi(range + 1)) : (float)((u - 2.0) * 0.8);
    }
  }
  c->tc.fix.n = n;
  ir_graph_free(g);
  return c->tc.fix.tensors != NULL;
}

static bool check_random(uint64_t seed) {
  char name[32];
  snprintf(name, sizeof name, "rand%llu", (unsigned long long)seed);
  Case c = {.tc = {.name = name, .tol = tol_reduction}};
  char *src = random_model(seed);
  double ms = 0, pms = 0;
  if (src && case_parse(&c.tc, name, src, strlen(src)) && random_fixture(&c, seed)) {
    run_checks(&c, &ms, &pms);
    for (int inference = 0; inference < 2; inference++) {
      Graph *g = case_graph(&c.tc, STAGE_PLANNED,
                            &(CaseBuild){.inference = inference, .target = llvm_fuse_target()});
      if (g && llvm_launch_count(g) != g->nkernels)
        case_fail(&c.tc, "%d launches for %d kernels%s", llvm_launch_count(g), g->nkernels,
                  inference ? " (inference)" : "");
      if (g) ir_graph_free(g);
    }
  } else {
    case_fail(&c.tc, "the random model does not build");
  }
  if (c.tc.failed) printf("%s", src ? src : "(no source)\n");
  printf("%-4s %-20s %2d tensors, worst %.3f of tolerance\n", c.tc.failed ? "FAIL" : "ok", name,
         c.ntensors, c.worst);
  case_free(&c.tc);
  free(src);
  return !c.tc.failed;
}

/* ---- Other checks ------------------------------------------------------- */

static bool check_optable(void) {
  OpKind missing;
  if (llvm_ops_complete(&missing)) return true;
  printf("FAIL optable: op %s has no LLVM lowering\n", ir_op_name(missing));
  return false;
}

/* An embedding id out of range: status KILN_ERR_RANGE, no crash; the embedding as its own
 * kernel (unplanned), read inline by a fused loop (planned: the add evaluates it), by a
 * layer_norm's prologue and by an lstm (its rows gathered from the table). */
static bool check_range_error_in(const char *src, Stage stage, const char *what) {
  TestCase c = {.name = "range_error"};
  bool ok = case_parse(&c, "<range>", src, strlen(src));
  Graph *g = ok ? case_graph(&c, stage, llvm_build()) : NULL;
  char err[ERR_LEN];
  LlvmOptions o = {.opt_level = 2};
  LlvmJit *j = g ? llvm_jit_compile(g, &o, err, sizeof err) : NULL;
  ok = j != NULL;
  if (ok) {
    const kiln_model_desc *d = llvm_jit_desc(j);
    void *self;
    d->entry.create(&self, 0);
    int32_t ids[3] = {0, 4, -1};
    float y[6];
    P args[3] = {self, ids, y};
    ok = invoke(d->entry.infer, args, 3) == KILN_ERR_RANGE;
    ids[1] = 3, ids[2] = 1;
    ok = ok && invoke(d->entry.infer, args, 3) == KILN_OK;
    d->entry.destroy(self);
    llvm_jit_free(j);
  }
  if (g) ir_graph_free(g);
  case_free(&c);
  printf("%-4s range_error %s\n", ok ? "ok" : "FAIL", what);
  return ok;
}

static bool check_range_error(void) {
  const char *own = "model e {\n  input ids: i32[3]\n  param t: f32[4, 2] = ones\n"
                    "  y = embedding(ids, t)\n  output y\n}\n";
  const char *fused = "model e {\n  input ids: i32[3]\n  param t: f32[4, 2] = ones\n"
                      "  param p: f32[2] = ones\n  y = embedding(ids, t) + p\n  output y\n}\n";
  const char *pro = "model e {\n  input ids: i32[3]\n  param t: f32[4, 2] = ones\n"
                    "  param p: f32[2] = ones\n  param g: f32[2] = ones\n"
                    "  param b: f32[2] = zeros\n  y = layer_norm(embedding(ids, t) + p, g, b)\n"
                    "  output y\n}\n";
  const char *lstm = "model e {\n  input ids: i32[1, 3]\n  param t: f32[4, 2] = ones\n"
                     "  param wi: f32[8, 2] = ones\n  param wh: f32[8, 2] = ones\n"
                     "  param bi: f32[8] = zeros\n  param bh: f32[8] = zeros\n"
                     "  y = lstm(embedding(ids, t), wi, wh, bi, bh)\n  output y\n}\n";
  bool ok = check_range_error_in(own, STAGE_GRAPH, "(embedding kernel)");
  ok = check_range_error_in(lstm, STAGE_PLANNED, "(embedding read by an lstm)") && ok;
  ok = check_range_error_in(pro, STAGE_PLANNED, "(embedding in a layer_norm prologue)") && ok;
  return check_range_error_in(fused, STAGE_PLANNED, "(embedding in a fused loop)") && ok;
}

/* ---- --bench MODEL.kl: compile time, infer and train-step time vs the interpreter ---- */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Every source of g filled with small values (ids 0). */
static void bench_fill(Interp *it, const Graph *g, const kiln_instance *self,
                       const kiln_model_desc *d) {
  char err[ERR_LEN];
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (!ir_op_is_named_source(n->op)) continue;
    int64_t count = ir_type_numel(&n->type);
    void *data = calloc((size_t)count + 1, ir_dtype_size(n->type.dtype));
    for (int k = 0; n->op == OP_PARAM && k < d->nparams; k++)
      if (strcmp(d->params[k].name, n->name) == 0)
        memcpy(data, self->mem + d->params[k].offset, bytes_of(n));
    if (n->op == OP_INPUT && n->type.dtype == DT_F32)
      for (int64_t k = 0; k < count; k++) ((float *)data)[k] = (float)((k * 7919) % 1000) / 1000.0f;
    interp_set(it, n->name, n->type.dtype, n->type.rank, n->type.dims, data, err, sizeof err);
    free(data);
  }
}

static int bench(const char *path, int threads, bool planned) {
  TestCase c = {.name = path};
  size_t len;
  c.src = read_file(path, &len);
  if (!c.src) return fprintf(stderr, "cannot read %s\n", path), 1;
  if (!case_parse(&c, path, c.src, len)) return 1;
  Graph *g = case_graph(&c, planned ? STAGE_PLANNED : STAGE_GRAD, llvm_build());
  if (!g) return 1;
  int nkernels = g->nkernels;
  for (int i = 0; !planned && i < g->nnodes; i++)
    nkernels += !ir_op_is_named_source(g->nodes[i]->op);
  char err[ERR_LEN];
  LlvmOptions o = {.opt_level = 2, .train = true};
  double t0 = now_ms();
  LlvmJit *j = llvm_jit_compile(g, &o, err, sizeof err);
  double compile = now_ms() - t0;
  if (!j) return fprintf(stderr, "%s\n", err), 1;
  const kiln_model_desc *d = llvm_jit_desc(j);
  kiln_instance *self;
  d->entry.create((void **)&self, 1);
  if (threads) d->entry.set_threads(self, threads);
  Interp *it = interp_new(g);
  bench_fill(it, g, self, d);
  P in[256] = {self}, tr[256] = {self};
  int n = 1, nt = 1;
  for (int i = 0; i < d->ninfer_inputs; i++)
    in[n++] = calloc(bytes_of(ir_find_input(g, d->inputs[d->infer_inputs[i]].name)) + 8, 1);
  for (int i = 0; i < d->noutputs; i++) in[n++] = calloc(bytes_of(g->outputs[i].node) + 8, 1);
  for (int i = 0; i < d->ntrain_inputs; i++)
    tr[nt++] = calloc(bytes_of(ir_find_input(g, d->inputs[d->train_inputs[i]].name)) + 8, 1);
  float loss;
  tr[nt++] = &loss;
  int reps = 20;
  invoke(d->entry.infer, in, n);
  t0 = now_ms();
  for (int r = 0; r < reps; r++) invoke(d->entry.infer, in, n);
  double infer = (now_ms() - t0) / reps, step = 0;
  if (d->entry.train_step) {
    invoke(d->entry.train_step, tr, nt);
    t0 = now_ms();
    for (int r = 0; r < reps; r++) invoke(d->entry.train_step, tr, nt);
    step = (now_ms() - t0) / reps;
  }
  t0 = now_ms();
  interp_run(it, err, sizeof err);
  double interp = now_ms() - t0;
  Graph *fg = case_graph(&c, STAGE_GRAPH, NULL);
  Interp *fi = interp_new(fg);
  bench_fill(fi, fg, self, d);
  t0 = now_ms();
  interp_run(fi, err, sizeof err);
  double interp_fwd = now_ms() - t0;
  interp_free(fi);
  ir_graph_free(fg);
  printf(
      "%s (%s): %d kernels, arena %lld bytes, mem %lld bytes; compile %.0f ms; JIT infer %.3f ms, "
      "train_step %.3f ms (%d threads); interpreter forward %.1f ms, train step %.1f ms\n",
      g->name, planned ? "fused, planned" : "one node per kernel", nkernels,
      (long long)d->arena_bytes, (long long)d->mem_bytes, compile, infer, step, self->nthreads,
      interp_fwd, interp);
  for (int i = 1; i < n; i++) free(in[i]);
  for (int i = 1; i < nt - 1; i++) free(tr[i]);
  d->entry.destroy(self);
  interp_free(it);
  llvm_jit_free(j);
  ir_graph_free(g);
  case_free(&c);
  return 0;
}

/* ---- The f32 polynomials vs libm in double -------------------------------- */

typedef struct MathCheck {
  const char *name;
  double lo, hi; /* swept range (log-spaced for log) */
  double (*ref)(double);
  double limit; /* largest relative error accepted */
} MathCheck;

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double ref_gelu(double x) { return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440)); }
static double ref_log(double x) { return log(x); }

#define MATH_N 1000000

/* Sweeps every transcendental over its range; prints the largest relative
 * error (the numbers llvm_math.c documents). */
static bool check_math(void) {
  static const MathCheck checks[] = {
      {"exp", -87.0, 88.0, exp, 3e-7},      {"log", -30.0, 30.0, ref_log, 3e-7},
      {"tanh", -10.0, 10.0, tanh, 3e-7},    {"sigmoid", -30.0, 30.0, ref_sigmoid, 4e-7},
      {"gelu", -4.0, 10.0, ref_gelu, 6e-7},
  };
  char src[2048];
  snprintf(src, sizeof src,
           "model m {\n  input a: f32[%d]\n  input b: f32[%d]\n  input c: f32[%d]\n"
           "  input d: f32[%d]\n  input e: f32[%d]\n"
           "  o1 = exp(a)\n  o2 = log(b)\n  o3 = tanh(c)\n  o4 = sigmoid(d)\n  o5 = gelu(e)\n"
           "  output o1, o2, o3, o4, o5\n}\n",
           MATH_N, MATH_N, MATH_N, MATH_N, MATH_N);
  TestCase c = {.name = "math"};
  Graph *g = case_parse(&c, "<math>", src, strlen(src)) ? case_graph(&c, STAGE_GRAPH, NULL) : NULL;
  char err[ERR_LEN];
  LlvmOptions o = {.opt_level = 2};
  LlvmJit *j = g ? llvm_jit_compile(g, &o, err, sizeof err) : NULL;
  bool ok = j != NULL;
  if (ok) {
    const kiln_model_desc *d = llvm_jit_desc(j);
    void *self;
    d->entry.create(&self, 0);
    P args[11] = {self};
    for (int k = 0; k < 10; k++) args[1 + k] = malloc(MATH_N * sizeof(float));
    for (int k = 0; k < 5; k++)
      for (int i = 0; i < MATH_N; i++) {
        double t = checks[k].lo + (checks[k].hi - checks[k].lo) * i / (MATH_N - 1);
        ((float *)args[1 + k])[i] = (float)(k == 1 ? exp(t) : t);
      }
    ok = invoke(d->entry.infer, args, 11) == 0;
    for (int k = 0; ok && k < 5; k++) {
      double worst = 0, at = 0;
      for (int i = 0; i < MATH_N; i++) {
        double x = ((float *)args[1 + k])[i], want = checks[k].ref(x);
        double got = ((float *)args[6 + k])[i];
        double rel = want == 0 ? fabs(got) : fabs(got - want) / fabs(want);
        if (!(rel <= worst)) worst = rel, at = x;
      }
      bool pass = worst <= checks[k].limit;
      printf("%-4s math %-8s largest relative error %.3g (at %.7g), limit %.0e\n",
             pass ? "ok" : "FAIL", checks[k].name, worst, at, checks[k].limit);
      ok &= pass;
    }
    for (int k = 0; k < 10; k++) free(args[1 + k]);
    d->entry.destroy(self);
    llvm_jit_free(j);
  }
  if (g) ir_graph_free(g);
  case_free(&c);
  return ok;
}

/* --launches FILE...: each model's graph, fused for the LLVM backend and planned, for training
 * and for inference, runs one launch per kernel (fuse_split; docs/LLVM.md). */
static bool check_launches(const char *path) {
  TestCase c = {.name = path};
  FILE *f = fopen(path, "rb");
  char *src = f ? calloc(1, 1 << 20) : NULL;
  size_t len = src ? fread(src, 1, (1 << 20) - 1, f) : 0;
  if (f) fclose(f);
  bool ok = src && case_parse(&c, path, src, len);
  for (int inference = 0; ok && inference < 2; inference++) {
    Graph *g = case_graph(&c, STAGE_PLANNED,
                          &(CaseBuild){.inference = inference, .target = llvm_fuse_target()});
    int n = g ? llvm_launch_count(g) : -1;
    ok = g && n == g->nkernels;
    if (!ok)
      printf("FAIL launches %s%s: %d launches, %d kernels\n", path, inference ? " (inference)" : "",
             n, g ? g->nkernels : -1);
    if (g) ir_graph_free(g);
  }
  case_free(&c);
  free(src);
  return ok;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "--random") == 0) { /* --random N [FIRST] */
    int failed = 0, count = atoi(argv[2]);
    uint64_t first = argc >= 4 ? strtoull(argv[3], NULL, 10) : 0;
    for (int i = 0; i < count; i++) failed += !check_random(first + (uint64_t)i);
    printf("random: %d models, %d failed\n", count, failed);
    return failed ? 1 : 0;
  }
  if (argc >= 2 && strcmp(argv[1], "--launches") == 0) {
    int failed = 0;
    for (int i = 2; i < argc; i++) failed += !check_launches(argv[i]);
    printf("launches: %d files, %d failed\n", argc - 2, failed);
    return failed ? 1 : 0;
  }
  if (argc >= 3 && strcmp(argv[1], "--bench") == 0) {
    int rc = 0;
    for (int i = 2; i < argc; i++) rc |= bench(argv[i], 0, false) | bench(argv[i], 0, true);
    return rc;
  }
  const char *dir = ".";
  int nonly = 0, shard = 0, nshards = 1;
  char **only = calloc((size_t)argc + 1, sizeof *only);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir = argv[++i];
    else if (strcmp(argv[i], "--shard") == 0 && i + 1 < argc &&
             sscanf(argv[++i], "%d/%d", &shard, &nshards) == 2 && nshards > 0)
      continue; /* --shard K/N: every N-th case from the K-th, so ctest runs shards in parallel */
    else
      only[nonly++] = argv[i];
  }
  int index = -1;
  int passed = 0, failed = 0;
  if (shard == 0) {
    *(check_optable() ? &passed : &failed) += 1;
    *(check_range_error() ? &passed : &failed) += 1;
    *(check_math() ? &passed : &failed) += 1;
  }
  Manifest m;
  if (!manifest_open(&m, dir, "test_llvm_diff")) return 1;
  while (manifest_next(&m)) {
    if (!manifest_wanted(m.name, only, nonly, NULL) || ++index % nshards != shard) continue;
    const Tol *tol = tol_lookup(m.cls); /* an unknown class: reduction */
    *(run_case(dir, m.name, tol ? *tol : tol_reduction) ? &passed : &failed) += 1;
  }
  manifest_close(&m);
  free(only);
  printf("diff: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
