/* test_parse.c - the .kl parser and AST printer: structure, precedence, errors, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ast.h"

/* One parse of src[0..len) as file "t.kl": the printed AST on success, the
 * diagnostics otherwise (both malloc'd). */
typedef struct Result {
  bool ok;
  int nerrors;
  char *text;
} Result;

static Result parse_text(const char *src, size_t len) {
  char *msg = NULL, *out = NULL;
  size_t msglen = 0, outlen = 0;
  Diag d;
  diag_init(&d, "t.kl", src, len);
  d.out = open_memstream(&msg, &msglen);
  Arena arena = {0};
  Ast ast;
  Result r = {parse_file(&ast, &arena, &d, src, len), 0, NULL};
  fclose(d.out);
  r.nerrors = d.nerrors;
  if (r.ok) {
    FILE *f = open_memstream(&out, &outlen);
    ast_print(f, &ast);
    fclose(f);
    free(msg);
    r.text = out;
  } else {
    r.text = msg;
  }
  arena_free(&arena);
  return r;
}

/* src must parse and print exactly as expected. */
static void check_ast(const char *src, const char *expected) {
  Result r = parse_text(src, strlen(src));
  if (!r.ok) fprintf(stderr, "unexpected error:\n%s", r.text);
  assert_true(r.ok);
  assert_int_equal(r.nerrors, 0);
  assert_string_equal(r.text, expected);
  free(r.text);
}

/* src[0..len) must fail with exactly one error whose text starts with expected
 * (the first line, or the whole text with its source line and caret). */
static void check_error_n(const char *src, size_t len, const char *expected) {
  Result r = parse_text(src, len);
  assert_false(r.ok);
  assert_int_equal(r.nerrors, 1);
  if (strncmp(r.text, expected, strlen(expected)) != 0)
    fprintf(stderr, "got:\n%s\nexpected:\n%s\n", r.text, expected);
  assert_true(strncmp(r.text, expected, strlen(expected)) == 0);
  free(r.text);
}

static void check_error(const char *src, const char *expected) {
  check_error_n(src, strlen(src), expected);
}

/* The S-expression of `y = EXPR` inside a model. */
static void check_expr(const char *expr, const char *expected) {
  char src[512], want[512];
  snprintf(src, sizeof src, "model m {\n  y = %s\n}\n", expr);
  snprintf(want, sizeof want, "model m  # t.kl:1:7\n  bind y = %s  # t.kl:2:3\n", expected);
  check_ast(src, want);
}

/* An error in `y = EXPR` (line 2; the expression starts at column 7). */
static void check_expr_error(const char *expr, const char *expected) {
  char src[512];
  snprintf(src, sizeof src, "model m {\n  y = %s\n}\n", expr);
  check_error(src, expected);
}

static void test_spec_example(void **state) {
  (void)state;
  check_ast("# A three-layer perceptron for 28x28 images.\n"
            "model mlp(batch = 128, hidden = 512) {\n"
            "  input  x: f32[batch, 784]\n"
            "  input  y: i32[batch]              # class labels, 0..9\n"
            "\n"
            "  param  w1: f32[784, hidden] = glorot\n"
            "  param  b1: f32[hidden]      = zeros\n"
            "\n"
            "  h      = relu(x @ w1 + b1)\n"
            "  loss   = cross_entropy(h, y)\n"
            "\n"
            "  output h\n"
            "  train loss with sgd(lr = 0.01, momentum = 0.9)\n"
            "}\n",
            "model mlp(batch=128, hidden=512)  # t.kl:2:7\n"
            "  input x: f32[batch, 784]  # t.kl:3:3\n"
            "  input y: i32[batch]  # t.kl:4:3\n"
            "  param w1: f32[784, hidden] = glorot  # t.kl:6:3\n"
            "  param b1: f32[hidden] = zeros  # t.kl:7:3\n"
            "  bind h = (call relu (+ (@ x w1) b1))  # t.kl:9:3\n"
            "  bind loss = (call cross_entropy h y)  # t.kl:10:3\n"
            "  output h  # t.kl:12:3\n"
            "  train loss with sgd(lr=0.01, momentum=0.9)  # t.kl:13:3\n");
}

