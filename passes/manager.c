/* manager.c - runs the passes of passes.def in order, with dumps, timing and verification. */
#include "passes.h"

#include <string.h>
#include <time.h>

typedef bool (*PassFn)(Graph *g, PassCtx *cx);

typedef struct PassInfo {
  const char *name;
  Stage stage;
  PassFn fn;
  const char *help;
} PassInfo;

static const PassInfo pass_table[PASS_COUNT] = {
#define PASS(NAME, text, stage, fn, help) [PASS_##NAME] = {text, stage, fn, help},
#include "passes.def"
#undef PASS
};

static const char *const stage_names[STAGE_COUNT] = {
    [STAGE_AST] = "ast",   [STAGE_GRAPH] = "graph", [STAGE_GRAD] = "grad",
    [STAGE_OPT] = "opt",   [STAGE_FUSED] = "fused", [STAGE_PLANNED] = "planned",
    [STAGE_LLVM] = "llvm", [STAGE_ASM] = "asm",
};

void pass_ctx_init(PassCtx *cx) {
  memset(cx, 0, sizeof *cx);
  cx->stop_after = -1;
#ifdef KILN_VERIFY_PASSES
  cx->verify = true;
#endif
}

const char *pass_name(PassId p) { return pass_table[p].name; }
const char *pass_help(PassId p) { return pass_table[p].help; }
Stage pass_stage(PassId p) { return pass_table[p].stage; }
const char *stage_name(Stage s) { return stage_names[s]; }

PassId pass_lookup(const char *name) {
  for (int p = 0; p < PASS_COUNT; p++)
    if (strcmp(pass_table[p].name, name) == 0) return (PassId)p;
  return PASS_COUNT;
}

Stage stage_lookup(const char *name) {
  for (int s = 0; s < STAGE_COUNT; s++)
    if (strcmp(stage_names[s], name) == 0) return (Stage)s;
  return STAGE_COUNT;
}

static double pass_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void pass_dump(PassCtx *cx, const char *when, PassId p, const Graph *g) {
  FILE *f = cx->dump ? cx->dump : stdout;
  fprintf(f, "# --- IR %s %s ---\n", when, pass_table[p].name);
  ir_print(f, g);
}

/* Runs one pass with its dumps, timing and the verifier after it. */
static bool pass_run_one(Graph *g, PassId p, PassCtx *cx) {
  if (cx->print_before[p]) pass_dump(cx, "before", p, g);
  cx->nodes_before[p] = g->nnodes;
  double t0 = pass_now_ms();
  bool changed = pass_table[p].fn(g, cx);
  /* A pass before fuse that changes an annotated graph (a fused .ir read
   * back) leaves its kernels and buffers stale: fuse and plan make them again. */
  if (changed && pass_table[p].stage < STAGE_FUSED) g->annot = IR_ANNOT_NONE;
  cx->ms[p] = pass_now_ms() - t0;
  cx->nodes_after[p] = g->nnodes;
  cx->ran[p] = true;
  if (cx->verify) {
    char msg[512];
    if (!ir_verify(g, msg, sizeof msg)) {
      fprintf(stderr, "kiln: internal error: IR invalid after pass '%s': %s\n", pass_table[p].name,
              msg);
      return false;
    }
  }
  if (cx->print_after[p]) pass_dump(cx, "after", p, g);
  return true;
}

bool pass_run_pipeline(Graph *g, Stage upto, PassCtx *cx) {
  for (int p = 0; p < PASS_COUNT; p++) {
    if (pass_table[p].stage > upto) break;
    if (!pass_run_one(g, (PassId)p, cx)) return false;
    if (cx->stop_after == p) break;
  }
  return true;
}

void pass_print_times(FILE *f, const PassCtx *cx) {
  double total = 0;
  fprintf(f, "%-16s %10s %8s %8s\n", "pass", "ms", "before", "after");
  for (int p = 0; p < PASS_COUNT; p++) {
    if (!cx->ran[p]) continue;
    fprintf(f, "%-16s %10.3f %8d %8d\n", pass_table[p].name, cx->ms[p], cx->nodes_before[p],
            cx->nodes_after[p]);
    total += cx->ms[p];
  }
  fprintf(f, "%-16s %10.3f\n", "total", total);
}
