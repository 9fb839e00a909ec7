/* fuzz_ir.c - libFuzzer target: the text IR parser. Whatever parses must
 * verify, print, read back to the same text and hash, and export to dot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

static FILE *fuzz_sink(void) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  return sink;
}

static char *fuzz_print(const Graph *g, size_t *len) {
  char *text = NULL;
  FILE *f = open_memstream(&text, len);
  ir_print(f, g);
  fclose(f);
  return text;
}

static _Noreturn void fuzz_fail(const char *what, const char *text) {
  fprintf(stderr, "%s:\n%s\n", what, text);
  abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  Diag d;
  diag_init(&d, "fuzz.ir", (const char *)data, size);
  d.out = fuzz_sink();
  Graph *g = ir_parse(&d, (const char *)data, size);
  if (!g) return 0;
  char msg[512];
  if (!ir_verify(g, msg, sizeof msg)) fuzz_fail("parsed graph does not verify", msg);
  size_t la, lb;
  char *a = fuzz_print(g, &la);
  diag_init(&d, "printed.ir", a, la);
  d.out = stderr;
  Graph *g2 = ir_parse(&d, a, la);
  if (!g2) fuzz_fail("printed IR does not parse", a);
  char *b = fuzz_print(g2, &lb);
  if (la != lb || memcmp(a, b, la) != 0) fuzz_fail("IR round trip differs", a);
  if (ir_hash_graph(g) != ir_hash_graph(g2)) fuzz_fail("hash differs after round trip", a);
  ir_print_dot(fuzz_sink(), g);
  ir_graph_free(g);
  ir_graph_free(g2);
  free(a);
  free(b);
  return 0;
}
