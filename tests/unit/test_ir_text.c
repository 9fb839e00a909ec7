/* test_ir_text.c - the text IR: exact printing, parsing back, located errors, verify, dot. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* ---- Helpers -------------------------------------------------------------- */

static char *print_str(const Graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  ir_print(f, g);
  fclose(f);
  return buf;
}

/* Parses text as file "t.ir"; the diagnostics land in *diag when asked for. */
static Graph *parse_str(const char *text, char **diag) {
  Diag d;
  char *buf = NULL;
  size_t len = 0;
  diag_init(&d, "t.ir", text, strlen(text));
  d.out = open_memstream(&buf, &len);
  assert_non_null(d.out);
  Graph *g = ir_parse(&d, text, strlen(text));
  fclose(d.out);
  assert_true(g ? d.nerrors == 0 : d.nerrors == 1);
  if (diag)
    *diag = buf;
  else
    free(buf);
  return g;
}

/* The text parses, verifies, and prints back as exactly itself. */
static Graph *assert_roundtrip(const char *text) {
  char *diag = NULL, *msg = calloc(512, 1);
  Graph *g = parse_str(text, &diag);
  if (!g) fail_msg("parse failed:\n%s", diag);
  if (!ir_verify(g, msg, 512)) fail_msg("verify failed: %s", msg);
  char *out = print_str(g);
  assert_string_equal(out, text);
  free(out);
  free(diag);
  free(msg);
  return g;
}

static void assert_verified(const Graph *g) {
  char msg[512];
  if (!ir_verify(g, msg, sizeof msg)) fail_msg("verify failed: %s", msg);
}

static Loc L(int line, int col) { return (Loc){"mlp.kl", line, col}; }

static Node *source(Graph *g, OpKind op, const char *name, Type t, Loc loc) {
  Node *n = ir_node_new(g, op, NULL, 0, loc);
  n->name = name;
  n->type = t;
  return n;
}

static Node *param(Graph *g, const char *name, const char *init, Type t, Loc loc) {
  Node *n = source(g, OP_PARAM, name, t, loc);
  ir_set_attr_name(g, n, "init", init);
  ir_set_attr_floats(n, "args", NULL, 0);
  return n;
}

static Node *op2(Graph *g, OpKind op, Node *a, Node *b, const char *name, Loc loc) {
  Node *in[2] = {a, b};
  Node *n = ir_node_new(g, op, in, b ? 2 : 1, loc);
  char msg[256];
  n->name = name;
  if (!ir_infer_type(n, msg, sizeof msg)) fail_msg("shape rule: %s", msg);
  return n;
}

static Type T(DType dt, int rank, int64_t d0, int64_t d1) {
  return ir_type(dt, rank, (int64_t[]){d0, d1});
}

/* The model of docs/IR.md: a two-layer MLP with a loss and SGD. */
static Graph *build_mlp(void) {
  Graph *g = ir_graph_new("mlp");
  g->sizes = arena_array(&g->arena, 2, sizeof *g->sizes);
  g->sizes[0] = (SizeParam){"batch", 4};
  g->sizes[1] = (SizeParam){"hidden", 8};
  g->nsizes = 2;
  Node *x = source(g, OP_INPUT, "x", T(DT_F32, 2, 4, 16), L(3, 10));
  Node *w1 = param(g, "w1", "glorot", T(DT_F32, 2, 16, 8), L(6, 10));
  Node *b1 = param(g, "b1", "zeros", T(DT_F32, 1, 8, 0), L(7, 10));
  Node *mm = op2(g, OP_MATMUL, x, w1, NULL, L(11, 14));
  Node *add = op2(g, OP_ADD, mm, b1, NULL, L(11, 19));
  Node *h = op2(g, OP_RELU, add, NULL, "h", L(11, 12));
  Node *w2 = param(g, "w2", "normal", T(DT_F32, 2, 8, 3), L(8, 10));
  ir_set_attr_floats(w2, "args", (double[]){0, 0.02}, 2);
  Node *logits = op2(g, OP_MATMUL, h, w2, "logits", L(12, 12));
  Node *y = source(g, OP_INPUT, "y", T(DT_I32, 1, 4, 0), L(3, 20));
  Node *loss = op2(g, OP_CROSS_ENTROPY, logits, y, "loss", L(16, 9));
  Node *c = source(g, OP_CONST, NULL, T(DT_F32, 0, 0, 0), (Loc){0});
  ir_set_attr_float(c, "value", 0.5);
  Node *s = ir_node_new(g, OP_SUM, &h, 1, L(13, 3));
  ir_set_attr_ints(s, "axes", (int64_t[]){0, 1}, 2);
  ir_set_attr_int(s, "keepdim", 0);
  char msg[256];
  assert_true(ir_infer_type(s, msg, sizeof msg));
  ir_add_output(g, "logits", logits);
  ir_add_output(g, "s", s);
  g->loss = loss;
  g->optim = (Optim){.kind = OPTIM_SGD, .lr = 0.01, .momentum = 0.9};
  g->train_loc = L(16, 3);
  return g;
}

