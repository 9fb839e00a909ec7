/* test_optable.c - walks ops.def: names, lookup, attribute schemas, and which stages lack an op. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ir.h"

/* A stage's issue sets its constant to 1 when it fills its column; from then
 * on an op without an entry there fails this test. */
#define KILN_COLUMN_COMPLETE_GRAD   1
#define KILN_COLUMN_COMPLETE_INTERP 1
#define KILN_COLUMN_COMPLETE_LOWER  1

/* Each column's token as text: "0" marks a missing entry. */
typedef struct Columns {
  const char *schema, *shape, *grad, *interp, *lower;
} Columns;

static const Columns columns[OP_COUNT] = {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  [OP_##NAME] = {attrs, #shape, #grad, #interp, #lower},
#include "ops.def"
#undef OP
};

static void test_names_and_lookup(void **state) {
  (void)state;
  for (int op = 0; op < OP_COUNT; op++) {
    const char *name = ir_op_name((OpKind)op);
    assert_non_null(name);
    assert_true(name[0] != '\0');
    assert_int_equal(ir_op_lookup(name), op);
    for (int other = 0; other < op; other++) assert_string_not_equal(ir_op_name(other), name);
  }
  assert_int_equal(ir_op_lookup("no_such_op"), OP_COUNT);
  assert_int_equal(ir_op_lookup(""), OP_COUNT);
  assert_int_equal(ir_op_lookup("matmul"), OP_MATMUL);
  assert_string_equal(ir_op_name(OP_LOG_SOFTMAX), "log_softmax");
}

static void test_arity_and_flags(void **state) {
  (void)state;
  for (int op = 0; op < OP_COUNT; op++) {
    const OpInfo *info = ir_op_info((OpKind)op);
    assert_true(info->min_in >= 0);
    assert_true(info->max_in == -1 || info->max_in >= info->min_in);
    /* Exactly the sources take no inputs. */
    assert_int_equal(!!(info->flags & IR_F_SOURCE), info->max_in == 0);
  }
  assert_int_equal(ir_op_info(OP_CONCAT)->max_in, -1);
  assert_int_equal(ir_op_info(OP_CONV2D)->min_in, 2);
  assert_int_equal(ir_op_info(OP_CONV2D)->max_in, 3);
  assert_true(ir_op_info(OP_ADD)->flags & IR_F_COMMUTATIVE);
  assert_false(ir_op_info(OP_SUB)->flags & IR_F_COMMUTATIVE);
}

static int count_words(const char *s) {
  int n = 0;
  for (bool in_word = false; *s; s++) {
    if (*s != ' ' && !in_word) n++;
    in_word = *s != ' ';
  }
  return n;
}

static void test_schemas_parse(void **state) {
  (void)state;
  for (int op = 0; op < OP_COUNT; op++) {
    const OpInfo *info = ir_op_info((OpKind)op);
    assert_int_equal(info->nattrs, count_words(columns[op].schema));
    for (int i = 0; i < info->nattrs; i++) {
      assert_true(info->attrs[i].name[0] != '\0');
      assert_null(strchr(info->attrs[i].name, ':'));
      assert_true(strstr(columns[op].schema, info->attrs[i].name) != NULL);
      assert_in_range(info->attrs[i].kind, ATTR_INT, ATTR_NAME);
    }
  }
  const OpInfo *sum = ir_op_info(OP_SUM);
  assert_string_equal(sum->attrs[0].name, "axes");
  assert_int_equal(sum->attrs[0].kind, ATTR_INTS);
  assert_string_equal(sum->attrs[1].name, "keepdim");
  assert_int_equal(sum->attrs[1].kind, ATTR_INT);
  const OpInfo *param = ir_op_info(OP_PARAM);
  assert_int_equal(param->attrs[0].kind, ATTR_NAME);
  assert_int_equal(param->attrs[1].kind, ATTR_FLOATS);
  assert_int_equal(ir_op_info(OP_LAYER_NORM)->attrs[0].kind, ATTR_FLOAT);
  assert_int_equal(ir_op_info(OP_ADD)->nattrs, 0);
}

static void test_attribute_access(void **state) {
  (void)state;
  Graph *g = ir_graph_new("attrs");
  Loc loc = {0};
  Node *w = ir_node_new(g, OP_PARAM, NULL, 0, loc);
  ir_set_attr_name(g, w, "init", "normal");
  ir_set_attr_floats(w, "args", (double[]){0.0, 0.02}, 2);
  assert_string_equal(ir_attr_c(w, "init")->s, "normal");
  assert_int_equal(ir_attr_c(w, "args")->n, 2);
  assert_true(ir_attr_c(w, "args")->f[1] == 0.02);
  Node *s = ir_node_new(g, OP_SUM, &w, 1, loc);
  assert_int_equal(ir_attr_c(s, "axes")->n, 0); /* attributes start zeroed */
  ir_set_attr_ints(s, "axes", (int64_t[]){0, 2}, 2);
  ir_set_attr_int(s, "keepdim", 1);
  assert_int_equal(ir_attr(s, "axes")->i[1], 2);
  assert_int_equal(ir_attr_int(s, "keepdim"), 1);
  assert_ptr_equal(ir_attr(s, "keepdim"), &s->attr[1]); /* stored in schema order */
  Node *ln = ir_node_new(g, OP_LAYER_NORM, (Node *[]){w, w, w}, 3, loc);
  ir_set_attr_float(ln, "eps", 1e-5);
  assert_true(ir_attr_float(ln, "eps") == 1e-5);
  ir_graph_free(g);
}

/* Runs fn in a child and returns its exit status and the start of its stderr. */
static int run_child(void (*fn)(void), char *err, size_t len) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    fn();
    _exit(0);
  }
  close(fds[1]);
  size_t used = 0;
  for (ssize_t n = 1; n > 0 && used < len - 1; used += (size_t)n)
    if ((n = read(fds[0], err + used, len - 1 - used)) < 0) n = 0;
  err[used] = '\0';
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Kept reachable so a leak checker in the exiting child stays quiet. */
static Graph *child_graph;

