/* test_plan.c - fusion and planning: every model and 200 random graphs fused, planned, checked
 * for overlapping buffers, read back, and run on the interpreter against the unfused graph. */
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

#include "ast.h"
#include "build.h"
#include "interp.h"
#include "passes.h"

#define NRANDOM 200

/* ---- An independent checker: no two simultaneously live buffers overlap ---- */

static bool is_output(const Graph *g, const Node *n) {
  for (int k = 0; k < g->noutputs; k++)
    if (g->outputs[k].node == n) return true;
  return false;
}

/* Read after the last kernel by the entry points (outputs are written to the caller by m_infer). */
static bool lives_to_end(const Graph *g, const Node *n) {
  for (int k = 0; k < g->ngrads; k++)
    if (g->grads[k].grad == n) return true;
  for (int k = 0; k < g->nupdates; k++)
    if (g->updates[k].value == n) return true;
  return n == g->loss;
}

/* The last kernel reading n, directly or through inline nodes. */
static int last_reader(const Node *n) {
  int last = n->kernel;
  for (int u = 0; u < n->nusers; u++) {
    const Node *v = n->users[u];
    int k = v->kernel == IR_KERNEL_INLINE ? last_reader(v) : v->kernel;
    if (k > last) last = k;
  }
  return last;
}

static void check_plan(const Graph *g) {
  assert_int_equal(g->annot, IR_ANNOT_PLANNED);
  int n = g->nnodes;
  int64_t *lo = calloc((size_t)n + 1, sizeof *lo), *hi = calloc((size_t)n + 1, sizeof *hi);
  int *start = calloc((size_t)n + 1, sizeof *start), *end = calloc((size_t)n + 1, sizeof *end);
  int nb = 0;
  for (int i = 0; i < n; i++) {
    const Node *v = g->nodes[i];
    if (v->kernel < 0) {
      assert_int_equal(v->offset, IR_BUF_NONE);
      continue;
    }
    int last = lives_to_end(g, v) ? g->nkernels : last_reader(v);
    if (last > v->kernel || is_output(g, v)) assert_int_not_equal(v->offset, IR_BUF_NONE);
    if (v->offset < 0) continue;
    int64_t size = ir_type_numel(&v->type) * (int64_t)ir_dtype_size(v->type.dtype);
    assert_int_equal(v->offset % IR_BUF_ALIGN, 0);
    assert_true(v->offset + size <= g->arena_bytes);
    lo[nb] = v->offset, hi[nb] = v->offset + size, start[nb] = v->kernel, end[nb] = last;
    nb++;
  }
  for (int a = 0; a < nb; a++)
    for (int b = a + 1; b < nb; b++) {
      bool space = lo[a] < hi[b] && lo[b] < hi[a];
      bool time = start[a] <= end[b] && start[b] <= end[a];
      if (!space || !time) continue;
      /* Only in place: the same bytes, one dying where the other is born. */
      bool inplace = lo[a] == lo[b] && hi[a] == hi[b] && (end[a] == start[b] || end[b] == start[a]);
      if (!inplace)
        fail_msg("buffers [%lld,%lld) k%d..k%d and [%lld,%lld) k%d..k%d overlap", (long long)lo[a],
                 (long long)hi[a], start[a], end[a], (long long)lo[b], (long long)hi[b], start[b],
                 end[b]);
    }
  free(lo), free(hi), free(start), free(end);
}

/* print(parse(print(g))) == print(g) */
static void check_roundtrip(const Graph *g) {
  char *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  FILE *f = open_memstream(&a, &na);
  ir_print(f, g);
  fclose(f);
  Diag d;
  diag_init(&d, "rt.ir", a, na);
  Graph *h = ir_parse(&d, a, na);
  assert_non_null(h);
  char msg[512];
  if (!ir_verify(h, msg, sizeof msg)) fail_msg("read back: %s", msg);
  f = open_memstream(&b, &nb);
  ir_print(f, h);
  fclose(f);
  assert_string_equal(a, b);
  ir_graph_free(h);
  free(a), free(b);
}

