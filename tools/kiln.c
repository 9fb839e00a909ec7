/* kiln.c - the kiln command line: parses flags, runs the pipeline, chooses the exit code. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ast.h"
#include "build.h"
#include "ir.h"
#include "llvm_info.h"
#include "passes.h"

/* SPEC §2 exit statuses. */
enum { EXIT_OK = 0, EXIT_USER = 1, EXIT_USAGE = 2, EXIT_INTERNAL = 70 };

/* Model files larger than this are refused before reading them. */
#define KILN_MAX_SOURCE_BYTES (64u << 20)
#define KILN_MAX_DEFINES      64

typedef struct Options {
  const char *cmd;
  const char *model; /* the one positional argument */
  Define defs[KILN_MAX_DEFINES];
  int ndefs;
  int opt_level;
  bool verbose, time_passes, show_help;
  Stage stage;
  bool dot;
  PassCtx passes;
} Options;

typedef struct Command {
  const char *name;
  int (*run)(Options *o);
  const char *usage;
  const char *help;
  const char *flags; /* the flags it accepts, space-separated, for the parser */
} Command;

static int cmd_help(Options *o);
static int cmd_check(Options *o);
static int cmd_dump(Options *o);

static const Command commands[] = {
    {"help", cmd_help, "kiln help [COMMAND]", "Print help for kiln or one of its commands.", ""},
    {"check", cmd_check, "kiln check MODEL.kl [-D NAME=VALUE]...",
     "Check a model: parse it, build and verify its graph.\n"
     "Prints its inputs, params and outputs with their shapes, then the total number of\n"
     "trainable parameters.",
     "-D -v -O --time-passes"},
    {"dump", cmd_dump,
     "kiln dump MODEL.kl|MODEL.ir [--stage=ast|graph] [--format=text|dot]\n"
     "          [--print-before=PASS|all] [--print-after=PASS|all] [--stop-after=PASS]\n"
     "          [-D NAME=VALUE]... [--time-passes] [-v]",
     "Print the model at a stage of the pipeline.\n"
     "Stages: ast (the syntax tree), graph (the forward graph after its passes). A .ir\n"
     "file (text IR, as dumped) is read back instead of a .kl file. --format=dot writes\n"
     "Graphviz for `dot -Tsvg`.",
     "-D -v -O --time-passes --stage --format --print-before --print-after --stop-after"},
};
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]))

