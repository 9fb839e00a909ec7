/* test_interp.c - the interpreter: every op vs hand-computed values, f64, run errors. */
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
#include <time.h>

#include "ast.h"
#include "build.h"
#include "interp.h"

/* Kernels round once from double, so f32 results are within half an ulp. */
#define TOL32 1e-6
#define TOL64 1e-13

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

/* The graph of a .kl source with size overrides, without an interpreter yet. */
static Graph *build_with(const char *src, const Define *defs, int ndefs) {
  Diag d;
  diag_init(&d, "test.kl", src, strlen(src));
  Ast ast;
  assert_true(parse_file(&ast, &ast_arena, &d, src, strlen(src)));
  Graph *graph = build_graph(&ast, defs, ndefs, &d);
  assert_non_null(graph);
  return graph;
}

static Graph *build(const char *src) { return build_with(src, NULL, 0); }

/* Builds src and an interpreter for it. */
static void load(const char *src) {
  g = build(src);
  it = interp_new(g);
  assert_non_null(it);
}

static void set_f32(const char *name, int rank, const int64_t *dims, const float *v) {
  char err[256];
  bool ok = interp_set(it, name, DT_F32, rank, dims, v, err, sizeof err);
  if (!ok) print_error("interp_set: %s\n", err);
  assert_true(ok);
}

static void set_i32(const char *name, int rank, const int64_t *dims, const int32_t *v) {
  char err[256];
  bool ok = interp_set(it, name, DT_I32, rank, dims, v, err, sizeof err);
  if (!ok) print_error("interp_set: %s\n", err);
  assert_true(ok);
}

static void run(void) {
  char err[256];
  bool ok = interp_run(it, err, sizeof err);
  if (!ok) print_error("interp_run: %s\n", err);
  assert_true(ok);
}

static void run_fails(const char *want) {
  char err[256];
  assert_false(interp_run(it, err, sizeof err));
  assert_string_equal(err, want);
}

/* Element i of a node's value, whatever its dtype. */
static double value_at(const Node *n, int64_t i) {
  return ir_value_at(n->type.dtype, interp_value(it, n), i);
}

static bool close_to(double got, double want, double tol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs(got - want) <= tol * (1.0 + fabs(want));
}

/* Compares a node's value to want[0..n), printing the first mismatches and
 * the largest error. */
static void expect_node(const Node *node, const double *want, int64_t n, double tol) {
  assert_non_null(node);
  assert_int_equal(ir_type_numel(&node->type), n);
  int bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double got = value_at(node, i);
    if (close_to(got, want[i], tol)) continue;
    if (bad++ < 5) print_error("  [%lld] got %.17g, want %.17g\n", (long long)i, got, want[i]);
    if (fabs(got - want[i]) > worst || isnan(got)) worst = fabs(got - want[i]);
  }
  if (bad) print_error("  %d mismatches, largest error %g\n", bad, worst);
  assert_int_equal(bad, 0);
}

static const Node *out(const char *name) {
  const Node *n = interp_output(it, name);
  if (!n) print_error("no output %s\n", name);
  assert_non_null(n);
  return n;
}

static void expect(const char *name, const double *want, int64_t n) {
  expect_node(out(name), want, n, TOL32);
}

static void expect_type(const char *name, const char *want) {
  char buf[IR_TYPE_STR_MAX];
  assert_string_equal(ir_type_str(&out(name)->type, buf, sizeof buf), want);
}

#define D(...) (double[]){__VA_ARGS__}, (int64_t)(sizeof((double[]){__VA_ARGS__}) / sizeof(double))
#define DIMS(...)                                                                                  \
  (int64_t[]) { __VA_ARGS__ }
#define F(...)                                                                                     \
  (float[]) { __VA_ARGS__ }

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---- Elementwise -------------------------------------------------------- */

static void test_unary(void **state) {
  (void)state;
  load("model t {\n"
       "  input x: f32[5]\n"
       "  a = -x\n  b = relu(x)\n  c = sigmoid(x)\n  d = tanh(x)\n  e = exp(x)\n"
       "  f = abs(x)\n  g = gelu(x)\n  h = silu(x)\n  i = pow(x, 2)\n  j = pow(x, 0.5)\n"
       "  k = sqrt(x)\n  l = log(x)\n  m = rsqrt(x)\n"
       "  output a, b, c, d, e, f, g, h, i, j, k, l, m\n}\n");
  set_f32("x", 1, DIMS(5), F(-2, -0.5f, 0, 1, 4));
  run();
  expect("a", D(2, 0.5, 0, -1, -4));
  expect("b", D(0, 0, 0, 1, 4));
  expect("c",
         D(0.11920292202211755, 0.37754066879814541, 0.5, 0.7310585786300049, 0.98201379003790845));
  expect("d",
         D(-0.9640275800758169, -0.46211715726000974, 0, 0.7615941559557649, 0.99932929973906703));
  expect("e", D(0.1353352832366127, 0.60653065971263342, 1, 2.718281828459045, 54.598150033144236));
  expect("f", D(2, 0.5, 0, 1, 4));
  /* 0.5 x (1 + erf(x / sqrt 2)) */
  expect("g", D(-0.045500263896358417, -0.15426876936299347, 0, 0.84134474606854293,
                3.9998733127174332));
  expect("h",
         D(-0.23840584404423515, -0.18877033439907270, 0, 0.7310585786300049, 3.9280551601516338));
  expect("i", D(4, 0.25, 0, 1, 16));
  expect("j", D(NAN, NAN, 0, 1, 2)); /* torch.pow of a negative base to 0.5: NaN */
  expect("k", D(NAN, NAN, 0, 1, 2));
  expect("l", D(NAN, NAN, -INFINITY, 0, 1.3862943611198906));
  expect("m", D(NAN, NAN, INFINITY, 1, 0.5));
}

