/* test_build.c - graph construction from .kl sources: ops, types, names, and located errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build.h"

/* ---- Helpers ------------------------------------------------------------- */

/* Parses src (which must parse), builds it, and frees the AST: the graph
 * must not point into it. Diagnostics land in *err (malloc'd). */
static Graph *build_defs(const char *src, const Define *defs, int ndefs, char **err) {
  Arena a = {0};
  Ast ast;
  Diag d;
  size_t len = 0;
  diag_init(&d, "t.kl", src, strlen(src));
  d.out = open_memstream(err, &len);
  assert_non_null(d.out);
  bool parsed = parse_file(&ast, &a, &d, src, strlen(src));
  Graph *g = parsed ? build_graph(&ast, defs, ndefs, &d) : NULL;
  fclose(d.out);
  arena_free(&a);
  if (!parsed) fail_msg("does not parse: %s", *err);
  return g;
}

/* Builds src, which must succeed. */
static Graph *build_ok(const char *src) {
  char *err = NULL;
  Graph *g = build_defs(src, NULL, 0, &err);
  if (!g) fail_msg("build failed:\n%s", err);
  free(err);
  return g;
}

/* Builds src, which must fail with want somewhere in its diagnostics. */
static void expect_error_defs(const char *src, const Define *defs, int ndefs, const char *want) {
  char *err = NULL;
  Graph *g = build_defs(src, defs, ndefs, &err);
  if (g) {
    ir_graph_free(g);
    free(err);
    fail_msg("built, but expected an error containing: %s", want);
  }
  if (!strstr(err, want)) fail_msg("expected: %s\ngot:\n%s", want, err);
  free(err);
}

static void expect_error(const char *src, const char *want) {
  expect_error_defs(src, NULL, 0, want);
}

/* The last node bound to name (node names are unique in these tests). */
static Node *named(const Graph *g, const char *name) {
  for (int i = g->nnodes - 1; i >= 0; i--)
    if (g->nodes[i]->name && strcmp(g->nodes[i]->name, name) == 0) return g->nodes[i];
  fail_msg("no node named %s", name);
  return NULL;
}

static Node *output(const Graph *g, const char *name) {
  for (int i = 0; i < g->noutputs; i++)
    if (strcmp(g->outputs[i].name, name) == 0) return g->outputs[i].node;
  fail_msg("no output %s", name);
  return NULL;
}

static void assert_type(const Node *n, const char *want) {
  char buf[IR_TYPE_STR_MAX];
  assert_string_equal(ir_type_str(&n->type, buf, sizeof buf), want);
}

static void assert_ints(const Node *n, const char *attr, int count, const int64_t *want) {
  const AttrVal *v = ir_attr_c(n, attr);
  assert_int_equal(v->n, count);
  for (int i = 0; i < count; i++) assert_int_equal(v->i[i], want[i]);
}

#define INTS(...)                                                                                  \
  (int64_t[]) { __VA_ARGS__ }
#define NINTS(...)                ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define ASSERT_INTS(n, attr, ...) assert_ints(n, attr, NINTS(__VA_ARGS__), INTS(__VA_ARGS__))

static int count_op(const Graph *g, OpKind op) {
  int k = 0;
  for (int i = 0; i < g->nnodes; i++) k += g->nodes[i]->op == op;
  return k;
}

/* ---- Whole models -------------------------------------------------------- */

static const char *mlp_src = "# A three-layer perceptron for 28x28 images.\n"
                             "model mlp(batch = 128, hidden = 512) {\n"
                             "  input  x: f32[batch, 784]\n"
                             "  input  y: i32[batch]\n"
                             "  param  w1: f32[784, hidden] = glorot\n"
                             "  param  b1: f32[hidden]      = zeros\n"
                             "  param  w2: f32[hidden, 10]  = glorot\n"
                             "  param  b2: f32[10]          = zeros\n"
                             "  h      = relu(x @ w1 + b1)\n"
                             "  logits = h @ w2 + b2\n"
                             "  loss   = cross_entropy(logits, y)\n"
                             "  output logits\n"
                             "  train loss with sgd(lr = 0.01, momentum = 0.9)\n"
                             "}\n";