static const Command *find_command(const char *name) {
  for (int i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

static int usage_error(const Command *c, const char *fmt, const char *arg) {
  fprintf(stderr, "kiln: error: ");
  fprintf(stderr, fmt, arg);
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

/* -D NAME=VALUE: NAME an identifier, VALUE a positive integer. */
static int parse_define(const Command *c, Options *o, const char *arg) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg) return usage_error(c, "-D expects NAME=VALUE, got '%s'", arg);
  int64_t v;
  if (!parse_int64(eq + 1, &v) || v < 1)
    return usage_error(c, "-D value must be a positive integer: '%s'", arg);
  for (const char *p = arg; p < eq; p++) {
    bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
              (p > arg && *p >= '0' && *p <= '9');
    if (!ok) return usage_error(c, "-D name must be an identifier: '%s'", arg);
  }
  if (o->ndefs == KILN_MAX_DEFINES) return usage_error(c, "too many -D flags at '%s'", arg);
  size_t n = (size_t)(eq - arg);
  char *name = malloc(n + 1);
  if (!name) return EXIT_INTERNAL;
  memcpy(name, arg, n);
  name[n] = '\0';
  o->defs[o->ndefs++] = (Define){name, v};
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
    return usage_error(c, "unknown pass '%s' (kiln help dump lists them)", value);
  set[p] = true;
  return EXIT_OK;
}

static int parse_valued_flag(const Command *c, Options *o, const char *flag, const char *value) {
  if (strcmp(flag, "--stage") == 0) {
    o->stage = stage_lookup(value);
    if (o->stage == STAGE_COUNT) return usage_error(c, "unknown stage '%s'", value);
  } else if (strcmp(flag, "--format") == 0) {
    if (strcmp(value, "dot") != 0 && strcmp(value, "text") != 0)
      return usage_error(c, "unknown format '%s' (expected text or dot)", value);
    o->dot = strcmp(value, "dot") == 0;
  } else if (strcmp(flag, "--print-after") == 0) {
    return parse_pass_set(c, o->passes.print_after, value);
  } else if (strcmp(flag, "--print-before") == 0) {
    return parse_pass_set(c, o->passes.print_before, value);
  } else if (strcmp(flag, "--stop-after") == 0) {
    PassId p = pass_lookup(value);
    if (p == PASS_COUNT) return usage_error(c, "unknown pass '%s'", value);
    o->passes.stop_after = p;
  }
  return EXIT_OK;
}

static bool flag_takes_value(const char *flag) {
  return strcmp(flag, "--stage") == 0 || strcmp(flag, "--format") == 0 ||
         strcmp(flag, "--print-after") == 0 || strcmp(flag, "--print-before") == 0 ||
         strcmp(flag, "--stop-after") == 0;
}

/* One argument (and maybe the next, as a flag's value) at *i. */
static int parse_arg(const Command *c, Options *o, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  if (strncmp(a, "-D", 2) == 0 && command_accepts(c, "-D")) {
    if (a[2]) return parse_define(c, o, a + 2);
    if (*i + 1 >= argc) return usage_error(c, "-D needs NAME=VALUE%s", "");
    return parse_define(c, o, argv[++*i]);
  }
  if (a[0] == '-' && a[1] == 'O' && command_accepts(c, "-O")) {
    if (a[2] < '0' || a[2] > '3' || a[3])
      return usage_error(c, "unknown optimization level '%s'", a);
    o->opt_level = a[2] - '0';
    return EXIT_OK;
  }
  if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return o->show_help = true, EXIT_OK;
  if (strcmp(a, "-v") == 0 && command_accepts(c, "-v")) return o->verbose = true, EXIT_OK;
  if (strcmp(a, "--time-passes") == 0 && command_accepts(c, "--time-passes"))
    return o->time_passes = o->passes.time_passes = true, EXIT_OK;
  if (strncmp(a, "--", 2) == 0) {
    char flag[64];
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    if (n >= sizeof flag) return usage_error(c, "unknown flag '%s'", a);
    memcpy(flag, a, n);
    flag[n] = '\0';
    if (!command_accepts(c, flag) || !flag_takes_value(flag))
      return usage_error(c, "unknown flag '%s'", a);
    if (eq) return parse_valued_flag(c, o, flag, eq + 1);
    if (*i + 1 >= argc) return usage_error(c, "flag '%s' needs a value", a);
    return parse_valued_flag(c, o, flag, argv[++*i]);
  }
  if (a[0] == '-' && a[1]) return usage_error(c, "unknown flag '%s'", a);
  if (o->model) return usage_error(c, "unexpected argument '%s'", a);
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

/* ---- Loading a model ---------------------------------------------------- */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Reads a whole file; on failure reports "kiln: error: ..." and returns NULL. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "kiln: error: cannot open '%s': %s\n", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap && cap >= KILN_MAX_SOURCE_BYTES) {
      fprintf(stderr, "kiln: error: '%s' is larger than %u bytes\n", path, KILN_MAX_SOURCE_BYTES);
      free(buf);
      fclose(f);
      return NULL;
    }
    if (n == cap) {
      char *grown = realloc(buf, cap *= 2);
      if (!grown) free(buf);
      buf = grown;
    }
  }
  bool failed = ferror(f);
  fclose(f);
  if (!buf || failed) {
    fprintf(stderr, "kiln: error: cannot read '%s'\n", path);
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

static bool has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

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

static int load_source(const Options *o, Loaded *m) {
  memset(m, 0, sizeof *m);
  m->src = read_file(o->model, &m->len);
  if (!m->src) return EXIT_USER;
  diag_init(&m->diag, o->model, m->src, m->len);
  m->is_ir = has_suffix(o->model, ".ir");
  if (m->is_ir) return EXIT_OK;
  double t0 = now_ms();
  if (!parse_file(&m->ast, &m->arena, &m->diag, m->src, m->len)) return EXIT_USER;
  if (o->verbose)
    fprintf(stderr, "kiln: parsed %s (%zu bytes) in %.3f ms\n", o->model, m->len, now_ms() - t0);
  return EXIT_OK;
}

static int load_graph(const Options *o, Loaded *m) {
  double t0 = now_ms();
  if (m->is_ir) {
    if (o->ndefs) {
      fprintf(stderr, "kiln: error: -D has no effect on a .ir file: its shapes are fixed\n");
      return EXIT_USAGE;
    }
    m->graph = ir_parse(&m->diag, m->src, m->len);
  } else {
    m->graph = build_graph(&m->ast, o->defs, o->ndefs, &m->diag);
  }
  if (!m->graph) return EXIT_USER;
  if (o->verbose)
    fprintf(stderr, "kiln: built graph '%s' in %.3f ms: %d nodes, hash %016llx\n", m->graph->name,
            now_ms() - t0, m->graph->nnodes, (unsigned long long)ir_hash_graph(m->graph));
  return EXIT_OK;
}

static void loaded_free(Loaded *m) {
  if (m->graph) ir_graph_free(m->graph);
  arena_free(&m->arena);
  free(m->src);
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
           "  --time-passes   print a table of pass times and node counts to stderr\n"
           "  -v              verbose\n");
  }
}