static const char mlp_text[] =
    "graph mlp(batch=4, hidden=8) {\n"
    "  %x = input : f32[4,16]                                # mlp.kl:3:10\n"
    "  %w1 = param {init=glorot, args=[]} : f32[16,8]        # mlp.kl:6:10\n"
    "  %b1 = param {init=zeros, args=[]} : f32[8]            # mlp.kl:7:10\n"
    "  %3 = matmul %x, %w1 : f32[4,8]                        # mlp.kl:11:14\n"
    "  %4 = add %3, %b1 : f32[4,8]                           # mlp.kl:11:19\n"
    "  %h = relu %4 : f32[4,8]                               # mlp.kl:11:12\n"
    "  %w2 = param {init=normal, args=[0, 0.02]} : f32[8,3]  # mlp.kl:8:10\n"
    "  %logits = matmul %h, %w2 : f32[4,3]                   # mlp.kl:12:12\n"
    "  %y = input : i32[4]                                   # mlp.kl:3:20\n"
    "  %loss = cross_entropy %logits, %y : f32[]             # mlp.kl:16:9\n"
    "  %10 = const {value=0.5} : f32[]\n"
    "  %11 = sum %h {axes=[0, 1], keepdim=0} : f32[]         # mlp.kl:13:3\n"
    "  output logits = %logits\n"
    "  output s = %11\n"
    "  train %loss sgd {lr=0.01, momentum=0.9, weight_decay=0}  # mlp.kl:16:3\n"
    "}\n";

/* ---- Printing ------------------------------------------------------------- */

static void test_print_mlp(void **state) {
  (void)state;
  Graph *g = build_mlp();
  assert_verified(g);
  char *out = print_str(g);
  assert_string_equal(out, mlp_text);
  free(out);
  ir_graph_free(g);
}

static void test_print_parse_print(void **state) {
  (void)state;
  Graph *g = build_mlp();
  char *once = print_str(g);
  Graph *back = parse_str(once, NULL);
  assert_non_null(back);
  assert_verified(back);
  char *twice = print_str(back);
  assert_string_equal(twice, once);
  /* Names, locations and the optimizer come back, not only the text. */
  assert_string_equal(back->nodes[5]->name, "h");
  assert_null(back->nodes[3]->name);
  assert_string_equal(back->nodes[3]->loc.file, "mlp.kl");
  assert_ptr_equal(back->nodes[3]->loc.file, back->nodes[4]->loc.file); /* interned */
  assert_int_equal(back->nodes[3]->loc.line, 11);
  assert_int_equal(back->nodes[3]->loc.col, 14);
  assert_int_equal(back->nodes[10]->loc.line, 0);
  assert_ptr_equal(back->loss, back->nodes[9]);
  assert_int_equal(back->optim.kind, OPTIM_SGD);
  assert_true(back->optim.momentum == 0.9);
  assert_int_equal(back->train_loc.line, 16);
  assert_int_equal(back->nsizes, 2);
  assert_string_equal(back->sizes[1].name, "hidden");
  free(once);
  free(twice);
  ir_graph_free(back);
  ir_graph_free(g);
}

/* Repeated or invalid names print as the node's index, so the text stays SSA;
 * dotted names are names. */
static void test_print_names(void **state) {
  (void)state;
  Graph *g = ir_graph_new("names");
  Node *x = source(g, OP_INPUT, "fc1.x", T(DT_F32, 1, 2, 0), (Loc){0});
  Node *a = op2(g, OP_RELU, x, NULL, "fc1.h", (Loc){0});
  Node *b = op2(g, OP_TANH, a, NULL, "fc1.h", (Loc){0});
  Node *c = op2(g, OP_EXP, b, NULL, "3bad", (Loc){0});
  Node *d = op2(g, OP_NEG, c, NULL, "a-b", (Loc){0});
  ir_add_output(g, "out", d);
  char *out = print_str(g);
  assert_string_equal(out, "graph names {\n"
                           "  %fc1.x = input : f32[2]\n"
                           "  %fc1.h = relu %fc1.x : f32[2]\n"
                           "  %2 = tanh %fc1.h : f32[2]\n"
                           "  %3 = exp %2 : f32[2]\n"
                           "  %4 = neg %3 : f32[2]\n"
                           "  output out = %4\n"
                           "}\n");
  free(out);
  ir_graph_free(g);

  /* A param keeps its name even when a computed value took it first. */
  g = ir_graph_new("shadow");
  x = source(g, OP_INPUT, "x", T(DT_F32, 1, 2, 0), (Loc){0});
  a = op2(g, OP_RELU, x, NULL, "w", (Loc){0});
  Node *w = param(g, "w", "zeros", T(DT_F32, 1, 2, 0), (Loc){0});
  ir_add_output(g, "out", op2(g, OP_ADD, a, w, NULL, (Loc){0}));
  assert_verified(g);
  out = print_str(g);
  assert_string_equal(out, "graph shadow {\n"
                           "  %x = input : f32[2]\n"
                           "  %1 = relu %x : f32[2]\n"
                           "  %w = param {init=zeros, args=[]} : f32[2]\n"
                           "  %3 = add %1, %w : f32[2]\n"
                           "  output out = %3\n"
                           "}\n");
  free(out);
  ir_graph_free(g);
}