static void test_mlp(void **state) {
  (void)state;
  Graph *g = build_ok(mlp_src);
  assert_string_equal(g->name, "mlp");
  assert_int_equal(g->nsizes, 2);
  assert_string_equal(g->sizes[0].name, "batch");
  assert_int_equal(g->sizes[0].value, 128);
  assert_string_equal(g->sizes[1].name, "hidden");
  assert_int_equal(g->sizes[1].value, 512);
  Node *h = named(g, "h");
  assert_int_equal(h->op, OP_RELU);
  assert_type(h, "f32[128,512]");
  assert_int_equal(h->in[0]->op, OP_ADD);
  assert_int_equal(h->in[0]->in[0]->op, OP_MATMUL);
  assert_int_equal(h->loc.line, 9);
  assert_int_equal(h->loc.col, 12);
  assert_string_equal(h->loc.file, "t.kl");
  Node *logits = output(g, "logits");
  assert_type(logits, "f32[128,10]");
  assert_string_equal(logits->name, "logits");
  assert_int_equal(g->loss->op, OP_CROSS_ENTROPY);
  assert_type(g->loss, "f32[]");
  assert_int_equal(g->optim.kind, OPTIM_SGD);
  assert_true(g->optim.lr == 0.01);
  assert_true(g->optim.momentum == 0.9);
  assert_true(g->optim.weight_decay == 0);
  assert_int_equal(g->train_loc.line, 13);
  Node *w1 = ir_find_param(g, "w1");
  assert_non_null(w1);
  assert_type(w1, "f32[784,512]");
  assert_string_equal(ir_attr_c(w1, "init")->s, "glorot");
  assert_int_equal(ir_attr_c(w1, "args")->n, 0);
  assert_type(ir_find_input(g, "y"), "i32[128]");
  ir_graph_free(g);
}

static void test_fn_inline(void **state) {
  (void)state;
  Graph *g = build_ok("fn linear(x, n_in, n_out) {\n"
                      "  param w: f32[n_in, n_out] = glorot\n"
                      "  param b: f32[n_out] = zeros\n"
                      "  y = x @ w\n"
                      "  return y + b\n"
                      "}\n"
                      "model mlp2(batch = 32) {\n"
                      "  input x: f32[batch, 784]\n"
                      "  fc1 = linear(x, 784, 256)\n"
                      "  h = relu(fc1)\n"
                      "  fc2 = linear(h, 256, 10)\n"
                      "  output fc2\n"
                      "}\n");
  assert_type(ir_find_param(g, "fc1.w"), "f32[784,256]");
  assert_type(ir_find_param(g, "fc1.b"), "f32[256]");
  assert_type(ir_find_param(g, "fc2.w"), "f32[256,10]");
  assert_null(ir_find_param(g, "w"));
  assert_type(named(g, "fc1.y"), "f32[32,256]");
  assert_int_equal(named(g, "fc1")->op, OP_ADD);
  Node *out = output(g, "fc2");
  assert_type(out, "f32[32,10]");
  assert_string_equal(out->name, "fc2");
  assert_int_equal(count_op(g, OP_MATMUL), 2);
  ir_graph_free(g);
}

static void test_fn_nested(void **state) {
  (void)state;
  Graph *g = build_ok("fn inner(x, n) {\n"
                      "  param w: f32[n, n] = he\n"
                      "  return x @ w\n"
                      "}\n"
                      "fn outer(x, n) {\n"
                      "  inner = inner(x, n)\n"
                      "  h = tanh(inner)\n"
                      "  return h\n"
                      "}\n"
                      "fn double(x) { return x * 2 }\n"
                      "model m {\n"
                      "  input x: f32[3, 4]\n"
                      "  outer = outer(x, 4)\n"
                      "  y = double(outer)\n"
                      "  z = double(double(y))\n"
                      "  output outer, z\n"
                      "}\n");
  assert_type(ir_find_param(g, "outer.inner.w"), "f32[4,4]");
  assert_string_equal(ir_attr_c(ir_find_param(g, "outer.inner.w"), "init")->s, "he");
  /* The fn's result kept the name it got inside the call. */
  assert_string_equal(output(g, "outer")->name, "outer.h");
  assert_int_equal(named(g, "outer.inner")->op, OP_MATMUL);
  assert_int_equal(output(g, "z")->op, OP_MUL);
  ir_graph_free(g);
}

