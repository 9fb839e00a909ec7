/* test_dims.c - dimension expressions: size params, -D, fn arguments, and their errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build.h"

/* Parses src (which must parse) and builds it with defs; diagnostics land
 * in *err (malloc'd). */
static Graph *build_defs(const char *src, const Define *defs, int ndefs, char **err) {
  Arena a = {0};
  Ast ast;
  Diag d;
  size_t len = 0;
  diag_init(&d, "d.kl", src, strlen(src));
  d.out = open_memstream(err, &len);
  assert_non_null(d.out);
  bool parsed = parse_file(&ast, &a, &d, src, strlen(src));
  Graph *g = parsed ? build_graph(&ast, defs, ndefs, &d) : NULL;
  fclose(d.out);
  arena_free(&a);
  if (!parsed) fail_msg("does not parse: %s", *err);
  return g;
}

/* The type of input x of a model whose header and x's type are given. */
static void expect_type(const char *header, const char *type, const Define *defs, int ndefs,
                        const char *want) {
  char src[1024], *err = NULL, buf[IR_TYPE_STR_MAX];
  snprintf(src, sizeof src, "model m%s {\n  input x: %s\n  output x\n}\n", header, type);
  Graph *g = build_defs(src, defs, ndefs, &err);
  if (!g) fail_msg("%s: build failed:\n%s", type, err);
  free(err);
  assert_string_equal(ir_type_str(&ir_find_input(g, "x")->type, buf, sizeof buf), want);
  ir_graph_free(g);
}

static void expect_error(const char *header, const char *type, const Define *defs, int ndefs,
                         const char *want) {
  char src[1024], *err = NULL;
  snprintf(src, sizeof src, "model m%s {\n  input x: %s\n  output x\n}\n", header, type);
  Graph *g = build_defs(src, defs, ndefs, &err);
  if (g) {
    ir_graph_free(g);
    fail_msg("%s: built, but expected: %s", type, want);
  }
  if (!strstr(err, want)) fail_msg("expected: %s\ngot:\n%s", want, err);
  free(err);
}

static void test_arithmetic(void **state) {
  (void)state;
  expect_type("", "f32[]", NULL, 0, "f32[]");
  expect_type("", "f32[3, 4]", NULL, 0, "f32[3,4]");
  expect_type("", "f32[2 + 3 * 4, (2 + 3) * 4, 20 / 4 / 5, 10 - 2 - 3]", NULL, 0, "f32[14,20,1,5]");
  expect_type("(a = 6, b = 4)", "f64[a * b / 8, (a - b) * (a + b), a / (b - 2)]", NULL, 0,
              "f64[3,20,3]");
  expect_type("", "i32[1 - 5 + 8]", NULL, 0, "i32[4]"); /* negative on the way is fine */
}

static void test_size_params(void **state) {
  (void)state;
  Define d1[] = {{"batch", 64}};
  Define d2[] = {{"hidden", 3}, {"batch", 5}, {"batch", 7}};
  expect_type("(batch = 128, hidden = 512)", "f32[batch, hidden / 2]", NULL, 0, "f32[128,256]");
  expect_type("(batch = 128, hidden = 512)", "f32[batch, hidden / 2]", d1, 1, "f32[64,256]");
  expect_error("(batch = 128, hidden = 512)", "f32[batch, hidden / 2]", d2, 3,
               "d.kl:2:30: error: dimension 3 / 2 is not an integer");
  Define d3[] = {{"hidden", 6}, {"batch", 5}, {"batch", 7}};
  expect_type("(batch = 128, hidden = 512)", "f32[batch, hidden / 2]", d3, 3, "f32[7,3]");

  char *err = NULL;
  Graph *g =
      build_defs("model m(b = 2, a = 3) {\n  input x: f32[a, b]\n  output x\n}\n", d1, 0, &err);
  assert_non_null(g);
  free(err);
  assert_int_equal(g->nsizes, 2);
  assert_string_equal(g->sizes[0].name, "b");
  assert_string_equal(g->sizes[1].name, "a");
  assert_int_equal(g->sizes[1].value, 3);
  ir_graph_free(g);
}

