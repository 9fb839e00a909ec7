/* test_cse.c - the cse pass: equal nodes merge, different ones never do, even on a hash collision.
 *
 * The pass's own file is included here, with its hash routed through test_hash, so the tests
 * reach its full equality check (cse_equal) and can force every node into one hash bucket.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "passes.h"

static bool collide; /* every node hashes alike */

static uint64_t test_hash(const Node *n, const uint64_t *input_hashes) {
  return collide ? UINT64_C(42) : ir_hash_node(n, input_hashes);
}

#define ir_hash_node test_hash
#define pass_cse     test_pass_cse
#include "../../passes/cse.c"
#undef ir_hash_node
#undef pass_cse

static Graph *parse(const char *body) {
  char text[4096];
  snprintf(text, sizeof text, "graph t {\n%s}\n", body);
  Diag d;
  diag_init(&d, "t.ir", text, strlen(text));
  Graph *g = ir_parse(&d, text, strlen(text));
  if (!g) fail_msg("does not parse:\n%s", text);
  return g;
}

static void cse(Graph *g) {
  PassCtx cx;
  pass_ctx_init(&cx);
  test_pass_cse(g, &cx);
  char msg[512];
  if (!ir_verify(g, msg, sizeof msg)) fail_msg("invalid after cse: %s", msg);
}

static Node *out(const Graph *g, int k) { return g->outputs[k].node; }

#define AB                                                                                         \
  "  %a = input : f32[4]\n"                                                                        \
  "  %b = input : f32[4]\n"

/* Each body's outputs p and q: merged into one node, or kept apart. */
static void expect_cse(const char *body, bool merged) {
  for (int c = 0; c < 2; c++) {
    collide = c == 1;
    Graph *g = parse(body);
    cse(g);
    if (merged)
      assert_ptr_equal(out(g, 0), out(g, 1));
    else
      assert_ptr_not_equal(out(g, 0), out(g, 1));
    ir_graph_free(g);
  }
  collide = false;
}