static double const_value(const char *text) {
  Graph *g = parse_str(text, NULL);
  assert_non_null(g);
  double v = g->nodes[0]->attr[0].f[0];
  ir_graph_free(g);
  return v;
}

/* Floats print in the shortest form that reads back to the same double. */
static void test_print_floats(void **state) {
  (void)state;
  static const struct {
    double v;
    const char *text;
  } cases[] = {
      {0.5, "0.5"},
      {0.1, "0.1"},
      {1e-08, "1e-08"},
      {1.0 / 3, "0.3333333333333333"},
      {-0.0, "-0"},
      {100, "1e+02"},
      {1e300, "1e+300"},
      {5e-324, "5e-324"},
      {0.30000000000000004, "0.30000000000000004"},
      {-2.5, "-2.5"},
      {INFINITY, "inf"},
      {-INFINITY, "-inf"},
      {NAN, "nan"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Graph *g = ir_graph_new("f");
    Node *c = source(g, OP_CONST, "c", T(DT_F32, 0, 0, 0), (Loc){0});
    ir_set_attr_float(c, "value", cases[i].v);
    char *out = print_str(g), expect[128];
    snprintf(expect, sizeof expect, "graph f {\n  %%c = const {value=%s} : f32[]\n}\n",
             cases[i].text);
    assert_string_equal(out, expect);
    double back = const_value(out);
    if (isnan(cases[i].v))
      assert_true(isnan(back));
    else
      assert_memory_equal(&back, &cases[i].v, sizeof back);
    free(out);
    ir_graph_free(g);
  }
}

/* A long line keeps two spaces before its location comment. */
static void test_print_long_line(void **state) {
  (void)state;
  Graph *g = ir_graph_new("long");
  Node *x = source(g, OP_INPUT, "a_rather_long_input_name_for_this", T(DT_F32, 2, 1024, 1024),
                   (Loc){"dir/with:colon.kl", 12, 3});
  (void)x;
  char *out = print_str(g);
  assert_string_equal(out, "graph long {\n"
                           "  %a_rather_long_input_name_for_this = input : f32[1024,1024]  # "
                           "dir/with:colon.kl:12:3\n"
                           "}\n");
  Graph *back = parse_str(out, NULL);
  assert_non_null(back);
  assert_string_equal(back->nodes[0]->loc.file, "dir/with:colon.kl");
  assert_int_equal(back->nodes[0]->loc.line, 12);
  ir_graph_free(back);
  free(out);
  ir_graph_free(g);
}

/* ---- Parsing -------------------------------------------------------------- */

/* Every op of ops.def, in two handwritten graphs that print back verbatim. */
static const char ops1_text[] = "graph ops1(n=2, m=3) {\n"
                                "  %x = input : f32[2,3]\n"
                                "  %y = input : f32[3]\n"
                                "  %p = param {init=normal, args=[0, 0.02]} : f32[2,3]\n"
                                "  %w = param {init=glorot, args=[]} : f32[3,5]\n"
                                "  %g = param {init=ones, args=[]} : f32[3]\n"
                                "  %b = param {init=zeros, args=[]} : f32[3]\n"
                                "  %c = const {value=-1.5} : f32[]\n"
                                "  %mask = causal_mask : f32[4,4]\n"
                                "  %8 = neg %x : f32[2,3]\n"
                                "  %9 = relu %x : f32[2,3]\n"
                                "  %10 = sigmoid %x : f32[2,3]\n"
                                "  %11 = tanh %x : f32[2,3]\n"
                                "  %12 = exp %x : f32[2,3]\n"
                                "  %13 = log %x : f32[2,3]\n"
                                "  %14 = sqrt %x : f32[2,3]\n"
                                "  %15 = rsqrt %x : f32[2,3]\n"
                                "  %16 = abs %x : f32[2,3]\n"
                                "  %17 = gelu %x : f32[2,3]\n"
                                "  %18 = silu %x : f32[2,3]\n"
                                "  %19 = pow %x {exponent=2} : f32[2,3]\n"
                                "  %20 = add %x, %y : f32[2,3]\n"
                                "  %21 = sub %x, %p : f32[2,3]\n"
                                "  %22 = mul %x, %c : f32[2,3]\n"
                                "  %23 = div %y, %x : f32[2,3]\n"
                                "  %24 = maximum %x, %y : f32[2,3]\n"
                                "  %25 = minimum %x, %y : f32[2,3]\n"
                                "  %26 = matmul %x, %w : f32[2,5]\n"
                                "  %27 = sum %x {axes=[1], keepdim=1} : f32[2,1]\n"
                                "  %28 = mean %x {axes=[0, 1], keepdim=0} : f32[]\n"
                                "  %29 = max %x {axes=[], keepdim=0} : f32[2,3]\n"
                                "  %30 = softmax %x {axis=1} : f32[2,3]\n"
                                "  %31 = log_softmax %x {axis=0} : f32[2,3]\n"
                                "  %32 = layer_norm %x, %g, %b {eps=1e-05} : f32[2,3]\n"
                                "  %33 = reshape %x : f32[3,2]\n"
                                "  %34 = permute %x {perm=[1, 0]} : f32[3,2]\n"
                                "  %35 = slice %x {begin=[0, 1], end=[2, 3]} : f32[2,2]\n"
                                "  %36 = concat %x, %x, %x {axis=0} : f32[6,3]\n"
                                "  %b.momentum = state : f32[3]\n"
                                "  %38 = add %b.momentum, %b : f32[3]\n"
                                "  output mm = %26\n"
                                "  output cat = %36\n"
                                "  grad %b = %y\n"
                                "  update %b = %38\n"
                                "  update %b.momentum = %38\n"
                                "}\n";

static const char ops2_text[] =
    "graph ops2 {\n"
    "  %img = input : f32[1,3,8,8]                           # cnn.kl:2:3\n"
    "  %k = param {init=kaiming, args=[]} : f32[4,3,3,3]     # cnn.kl:3:3\n"
    "  %kb = param {init=zeros, args=[]} : f32[4]            # cnn.kl:4:3\n"
    "  %conv = conv2d %img, %k, %kb {stride=1, padding=1} : f32[1,4,8,8]  # cnn.kl:5:10\n"
    "  %4 = conv2d %img, %k {stride=2, padding=0} : f32[1,4,3,3]\n"
    "  %5 = max_pool2d %conv {kernel=2, stride=2} : f32[1,4,4,4]\n"
    "  %6 = avg_pool2d %conv {kernel=3, stride=1} : f32[1,4,6,6]\n"
    "  %ids = input : i32[2,5]\n"
    "  %table = param {init=normal, args=[0, 1]} : f32[10,6]\n"
    "  %emb = embedding %ids, %table : f32[2,5,6]\n"
    "  %wih = param {init=uniform, args=[-0.5, 0.5]} : f32[8,6]\n"
    "  %whh = param {init=uniform, args=[-0.5, 0.5]} : f32[8,2]\n"
    "  %bih = param {init=zeros, args=[]} : f32[8]\n"
    "  %bhh = param {init=zeros, args=[]} : f32[8]\n"
    "  %h = lstm %emb, %wih, %whh, %bih, %bhh : f32[2,5,2]\n"
    "  %t = input : f32[2,5,2]\n"
    "  %mse = mse_loss %h, %t : f32[]\n"
    "  %lbl = input : i32[2,5]\n"
    "  %ce = cross_entropy %h, %lbl : f32[]\n"
    "  %pr = sigmoid %h : f32[2,5,2]\n"
    "  %bce = bce_loss %pr, %t : f32[]\n"
    "  %bcel = bce_with_logits %h, %t : f32[]\n"
    "  %22 = add %mse, %ce : f32[]\n"
    "  %total = add %22, %bce : f32[]\n"
    "  output pooled = %5\n"
    "  output avg = %6\n"
    "  output other = %4\n"
    "  output bcel = %bcel\n"
    "  train %total adam {lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0001}  # "
    "cnn.kl:30:3\n"
    "}\n";

/* The backward ops autodiff builds. */
static const char ops3_text[] =
    "graph ops3 {\n"
    "  %x = input : f32[2,3]\n"
    "  %b = input : f32[3]\n"
    "  %g = param {init=ones, args=[]} : f32[3]\n"
    "  %3 = greater %x, %b : f32[2,3]\n"
    "  %4 = equal %x, %b : f32[2,3]\n"
    "  %5 = broadcast %b {shape=[4, 2, 3]} : f32[4,2,3]\n"
    "  %6 = pad %x {before=[1, 0], after=[0, 2]} : f32[3,5]\n"
    "  %7 = gelu_grad %x, %3 : f32[2,3]\n"
    "  %8 = layer_norm_grad %x, %g, %4 {eps=1e-05} : f32[2,3]\n"
    "  %img = input : f32[1,3,8,8]\n"
    "  %k = param {init=he, args=[]} : f32[4,3,3,3]\n"
    "  %dy = input : f32[1,4,4,4]\n"
    "  %12 = conv2d_grad_input %dy, %k {stride=2, padding=1, height=8, width=8} : f32[1,3,8,8]\n"
    "  %13 = conv2d_grad_weight %img, %dy {stride=2, padding=1, kernel_h=3, kernel_w=3} : "
    "f32[4,3,3,3]\n"
    "  %pdy = input : f32[1,3,4,4]\n"
    "  %15 = max_pool2d_grad %img, %pdy {kernel=2, stride=2} : f32[1,3,8,8]\n"
    "  %16 = avg_pool2d_grad %pdy {kernel=2, stride=2, height=8, width=8} : f32[1,3,8,8]\n"
    "  %ids = input : i32[2,5]\n"
    "  %edy = input : f32[2,5,6]\n"
    "  %19 = embedding_grad %ids, %edy {vocab=10} : f32[10,6]\n"
    "  %seq = input : f32[2,5,3]\n"
    "  %wih = param {init=zeros, args=[]} : f32[8,3]\n"
    "  %whh = param {init=zeros, args=[]} : f32[8,2]\n"
    "  %bih = param {init=zeros, args=[]} : f32[8]\n"
    "  %bhh = param {init=zeros, args=[]} : f32[8]\n"
    "  %hdy = input : f32[2,5,2]\n"
    "  %26 = lstm_grad %seq, %wih, %whh, %bih, %bhh, %hdy : f32[78]\n"
    "  %lbl = input : i32[2]\n"
    "  %s = input : f32[]\n"
    "  %29 = cross_entropy_grad %x, %lbl, %s : f32[2,3]\n"
    "  output a = %5\n"
    "  output b = %6\n"
    "  output c = %7\n"
    "  output d = %8\n"
    "  output e = %12\n"
    "  output f = %13\n"
    "  output g = %15\n"
    "  output h = %16\n"
    "  output i = %19\n"
    "  output j = %26\n"
    "  output k = %29\n"
    "}\n";

static void test_parse_every_op(void **state) {
  (void)state;
  bool seen[OP_COUNT] = {false};
  const char *texts[] = {ops1_text, ops2_text, ops3_text, mlp_text};
  for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
    Graph *g = assert_roundtrip(texts[t]);
    for (int i = 0; i < g->nnodes; i++) seen[g->nodes[i]->op] = true;
    ir_graph_free(g);
  }
  for (int op = 0; op < OP_COUNT; op++)
    if (!seen[op]) fail_msg("no round-trip text uses op %s", ir_op_name((OpKind)op));
}

