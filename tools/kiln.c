/* kiln.c - the kiln command line: parses flags, dispatches subcommands, chooses the exit code. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "llvm_backend.h"
#include "llvm_info.h"

typedef struct Command {
  const char *name;
  int (*run)(Options *o);
  const char *usage;
  const char *help;
  const char *flags; /* the flags it accepts, space-separated */
} Command;

static int cmd_help(Options *o);
static int cmd_check(Options *o);
static int cmd_dump(Options *o);

#define COMMON_FLAGS "-D -v -O --time-passes --seed --threads --max-memory"

static const Command commands[] = {
    {"help", cmd_help, "kiln help [COMMAND]", "Print help for kiln or one of its commands.", ""},
    {"check", cmd_check, "kiln check MODEL.kl [-D NAME=VALUE]...",
     "Check a model: parse it, build and verify its graph.\n"
     "Prints its inputs, params and outputs with their shapes, then the total number of\n"
     "trainable parameters.",
     COMMON_FLAGS},
    {"dump", cmd_dump,
     "kiln dump MODEL.kl|MODEL.ir [--stage=ast|graph|grad|opt|fused|planned|llvm|asm]\n"
     "          [--format=text|dot] [--explain-fusion]\n"
     "          [--print-before=PASS|all] [--print-after=PASS|all] [--stop-after=PASS]\n"
     "          [-D NAME=VALUE]... [--time-passes] [-v]",
     "Print the model at a stage of the pipeline.\n"
     "Stages: ast (the syntax tree), graph (the forward graph after its passes), grad\n"
     "(the whole train step: forward, backward, optimizer update), opt (that step after\n"
     "simplify, cse and dce2), fused (each node's kernel: [k3], or [inline] when its\n"
     "readers recompute it), planned (kernels in their final order and each stored value's\n"
     "home: [k3 @OFFSET+BYTES] in the arena, @grad, @update; the plan's figures follow\n"
     "as comments), llvm (the LLVM IR\n"
     "module: kernels, entry points, descriptor; -O0..-O3 as compiled) and asm (the host's\n"
     "assembly of that module). A .ir file (text IR,\n"
     "as dumped) is read back instead of a .kl file. --format=dot writes Graphviz for\n"
     "`dot -Tsvg`. --explain-fusion lists every edge fusion left between two kernels\n"
     "and why, instead of the IR (at the fused stage, or planned if asked).",
     COMMON_FLAGS " --stage --format --print-before --print-after --stop-after --explain-fusion"},
    {"init", cmd_init, "kiln init MODEL.kl -o W.safetensors [--seed S] [-D NAME=VALUE]...",
     "Write the model's parameters, initialized by their INIT rules.\n"
     "The values depend only on the seed (default 0) and each param's name and shape:\n"
     "Philox4x32-10 keyed by the seed, one stream per param name (runtime/rng.h).",
     COMMON_FLAGS " -o"},
    {"run", cmd_run,
     "kiln run MODEL.kl --weights W.safetensors --input NAME=FILE.npy... --out DIR\n"
     "          [--backend=jit|interp] [--grads] [--threads N] [-D NAME=VALUE]...",
     "Run inference and write each output as DIR/NAME.npy.\n"
     "The inputs the outputs (and, with --grads, the loss) depend on are required.\n"
     "--grads (models with a train statement) also writes DIR/grads.safetensors: the\n"
     "loss under its own name and d loss / d param for every param under its name.\n"
     "--backend=jit (the default) compiles the model with LLVM in memory and calls it\n"
     "through its descriptor (--grads through m_grad; W may be a kiln train checkpoint);\n"
     "--backend=interp runs the reference interpreter. --threads N sets the JIT's thread\n"
     "count.",
     COMMON_FLAGS " --weights --input --out --backend --grads"},
    {"compile", cmd_compile,
     "kiln compile MODEL.kl -o OUT [--emit=so|obj|header|llvm|asm] [-O0..3] [--no-train]\n"
     "          [-D NAME=VALUE]...",
     "Compile a model ahead of time (SPEC section 3).\n"
     "--emit=so (the default) writes the shared object OUT and its C header next to it\n"
     "(OUT with .so replaced by .h). The header includes kiln.h: compile programs with\n"
     "-I KILN/runtime. obj, header, llvm and asm write only that to OUT. --no-train\n"
     "leaves out m_train_step and m_grad. The .so depends on libc, libm and pthreads only\n"
     "and exports only the model's functions. Linking uses the C compiler Kiln was\n"
     "configured with; the environment variable KILN_CC overrides it. Code generation\n"
     "for the .so runs on --threads N threads (default: one per core).",
     COMMON_FLAGS " -o --emit --no-train"},
    {"build", cmd_build, "kiln build MODEL.kl -o BIN [--weights W.safetensors] [-D NAME=VALUE]...",
     "Build a standalone executable that runs the model's inference.\n"
     "--weights embeds the (checked) weights in BIN; without it BIN starts from the\n"
     "params `kiln init --seed S` writes unless given --weights at run time. `BIN --help`\n"
     "shows its command line: BIN --input NAME=FILE.npy... --out DIR [--threads N].\n"
     "BIN depends on libc, libm and pthreads only.",
     COMMON_FLAGS " -o --weights"},
    {"train", cmd_train,
     "kiln train MODEL.kl --data npy:DIR|idx:PREFIX --steps N|--epochs E\n"
     "          [--save W.safetensors] [--weights W0.safetensors] [--shuffle] [--seed S]\n"
     "          [--backend=jit|interp] [--threads N] [--eval npy:DIR|idx:PREFIX]\n"
     "          [--log METRICS.csv] [--checkpoint-every N]",
     "Train the model with its train statement's optimizer.\n"
     "--backend=jit (the default) compiles the whole train step with LLVM; --backend=interp\n"
     "runs it on the reference interpreter (same results within float tolerance).\n"
     "Steps take consecutive batches of the data in file order, wrapping around\n"
     "(--shuffle shuffles each epoch with --seed). --epochs E runs ceil(E*N/batch)\n"
     "steps (with --steps too, the fewer). Params start as kiln init --seed writes\n"
     "them. --save writes params and optimizer state; --weights of such a file\n"
     "resumes exactly where it stopped.\n"
     "--eval (the same forms as --data) reports the mean loss over a held-out set after\n"
     "each epoch and at the end, and for a classifier (cross_entropy of an output against\n"
     "an i32 input) the accuracy; params are not updated. On a terminal stderr shows a\n"
     "progress bar, otherwise a log line every tenth of the run. --log writes one CSV\n"
     "row per log point (step,epoch,loss,eval_loss,eval_accuracy,seconds).\n"
     "--checkpoint-every N also writes the --save checkpoint every N steps. Ctrl-C saves\n"
     "to --save (if given) and exits with status 130.",
     COMMON_FLAGS " --data --steps --epochs --save --weights --shuffle --backend --eval --log"
                  " --checkpoint-every"},
    {"sample", cmd_sample,
     "kiln sample MODEL.kl --weights W.safetensors --prompt TEXT [-n N] [--temperature T]\n"
     "          [--seed S] [-D NAME=VALUE]...",
     "Generate text with a byte-level language model.\n"
     "The model reads one i32 input [batch, seq] of byte ids and outputs next-byte logits\n"
     "[batch, seq, vocab] (models/transformer.kl). It is compiled for batch 1 unless -D sets\n"
     "batch. Each step feeds the last seq bytes, takes the logits at the last position,\n"
     "divides them by the temperature (default 1.0) and samples (Philox, --seed). Prints\n"
     "the prompt and N (default 200) generated bytes to stdout.",
     COMMON_FLAGS " --weights --prompt -n --temperature"},
};
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]))