/* fns before and after the model print in source order. */
static void test_fns(void **state) {
  (void)state;
  check_ast("fn linear(x, n_in, n_out) {\n"
            "  param w: f32[n_in, n_out] = glorot\n"
            "  param b: f32[n_out] = zeros\n"
            "  return x @ w + b\n"
            "}\n"
            "model mlp2(batch = 32) {\n"
            "  input x: f32[batch, 784]\n"
            "  fc1 = linear(x, 784, 256)\n"
            "  output fc1\n"
            "}\n"
            "fn id() {\n  return 1\n}\n"
            "fn two(a) { return a * 2 }\n",
            "fn linear(x, n_in, n_out)  # t.kl:1:4\n"
            "  param w: f32[n_in, n_out] = glorot  # t.kl:2:3\n"
            "  param b: f32[n_out] = zeros  # t.kl:3:3\n"
            "  return (+ (@ x w) b)  # t.kl:4:3\n"
            "model mlp2(batch=32)  # t.kl:6:7\n"
            "  input x: f32[batch, 784]  # t.kl:7:3\n"
            "  bind fc1 = (call linear x 784 256)  # t.kl:8:3\n"
            "  output fc1  # t.kl:9:3\n"
            "fn id()  # t.kl:11:4\n"
            "  return 1  # t.kl:12:3\n"
            "fn two(a)  # t.kl:14:4\n"
            "  return (* a 2)  # t.kl:14:13\n");
}

static void test_model_forms(void **state) {
  (void)state;
  check_ast("model m {\n}", "model m  # t.kl:1:7\n");
  check_ast("model m() {}", "model m  # t.kl:1:7\n");
  check_ast("\n\n# c\nmodel m { output x }\n\n", "model m  # t.kl:4:7\n  output x  # t.kl:4:11\n");
  check_ast("model m(\n  a = 1,\n  b = 2\n) {\n\n\n  output a, b, c\n\n}",
            "model m(a=1, b=2)  # t.kl:1:7\n  output a, b, c  # t.kl:7:3\n");
  check_ast("model m {\r\n  output x\r\n}\r\n", "model m  # t.kl:1:7\n  output x  # t.kl:2:3\n");
}

static void test_types(void **state) {
  (void)state;
  check_ast("model m(h = 4) {\n"
            "  input s: f32[]\n"
            "  input i: i32[2, h]\n"
            "  input d: f64[2 * h + 1, (h + 2) / 3, h - 1 - 1]\n"
            "}\n",
            "model m(h=4)  # t.kl:1:7\n"
            "  input s: f32[]  # t.kl:2:3\n"
            "  input i: i32[2, h]  # t.kl:3:3\n"
            "  input d: f64[(+ (* 2 h) 1), (/ (+ h 2) 3), (- (- h 1) 1)]  # t.kl:4:3\n");
}

static void test_inits_and_train(void **state) {
  (void)state;
  check_ast("model m {\n"
            "  param a: f32[2] = glorot\n"
            "  param b: f32[2] = normal(0.02)\n"
            "  param c: f32[2] = constant(-1.5)\n"
            "  param d: f32[2] = uniform(lo = -1, hi = 1)\n"
            "  param e: f32[2] = zeros()\n"
            "  train l with adam(1e-3, beta1 = 0.5, eps = 1e-8)\n"
            "  train l with sgd()\n"
            "}\n",
            "model m  # t.kl:1:7\n"
            "  param a: f32[2] = glorot  # t.kl:2:3\n"
            "  param b: f32[2] = normal(0.02)  # t.kl:3:3\n"
            "  param c: f32[2] = constant((neg 1.5))  # t.kl:4:3\n"
            "  param d: f32[2] = uniform(lo=(neg 1), hi=1)  # t.kl:5:3\n"
            "  param e: f32[2] = zeros  # t.kl:6:3\n"
            "  train l with adam(0.001, beta1=0.5, eps=1e-08)  # t.kl:7:3\n"
            "  train l with sgd()  # t.kl:8:3\n");
}

static void test_precedence(void **state) {
  (void)state;
  check_expr("a + b * c", "(+ a (* b c))");
  check_expr("a * b + c", "(+ (* a b) c)");
  check_expr("a - b - c", "(- (- a b) c)");
  check_expr("a / b / c", "(/ (/ a b) c)");
  check_expr("a @ b @ c", "(@ (@ a b) c)");
  check_expr("a * b @ c / d", "(/ (@ (* a b) c) d)");
  check_expr("a + b - c + d", "(+ (- (+ a b) c) d)");
  check_expr("(a + b) * c", "(* (+ a b) c)");
  check_expr("a * (b + c)", "(* a (+ b c))");
  check_expr("x @ w1 + b1", "(+ (@ x w1) b1)");
}

