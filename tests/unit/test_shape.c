/* test_shape.c - types, graph editing, and every op's shape rule with its error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ir.h"

static Graph *g;
static const Loc loc = {"test.kl", 1, 1};

static int setup(void **state) {
  (void)state;
  g = ir_graph_new("test");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  ir_graph_free(g);
  g = NULL;
  return 0;
}

/* "f32[2,3]" -> a Type; "f32[]" is a scalar. */
static Type T(const char *spec) {
  DType dt;
  char name[4] = {spec[0], spec[1], spec[2], '\0'};
  assert_true(ir_dtype_lookup(name, &dt));
  int64_t dims[IR_MAX_RANK + 4];
  int rank = 0;
  for (const char *p = spec + 4; *p && *p != ']'; rank++) {
    char *end;
    dims[rank] = strtoll(p, &end, 10);
    p = *end == ',' ? end + 1 : end;
  }
  Type t = {.dtype = dt, .rank = rank};
  memcpy(t.dims, dims, sizeof(int64_t) * (size_t)(rank < IR_MAX_RANK ? rank : IR_MAX_RANK));
  return t;
}

/* An input node of the given type, checked by its own rule. */
static Node *X(const char *spec) {
  Node *n = ir_node_new(g, OP_INPUT, NULL, 0, loc);
  n->name = "x";
  n->type = T(spec);
  char msg[256];
  assert_true(ir_infer_type(n, msg, sizeof msg));
  return n;
}

static Node *mk(OpKind op, int nin, ...) {
  Node *in[8];
  va_list ap;
  va_start(ap, nin);
  for (int i = 0; i < nin; i++) in[i] = va_arg(ap, Node *);
  va_end(ap);
  return ir_node_new(g, op, in, nin, loc);
}

static void expect_type(Node *n, const char *want) {
  char msg[256], buf[IR_TYPE_STR_MAX];
  bool ok = ir_infer_type(n, msg, sizeof msg);
  if (!ok) print_error("unexpected error: %s\n", msg);
  assert_true(ok);
  assert_string_equal(ir_type_str(&n->type, buf, sizeof buf), want);
}

static void expect_error(Node *n, const char *want) {
  char msg[256];
  Type before = n->type;
  assert_false(ir_infer_type(n, msg, sizeof msg));
  assert_string_equal(msg, want);
  /* A failed rule leaves the type alone (bytes: it may be invalid). */
  assert_memory_equal(&n->type, &before, sizeof before);
}

static Node *unary(OpKind op, const char *spec) { return mk(op, 1, X(spec)); }
static Node *binary(OpKind op, const char *a, const char *b) { return mk(op, 2, X(a), X(b)); }

/* ---- Types -------------------------------------------------------------- */

static void test_types(void **state) {
  (void)state;
  char buf[IR_TYPE_STR_MAX];
  Type t = ir_type(DT_F32, 2, (int64_t[]){128, 784});
  assert_string_equal(ir_type_str(&t, buf, sizeof buf), "f32[128,784]");
  assert_int_equal(ir_type_numel(&t), 128 * 784);
  Type s = ir_type(DT_F64, 0, NULL);
  assert_string_equal(ir_type_str(&s, buf, sizeof buf), "f64[]");
  assert_int_equal(ir_type_numel(&s), 1);
  assert_false(ir_type_eq(&t, &s));
  Type t2 = T("f32[128,784]");
  assert_true(ir_type_eq(&t, &t2));
  t2.dtype = DT_I32;
  assert_false(ir_type_eq(&t, &t2));
  assert_string_equal(ir_type_str(&t, buf, 8), "f32[128"); /* truncates safely */
  DType dt;
  assert_true(ir_dtype_lookup("i32", &dt));
  assert_int_equal(dt, DT_I32);
  assert_false(ir_dtype_lookup("f16", &dt));
  assert_int_equal(ir_dtype_size(DT_F64), 8);
  assert_int_equal(ir_dtype_size(DT_I32), 4);
  assert_true(ir_dtype_is_float(DT_F32));
  assert_false(ir_dtype_is_float(DT_I32));
  assert_string_equal(ir_dtype_name(DT_F64), "f64");
}