static int cmd_help(Options *o) {
  if (o->model) {
    const Command *c = find_command(o->model);
    if (!c) return usage_error(NULL, "unknown command '%s'", o->model);
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

static int need_model(const Command *c, const Options *o) {
  if (!o->model) return usage_error(c, "missing MODEL file%s", "");
  return EXIT_OK;
}

static int cmd_check(Options *o) {
  const Command *c = find_command("check");
  int rc = need_model(c, o);
  if (rc) return rc;
  Loaded m;
  rc = load_source(o, &m);
  if (!rc) rc = load_graph(o, &m);
  if (!rc) print_summary(m.graph);
  loaded_free(&m);
  return rc;
}

static int cmd_dump(Options *o) {
  const Command *c = find_command("dump");
  int rc = need_model(c, o);
  if (rc) return rc;
  if (o->stage == STAGE_AST && o->dot)
    return usage_error(c, "--format=dot needs a graph stage%s", "");
  Loaded m;
  rc = load_source(o, &m);
  if (!rc && o->stage == STAGE_AST) {
    if (m.is_ir)
      rc = usage_error(c, "a .ir file has no ast stage%s", "");
    else
      ast_print(stdout, &m.ast);
  } else if (!rc) {
    rc = load_graph(o, &m);
    if (!rc && !pass_run_pipeline(m.graph, o->stage, &o->passes)) rc = EXIT_INTERNAL;
    if (!rc) (o->dot ? ir_print_dot : ir_print)(stdout, m.graph);
  }
  if (o->time_passes) pass_print_times(stderr, &o->passes);
  loaded_free(&m);
  return rc;
}

static void print_version(void) {
  char buf[256];
  printf("kiln 0.1.0 (%s)\n", llvm_describe_host(buf, sizeof buf));
}

int main(int argc, char **argv) {
  if (argc < 2) return usage_error(NULL, "missing command%s", "");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) argv[1] = "help";
  if (strcmp(argv[1], "--version") == 0) return print_version(), EXIT_OK;
  const Command *c = find_command(argv[1]);
  if (!c) return usage_error(NULL, "unknown command '%s'", argv[1]);
  Options o;
  memset(&o, 0, sizeof o);
  o.cmd = c->name;
  o.opt_level = 2;
  o.stage = STAGE_GRAPH;
  pass_ctx_init(&o.passes);
  int rc = parse_args(c, &o, argc, argv);
  if (rc == EXIT_OK && o.show_help)
    print_command_help(c);
  else if (rc == EXIT_OK)
    rc = c->run(&o);
  for (int i = 0; i < o.ndefs; i++) free((char *)o.defs[i].name);
  if (fflush(stdout) != 0 && rc == EXIT_OK) {
    fprintf(stderr, "kiln: error: cannot write output: %s\n", strerror(errno));
    rc = EXIT_USER;
  }
  return rc;
}