static void test_unary(void **state) {
  (void)state;
  check_expr("-a", "(neg a)");
  check_expr("-a * b", "(* (neg a) b)");
  check_expr("a - -b", "(- a (neg b))");
  check_expr("--a", "(neg (neg a))");
  check_expr("-a[0]", "(neg (index a 0))");
  check_expr("-f(x)", "(neg (call f x))");
  check_expr("-1", "(neg 1)");
}

static void test_literals(void **state) {
  (void)state;
  check_expr("128", "128");
  check_expr("3.", "3.0");
  check_expr("0.1", "0.1");
  check_expr("1e-3", "0.001");
  check_expr("2.5e+4", "2.5e+04");
  check_expr("123.25", "123.25");
  check_expr("1e20", "1e+20");
  check_expr("0.17677669529663687", "0.17677669529663687");
  check_expr("1.7976931348623157e308", "1.7976931348623157e+308");
  check_expr("true", "true");
  check_expr("false", "false");
}

static void test_calls(void **state) {
  (void)state;
  check_expr("f()", "(call f)");
  check_expr("relu(x @ w)", "(call relu (@ x w))");
  check_expr("sum(x, axis=1)", "(call sum x axis=1)");
  check_expr("sum(x, axis = [0, 2], keepdim = true)", "(call sum x axis=(list 0 2) keepdim=true)");
  check_expr("f(g(h(x)), y)", "(call f (call g (call h x)) y)");
  check_expr("f(a,\n    b,\n\n  c = 1\n)", "(call f a b c=1)");
}

static void test_indexing(void **state) {
  (void)state;
  check_expr("x[:, -1, :]", "(index x (: () ()) (neg 1) (: () ()))");
  check_expr("x[0]", "(index x 0)");
  check_expr("x[2:5]", "(index x (: 2 5))");
  check_expr("x[:, :-1]", "(index x (: () ()) (: () (neg 1)))");
  check_expr("x[1:]", "(index x (: 1 ()))");
  check_expr("x[:]", "(index x (: () ()))");
  check_expr("x[i + 1 : n - 1]", "(index x (: (+ i 1) (- n 1)))");
  check_expr("x[0][1]", "(index (index x 0) 1)");
  check_expr("f(x)[0]", "(index (call f x) 0)");
  check_expr("[a, b][0]", "(index (list a b) 0)");
  check_expr("(a + b)[0]", "(index (+ a b) 0)");
  check_expr("x[\n  0,\n  1\n]", "(index x 0 1)");
}

static void test_lists(void **state) {
  (void)state;
  check_expr("[a, b]", "(list a b)");
  check_expr("[]", "(list)");
  check_expr("[[1], [2, 3.5]]", "(list (list 1) (list 2 3.5))");
  check_expr("[1,\n 2]", "(list 1 2)");
  check_expr("concat([a, b], 1)", "(call concat (list a b) 1)");
}

static void test_fn_arguments(void **state) {
  (void)state;
  check_ast("fn f(a,\n  b) {\n  return a\n}\nmodel m {}\n",
            "fn f(a, b)  # t.kl:1:4\n  return a  # t.kl:3:3\nmodel m  # t.kl:5:7\n");
}