static void test_broadcast_function(void **state) {
  (void)state;
  Type a = T("f32[8,1,6,1]"), b = T("f32[7,1,5]"), out;
  char buf[IR_TYPE_STR_MAX];
  assert_true(ir_broadcast(&a, &b, &out));
  assert_string_equal(ir_type_str(&out, buf, sizeof buf), "f32[8,7,6,5]");
  Type c = T("f32[]");
  assert_true(ir_broadcast(&c, &b, &out));
  assert_string_equal(ir_type_str(&out, buf, sizeof buf), "f32[7,1,5]");
  Type d = T("f32[3]"), e = T("f32[4]");
  assert_false(ir_broadcast(&d, &e, &out));
}

/* ---- Graph editing ------------------------------------------------------ */

static void test_nodes_and_users(void **state) {
  (void)state;
  Node *x = X("f32[4]"), *y = X("f32[4]");
  Node *a = mk(OP_ADD, 2, x, x);
  Node *m = mk(OP_MUL, 2, a, y);
  assert_int_equal(x->id, 0);
  assert_int_equal(m->id, 3);
  assert_int_equal(g->nnodes, 4);
  assert_int_equal(x->nusers, 2); /* one entry per use */
  assert_ptr_equal(x->users[0], a);
  ir_set_input(a, 1, y);
  assert_int_equal(x->nusers, 1);
  assert_int_equal(y->nusers, 2);
  assert_ptr_equal(a->in[1], y);
  /* Many users: the list grows past its first capacity. */
  for (int i = 0; i < 100; i++) mk(OP_RELU, 1, y);
  assert_int_equal(y->nusers, 102);
  assert_ptr_equal(y->users[0], m); /* in the order the uses were made */
  assert_ptr_equal(y->users[1], a);
}

static void test_replace_uses(void **state) {
  (void)state;
  Node *x = X("f32[4]"), *y = X("f32[4]");
  Node *a = mk(OP_ADD, 2, x, x), *r = mk(OP_RELU, 1, x);
  ir_add_output(g, "out", x);
  g->loss = x;
  ir_replace_uses(g, x, y);
  assert_int_equal(x->nusers, 0);
  assert_int_equal(y->nusers, 3);
  assert_ptr_equal(a->in[0], y);
  assert_ptr_equal(a->in[1], y);
  assert_ptr_equal(r->in[0], y);
  assert_ptr_equal(g->outputs[0].node, y);
  assert_string_equal(g->outputs[0].name, "out");
  assert_ptr_equal(g->loss, y);
}

static void test_remove_nodes(void **state) {
  (void)state;
  Node *x = X("f32[4]");
  Node *a = mk(OP_RELU, 1, x), *b = mk(OP_NEG, 1, a), *c = mk(OP_EXP, 1, x);
  bool dead[8] = {false};
  dead[a->id] = dead[b->id] = true;
  ir_remove_nodes(g, dead);
  assert_int_equal(g->nnodes, 2);
  assert_ptr_equal(g->nodes[0], x);
  assert_ptr_equal(g->nodes[1], c);
  assert_int_equal(x->nusers, 1);
  assert_ptr_equal(x->users[0], c);
}

static void test_topo_sort_stable(void **state) {
  (void)state;
  Node *x = X("f32[4]"), *y = X("f32[4]");
  Node *a = mk(OP_RELU, 1, x), *b = mk(OP_NEG, 1, y), *c = mk(OP_ADD, 2, a, b);
  /* Already sorted: nothing moves. */
  ir_topo_sort(g);
  Node *want1[] = {x, y, a, b, c};
  for (int i = 0; i < 5; i++) assert_ptr_equal(g->nodes[i], want1[i]);
  /* Move a behind c: a must come back before c, everything else stays. */
  g->nodes[2] = b;
  g->nodes[3] = c;
  g->nodes[4] = a;
  ir_topo_sort(g);
  Node *want2[] = {x, y, b, a, c};
  for (int i = 0; i < 5; i++) assert_ptr_equal(g->nodes[i], want2[i]);
  /* Reversed: every node still follows its inputs, inputs keep their order. */
  for (int i = 0; i < 5; i++) g->nodes[i] = want1[4 - i];
  ir_topo_sort(g);
  Node *want3[] = {y, b, x, a, c};
  for (int i = 0; i < 5; i++) assert_ptr_equal(g->nodes[i], want3[i]);
}