/* A fn's integer arguments and computed integers size its params and ops. */
static void test_fn_int_args(void **state) {
  (void)state;
  Graph *g = build_ok("fn heads(x, b, t, h, d) {\n"
                      "  return reshape(x, [b, t, h, d / h])\n"
                      "}\n"
                      "model m(b = 2, t = 5) {\n"
                      "  input x: f32[b, t, 64]\n"
                      "  n = 4\n"
                      "  y = heads(x, b, t, n, 64)\n"
                      "  output y\n"
                      "}\n");
  assert_type(output(g, "y"), "f32[2,5,4,16]");
  ir_graph_free(g);
}

/* ---- Expressions ------------------------------------------------------------ */

static void test_constants(void **state) {
  (void)state;
  Graph *g = build_ok("model m {\n"
                      "  input x: f32[4]\n"
                      "  input d: f64[2, 4]\n"
                      "  a = x * 2 + 1.5\n"
                      "  b = 1 / x\n"
                      "  c = d - (3 - 1) * 2\n"
                      "  e = -x\n"
                      "  f = maximum(x, 0)\n"
                      "  output a, b, c, e, f\n"
                      "}\n");
  Node *a = output(g, "a");
  assert_int_equal(a->op, OP_ADD);
  assert_int_equal(a->in[1]->op, OP_CONST);
  assert_type(a->in[1], "f32[]");
  assert_true(ir_attr_float(a->in[1], "value") == 1.5);
  assert_true(ir_attr_float(a->in[0]->in[1], "value") == 2);
  Node *b = output(g, "b");
  assert_int_equal(b->op, OP_DIV);
  assert_int_equal(b->in[0]->op, OP_CONST);
  Node *c = output(g, "c");
  assert_type(c, "f64[2,4]");
  assert_type(c->in[1], "f64[]");
  assert_true(ir_attr_float(c->in[1], "value") == 4); /* (3 - 1) * 2 folded */
  assert_int_equal(output(g, "e")->op, OP_NEG);
  Node *f = output(g, "f");
  assert_int_equal(f->op, OP_MAXIMUM);
  assert_true(ir_attr_float(f->in[1], "value") == 0);
  ir_graph_free(g);
}

/* Integers stay integers (exact division too) and size types. */
static void test_int_values(void **state) {
  (void)state;
  Graph *g = build_ok("model m(n = 6) {\n"
                      "  k = n / 3 * 2 - -1\n"
                      "  input x: f32[k, n / 2]\n"
                      "  y = pow(x, n / 4)\n"
                      "  output y\n"
                      "}\n");
  assert_type(output(g, "y"), "f32[5,3]");
  assert_true(ir_attr_float(output(g, "y"), "exponent") == 1.5);
  ir_graph_free(g);
}

static void test_indexing(void **state) {
  (void)state;
  Graph *g = build_ok("model m {\n"
                      "  input x: f32[4, 5, 6]\n"
                      "  input v: f32[8, 3]\n"
                      "  a = x[:, -1, :]\n"
                      "  b = x[0]\n"
                      "  c = v[2:5]\n"
                      "  d = x[:, :-1]\n"
                      "  e = x[:]\n"
                      "  f = v[-100:100, 1:]\n"
                      "  output a, b, c, d, e, f\n"
                      "}\n");
  Node *a = output(g, "a");
  assert_int_equal(a->op, OP_RESHAPE);
  assert_type(a, "f32[4,6]");
  assert_int_equal(a->in[0]->op, OP_SLICE);
  ASSERT_INTS(a->in[0], "begin", 0, 4, 0);
  ASSERT_INTS(a->in[0], "end", 4, 5, 6);
  Node *b = output(g, "b");
  assert_type(b, "f32[5,6]");
  ASSERT_INTS(b->in[0], "begin", 0, 0, 0);
  ASSERT_INTS(b->in[0], "end", 1, 5, 6);
  Node *c = output(g, "c");
  assert_int_equal(c->op, OP_SLICE);
  assert_type(c, "f32[3,3]");
  ASSERT_INTS(c, "begin", 2, 0);
  ASSERT_INTS(c, "end", 5, 3);
  Node *d = output(g, "d");
  assert_type(d, "f32[4,4,6]");
  ASSERT_INTS(d, "end", 4, 4, 6);
  assert_int_equal(output(g, "e")->op, OP_INPUT); /* selects everything: no node */
  Node *f = output(g, "f");
  ASSERT_INTS(f, "begin", 0, 1);
  assert_type(f, "f32[8,2]");
  ir_graph_free(g);
}