/* Locations of nodes, as ast.h promises them. */
static void test_node_locations(void **state) {
  (void)state;
  const char *src = "model m(n = 2) {\n"
                    "  input x: f32[n]\n"
                    "  y = f(x, k = a + b)[0, 1:]\n"
                    "  train y with sgd(lr = 1)\n"
                    "}\n";
  Arena arena = {0};
  Diag d;
  diag_init(&d, "t.kl", src, strlen(src));
  Ast ast;
  assert_true(parse_file(&ast, &arena, &d, src, strlen(src)));
  const Block *m = ast.model;
  assert_string_equal(ast.file, "t.kl");
  assert_int_equal(m->dims[0].loc.col, 9);
  const Stmt *in = &m->body[0];
  assert_int_equal(in->loc.col, 3);
  assert_int_equal(in->name_loc.col, 9);
  assert_int_equal(in->type.loc.col, 12);
  assert_int_equal(in->type.dims[0]->loc.col, 16);
  const Stmt *bind = &m->body[1];
  assert_int_equal(bind->kind, ST_BIND);
  const Expr *ix = bind->value;
  assert_int_equal(ix->kind, EX_INDEX);
  assert_int_equal(ix->loc.line, 3);
  assert_int_equal(ix->loc.col, 22); /* the '[' */
  assert_int_equal(ix->idx[0].loc.col, 23);
  assert_false(ix->idx[0].is_slice);
  assert_true(ix->idx[1].is_slice);
  assert_int_equal(ix->idx[1].loc.col, 26);
  assert_null(ix->idx[1].hi);
  const Expr *call = ix->lhs;
  assert_int_equal(call->kind, EX_CALL);
  assert_int_equal(call->loc.col, 7); /* the callee */
  assert_int_equal(call->nargs, 2);
  assert_null(call->args[0].name);
  assert_int_equal(call->args[0].loc.col, 9);
  assert_string_equal(call->args[1].name, "k");
  assert_int_equal(call->args[1].loc.col, 12);
  const Expr *sum = call->args[1].value;
  assert_int_equal(sum->kind, EX_BINARY);
  assert_int_equal(sum->op, '+');
  assert_int_equal(sum->loc.col, 18); /* the operator */
  assert_int_equal(sum->lhs->loc.col, 16);
  const Stmt *train = &m->body[2];
  assert_int_equal(train->name_loc.col, 9);
  assert_int_equal(train->callee_loc.col, 16);
  assert_int_equal(train->args[0].loc.col, 20);
  arena_free(&arena);
}

static void test_error_messages(void **state) {
  (void)state;
  check_expr_error("(a + b\n}", "t.kl:3:1: error: expected ')' to close '(', found '}'\n"
                                "}\n"
                                "^\n"
                                "t.kl:2:7: note: to match this '('\n"
                                "  y = (a + b\n"
                                "      ^\n");
  check_expr_error("[1, }", "t.kl:2:11: error: expected an expression, found '}'");
  check_expr_error("", "t.kl:2:7: error: expected an expression, found a newline");
  check_expr_error("a +", "t.kl:2:10: error: expected an expression, found a newline");
  check_expr_error("f(a b)", "t.kl:2:11: error: expected ')' to close '(', found 'b'");
  check_expr_error("[a b]", "t.kl:2:10: error: expected ']' to close '[', found 'b'");
  check_expr_error("x[0 1]", "t.kl:2:11: error: expected ']' to close '[', found '1'");
  check_expr_error("x[]", "t.kl:2:9: error: expected an index, found ']'");
  check_expr_error("f(a = 1, b)", "t.kl:2:16: error: positional argument after keyword argument");
  check_expr_error("f(k = 1, k = 2)", "t.kl:2:16: error: duplicate keyword argument 'k'\n"
                                      "  y = f(k = 1, k = 2)\n"
                                      "               ^\n"
                                      "t.kl:2:9: note: 'k' is first given here");
  check_expr_error("x[0](1)", "t.kl:2:11: error: only a name can be called (as in relu(x))");
  check_expr_error("(f)(1)", "t.kl:2:10: error: only a name can be called");
  check_expr_error("a b", "t.kl:2:9: error: expected a newline after the statement, found 'b'");
  check_expr_error("input", "t.kl:2:7: error: expected an expression, found keyword 'input'");
  check_expr_error("1 +\n  output y", "t.kl:2:10: error: expected an expression, found a newline");
  check_expr_error("(1 +\n  output y)", "t.kl:3:3: error: expected an expression, found keyword "
                                        "'output'");
}