static void test_find_sources(void **state) {
  (void)state;
  Node *w = ir_node_new(g, OP_PARAM, NULL, 0, loc);
  w->name = "w";
  Node *x = ir_node_new(g, OP_INPUT, NULL, 0, loc);
  x->name = "x";
  assert_ptr_equal(ir_find_param(g, "w"), w);
  assert_null(ir_find_param(g, "x"));
  assert_ptr_equal(ir_find_input(g, "x"), x);
  assert_null(ir_find_input(g, "nope"));
  assert_string_equal(g->name, "test");
  for (int i = 0; i < 5; i++) ir_add_output(g, i % 2 ? "odd" : "even", i % 2 ? w : x);
  assert_int_equal(g->noutputs, 5);
  assert_ptr_equal(g->outputs[3].node, w);
  assert_string_equal(g->outputs[4].name, "even");
}

/* ---- Sources ------------------------------------------------------------ */

static void test_sources(void **state) {
  (void)state;
  X("f32[]");
  X("i32[1,2,3,4,5,6,7,8]");
  Node *x = ir_node_new(g, OP_INPUT, NULL, 0, loc);
  x->name = "x";
  x->type = T("f32[2,0]");
  expect_error(x, "input x: dim 1 of f32[2,0] is 0; every dim must be >= 1");
  x->type = T("f32[1048576,1048577]");
  expect_error(x, "input x: f32[1048576,1048577] has more than 1099511627776 elements");
  x->type = T("f32[1048576,1048576]");
  expect_type(x, "f32[1048576,1048576]");
  x->type = T("f32[4294967296,4294967296,4294967296]"); /* the product overflows int64 */
  expect_error(x, "input x: f32[4294967296,4294967296,4294967296] has more than "
                  "1099511627776 elements");
  x->type.rank = 9;
  expect_error(x, "input x: rank 9 is out of range 0..8");
  Node *w = ir_node_new(g, OP_PARAM, NULL, 0, loc);
  w->name = "w";
  w->type = T("i32[3]");
  expect_error(w, "param w must be a float tensor, got i32[3]");
  w->type = T("f64[3,4]");
  expect_type(w, "f64[3,4]");
  Node *c = ir_node_new(g, OP_CONST, NULL, 0, loc);
  ir_set_attr_float(c, "value", 2.0);
  expect_type(c, "f32[]");
  Node *m = ir_node_new(g, OP_CAUSAL_MASK, NULL, 0, loc);
  m->type = T("f32[5,5]");
  expect_type(m, "f32[5,5]");
  m->type = T("f32[3,4]");
  expect_error(m, "causal_mask: expected f32[n,n], got f32[3,4]");
}

/* ---- Elementwise -------------------------------------------------------- */

static void test_unary(void **state) {
  (void)state;
  static const OpKind ops[] = {OP_NEG,  OP_RELU,  OP_SIGMOID, OP_TANH, OP_EXP,  OP_LOG,
                               OP_SQRT, OP_RSQRT, OP_ABS,     OP_GELU, OP_SILU, OP_POW};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    expect_type(unary(ops[i], "f32[128,784]"), "f32[128,784]");
    expect_type(unary(ops[i], "f64[]"), "f64[]");
  }
  expect_error(unary(OP_RELU, "i32[128]"), "relu expects a float tensor, got i32[128]");
  expect_error(unary(OP_POW, "i32[]"), "pow expects a float tensor, got i32[]");
}