static void test_equal_nodes_merge(void **state) {
  expect_cse(AB "  %p = mul %a, %b : f32[4]\n  %q = mul %a, %b : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             true);
  expect_cse("  %c = const {value=0.9} : f32[]\n  %d = const {value=0.9} : f32[]\n"
             "  output p = %c\n  output q = %d\n",
             true);
  expect_cse("  %c = causal_mask : f32[3,3]\n  %d = causal_mask : f32[3,3]\n"
             "  output p = %c\n  output q = %d\n",
             true);
}

/* add(a, b) is add(b, a); sub(a, b) is not sub(b, a). */
static void test_commutative(void **state) {
  expect_cse(AB "  %p = add %a, %b : f32[4]\n  %q = add %b, %a : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             true);
  expect_cse(AB "  %p = maximum %a, %b : f32[4]\n  %q = maximum %b, %a : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             true);
  expect_cse(AB "  %p = sub %a, %b : f32[4]\n  %q = sub %b, %a : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             false);
  expect_cse(AB "  %p = div %a, %b : f32[4]\n  %q = div %b, %a : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             false);
}

/* Merging goes through chains: relu(a+b) and relu(b+a) are one node. */
static void test_chains(void **state) {
  expect_cse(AB "  %s = add %a, %b : f32[4]\n  %t = add %b, %a : f32[4]\n"
                "  %p = relu %s : f32[4]\n  %q = relu %t : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             true);
  Graph *g = parse(AB "  %s = add %a, %b : f32[4]\n  %t = add %b, %a : f32[4]\n"
                      "  %p = relu %s : f32[4]\n  %q = relu %t : f32[4]\n"
                      "  output p = %p\n  output q = %q\n");
  cse(g);
  assert_int_equal(g->nnodes, 4);
  ir_graph_free(g);
}

/* Inputs, params and states with equal types are different values. */
static void test_named_sources_never_merge(void **state) {
  expect_cse(AB "  output p = %a\n  output q = %b\n", false);
  expect_cse("  %v = param {init=zeros, args=[]} : f32[4]\n"
             "  %w = param {init=zeros, args=[]} : f32[4]\n  output p = %v\n  output q = %w\n",
             false);
  expect_cse("  %s = state : f32[4]\n  %t = state : f32[4]\n  output p = %s\n  output q = %t\n",
             false);
  /* ... and so are values computed from them. */
  expect_cse("  %v = param {init=zeros, args=[]} : f32[4]\n"
             "  %w = param {init=zeros, args=[]} : f32[4]\n"
             "  %p = exp %v : f32[4]\n  %q = exp %w : f32[4]\n  output p = %p\n  output q = %q\n",
             false);
}

static void test_different_nodes_stay(void **state) {
  expect_cse(AB "  %p = relu %a : f32[4]\n  %q = sigmoid %a : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             false);
  expect_cse("  %c = const {value=0} : f32[]\n  %d = const {value=-0} : f32[]\n"
             "  output p = %c\n  output q = %d\n",
             false);
  expect_cse("  %c = const {value=1} : f32[]\n  %d = const {value=1} : f32[4]\n"
             "  output p = %c\n  output q = %d\n",
             false);
  expect_cse("  %c = const {value=1} : f32[]\n  %d = const {value=1} : f64[]\n"
             "  output p = %c\n  output q = %d\n",
             false);
  expect_cse("  %x = input : f32[2,3]\n  %p = sum %x {axes=[0], keepdim=0} : f32[3]\n"
             "  %q = sum %x {axes=[0], keepdim=1} : f32[1,3]\n  output p = %p\n  output q = %q\n",
             false);
  expect_cse("  %x = input : f32[2,3]\n  %p = softmax %x {axis=0} : f32[2,3]\n"
             "  %q = softmax %x {axis=1} : f32[2,3]\n  output p = %p\n  output q = %q\n",
             false);
  expect_cse(AB "  %p = pow %a {exponent=2} : f32[4]\n  %q = pow %a {exponent=3} : f32[4]\n"
                "  output p = %p\n  output q = %q\n",
             false);
}

/* The equality behind every hash hit, node against node. */
static void test_equality_function(void **state) {
  Graph *g = parse(AB "  %p = add %a, %b : f32[4]\n  %q = add %b, %a : f32[4]\n"
                      "  %r = mul %a, %b : f32[4]\n  %s = sub %a, %b : f32[4]\n"
                      "  %t = sub %b, %a : f32[4]\n  %u = add %a, %a : f32[4]\n"
                      "  %v = param {init=zeros, args=[]} : f32[4]\n"
                      "  %w = param {init=zeros, args=[]} : f32[4]\n"
                      "  %c = const {value=1e-8} : f32[]\n  %d = const {value=1e-08} : f32[]\n"
                      "  output p = %p\n");
  Node *const *n = g->nodes;
  assert_true(cse_equal(n[2], n[3]));  /* add(a, b) == add(b, a) */
  assert_false(cse_equal(n[2], n[4])); /* add != mul */
  assert_false(cse_equal(n[5], n[6])); /* sub(a, b) != sub(b, a) */
  assert_false(cse_equal(n[2], n[7])); /* add(a, b) != add(a, a) */
  assert_false(cse_equal(n[8], n[9])); /* two params */
  assert_true(cse_equal(n[8], n[8]));
  assert_true(cse_equal(n[10], n[11]));
  assert_false(cse_equal(n[0], n[1])); /* two inputs */
  ir_graph_free(g);
}

/* With every hash equal, cse still merges exactly what it merges with real hashes. */
static void test_forced_collisions(void **state) {
  const char *body = AB "  %c = const {value=2} : f32[]\n  %d = const {value=3} : f32[]\n"
                        "  %e = const {value=2} : f32[]\n"
                        "  %p = mul %a, %c : f32[4]\n  %q = mul %a, %d : f32[4]\n"
                        "  %r = mul %e, %a : f32[4]\n  %s = add %p, %q : f32[4]\n"
                        "  %t = add %q, %r : f32[4]\n  %u = relu %s : f32[4]\n"
                        "  %v = sigmoid %s : f32[4]\n"
                        "  output p = %p\n  output q = %q\n  output r = %r\n"
                        "  output s = %s\n  output t = %t\n  output u = %u\n  output v = %v\n";
  Graph *plain = parse(body);
  cse(plain);
  collide = true;
  Graph *g = parse(body);
  cse(g);
  collide = false;
  assert_int_equal(g->nnodes, plain->nnodes);
  assert_int_equal(g->nnodes, 9); /* a, b, 2, 3, a*2, a*3, a*2+a*3, relu, sigmoid */
  assert_ptr_equal(out(g, 0), out(g, 2));
  assert_ptr_equal(out(g, 3), out(g, 4));
  assert_ptr_not_equal(out(g, 0), out(g, 1));
  assert_ptr_not_equal(out(g, 5), out(g, 6));
  ir_graph_free(plain);
  ir_graph_free(g);
}

/* The first of two equal nodes stays and takes the second's name if it has none. */
static void test_names(void **state) {
  Graph *g = parse(AB "  %2 = mul %a, %b : f32[4]\n  %h = mul %a, %b : f32[4]\n"
                      "  %k = exp %2 : f32[4]\n  output p = %k\n  output q = %h\n");
  cse(g);
  assert_ptr_equal(out(g, 1), out(g, 0)->in[0]);
  assert_string_equal(out(g, 1)->name, "h");
  ir_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_equal_nodes_merge),
      cmocka_unit_test(test_commutative),
      cmocka_unit_test(test_chains),
      cmocka_unit_test(test_named_sources_never_merge),
      cmocka_unit_test(test_different_nodes_stay),
      cmocka_unit_test(test_equality_function),
      cmocka_unit_test(test_forced_collisions),
      cmocka_unit_test(test_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