static void test_statement_errors(void **state) {
  (void)state;
  check_error("model m {\n  input x: f32[1] input y: f32[1]\n}",
              "t.kl:2:19: error: expected a newline after the statement, found keyword 'input'");
  check_error("model m {\n  input x: f16[1]\n}",
              "t.kl:2:12: error: unknown dtype 'f16' (expected f32, i32 or f64)");
  check_error("model m {\n  input x: 3\n}",
              "t.kl:2:12: error: expected a type such as f32[...], found '3'");
  check_error(
      "model m {\n  input x: f32\n}",
      "t.kl:2:15: error: expected '[' after the dtype (a scalar is f32[]), found a newline");
  check_error("model m {\n  input x f32[1]\n}",
              "t.kl:2:11: error: expected ':' after the input's name, found 'f32'");
  check_error("model m {\n  input x: f32[n, -1]\n}",
              "t.kl:2:19: error: expected a dimension (an integer or a size name), found '-'");
  check_error("model m {\n  input x: f32[(n]\n}",
              "t.kl:2:18: error: expected ')' to close '(', found ']'");
  check_error("model m {\n  param w: f32[1]\n}",
              "t.kl:2:18: error: expected '=' and an initializer after the param's type, found a "
              "newline");
  check_error("model m {\n  param w: f32[1] = 0.5\n}",
              "t.kl:2:21: error: expected a name of an initializer (such as glorot or zeros), "
              "found '0.5'");
  check_error("model m {\n  output\n}",
              "t.kl:2:9: error: expected a name of a value to output, found a newline");
  check_error("model m {\n  output a,\n}",
              "t.kl:2:12: error: expected a name of a value to output, found a newline");
  check_error("model m {\n  train l sgd(lr = 1)\n}",
              "t.kl:2:11: error: expected 'with' after the loss name, found 'sgd'");
  check_error("model m {\n  train l with sgd\n}",
              "t.kl:2:19: error: expected '(' after the optimizer's name (as in sgd(lr = 0.01)), "
              "found a newline");
  check_error("model m {\n  relu(x)\n}",
              "t.kl:2:7: error: expected '=' after 'relu' (a statement binds a name: NAME = "
              "EXPR), found '('");
  check_error("model m {\n  3 = x\n}", "t.kl:2:3: error: expected a statement, found '3'");
  check_error("model m {\n  with = x\n}",
              "t.kl:2:3: error: expected a statement, found keyword 'with'");
}

static void test_block_errors(void **state) {
  (void)state;
  check_error("model m {\n  output x\n", "t.kl:3:1: error: expected '}' to close model 'm', "
                                         "found the end of the file\n"
                                         "t.kl:1:9: note: to match this '{'\n"
                                         "model m {\n"
                                         "        ^\n");
  check_error("model m {", "t.kl:1:10: error: expected '}' to close model 'm', found the end");
  check_error("fn f(x) {\n  return x\nmodel m {\n}\n",
              "t.kl:3:1: error: expected a statement, found keyword 'model' (is a '}' missing?)");
  check_error("model m\n{\n}", "t.kl:1:8: error: expected '{' to open the body of model 'm', "
                               "found a newline");
  check_error("model m(a = 1 {\n}", "t.kl:1:15: error: expected ')' to close '(', found '{'");
  check_error("x = 1\n", "t.kl:1:1: error: expected 'model' or 'fn', found 'x'");
  check_error("model fn {}", "t.kl:1:7: error: expected a name after 'model', found keyword 'fn'");
  check_error("fn (x) {}", "t.kl:1:4: error: expected a name after 'fn', found '('");
  check_error("fn f {}", "t.kl:1:6: error: expected '(' and the fn's arguments after its name, "
                         "found '{'");
  check_error("fn f(x, 1) {}", "t.kl:1:9: error: expected a name of an argument, found '1'");
  check_error("model m {}}", "t.kl:1:11: error: expected 'model' or 'fn', found '}'");
}

static void test_file_errors(void **state) {
  (void)state;
  check_error("", "t.kl:1:1: error: no model in this file (a file needs exactly one 'model')\n");
  check_error("# just a comment\n\n", "t.kl:1:1: error: no model in this file");
  check_error("fn f(x) {\n  return x\n}\n", "t.kl:1:1: error: no model in this file");
  check_error(
      "model a {}\nfn f() { return 1 }\nmodel b {}\n",
      "t.kl:3:7: error: second model 'b' (a file holds exactly one model; the first is 'a')\n"
      "model b {}\n"
      "      ^\n"
      "t.kl:1:7: note: model 'a' is defined here\n");
  check_error("fn f() { return 1 }\nmodel m {}\nfn f() { return 2 }\n",
              "t.kl:3:4: error: duplicate fn 'f'\n"
              "fn f() { return 2 }\n"
              "   ^\n"
              "t.kl:1:4: note: 'f' is first defined here\n");
}

