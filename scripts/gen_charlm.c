/* gen_charlm.c - character-LM data for models/transformer.kl from plain-text files (README.md).
 *
 *   gen_charlm TRAIN_DIR TEST_DIR FILE...
 *
 * Concatenates the files and cuts the text into chunks of 2048 bytes; every
 * tenth chunk (9, 19, ...) is held out. From each part it writes DIR/ids.npy
 * and DIR/targets.npy, both i32 [N, 64]: windows of 64 byte ids and the 64
 * bytes one further on (the next character at every position). Training
 * windows start every 16 bytes, held-out ones every 64 (no overlap).
 *
 * Build: cc -O2 -o gen_charlm scripts/gen_charlm.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEQ   64
#define CHUNK 2048

static int fail(const char *what) {
  fprintf(stderr, "gen_charlm: cannot %s\n", what);
  return 1;
}

/* A version 1.0 .npy header for <i4 of shape (n, m). */
static void header(FILE *f, long n, long m) {
  char h[128];
  int len = snprintf(h, sizeof h, "{'descr': '<i4', 'fortran_order': False, 'shape': (%ld, %ld), }",
                     n, m);
  while ((10 + len + 1) % 64) h[len++] = ' ';
  h[len++] = '\n';
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(len & 0xff, f);
  fputc(len >> 8, f);
  fwrite(h, 1, (size_t)len, f);
}

static int write_part(const char *dir, const unsigned char *t, long len, long stride) {
  long n = len > SEQ ? (len - SEQ - 1) / stride + 1 : 0;
  char path[4096];
  FILE *f[2];
  const char *names[2] = {"ids", "targets"};
  for (int k = 0; k < 2; k++) {
    snprintf(path, sizeof path, "%s/%s.npy", dir, names[k]);
    if (!(f[k] = fopen(path, "wb"))) return fail("write the .npy files");
    header(f[k], n, SEQ);
    for (long i = 0; i < n; i++)
      for (long p = 0; p < SEQ; p++) {
        int32_t v = t[i * stride + p + k];
        fwrite(&v, sizeof v, 1, f[k]);
      }
    if (fclose(f[k])) return fail("write the .npy files");
  }
  printf("%s: %ld windows of %d from %ld bytes\n", dir, n, SEQ, len);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: gen_charlm TRAIN_DIR TEST_DIR FILE...\n");
    return 2;
  }
  unsigned char *all = NULL;
  long len = 0;
  for (int i = 3; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    if (!f) return fail(argv[i]);
    unsigned char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
      unsigned char *grown = realloc(all, (size_t)len + got);
      if (!grown) return fail("allocate");
      all = grown;
      memcpy(all + len, buf, got);
      len += (long)got;
    }
    fclose(f);
  }
  unsigned char *train = malloc((size_t)len + 1), *test = malloc((size_t)len + 1);
  long ntrain = 0, ntest = 0;
  if (!train || !test) return fail("allocate");
  for (long c = 0; c * CHUNK < len; c++) {
    long n = len - c * CHUNK < CHUNK ? len - c * CHUNK : CHUNK;
    if (c % 10 == 9) {
      memcpy(test + ntest, all + c * CHUNK, (size_t)n);
      ntest += n;
    } else {
      memcpy(train + ntrain, all + c * CHUNK, (size_t)n);
      ntrain += n;
    }
  }
  int rc = write_part(argv[1], train, ntrain, 16) || write_part(argv[2], test, ntest, SEQ);
  free(all);
  free(train);
  free(test);
  return rc;
}
