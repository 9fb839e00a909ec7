/* test_grad.c - autodiff: every gradient rule vs central finite differences in f64 on the
 * interpreter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ast.h"
#include "build.h"
#include "interp.h"
#include "passes.h"

/* Central differences with h = 1e-6 in f64 are good to about 1e-9 here. */
#define FD_H    1e-6
#define FD_RTOL 1e-6
#define FD_ATOL 1e-8

/* One model to check: every param is differentiated. Params are drawn
 * uniformly from [lo, hi] but at least gap away from 0 (relu's and abs's
 * kinks); f32 inputs (the fixed weights) from [-1, 1]; i32 inputs (ids,
 * labels) from [0, imax). */
typedef struct GradCase {
  const char *name;
  const char *body; /* the model's statements; it must bind `loss` */
  double lo, hi, gap;
  int imax;
} GradCase;

#define RANGE_ANY  -1, 1, 0
#define RANGE_WIDE -3, 3, 0
#define RANGE_KINK -1, 1, 0.1
#define RANGE_POS  0.3, 2, 0

static Arena ast_arena;
static uint64_t rng = 0x9E3779B97F4A7C15u;

/* xorshift64*, uniform in [0, 1). */
static double urand(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (double)((rng * 0x2545F4914F6CDD1Du) >> 11) * 0x1.0p-53;
}

static double draw(const GradCase *c) {
  for (;;) {
    double v = c->lo + (c->hi - c->lo) * urand();
    if (fabs(v) >= c->gap) return v;
  }
}

/* ---- Building and running ----------------------------------------------- */

static Graph *build_model(const char *src, const Define *defs, int ndefs) {
  Diag d;
  diag_init(&d, "grad.kl", src, strlen(src));
  Ast ast;
  assert_true(parse_file(&ast, &ast_arena, &d, src, strlen(src)));
  Graph *g = build_graph(&ast, defs, ndefs, &d);
  assert_non_null(g);
  return g;
}

static void verify(const Graph *g) {
  char msg[512];
  bool ok = ir_verify(g, msg, sizeof msg);
  if (!ok) print_error("ir_verify: %s\n", msg);
  assert_true(ok);
}

/* The forward graph of c, differentiated, verified, then promoted to f64. */
static Graph *build_differentiated(const char *src, const Define *defs, int ndefs) {
  Graph *g = build_model(src, defs, ndefs);
  PassCtx pcx;
  pass_ctx_init(&pcx);
  pass_autodiff(g, &pcx);
  verify(g);
  interp_promote_f64(g);
  verify(g);
  return g;
}

/* The values bound to each source, by node id (NULL for i32 and unbound). */
typedef struct Bindings {
  double **val;
  int nids;
} Bindings;

static void bind_one(Interp *it, const Node *n, const double *v) {
  char err[256];
  bool ok = interp_set(it, n->name, DT_F64, n->type.rank, n->type.dims, v, err, sizeof err);
  if (!ok) print_error("interp_set: %s\n", err);
  assert_true(ok);
}

static void bind_ids(Interp *it, const Node *n, int imax) {
  int64_t count = ir_type_numel(&n->type);
  int32_t *ids = malloc((size_t)count * sizeof *ids);
  for (int64_t i = 0; i < count; i++) ids[i] = (int32_t)(urand() * imax);
  char err[256];
  bool ok = interp_set(it, n->name, DT_I32, n->type.rank, n->type.dims, ids, err, sizeof err);
  free(ids);
  assert_true(ok);
}

/* Random params and inputs for every source of g. */
static Bindings bind_all(Interp *it, const Graph *g, const GradCase *c) {
  Bindings b = {calloc((size_t)g->next_id, sizeof(double *)), g->next_id};
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_PARAM && n->op != OP_INPUT) continue;
    if (n->type.dtype == DT_I32) {
      bind_ids(it, n, c->imax);
      continue;
    }
    int64_t count = ir_type_numel(&n->type);
    double *v = b.val[n->id] = malloc((size_t)count * sizeof *v);
    for (int64_t k = 0; k < count; k++) v[k] = n->op == OP_PARAM ? draw(c) : 2 * urand() - 1;
    bind_one(it, n, v);
  }
  return b;
}