static void test_reductions(void **state) {
  (void)state;
  Graph *g = build_ok("model m {\n"
                      "  input x: f32[4, 5, 6]\n"
                      "  a = sum(x, axis=-1)\n"
                      "  b = mean(x, axis=[-1, 0], keepdim=true)\n"
                      "  c = max(x)\n"
                      "  d = sum(x, -2, true)\n"
                      "  e = softmax(x)\n"
                      "  f = log_softmax(x, axis=-3)\n"
                      "  output a, b, c, d, e, f\n"
                      "}\n");
  Node *a = output(g, "a");
  assert_int_equal(a->op, OP_SUM);
  ASSERT_INTS(a, "axes", 2);
  assert_int_equal(ir_attr_int(a, "keepdim"), 0);
  assert_type(a, "f32[4,5]");
  Node *b = output(g, "b");
  assert_int_equal(b->op, OP_MEAN);
  ASSERT_INTS(b, "axes", 0, 2);
  assert_type(b, "f32[1,5,1]");
  Node *c = output(g, "c");
  assert_int_equal(c->op, OP_MAX);
  ASSERT_INTS(c, "axes", 0, 1, 2);
  assert_type(c, "f32[]");
  assert_type(output(g, "d"), "f32[4,1,6]");
  assert_int_equal(ir_attr_int(output(g, "e"), "axis"), 2);
  assert_int_equal(ir_attr_int(output(g, "f"), "axis"), 0);
  ir_graph_free(g);
}

static void test_data_movement(void **state) {
  (void)state;
  Graph *g = build_ok("model m(b = 4) {\n"
                      "  input x: f32[b, 5, 6]\n"
                      "  input y: f32[b, 5, 2]\n"
                      "  r1 = reshape(x, [-1, 6])\n"
                      "  r2 = reshape(x, shape=[b, -1])\n"
                      "  f1 = flatten(x)\n"
                      "  f0 = flatten(x, start=0)\n"
                      "  t = transpose(x, 0, -1)\n"
                      "  p = permute(x, [1, 2, 0])\n"
                      "  c = concat([x, y, x], axis=-1)\n"
                      "  c0 = concat([x, x])\n"
                      "  output r1, r2, f1, f0, t, p, c, c0\n"
                      "}\n");
  assert_type(output(g, "r1"), "f32[20,6]");
  assert_int_equal(output(g, "r1")->op, OP_RESHAPE);
  assert_type(output(g, "r2"), "f32[4,30]");
  assert_type(output(g, "f1"), "f32[4,30]");
  assert_int_equal(output(g, "f1")->op, OP_RESHAPE);
  assert_type(output(g, "f0"), "f32[120]");
  Node *t = output(g, "t");
  assert_int_equal(t->op, OP_PERMUTE);
  ASSERT_INTS(t, "perm", 2, 1, 0);
  assert_type(t, "f32[6,5,4]");
  ASSERT_INTS(output(g, "p"), "perm", 1, 2, 0);
  assert_type(output(g, "p"), "f32[5,6,4]");
  Node *c = output(g, "c");
  assert_int_equal(c->op, OP_CONCAT);
  assert_int_equal(c->nin, 3);
  assert_int_equal(ir_attr_int(c, "axis"), 2);
  assert_type(c, "f32[4,5,14]");
  assert_type(output(g, "c0"), "f32[8,5,6]");
  ir_graph_free(g);
}