static void test_binary_broadcast(void **state) {
  (void)state;
  load("model t {\n"
       "  input a: f32[2, 3]\n  input b: f32[3]\n  input c: f32[2, 1]\n"
       "  input x: f32[2, 1, 3]\n  input y: f32[4, 1]\n"
       "  s = a + b\n  d = a - c\n  p = a * b\n  q = c / a\n  bc = c + b\n  xy = x * y\n"
       "  mx = maximum(a, 3)\n  mn = minimum(a, c)\n  z = b / 0\n"
       "  output s, d, p, q, bc, xy, mx, mn, z\n}\n");
  set_f32("a", 2, DIMS(2, 3), F(1, 2, 3, 4, 5, 6));
  set_f32("b", 1, DIMS(3), F(10, 20, 30));
  set_f32("c", 2, DIMS(2, 1), F(100, 200));
  set_f32("x", 3, DIMS(2, 1, 3), F(0, 1, 2, 3, 4, 5));
  set_f32("y", 2, DIMS(4, 1), F(1, 10, 100, -1));
  run();
  expect("s", D(11, 22, 33, 14, 25, 36));
  expect("d", D(-99, -98, -97, -196, -195, -194));
  expect("p", D(10, 40, 90, 40, 100, 180));
  expect("q", D(100, 50, 100.0 / 3, 50, 40, 200.0 / 6));
  expect_type("bc", "f32[2,3]");
  expect("bc", D(110, 120, 130, 210, 220, 230));
  expect_type("xy", "f32[2,4,3]");
  expect("xy", D(0, 1, 2, 0, 10, 20, 0, 100, 200, 0, -1, -2, /* x[0] times y */
                 3, 4, 5, 30, 40, 50, 300, 400, 500, -3, -4, -5));
  expect("mx", D(3, 3, 3, 4, 5, 6));
  expect("mn", D(1, 2, 3, 4, 5, 6));
  expect("z", D(INFINITY, INFINITY, INFINITY));
}

static void test_nan_propagates(void **state) {
  (void)state;
  load("model t {\n  input a: f32[3]\n  input b: f32[3]\n"
       "  mx = maximum(a, b)\n  mn = minimum(a, b)\n  r = relu(a)\n  m = max(a)\n"
       "  q = a / b\n  output mx, mn, r, m, q\n}\n");
  set_f32("a", 1, DIMS(3), F(NAN, 1, 0));
  set_f32("b", 1, DIMS(3), F(5, NAN, 0));
  run();
  expect("mx", D(NAN, NAN, 0));
  expect("mn", D(NAN, NAN, 0));
  expect("r", D(NAN, 1, 0));
  expect("m", D(NAN));
  expect("q", D(NAN, NAN, NAN));
}

/* ---- Contractions ------------------------------------------------------- */

static void test_matmul(void **state) {
  (void)state;
  load("model t {\n"
       "  input a: f32[2, 3]\n  input b: f32[3, 2]\n  input c: f32[2, 2, 3]\n"
       "  input d: f32[3, 1, 2, 2]\n"
       "  ab = a @ b\n  cb = c @ b\n  dd = d @ c\n"
       "  output ab, cb, dd\n}\n");
  set_f32("a", 2, DIMS(2, 3), F(1, 2, 3, 4, 5, 6));
  set_f32("b", 2, DIMS(3, 2), F(1, 0, 0, 1, 1, 1));
  set_f32("c", 3, DIMS(2, 2, 3), F(1, 2, 3, 4, 5, 6, 0, 0, 1, 1, 0, 0));
  set_f32("d", 4, DIMS(3, 1, 2, 2), F(1, 0, 0, 1, 2, 0, 0, 2, 0, 1, 1, 0));
  run();
  /* [1 2 3; 4 5 6] @ [1 0; 0 1; 1 1] */
  expect("ab", D(4, 5, 10, 11));
  /* b broadcast over c's batch */
  expect("cb", D(4, 5, 10, 11, 1, 1, 1, 0));
  /* d [3,1,2,2] @ c [2,2,3] -> [3,2,2,3]: batch dims broadcast both ways */
  expect_type("dd", "f32[3,2,2,3]");
  double want[36];
  const double c[2][2][3] = {{{1, 2, 3}, {4, 5, 6}}, {{0, 0, 1}, {1, 0, 0}}};
  const double d[3][2][2] = {{{1, 0}, {0, 1}}, {{2, 0}, {0, 2}}, {{0, 1}, {1, 0}}};
  /* dd[i, j, m, n] = sum_k d[i, 0, m, k] c[j, k, n] */
  for (int i = 0, w = 0; i < 3; i++)
    for (int j = 0; j < 2; j++)
      for (int m = 0; m < 2; m++)
        for (int n = 0; n < 3; n++, w++)
          want[w] = d[i][m][0] * c[j][0][n] + d[i][m][1] * c[j][1][n];
  expect_node(out("dd"), want, 36, TOL32);
}