static void free_bindings(Bindings *b) {
  for (int i = 0; i < b->nids; i++) free(b->val[i]);
  free(b->val);
}

static double run_loss(Interp *it, const Graph *g) {
  char err[256];
  bool ok = interp_run(it, err, sizeof err);
  if (!ok) print_error("interp_run: %s\n", err);
  assert_true(ok);
  return *(const double *)interp_value(it, g->loss);
}

/* (L(v + h e_k) - L(v - h e_k)) / 2h, leaving v as it was. */
static double finite_difference(Interp *it, const Graph *g, const Node *p, double *v, int64_t k) {
  double v0 = v[k];
  v[k] = v0 + FD_H;
  bind_one(it, p, v);
  double up = run_loss(it, g);
  v[k] = v0 - FD_H;
  bind_one(it, p, v);
  double down = run_loss(it, g);
  v[k] = v0;
  bind_one(it, p, v);
  return (up - down) / (2 * FD_H);
}

/* ---- The comparison ----------------------------------------------------- */

typedef struct Report {
  int checked, bad;
  double worst;
} Report;

static void compare(Report *r, const char *cname, const Node *p, int64_t k, double a, double fd) {
  double err = fabs(a - fd);
  r->checked++;
  if (err > r->worst || isnan(err)) r->worst = err;
  if (err <= FD_RTOL * fmax(fabs(a), fabs(fd)) + FD_ATOL) return;
  if (r->bad++ < 6)
    print_error("  %s: d loss / d %s[%lld]: autodiff %.12g, finite difference %.12g\n", cname,
                p->name, (long long)k, a, fd);
}

/* Every element of the param (or `sample` random ones when it has more). */
static void check_param(Report *r, const char *cname, Interp *it, const Graph *g,
                        const GraphGrad *gg, double *v, int sample) {
  int64_t count = ir_type_numel(&gg->param->type);
  double *analytic = malloc((size_t)count * sizeof *analytic);
  run_loss(it, g);
  memcpy(analytic, interp_value(it, gg->grad), (size_t)count * sizeof *analytic);
  int64_t todo = sample && count > sample ? sample : count;
  for (int64_t j = 0; j < todo; j++) {
    int64_t k = todo == count ? j : (int64_t)(urand() * (double)count);
    compare(r, cname, gg->param, k, analytic[k], finite_difference(it, g, gg->param, v, k));
  }
  free(analytic);
}

static void check_source(const GradCase *c, const char *src, const Define *defs, int ndefs,
                         int sample) {
  Graph *g = build_differentiated(src, defs, ndefs);
  Interp *it = interp_new(g);
  assert_non_null(it);
  Bindings b = bind_all(it, g, c);
  Report r = {0};
  assert_true(g->ngrads > 0);
  for (int k = 0; k < g->ngrads; k++)
    check_param(&r, c->name, it, g, &g->grads[k], b.val[g->grads[k].param->id], sample);
  if (r.bad)
    print_error("  %s: %d of %d gradient elements differ, largest error %g\n", c->name, r.bad,
                r.checked, r.worst);
  free_bindings(&b);
  interp_free(it);
  ir_graph_free(g);
  arena_free(&ast_arena);
  memset(&ast_arena, 0, sizeof ast_arena);
  assert_int_equal(r.bad, 0);
}

static void check_case(const GradCase *c) {
  char src[4096];
  snprintf(src, sizeof src, "model t {\n%s\n  train loss with sgd(lr = 0.1)\n}\n", c->body);
  check_source(c, src, NULL, 0, 0);
}

static void check_cases(const GradCase *cases, size_t n) {
  for (size_t i = 0; i < n; i++) check_case(&cases[i]);
}

#define CHECK_CASES(table) check_cases(table, sizeof table / sizeof table[0])

/* ---- Elementwise -------------------------------------------------------- */

