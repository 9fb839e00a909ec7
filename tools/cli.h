/* cli.h - what the kiln subcommands share: options, exit codes, loading a model. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "ast.h"
#include "build.h"
#include "ir.h"
#include "passes.h"
#include "tensor_io.h"

/* SPEC §2 exit statuses. */
enum { EXIT_OK = 0, EXIT_USER = 1, EXIT_USAGE = 2, EXIT_INTERNAL = 70 };

#define KILN_MAX_DEFINES 64
#define KILN_MAX_INPUTS  64

/* --input NAME=FILE.npy */
typedef struct InputArg {
  const char *name; /* malloc'd */
  const char *path;
} InputArg;

typedef enum Backend { BACKEND_JIT, BACKEND_INTERP } Backend;

/* Every flag of every command; each command accepts a subset (kiln.c). */
typedef struct Options {
  const char *cmd;
  const char *model; /* the one positional argument */
  Define defs[KILN_MAX_DEFINES];
  int ndefs;
  InputArg inputs[KILN_MAX_INPUTS];
  int ninputs;
  int opt_level;
  bool verbose, time_passes, show_help;
  Stage stage;
  bool dot;
  PassCtx passes;
  const char *output;  /* -o */
  const char *weights; /* --weights */
  const char *out_dir; /* --out */
  const char *data;    /* --data */
  const char *save;    /* --save */
  Backend backend;
  bool grads, shuffle;
  int64_t steps, epochs; /* 0: not given */
  /* kiln train (train.c) */
  const char *eval;         /* --eval npy:DIR|idx:PREFIX */
  const char *log_path;     /* --log metrics.csv */
  int64_t checkpoint_every; /* --checkpoint-every N; 0: never */
  /* kiln sample (sample.c) */
  const char *prompt; /* --prompt TEXT */
  int64_t count;      /* -n N: bytes to generate */
  double temperature; /* --temperature T (default 1.0) */
  uint64_t seed;
  int threads;         /* 0: all cores */
  const char *emit;    /* kiln compile --emit (NULL: so) */
  bool no_train;       /* kiln compile --no-train */
  bool explain_fusion; /* kiln dump --explain-fusion */
  uint64_t max_memory; /* --max-memory BYTES; 0: the machine's physical memory */
} Options;

/* "kiln: error: MESSAGE" and the command's usage line; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "kiln: error: MESSAGE"; returns EXIT_USER. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double cli_now_ms(void);

/* A loaded model: its source, syntax tree (for .kl) and graph. */
typedef struct Loaded {
  char *src;
  size_t len;
  Arena arena; /* the AST */
  Diag diag;
  Ast ast;
  bool is_ir;
  Graph *graph;
} Loaded;

/* Reads and parses o->model (.kl, or .ir text IR); reports errors itself. */
int cli_load_source(const Options *o, Loaded *m);
/* Builds (or, for .ir, parses) the graph. */
int cli_load_graph(const Options *o, Loaded *m);
/* Both, then the pipeline up to stage. */
int cli_load_model(Options *o, Loaded *m, Stage upto);
void cli_loaded_free(Loaded *m);

/* Binds every param of g from a safetensors file (run.c): none missing, none
 * extra, each of the right dtype and shape; optimizer state ("optim.*") is
 * skipped. */
struct Interp;
int cli_bind_weights(struct Interp *it, const Graph *g, const char *path);

/* Shared by init, run and train (run.c). */
KilnDType cli_kiln_dtype(DType dt);
DType cli_ir_dtype(KilnDType dt);
/* A KilnTensor viewing (not owning) a node's type and the given data. */
KilnTensor cli_tensor_view(const Node *n, const char *name, const void *data);
/* Fills a param's data (numel of its dtype) by its INIT rule for the seed,
 * exactly as kiln init writes it (runtime/rng.h). */
int cli_init_param(const Node *p, uint64_t seed, void *data);
/* Marks the nodes the outputs (if outputs) and the loss (if loss) depend on;
 * needed has g->next_id entries, all false. */
void cli_mark_needed(const Graph *g, bool outputs, bool loss, bool *needed);
/* Binds zeros to every input of g not marked in needed: in a train graph
 * every input stays, but one that neither an output nor the loss reads
 * changes nothing. */
int cli_bind_zero_inputs(struct Interp *it, const Graph *g, const bool *needed);

int cmd_init(Options *o);
int cmd_run(Options *o);
int cmd_train(Options *o);
int cmd_sample(Options *o);

/* Ahead-of-time compilation (aot.c) and the JIT path of kiln run (jit_run.c). */
int cmd_compile(Options *o);
int cmd_build(Options *o);
int cli_run_jit(Options *o);
/* Writes each tensor as DIR/NAME.npy (NAME its name), all or none (run.c). */
/* ts[0..n) as DIR/NAME.npy and, with grads, grads[0..ngrads) as DIR/grads.safetensors: all
 * of them or none (written into a temporary folder first). */
int cli_write_npy_files(const char *dir, const KilnTensor *ts, int n, const KilnTensor *grads,
                        int ngrads);
/* kiln run --grads: the model has a train statement and autodiff recorded its gradients. */
int cli_grads_checks(const Options *o, const Graph *g);

/* ---- --max-memory (cli.c) ----------------------------------------------- */

/* What a graph needs at most: every value its own buffer, before any memory
 * planning (the backend's planned arena can replace this bound later). */
typedef struct KilnMemory {
  uint64_t params, grads, state, activations; /* activations: inputs and intermediates */
  uint64_t total;
} KilnMemory;
KilnMemory cli_memory_estimate(const Graph *g);
/* sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE), the default limit. */
uint64_t cli_physical_memory(void);
/* "64.0 GiB", "512 bytes" into buf; returns buf. */
const char *cli_format_bytes(uint64_t bytes, char *buf, size_t len);
/* Refuses (EXIT_USER, with a message naming the sizes) a graph whose estimate
 * exceeds --max-memory. cli_load_model calls it; so do check and dump. */
int cli_check_memory(const Options *o, const Graph *g);

#endif