static void test_conv2d(void **state) {
  (void)state;
  load("model t {\n"
       "  input x: f32[1, 1, 3, 3]\n  input w: f32[1, 1, 2, 2]\n  input b: f32[1]\n"
       "  input x2: f32[1, 2, 1, 2]\n  input w2: f32[2, 2, 1, 1]\n  input b2: f32[2]\n"
       "  plain = conv2d(x, w)\n  strided = conv2d(x, w, b, stride=2, padding=1)\n"
       "  mix = conv2d(x2, w2, b2)\n"
       "  output plain, strided, mix\n}\n");
  set_f32("x", 4, DIMS(1, 1, 3, 3), F(1, 2, 3, 4, 5, 6, 7, 8, 9));
  set_f32("w", 4, DIMS(1, 1, 2, 2), F(1, 0, 0, 1));
  set_f32("b", 1, DIMS(1), F(0.5f));
  set_f32("x2", 4, DIMS(1, 2, 1, 2), F(1, 2, 10, 20));
  set_f32("w2", 4, DIMS(2, 2, 1, 1), F(1, 1, 2, -1));
  set_f32("b2", 1, DIMS(2), F(0, 100));
  run();
  /* out[i][j] = x[i][j] + x[i+1][j+1] */
  expect("plain", D(6, 8, 12, 14));
  /* padded by 1, stride 2: each output sees x[2i-1][2j-1] (0 outside) + x[2i][2j], + 0.5 */
  expect("strided", D(1.5, 3.5, 7.5, 14.5));
  /* 1x1 kernels mix channels: out[co] = sum_ci w[co, ci] x[ci] + b[co] */
  expect("mix", D(11, 22, 100 + 2 - 10, 100 + 4 - 20));
}

static void test_lstm(void **state) {
  (void)state;
  load("model t {\n"
       "  input x: f32[2, 2, 1]\n  input wi: f32[4, 1]\n  input wh: f32[4, 1]\n"
       "  input bi: f32[4]\n  input bh: f32[4]\n"
       "  h = lstm(x, wi, wh, bi, bh)\n  output h\n}\n");
  /* Two sequences: [1, 2] and [-1, 0]. Gates in order i, f, g, o. */
  set_f32("x", 3, DIMS(2, 2, 1), F(1, 2, -1, 0));
  set_f32("wi", 2, DIMS(4, 1), F(0.5f, -0.5f, 1.0f, 0.25f));
  set_f32("wh", 2, DIMS(4, 1), F(0.125f, 0.25f, 0.375f, 0.5f));
  set_f32("bi", 1, DIMS(4), F(0, 0, 0, 0));
  set_f32("bh", 1, DIMS(4), F(0.125f, 0.125f, 0.125f, 0.125f));
  run();
  const double wi[4] = {0.5, -0.5, 1.0, 0.25}, wh[4] = {0.125, 0.25, 0.375, 0.5};
  const double xs[2][2] = {{1, 2}, {-1, 0}};
  double want[4];
  for (int b = 0; b < 2; b++) {
    double h = 0, c = 0; /* zero initial state */
    for (int t = 0; t < 2; t++) {
      double z[4];
      for (int k = 0; k < 4; k++) z[k] = xs[b][t] * wi[k] + 0.0 + h * wh[k] + 0.125;
      double i = sigm(z[0]), f = sigm(z[1]), gg = tanh(z[2]), o = sigm(z[3]);
      c = f * c + i * gg;
      h = o * tanh(c);
      want[b * 2 + t] = h;
    }
  }
  /* The first step by hand: z = [0.625, -0.375, 1.125, 0.375], c = i g, h = o tanh(c). */
  double c1 = sigm(0.625) * tanh(1.125);
  assert_true(fabs(want[0] - sigm(0.375) * tanh(c1)) < 1e-15);
  assert_true(fabs(want[0] - 0.28637267046054904) < 1e-15);
  expect("h", want, 4);
}

/* ---- Reductions --------------------------------------------------------- */

static void test_reductions(void **state) {
  (void)state;
  load("model t {\n  input x: f32[2, 3, 4]\n"
       "  s1 = sum(x, axis=1)\n  sk = sum(x, axis=-1, keepdim=true)\n"
       "  m02 = mean(x, axis=[0, -1])\n  mx0 = max(x, axis=0)\n  all = sum(x)\n"
       "  mk = max(x, axis=[1, 2], keepdim=true)\n  mall = mean(x, keepdim=true)\n"
       "  output s1, sk, m02, mx0, all, mk, mall\n}\n");
  float xs[24];
  for (int i = 0; i < 24; i++) xs[i] = (float)i; /* x[i,j,k] = 12 i + 4 j + k */
  set_f32("x", 3, DIMS(2, 3, 4), xs);
  run();
  expect_type("s1", "f32[2,4]");
  expect("s1", D(12, 15, 18, 21, 48, 51, 54, 57));
  expect_type("sk", "f32[2,3,1]");
  expect("sk", D(6, 22, 38, 54, 70, 86));
  expect_type("m02", "f32[3]");
  expect("m02", D(7.5, 11.5, 15.5));
  expect("mx0", D(12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23));
  expect_type("all", "f32[]");
  expect("all", D(276));
  expect_type("mk", "f32[2,1,1]");
  expect("mk", D(11, 23));
  expect_type("mall", "f32[1,1,1]");
  expect("mall", D(11.5));
}