#define UNARY(name, expr, ...)                                                                     \
  {                                                                                                \
    name, "  param x: f32[2, 3] = zeros\n  input r: f32[2, 3]\n  loss = sum(" expr " * r)",        \
        __VA_ARGS__, 1                                                                             \
  }

static const GradCase unary_cases[] = {
    UNARY("neg", "-x", RANGE_ANY),
    UNARY("relu", "relu(x)", RANGE_KINK),
    UNARY("sigmoid", "sigmoid(x)", RANGE_ANY),
    UNARY("tanh", "tanh(x)", RANGE_ANY),
    UNARY("exp", "exp(x)", RANGE_ANY),
    UNARY("log", "log(x)", RANGE_POS),
    UNARY("sqrt", "sqrt(x)", RANGE_POS),
    UNARY("rsqrt", "rsqrt(x)", RANGE_POS),
    UNARY("abs", "abs(x)", RANGE_KINK),
    UNARY("gelu", "gelu(x)", RANGE_WIDE),
    UNARY("silu", "silu(x)", RANGE_WIDE),
    UNARY("pow3", "pow(x, 3)", RANGE_ANY),
    UNARY("pow2", "pow(x, 2)", RANGE_ANY),
    UNARY("pow1", "pow(x, 1)", RANGE_ANY),
    UNARY("pow0", "pow(x, 0)", RANGE_ANY),
    UNARY("pow_half", "pow(x, 0.5)", RANGE_POS),
    UNARY("pow_neg", "pow(x, -1.5)", RANGE_POS),
};

static void test_unary(void **state) {
  (void)state;
  CHECK_CASES(unary_cases);
}

/* a [2,3,4] and b [3,1] broadcast both ways; maximum/minimum see no ties. */
#define BINARY(name, expr, ...)                                                                    \
  {                                                                                                \
    name,                                                                                          \
        "  param a: f32[2, 3, 4] = zeros\n  param b: f32[3, 1] = zeros\n  input r: f32[2, 3, 4]\n" \
        "  loss = sum(" expr " * r)",                                                              \
        __VA_ARGS__, 1                                                                             \
  }

static const GradCase binary_cases[] = {
    BINARY("add", "(a + b)", RANGE_ANY),
    BINARY("sub", "(a - b)", RANGE_ANY),
    BINARY("sub_rev", "(b - a)", RANGE_ANY),
    BINARY("mul", "a * b", RANGE_ANY),
    BINARY("div", "(a / b)", RANGE_KINK),
    BINARY("div_rev", "(b / a)", RANGE_KINK),
    BINARY("maximum", "maximum(a, b)", RANGE_ANY),
    BINARY("minimum", "minimum(b, a)", RANGE_ANY),
    BINARY("scalars", "(2 * a - b / 3 + 1)", RANGE_ANY),
    {"both_broadcast",
     "  param a: f32[2, 3, 1] = zeros\n  param b: f32[4] = zeros\n  input r: f32[2, 3, 4]\n"
     "  loss = sum((maximum(a, b) + minimum(b, a) + a * b) * r)",
     RANGE_ANY, 1},
    {"same_value_twice",
     "  param x: f32[2, 3] = zeros\n  input r: f32[2, 3]\n"
     "  loss = sum(x * x * r) + sum(x / (x * x + 1) * r)",
     RANGE_ANY, 1},
};

static void test_binary(void **state) {
  (void)state;
  CHECK_CASES(binary_cases);
}

/* ---- Contractions ------------------------------------------------------- */