static void test_binary_broadcast(void **state) {
  (void)state;
  static const OpKind ops[] = {OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MAXIMUM, OP_MINIMUM};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    expect_type(binary(ops[i], "f32[2,3]", "f32[2,3]"), "f32[2,3]");
  expect_type(binary(OP_ADD, "f32[128,512]", "f32[512]"), "f32[128,512]");
  expect_type(binary(OP_ADD, "f32[512]", "f32[128,512]"), "f32[128,512]");
  expect_type(binary(OP_MUL, "f32[4,1,3]", "f32[5,1]"), "f32[4,5,3]");
  expect_type(binary(OP_SUB, "f32[]", "f32[2,3]"), "f32[2,3]");
  expect_type(binary(OP_DIV, "f64[1]", "f64[]"), "f64[1]");
  expect_type(binary(OP_MAXIMUM, "f32[1,1]", "f32[1]"), "f32[1,1]");
  expect_error(binary(OP_ADD, "f32[128,784]", "f32[512]"),
               "add: cannot broadcast f32[128,784] with f32[512]");
  expect_error(binary(OP_SUB, "f32[2]", "f64[2]"), "sub: mismatched dtypes: f32[2] and f64[2]");
  expect_error(binary(OP_MUL, "f32[2]", "i32[2]"), "mul expects a float tensor, got i32[2]");
  /* Broadcasting can multiply sizes past the limit. */
  expect_error(binary(OP_ADD, "f32[1048576,1]", "f32[2097152]"),
               "add: result f32[1048576,2097152] has more than 1099511627776 elements");
}

/* ---- Contractions ------------------------------------------------------- */

static void test_matmul(void **state) {
  (void)state;
  expect_type(binary(OP_MATMUL, "f32[128,784]", "f32[784,512]"), "f32[128,512]");
  expect_type(binary(OP_MATMUL, "f32[8,128,64]", "f32[64,32]"), "f32[8,128,32]");
  expect_type(binary(OP_MATMUL, "f32[2,1,4,5]", "f32[3,5,6]"), "f32[2,3,4,6]");
  expect_type(binary(OP_MATMUL, "f64[1,1]", "f64[1,1]"), "f64[1,1]");
  expect_error(binary(OP_MATMUL, "f32[128,784]", "f32[512,10]"),
               "matmul: inner dimensions differ: f32[128,784] @ f32[512,10]");
  expect_error(binary(OP_MATMUL, "f32[784]", "f32[784,10]"),
               "matmul: operands must have rank >= 2: f32[784] @ f32[784,10]");
  expect_error(binary(OP_MATMUL, "f32[2,4,5]", "f32[3,5,6]"),
               "matmul: cannot broadcast batch dimensions: f32[2,4,5] @ f32[3,5,6]");
  expect_error(binary(OP_MATMUL, "f32[4,5]", "f64[5,6]"),
               "matmul: mismatched dtypes: f32[4,5] and f64[5,6]");
}

static Node *conv(const char *x, const char *w, const char *b, int64_t stride, int64_t pad) {
  Node *n = b ? mk(OP_CONV2D, 3, X(x), X(w), X(b)) : mk(OP_CONV2D, 2, X(x), X(w));
  ir_set_attr_int(n, "stride", stride);
  ir_set_attr_int(n, "padding", pad);
  return n;
}

static void test_conv2d(void **state) {
  (void)state;
  expect_type(conv("f32[8,3,32,32]", "f32[16,3,3,3]", "f32[16]", 1, 0), "f32[8,16,30,30]");
  expect_type(conv("f32[8,3,32,32]", "f32[16,3,3,3]", NULL, 1, 1), "f32[8,16,32,32]");
  /* (32 + 2 - 3) / 2 + 1 = 16 (floor); (7 + 2 - 3) / 2 + 1 = 4 */
  expect_type(conv("f32[1,3,32,7]", "f32[4,3,3,3]", NULL, 2, 1), "f32[1,4,16,4]");
  expect_type(conv("f32[1,1,5,5]", "f32[1,1,5,5]", NULL, 3, 0), "f32[1,1,1,1]");
  expect_type(conv("f32[1,1,2,2]", "f32[1,1,4,4]", NULL, 1, 1), "f32[1,1,1,1]");
  expect_error(conv("f32[1,3,32,32]", "f32[16,4,3,3]", NULL, 1, 0),
               "conv2d: weight f32[16,4,3,3] expects 4 input channels, input f32[1,3,32,32] "
               "has 3");
  expect_error(conv("f32[1,3,4,4]", "f32[16,3,5,5]", NULL, 1, 0),
               "conv2d: kernel 5x5 does not fit input f32[1,3,4,4] with padding 0");
  expect_error(conv("f32[1,3,8,8]", "f32[16,3,3,3]", "f32[8]", 1, 0),
               "conv2d: bias f32[8] does not match weight f32[16,3,3,3] (expected [16])");
  expect_error(conv("f32[1,3,8,8]", "f32[16,3,3,3]", NULL, 0, 0),
               "conv2d: stride must be >= 1, got 0");
  expect_error(conv("f32[1,3,8,8]", "f32[16,3,3,3]", NULL, 1, -1),
               "conv2d: padding must be >= 0, got -1");
  expect_error(conv("f32[3,8,8]", "f32[16,3,3,3]", NULL, 1, 0),
               "conv2d: input must have rank 4, got f32[3,8,8]");
}