static void test_layers(void **state) {
  (void)state;
  Graph *g = build_ok("model m(t = 7) {\n"
                      "  input img: f32[2, 3, 8, 8]\n"
                      "  param k: f32[4, 3, 3, 3] = he\n"
                      "  param kb: f32[4] = constant(0.1)\n"
                      "  c1 = conv2d(img, k)\n"
                      "  c2 = conv2d(img, k, kb, stride=2, padding=1)\n"
                      "  p1 = max_pool2d(c1, 2)\n"
                      "  p2 = avg_pool2d(c1, k=3, stride=1)\n"
                      "  input ids: i32[2, t]\n"
                      "  param table: f32[10, 16] = normal(0.02)\n"
                      "  param g: f32[16] = ones\n"
                      "  param be: f32[16] = normal(1, 2)\n"
                      "  e = embedding(ids, table)\n"
                      "  n = layer_norm(e, g, be)\n"
                      "  param wih: f32[32, 16] = uniform(-0.1, 0.1)\n"
                      "  param whh: f32[32, 8] = zeros\n"
                      "  param bih: f32[32] = zeros\n"
                      "  param bhh: f32[32] = zeros\n"
                      "  l = lstm(n, wih, whh, bih, bhh)\n"
                      "  mask = causal_mask(t)\n"
                      "  s = relu(x=n) + gelu(n) * silu(n)\n"
                      "  output c1, c2, p1, p2, n, l, mask, s\n"
                      "}\n");
  Node *c1 = output(g, "c1");
  assert_int_equal(c1->nin, 2);
  assert_type(c1, "f32[2,4,6,6]");
  assert_int_equal(ir_attr_int(c1, "stride"), 1);
  Node *c2 = output(g, "c2");
  assert_int_equal(c2->nin, 3);
  assert_int_equal(ir_attr_int(c2, "padding"), 1);
  assert_type(c2, "f32[2,4,4,4]");
  assert_int_equal(ir_attr_int(output(g, "p1"), "stride"), 2);
  assert_type(output(g, "p1"), "f32[2,4,3,3]");
  assert_int_equal(ir_attr_int(output(g, "p2"), "kernel"), 3);
  assert_type(output(g, "p2"), "f32[2,4,4,4]");
  assert_true(ir_attr_float(output(g, "n"), "eps") == 1e-5);
  assert_type(output(g, "l"), "f32[2,7,8]");
  assert_int_equal(output(g, "mask")->op, OP_CAUSAL_MASK);
  assert_type(output(g, "mask"), "f32[7,7]");
  const AttrVal *args = ir_attr_c(ir_find_param(g, "table"), "args");
  assert_int_equal(args->n, 2);
  assert_true(args->f[0] == 0 && args->f[1] == 0.02);
  args = ir_attr_c(ir_find_param(g, "be"), "args");
  assert_true(args->f[0] == 1 && args->f[1] == 2);
  args = ir_attr_c(ir_find_param(g, "wih"), "args");
  assert_true(args->n == 2 && args->f[0] == -0.1 && args->f[1] == 0.1);
  assert_true(ir_attr_c(ir_find_param(g, "kb"), "args")->f[0] == 0.1);
  assert_string_equal(ir_attr_c(ir_find_param(g, "kb"), "init")->s, "constant");
  ir_graph_free(g);
}

/* ---- train ------------------------------------------------------------------ */

static void test_train_defaults(void **state) {
  (void)state;
  const char *fmt = "model m {\n"
                    "  input x: f32[3]\n"
                    "  param w: f32[3] = ones\n"
                    "  loss = mse_loss(x * w, x)\n"
                    "  train loss with %s\n"
                    "}\n";
  char src[512];
  snprintf(src, sizeof src, fmt, "sgd(0.1)");
  Graph *g = build_ok(src);
  assert_int_equal(g->optim.kind, OPTIM_SGD);
  assert_true(g->optim.lr == 0.1 && g->optim.momentum == 0 && g->optim.weight_decay == 0);
  assert_int_equal(g->noutputs, 0);
  ir_graph_free(g);
  snprintf(src, sizeof src, fmt, "adam(lr=1e-3)");
  g = build_ok(src);
  assert_int_equal(g->optim.kind, OPTIM_ADAM);
  assert_true(g->optim.lr == 1e-3 && g->optim.beta1 == 0.9 && g->optim.beta2 == 0.999);
  assert_true(g->optim.eps == 1e-8 && g->optim.weight_decay == 0);
  ir_graph_free(g);
  snprintf(src, sizeof src, fmt, "adam(0.01, 0.8, eps=1e-6, weight_decay=1)");
  g = build_ok(src);
  assert_true(g->optim.beta1 == 0.8 && g->optim.beta2 == 0.999);
  assert_true(g->optim.eps == 1e-6 && g->optim.weight_decay == 1);
  ir_graph_free(g);
}

/* ---- Errors ------------------------------------------------------------------ */