/* Comments anywhere, blank lines, other spacing and attribute order are
 * accepted; the printer puts everything back in canonical form. */
static void test_parse_lenient(void **state) {
  (void)state;
  const char *ok = "# --- IR after dce ---\n"
                   "graph  g ( n = 2 ) {   # the header\n"
                   "\t%a=input:f32[2]#not a location\n"
                   "   # a comment line\r\n"
                   "  %7 = sum %a {keepdim=1,axes=[ 0 ]} : f32[1] # x.kl:1:2\r\n"
                   "  output o = %7\n"
                   "}\n";
  Graph *g = parse_str(ok, NULL);
  assert_non_null(g);
  char *out = print_str(g);
  assert_string_equal(out, "graph g(n=2) {\n"
                           "  %a = input : f32[2]\n"
                           "  %1 = sum %a {axes=[0], keepdim=1} : f32[1]            # x.kl:1:2\n"
                           "  output o = %1\n"
                           "}\n");
  free(out);
  ir_graph_free(g);
}

typedef struct ErrCase {
  const char *body; /* lines between "graph g {\n" and "}\n" */
  const char *first_line;
} ErrCase;

static const ErrCase err_cases[] = {
    {"  %a = relu %b : f32[2]\n", "t.ir:2:13: error: use of undefined value %b"},
    {"  %a = frob : f32[2]\n", "t.ir:2:8: error: unknown op 'frob'"},
    {"  %a = input : f32[2]\n  %b = add %a : f32[2]\n",
     "t.ir:3:8: error: add takes 2 inputs, got 1"},
    {"  %a = input : f32[2]\n  %b = input %a : f32[2]\n",
     "t.ir:3:8: error: input takes 0 inputs, got 1"},
    {"  %a = input : f32[2]\n  %b = relu %a {k=1} : f32[2]\n",
     "t.ir:3:17: error: unknown attribute 'k' of relu"},
    {"  %a = input : f32[2]\n  %b = sum %a : f32[]\n",
     "t.ir:3:15: error: missing attribute 'axes' of sum"},
    {"  %a = input : f32[2]\n  %b = sum %a {axes=[0]} : f32[]\n",
     "t.ir:3:15: error: missing attribute 'keepdim' of sum"},
    {"  %a = input : f32[2]\n  %b = sum %a {axes=0, keepdim=0} : f32[]\n",
     "t.ir:3:21: error: attribute 'axes' of sum must be a list of ints"},
    {"  %a = input : f32[2]\n  %b = sum %a {axes=[0], keepdim=0.5} : f32[]\n",
     "t.ir:3:34: error: attribute 'keepdim' of sum must be an int"},
    {"  %a = param {init=1, args=[]} : f32[2]\n",
     "t.ir:2:20: error: attribute 'init' of param must be a name"},
    {"  %a = input : f32[2]\n  %b = sum %a {axes=[0], axes=[0], keepdim=0} : f32[]\n",
     "t.ir:3:26: error: duplicate attribute 'axes'"},
    {"  %a = input : f16[2]\n",
     "t.ir:2:16: error: malformed type: expected a dtype (f32, i32, f64), got 'f16'"},
    {"  %a = input : f32[2\n", "t.ir:2:21: error: malformed type: expected ']', got end of line"},
    {"  %a = input : f32(2)\n", "t.ir:2:19: error: malformed type: expected '[', got '('"},
    {"  %a = input : f32[1,1,1,1,1,1,1,1,1]\n",
     "t.ir:2:36: error: malformed type: more than 8 dimensions"},
    {"  %a = input : f32[99999999999999999999]\n",
     "t.ir:2:20: error: malformed type: bad dimension '99999999999999999999'"},
    {"  %a = input : f32[-2]\n", "t.ir:2:20: error: malformed type: dimension -2 out of range"},
    {"  %a = input : f32[0]\n",
     "t.ir:2:16: error: input a: dim 0 of f32[0] is 0; every dim must be >= 1"},
    {"  %a = input : f32[2]\n  %b = relu %a : f32[3]\n",
     "t.ir:3:18: error: type mismatch: printed f32[3] but the shape rule gives f32[2]"},
    {"  %a = input : f32[2]\n  %b = input : f32[3]\n  %c = add %a, %b : f32[2]\n",
     "t.ir:4:8: error: add: cannot broadcast f32[2] with f32[3]"},
    {"  %a = input : f32[2,3]\n  %b = permute %a {perm=[0, 1, 2, 3, 4, 5, 6, 7, 8]} : f32[2,3]\n",
     "t.ir:3:50: error: attribute 'perm' of permute has more than 8 elements"},
    {"  %a = input : f32[2]\n  %a = input : f32[2]\n", "t.ir:3:3: error: redefinition of %a"},
    {"  %4 = param {init=zeros, args=[]} : f32[2]\n",
     "t.ir:2:3: error: param %4 needs a name (%NAME, not %NUMBER)"},
    {"  %4a = input : f32[2]\n",
     "t.ir:2:3: error: bad value name '%4a': expected %NUMBER or %IDENTIFIER"},
    {"  %a = input : f32[2] $\n", "t.ir:2:23: error: unexpected character '$'"},
    {"  %a = input : f32[2] ]\n", "t.ir:2:23: error: unexpected ']' at the end of the line"},
    {"  %a input : f32[2]\n", "t.ir:2:6: error: expected '=', got 'input'"},
    {"  %a = input : f32[2]\n  %b = add %a, : f32[2]\n",
     "t.ir:3:16: error: expected a value, got ':'"},
    {"  relu\n",
     "t.ir:2:3: error: expected a node, 'output', 'train', 'grad', 'update' or '}', got 'relu'"},
    {"  %a = input : f32[2]\n  output = %a\n",
     "t.ir:3:10: error: expected an output name, got '='"},
    {"  %a = input : f32[2]\n  train %a sgd {lr=0.1, momentum=0, weight_decay=0}\n",
     "t.ir:3:9: error: the loss must be a float scalar, not f32[2]"},
    {"  %a = const {value=1} : f32[]\n  train %a rmsprop {lr=0.1}\n",
     "t.ir:3:12: error: unknown optimizer 'rmsprop': expected sgd or adam"},
    {"  %a = const {value=1} : f32[]\n  train %a sgd {lr=0.1}\n",
     "t.ir:3:16: error: missing attribute 'momentum' of sgd"},
    {"  %a = const {value=1} : f32[]\n  train %a\n  train %a\n",
     "t.ir:4:3: error: duplicate train statement"},
    {"  %a = const {value=x} : f32[]\n",
     "t.ir:2:21: error: attribute 'value' of const must be a float"},
    {"  %a = input : i32[2]\n  %b = relu %a : i32[2]\n",
     "t.ir:3:8: error: relu expects a float tensor, got i32[2]"},
    {"  %m = causal_mask : f32[2,3]\n",
     "t.ir:2:22: error: causal_mask: expected f32[n,n], got f32[2,3]"},
};