static void bad_attr_name(void) {
  Graph *g = child_graph = ir_graph_new("bad");
  Node *x = ir_node_new(g, OP_INPUT, NULL, 0, (Loc){0});
  Node *r = ir_node_new(g, OP_SOFTMAX, &x, 1, (Loc){0});
  ir_attr_int(r, "axes");
}

static void bad_attr_kind(void) {
  Graph *g = child_graph = ir_graph_new("bad");
  Node *x = ir_node_new(g, OP_INPUT, NULL, 0, (Loc){0});
  Node *r = ir_node_new(g, OP_SUM, &x, 1, (Loc){0});
  ir_set_attr_float(r, "keepdim", 1.0);
}

static void test_attribute_misuse_is_internal_error(void **state) {
  (void)state;
  char err[512];
  assert_int_equal(run_child(bad_attr_name, err, sizeof err), 70);
  assert_string_equal(err, "kiln: internal error: op softmax has no attribute 'axes'\n");
  assert_int_equal(run_child(bad_attr_kind, err, sizeof err), 70);
  assert_string_equal(err, "kiln: internal error: op sum: attribute 'keepdim' is int, not float\n");
}

static void test_shape_column_complete(void **state) {
  (void)state;
  for (int op = 0; op < OP_COUNT; op++) {
    if (strcmp(columns[op].shape, "0") == 0)
      print_error("op %s has no shape rule\n", ir_op_name(op));
    assert_string_not_equal(columns[op].shape, "0");
  }
}

/* Ops with nothing to differentiate: sources (no inputs) and the backward
 * ops autodiff builds (never differentiated themselves). */
static bool needs_no_grad(int op) {
  return ir_op_info((OpKind)op)->flags & (IR_F_SOURCE | IR_F_BACKWARD);
}

/* Reports the ops a stage still lacks; returns how many. */
static int report_column(const char *column, size_t offset) {
  bool grad = offset == offsetof(Columns, grad);
  int missing = 0;
  for (int op = 0; op < OP_COUNT; op++) {
    const char *entry = *(const char *const *)((const char *)&columns[op] + offset);
    if (strcmp(entry, "0") != 0 || (grad && needs_no_grad(op))) continue;
    if (!missing++) printf("[ INFO     ] no %s entry:", column);
    printf(" %s", ir_op_name(op));
  }
  if (missing) printf(" (%d of %d)\n", missing, OP_COUNT);
  return missing;
}

/* A source or backward op with a gradient rule would be a mistake: autodiff
 * never calls it. */
static void test_grad_column_only_differentiable(void **state) {
  (void)state;
  for (int op = 0; op < OP_COUNT; op++) {
    if (needs_no_grad(op) && strcmp(columns[op].grad, "0") != 0)
      fail_msg("op %s needs no gradient but has rule %s", ir_op_name((OpKind)op), columns[op].grad);
  }
  assert_true(needs_no_grad(OP_PARAM));
  assert_true(needs_no_grad(OP_CONV2D_GRAD_INPUT));
  assert_false(needs_no_grad(OP_CONV2D));
}

static void test_stage_columns(void **state) {
  (void)state;
  int grad = report_column("grad", offsetof(Columns, grad));
  int interp = report_column("interp", offsetof(Columns, interp));
  int lower = report_column("lower", offsetof(Columns, lower));
  if (KILN_COLUMN_COMPLETE_GRAD) assert_int_equal(grad, 0);
  if (KILN_COLUMN_COMPLETE_INTERP) assert_int_equal(interp, 0);
  if (KILN_COLUMN_COMPLETE_LOWER) assert_int_equal(lower, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_and_lookup),
      cmocka_unit_test(test_arity_and_flags),
      cmocka_unit_test(test_schemas_parse),
      cmocka_unit_test(test_attribute_access),
      cmocka_unit_test(test_attribute_misuse_is_internal_error),
      cmocka_unit_test(test_shape_column_complete),
      cmocka_unit_test(test_grad_column_only_differentiable),
      cmocka_unit_test(test_stage_columns),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