static void test_header_errors(void **state) {
  (void)state;
  check_error("model m(a = 1, a = 2) {}", "t.kl:1:16: error: duplicate size parameter 'a'\n"
                                          "model m(a = 1, a = 2) {}\n"
                                          "               ^\n"
                                          "t.kl:1:9: note: 'a' is first defined here\n");
  check_error("model m(a = 0) {}", "t.kl:1:13: error: size parameter 'a' must be >= 1, got 0");
  check_error("model m(a = -4) {}", "t.kl:1:13: error: size parameter 'a' must be >= 1, got -4");
  check_error("model m(a = 1.5) {}",
              "t.kl:1:13: error: expected an integer value for size parameter 'a', found '1.5'");
  check_error("model m(a = b) {}",
              "t.kl:1:13: error: expected an integer value for size parameter 'a', found 'b'");
  check_error("model m(a) {}", "t.kl:1:10: error: expected '=' and its default value after the "
                               "size parameter, found ')'");
  check_error("model m(a = 1,) {}",
              "t.kl:1:15: error: expected a name of a size parameter, found ')'");
  check_error("fn f(x, y, x) {\n  return x\n}\nmodel m {}",
              "t.kl:1:12: error: duplicate argument 'x'\n"
              "fn f(x, y, x) {\n"
              "           ^\n"
              "t.kl:1:6: note: 'x' is first defined here\n");
}

static void test_return_errors(void **state) {
  (void)state;
  check_error("fn f(x) {\n  y = x\n}\nmodel m {}",
              "t.kl:3:1: error: fn 'f' must end with a 'return' statement");
  check_error("fn f(x) {}\nmodel m {}", "t.kl:1:10: error: fn 'f' must end with a 'return' "
                                        "statement");
  check_error("fn f(x) {\n  return x\n  y = x\n  return y\n}\nmodel m {}",
              "t.kl:2:3: error: 'return' must be the last statement of fn 'f'");
  check_error("model m {\n  return 1\n}",
              "t.kl:2:3: error: 'return' is allowed only in a fn (a model names its results with "
              "'output')");
}

static void test_lex_errors_through_parser(void **state) {
  (void)state;
  check_error_n("model m {\0}", 11, "t.kl:1:10: error: unexpected character '\\x00'");
  check_error("model m {\n  x = 1 # caf\xe9\n}", "t.kl:2:14: error: invalid UTF-8 in comment");
  check_error("\xff\xfe\x00\x01", "t.kl:1:1: error: unexpected byte 0xff (not valid UTF-8)");
  check_error("model m {\n  y = 99999999999999999999\n}",
              "t.kl:2:7: error: integer literal '99999999999999999999' is too large");
  /* The error is the lexer's alone: the parser adds none of its own. */
  check_error("model m {\n  y = f(a, $)\n}", "t.kl:2:12: error: unexpected character '$'\n");
}

static char *repeat(const char *prefix, const char *unit, int n, const char *suffix) {
  size_t pl = strlen(prefix), ul = strlen(unit), sl = strlen(suffix);
  char *s = malloc(pl + ul * (size_t)n + sl + 1);
  memcpy(s, prefix, pl);
  for (int i = 0; i < n; i++) memcpy(s + pl + ul * (size_t)i, unit, ul);
  memcpy(s + pl + ul * (size_t)n, suffix, sl + 1);
  return s;
}

/* `y = ` then n copies of open, x, n copies of close. */
static Result parse_nested(const char *open, const char *close, int n) {
  char *head = repeat("model m {\n  y = ", open, n, "x");
  char *src = repeat(head, close, n, "\n}\n");
  Result r = parse_text(src, strlen(src));
  free(head);
  free(src);
  return r;
}

static void expect_too_deep(Result r, int col) {
  char want[128];
  snprintf(want, sizeof want,
           "t.kl:2:%d: error: expression nested too deeply (the limit is 200 levels)\n", col);
  assert_false(r.ok);
  assert_int_equal(r.nerrors, 1);
  assert_true(strncmp(r.text, want, strlen(want)) == 0);
  free(r.text);
}

static void test_nesting_limit(void **state) {
  (void)state;
  Result r = parse_nested("(", ")", PARSE_MAX_DEPTH);
  assert_true(r.ok);
  free(r.text);
  /* The 201st '(' is at column 7 + 200. */
  expect_too_deep(parse_nested("(", ")", PARSE_MAX_DEPTH + 1), 207);
  expect_too_deep(parse_nested("(", ")", 100000), 207);
  expect_too_deep(parse_nested("[", "]", 100000), 207);
  expect_too_deep(parse_nested("-", "", 100000), 207);
  expect_too_deep(parse_nested("f(", ")", 100000), 408); /* the 201st '(' */
  /* Unclosed: the limit comes before the missing closers. */
  expect_too_deep(parse_nested("(", "", 100000), 207);
}