/* ---- The interpreter gives the same bits with and without the passes ----- */

static uint64_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(rng_state >> 33);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }

static void bind_sources(Interp *it, const Graph *g, uint64_t seed) {
  char err[256];
  uint64_t keep = rng_state;
  rng_state = seed;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (!ir_op_is_named_source(n->op)) continue;
    int64_t numel = ir_type_numel(&n->type);
    if (n->type.dtype == DT_I32) {
      int32_t *v = calloc((size_t)numel, sizeof *v);
      for (int64_t j = 0; j < numel; j++) v[j] = (int32_t)(rnd() % 2);
      assert_true(interp_set(it, n->name, DT_I32, n->type.rank, n->type.dims, v, err, sizeof err));
      free(v);
    } else {
      float *v = calloc((size_t)numel, sizeof *v);
      for (int64_t j = 0; j < numel; j++) v[j] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
      assert_true(interp_set(it, n->name, DT_F32, n->type.rank, n->type.dims, v, err, sizeof err));
      free(v);
    }
  }
  rng_state = keep;
}

static size_t value_bytes(const Node *n) {
  return (size_t)ir_type_numel(&n->type) * ir_dtype_size(n->type.dtype);
}

/* Two steps of both graphs; every output, loss, gradient and updated source bit for bit. */
static void check_same_values(const Graph *ref, const Graph *g, uint64_t seed) {
  Interp *a = interp_new(ref), *b = interp_new(g);
  char err[256];
  assert_non_null(a);
  assert_non_null(b);
  bind_sources(a, ref, seed);
  bind_sources(b, g, seed);
  for (int step = 0; step < 2; step++) {
    assert_true(interp_run(a, err, sizeof err));
    assert_true(interp_run(b, err, sizeof err));
    for (int k = 0; k < ref->noutputs; k++)
      assert_memory_equal(interp_value(a, ref->outputs[k].node),
                          interp_value(b, g->outputs[k].node), value_bytes(ref->outputs[k].node));
    if (ref->loss) assert_memory_equal(interp_value(a, ref->loss), interp_value(b, g->loss), 4);
    for (int k = 0; k < ref->ngrads; k++)
      assert_memory_equal(interp_value(a, ref->grads[k].grad), interp_value(b, g->grads[k].grad),
                          value_bytes(ref->grads[k].grad));
    assert_true(interp_apply_updates(a, err, sizeof err));
    assert_true(interp_apply_updates(b, err, sizeof err));
    for (int k = 0; k < ref->nupdates; k++) {
      const Node *t = ref->updates[k].target;
      assert_memory_equal(interp_source(a, t->name), interp_source(b, t->name), value_bytes(t));
    }
  }
  interp_free(a);
  interp_free(b);
}

static Graph *run_to(Graph *g, Stage s, bool inference) {
  PassCtx cx;
  pass_ctx_init(&cx);
  cx.verify = true;
  cx.inference = inference;
  assert_true(pass_run_pipeline(g, s, &cx));
  return g;
}

/* ---- The models --------------------------------------------------------- */

static Arena ast_arena;