/* ---- Reductions --------------------------------------------------------- */

static Node *reduce(OpKind op, const char *x, int naxes, const int64_t *axes, int keep) {
  Node *n = unary(op, x);
  ir_set_attr_ints(n, "axes", axes, naxes);
  ir_set_attr_int(n, "keepdim", keep);
  return n;
}

static void test_reduce(void **state) {
  (void)state;
  expect_type(reduce(OP_SUM, "f32[2,3,4]", 1, (int64_t[]){1}, 0), "f32[2,4]");
  expect_type(reduce(OP_MEAN, "f32[2,3,4]", 1, (int64_t[]){1}, 1), "f32[2,1,4]");
  expect_type(reduce(OP_MAX, "f32[2,3,4]", 2, (int64_t[]){0, 2}, 0), "f32[3]");
  expect_type(reduce(OP_SUM, "f32[2,3,4]", 2, (int64_t[]){0, 2}, 1), "f32[1,3,1]");
  expect_type(reduce(OP_SUM, "f64[2,3]", 2, (int64_t[]){0, 1}, 0), "f64[]");
  expect_type(reduce(OP_SUM, "f32[2,3]", 0, NULL, 0), "f32[2,3]"); /* reduces nothing */
  expect_error(reduce(OP_SUM, "f32[2,3]", 1, (int64_t[]){2}, 0),
               "sum: axis 2 is out of range for f32[2,3]");
  expect_error(reduce(OP_MEAN, "f32[2,3]", 1, (int64_t[]){-1}, 0),
               "mean: axis -1 is out of range for f32[2,3]");
  expect_error(reduce(OP_MAX, "f32[2,3,4]", 2, (int64_t[]){2, 1}, 0),
               "max: axes [2,1] must be strictly increasing");
  expect_error(reduce(OP_SUM, "f32[2,3]", 2, (int64_t[]){1, 1}, 0),
               "sum: axes [1,1] must be strictly increasing");
  expect_error(reduce(OP_SUM, "f32[2,3]", 1, (int64_t[]){0}, 2),
               "sum: keepdim must be 0 or 1, got 2");
  expect_error(reduce(OP_SUM, "i32[2,3]", 1, (int64_t[]){0}, 0),
               "sum expects a float tensor, got i32[2,3]");
}

static void test_softmax(void **state) {
  (void)state;
  Node *s = unary(OP_SOFTMAX, "f32[4,10]");
  ir_set_attr_int(s, "axis", 1);
  expect_type(s, "f32[4,10]");
  Node *l = unary(OP_LOG_SOFTMAX, "f64[4,10,3]");
  expect_type(l, "f64[4,10,3]"); /* axis 0 */
  ir_set_attr_int(l, "axis", 3);
  expect_error(l, "log_softmax: axis 3 is out of range for f64[4,10,3]");
  expect_error(unary(OP_SOFTMAX, "f32[]"), "softmax: axis 0 is out of range for f32[]");
}