static void test_parse_errors(void **state) {
  (void)state;
  int bad = 0;
  for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
    char text[512], *diag = NULL;
    snprintf(text, sizeof text, "graph g {\n%s}\n", err_cases[i].body);
    Graph *g = parse_str(text, &diag);
    if (g) fail_msg("case %zu parsed:\n%s", i, text);
    size_t n = strcspn(diag, "\n");
    if (strlen(err_cases[i].first_line) != n || strncmp(diag, err_cases[i].first_line, n) != 0) {
      print_error("case %zu:\n%sexpected: %s\ngot:      %.*s\n", i, text, err_cases[i].first_line,
                  (int)n, diag);
      bad++;
    }
    free(diag);
  }
  assert_int_equal(bad, 0);
}

/* The whole diagnostic: message, source line, caret, and the note. */
static void test_parse_error_caret(void **state) {
  (void)state;
  char *diag = NULL;
  assert_null(parse_str("graph g {\n  %a = input : f32[2]\n  %a = input : f32[2]\n}\n", &diag));
  assert_string_equal(diag, "t.ir:3:3: error: redefinition of %a\n"
                            "  %a = input : f32[2]\n"
                            "  ^\n"
                            "t.ir:2:3: note: previous definition is here\n"
                            "  %a = input : f32[2]\n"
                            "  ^\n");
  free(diag);
}