static Graph *load_model(const char *name, int64_t batch) {
  char path[512];
  snprintf(path, sizeof path, "%s/models/%s.kl", KILN_SOURCE_DIR, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char src[1 << 16];
  size_t n = fread(src, 1, sizeof src - 1, f);
  fclose(f);
  src[n] = '\0';
  Diag d;
  diag_init(&d, path, src, n);
  Ast ast;
  assert_true(parse_file(&ast, &ast_arena, &d, src, n));
  Define def = {"batch", batch};
  Graph *g = build_graph(&ast, batch ? &def : NULL, batch ? 1 : 0, &d);
  assert_non_null(g);
  return g;
}

static const char *const models[] = {"mlp", "cnn", "textcls", "transformer", "regression"};

/* The train step and the inference graph of every model: planned, no overlap, read back, and
 * the train step's arena within 5% of the lower bound. */
static void test_models_planned(void **state) {
  (void)state;
  for (size_t m = 0; m < sizeof models / sizeof *models; m++)
    for (int inference = 0; inference < 2; inference++) {
      Graph *g = run_to(load_model(models[m], 0), STAGE_PLANNED, inference);
      check_plan(g);
      check_roundtrip(g);
      PlanStats st;
      plan_stats(g, &st);
      print_message("%-12s %-9s %3d kernels, arena %10lld, sum %10lld, bound %10lld, eff %.4f\n",
                    models[m], inference ? "inference" : "train", st.nkernels,
                    (long long)st.arena_bytes, (long long)st.sum_bytes, (long long)st.lower_bound,
                    st.efficiency);
      assert_true(st.arena_bytes >= st.lower_bound);
      if (!inference) assert_true(st.efficiency >= 0.95);
      ir_graph_free(g);
    }
}

/* The interpreter computes the same bits on the fused and planned step (batch 2 for speed). */
static void test_models_same_values(void **state) {
  (void)state;
  for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
    Graph *ref = run_to(load_model(models[m], 2), STAGE_OPT, false);
    Graph *g = run_to(load_model(models[m], 2), STAGE_PLANNED, false);
    check_same_values(ref, g, 42 + m);
    ir_graph_free(ref);
    ir_graph_free(g);
  }
}

/* ---- Random graphs ------------------------------------------------------ */

typedef struct Gen {
  Graph *g;
  Node *pool[64];
  int npool;
} Gen;

static Node *gen_node(Gen *G, OpKind op, Node **in, int nin) {
  Node *n = ir_node_new(G->g, op, in, nin, (Loc){0});
  return n;
}

static Node *gen_finish(Gen *G, Node *n) {
  char msg[256];
  if (!ir_infer_type(n, msg, sizeof msg)) fail_msg("generator: %s", msg);
  if (G->npool < 64) G->pool[G->npool++] = n;
  return n;
}

static Node *pick(Gen *G) { return G->pool[rnd_int(0, G->npool - 1)]; }

/* A node of rank 2 from the pool, or NULL. */
static Node *pick2(Gen *G) {
  for (int t = 0; t < 8; t++) {
    Node *n = pick(G);
    if (n->type.rank == 2) return n;
  }
  return NULL;
}

static Node *gen_source(Gen *G, OpKind op, const char *name, int64_t r, int64_t c) {
  Node *n = gen_node(G, op, NULL, 0);
  n->name = name;
  n->type = ir_type(DT_F32, 2, (int64_t[]){r, c});
  if (op == OP_PARAM) ir_set_attr_name(G->g, n, "init", "zeros");
  if (op == OP_PARAM) ir_set_attr_floats(n, "args", NULL, 0);
  return gen_finish(G, n);
}

