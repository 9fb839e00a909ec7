/* test_simplify.c - the simplify pass: each identity fires, each near miss does not, constants
 * fold. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "passes.h"

/* The graph of a text IR listing: `graph t {`, the body, `}`. */
static Graph *parse(const char *body) {
  char text[4096];
  snprintf(text, sizeof text, "graph t {\n%s}\n", body);
  Diag d;
  diag_init(&d, "t.ir", text, strlen(text));
  Graph *g = ir_parse(&d, text, strlen(text));
  if (!g) fail_msg("does not parse:\n%s", text);
  return g;
}

/* Runs simplify and checks the result; returns g's first output. */
static Node *simplify(Graph *g) {
  PassCtx cx;
  pass_ctx_init(&cx);
  pass_simplify(g, &cx);
  char msg[512];
  if (!ir_verify(g, msg, sizeof msg)) fail_msg("invalid after simplify: %s", msg);
  return g->outputs[0].node;
}

/* The output after simplify is the node named `want` (a source or a named value). */
static void expect_becomes(const char *body, const char *want) {
  Graph *g = parse(body);
  Node *out = simplify(g);
  assert_non_null(out->name);
  assert_string_equal(out->name, want);
  ir_graph_free(g);
}

/* The output after simplify is still an `op` node. */
static void expect_stays(const char *body, OpKind op) {
  Graph *g = parse(body);
  int before = g->nnodes;
  Node *out = simplify(g);
  assert_int_equal(out->op, op);
  assert_int_equal(g->nnodes, before);
  ir_graph_free(g);
}

#define X4  "  %x = input : f32[4]\n"
#define X23 "  %x = input : f32[2,3]\n"

static void test_scale_by_one(void **state) {
  expect_becomes(X4 "  %c = const {value=1} : f32[]\n  %y = mul %x, %c : f32[4]\n"
                    "  output y = %y\n",
                 "x");
  expect_becomes(X4 "  %c = const {value=1} : f32[]\n  %y = mul %c, %x : f32[4]\n"
                    "  output y = %y\n",
                 "x");
  expect_becomes(X4 "  %c = const {value=1} : f32[4]\n  %y = div %x, %c : f32[4]\n"
                    "  output y = %y\n",
                 "x");
}

static void test_add_zero(void **state) {
  expect_becomes(X4 "  %c = const {value=0} : f32[]\n  %y = add %x, %c : f32[4]\n"
                    "  output y = %y\n",
                 "x");
  expect_becomes(X4 "  %c = const {value=-0} : f32[]\n  %y = add %c, %x : f32[4]\n"
                    "  output y = %y\n",
                 "x");
  expect_becomes(X4 "  %c = const {value=0} : f32[]\n  %y = sub %x, %c : f32[4]\n"
                    "  output y = %y\n",
                 "x");
}