static void test_parse_structure_errors(void **state) {
  (void)state;
  static const struct {
    const char *text, *first_line;
  } cases[] = {
      {"", "t.ir:1:1: error: expected 'graph', got end of input"},
      {"# only a comment\n", "t.ir:1:1: error: expected 'graph', got end of input"},
      {"model g {\n}\n", "t.ir:1:1: error: expected 'graph', got 'model'"},
      {"graph {\n}\n", "t.ir:1:7: error: expected the graph's name, got '{'"},
      {"graph g(n=x) {\n}\n", "t.ir:1:11: error: expected an integer size, got 'x'"},
      {"graph g {\n  %a = input : f32[2]\n", "t.ir:3:1: error: missing '}' at the end of graph g"},
      {"graph g {\n}\n%a = input : f32[2]\n",
       "t.ir:3:1: error: unexpected text after the end of the graph"},
      {"graph g { %a = input : f32[2]\n}\n",
       "t.ir:1:11: error: unexpected '%a' at the end of the line"},
      {"graph g {\n  %a = input : f32[2]\x01\n}\n", "t.ir:2:22: error: unexpected byte 0x01"},
      {"graph g {\n  %a = input\r: f32[2]\n}\n", "t.ir:2:13: error: unexpected byte 0x0d"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *diag = NULL;
    assert_null(parse_str(cases[i].text, &diag));
    size_t n = strcspn(diag, "\n");
    if (strlen(cases[i].first_line) != n || strncmp(diag, cases[i].first_line, n) != 0)
      fail_msg("case %zu: expected: %s\ngot:      %.*s", i, cases[i].first_line, (int)n, diag);
    free(diag);
  }
  /* A NUL byte inside the text is a located error, not the end of it. */
  static const char nul[] = "graph g {\n  %a = input\0 : f32[2]\n}\n";
  Diag d;
  char *buf = NULL;
  size_t len = 0;
  diag_init(&d, "t.ir", nul, sizeof nul - 1);
  d.out = open_memstream(&buf, &len);
  assert_null(ir_parse(&d, nul, sizeof nul - 1));
  fclose(d.out);
  assert_true(strncmp(buf, "t.ir:2:13: error: unexpected byte 0x00\n", 39) == 0);
  free(buf);
}

/* Prefixes and byte mutations of valid texts never crash the parser, and any
 * text it accepts satisfies print(parse(print(g))) == print(g). */
static void check_mutant(const char *text, size_t len) {
  Diag d;
  char *buf = NULL;
  size_t blen = 0;
  diag_init(&d, "m.ir", text, len);
  d.out = open_memstream(&buf, &blen);
  Graph *g = ir_parse(&d, text, len);
  fclose(d.out);
  free(buf);
  if (!g) return;
  assert_verified(g);
  char *once = print_str(g);
  Graph *back = parse_str(once, NULL);
  assert_non_null(back);
  char *twice = print_str(back);
  assert_string_equal(once, twice);
  free(once);
  free(twice);
  ir_graph_free(back);
  ir_graph_free(g);
}

static void test_parse_mutations(void **state) {
  (void)state;
  static const char alphabet[] = "%=,:{}[]()# \n\t0123456789-+.eafinx_\x80\xff";
  const char *texts[] = {ops1_text, ops2_text, ops3_text, mlp_text};
  unsigned seed = 12345;
  for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
    size_t len = strlen(texts[t]);
    char *m = malloc(len + 1);
    for (size_t cut = 0; cut <= len; cut += 3) {
      memcpy(m, texts[t], cut); /* exactly cut bytes: ASan sees any overread */
      check_mutant(m, cut);
    }
    for (int iter = 0; iter < 3000; iter++) {
      memcpy(m, texts[t], len);
      for (int k = 0; k < 3; k++) {
        seed = seed * 1103515245u + 12345u;
        size_t pos = (seed >> 8) % len;
        seed = seed * 1103515245u + 12345u;
        m[pos] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
      }
      check_mutant(m, len);
    }
    free(m);
  }
}