static void test_softmax(void **state) {
  (void)state;
  load("model t {\n  input x: f32[2, 3]\n  input big: f32[2]\n"
       "  s = softmax(x)\n  s0 = softmax(x, axis=0)\n  l = log_softmax(x)\n  sb = softmax(big)\n"
       "  output s, s0, l, sb\n}\n");
  set_f32("x", 2, DIMS(2, 3), F(1, 2, 3, 0, 0, 0));
  set_f32("big", 1, DIMS(2), F(1000, 1000));
  run();
  double z = exp(1) + exp(2) + exp(3), third = 1.0 / 3;
  expect("s", D(exp(1) / z, exp(2) / z, exp(3) / z, third, third, third));
  double e1 = 1 / (1 + exp(-1.0)); /* softmax([1, 0]) */
  expect("s0", D(e1, 1 / (1 + exp(-2.0)), 1 / (1 + exp(-3.0)), 1 - e1, 1 - 1 / (1 + exp(-2.0)),
                 1 - 1 / (1 + exp(-3.0))));
  expect("l", D(1 - log(z), 2 - log(z), 3 - log(z), -log(3), -log(3), -log(3)));
  expect("sb", D(0.5, 0.5)); /* max subtracted: no overflow */
  const float *s = interp_value(it, out("s"));
  for (int r = 0; r < 2; r++) assert_true(fabs(s[3 * r] + s[3 * r + 1] + s[3 * r + 2] - 1) < 1e-6);
}

static void test_layer_norm(void **state) {
  (void)state;
  load("model t {\n  input x: f32[2, 4]\n  input gamma: f32[4]\n  input beta: f32[4]\n"
       "  input one: f32[4]\n  input zero: f32[4]\n"
       "  n = layer_norm(x, one, zero)\n  a = layer_norm(x, gamma, beta, eps=0.5)\n"
       "  output n, a\n}\n");
  set_f32("x", 2, DIMS(2, 4), F(1, 2, 3, 4, 2, 2, 2, 2));
  set_f32("gamma", 1, DIMS(4), F(2, 1, 1, 1));
  set_f32("beta", 1, DIMS(4), F(0, 0, 0, 1));
  set_f32("one", 1, DIMS(4), F(1, 1, 1, 1));
  set_f32("zero", 1, DIMS(4), F(0, 0, 0, 0));
  run();
  /* row 0: mean 2.5, biased var 1.25; row 1: var 0, so (x - mean) = 0 */
  double r = 1 / sqrt(1.25 + 1e-5);
  expect("n", D(-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r, 0, 0, 0, 0));
  double ra = 1 / sqrt(1.25 + 0.5);
  expect("a", D(-3 * ra, -0.5 * ra, 0.5 * ra, 1.5 * ra + 1, 0, 0, 0, 1));
  const float *n = interp_value(it, out("n"));
  double mean = (n[0] + n[1] + n[2] + n[3]) / 4, var = 0;
  for (int i = 0; i < 4; i++) var += (n[i] - mean) * (n[i] - mean) / 4;
  assert_true(fabs(mean) < 1e-6 && fabs(var - 1) < 1e-4);
}

static void test_pooling(void **state) {
  (void)state;
  load("model t {\n  input x: f32[1, 1, 4, 4]\n  input t: f32[1, 2, 2, 2]\n"
       "  mp = max_pool2d(x, 2)\n  ap = avg_pool2d(x, 2)\n  m3 = max_pool2d(x, 3, stride=1)\n"
       "  a3 = avg_pool2d(x, 3, stride=1)\n  mt = max_pool2d(t, 2)\n"
       "  output mp, ap, m3, a3, mt\n}\n");
  float xs[16];
  for (int i = 0; i < 16; i++) xs[i] = (float)i;
  set_f32("x", 4, DIMS(1, 1, 4, 4), xs);
  set_f32("t", 4, DIMS(1, 2, 2, 2), F(7, 7, 7, 7, -1, NAN, 3, 2)); /* a tie; a NaN */
  run();
  expect("mp", D(5, 7, 13, 15));
  expect("ap", D(2.5, 4.5, 10.5, 12.5));
  expect("m3", D(10, 11, 14, 15));
  expect("a3", D(5, 6, 9, 10));
  expect("mt", D(7, NAN));
}

/* ---- Data movement ------------------------------------------------------ */