static void test_scale_by_minus_one_is_neg(void **state) {
  Graph *g = parse(X4 "  %c = const {value=-1} : f32[]\n  %y = mul %c, %x : f32[4]\n"
                      "  output y = %y\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_NEG);
  assert_ptr_equal(out->in[0], ir_find_input(g, "x"));
  assert_string_equal(out->name, "y"); /* the replaced node's name */
  ir_graph_free(g);
}

/* Not exact for floats: NaN*0 and inf*0 are NaN, x-x of inf is NaN, 0-x flips +0. */
static void test_inexact_identities_stay(void **state) {
  expect_stays(X4 "  %c = const {value=0} : f32[]\n  %y = mul %x, %c : f32[4]\n"
                  "  output y = %y\n",
               OP_MUL);
  expect_stays(X4 "  %y = sub %x, %x : f32[4]\n  output y = %y\n", OP_SUB);
  expect_stays(X4 "  %c = const {value=0} : f32[]\n  %y = sub %c, %x : f32[4]\n"
                  "  output y = %y\n",
               OP_SUB);
  expect_stays(X4 "  %c = const {value=0} : f32[]\n  %y = div %c, %x : f32[4]\n"
                  "  output y = %y\n",
               OP_DIV);
  expect_stays(X4 "  %c = const {value=2} : f32[]\n  %y = mul %x, %c : f32[4]\n"
                  "  output y = %y\n",
               OP_MUL);
  expect_stays(X4 "  %c = const {value=1} : f32[]\n  %y = div %c, %x : f32[4]\n"
                  "  output y = %y\n",
               OP_DIV);
}

/* x*1 where the 1 broadcasts x to a bigger shape keeps the broadcast. */
static void test_identity_keeps_broadcast(void **state) {
  expect_stays(X4 "  %c = const {value=1} : f32[3,4]\n  %y = mul %x, %c : f32[3,4]\n"
                  "  output y = %y\n",
               OP_MUL);
}

static void test_double_neg(void **state) {
  expect_becomes(X4 "  %a = neg %x : f32[4]\n  %b = neg %a : f32[4]\n  output y = %b\n", "x");
  /* neg(neg(neg(x))) is one neg. */
  Graph *g = parse(X4 "  %a = neg %x : f32[4]\n  %b = neg %a : f32[4]\n  %c = neg %b : f32[4]\n"
                      "  output y = %c\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_NEG);
  assert_int_equal(g->nnodes, 2);
  ir_graph_free(g);
}

static void test_permute(void **state) {
  expect_becomes(X23 "  %p = permute %x {perm=[0, 1]} : f32[2,3]\n  output y = %p\n", "x");
  expect_becomes(X23 "  %p = permute %x {perm=[1, 0]} : f32[3,2]\n"
                     "  %q = permute %p {perm=[1, 0]} : f32[2,3]\n  output y = %q\n",
                 "x");
  Graph *g = parse("  %x = input : f32[2,3,5]\n"
                   "  %p = permute %x {perm=[1, 2, 0]} : f32[3,5,2]\n"
                   "  %q = permute %p {perm=[0, 2, 1]} : f32[3,2,5]\n  output y = %q\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_PERMUTE);
  assert_ptr_equal(out->in[0], ir_find_input(g, "x"));
  const AttrVal *perm = ir_attr_c(out, "perm");
  assert_int_equal(perm->n, 3);
  assert_int_equal(perm->i[0], 1);
  assert_int_equal(perm->i[1], 0);
  assert_int_equal(perm->i[2], 2);
  assert_int_equal(g->nnodes, 2);
  ir_graph_free(g);
}

static void test_reshape(void **state) {
  expect_becomes(X23 "  %r = reshape %x : f32[2,3]\n  output y = %r\n", "x");
  expect_becomes(X23 "  %r = reshape %x : f32[6]\n  %s = reshape %r : f32[2,3]\n"
                     "  output y = %s\n",
                 "x");
  Graph *g = parse(X23 "  %r = reshape %x : f32[6]\n  %s = reshape %r : f32[3,2]\n"
                       "  output y = %s\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_RESHAPE);
  assert_ptr_equal(out->in[0], ir_find_input(g, "x"));
  assert_int_equal(g->nnodes, 2);
  ir_graph_free(g);
}

static void test_slice_pad_concat_broadcast(void **state) {
  expect_becomes(X23 "  %s = slice %x {begin=[0, 0], end=[2, 3]} : f32[2,3]\n  output y = %s\n",
                 "x");
  expect_stays(X23 "  %s = slice %x {begin=[0, 1], end=[2, 3]} : f32[2,2]\n  output y = %s\n",
               OP_SLICE);
  expect_becomes(X23 "  %p = pad %x {before=[0, 0], after=[0, 0]} : f32[2,3]\n  output y = %p\n",
                 "x");
  expect_becomes(X23 "  %c = concat %x {axis=1} : f32[2,3]\n  output y = %c\n", "x");
  expect_becomes(X23 "  %b = broadcast %x {shape=[2, 3]} : f32[2,3]\n  output y = %b\n", "x");
  Graph *g = parse("  %x = input : f32[3]\n  %b = broadcast %x {shape=[2, 3]} : f32[2,3]\n"
                   "  %c = broadcast %b {shape=[4, 2, 3]} : f32[4,2,3]\n  output y = %c\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_BROADCAST);
  assert_ptr_equal(out->in[0], ir_find_input(g, "x"));
  ir_graph_free(g);
}

static void test_log_softmax(void **state) {
  Graph *g = parse(X23 "  %s = softmax %x {axis=0} : f32[2,3]\n  %l = log %s : f32[2,3]\n"
                       "  output y = %l\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_LOG_SOFTMAX);
  assert_int_equal(ir_attr_int(out, "axis"), 0);
  assert_ptr_equal(out->in[0], ir_find_input(g, "x"));
  assert_string_equal(out->name, "l");
  assert_int_equal(g->nnodes, 2); /* the softmax went with its last use */
  ir_graph_free(g);
  /* exp(log_softmax(x)) is not softmax(x) bit for bit: left alone. */
  expect_stays(X23 "  %s = log_softmax %x {axis=1} : f32[2,3]\n  %e = exp %s : f32[2,3]\n"
                   "  output y = %e\n",
               OP_EXP);
}

static void test_reduce_of_one_element(void **state) {
  expect_becomes(X23 "  %s = sum %x {axes=[], keepdim=0} : f32[2,3]\n  output y = %s\n", "x");
  expect_becomes("  %x = input : f32[2,1]\n  %s = mean %x {axes=[1], keepdim=1} : f32[2,1]\n"
                 "  output y = %s\n",
                 "x");
  Graph *g = parse("  %x = input : f32[2,1]\n  %s = max %x {axes=[1], keepdim=0} : f32[2]\n"
                   "  output y = %s\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_RESHAPE);
  ir_graph_free(g);
  expect_stays(X23 "  %s = sum %x {axes=[1], keepdim=0} : f32[2]\n  output y = %s\n", OP_SUM);
}

/* The output of an all-const graph after simplify: a const; its value goes to *v. */
static Node *folded(Graph *g, double *v) {
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_CONST);
  *v = ir_attr_float(out, "value");
  return out;
}

/* A sum of a permute or a reshape sums the moved tensor itself. */
static void test_sum_of_view(void **state) {
  (void)state;
  /* sum(permute(x, [0,2,1,3]), [0,1]) = sum(x, [0,2]): the kept dims stay in order. */
  Graph *g = parse("  %x = input : f32[2,3,4,5]\n"
                   "  %p = permute %x {perm=[0, 2, 1, 3]} : f32[2,4,3,5]\n"
                   "  %s = sum %p {axes=[0, 1], keepdim=0} : f32[3,5]\n  output y = %s\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_SUM);
  assert_string_equal(out->in[0]->name, "x");
  const AttrVal *axes = ir_attr_c(out, "axes");
  assert_int_equal(axes->n, 2);
  assert_int_equal(axes->i[0], 0);
  assert_int_equal(axes->i[1], 2);
  ir_graph_free(g);
  /* sum(reshape(x), [0,1]) with x's first two dims kept: reshape(sum(x, [0,1])). */
  g = parse("  %x = input : f32[2,3,4,5]\n  %r = reshape %x : f32[2,3,20]\n"
            "  %s = sum %r {axes=[0, 1], keepdim=0} : f32[20]\n  output y = %s\n");
  out = simplify(g);
  assert_int_equal(out->op, OP_RESHAPE);
  assert_int_equal(out->in[0]->op, OP_SUM);
  assert_string_equal(out->in[0]->in[0]->name, "x");
  ir_graph_free(g);
  /* The kept dims would come out transposed, keepdim, or axes that split a merged dim: left. */
  expect_stays("  %x = input : f32[2,3,4]\n  %p = permute %x {perm=[0, 2, 1]} : f32[2,4,3]\n"
               "  %s = sum %p {axes=[0], keepdim=0} : f32[4,3]\n  output y = %s\n",
               OP_SUM);
  expect_stays("  %x = input : f32[2,3,4]\n  %p = permute %x {perm=[1, 0, 2]} : f32[3,2,4]\n"
               "  %s = sum %p {axes=[0], keepdim=1} : f32[1,2,4]\n  output y = %s\n",
               OP_SUM);
  expect_stays("  %x = input : f32[6,4]\n  %r = reshape %x : f32[2,3,4]\n"
               "  %s = sum %r {axes=[0], keepdim=0} : f32[3,4]\n  output y = %s\n",
               OP_SUM);
}

static void test_fold(void **state) {
  double v;
  Graph *g = parse("  %a = const {value=3} : f32[]\n  %b = const {value=0.5} : f32[2,3]\n"
                   "  %m = mul %a, %b : f32[2,3]\n  %e = exp %m : f32[2,3]\n  output y = %e\n");
  Node *out = folded(g, &v);
  assert_true((float)v == (float)exp((double)1.5f));
  assert_int_equal(out->type.rank, 2);
  assert_int_equal(g->nnodes, 1);
  ir_graph_free(g);
  /* A reduction of a small splat runs on its real shape. */
  g = parse("  %a = const {value=0.25} : f32[4,8]\n  %s = sum %a {axes=[1], keepdim=0} : f32[4]\n"
            "  output y = %s\n");
  folded(g, &v);
  assert_true(v == 2.0);
  ir_graph_free(g);
  /* Data movement of one value, of any size. */
  g = parse("  %a = const {value=7} : f32[100,100]\n"
            "  %p = permute %a {perm=[1, 0]} : f32[100,100]\n"
            "  %r = reshape %p : f32[10000]\n  output y = %r\n");
  folded(g, &v);
  assert_true(v == 7.0);
  ir_graph_free(g);
  /* An elementwise op of any size is evaluated once. */
  g = parse("  %a = const {value=2} : f32[1000,1000]\n  %r = sqrt %a : f32[1000,1000]\n"
            "  output y = %r\n");
  folded(g, &v);
  assert_true((float)v == (float)sqrt(2.0));
  ir_graph_free(g);
  /* NaN and -0 fold as values. */
  g = parse("  %a = const {value=-1} : f32[]\n  %r = log %a : f32[]\n  output y = %r\n");
  folded(g, &v);
  assert_true(isnan(v));
  ir_graph_free(g);
  g = parse("  %a = const {value=0} : f32[]\n  %r = neg %a : f32[]\n  output y = %r\n");
  folded(g, &v);
  assert_true(v == 0 && signbit(v));
  ir_graph_free(g);
}

static void test_no_fold(void **state) {
  /* A large reduction is not run at compile time. */
  expect_stays("  %a = const {value=1} : f32[128,128]\n"
               "  %s = sum %a {axes=[1], keepdim=0} : f32[128]\n  output y = %s\n",
               OP_SUM);
  /* A result that is not a splat has no const to become. */
  expect_stays("  %a = const {value=1} : f32[2,3]\n"
               "  %p = pad %a {before=[1, 0], after=[0, 0]} : f32[3,3]\n  output y = %p\n",
               OP_PAD);
  /* causal_mask is not a splat and never folds. */
  expect_stays("  %m = causal_mask : f32[4,4]\n  %c = const {value=2} : f32[]\n"
               "  %y = mul %m, %c : f32[4,4]\n  output y = %y\n",
               OP_MUL);
  /* Inputs are not constants. */
  expect_stays(X4 "  %r = exp %x : f32[4]\n  output y = %r\n", OP_EXP);
}

/* A rewrite exposes the next: mul(mul(x, 1), 1) + 0 is x after one call. */
static void test_fixed_point(void **state) {
  Graph *g = parse(X4 "  %c = const {value=1} : f32[]\n  %z = const {value=0} : f32[]\n"
                      "  %a = mul %x, %c : f32[4]\n  %b = mul %c, %a : f32[4]\n"
                      "  %d = add %b, %z : f32[4]\n  %e = exp %d : f32[4]\n  output y = %e\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_EXP);
  assert_ptr_equal(out->in[0], ir_find_input(g, "x"));
  assert_int_equal(g->nnodes, 2); /* the consts went too */
  ir_graph_free(g);
}

/* A computed value that takes a replaced node's place takes its name (when it has none). */
static void test_names(void **state) {
  Graph *g = parse(X4 "  %5 = exp %x : f32[4]\n  %c = const {value=1} : f32[]\n"
                      "  %h = mul %5, %c : f32[4]\n  output y = %h\n");
  Node *out = simplify(g);
  assert_int_equal(out->op, OP_EXP);
  assert_string_equal(out->name, "h");
  ir_graph_free(g);
  /* A source keeps its own. */
  g = parse(X4 "  %c = const {value=1} : f32[]\n  %h = mul %x, %c : f32[4]\n  output y = %h\n");
  out = simplify(g);
  assert_string_equal(out->name, "x");
  ir_graph_free(g);
}

/* Gradients, updates and the loss follow their replacements. */
static void test_roots_follow(void **state) {
  Graph *g = parse("  %w = param {init=zeros, args=[]} : f32[4]\n"
                   "  %c = const {value=1} : f32[]\n  %l = sum %w {axes=[0], keepdim=0} : f32[]\n"
                   "  %m = mul %l, %c : f32[]\n  %d = broadcast %c {shape=[4]} : f32[4]\n"
                   "  %u = sub %w, %d : f32[4]\n  output y = %m\n"
                   "  train %m sgd {lr=1, momentum=0, weight_decay=0}\n");
  ir_add_grad(g, ir_find_param(g, "w"), g->nodes[4]);
  ir_add_update(g, ir_find_param(g, "w"), g->nodes[5]);
  simplify(g);
  assert_int_equal(g->loss->op, OP_SUM);
  assert_int_equal(g->grads[0].grad->op, OP_CONST);
  assert_int_equal(g->updates[0].value->op, OP_SUB);
  assert_int_equal(g->updates[0].value->in[1]->op, OP_CONST);
  ir_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scale_by_one),
      cmocka_unit_test(test_add_zero),
      cmocka_unit_test(test_scale_by_minus_one_is_neg),
      cmocka_unit_test(test_inexact_identities_stay),
      cmocka_unit_test(test_identity_keeps_broadcast),
      cmocka_unit_test(test_double_neg),
      cmocka_unit_test(test_permute),
      cmocka_unit_test(test_reshape),
      cmocka_unit_test(test_slice_pad_concat_broadcast),
      cmocka_unit_test(test_log_softmax),
      cmocka_unit_test(test_reduce_of_one_element),
      cmocka_unit_test(test_sum_of_view),
      cmocka_unit_test(test_fold),
      cmocka_unit_test(test_no_fold),
      cmocka_unit_test(test_fixed_point),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_roots_follow),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
