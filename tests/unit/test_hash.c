/* test_hash.c - structural hashes: equal structure, equal hash; any semantic change, a new one. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "ir.h"

/* Knobs for building variants of one small graph. */
typedef struct Variant {
  const char *x_name, *w_name, *relu_name, *loc_file;
  int64_t axis;
  double lr, const_value;
  int64_t out_dim;
} Variant;

static const Variant base = {"x", "w", "h", "a.kl", 1, 0.1, 2.0, 3};

static Node *infer(Node *n) {
  char msg[256];
  if (!ir_infer_type(n, msg, sizeof msg)) fail_msg("shape rule: %s", msg);
  return n;
}

/* x [2,4] @ w [4,N] -> relu -> * const -> softmax(axis); loss = mean. */
static Graph *build(const Variant *v) {
  Graph *g = ir_graph_new("tiny");
  Loc loc = {v->loc_file, 3, 7};
  g->sizes = arena_array(&g->arena, 1, sizeof *g->sizes);
  g->sizes[0] = (SizeParam){"batch", 2};
  g->nsizes = 1;
  Node *x = ir_node_new(g, OP_INPUT, NULL, 0, loc);
  x->name = v->x_name;
  x->type = ir_type(DT_F32, 2, (int64_t[]){2, 4});
  Node *w = ir_node_new(g, OP_PARAM, NULL, 0, loc);
  w->name = v->w_name;
  w->type = ir_type(DT_F32, 2, (int64_t[]){4, v->out_dim});
  ir_set_attr_name(g, w, "init", "glorot");
  ir_set_attr_floats(w, "args", NULL, 0);
  Node *c = ir_node_new(g, OP_CONST, NULL, 0, loc);
  c->type = ir_type(DT_F32, 0, NULL);
  ir_set_attr_float(c, "value", v->const_value);
  Node *mm = infer(ir_node_new(g, OP_MATMUL, (Node *[]){x, w}, 2, loc));
  Node *r = infer(ir_node_new(g, OP_RELU, &mm, 1, loc));
  r->name = v->relu_name;
  Node *s = infer(ir_node_new(g, OP_MUL, (Node *[]){r, c}, 2, loc));
  Node *sm = ir_node_new(g, OP_SOFTMAX, &s, 1, loc);
  ir_set_attr_int(sm, "axis", v->axis);
  infer(sm);
  Node *m = ir_node_new(g, OP_MEAN, &sm, 1, loc);
  ir_set_attr_ints(m, "axes", (int64_t[]){0, 1}, 2);
  ir_set_attr_int(m, "keepdim", 0);
  infer(m);
  ir_add_output(g, "probs", sm);
  g->loss = m;
  g->optim = (Optim){.kind = OPTIM_SGD, .lr = v->lr, .momentum = 0.9};
  return g;
}

/* Node hashes in g->nodes order, inputs looked up by position. */
static void node_hashes(const Graph *g, uint64_t *out) {
  for (int i = 0; i < g->nnodes; i++) {
    uint64_t in[8];
    const Node *n = g->nodes[i];
    for (int k = 0; k < n->nin; k++) {
      int j = 0;
      while (g->nodes[j] != n->in[k]) j++;
      in[k] = out[j];
    }
    out[i] = ir_hash_node(n, in);
  }
}

static uint64_t graph_hash_of(Variant v) {
  Graph *g = build(&v);
  uint64_t h = ir_hash_graph(g);
  ir_graph_free(g);
  return h;
}

static void test_same_structure_same_hash(void **state) {
  (void)state;
  Graph *a = build(&base), *b = build(&base);
  uint64_t ha[16], hb[16];
  node_hashes(a, ha);
  node_hashes(b, hb);
  for (int i = 0; i < a->nnodes; i++) assert_true(ha[i] == hb[i]);
  assert_true(ir_hash_graph(a) == ir_hash_graph(b));
  /* Distinct nodes hash apart (x and w are both f32 sources). */
  for (int i = 0; i < a->nnodes; i++)
    for (int j = i + 1; j < a->nnodes; j++) assert_true(ha[i] != ha[j]);
  ir_graph_free(a);
  ir_graph_free(b);
}

/* Locations and the names of computed values are not structure. */
static void test_ignores_locations_and_value_names(void **state) {
  (void)state;
  uint64_t h = graph_hash_of(base);
  Variant v = base;
  v.loc_file = "elsewhere.kl";
  assert_true(graph_hash_of(v) == h);
  v = base;
  v.relu_name = "hidden";
  assert_true(graph_hash_of(v) == h);
  v.relu_name = NULL;
  assert_true(graph_hash_of(v) == h);
}

/* Attributes, shapes, source names and hyper-parameters are structure. */
static void test_changes_change_the_hash(void **state) {
  (void)state;
  uint64_t h = graph_hash_of(base);
  Variant v = base;
  v.axis = 0;
  assert_true(graph_hash_of(v) != h);
  v = base;
  v.const_value = 2.5;
  assert_true(graph_hash_of(v) != h);
  v = base;
  v.w_name = "w2";
  assert_true(graph_hash_of(v) != h);
  v = base;
  v.x_name = "y";
  assert_true(graph_hash_of(v) != h);
  v = base;
  v.out_dim = 5;
  assert_true(graph_hash_of(v) != h);
  v = base;
  v.lr = 0.2;
  assert_true(graph_hash_of(v) != h);
}

/* Two params alike but for their names never merge under CSE. */
static void test_param_names_split_nodes(void **state) {
  (void)state;
  Variant v = base;
  Graph *a = build(&base);
  v.w_name = "w_other";
  Graph *b = build(&v);
  assert_true(ir_hash_node(a->nodes[1], NULL) != ir_hash_node(b->nodes[1], NULL));
  /* A const's value is its identity; two equal consts are one value. */
  assert_true(ir_hash_node(a->nodes[2], NULL) == ir_hash_node(b->nodes[2], NULL));
  ir_graph_free(a);
  ir_graph_free(b);
}

/* -0.0 equals 0.0 and NaN is NaN: the hash agrees with value equality. */
static void test_float_canonical(void **state) {
  (void)state;
  Variant v = base;
  v.const_value = 0.0;
  uint64_t pos = graph_hash_of(v);
  v.const_value = -0.0;
  assert_true(graph_hash_of(v) == pos);
  v.const_value = NAN;
  uint64_t nan1 = graph_hash_of(v);
  v.const_value = -NAN;
  assert_true(graph_hash_of(v) == nan1);
  assert_true(nan1 != pos);
}

/* Input order matters for non-commutative ops. */
static void test_input_order(void **state) {
  (void)state;
  Graph *g = build(&base);
  uint64_t ab[2] = {1, 2}, ba[2] = {2, 1};
  const Node *mul = g->nodes[5];
  assert_true(ir_hash_node(mul, ab) != ir_hash_node(mul, ba));
  ir_graph_free(g);
}

/* The encoding is pinned: this value changes only when the encoding does
 * (then bump the version tags in ir/hash.c and update it here). */
static void test_pinned_value(void **state) {
  (void)state;
  uint64_t h = graph_hash_of(base);
  if (h != UINT64_C(0x0aa377759ec51690))
    fail_msg("ir_hash_graph of the tiny graph is 0x%016" PRIx64 "; the encoding changed", h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_structure_same_hash),
      cmocka_unit_test(test_ignores_locations_and_value_names),
      cmocka_unit_test(test_changes_change_the_hash),
      cmocka_unit_test(test_param_names_split_nodes),
      cmocka_unit_test(test_float_canonical),
      cmocka_unit_test(test_input_order),
      cmocka_unit_test(test_pinned_value),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