static void test_movement(void **state) {
  (void)state;
  load("model t {\n  input x: f32[2, 3, 4]\n  input y: f32[2, 1, 4]\n"
       "  r = reshape(x, [4, -1])\n  p = permute(x, [2, 0, 1])\n  tr = transpose(x, 0, 1)\n"
       "  sl = x[:, 1:3, -1]\n  one = x[1]\n  fl = flatten(x)\n"
       "  c1 = concat([x, y, y], axis=1)\n  c0 = concat([y, y], 0)\n"
       "  output r, p, tr, sl, one, fl, c1, c0\n}\n");
  float xs[24];
  for (int i = 0; i < 24; i++) xs[i] = (float)i; /* x[i,j,k] = 12 i + 4 j + k */
  set_f32("x", 3, DIMS(2, 3, 4), xs);
  set_f32("y", 3, DIMS(2, 1, 4), F(-1, -2, -3, -4, -5, -6, -7, -8));
  run();
  double seq[24];
  for (int i = 0; i < 24; i++) seq[i] = i;
  expect_type("r", "f32[4,6]");
  expect_node(out("r"), seq, 24, 0);
  /* p[k, i, j] = x[i, j, k] */
  expect_type("p", "f32[4,2,3]");
  double want[32];
  for (int k = 0, w = 0; k < 4; k++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) want[w++] = 12 * i + 4 * j + k;
  expect_node(out("p"), want, 24, 0);
  /* tr[j, i, k] = x[i, j, k] */
  for (int j = 0, w = 0; j < 3; j++)
    for (int i = 0; i < 2; i++)
      for (int k = 0; k < 4; k++) want[w++] = 12 * i + 4 * j + k;
  expect_node(out("tr"), want, 24, 0);
  expect_type("sl", "f32[2,2]");
  expect("sl", D(7, 11, 19, 23));
  expect_type("one", "f32[3,4]");
  expect_node(out("one"), seq + 12, 12, 0);
  expect_type("fl", "f32[2,12]");
  expect_node(out("fl"), seq, 24, 0);
  expect_type("c1", "f32[2,5,4]");
  expect("c1", D(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, -1, -2, -3, -4, -1, -2, -3, -4, /**/
                 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, -5, -6, -7, -8, -5, -6, -7, -8));
  expect_type("c0", "f32[4,1,4]");
  expect("c0", D(-1, -2, -3, -4, -5, -6, -7, -8, -1, -2, -3, -4, -5, -6, -7, -8));
}

static void test_embedding_and_i32_movement(void **state) {
  (void)state;
  load("model t {\n  input ids: i32[2, 3]\n  param table: f32[3, 2] = zeros\n"
       "  e = embedding(ids, table)\n  tail = ids[:, 1:]\n  et = embedding(tail, table)\n"
       "  output e, tail, et\n}\n");
  set_i32("ids", 2, DIMS(2, 3), (int32_t[]){0, 2, 0, 1, 1, 2}); /* repeated ids */
  set_f32("table", 2, DIMS(3, 2), F(0, 1, 10, 11, 20, 21));
  run();
  expect_type("e", "f32[2,3,2]");
  expect("e", D(0, 1, 20, 21, 0, 1, 10, 11, 10, 11, 20, 21));
  expect_type("tail", "i32[2,2]");
  const int32_t *tail = interp_value(it, out("tail"));
  assert_int_equal(tail[0], 2);
  assert_int_equal(tail[3], 2);
  expect("tail", D(2, 0, 1, 2));
  expect("et", D(20, 21, 0, 1, 10, 11, 20, 21));
}

static void test_causal_mask(void **state) {
  (void)state;
  load("model t {\n  input x: f32[3, 3]\n  m = causal_mask(3)\n  s = softmax(x + m)\n"
       "  output m, s\n}\n");
  set_f32("x", 2, DIMS(3, 3), F(0, 0, 0, 0, 0, 0, 0, 0, 0));
  run();
  double ninf = -INFINITY, h = 0.5, t = 1.0 / 3;
  expect("m", D(0, ninf, ninf, 0, 0, ninf, 0, 0, 0));
  expect("s", D(1, 0, 0, h, h, 0, t, t, t));
}

/* ---- Losses ------------------------------------------------------------- */

static void test_losses(void **state) {
  (void)state;
  load("model t {\n"
       "  input a: f32[2, 2]\n  input b: f32[2]\n"
       "  input logits: f32[2, 3]\n  input y: i32[2]\n"
       "  input l3: f32[1, 2, 3]\n  input y3: i32[1, 2]\n"
       "  input p: f32[5]\n  input t: f32[5]\n  input z: f32[3]\n  input tz: f32[3]\n"
       "  mse = mse_loss(a, b)\n  ce = cross_entropy(logits, y)\n  ce3 = cross_entropy(l3, y3)\n"
       "  bce = bce_loss(p, t)\n  bcel = bce_with_logits(z, tz)\n"
       "  output mse, ce, ce3, bce, bcel\n}\n");
  set_f32("a", 2, DIMS(2, 2), F(1, 2, 3, 4));
  set_f32("b", 1, DIMS(2), F(1, 0));
  set_f32("logits", 2, DIMS(2, 3), F(1, 2, 3, 0, 0, 0));
  set_i32("y", 1, DIMS(2), (int32_t[]){2, 1});
  set_f32("l3", 3, DIMS(1, 2, 3), F(1, 2, 3, 0, 0, 0));
  set_i32("y3", 2, DIMS(1, 2), (int32_t[]){0, 1});
  set_f32("p", 1, DIMS(5), F(0.5f, 0.75f, 0, 1, 0));
  set_f32("t", 1, DIMS(5), F(1, 1, 0, 1, 1));
  set_f32("z", 1, DIMS(3), F(0, 2, -3));
  set_f32("tz", 1, DIMS(3), F(1, 0, 0.5f));
  run();
  /* b broadcasts over a's rows: (a - b)^2 = [0, 4, 4, 16] */
  expect_type("mse", "f32[]");
  expect("mse", D(6));
  /* row 0: logsumexp [1,2,3] - 3; row 1: log 3 - 0 */
  double lse = log(exp(1) + exp(2) + exp(3));
  expect("ce", D(((lse - 3) + log(3)) / 2));
  expect("ce3", D(((lse - 1) + log(3)) / 2));
  /* -log .5, -log .75, p=t=0: 0, p=t=1: 0, p=0 t=1: log clamped at -100 */
  expect("bce", D((log(2) - log(0.75) + 100) / 5));
  /* max(z, 0) - z t + log(1 + e^-|z|) */
  expect("bcel", D((log(2) + (2 + log1p(exp(-2))) + (1.5 + log1p(exp(-3)))) / 3));
}