static void test_error_names(void **state) {
  (void)state;
  expect_error("model m {\n  input x: f32[3]\n  y = relu(z)\n  output y\n}\n",
               "t.kl:3:12: error: unknown name 'z'\n");
  expect_error("model m {\n  input hidden: f32[3]\n  output hiden\n}\n",
               "t.kl:3:10: error: unknown name 'hiden'; did you mean 'hidden'?");
  expect_error("model m {\n  input x: f32[3]\n  y = reluu(x)\n  output y\n}\n",
               "t.kl:3:7: error: unknown function 'reluu'; did you mean 'relu'?");
  expect_error("model m {\n  input x: f32[3]\n  y = frobnicate(x)\n  output y\n}\n",
               "t.kl:3:7: error: unknown function 'frobnicate'\n");
  expect_error("model m {\n  input x: f32[3]\n  y = x(1)\n  output y\n}\n",
               "t.kl:3:7: error: 'x' is a tensor f32[3], not a function");
  expect_error("model m {\n  input x: f32[3]\n  y = relu\n  output y\n}\n",
               "t.kl:3:7: error: 'relu' is a function; call it: relu(...)");
  expect_error("fn f(x) { return x * batch }\n"
               "model m(batch = 2) {\n  input x: f32[3]\n  y = f(x)\n  output y\n}\n",
               "t.kl:1:22: error: unknown name 'batch' (fn 'f' sees only its arguments");
}

static void test_error_rebind(void **state) {
  (void)state;
  const char *src = "model m(n = 3) {\n"
                    "  input x: f32[n]\n"
                    "  h = relu(x)\n"
                    "  h = x\n"
                    "  output h\n"
                    "}\n";
  expect_error(src, "t.kl:4:3: error: 'h' is already bound; a name is bound once per scope");
  expect_error(src, "t.kl:3:3: note: 'h' was bound here");
  expect_error("model m(n = 3) {\n  input n: f32[3]\n  output n\n}\n",
               "t.kl:1:9: note: 'n' was bound here");
}