static void test_layer_norm(void **state) {
  (void)state;
  Node *n = mk(OP_LAYER_NORM, 3, X("f32[2,5,16]"), X("f32[16]"), X("f32[16]"));
  ir_set_attr_float(n, "eps", 1e-5);
  expect_type(n, "f32[2,5,16]");
  ir_set_input(n, 2, X("f32[15]"));
  expect_error(n, "layer_norm: beta f32[15] does not match input f32[2,5,16] (expected [16])");
  ir_set_input(n, 2, X("f32[16]"));
  ir_set_attr_float(n, "eps", 0.0);
  expect_error(n, "layer_norm: eps must be > 0, got 0");
  Node *m = mk(OP_LAYER_NORM, 3, X("f32[16]"), X("f64[16]"), X("f32[16]"));
  expect_error(m, "layer_norm: mismatched dtypes: f32[16] and f64[16]");
}

static Node *pool(OpKind op, const char *x, int64_t k, int64_t s) {
  Node *n = unary(op, x);
  ir_set_attr_int(n, "kernel", k);
  ir_set_attr_int(n, "stride", s);
  return n;
}

static void test_pool(void **state) {
  (void)state;
  expect_type(pool(OP_MAX_POOL2D, "f32[8,16,32,32]", 2, 2), "f32[8,16,16,16]");
  /* floor((7 - 2) / 2) + 1 = 3; floor((5 - 3) / 1) + 1 = 3 */
  expect_type(pool(OP_AVG_POOL2D, "f32[1,3,7,7]", 2, 2), "f32[1,3,3,3]");
  expect_type(pool(OP_AVG_POOL2D, "f32[1,3,5,5]", 3, 1), "f32[1,3,3,3]");
  expect_error(pool(OP_MAX_POOL2D, "f32[1,3,2,8]", 3, 3),
               "max_pool2d: kernel 3 does not fit input f32[1,3,2,8]");
  expect_error(pool(OP_AVG_POOL2D, "f32[1,3,8,8]", 0, 1), "avg_pool2d: kernel must be >= 1, got 0");
  expect_error(pool(OP_MAX_POOL2D, "f32[3,8,8]", 2, 2),
               "max_pool2d: input must have rank 4, got f32[3,8,8]");
}

/* ---- Data movement ------------------------------------------------------ */

static void test_reshape(void **state) {
  (void)state;
  Node *r = unary(OP_RESHAPE, "f32[2,3]");
  r->type = T("f32[3,2]");
  expect_type(r, "f32[3,2]");
  r->type = T("f32[6]");
  expect_type(r, "f32[6]");
  r->type = T("f32[4]");
  expect_error(r, "cannot reshape f32[2,3] (6 elements) into f32[4] (4 elements)");
  r->type = T("i32[6]");
  expect_error(r, "reshape: cannot change the dtype of f32[2,3] to i32[6]");
  Node *s = unary(OP_RESHAPE, "f32[1]");
  s->type = T("f32[]");
  expect_type(s, "f32[]");
}

static void test_permute(void **state) {
  (void)state;
  Node *p = unary(OP_PERMUTE, "f32[2,3,4]");
  ir_set_attr_ints(p, "perm", (int64_t[]){2, 0, 1}, 3);
  expect_type(p, "f32[4,2,3]");
  ir_set_attr_ints(p, "perm", (int64_t[]){0, 0, 1}, 3);
  expect_error(p, "permute: [0,0,1] is not a permutation of the dims of f32[2,3,4]");
  ir_set_attr_ints(p, "perm", (int64_t[]){1, 0}, 2);
  expect_error(p, "permute: [1,0] is not a permutation of the dims of f32[2,3,4]");
  ir_set_attr_ints(p, "perm", (int64_t[]){0, 1, 3}, 3);
  expect_error(p, "permute: [0,1,3] is not a permutation of the dims of f32[2,3,4]");
}

static Node *slice(const char *x, int n, const int64_t *b, const int64_t *e) {
  Node *s = unary(OP_SLICE, x);
  ir_set_attr_ints(s, "begin", b, n);
  ir_set_attr_ints(s, "end", e, n);
  return s;
}

