/* gen_textcls.c - a synthetic sentiment task for models/textcls.kl (see README.md).
 *
 *   gen_textcls DIR N SEED    writes DIR/ids.npy (i32 [N, 50]) and DIR/y.npy (i32 [N])
 *
 * A "sentence" is 50 tokens of filler (ids 10..4999, uniform). Somewhere in it
 * stands one sentiment word, GOOD (1) or BAD (2), and in half the sentences a
 * NOT (3) somewhere else. The label is 1 (positive) when the sentiment word is
 * GOOD and no NOT comes before it, or it is BAD and a NOT comes before it;
 * otherwise 0. A NOT after the sentiment word changes nothing. So the label
 * depends on which marker words appear and in what order, never on a single
 * position; classes are balanced. Deterministic for a seed (xorshift64*).
 *
 * Build: cc -O2 -o gen_textcls scripts/gen_textcls.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEQ   50
#define VOCAB 5000
enum { GOOD = 1, BAD = 2, NOT = 3, FILLER = 10 };

static uint64_t state;
static uint64_t next(void) {
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return state * 0x2545F4914F6CDD1DULL;
}
static int below(int n) { return (int)((next() >> 33) % (uint64_t)n); }

/* A version 1.0 .npy header for <i4 of shape (n,) or (n, m). */
static void header(FILE *f, long n, long m) {
  char h[128];
  int len =
      m ? snprintf(h, sizeof h, "{'descr': '<i4', 'fortran_order': False, 'shape': (%ld, %ld), }",
                   n, m)
        : snprintf(h, sizeof h, "{'descr': '<i4', 'fortran_order': False, 'shape': (%ld,), }", n);
  while ((10 + len + 1) % 64) h[len++] = ' ';
  h[len++] = '\n';
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(len & 0xff, f);
  fputc(len >> 8, f);
  fwrite(h, 1, (size_t)len, f);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: gen_textcls DIR N SEED\n");
    return 2;
  }
  long n = strtol(argv[2], NULL, 10);
  state = strtoull(argv[3], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
  char path[4096];
  snprintf(path, sizeof path, "%s/ids.npy", argv[1]);
  FILE *ids = fopen(path, "wb");
  snprintf(path, sizeof path, "%s/y.npy", argv[1]);
  FILE *ys = fopen(path, "wb");
  if (n < 1 || !ids || !ys) {
    fprintf(stderr, "gen_textcls: cannot write %s (or N < 1)\n", path);
    return 1;
  }
  header(ids, n, SEQ);
  header(ys, n, 0);
  for (long i = 0; i < n; i++) {
    int32_t s[SEQ];
    for (int p = 0; p < SEQ; p++) s[p] = FILLER + below(VOCAB - FILLER);
    int word = below(2) ? GOOD : BAD, at = below(SEQ), neg = -1;
    s[at] = word;
    if (below(2)) {
      do neg = below(SEQ);
      while (neg == at);
      s[neg] = NOT;
    }
    int negated = neg >= 0 && neg < at;
    int32_t y = (word == GOOD) != negated;
    fwrite(s, sizeof *s, SEQ, ids);
    fwrite(&y, sizeof y, 1, ys);
  }
  if (fclose(ids) || fclose(ys)) {
    fprintf(stderr, "gen_textcls: write error\n");
    return 1;
  }
  return 0;
}
