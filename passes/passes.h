/* passes.h - the pass manager and the passes it runs. */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include <stdbool.h>
#include <stdio.h>

#include "../ir/ir.h"

/* The stages a user can dump, in pipeline order. */
/* llvm and asm are the backend's output for the whole pipeline (no passes of their own). */
typedef enum Stage {
  STAGE_AST,
  STAGE_GRAPH,
  STAGE_GRAD,
  STAGE_OPT,
  STAGE_FUSED,
  STAGE_PLANNED,
  STAGE_LLVM,
  STAGE_ASM,
  STAGE_COUNT
} Stage;

typedef enum PassId {
#define PASS(NAME, text, stage, fn, help) PASS_##NAME,
#include "passes.def"
#undef PASS
  PASS_COUNT
} PassId;

/* What the backend makes of the fusion groups. pass_fuse asks it after grouping: a group the
 * backend would run as several launches becomes one kernel per launch, and an inline value it
 * would compute into memory by a launch of its own becomes a kernel of its own, so that every
 * kernel of the fused graph is one launch (--stage=fused shows what runs). */
typedef struct FuseTarget {
  const char *name;
  /* For the fused graph g: launch[i], by position in g->nodes, is the index of the backend's
   * launch that computes g->nodes[i] (launches numbered in the order they run), or -1 (sources,
   * values no launch computes on its own: inline nodes evaluated by their readers, values
   * computed into a reader's place). False if out of memory. */
  bool (*launches)(const Graph *g, int *launch);
  /* Why p and its user n, in different kernels of a fused graph though the fusion rules would
   * join them, are separate launches: a sentence into buf (--explain-fusion). */
  void (*why)(const Node *p, const Node *n, char *buf, size_t len);
} FuseTarget;

typedef struct PassCtx {
  const FuseTarget *target; /* NULL: the groups stand as the fusion rules form them */
  FILE *dump;               /* where --print-before/after go (stdout if NULL) */
  bool print_before[PASS_COUNT];
  bool print_after[PASS_COUNT];
  int stop_after;   /* a PassId, or -1 */
  bool time_passes; /* table to stderr after the run */
  bool verify;      /* ir_verify after every pass */
  bool inference;   /* compile for inference: no loss, only the inputs the outputs need */
  double ms[PASS_COUNT];
  int nodes_before[PASS_COUNT], nodes_after[PASS_COUNT];
  bool ran[PASS_COUNT];
} PassCtx;

void pass_ctx_init(PassCtx *cx);
const char *pass_name(PassId p);
/* PASS_COUNT if no pass has that name. */
PassId pass_lookup(const char *name);
Stage pass_stage(PassId p);
const char *pass_help(PassId p);
const char *stage_name(Stage s);
/* STAGE_COUNT if no stage has that name. */
Stage stage_lookup(const char *name);

/* Runs every pass up to and including the last pass of stage `upto`
 * (honouring stop_after). Returns false if the verifier found a broken
 * invariant (an internal error, already reported to stderr). */
bool pass_run_pipeline(Graph *g, Stage upto, PassCtx *cx);
/* The --time-passes table. */
void pass_print_times(FILE *f, const PassCtx *cx);

/* The passes. Each returns true if it changed the graph. */
bool pass_dce(Graph *g, PassCtx *cx);
bool pass_autodiff(Graph *g, PassCtx *cx);
bool pass_optimizer(Graph *g, PassCtx *cx);
bool pass_simplify(Graph *g, PassCtx *cx);
bool pass_cse(Graph *g, PassCtx *cx);
bool pass_fuse(Graph *g, PassCtx *cx);
bool pass_plan(Graph *g, PassCtx *cx);

/* ---- Kernels and buffers (passes/fuse.c, passes/plan.c) ----------------- */

/* kiln dump --explain-fusion: every edge between two kernels (or into an
 * inline node) of a fused graph and why it was left unfused. */
void fuse_explain(FILE *f, const Graph *g, const FuseTarget *t);

/* The planner's figures for a planned graph (g->annot == IR_ANNOT_PLANNED). */
typedef struct PlanStats {
  int nkernels, nbuffers;           /* buffers: arena values */
  int64_t arena_bytes;              /* the arena's size */
  int64_t sum_bytes;                /* every arena buffer's (aligned) size, summed */
  int64_t lower_bound;              /* most bytes simultaneously live */
  int peak_kernel;                  /* the kernel at which lower_bound is reached */
  double efficiency;                /* lower_bound / arena_bytes (1 when both are 0) */
  int64_t grad_bytes, update_bytes; /* values stored outside the arena */
} PlanStats;
void plan_stats(const Graph *g, PlanStats *st);
/* The report as '#' comment lines (the text IR parser ignores them): the
 * figures above and the buffers live at the peak. */
void plan_report(FILE *f, const Graph *g);

#endif