/* ---- Sources, f64, re-running ------------------------------------------- */

static void test_const_and_rerun(void **state) {
  (void)state;
  load("model t {\n  input x: f32[2]\n  y = x * 0.5 + 1\n  output y\n}\n");
  set_f32("x", 1, DIMS(2), F(2, 4));
  run();
  expect("y", D(2, 3));
  set_f32("x", 1, DIMS(2), F(-2, 0));
  run();
  expect("y", D(0, 1));
  /* f64 data converts to the f32 node: 0.1 rounds to the nearest float */
  char err[128];
  assert_true(interp_set(it, "x", DT_F64, 1, DIMS(2), (double[]){0.1, 1e300}, err, sizeof err));
  run();
  expect("y", D((float)((double)(float)0.1 * 0.5 + 1), INFINITY));
}

/* A small classifier's graph: matmul, broadcast add, gelu, layer_norm,
 * softmax and the cross-entropy loss. */
static const char *mlp_src = "model m {\n"
                             "  input x: f32[3, 4]\n  input y: i32[3]\n"
                             "  param w: f32[4, 5] = zeros\n  param b: f32[5] = zeros\n"
                             "  param g: f32[5] = ones\n  param be: f32[5] = zeros\n"
                             "  h = layer_norm(gelu(x @ w + b), g, be)\n  p = softmax(h)\n"
                             "  loss = cross_entropy(h, y)\n  output p\n"
                             "  train loss with sgd(lr = 0.1)\n}\n";

static void bind_mlp(DType dt) {
  double xs[12], ws[20], bs[5], gs[5], bes[5];
  for (int i = 0; i < 12; i++) xs[i] = sin(i + 1.0);
  for (int i = 0; i < 20; i++) ws[i] = cos(0.7 * i) / 3;
  for (int i = 0; i < 5; i++) bs[i] = 0.1 * i, gs[i] = 1 + 0.1 * i, bes[i] = -0.05 * i;
  char err[128];
  struct {
    const char *name;
    int rank;
    int64_t dims[2];
    const double *v;
  } binds[] = {{"x", 2, {3, 4}, xs},
               {"w", 2, {4, 5}, ws},
               {"b", 1, {5}, bs},
               {"g", 1, {5}, gs},
               {"be", 1, {5}, bes}};
  for (int k = 0; k < 5; k++) {
    int64_t count = binds[k].dims[0] * (binds[k].rank == 2 ? binds[k].dims[1] : 1);
    float f[20];
    for (int64_t i = 0; i < count; i++) f[i] = (float)binds[k].v[i];
    const void *data = dt == DT_F64 ? (const void *)binds[k].v : (const void *)f;
    assert_true(
        interp_set(it, binds[k].name, dt, binds[k].rank, binds[k].dims, data, err, sizeof err));
  }
  set_i32("y", 1, DIMS(3), (int32_t[]){0, 4, 2});
}

static void test_promote_f64(void **state) {
  (void)state;
  /* f32 run */
  load(mlp_src);
  bind_mlp(DT_F32);
  run();
  double p32[15], loss32 = value_at(g->loss, 0);
  for (int i = 0; i < 15; i++) p32[i] = value_at(out("p"), i);
  interp_free(it);
  /* The same graph promoted: every float node is f64, ids stay i32. */
  interp_promote_f64(g);
  for (int i = 0; i < g->nnodes; i++)
    assert_true(g->nodes[i]->type.dtype == DT_F64 ||
                (g->nodes[i]->type.dtype == DT_I32 && g->nodes[i]->op == OP_INPUT));
  char msg[256];
  bool ok = ir_verify(g, msg, sizeof msg);
  if (!ok) print_error("verify: %s\n", msg);
  assert_true(ok);
  it = interp_new(g);
  bind_mlp(DT_F64);
  run();
  expect_type("p", "f64[3,5]");
  expect_node(out("p"), p32, 15, 1e-5);
  expect_node(g->loss, &loss32, 1, 1e-5);
  /* softmax rows sum to 1 in double precision */
  const double *p = interp_value(it, out("p"));
  for (int r = 0; r < 3; r++) {
    double s = 0;
    for (int c = 0; c < 5; c++) s += p[5 * r + c];
    assert_true(fabs(s - 1) < 1e-15);
  }
}