static const GradCase contract_cases[] = {
    {"matmul",
     "  param a: f32[2, 3] = zeros\n  param b: f32[3, 4] = zeros\n  input r: f32[2, 4]\n"
     "  loss = sum(a @ b * r)",
     RANGE_ANY, 1},
    {"matmul_batch_broadcast",
     "  param a: f32[2, 1, 3, 4] = zeros\n  param b: f32[3, 4, 5] = zeros\n"
     "  input r: f32[2, 3, 3, 5]\n  loss = sum(a @ b * r)",
     RANGE_ANY, 1},
    {"matmul_batch_left",
     "  param a: f32[5, 3, 4] = zeros\n  param b: f32[4, 2] = zeros\n  input r: f32[5, 3, 2]\n"
     "  loss = sum(a @ b * r)",
     RANGE_ANY, 1},
    {"conv2d_stride_pad",
     "  param x: f32[2, 2, 5, 5] = zeros\n  param w: f32[3, 2, 3, 3] = zeros\n"
     "  param b: f32[3] = zeros\n  input r: f32[2, 3, 3, 3]\n"
     "  loss = sum(conv2d(x, w, b, stride=2, padding=1) * r)",
     RANGE_ANY, 1},
    {"conv2d_no_bias",
     "  param x: f32[1, 2, 5, 6] = zeros\n  param w: f32[2, 2, 2, 3] = zeros\n"
     "  input r: f32[1, 2, 4, 4]\n  loss = sum(conv2d(x, w) * r)",
     RANGE_ANY, 1},
    {"conv2d_stride_floor",
     "  param x: f32[1, 1, 6, 6] = zeros\n  param w: f32[2, 1, 3, 3] = zeros\n"
     "  input r: f32[1, 2, 2, 2]\n  loss = sum(conv2d(x, w, stride=2) * r)",
     RANGE_ANY, 1},
};

static void test_contractions(void **state) {
  (void)state;
  CHECK_CASES(contract_cases);
}

/* ---- Reductions --------------------------------------------------------- */

#define REDUCE(name, expr, rshape)                                                                 \
  {                                                                                                \
    name, "  param x: f32[2, 3, 4] = zeros\n  input r: f32" rshape "\n  loss = sum(" expr " * r)", \
        RANGE_ANY, 1                                                                               \
  }

static const GradCase reduce_cases[] = {
    REDUCE("sum_keepdim", "sum(x, axis=1, keepdim=true)", "[2, 1, 4]"),
    REDUCE("sum_axes", "sum(x, axis=[0, 2])", "[3]"),
    REDUCE("sum_all", "sum(x)", "[]"),
    REDUCE("mean_neg_axis", "mean(x, axis=-1)", "[2, 3]"),
    REDUCE("mean_keepdim", "mean(x, axis=[0, 2], keepdim=true)", "[1, 3, 1]"),
    REDUCE("mean_all", "mean(x)", "[]"),
    REDUCE("max_neg_axis", "max(x, axis=-1)", "[2, 3]"),
    REDUCE("max_keepdim", "max(x, axis=[0, 2], keepdim=true)", "[1, 3, 1]"),
    REDUCE("max_all", "max(x)", "[]"),
    REDUCE("softmax", "softmax(x)", "[2, 3, 4]"),
    REDUCE("softmax_axis0", "softmax(x, axis=0)", "[2, 3, 4]"),
    REDUCE("log_softmax", "log_softmax(x)", "[2, 3, 4]"),
    REDUCE("log_softmax_axis1", "log_softmax(x, axis=1)", "[2, 3, 4]"),
};

static void test_reductions(void **state) {
  (void)state;
  CHECK_CASES(reduce_cases);
}

/* ---- layer_norm and pooling --------------------------------------------- */