static void test_define_errors(void **state) {
  (void)state;
  Define foo[] = {{"foo", 1}}, neg[] = {{"n", -4}};
  expect_error("(n = 2)", "f32[n]", foo, 1, "d.kl: error: model 'm' has no size parameter 'foo'");
  expect_error("(n = 2)", "f32[n]", neg, 1,
               "d.kl: error: size parameter 'n' must be >= 1, got -4 (from -D)");
}

/* Integer fn arguments size a fn's params; tensors and unknown names do not. */
static void test_fn_dims(void **state) {
  (void)state;
  char *err = NULL;
  Graph *g = build_defs("fn proj(x, d, h) {\n"
                        "  param w: f32[d, d / h * 3] = glorot\n"
                        "  return x @ w\n"
                        "}\n"
                        "model m(dm = 12) {\n"
                        "  input x: f32[2, dm]\n"
                        "  p = proj(x, dm, 4)\n"
                        "  output p\n"
                        "}\n",
                        NULL, 0, &err);
  if (!g) fail_msg("%s", err);
  free(err);
  char buf[IR_TYPE_STR_MAX];
  assert_string_equal(ir_type_str(&ir_find_param(g, "p.w")->type, buf, sizeof buf), "f32[12,9]");
  ir_graph_free(g);

  g = build_defs("fn bad(x, d) {\n  param w: f32[x, d] = zeros\n  return w\n}\n"
                 "model m {\n  input x: f32[2]\n  p = bad(x, 4)\n  output p\n}\n",
                 NULL, 0, &err);
  assert_null(g);
  assert_non_null(strstr(err, "d.kl:2:16: error: 'x' is a tensor f32[2]; a dimension must be an "
                              "integer"));
  free(err);
}

static void test_dim_errors(void **state) {
  (void)state;
  expect_error("", "f32[10 / 3]", NULL, 0, "d.kl:2:19: error: dimension 10 / 3 is not an integer");
  expect_error("(a = 3)", "f32[a - a]", NULL, 0, "d.kl:2:18: error: dimension must be >= 1, got 0");
  expect_error("(a = 3)", "f32[4, 2 - a]", NULL, 0, "dimension must be >= 1, got -1");
  expect_error("", "f32[4 / (2 - 2)]", NULL, 0, "dimension 4 / 0 divides by zero");
  expect_error("", "f32[nope]", NULL, 0, "d.kl:2:16: error: unknown name 'nope'");
  expect_error("(hidden = 3)", "f32[hiden]", NULL, 0,
               "unknown name 'hiden'; did you mean 'hidden'?");
  expect_error("", "f32[1,1,1,1,1,1,1,1,1]", NULL, 0, "a tensor has at most 8 dims, got 9");
}

static void test_overflow(void **state) {
  (void)state;
  expect_error("", "f32[4611686018427387904 * 4]", NULL, 0,
               "d.kl:2:36: error: dimension 4611686018427387904 * 4 overflows");
  expect_error("", "f32[9223372036854775807 + 1]", NULL, 0,
               "dimension 9223372036854775807 + 1 overflows");
  Define big[] = {{"n", INT64_MAX}};
  expect_error("(n = 1)", "f32[n * n]", big, 1,
               "dimension 9223372036854775807 * "
               "9223372036854775807 overflows");
  expect_error("(n = 1)", "f32[0 - n - n]", big, 1, "overflows");
}

/* At most IR_MAX_NUMEL (2^40) elements per tensor. */
static void test_numel(void **state) {
  (void)state;
  expect_type("", "f32[1048576, 1048576]", NULL, 0, "f32[1048576,1048576]");
  expect_error("", "f32[1048576, 1048576, 2]", NULL, 0,
               "d.kl:2:12: error: tensor f32[1048576,1048576,2] has too many elements");
  expect_error("", "f32[1099511627777]", NULL, 0, "has too many elements");
  Define big[] = {{"n", 1 << 30}};
  expect_error("(n = 1)", "f32[n, n, n, n]", big, 1, "has too many elements");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_arithmetic),    cmocka_unit_test(test_size_params),
      cmocka_unit_test(test_define_errors), cmocka_unit_test(test_fn_dims),
      cmocka_unit_test(test_dim_errors),    cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_numel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