static void test_slice(void **state) {
  (void)state;
  expect_type(slice("f32[4,10,8]", 3, (int64_t[]){0, 9, 2}, (int64_t[]){4, 10, 5}), "f32[4,1,3]");
  expect_type(slice("i32[6]", 1, (int64_t[]){0}, (int64_t[]){6}), "i32[6]");
  expect_error(slice("f32[4,5]", 2, (int64_t[]){0, 3}, (int64_t[]){4, 3}),
               "slice: [3:3] is out of range for dim 1 of f32[4,5]");
  expect_error(slice("f32[4,5]", 2, (int64_t[]){0, 0}, (int64_t[]){5, 5}),
               "slice: [0:5] is out of range for dim 0 of f32[4,5]");
  expect_error(slice("f32[4,5]", 1, (int64_t[]){0}, (int64_t[]){1}),
               "slice: begin [0] and end [1] need one entry per dim of f32[4,5]");
}

static void test_concat(void **state) {
  (void)state;
  Node *c = mk(OP_CONCAT, 3, X("f32[2,3]"), X("f32[2,5]"), X("f32[2,1]"));
  ir_set_attr_int(c, "axis", 1);
  expect_type(c, "f32[2,9]");
  Node *one = mk(OP_CONCAT, 1, X("f64[7]"));
  expect_type(one, "f64[7]");
  Node *bad = mk(OP_CONCAT, 2, X("f32[2,3]"), X("f32[3,3]"));
  ir_set_attr_int(bad, "axis", 1);
  expect_error(bad, "concat: cannot concatenate f32[2,3] and f32[3,3] along axis 1");
  Node *rank = mk(OP_CONCAT, 2, X("f32[2,3]"), X("f32[2,3,1]"));
  expect_error(rank, "concat: cannot concatenate f32[2,3] and f32[2,3,1] along axis 0");
  Node *dt = mk(OP_CONCAT, 2, X("f32[2]"), X("f64[2]"));
  expect_error(dt, "concat: cannot concatenate f32[2] and f64[2] along axis 0");
  ir_set_attr_int(c, "axis", 2);
  expect_error(c, "concat: axis 2 is out of range for f32[2,3]");
}

static void test_embedding(void **state) {
  (void)state;
  expect_type(binary(OP_EMBEDDING, "i32[4,16]", "f32[1000,64]"), "f32[4,16,64]");
  expect_type(binary(OP_EMBEDDING, "i32[]", "f32[10,8]"), "f32[8]");
  expect_type(binary(OP_EMBEDDING, "i32[1,1,1,1,1,1,2]", "f64[10,8]"), "f64[1,1,1,1,1,1,2,8]");
  expect_error(binary(OP_EMBEDDING, "i32[1,1,1,1,1,1,1,2]", "f32[10,8]"),
               "embedding: ids must be i32 of rank 0..7, got i32[1,1,1,1,1,1,1,2]");
  expect_error(binary(OP_EMBEDDING, "f32[4]", "f32[10,8]"),
               "embedding: ids must be i32 of rank 0..7, got f32[4]");
  expect_error(binary(OP_EMBEDDING, "i32[4]", "f32[10]"),
               "embedding: table must be a float [V,D] tensor, got f32[10]");
}

/* ---- Special ops and losses --------------------------------------------- */

static Node *lstm(const char *x, const char *wih, const char *whh, const char *bih,
                  const char *bhh) {
  return mk(OP_LSTM, 5, X(x), X(wih), X(whh), X(bih), X(bhh));
}