static const GradCase norm_pool_cases[] = {
    {"layer_norm",
     "  param x: f32[2, 3, 5] = zeros\n  param g: f32[5] = zeros\n  param b: f32[5] = zeros\n"
     "  input r: f32[2, 3, 5]\n  loss = sum(layer_norm(x, g, b) * r)",
     RANGE_ANY, 1},
    {"layer_norm_rank1",
     "  param x: f32[6] = zeros\n  param g: f32[6] = zeros\n  param b: f32[6] = zeros\n"
     "  input r: f32[6]\n  loss = sum(layer_norm(x, g, b, eps=0.1) * r)",
     RANGE_ANY, 1},
    {"max_pool2d",
     "  param x: f32[2, 2, 4, 4] = zeros\n  input r: f32[2, 2, 2, 2]\n"
     "  loss = sum(max_pool2d(x, 2) * r)",
     RANGE_ANY, 1},
    {"max_pool2d_overlap",
     "  param x: f32[1, 2, 5, 5] = zeros\n  input r: f32[1, 2, 3, 3]\n"
     "  loss = sum(max_pool2d(x, 3, stride=1) * r)",
     RANGE_ANY, 1},
    {"max_pool2d_floor",
     "  param x: f32[1, 1, 5, 5] = zeros\n  input r: f32[1, 1, 2, 2]\n"
     "  loss = sum(max_pool2d(x, 2) * r)",
     RANGE_ANY, 1},
    {"avg_pool2d",
     "  param x: f32[2, 2, 4, 4] = zeros\n  input r: f32[2, 2, 2, 2]\n"
     "  loss = sum(avg_pool2d(x, 2) * r)",
     RANGE_ANY, 1},
    {"avg_pool2d_stride",
     "  param x: f32[1, 2, 7, 7] = zeros\n  input r: f32[1, 2, 3, 3]\n"
     "  loss = sum(avg_pool2d(x, 3, stride=2) * r)",
     RANGE_ANY, 1},
};

static void test_norm_pool(void **state) {
  (void)state;
  CHECK_CASES(norm_pool_cases);
}

/* ---- Data movement ------------------------------------------------------ */

#define MOVE(name, expr, rshape)                                                                   \
  {                                                                                                \
    name, "  param x: f32[2, 3, 4] = zeros\n  input r: f32" rshape "\n  loss = sum(" expr " * r)", \
        RANGE_ANY, 1                                                                               \
  }

static const GradCase movement_cases[] = {
    MOVE("reshape", "reshape(x, [4, -1])", "[4, 6]"),
    MOVE("flatten", "flatten(x)", "[2, 12]"),
    MOVE("transpose", "transpose(x, 0, 2)", "[4, 3, 2]"),
    MOVE("permute", "permute(x, [1, 2, 0])", "[3, 4, 2]"),
    MOVE("slice", "x[:, 1:3]", "[2, 2, 4]"),
    MOVE("index", "x[1]", "[3, 4]"),
    MOVE("index_last", "x[:, -1, 1:]", "[2, 3]"),
    {"concat",
     "  param a: f32[2, 3] = zeros\n  param b: f32[2, 1] = zeros\n  input r: f32[2, 7]\n"
     "  loss = sum(concat([a, b, a], 1) * r)",
     RANGE_ANY, 1},
    {"concat_axis0",
     "  param a: f32[2, 3] = zeros\n  param b: f32[1, 3] = zeros\n  input r: f32[3, 3]\n"
     "  loss = sum(concat([b, a], 0) * r)",
     RANGE_ANY, 1},
    /* 8 ids over 3 rows: rows repeat. */
    {"embedding_repeated_ids",
     "  input ids: i32[2, 4]\n  param table: f32[3, 2] = zeros\n  input r: f32[2, 4, 2]\n"
     "  loss = sum(embedding(ids, table) * r)",
     RANGE_ANY, 3},
};

static void test_movement(void **state) {
  (void)state;
  CHECK_CASES(movement_cases);
}

/* ---- lstm --------------------------------------------------------------- */

static const GradCase lstm_cases[] = {
    {"lstm_T3",
     "  param x: f32[2, 3, 3] = zeros\n  param wih: f32[8, 3] = zeros\n"
     "  param whh: f32[8, 2] = zeros\n  param bih: f32[8] = zeros\n  param bhh: f32[8] = zeros\n"
     "  input r: f32[2, 3, 2]\n  loss = sum(lstm(x, wih, whh, bih, bhh) * r)",
     RANGE_ANY, 1},
    {"lstm_last_state",
     "  input ids: i32[2, 4]\n  param table: f32[5, 3] = zeros\n  param wih: f32[12, 3] = zeros\n"
     "  param whh: f32[12, 3] = zeros\n  param bih: f32[12] = zeros\n"
     "  param bhh: f32[12] = zeros\n  input r: f32[2, 3]\n"
     "  h = lstm(embedding(ids, table), wih, whh, bih, bhh)\n  loss = sum(h[:, -1, :] * r)",
     RANGE_ANY, 5},
};