/* One random op on pool values whose shapes fit it. */
static void gen_step(Gen *G, int i) {
  static const OpKind unary[] = {OP_RELU, OP_EXP, OP_TANH, OP_NEG, OP_SIGMOID, OP_ABS};
  static const OpKind binary[] = {OP_ADD, OP_MUL, OP_SUB, OP_MAXIMUM};
  Node *a = pick2(G);
  if (!a) return;
  int64_t r = a->type.dims[0], c = a->type.dims[1];
  switch (rnd_int(0, 7)) {
  case 0:
  case 1:
    gen_finish(G, gen_node(G, unary[rnd_int(0, 5)], &a, 1));
    break;
  case 2:
  case 3: { /* a same-shape partner, else a broadcast row of a sum */
    Node *b = pick2(G);
    if (!b || b->type.dims[0] != r || b->type.dims[1] != c) {
      b = gen_node(G, OP_SUM, &a, 1);
      ir_set_attr_ints(b, "axes", (int64_t[]){0}, 1);
      ir_set_attr_int(b, "keepdim", rnd_int(0, 1));
      gen_finish(G, b);
    }
    gen_finish(G, gen_node(G, binary[rnd_int(0, 3)], (Node *[]){a, b}, 2));
    break;
  }
  case 4: {
    Node *s = gen_node(G, OP_SUM, &a, 1);
    ir_set_attr_ints(s, "axes", (int64_t[]){1}, 1);
    ir_set_attr_int(s, "keepdim", 1);
    gen_finish(G, s);
    break;
  }
  case 5: {
    Node *s = gen_node(G, OP_SOFTMAX, &a, 1);
    ir_set_attr_int(s, "axis", 1);
    gen_finish(G, s);
    break;
  }
  case 6: { /* a @ w, w a fresh param */
    static char names[64][16];
    snprintf(names[i % 64], sizeof names[0], "w%d", i);
    Node *w = gen_source(G, OP_PARAM, names[i % 64], c, rnd_int(1, 12));
    gen_finish(G, gen_node(G, OP_MATMUL, (Node *[]){a, w}, 2));
    break;
  }
  default: {
    Node *t = gen_node(G, OP_PERMUTE, &a, 1);
    ir_set_attr_ints(t, "perm", (int64_t[]){1, 0}, 2);
    gen_finish(G, t);
    break;
  }
  }
}

/* A random DAG of elementwise, reduction and matmul nodes with random shapes; half of them with
 * a loss, so autodiff and the optimizer add a backward pass and updates. */