static void test_lstm(void **state) {
  (void)state;
  expect_type(lstm("f32[2,7,10]", "f32[80,10]", "f32[80,20]", "f32[80]", "f32[80]"), "f32[2,7,20]");
  expect_error(lstm("f32[2,7,10]", "f32[80,12]", "f32[80,20]", "f32[80]", "f32[80]"),
               "lstm: w_ih f32[80,12] does not match input f32[2,7,10] (expected f32[80,10])");
  expect_error(lstm("f32[2,7,10]", "f32[80,10]", "f32[80,80]", "f32[80]", "f32[80]"),
               "lstm: w_hh f32[80,80] does not match input f32[2,7,10] (expected f32[80,20])");
  expect_error(lstm("f32[2,7,10]", "f32[80,10]", "f32[80,20]", "f32[80]", "f32[20]"),
               "lstm: b_hh f32[20] does not match input f32[2,7,10] (expected f32[80])");
  expect_error(lstm("f32[2,7,10]", "f32[81,10]", "f32[80,20]", "f32[80]", "f32[80]"),
               "lstm: w_ih f32[81,10] must be [4H,I]");
  expect_error(lstm("f32[7,10]", "f32[80,10]", "f32[80,20]", "f32[80]", "f32[80]"),
               "lstm: input must have rank 3, got f32[7,10]");
  expect_error(lstm("f32[2,7,10]", "f64[80,10]", "f32[80,20]", "f32[80]", "f32[80]"),
               "lstm: mismatched dtypes: f32[2,7,10] and f64[80,10]");
}

static void test_losses(void **state) {
  (void)state;
  expect_type(binary(OP_MSE_LOSS, "f32[8,1]", "f32[8,1]"), "f32[]");
  expect_type(binary(OP_MSE_LOSS, "f64[8,4]", "f64[4]"), "f64[]");
  expect_error(binary(OP_MSE_LOSS, "f32[8,4]", "f32[3]"),
               "mse_loss: cannot broadcast f32[8,4] with f32[3]");
  expect_error(binary(OP_MSE_LOSS, "f32[8]", "f64[8]"),
               "mse_loss: mismatched dtypes: f32[8] and f64[8]");
  expect_type(binary(OP_CROSS_ENTROPY, "f32[128,10]", "i32[128]"), "f32[]");
  expect_type(binary(OP_CROSS_ENTROPY, "f32[4,16,100]", "i32[4,16]"), "f32[]");
  expect_type(binary(OP_CROSS_ENTROPY, "f64[10]", "i32[]"), "f64[]");
  expect_error(binary(OP_CROSS_ENTROPY, "f32[8,10]", "i32[4]"),
               "cross_entropy: labels i32[4] do not match logits f32[8,10] (expected i32[8])");
  expect_error(binary(OP_CROSS_ENTROPY, "f32[8,10]", "f32[8]"),
               "cross_entropy: labels f32[8] do not match logits f32[8,10] (expected i32[8])");
  expect_error(binary(OP_CROSS_ENTROPY, "f32[]", "i32[]"),
               "cross_entropy: logits must have rank >= 1, got f32[]");
  expect_type(binary(OP_BCE_LOSS, "f32[8,1]", "f32[8,1]"), "f32[]");
  expect_type(binary(OP_BCE_WITH_LOGITS, "f64[8]", "f64[8]"), "f64[]");
  expect_error(binary(OP_BCE_LOSS, "f32[8,1]", "f32[8]"),
               "bce_loss: input f32[8,1] and target f32[8] must have the same shape");
  expect_error(binary(OP_BCE_WITH_LOGITS, "i32[8]", "i32[8]"),
               "bce_with_logits expects a float tensor, got i32[8]");
}

/* Short message buffers truncate; a zero-length one is never written. */
static void test_message_buffers(void **state) {
  (void)state;
  Node *n = binary(OP_ADD, "f32[3]", "f32[4]");
  char msg[8];
  assert_false(ir_infer_type(n, msg, sizeof msg));
  assert_string_equal(msg, "add: ca");
  assert_false(ir_infer_type(n, NULL, 0));
}

#define T_(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T_(test_types),           T_(test_broadcast_function),
      T_(test_nodes_and_users), T_(test_replace_uses),
      T_(test_remove_nodes),    T_(test_topo_sort_stable),
      T_(test_find_sources),    T_(test_sources),
      T_(test_unary),           T_(test_binary_broadcast),
      T_(test_matmul),          T_(test_conv2d),
      T_(test_reduce),          T_(test_softmax),
      T_(test_layer_norm),      T_(test_pool),
      T_(test_reshape),         T_(test_permute),
      T_(test_slice),           T_(test_concat),
      T_(test_embedding),       T_(test_lstm),
      T_(test_losses),          T_(test_message_buffers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