static void test_lstm(void **state) {
  (void)state;
  CHECK_CASES(lstm_cases);
}

/* ---- Losses ------------------------------------------------------------- */

static const GradCase loss_cases[] = {
    {"mse_loss_broadcast",
     "  param a: f32[2, 3] = zeros\n  param b: f32[3] = zeros\n  loss = mse_loss(a, b) * 1.5",
     RANGE_ANY, 1},
    {"cross_entropy",
     "  param z: f32[4, 5] = zeros\n  input y: i32[4]\n"
     "  loss = cross_entropy(z, y) * 1.5",
     RANGE_ANY, 5},
    {"cross_entropy_rank3",
     "  param z: f32[2, 3, 4] = zeros\n  input y: i32[2, 3]\n"
     "  loss = cross_entropy(z, y)",
     -3, 3, 0, 4},
    {"bce_loss",
     "  param p: f32[2, 3] = zeros\n  param t: f32[2, 3] = zeros\n"
     "  loss = bce_loss(p, t) * 1.5",
     0.1, 0.9, 0, 1},
    {"bce_with_logits",
     "  param z: f32[2, 3] = zeros\n  param t: f32[2, 3] = zeros\n"
     "  loss = bce_with_logits(z * 3, t) * 1.5",
     RANGE_ANY, 1},
    {"mlp",
     "  input x: f32[4, 3]\n  input y: i32[4]\n  param w1: f32[3, 5] = zeros\n"
     "  param b1: f32[5] = zeros\n  param w2: f32[5, 3] = zeros\n"
     "  param b2: f32[3] = zeros\n"
     "  loss = cross_entropy(relu(x @ w1 + b1) @ w2 + b2, y)",
     RANGE_ANY, 3},
};

static void test_losses(void **state) {
  (void)state;
  CHECK_CASES(loss_cases);
}

/* ---- The five models, small, on sampled elements -------------------------- */

static char *read_model(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/models/%s.kl", KILN_SOURCE_DIR, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char buf[16384];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static void test_models_fd(void **state) {
  (void)state;
  static const struct {
    const char *name;
    Define defs[5];
    int ndefs;
    int imax;
  } models[] = {
      {"regression", {{"batch", 3}}, 1, 1},
      {"mlp", {{"batch", 2}}, 1, 10},
      {"cnn", {{"batch", 1}}, 1, 10},
      {"textcls", {{"batch", 2}, {"seq", 3}, {"vocab", 7}, {"embed", 3}, {"hidden", 2}}, 5, 2},
      {"transformer", {{"batch", 1}, {"seq", 3}, {"vocab", 5}, {"d", 8}, {"heads", 2}}, 5, 5},
  };
  for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
    GradCase c = {models[i].name, NULL, -0.5, 0.5, 0, models[i].imax};
    check_source(&c, read_model(models[i].name), models[i].defs, models[i].ndefs, 4);
  }
}

/* ---- The graph autodiff builds ------------------------------------------- */

static Graph *differentiate(const char *src) {
  Graph *g = build_model(src, NULL, 0);
  PassCtx pcx;
  pass_ctx_init(&pcx);
  assert_true(pass_autodiff(g, &pcx));
  verify(g);
  return g;
}

