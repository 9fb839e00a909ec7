/* cli.c - shared pieces of the kiln subcommands: errors, timing, loading a model. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Model files larger than this are refused before reading them. */
#define KILN_MAX_SOURCE_BYTES (64u << 20)

int cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("kiln: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return EXIT_USER;
}

double cli_now_ms(void) {
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

int cli_load_source(const Options *o, Loaded *m) {
  memset(m, 0, sizeof *m);
  m->src = read_file(o->model, &m->len);
  if (!m->src) return EXIT_USER;
  diag_init(&m->diag, o->model, m->src, m->len);
  m->is_ir = has_suffix(o->model, ".ir");
  if (m->is_ir) return EXIT_OK;
  double t0 = cli_now_ms();
  if (!parse_file(&m->ast, &m->arena, &m->diag, m->src, m->len)) return EXIT_USER;
  if (o->verbose)
    fprintf(stderr, "kiln: parsed %s (%zu bytes) in %.3f ms\n", o->model, m->len,
            cli_now_ms() - t0);
  return EXIT_OK;
}

int cli_load_graph(const Options *o, Loaded *m) {
  double t0 = cli_now_ms();
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
            cli_now_ms() - t0, m->graph->nnodes, (unsigned long long)ir_hash_graph(m->graph));
  return EXIT_OK;
}

void cli_loaded_free(Loaded *m) {
  if (m->graph) ir_graph_free(m->graph);
  arena_free(&m->arena);
  free(m->src);
}

int cli_load_model(Options *o, Loaded *m, Stage upto) {
  int rc = cli_load_source(o, m);
  if (!rc) rc = cli_load_graph(o, m);
  if (!rc) rc = cli_check_memory(o, m->graph);
  if (!rc && !pass_run_pipeline(m->graph, upto, &o->passes)) rc = EXIT_INTERNAL;
  if (!rc) rc = cli_check_memory(o, m->graph);
  return rc;
}

/* ---- --max-memory ------------------------------------------------------- */

/* a + b, stopping at UINT64_MAX rather than wrapping. */
static uint64_t add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* A node's value in bytes, UINT64_MAX when it does not fit. */
static uint64_t node_bytes(const Node *n) {
  uint64_t bytes = ir_dtype_size(n->type.dtype);
  for (int i = 0; i < n->type.rank; i++) {
    uint64_t d = n->type.dims[i] > 0 ? (uint64_t)n->type.dims[i] : 0;
    if (d && bytes > UINT64_MAX / d) return UINT64_MAX;
    bytes *= d;
  }
  return bytes;
}

static bool is_grad(const Graph *g, const Node *n) {
  for (int i = 0; i < g->ngrads; i++)
    if (g->grads[i].grad == n) return true;
  return false;
}

/* Unplanned: every value its own buffer. Planned: the arena the plan found
 * (values sharing bytes counted once), plus the inputs. */
KilnMemory cli_memory_estimate(const Graph *g) {
  KilnMemory m = {0};
  bool planned = g->annot == IR_ANNOT_PLANNED;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    uint64_t b = node_bytes(n);
    uint64_t *part = n->op == OP_PARAM   ? &m.params
                     : n->op == OP_STATE ? &m.state
                     : is_grad(g, n)     ? &m.grads
                                         : &m.activations;
    if (!planned || part != &m.activations || n->op == OP_INPUT) *part = add_sat(*part, b);
  }
  if (planned) m.activations = add_sat(m.activations, (uint64_t)g->arena_bytes);
  m.total = add_sat(add_sat(m.params, m.grads), add_sat(m.state, m.activations));
  return m;
}

uint64_t cli_physical_memory(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return UINT64_MAX;
  return (uint64_t)pages > UINT64_MAX / (uint64_t)page ? UINT64_MAX
                                                       : (uint64_t)pages * (uint64_t)page;
}

const char *cli_format_bytes(uint64_t bytes, char *buf, size_t len) {
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) {
    snprintf(buf, len, "%llu bytes", (unsigned long long)bytes);
    return buf;
  }
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, u++;
  snprintf(buf, len, "%.1f %s", v, units[u]);
  return buf;
}

int cli_check_memory(const Options *o, const Graph *g) {
  uint64_t limit = o->max_memory ? o->max_memory : cli_physical_memory();
  KilnMemory m = cli_memory_estimate(g);
  if (m.total <= limit) return EXIT_OK;
  char t[32], p[32], gr[32], s[32], a[32], l[32];
  cli_format_bytes(m.total, t, sizeof t);
  cli_format_bytes(m.params, p, sizeof p);
  cli_format_bytes(m.activations, a, sizeof a);
  cli_format_bytes(limit, l, sizeof l);
  if (m.grads || m.state)
    return cli_error("model '%s' needs %s (params %s, grads %s, optimizer state %s, activations "
                     "%s), more than --max-memory %s%s",
                     g->name, t, p, cli_format_bytes(m.grads, gr, sizeof gr),
                     cli_format_bytes(m.state, s, sizeof s), a, l,
                     o->max_memory ? "" : " (the default: physical memory)");
  return cli_error("model '%s' needs %s (params %s, activations %s), more than --max-memory %s%s",
                   g->name, t, p, a, l, o->max_memory ? "" : " (the default: physical memory)");
}