/* ---- Verify --------------------------------------------------------------- */

static void assert_verify_fails(const Graph *g, const char *expect) {
  char msg[512];
  assert_false(ir_verify(g, msg, sizeof msg));
  assert_string_equal(msg, expect);
}

static void test_verify(void **state) {
  (void)state;
  Graph *g = build_mlp();
  assert_verified(g);
  Node *h = g->nodes[5], *mm = g->nodes[3];

  /* A users list that lost an entry. */
  h->nusers--;
  assert_verify_fails(g, "node 11 (sum) uses node 5 (relu %h) 1 times, but its users list has it "
                         "0 times");
  h->nusers++;

  /* A stale type. */
  mm->type.dims[1] = 9;
  assert_verify_fails(g, "node 3 (matmul): type f32[4,9] but the shape rule gives f32[4,8]");
  mm->type.dims[1] = 8;

  /* An input after its user. */
  Node *tmp = g->nodes[3];
  g->nodes[3] = g->nodes[4];
  g->nodes[4] = tmp;
  assert_verify_fails(g, "node 3 (add): input 0 (node 4) does not come before it");
  g->nodes[4] = g->nodes[3];
  g->nodes[3] = tmp;

  /* Two params named alike. */
  g->nodes[2]->name = "w1";
  assert_verify_fails(g, "node 1 (param %w1) and node 2 (param %w1) have the same name");
  g->nodes[2]->name = "b1";

  /* A name attribute the text IR could not spell. */
  const char *init = g->nodes[1]->attr[0].s;
  g->nodes[1]->attr[0].s = "he normal";
  assert_verify_fails(g, "node 1 (param %w1): attribute 'init' is malformed (n = 1, not a NAME)");
  g->nodes[1]->attr[0].s = init;

  /* A loss that is not a scalar. */
  Node *loss = g->loss;
  g->loss = h;
  assert_verify_fails(g, "the loss (node 5) must be a float scalar, not f32[4,8]");
  g->loss = loss;

  /* A list attribute longer than allowed, a duplicate id. */
  g->nodes[11]->attr[0].n = IR_MAX_ATTR_LEN + 1;
  assert_verify_fails(g, "node 11 (sum): attribute 'axes' is malformed (n = 9)");
  g->nodes[11]->attr[0].n = 2;
  g->nodes[10]->id = 3;
  assert_verify_fails(g, "node 10 (const): id 3 is also the id of node 3");
  g->nodes[10]->id = 10;

  assert_verified(g);
  ir_graph_free(g);
}