/* loss = sum(w w) + sum(w): the two uses of w add up to dw = 2 w + 1. */
static void test_accumulates(void **state) {
  (void)state;
  Graph *g = differentiate("model t {\n  param w: f32[3] = zeros\n"
                           "  loss = sum(w * w) + sum(w)\n  train loss with sgd(lr = 0.1)\n}\n");
  Interp *it = interp_new(g);
  double w[3] = {0.5, -2, 3};
  char err[256];
  assert_true(interp_set(it, "w", DT_F64, 1, (int64_t[]){3}, w, err, sizeof err));
  assert_true(interp_run(it, err, sizeof err));
  assert_int_equal(g->ngrads, 1);
  assert_int_equal(g->grads[0].grad->op, OP_ADD);
  const float *dw = interp_value(it, g->grads[0].grad);
  for (int i = 0; i < 3; i++) assert_true(dw[i] == (float)(2 * w[i] + 1));
  interp_free(it);
  ir_graph_free(g);
  arena_free(&ast_arena);
  memset(&ast_arena, 0, sizeof ast_arena);
}

/* A branch without params gets no gradient nodes; a param the loss does
 * not use gets a zero. */
static void test_prunes(void **state) {
  (void)state;
  Graph *g = differentiate("model t {\n  input x: f32[3]\n  input r: f32[3]\n"
                           "  param w: f32[3] = zeros\n  param unused: f32[2] = zeros\n"
                           "  side = sum(tanh(x) * r)\n  loss = sum(w * x) + side\n"
                           "  train loss with sgd(lr = 0.1)\n}\n");
  const Node *side = NULL;
  int first_new = -1;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->name && strcmp(n->name, "side") == 0) side = n;
    if (first_new < 0 && n->id > g->loss->id) first_new = i;
  }
  assert_non_null(side);
  /* const 1 (d loss), reshape + broadcast (sum), mul (w * x), const 0 (unused). */
  assert_int_equal(g->nnodes - first_new, 5);
  for (int i = first_new; i < g->nnodes; i++)
    for (int k = 0; k < g->nodes[i]->nin; k++) {
      const Node *in = g->nodes[i]->in[k];
      assert_true(in != side && in->op != OP_TANH);
    }
  assert_int_equal(g->ngrads, 2);
  assert_string_equal(g->grads[1].param->name, "unused");
  assert_int_equal(g->grads[1].grad->op, OP_CONST);
  assert_true(ir_attr_float(g->grads[1].grad, "value") == 0.0);
  ir_graph_free(g);
  arena_free(&ast_arena);
  memset(&ast_arena, 0, sizeof ast_arena);
}

static void set_f64(Interp *it, const char *name, int rank, const int64_t *dims, const double *v) {
  char err[256];
  bool ok = interp_set(it, name, DT_F64, rank, dims, v, err, sizeof err);
  if (!ok) print_error("interp_set: %s\n", err);
  assert_true(ok);
}

static void expect_grad(Interp *it, const Graph *g, const char *name, const double *want, int n) {
  const Node *d = ir_find_grad(g, ir_find_param(g, name));
  assert_non_null(d);
  const double *got = interp_value(it, d);
  for (int i = 0; i < n; i++) {
    if (got[i] != want[i]) print_error("  d%s[%d]: got %g, want %g\n", name, i, got[i], want[i]);
    assert_true(got[i] == want[i]);
  }
}

/* Where finite differences cannot look, PyTorch's choices: maximum/minimum
 * split a tie evenly, amax shares among equal maxima, max_pool2d's window
 * gives all to its first maximum, relu and abs have slope 0 at 0. */