static void test_f64_keeps_precision(void **state) {
  (void)state;
  g = build("model t {\n  input x: f32[2]\n  m = causal_mask(2)\n  y = x + 1e-10 - 1\n"
            "  s = sum(x + m)\n  output y, s\n}\n");
  interp_promote_f64(g);
  it = interp_new(g);
  char err[128];
  assert_true(interp_set(it, "x", DT_F64, 1, DIMS(2), (double[]){1, 2}, err, sizeof err));
  run();
  /* in f32, 1 + 1e-10 would round back to 1 */
  expect_node(out("y"), D(1e-10, 1 + 1e-10), TOL64);
  expect_node(out("s"), D(-INFINITY), 0);
}

/* ---- Errors ------------------------------------------------------------- */

static void test_run_errors(void **state) {
  (void)state;
  load("model t {\n  input ids: i32[2, 2]\n  input y: i32[2]\n  param table: f32[3, 4] = zeros\n"
       "  e = embedding(ids, table)\n  logits = sum(e, axis=1)\n"
       "  loss = cross_entropy(logits, y)\n  output e\n  train loss with sgd(lr = 0.1)\n}\n");
  run_fails("input 'ids' is not set");
  set_i32("ids", 2, DIMS(2, 2), (int32_t[]){0, 1, 2, 0});
  run_fails("input 'y' is not set");
  set_i32("y", 1, DIMS(2), (int32_t[]){3, 4});
  run_fails("param 'table' is not set");
  float table[12] = {0};
  set_f32("table", 2, DIMS(3, 4), table);
  run_fails("cross_entropy: label 4 at [1] is out of range [0, 4)");
  set_i32("y", 1, DIMS(2), (int32_t[]){-1, 0});
  run_fails("cross_entropy: label -1 at [0] is out of range [0, 4)");
  set_i32("y", 1, DIMS(2), (int32_t[]){3, 0});
  run();
  expect_node(g->loss, D(log(4)), TOL32);
  set_i32("ids", 2, DIMS(2, 2), (int32_t[]){0, 1, 5000, 0});
  run_fails("embedding: id 5000 at [1, 0] is out of range [0, 3)");
  set_i32("ids", 2, DIMS(2, 2), (int32_t[]){0, -7, 1, 0});
  run_fails("embedding: id -7 at [0, 1] is out of range [0, 3)");
}

static void test_set_errors(void **state) {
  (void)state;
  load("model t {\n  input x: f32[2, 3]\n  input ids: i32[2]\n  param w: f32[3] = zeros\n"
       "  y = x * w\n  output y\n}\n");
  char err[256];
  float v[6] = {0};
  assert_false(interp_set(it, "x", DT_F32, 2, DIMS(3, 2), v, err, sizeof err));
  assert_string_equal(err, "input 'x' expects f32[2,3], got f32[3,2]");
  assert_false(interp_set(it, "x", DT_F32, 1, DIMS(6), v, err, sizeof err));
  assert_string_equal(err, "input 'x' expects f32[2,3], got f32[6]");
  assert_false(interp_set(it, "x", DT_I32, 2, DIMS(2, 3), v, err, sizeof err));
  assert_string_equal(err, "input 'x' expects f32[2,3], got i32[2,3]");
  assert_false(interp_set(it, "ids", DT_F32, 1, DIMS(2), v, err, sizeof err));
  assert_string_equal(err, "input 'ids' expects i32[2], got f32[2]");
  assert_false(interp_set(it, "w", DT_F64, 1, DIMS(4), v, err, sizeof err));
  assert_string_equal(err, "param 'w' expects f32[3], got f64[4]");
  assert_false(interp_set(it, "nope", DT_F32, 1, DIMS(2), v, err, sizeof err));
  assert_string_equal(err, "no input or param named 'nope'");
  assert_false(interp_set(it, "x", DT_F32, IR_MAX_RANK + 1, DIMS(2), v, err, sizeof err));
  assert_string_equal(err, "input 'x' expects f32[2,3], got an invalid dtype or rank");
  assert_null(interp_output(it, "nope"));
}

/* A graph built node by node, without the frontend. */
static void test_programmatic_graph(void **state) {
  (void)state;
  Loc loc = {"api", 0, 0};
  char msg[256];
  g = ir_graph_new("api");
  Node *x = ir_node_new(g, OP_INPUT, NULL, 0, loc);
  x->name = "x";
  x->type = ir_type(DT_F64, 2, DIMS(2, 2));
  assert_true(ir_infer_type(x, msg, sizeof msg));
  Node *s = ir_node_new(g, OP_SUM, &x, 1, loc);
  ir_set_attr_ints(s, "axes", DIMS(0), 1);
  ir_set_attr_int(s, "keepdim", 0);
  assert_true(ir_infer_type(s, msg, sizeof msg));
  Node *p = ir_node_new(g, OP_POW, &s, 1, loc);
  ir_set_attr_float(p, "exponent", -1);
  assert_true(ir_infer_type(p, msg, sizeof msg));
  ir_add_output(g, "inv", p);
  it = interp_new(g);
  char err[128];
  assert_true(interp_set(it, "x", DT_F64, 2, DIMS(2, 2), (double[]){1, 2, 3, 0}, err, sizeof err));
  run();
  expect_node(out("inv"), D(0.25, 0.5), TOL64);
}