static void test_error_args(void **state) {
  (void)state;
  const char *head = "model m {\n  input x: f32[3, 4]\n  y = ";
  struct {
    const char *expr, *want;
  } cases[] = {
      {"relu(x, x)", "t.kl:3:15: error: relu takes 1 argument, got 2"},
      {"sum()", "t.kl:3:7: error: sum takes 1 to 3 arguments, got 0"},
      {"pow(x)", "t.kl:3:7: error: pow takes 2 arguments, got 1"},
      {"sum(axis=1)", "t.kl:3:7: error: missing argument 'x' of sum"},
      {"sum(x, axis=1.5)", "t.kl:3:14: error: argument 'axis' of sum must be an integer or a "
                           "non-empty list of integers, got the number 1.5"},
      {"relu(3)", "argument 'x' of relu must be a tensor, got the integer 3"},
      {"sum(x, keepdim=1)", "argument 'keepdim' of sum must be true or false, got the integer 1"},
      {"concat([x, 1])", "argument 'tensors' of concat must be a non-empty list of tensors"},
      {"sum(x, axs=1)", "t.kl:3:14: error: unknown keyword argument 'axs' of sum; did you mean "
                        "'axis'?"},
      {"relu(y=x)", "unknown keyword argument 'y' of relu\n"},
      {"sum(x, 0, axis=1)", "t.kl:3:17: error: argument 'axis' of sum is given twice"},
      {"max_pool2d(x, 0)", "argument 'k' of max_pool2d must be >= 1, got 0"},
      {"sum(x, axis=2)", "axis 2 is out of range for f32[3,4] (expected -2..1)"},
      {"sum(x, axis=[0, -2])", "axis -2 is repeated"},
      {"reshape(x, [5, -1])", "cannot reshape f32[3,4] (12 elements) to [5, -1]"},
      {"reshape(x, [-1, -1])", "only one dimension of a reshape can be -1"},
      {"reshape(x, [2, 2])", "cannot reshape f32[3,4] (12 elements) to [2, 2]"},
      {"permute(x, [0, 0])", "axis 0 is repeated"},
      {"permute(x, [0])", "permute of f32[3,4] needs 2 axes, got 1"},
      {"x @ 2", "t.kl:3:9: error: operands of '@' must be tensors, got the integer 2"},
      {"x + true", "operand of '+' must be a tensor or a number, got true"},
      {"x * (1 / 0)", "t.kl:3:14: error: division by zero"},
      {"x * (9223372036854775807 + 1)", "integer overflow in 9223372036854775807 + 1"},
      {"x[3]", "t.kl:3:9: error: index 3 is out of bounds for dimension 0 with size 3"},
      {"x[:, 4:]", "t.kl:3:12: error: slice 4: of dimension 1 with size 4 is empty"},
      {"x[0, 0, 0]", "t.kl:3:8: error: too many indices for a tensor f32[3,4]: 3"},
      {"x[x]", "an index must be an integer, got a tensor f32[3,4]"},
      {"causal_mask(2000000)", "tensor f32[2000000,2000000] has too many elements"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char src[256];
    snprintf(src, sizeof src, "%s%s\n  output y\n}\n", head, cases[i].expr);
    expect_error(src, cases[i].want);
  }
}

/* Shape rules report through the builder, at the operator. */
static void test_error_shapes(void **state) {
  (void)state;
  expect_error("model m {\n  input x: f32[128, 784]\n  param b: f32[512] = zeros\n"
               "  y = x + b\n  output y\n}\n",
               "t.kl:4:9: error: add: cannot broadcast f32[128,784] with f32[512]");
  expect_error("model m {\n  input x: f32[2, 3]\n  y = x @ x\n  output y\n}\n",
               "t.kl:3:9: error: matmul: inner dimensions differ: f32[2,3] @ f32[2,3]");
}

static void test_error_fns(void **state) {
  (void)state;
  const char *linear = "fn linear(x, n_in, n_out) {\n"
                       "  param w: f32[n_in, n_out] = glorot\n"
                       "  return x @ w\n"
                       "}\n";
  char src[512];
  snprintf(src, sizeof src,
           "%smodel m {\n  input x: f32[2, 784]\n  y = relu(linear(x, 784, 10))\n"
           "  output y\n}\n",
           linear);
  expect_error(src, "t.kl:7:12: error: call of 'linear' declares params; bind it: NAME = "
                    "linear(...)");
  expect_error(src, "t.kl:2:3: note: param 'w' is declared here");
  snprintf(src, sizeof src,
           "%sfn two(x) {\n  a = linear(x, 784, 10)\n  return a\n}\n"
           "model m {\n  input x: f32[2, 784]\n  y = two(x) * 2\n  output y\n}\n",
           linear);
  expect_error(src, "t.kl:11:7: error: call of 'two' declares params");
  snprintf(src, sizeof src, "%smodel m {\n  input x: f32[2, 784]\n  y = linear(x, 784)\n}\n",
           linear);
  expect_error(src, "t.kl:7:7: error: fn 'linear' takes 3 arguments, got 2");
  expect_error("fn f(x) { return f(x) }\nmodel m {\n  input x: f32[3]\n  y = f(x)\n"
               "  output y\n}\n",
               "t.kl:1:18: error: recursive call of 'f'");
  expect_error("fn f(x) { return g(x) }\nfn g(x) { return relu(f(x)) }\n"
               "model m {\n  input x: f32[3]\n  y = f(x)\n  output y\n}\n",
               "t.kl:2:23: error: recursive call of 'f'");
  expect_error("fn f(x) {\n  output x\n  return x\n}\nmodel m {\n  input x: f32[3]\n"
               "  y = f(x)\n  output y\n}\n",
               "t.kl:2:3: error: output cannot appear in fn 'f'");
  expect_error("fn f(x) {\n  input z: f32[3]\n  return z\n}\nmodel m {\n  input x: f32[3]\n"
               "  y = f(x)\n  output y\n}\n",
               "error: input cannot appear in fn 'f'; pass the value as an argument");
  expect_error("fn f(x) { return x }\nmodel m {\n  input x: f32[3]\n  y = f(x=x)\n"
               "  output y\n}\n",
               "t.kl:4:9: error: fn 'f' takes positional arguments only");
}

static void test_error_statements(void **state) {
  (void)state;
  const char *loss = "model m {\n  input x: f32[128]\n  loss = x * 2\n"
                     "  train loss with sgd(lr=0.1)\n}\n";
  expect_error(loss, "t.kl:4:9: error: loss must be a scalar f32[], got f32[128]");
  expect_error("model m {\n  input x: f32[3]\n}\n",
               "t.kl:1:7: error: model has no output and no train statement");
  expect_error("model m {\n  n = 3\n  output n\n}\n",
               "t.kl:3:10: error: output 'n' must be a tensor, got the integer 3");
  expect_error("model m {\n  input x: f32[3]\n  output x, x\n}\n",
               "t.kl:3:13: error: 'x' is already an output");
  const char *base = "model m {\n  input x: f32[3]\n  loss = sum(x)\n  train loss with ";
  struct {
    const char *optim, *want;
  } cases[] = {
      {"sgdd(lr=1)", "unknown optimizer 'sgdd'; did you mean 'sgd'?"},
      {"sgd()", "sgd takes 1 to 3 arguments, got 0"},
      {"sgd(momentum=0.9)", "missing argument 'lr' of sgd"},
      {"sgd(lr=1, nesterov=true)", "unknown keyword argument 'nesterov' of sgd"},
      {"adam(lr=1, beta1=1)", "argument 'beta1' of adam must be in [0, 1), got 1"},
      {"sgd(lr=-1)", "argument 'lr' of sgd must be in [0, inf), got -1"},
      {"sgd(lr=x)", "argument 'lr' of sgd must be a number, got a tensor f32[3]"},
      {"sgd(1)\n  train loss with sgd(2)", "t.kl:5:3: error: a model has at most one train"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char src[256];
    snprintf(src, sizeof src, "%s%s\n}\n", base, cases[i].optim);
    expect_error(src, cases[i].want);
  }
}

static void test_error_params(void **state) {
  (void)state;
  const char *head = "model m {\n  param w: f32[3, 4] = ";
  struct {
    const char *init, *want;
  } cases[] = {
      {"glorrot", "t.kl:2:24: error: unknown init 'glorrot'; did you mean 'glorot'?"},
      {"constant", "constant takes 1 argument, got 0"},
      {"normal(1, 2, 3)", "normal takes 1 to 2 arguments, got 3"},
      {"uniform(1)", "uniform takes 2 arguments, got 1"},
      {"uniform(1, 0)", "uniform needs lo <= hi, got 1 > 0"},
      {"normal(-1)", "argument 'std' of normal must be >= 0, got -1"},
      {"zeros(1)", "zeros takes 0 arguments, got 1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char src[256];
    snprintf(src, sizeof src, "%s%s\n  output w\n}\n", head, cases[i].init);
    expect_error(src, cases[i].want);
  }
  expect_error("model m {\n  param b: f32[4] = glorot\n  output b\n}\n",
               "glorot needs a param of rank >= 2 (fan-in and fan-out), got f32[4]");
  expect_error("model m {\n  param b: i32[4] = zeros\n  output b\n}\n",
               "param 'b' must be f32 or f64, got i32[4]");
}

static void test_error_defines(void **state) {
  (void)state;
  const char *src = "model mlp(batch = 2) {\n  input x: f32[batch]\n  output x\n}\n";
  Define foo = {"foo", 3}, zero = {"batch", 0};
  expect_error_defs(src, &foo, 1, "t.kl: error: model 'mlp' has no size parameter 'foo'\n");
  expect_error_defs(src, &zero, 1,
                    "t.kl: error: size parameter 'batch' must be >= 1, got 0 (from -D)");
}

/* Deep nesting through fns stops with an error, not the C stack. */
static void test_deep_calls(void **state) {
  (void)state;
  char src[8192];
  size_t at = 0;
  for (int i = 0; i < 70; i++)
    at +=
        (size_t)snprintf(src + at, sizeof src - at, "fn f%d(x) { return f%d(x) + 1 }\n", i, i + 1);
  snprintf(src + at, sizeof src - at,
           "fn f70(x) { return x }\nmodel m {\n  input x: f32[3]\n  y = f0(x)\n  output y\n}\n");
  expect_error(src, "fn calls nested deeper than 64");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp),
      cmocka_unit_test(test_fn_inline),
      cmocka_unit_test(test_fn_nested),
      cmocka_unit_test(test_fn_int_args),
      cmocka_unit_test(test_constants),
      cmocka_unit_test(test_int_values),
      cmocka_unit_test(test_indexing),
      cmocka_unit_test(test_reductions),
      cmocka_unit_test(test_data_movement),
      cmocka_unit_test(test_layers),
      cmocka_unit_test(test_train_defaults),
      cmocka_unit_test(test_error_names),
      cmocka_unit_test(test_error_rebind),
      cmocka_unit_test(test_error_args),
      cmocka_unit_test(test_error_shapes),
      cmocka_unit_test(test_error_fns),
      cmocka_unit_test(test_error_statements),
      cmocka_unit_test(test_error_params),
      cmocka_unit_test(test_error_defines),
      cmocka_unit_test(test_deep_calls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