static void test_ties(void **state) {
  (void)state;
  Graph *g =
      differentiate("model t {\n  param a: f32[4] = zeros\n  param b: f32[4] = zeros\n"
                    "  param m: f32[2, 3] = zeros\n  param p: f32[1, 1, 2, 2] = zeros\n"
                    "  param z: f32[3] = zeros\n"
                    "  loss = sum(maximum(a, b)) + 2 * sum(minimum(a, b)) + sum(max(m, axis=1))"
                    " + sum(max_pool2d(p, 2)) + sum(relu(z)) + sum(abs(z))\n"
                    "  train loss with sgd(lr = 0.1)\n}\n");
  interp_promote_f64(g);
  Interp *it = interp_new(g);
  set_f64(it, "a", 1, (int64_t[]){4}, (double[]){1, 2, 3, 4});
  set_f64(it, "b", 1, (int64_t[]){4}, (double[]){1, 0, 3, 5});
  set_f64(it, "m", 2, (int64_t[]){2, 3}, (double[]){1, 3, 3, 2, 0, 1});
  set_f64(it, "p", 4, (int64_t[]){1, 1, 2, 2}, (double[]){7, 7, 7, 1});
  set_f64(it, "z", 1, (int64_t[]){3}, (double[]){0, 0, 1});
  run_loss(it, g);
  expect_grad(it, g, "a", (double[]){1.5, 1, 1.5, 2}, 4);
  expect_grad(it, g, "b", (double[]){1.5, 2, 1.5, 1}, 4);
  expect_grad(it, g, "m", (double[]){0, 0.5, 0.5, 1, 0, 0}, 6);
  expect_grad(it, g, "p", (double[]){1, 0, 0, 0}, 4);
  expect_grad(it, g, "z", (double[]){0, 0, 2}, 3);
  interp_free(it);
  ir_graph_free(g);
  arena_free(&ast_arena);
  memset(&ast_arena, 0, sizeof ast_arena);
}

/* Nothing without a loss, for inference, or when gradients exist. */
static void test_no_op(void **state) {
  (void)state;
  static const char src[] = "model t {\n  param w: f32[3] = zeros\n  loss = sum(w)\n"
                            "  train loss with sgd(lr = 0.1)\n}\n";
  Graph *g = build_model(src, NULL, 0);
  PassCtx pcx;
  pass_ctx_init(&pcx);
  pcx.inference = true;
  int before = g->nnodes;
  assert_false(pass_autodiff(g, &pcx));
  pcx.inference = false;
  assert_true(pass_autodiff(g, &pcx));
  int after = g->nnodes;
  assert_true(after > before);
  assert_false(pass_autodiff(g, &pcx));
  assert_int_equal(g->nnodes, after);
  g->loss = NULL;
  g->ngrads = 0;
  assert_false(pass_autodiff(g, &pcx));
  ir_graph_free(g);
  arena_free(&ast_arena);
  memset(&ast_arena, 0, sizeof ast_arena);
}

static char *print_str(const Graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ir_print(f, g);
  fclose(f);
  return buf;
}

/* The five models at their real sizes: a gradient per param that verifies
 * and prints, parses and prints back the same. */
static void test_models_roundtrip(void **state) {
  (void)state;
  static const char *const names[] = {"mlp", "cnn", "textcls", "transformer", "regression"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    Graph *g = build_model(read_model(names[i]), NULL, 0);
    PassCtx pcx;
    pass_ctx_init(&pcx);
    pass_dce(g, &pcx);
    pass_autodiff(g, &pcx);
    verify(g);
    int nparams = 0;
    for (int k = 0; k < g->nnodes; k++) nparams += g->nodes[k]->op == OP_PARAM;
    assert_int_equal(g->ngrads, nparams);
    for (int k = 0; k < g->ngrads; k++) assert_int_not_equal(g->grads[k].grad->op, OP_CONST);
    char *once = print_str(g);
    Diag d;
    diag_init(&d, "grad.ir", once, strlen(once));
    Graph *back = ir_parse(&d, once, strlen(once));
    assert_non_null(back);
    verify(back);
    char *twice = print_str(back);
    assert_string_equal(once, twice);
    free(once);
    free(twice);
    ir_graph_free(back);
    ir_graph_free(g);
    arena_free(&ast_arena);
    memset(&ast_arena, 0, sizeof ast_arena);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary),        cmocka_unit_test(test_binary),
      cmocka_unit_test(test_contractions), cmocka_unit_test(test_reductions),
      cmocka_unit_test(test_norm_pool),    cmocka_unit_test(test_movement),
      cmocka_unit_test(test_lstm),         cmocka_unit_test(test_losses),
      cmocka_unit_test(test_models_fd),    cmocka_unit_test(test_accumulates),
      cmocka_unit_test(test_prunes),       cmocka_unit_test(test_ties),
      cmocka_unit_test(test_no_op),        cmocka_unit_test(test_models_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
