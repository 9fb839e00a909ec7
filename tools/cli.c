/* cli.c - shared pieces of the kiln subcommands: errors, timing, loading a model. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
  if (!rc && !pass_run_pipeline(m->graph, upto, &o->passes)) rc = EXIT_INTERNAL;
  return rc;
}
