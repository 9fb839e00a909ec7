/* test_optimizer.c - the optimizer pass on the interpreter: PyTorch's SGD and Adam rules, state,
 * updates. */
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
#include "tensor_io.h"

#define STEPS 5
#define N     3

static Arena ast_arena;
static Graph *g;
static Interp *it;

static int teardown(void **state) {
  (void)state;
  interp_free(it);
  it = NULL;
  ir_graph_free(g);
  g = NULL;
  arena_free(&ast_arena);
  memset(&ast_arena, 0, sizeof ast_arena);
  return 0;
}

/* ---- Helpers ------------------------------------------------------------ */

static Graph *build_src(const char *src) {
  Diag d;
  diag_init(&d, "test.kl", src, strlen(src));
  Ast ast;
  if (!parse_file(&ast, &ast_arena, &d, src, strlen(src))) return NULL;
  return build_graph(&ast, NULL, 0, &d);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = calloc(1, 1 << 16);
  assert_non_null(buf);
  size_t n = fread(buf, 1, (1 << 16) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static void set(const char *name, DType dt, int rank, const int64_t *dims, const void *v) {
  char err[256];
  bool ok = interp_set(it, name, dt, rank, dims, v, err, sizeof err);
  if (!ok) print_error("interp_set: %s\n", err);
  assert_true(ok);
}

static void step(void) {
  char err[256];
  bool ok = interp_run(it, err, sizeof err);
  if (!ok) print_error("interp_run: %s\n", err);
  assert_true(ok);
  assert_true(interp_apply_updates(it, err, sizeof err));
}

static void run_optimizer(void) {
  PassCtx cx;
  pass_ctx_init(&cx);
  assert_true(pass_optimizer(g, &cx));
  char msg[512];
  bool ok = ir_verify(g, msg, sizeof msg);
  if (!ok) print_error("ir_verify: %s\n", msg);
  assert_true(ok);
}

/* A model whose param w gets the gradient fed through input gw: the
 * optimizer alone, without autodiff. */
static void load_manual(const char *optim) {
  char src[1024];
  snprintf(src, sizeof src,
           "model m {\n  input gw: f32[3]\n  input x: f32[3]\n  param w: f32[3] = zeros\n"
           "  loss = sum(w * x)\n  train loss with %s\n}\n",
           optim);
  g = build_src(src);
  assert_non_null(g);
  ir_add_grad(g, ir_find_param(g, "w"), ir_find_input(g, "gw"));
  run_optimizer();
  it = interp_new(g);
  assert_non_null(it);
}

static const float w0[N] = {0.5f, -1.25f, 2.0f};

/* The gradient of step k: deterministic, of both signs and several scales. */
static float grad_at(int k, int i) { return (float)(sin(1.7 * k + 0.9 * i) * (1 + i)); }

/* Runs STEPS steps from w0 with grad_at gradients; w holds the params after each. */
static void run_steps(float w[STEPS][N]) {
  const int64_t dims[1] = {N};
  const float zeros[N] = {0};
  set("w", DT_F32, 1, dims, w0);
  set("x", DT_F32, 1, dims, zeros);
  for (int k = 0; k < STEPS; k++) {
    float gk[N];
    for (int i = 0; i < N; i++) gk[i] = grad_at(k, i);
    set("gw", DT_F32, 1, dims, gk);
    step();
    memcpy(w[k], interp_source(it, "w"), sizeof w[k]);
  }
}

static void expect_close(float got[STEPS][N], float want[STEPS][N], double tol) {
  double worst = 0;
  for (int k = 0; k < STEPS; k++)
    for (int i = 0; i < N; i++) {
      double e = fabs((double)got[k][i] - want[k][i]);
      worst = e > worst ? e : worst;
      if (e > tol * (1 + fabs(want[k][i])))
        print_error("step %d w[%d]: got %.9g, want %.9g\n", k + 1, i, got[k][i], want[k][i]);
    }
  printf("# worst %.3g\n", worst);
  assert_true(worst <= tol * 3);
}

/* ---- SGD ---------------------------------------------------------------- */

/* torch.optim.SGD in f32, dampening 0: the first step's buffer is g' itself. */
static void sgd_reference(float lr, float momentum, float wd, float out[STEPS][N]) {
  float w[N], buf[N];
  memcpy(w, w0, sizeof w);
  for (int k = 0; k < STEPS; k++)
    for (int i = 0; i < N; i++) {
      float d = grad_at(k, i);
      if (wd != 0) d = d + wd * w[i];
      if (momentum != 0) {
        buf[i] = k == 0 ? d : buf[i] * momentum + d;
        d = buf[i];
      }
      w[i] = w[i] - lr * d;
      out[k][i] = w[i];
    }
}

static void check_sgd(const char *stmt, float lr, float momentum, float wd) {
  float got[STEPS][N], want[STEPS][N];
  load_manual(stmt);
  run_steps(got);
  sgd_reference(lr, momentum, wd, want);
  expect_close(got, want, 1e-7);
  teardown(NULL);
}

static void test_sgd_plain(void **state) {
  (void)state;
  check_sgd("sgd(lr = 0.1)", 0.1f, 0, 0);
}

static void test_sgd_momentum(void **state) {
  (void)state;
  check_sgd("sgd(lr = 0.05, momentum = 0.9)", 0.05f, 0.9f, 0);
}

static void test_sgd_weight_decay(void **state) {
  (void)state;
  check_sgd("sgd(lr = 0.1, weight_decay = 0.01)", 0.1f, 0, 0.01f);
  check_sgd("sgd(lr = 0.1, momentum = 0.9, weight_decay = 0.1)", 0.1f, 0.9f, 0.1f);
}

/* ---- Adam --------------------------------------------------------------- */

/* torch.optim.Adam (not amsgrad) as _single_tensor_adam computes it: moments
 * in f32, bias corrections in double, the step size rounded to f32. */
static void adam_reference(double lr, double b1, double b2, double eps, float wd,
                           float out[STEPS][N]) {
  float w[N], m[N] = {0}, v[N] = {0};
  memcpy(w, w0, sizeof w);
  for (int k = 0; k < STEPS; k++) {
    double t = k + 1;
    float step_size = (float)(lr / (1 - pow(b1, t)));
    float bc2_sqrt = (float)sqrt(1 - pow(b2, t));
    for (int i = 0; i < N; i++) {
      float d = grad_at(k, i);
      if (wd != 0) d = d + wd * w[i];
      m[i] = m[i] * (float)b1 + (float)(1 - b1) * d;
      v[i] = v[i] * (float)b2 + (float)(1 - b2) * d * d;
      float denom = sqrtf(v[i]) / bc2_sqrt + (float)eps;
      w[i] = w[i] - step_size * m[i] / denom;
      out[k][i] = w[i];
    }
  }
}

static void test_adam(void **state) {
  (void)state;
  float got[STEPS][N], want[STEPS][N];
  load_manual("adam(lr = 0.1)");
  run_steps(got);
  adam_reference(0.1, 0.9, 0.999, 1e-8, 0, want);
  expect_close(got, want, 1e-6);
}

static void test_adam_weight_decay(void **state) {
  (void)state;
  float got[STEPS][N], want[STEPS][N];
  load_manual("adam(lr = 0.1, beta1 = 0.8, beta2 = 0.99, eps = 1e-6, weight_decay = 0.05)");
  run_steps(got);
  adam_reference(0.1, 0.8, 0.99, 1e-6, 0.05f, want);
  expect_close(got, want, 1e-6);
  /* The shared step counter counts the steps. */
  assert_float_equal(*(const float *)interp_source(it, "optim.step"), STEPS, 0);
}

/* ---- State and updates -------------------------------------------------- */

static const Node *find_state(const char *name) {
  const Node *n = ir_find_named_source(g, name);
  return n && n->op == OP_STATE ? n : NULL;
}

static void test_state_names(void **state) {
  (void)state;
  load_manual("adam(lr = 0.01)");
  assert_non_null(find_state("optim.w.exp_avg"));
  assert_non_null(find_state("optim.w.exp_avg_sq"));
  assert_non_null(find_state("optim.step"));
  assert_int_equal(find_state("optim.step")->type.rank, 0);
  assert_int_equal(g->nupdates, 4); /* w, exp_avg, exp_avg_sq, step */
  teardown(NULL);
  load_manual("sgd(lr = 0.01, momentum = 0.5)");
  assert_non_null(find_state("optim.w.momentum_buffer"));
  assert_int_equal(g->nupdates, 2);
  teardown(NULL);
  load_manual("sgd(lr = 0.01)");
  assert_int_equal(g->nupdates, 1);
  for (int i = 0; i < g->nnodes; i++) assert_int_not_equal(g->nodes[i]->op, OP_STATE);
}

/* The grad stage prints and reads back, state and updates included. */
static void test_text_round_trip(void **state) {
  (void)state;
  load_manual("adam(lr = 0.01, weight_decay = 0.1)");
  char *a = NULL, *b = NULL;
  size_t alen = 0, blen = 0;
  FILE *f = open_memstream(&a, &alen);
  ir_print(f, g);
  fclose(f);
  Diag d;
  diag_init(&d, "grad.ir", a, alen);
  Graph *back = ir_parse(&d, a, alen);
  assert_non_null(back);
  f = open_memstream(&b, &blen);
  ir_print(f, back);
  fclose(f);
  assert_string_equal(a, b);
  assert_int_equal(back->nupdates, g->nupdates);
  /* Running the pass again on a graph that has its updates changes nothing. */
  PassCtx cx;
  pass_ctx_init(&cx);
  assert_false(pass_optimizer(back, &cx));
  ir_graph_free(back);
  free(a);
  free(b);
}

static void test_nothing_to_do(void **state) {
  (void)state;
  PassCtx cx;
  pass_ctx_init(&cx);
  g = build_src("model m {\n  input x: f32[3]\n  param w: f32[3] = zeros\n"
                "  loss = sum(w * x)\n  train loss with sgd(lr = 0.1)\n}\n");
  assert_non_null(g);
  assert_false(pass_optimizer(g, &cx)); /* no gradients */
  ir_add_grad(g, ir_find_param(g, "w"), ir_find_input(g, "x"));
  cx.inference = true;
  assert_false(pass_optimizer(g, &cx));
  assert_int_equal(g->nupdates, 0);
}

/* Updates happen at once: a = b and b = a swap. */
static void test_updates_at_once(void **state) {
  (void)state;
  g = ir_graph_new("swap");
  Loc loc = {0};
  Node *a = ir_node_new(g, OP_PARAM, NULL, 0, loc), *b = ir_node_new(g, OP_PARAM, NULL, 0, loc);
  a->name = "a";
  b->name = "b";
  a->type = b->type = ir_type(DT_F32, 1, (int64_t[]){2});
  ir_set_attr_name(g, a, "init", "zeros");
  ir_set_attr_name(g, b, "init", "zeros");
  ir_set_attr_floats(a, "args", NULL, 0);
  ir_set_attr_floats(b, "args", NULL, 0);
  ir_add_update(g, a, b);
  ir_add_update(g, b, a);
  char msg[256];
  assert_true(ir_verify(g, msg, sizeof msg));
  it = interp_new(g);
  assert_non_null(it);
  set("a", DT_F32, 1, (int64_t[]){2}, (float[]){1, 2});
  set("b", DT_F32, 1, (int64_t[]){2}, (float[]){3, 4});
  step();
  const float *na = interp_source(it, "a"), *nb = interp_source(it, "b");
  assert_float_equal(na[0], 3, 0);
  assert_float_equal(na[1], 4, 0);
  assert_float_equal(nb[0], 1, 0);
  assert_float_equal(nb[1], 2, 0);
  assert_null(interp_source(it, "c"));
}

static void test_optim_reserved(void **state) {
  (void)state;
  const char *bad[] = {
      "model m {\n  input optim: f32[3]\n  output optim\n}\n",
      "model m {\n  input x: f32[3]\n  param optim: f32[3] = zeros\n  y = x * optim\n"
      "  output y\n}\n",
      "fn f(x) {\n  param w: f32[3] = zeros\n  return x * w\n}\n"
      "model m {\n  input x: f32[3]\n  optim = f(x)\n  output optim\n}\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    Graph *bg = build_src(bad[i]);
    assert_null(bg);
  }
  /* Inside a fn the name is free: it becomes CALL.optim. */
  g = build_src("fn f(x) {\n  param optim: f32[3] = zeros\n  return x * optim\n}\n"
                "model m {\n  input x: f32[3]\n  a = f(x)\n  output a\n}\n");
  assert_non_null(g);
  assert_non_null(ir_find_param(g, "a.optim"));
}

/* ---- torch.optim on a tiny MLP (tests/optim/gen_optim_reference.py) ----- */

static const char *const mlp_params[] = {"w1", "b1", "w2", "b2"};

static const KilnTensor *ref_tensor(const KilnTensorFile *ref, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const KilnTensor *ref_tensor(const KilnTensorFile *ref, const char *fmt, ...) {
  char name[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  const KilnTensor *t = kiln_tensor_find(ref, name);
  if (!t) print_error("reference tensor '%s' missing\n", name);
  assert_non_null(t);
  return t;
}

static void bind_ref(const char *name, const KilnTensor *t, const void *data, int drop) {
  set(name, t->dtype == KILN_I32 ? DT_I32 : DT_F32, t->rank - drop, t->shape + drop, data);
}

/* Largest |kiln - torch| over the params after step k. */
static double params_error(const KilnTensorFile *ref, const char *opt, int k) {
  double worst = 0;
  for (int p = 0; p < 4; p++) {
    const KilnTensor *t = ref_tensor(ref, "%s.step%d.%s", opt, k, mlp_params[p]);
    const float *want = t->data, *got = interp_source(it, mlp_params[p]);
    for (int64_t i = 0; i < kiln_tensor_numel(t); i++) {
      double e = fabs((double)got[i] - want[i]);
      if (e > 1e-5)
        print_error("%s step %d %s[%lld]: kiln %.9g, torch %.9g\n", opt, k, mlp_params[p],
                    (long long)i, got[i], want[i]);
      worst = e > worst ? e : worst;
    }
  }
  return worst;
}

static void check_torch(const char *opt) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/optim/tiny_%s.kl", KILN_SOURCE_DIR, opt);
  char *src = read_text(path);
  g = build_src(src);
  free(src);
  assert_non_null(g);
  PassCtx cx;
  pass_ctx_init(&cx);
  assert_true(pass_run_pipeline(g, STAGE_GRAD, &cx));
  if (g->ngrads == 0) skip(); /* no autodiff pass in this build */
  KilnTensorFile ref;
  char err[512];
  snprintf(path, sizeof path, "%s/tests/optim/reference.safetensors", KILN_SOURCE_DIR);
  if (kiln_safetensors_read(path, &ref, err, sizeof err) != 0) print_error("%s\n", err);
  it = interp_new(g);
  assert_non_null(it);
  for (int p = 0; p < 4; p++) {
    const KilnTensor *t = ref_tensor(&ref, "init.%s", mlp_params[p]);
    bind_ref(mlp_params[p], t, t->data, 0);
  }
  const KilnTensor *x = ref_tensor(&ref, "data.x"), *y = ref_tensor(&ref, "data.y");
  double worst = 0, worst_loss = 0;
  for (int k = 0; k < STEPS; k++) {
    bind_ref("x", x, (const float *)x->data + k * 8 * 4, 1);
    bind_ref("y", y, (const int32_t *)y->data + k * 8, 1);
    assert_true(interp_run(it, err, sizeof err));
    double loss = *(const float *)interp_value(it, g->loss);
    double want = *(const float *)ref_tensor(&ref, "%s.loss%d", opt, k + 1)->data;
    worst_loss = fmax(worst_loss, fabs(loss - want));
    assert_true(interp_apply_updates(it, err, sizeof err));
    worst = fmax(worst, params_error(&ref, opt, k + 1));
  }
  printf("# torch.optim %s: max |param error| %.3g, max |loss error| %.3g over %d steps\n", opt,
         worst, worst_loss, STEPS);
  kiln_tensor_file_free(&ref);
  assert_true(worst <= 1e-5);
  assert_true(worst_loss <= 1e-5);
}

static void test_torch_sgd(void **state) {
  (void)state;
  check_torch("sgd");
}

static void test_torch_adam(void **state) {
  (void)state;
  check_torch("adam");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_sgd_plain, teardown),
      cmocka_unit_test_teardown(test_sgd_momentum, teardown),
      cmocka_unit_test_teardown(test_sgd_weight_decay, teardown),
      cmocka_unit_test_teardown(test_adam, teardown),
      cmocka_unit_test_teardown(test_adam_weight_decay, teardown),
      cmocka_unit_test_teardown(test_state_names, teardown),
      cmocka_unit_test_teardown(test_text_round_trip, teardown),
      cmocka_unit_test_teardown(test_nothing_to_do, teardown),
      cmocka_unit_test_teardown(test_updates_at_once, teardown),
      cmocka_unit_test_teardown(test_optim_reserved, teardown),
      cmocka_unit_test_teardown(test_torch_sgd, teardown),
      cmocka_unit_test_teardown(test_torch_adam, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