/* ---- Dot ------------------------------------------------------------------ */

static void test_dot(void **state) {
  (void)state;
  Graph *g = build_mlp();
  g->nodes[0]->name = "x\"q"; /* an odd name is escaped, not broken */
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ir_print_dot(f, g);
  fclose(f);
  assert_true(strncmp(buf, "digraph \"mlp\" {\n", 16) == 0);
  assert_non_null(strstr(buf, "  n0 [label=\"%0\\ninput\\nf32[4,16]\", shape=invhouse"));
  assert_non_null(strstr(buf, "  n5 [label=\"%h\\nrelu\\nf32[4,8]\", shape=box];\n"));
  assert_non_null(strstr(buf, "  n0 -> n3 [label=\"0\", fontsize=9];\n"));
  assert_non_null(strstr(buf, "shape=cylinder"));
  assert_non_null(strstr(buf, "  n7 -> out0 [style=dashed];\n"));
  assert_non_null(strstr(buf, "  n9 -> train"));
  assert_int_equal(buf[len - 2], '}');
  free(buf);
  g->name = "a\"b";
  f = open_memstream(&buf, &len);
  ir_print_dot(f, g);
  fclose(f);
  assert_true(strncmp(buf, "digraph \"a\\\"b\" {\n", 17) == 0);
  free(buf);
  ir_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_print_mlp),
      cmocka_unit_test(test_print_parse_print),
      cmocka_unit_test(test_print_names),
      cmocka_unit_test(test_print_floats),
      cmocka_unit_test(test_print_long_line),
      cmocka_unit_test(test_parse_every_op),
      cmocka_unit_test(test_parse_lenient),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_parse_error_caret),
      cmocka_unit_test(test_parse_structure_errors),
      cmocka_unit_test(test_parse_mutations),
      cmocka_unit_test(test_verify),
      cmocka_unit_test(test_dot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
