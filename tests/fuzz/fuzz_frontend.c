/* fuzz_frontend.c - libFuzzer target: .kl text through parsing, graph building,
 * the passes, and a print/parse round trip of the text IR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ast.h"
#include "build.h"
#include "ir.h"
#include "passes.h"

static FILE *fuzz_sink(void) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  return sink;
}

/* A graph that was built must print, read back and print the same text. */
static void fuzz_roundtrip(const Graph *g) {
  char *a = NULL, *b = NULL;
  size_t alen = 0, blen = 0;
  FILE *f = open_memstream(&a, &alen);
  ir_print(f, g);
  fclose(f);
  Diag d;
  diag_init(&d, "<ir>", a, alen);
  d.out = fuzz_sink();
  Graph *back = ir_parse(&d, a, alen);
  if (!back) {
    fprintf(stderr, "printed IR does not parse:\n%s\n", a);
    abort();
  }
  f = open_memstream(&b, &blen);
  ir_print(f, back);
  fclose(f);
  if (alen != blen || memcmp(a, b, alen) != 0) {
    fprintf(stderr, "IR round trip differs:\n%s\n---\n%s\n", a, b);
    abort();
  }
  ir_graph_free(back);
  free(a);
  free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Arena arena = {0};
  Diag d;
  diag_init(&d, "fuzz.kl", (const char *)data, size);
  d.out = fuzz_sink();
  Ast ast;
  if (parse_file(&ast, &arena, &d, (const char *)data, size)) {
    Graph *g = build_graph(&ast, NULL, 0, &d);
    if (g) {
      PassCtx cx;
      pass_ctx_init(&cx);
      cx.verify = true;
      if (!pass_run_pipeline(g, STAGE_GRAPH, &cx)) abort();
      fuzz_roundtrip(g);
      ir_graph_free(g);
    }
  }
  arena_free(&arena);
  return 0;
}