static void test_nesting_in_types(void **state) {
  (void)state;
  char *head = repeat("model m {\n  input x: f32[", "(", 100000, "1");
  char *src = repeat(head, ")", 100000, "]\n}\n");
  check_error(src, "t.kl:2:216: error: expression nested too deeply (the limit is 200 levels)");
  free(head);
  free(src);
}

/* Long chains nest nothing but grow the tree; its height is bounded too. */
static void test_long_chains(void **state) {
  (void)state;
  char *src = repeat("model m {\n  y = a", " + a", 900, "\n}\n");
  Result r = parse_text(src, strlen(src));
  assert_true(r.ok);
  free(r.text);
  free(src);
  src = repeat("model m {\n  y = a", " + a", 100000, "\n}\n");
  check_error(src, "t.kl:2:4005: error: expression too large (more than 1000 levels of "
                   "operators); split it into several statements");
  free(src);
  src = repeat("model m {\n  y = x", "[0]", 100000, "\n}\n");
  check_error(src, "t.kl:2:3005: error: expression too large");
  free(src);
  src = repeat("model m {\n  input x: f32[1", "*2", 100000, "]\n}\n");
  check_error(src, "t.kl:2:2015: error: expression too large");
  free(src);
}

/* Random token soup: never a crash, a hang or a second error. */
static void test_token_soup(void **state) {
  (void)state;
  static const char *const pieces[] = {
      "model ",  "fn ",  "m",   "x",    "(",      ")",      "[",       "]",      "{",
      "}",       ",",    ":",   "=",    "+",      "-",      "*",       "/",      "@",
      "1",       "2.5",  "\n",  " ",    "input ", "param ", "output ", "train ", "with ",
      "return ", "true", "f32", "#c\n", "\r\n",   "\xff",   "\x00",    "glorot", "sgd"};
  const int npieces = (int)(sizeof pieces / sizeof pieces[0]);
  uint64_t rng = 0x9E3779B97F4A7C15u;
  char buf[256];
  for (int iter = 0; iter < 20000; iter++) {
    size_t len = 0;
    int n = (int)(rng >> 59) + 4;
    for (int i = 0; i < n; i++) {
      rng = rng * 6364136223846793005u + 1442695040888963407u;
      const char *p = pieces[(rng >> 33) % (uint64_t)npieces];
      size_t pl = p[0] ? strlen(p) : 1; /* "\x00" stands for one NUL byte */
      if (len + pl > sizeof buf) break;
      memcpy(buf + len, p, pl);
      len += pl;
    }
    Result r = parse_text(buf, len);
    assert_int_equal(r.nerrors, r.ok ? 0 : 1);
    free(r.text);
  }
}

/* Every byte value alone and after a valid prefix: one clean error or success. */
static void test_every_byte(void **state) {
  (void)state;
  for (int c = 0; c < 256; c++) {
    char buf[32] = "model m {\n  y = ";
    size_t len = strlen(buf);
    buf[len++] = (char)c;
    Result r = parse_text(buf, len);
    assert_false(r.ok);
    assert_int_equal(r.nerrors, 1);
    free(r.text);
    r = parse_text(buf + len - 1, 1);
    assert_false(r.ok);
    assert_int_equal(r.nerrors, 1);
    free(r.text);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_example),
      cmocka_unit_test(test_fns),
      cmocka_unit_test(test_model_forms),
      cmocka_unit_test(test_types),
      cmocka_unit_test(test_inits_and_train),
      cmocka_unit_test(test_precedence),
      cmocka_unit_test(test_unary),
      cmocka_unit_test(test_literals),
      cmocka_unit_test(test_calls),
      cmocka_unit_test(test_indexing),
      cmocka_unit_test(test_lists),
      cmocka_unit_test(test_fn_arguments),
      cmocka_unit_test(test_node_locations),
      cmocka_unit_test(test_error_messages),
      cmocka_unit_test(test_statement_errors),
      cmocka_unit_test(test_block_errors),
      cmocka_unit_test(test_file_errors),
      cmocka_unit_test(test_header_errors),
      cmocka_unit_test(test_return_errors),
      cmocka_unit_test(test_lex_errors_through_parser),
      cmocka_unit_test(test_nesting_limit),
      cmocka_unit_test(test_nesting_in_types),
      cmocka_unit_test(test_long_chains),
      cmocka_unit_test(test_token_soup),
      cmocka_unit_test(test_every_byte),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