static const Command *find_command(const char *name) {
  for (int i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  const Command *c = cmd ? find_command(cmd) : NULL;
  va_list ap;
  va_start(ap, fmt);
  fputs("kiln: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nusage: %s\n", c ? c->usage : "kiln COMMAND [ARGS]  (kiln help)");
  return EXIT_USAGE;
}

/* ---- Flag parsing ------------------------------------------------------- */

/* True if `flag` (e.g. "--stage") is in the command's space-separated list. */
static bool command_accepts(const Command *c, const char *flag) {
  size_t n = strlen(flag);
  for (const char *p = c->flags; (p = strstr(p, flag)) != NULL; p += n)
    if ((p == c->flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return true;
  return false;
}

static bool parse_int64(const char *s, int64_t *out) {
  if (!*s) return false;
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

static bool is_identifier(const char *s, const char *end) {
  if (s == end) return false;
  for (const char *p = s; p < end; p++) {
    bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
              (p > s && *p >= '0' && *p <= '9');
    if (!ok) return false;
  }
  return true;
}

static char *copy_prefix(const char *s, const char *end) {
  size_t n = (size_t)(end - s);
  char *p = malloc(n + 1);
  if (!p) {
    fprintf(stderr, "kiln: internal error: out of memory\n");
    exit(EXIT_INTERNAL);
  }
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* -D NAME=VALUE: NAME an identifier, VALUE a positive integer. */
static int parse_define(const Command *c, Options *o, const char *arg) {
  const char *eq = strchr(arg, '=');
  int64_t v;
  if (!eq || !is_identifier(arg, eq))
    return cli_usage_error(c->name, "-D expects NAME=VALUE with NAME an identifier, got '%s'", arg);
  if (!parse_int64(eq + 1, &v) || v < 1)
    return cli_usage_error(c->name, "-D value must be a positive integer: '%s'", arg);
  if (o->ndefs == KILN_MAX_DEFINES) return cli_usage_error(c->name, "too many -D flags");
  o->defs[o->ndefs++] = (Define){copy_prefix(arg, eq), v};
  return EXIT_OK;
}

/* --input NAME=FILE */
static int parse_input(const Command *c, Options *o, const char *arg) {
  const char *eq = strchr(arg, '=');
  if (!eq || !is_identifier(arg, eq) || !eq[1])
    return cli_usage_error(c->name, "--input expects NAME=FILE.npy, got '%s'", arg);
  if (o->ninputs == KILN_MAX_INPUTS) return cli_usage_error(c->name, "too many --input flags");
  o->inputs[o->ninputs++] = (InputArg){copy_prefix(arg, eq), eq + 1};
  return EXIT_OK;
}

/* --print-after=PASS|all and friends: fill one flag per pass. */
static int parse_pass_set(const Command *c, bool *set, const char *value) {
  if (strcmp(value, "all") == 0) {
    for (int p = 0; p < PASS_COUNT; p++) set[p] = true;
    return EXIT_OK;
  }
  PassId p = pass_lookup(value);
  if (p == PASS_COUNT)
    return cli_usage_error(c->name, "unknown pass '%s' (kiln help dump lists them)", value);
  set[p] = true;
  return EXIT_OK;
}

static int parse_count(const Command *c, const char *flag, const char *value, int64_t min,
                       int64_t *out) {
  if (!parse_int64(value, out) || *out < min)
    return cli_usage_error(c->name, "%s expects an integer >= %lld, got '%s'", flag, (long long)min,
                           value);
  return EXIT_OK;
}

static int parse_stage(const Command *c, Options *o, const char *value) {
  o->stage = stage_lookup(value);
  if (o->stage == STAGE_COUNT) return cli_usage_error(c->name, "unknown stage '%s'", value);
  return EXIT_OK;
}

static int parse_format(const Command *c, Options *o, const char *value) {
  if (strcmp(value, "dot") != 0 && strcmp(value, "text") != 0)
    return cli_usage_error(c->name, "unknown format '%s' (expected text or dot)", value);
  o->dot = strcmp(value, "dot") == 0;
  return EXIT_OK;
}

static int parse_backend(const Command *c, Options *o, const char *value) {
  if (strcmp(value, "interp") == 0) return o->backend = BACKEND_INTERP, EXIT_OK;
  if (strcmp(value, "jit") == 0) return o->backend = BACKEND_JIT, EXIT_OK;
  return cli_usage_error(c->name, "unknown backend '%s' (expected jit or interp)", value);
}

static int parse_stop_after(const Command *c, Options *o, const char *value) {
  PassId p = pass_lookup(value);
  if (p == PASS_COUNT) return cli_usage_error(c->name, "unknown pass '%s'", value);
  o->passes.stop_after = p;
  return EXIT_OK;
}

/* --max-memory BYTES: a positive integer, optionally with K, M, G or T (powers of 1024). */
static int parse_max_memory(const Command *c, Options *o, const char *v) {
  errno = 0;
  char *end = (char *)v;
  unsigned long long n = (*v >= '0' && *v <= '9') ? strtoull(v, &end, 10) : 0;
  const char *units = "KMGT", *u = n && *end ? strchr(units, *end & ~0x20) : NULL;
  int shift = u ? 10 * (int)(u - units + 1) : 0;
  if (errno || n == 0 || (*end && (!u || end[1])) || n > (UINT64_MAX >> shift))
    return cli_usage_error(c->name,
                           "--max-memory expects BYTES, a positive integer with an "
                           "optional K, M, G or T suffix, got '%s'",
                           v);
  o->max_memory = (uint64_t)n << shift;
  return EXIT_OK;
}

/* --temperature T: a positive number. */
static int parse_temperature(const Command *c, Options *o, const char *v) {
  char *end;
  errno = 0;
  double t = strtod(v, &end);
  if (errno || end == v || *end || !(t > 0) || t > 1e6)
    return cli_usage_error(c->name, "--temperature expects a positive number, got '%s'", v);
  o->temperature = t;
  return EXIT_OK;
}

static int parse_valued_flag(const Command *c, Options *o, const char *flag, const char *v) {
  int64_t n = 0;
  int rc = EXIT_OK;
  if (strcmp(flag, "--max-memory") == 0) return parse_max_memory(c, o, v);
  if (strcmp(flag, "--stage") == 0) return parse_stage(c, o, v);
  if (strcmp(flag, "--format") == 0) return parse_format(c, o, v);
  if (strcmp(flag, "--backend") == 0) return parse_backend(c, o, v);
  if (strcmp(flag, "--print-after") == 0) return parse_pass_set(c, o->passes.print_after, v);
  if (strcmp(flag, "--print-before") == 0) return parse_pass_set(c, o->passes.print_before, v);
  if (strcmp(flag, "--stop-after") == 0) return parse_stop_after(c, o, v);
  if (strcmp(flag, "--input") == 0) return parse_input(c, o, v);
  if (strcmp(flag, "-o") == 0) return o->output = v, EXIT_OK;
  if (strcmp(flag, "--weights") == 0) return o->weights = v, EXIT_OK;
  if (strcmp(flag, "--out") == 0) return o->out_dir = v, EXIT_OK;
  if (strcmp(flag, "--data") == 0) return o->data = v, EXIT_OK;
  if (strcmp(flag, "--save") == 0) return o->save = v, EXIT_OK;
  if (strcmp(flag, "--emit") == 0) return o->emit = v, EXIT_OK;
  if (strcmp(flag, "--prompt") == 0) return o->prompt = v, EXIT_OK;
  if (strcmp(flag, "--temperature") == 0) return parse_temperature(c, o, v);
  if (strcmp(flag, "-n") == 0 && !(rc = parse_count(c, flag, v, 0, &n))) o->count = n;
  if (strcmp(flag, "--eval") == 0) return o->eval = v, EXIT_OK;
  if (strcmp(flag, "--log") == 0) return o->log_path = v, EXIT_OK;
  if (strcmp(flag, "--checkpoint-every") == 0 && !(rc = parse_count(c, flag, v, 1, &n)))
    o->checkpoint_every = n;
  if (strcmp(flag, "--steps") == 0 && !(rc = parse_count(c, flag, v, 1, &n))) o->steps = n;
  if (strcmp(flag, "--epochs") == 0 && !(rc = parse_count(c, flag, v, 1, &n))) o->epochs = n;
  if (strcmp(flag, "--seed") == 0 && !(rc = parse_count(c, flag, v, 0, &n))) o->seed = (uint64_t)n;
  if (strcmp(flag, "--threads") == 0 && !(rc = parse_count(c, flag, v, 1, &n)))
    o->threads = n > 4096 ? 4096 : (int)n;
  return rc;
}

static const char *const valued_flags[] = {
    "--stage",
    "--format",
    "--backend",
    "--print-after",
    "--print-before",
    "--stop-after",
    "--input",
    "-o",
    "--weights",
    "--out",
    "--data",
    "--save",
    "--steps",
    "--epochs",
    "--seed",
    "--threads",
    "--emit",
    "--max-memory",
    "--eval",
    "--log",
    "--checkpoint-every",
    "--prompt",
    "-n",
    "--temperature",
};

static bool flag_takes_value(const char *flag) {
  for (size_t i = 0; i < sizeof valued_flags / sizeof *valued_flags; i++)
    if (strcmp(flag, valued_flags[i]) == 0) return true;
  return false;
}

/* A boolean flag, if a is one the command accepts. */
static bool parse_switch(const Command *c, Options *o, const char *a) {
  if (!command_accepts(c, a)) return false;
  if (strcmp(a, "-v") == 0) return o->verbose = true;
  if (strcmp(a, "--time-passes") == 0) return o->time_passes = o->passes.time_passes = true;
  if (strcmp(a, "--grads") == 0) return o->grads = true;
  if (strcmp(a, "--shuffle") == 0) return o->shuffle = true;
  if (strcmp(a, "--no-train") == 0) return o->no_train = true;
  if (strcmp(a, "--explain-fusion") == 0) return o->explain_fusion = true;
  return false;
}

/* -D, -O and flags with values ("--flag=value" or "--flag value"). */
static int parse_flag(const Command *c, Options *o, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  if (strncmp(a, "-D", 2) == 0 && command_accepts(c, "-D")) {
    if (a[2]) return parse_define(c, o, a + 2);
    if (*i + 1 >= argc) return cli_usage_error(c->name, "-D needs NAME=VALUE");
    return parse_define(c, o, argv[++*i]);
  }
  if (a[1] == 'O' && command_accepts(c, "-O")) {
    if (a[2] < '0' || a[2] > '3' || a[3])
      return cli_usage_error(c->name, "unknown optimization level '%s'", a);
    return o->opt_level = a[2] - '0', EXIT_OK;
  }
  char flag[64];
  const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
  size_t n = eq ? (size_t)(eq - a) : strlen(a);
  if (n >= sizeof flag) return cli_usage_error(c->name, "unknown flag '%s'", a);
  memcpy(flag, a, n);
  flag[n] = '\0';
  if (!command_accepts(c, flag) || !flag_takes_value(flag))
    return cli_usage_error(c->name, "unknown flag '%s'", a);
  if (eq) return parse_valued_flag(c, o, flag, eq + 1);
  if (*i + 1 >= argc) return cli_usage_error(c->name, "flag '%s' needs a value", a);
  return parse_valued_flag(c, o, flag, argv[++*i]);
}

/* One argument (and maybe the next, as a flag's value) at *i. */
static int parse_arg(const Command *c, Options *o, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return o->show_help = true, EXIT_OK;
  if (parse_switch(c, o, a)) return EXIT_OK;
  if (a[0] == '-' && a[1]) return parse_flag(c, o, argc, argv, i);
  if (o->model) return cli_usage_error(c->name, "unexpected argument '%s'", a);
  o->model = a;
  return EXIT_OK;
}

static int parse_args(const Command *c, Options *o, int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    int rc = parse_arg(c, o, argc, argv, &i);
    if (rc != EXIT_OK) return rc;
  }
  return EXIT_OK;
}

/* ---- Commands ----------------------------------------------------------- */

static void print_command_help(const Command *c) {
  printf("usage: %s\n\n%s\n", c->usage, c->help);
  if (strcmp(c->name, "dump") == 0) {
    printf("\nPasses (for --print-before, --print-after, --stop-after):\n");
    for (int p = 0; p < PASS_COUNT; p++)
      printf("  %-12s [%s] %s\n", pass_name((PassId)p), stage_name(pass_stage((PassId)p)),
             pass_help((PassId)p));
  }
  if (c->flags[0]) {
    printf("\nCommon flags:\n"
           "  -D NAME=VALUE   override a model size parameter (a positive integer)\n"
           "  -O0..-O3        optimization level (default -O2)\n"
           "  --seed S        seed for initialization and shuffling (default 0)\n"
           "  --threads N     threads (default: all cores)\n"
           "  --max-memory B  refuse a model needing more than B bytes (K, M, G, T suffixes;\n"
           "                  default: physical memory); params, grads, optimizer state and\n"
           "                  intermediate values: each its own buffer, or the planned\n"
           "                  arena once the command has planned the graph\n"
           "  --time-passes   print a table of pass times and node counts to stderr\n"
           "  -v              verbose\n");
  }
}

static int cmd_help(Options *o) {
  if (o->model) {
    const Command *c = find_command(o->model);
    if (!c) return cli_usage_error(NULL, "unknown command '%s'", o->model);
    print_command_help(c);
    return EXIT_OK;
  }
  printf("kiln - a compiler for neural-network models\n\nusage: kiln COMMAND [ARGS]\n\n"
         "Commands:\n");
  for (int i = 0; i < NCOMMANDS; i++) {
    const char *nl = strchr(commands[i].help, '\n');
    int n = nl ? (int)(nl - commands[i].help) : (int)strlen(commands[i].help);
    printf("  %-8s %.*s\n", commands[i].name, n, commands[i].help);
  }
  printf("\n`kiln help COMMAND` describes a command and its flags. Exit status: 0 success,\n"
         "1 bad input (model, weights, data, shapes), 2 usage error, 70 internal error.\n");
  return EXIT_OK;
}

static void print_value_row(const char *name, const Type *t, int64_t count) {
  char ts[IR_TYPE_STR_MAX];
  if (count >= 0)
    printf("  %-20s %-24s %12lld\n", name, ir_type_str(t, ts, sizeof ts), (long long)count);
  else
    printf("  %-20s %s\n", name, ir_type_str(t, ts, sizeof ts));
}

static void print_optimizer(const Graph *g) {
  const Optim *p = &g->optim;
  if (p->kind == OPTIM_SGD)
    printf("sgd(lr=%g, momentum=%g, weight_decay=%g)\n", p->lr, p->momentum, p->weight_decay);
  else
    printf("adam(lr=%g, beta1=%g, beta2=%g, eps=%g, weight_decay=%g)\n", p->lr, p->beta1, p->beta2,
           p->eps, p->weight_decay);
}

/* The summary of `kiln check`. */
static void print_summary(const Graph *g) {
  printf("model %s", g->name);
  for (int i = 0; i < g->nsizes; i++)
    printf("%s%s=%lld", i ? ", " : "(", g->sizes[i].name, (long long)g->sizes[i].value);
  printf("%s\n", g->nsizes ? ")" : "");
  int64_t total = 0;
  printf("inputs:\n");
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_INPUT) print_value_row(g->nodes[i]->name, &g->nodes[i]->type, -1);
  printf("params:\n");
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_PARAM) continue;
    print_value_row(n->name, &n->type, ir_type_numel(&n->type));
    total += ir_type_numel(&n->type);
  }
  printf("outputs:\n");
  for (int i = 0; i < g->noutputs; i++)
    print_value_row(g->outputs[i].name, &g->outputs[i].node->type, -1);
  if (g->loss) {
    char ts[IR_TYPE_STR_MAX];
    printf("train: %s %s with ", g->loss->name ? g->loss->name : "loss",
           ir_type_str(&g->loss->type, ts, sizeof ts));
    print_optimizer(g);
  }
  printf("parameters: %lld\n", (long long)total);
}

static int need_model(const Options *o) {
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  return EXIT_OK;
}

static int cmd_check(Options *o) {
  int rc = need_model(o);
  if (rc) return rc;
  Loaded m;
  rc = cli_load_source(o, &m);
  if (!rc) rc = cli_load_graph(o, &m);
  if (!rc) rc = cli_check_memory(o, m.graph);
  if (!rc) print_summary(m.graph);
  cli_loaded_free(&m);
  return rc;
}

/* --stage=llvm|asm: the backend's module for the whole pipeline's graph. */
static int dump_llvm(const Options *o, const Graph *g) {
  char err[512] = "";
  LlvmOptions lo = {.opt_level = o->opt_level, .train = true};
  LlvmEmitKind kind = o->stage == STAGE_ASM ? LLVM_EMIT_ASM : LLVM_EMIT_IR;
  if (llvm_print(g, &lo, kind, stdout, err, sizeof err)) return EXIT_OK;
  fprintf(stderr, "kiln: %s\n", err);
  return EXIT_INTERNAL;
}

static int cmd_dump(Options *o) {
  int rc = need_model(o);
  if (rc) return rc;
  if (o->explain_fusion && (o->stage < STAGE_FUSED || o->stage >= STAGE_LLVM))
    o->stage = STAGE_FUSED;
  if ((o->stage == STAGE_AST || o->stage >= STAGE_LLVM) && o->dot)
    return cli_usage_error(o->cmd, "--format=dot needs a graph stage");
  Loaded m;
  rc = cli_load_source(o, &m);
  if (!rc && o->stage == STAGE_AST && m.is_ir) {
    rc = cli_usage_error(o->cmd, "a .ir file has no ast stage");
  } else if (!rc && o->stage == STAGE_AST) {
    ast_print(stdout, &m.ast);
  } else if (!rc) {
    rc = cli_load_graph(o, &m);
    if (!rc) rc = cli_check_memory(o, m.graph);
    if (!rc && !pass_run_pipeline(m.graph, o->stage, &o->passes)) rc = EXIT_INTERNAL;
    if (!rc) rc = cli_check_memory(o, m.graph);
    if (!rc && o->explain_fusion)
      fuse_explain(stdout, m.graph, o->passes.target);
    else if (!rc && o->stage >= STAGE_LLVM)
      rc = dump_llvm(o, m.graph);
    else if (!rc)
      (o->dot ? ir_print_dot : ir_print)(stdout, m.graph);
    if (!rc && !o->explain_fusion && !o->dot && o->stage < STAGE_LLVM)
      plan_report(stdout, m.graph); /* '#' lines after a planned graph; nothing otherwise */
  }
  if (o->time_passes) pass_print_times(stderr, &o->passes);
  cli_loaded_free(&m);
  return rc;
}

static void print_version(void) {
  char buf[256];
  printf("kiln 0.1.0 (%s)\n", llvm_describe_host(buf, sizeof buf));
}

int main(int argc, char **argv) {
  if (argc < 2) return cli_usage_error(NULL, "missing command");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) argv[1] = "help";
  if (strcmp(argv[1], "--version") == 0) return print_version(), EXIT_OK;
  const Command *c = find_command(argv[1]);
  if (!c) return cli_usage_error(NULL, "unknown command '%s'", argv[1]);
  Options o;
  memset(&o, 0, sizeof o);
  o.cmd = c->name;
  o.opt_level = 2;
  o.stage = STAGE_GRAPH;
  /* kiln run defaults to the JIT; train stays on the interpreter until it runs compiled. */
  o.backend = BACKEND_JIT; /* run and train; --backend=interp for the reference interpreter */
  o.count = 200;           /* kiln sample -n */
  o.temperature = 1.0;     /* kiln sample --temperature */
  pass_ctx_init(&o.passes);
  o.passes.target = llvm_fuse_target(); /* kernels are the LLVM backend's launches */
  int rc = parse_args(c, &o, argc, argv);
  if (rc == EXIT_OK && o.show_help)
    print_command_help(c);
  else if (rc == EXIT_OK)
    rc = c->run(&o);
  for (int i = 0; i < o.ndefs; i++) free((char *)o.defs[i].name);
  for (int i = 0; i < o.ninputs; i++) free((char *)o.inputs[i].name);
  if (fflush(stdout) != 0 && rc == EXIT_OK) {
    fprintf(stderr, "kiln: error: cannot write output: %s\n", strerror(errno));
    rc = EXIT_USER;
  }
  return rc;
}