/* ---- A transformer-sized forward pass ----------------------------------- */

/* Deterministic values in [-1, 1). */
static double lcg(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) / (double)(1ULL << 52) - 1.0;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* Binds every param from its init name: ones, zeros, else small noise. */
static void bind_params(uint64_t *seed) {
  char err[256];
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_PARAM) continue;
    const char *init = ir_attr_c(n, "init")->s;
    int64_t count = ir_type_numel(&n->type);
    float *v = malloc((size_t)count * sizeof *v);
    for (int64_t k = 0; k < count; k++)
      v[k] = strcmp(init, "ones") == 0    ? 1.0f
             : strcmp(init, "zeros") == 0 ? 0.0f
                                          : (float)(0.02 * lcg(seed));
    assert_true(interp_set(it, n->name, DT_F32, n->type.rank, n->type.dims, v, err, sizeof err));
    free(v);
  }
}

static void test_transformer_forward(void **state) {
  (void)state;
  size_t len;
  char *src = read_file(KILN_SOURCE_DIR "/models/transformer.kl", &len);
  load(src);
  uint64_t seed = 42;
  bind_params(&seed);
  int32_t ids[16 * 64], targets[16 * 64];
  for (int i = 0; i < 16 * 64; i++) {
    ids[i] = (int32_t)((lcg(&seed) + 1) * 128);
    targets[i] = (int32_t)((lcg(&seed) + 1) * 128);
  }
  set_i32("ids", 2, DIMS(16, 64), ids);
  set_i32("targets", 2, DIMS(16, 64), targets);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  run();
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  print_message("transformer forward (batch 16, seq 64, d 128): %.3f s\n", secs);
  /* Small weights: logits near 0, so the loss is near log(256). */
  double loss = value_at(g->loss, 0);
  assert_true(fabs(loss - log(256)) < 0.1);
  free(src);
}

/* Every example model runs end to end at batch 2 with small weights: ids and
 * labels 0, float inputs noise; every output and the loss come out finite. */
static void test_every_model(void **state) {
  (void)state;
  const char *models[] = {"mlp", "regression", "cnn", "textcls", "transformer"};
  for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/%s.kl", KILN_SOURCE_DIR, models[m]);
    size_t len;
    char *src = read_file(path, &len);
    g = build_with(src, (Define[]){{"batch", 2}}, 1);
    it = interp_new(g);
    assert_non_null(it);
    uint64_t seed = 7;
    bind_params(&seed);
    char err[256];
    for (int i = 0; i < g->nnodes; i++) {
      const Node *n = g->nodes[i];
      if (n->op != OP_INPUT) continue;
      int64_t count = ir_type_numel(&n->type);
      float *v = calloc((size_t)count, sizeof(float)); /* i32 zeros are the same bytes */
      for (int64_t k = 0; n->type.dtype == DT_F32 && k < count; k++) v[k] = (float)lcg(&seed);
      assert_true(
          interp_set(it, n->name, n->type.dtype, n->type.rank, n->type.dims, v, err, sizeof err));
      free(v);
    }
    run();
    for (int k = 0; k < g->noutputs; k++)
      for (int64_t i = 0; i < ir_type_numel(&g->outputs[k].node->type); i++)
        assert_true(isfinite(value_at(g->outputs[k].node, i)));
    assert_true(isfinite(value_at(g->loss, 0)));
    free(src);
    teardown(NULL);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_unary, teardown),
      cmocka_unit_test_teardown(test_binary_broadcast, teardown),
      cmocka_unit_test_teardown(test_nan_propagates, teardown),
      cmocka_unit_test_teardown(test_matmul, teardown),
      cmocka_unit_test_teardown(test_conv2d, teardown),
      cmocka_unit_test_teardown(test_lstm, teardown),
      cmocka_unit_test_teardown(test_reductions, teardown),
      cmocka_unit_test_teardown(test_softmax, teardown),
      cmocka_unit_test_teardown(test_layer_norm, teardown),
      cmocka_unit_test_teardown(test_pooling, teardown),
      cmocka_unit_test_teardown(test_movement, teardown),
      cmocka_unit_test_teardown(test_embedding_and_i32_movement, teardown),
      cmocka_unit_test_teardown(test_causal_mask, teardown),
      cmocka_unit_test_teardown(test_losses, teardown),
      cmocka_unit_test_teardown(test_const_and_rerun, teardown),
      cmocka_unit_test_teardown(test_promote_f64, teardown),
      cmocka_unit_test_teardown(test_f64_keeps_precision, teardown),
      cmocka_unit_test_teardown(test_run_errors, teardown),
      cmocka_unit_test_teardown(test_set_errors, teardown),
      cmocka_unit_test_teardown(test_programmatic_graph, teardown),
      cmocka_unit_test_teardown(test_transformer_forward, teardown),
      cmocka_unit_test_teardown(test_every_model, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