static Graph *gen_graph(uint64_t seed) {
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
  Gen G = {.g = ir_graph_new("rand")};
  int64_t r = rnd_int(1, 6), c = rnd_int(1, 9);
  gen_source(&G, OP_INPUT, "x", r, c);
  gen_source(&G, OP_PARAM, "p", r, c);
  int steps = rnd_int(3, 24);
  for (int i = 0; i < steps; i++) gen_step(&G, i);
  int nout = rnd_int(1, 3);
  for (int k = 0; k < nout; k++) {
    static const char *const names[] = {"o0", "o1", "o2"};
    Node *o = G.pool[G.npool - 1 - rnd_int(0, G.npool > 3 ? 3 : G.npool - 1)];
    if (ir_op_is_named_source(o->op)) continue;
    ir_add_output(G.g, names[k], o);
  }
  if (rnd() % 2) { /* loss = sum of the last value, all axes */
    Node *last = G.pool[G.npool - 1];
    Node *l = gen_node(&G, OP_SUM, &last, 1);
    ir_set_attr_ints(l, "axes", (int64_t[]){0, 1}, last->type.rank);
    ir_set_attr_int(l, "keepdim", 0);
    if (last->type.rank != 2) ir_set_attr_ints(l, "axes", (int64_t[]){0}, last->type.rank);
    gen_finish(&G, l);
    G.g->loss = l;
    G.g->optim = rnd() % 2
                     ? (Optim){OPTIM_SGD, .lr = 0.1, .momentum = 0.9}
                     : (Optim){OPTIM_ADAM, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
  }
  if (G.g->noutputs == 0 && !G.g->loss) ir_add_output(G.g, "o", G.pool[G.npool - 1]);
  return G.g;
}

static void test_random_graphs(void **state) {
  (void)state;
  int kernels = 0, nodes = 0;
  for (uint64_t s = 0; s < NRANDOM; s++) {
    Graph *ref = run_to(gen_graph(s), STAGE_OPT, false);
    Graph *g = run_to(gen_graph(s), STAGE_PLANNED, false);
    check_plan(g);
    check_roundtrip(g);
    check_same_values(ref, g, s);
    PlanStats st;
    plan_stats(g, &st);
    assert_true(st.arena_bytes >= st.lower_bound);
    kernels += g->nkernels, nodes += ref->nnodes;
    ir_graph_free(ref);
    ir_graph_free(g);
  }
  print_message("%d random graphs: %d nodes, %d kernels\n", NRANDOM, nodes, kernels);
}

/* A fused graph reads back, and a pass before fuse that changes it drops its kernels. */
static void test_fused_roundtrip(void **state) {
  (void)state;
  Graph *g = run_to(load_model("mlp", 4), STAGE_FUSED, false);
  assert_int_equal(g->annot, IR_ANNOT_FUSED);
  check_roundtrip(g);
  ir_graph_free(g);
}

/* The parser rejects a kernel annotation it cannot trust. */
static void test_parse_errors(void **state) {
  (void)state;
  static const char *const bad[] = {
      "graph t {\n  %x = input : f32[2]\n  %y = relu %x : f32[2] [k0]\n  output y = %y\n}\n",
      "graph t {\n  fused {kernels=1}\n  %x = input : f32[2]\n  %y = relu %x : f32[2]\n"
      "  output y = %y\n}\n",
      "graph t {\n  fused {kernels=1}\n  %x = input : f32[2]\n  %y = relu %x : f32[2] [k1]\n"
      "  output y = %y\n}\n",
      "graph t {\n  planned {kernels=1, arena=64}\n  %x = input : f32[2]\n"
      "  %y = relu %x : f32[2] [k0 @0+12]\n  output y = %y\n}\n",
      "graph t {\n  planned {kernels=1, arena=64}\n  %x = input : f32[2]\n"
      "  %y = relu %x : f32[2] [k0 @64+8]\n  output y = %y\n}\n",
      "graph t {\n  planned {kernels=1, arena=64}\n  %x = input : f32[2] [k0]\n"
      "  %y = relu %x : f32[2] [k0 @0+8]\n  output y = %y\n}\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    Diag d;
    diag_init(&d, "bad.ir", bad[i], strlen(bad[i]));
    d.out = fopen("/dev/null", "w");
    Graph *g = ir_parse(&d, bad[i], strlen(bad[i]));
    fclose(d.out);
    if (g) fail_msg("case %zu parsed", i);
  }
  const char *ok = "graph t {\n  planned {kernels=1, arena=64}\n  %x = input : f32[2]\n"
                   "  %y = relu %x : f32[2] [k0 @0+8]\n  output y = %y\n}\n";
  Diag d;
  diag_init(&d, "ok.ir", ok, strlen(ok));
  Graph *g = ir_parse(&d, ok, strlen(ok));
  assert_non_null(g);
  char msg[256];
  assert_true(ir_verify(g, msg, sizeof msg));
  check_plan(g);
  ir_graph_free(g);
}

/* The verifier catches overlapping live buffers and a broken kernel order. */
static void test_verify_catches(void **state) {
  (void)state;
  Graph *g = run_to(load_model("mlp", 4), STAGE_PLANNED, false);
  char msg[512];
  Node *a = NULL, *b = NULL;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (n->offset < 0 || n->kernel < 0) continue;
    if (!a)
      a = n;
    else if (!b && n->kernel == a->kernel + 1)
      b = n;
  }
  assert_non_null(a);
  assert_non_null(b);
  int64_t keep = b->offset;
  b->offset = a->offset;
  assert_false(ir_verify(g, msg, sizeof msg));
  b->offset = keep;
  assert_true(ir_verify(g, msg, sizeof msg));
  int k = a->kernel;
  a->kernel = g->nkernels - 1;
  assert_false(ir_verify(g, msg, sizeof msg));
  a->kernel = k;
  assert_true(ir_verify(g, msg, sizeof msg));
  ir_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_errors),       cmocka_unit_test(test_fused_roundtrip),
      cmocka_unit_test(test_verify_catches),     cmocka_unit_test(test_models_planned),
      cmocka_unit_test(test_models_same_values), cmocka_unit_test(test_random_graphs),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  arena_free(&ast_arena);
  return rc;
}
