/* fmnist.c - the demo's helper (scripts/demo.sh): IDX images to .npy, and logits to class names.
 *
 *   fmnist extract PREFIX N OUT.npy   the first N images of PREFIX-images-idx3-ubyte[.gz] as
 *                                     f32 [N, rows*cols] (byte / 255, as kiln train reads
 *                                     them); prints their labels, one a line
 *   fmnist classify LOGITS.npy        each row's argmax and its Fashion-MNIST class name
 *
 * Build: cc -O2 -o fmnist scripts/fmnist.c -lz (zlib reads plain and gzip files alike).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char *const classes[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static int fail(const char *msg, const char *what) {
  fprintf(stderr, "fmnist: %s: %s\n", what, msg);
  return 1;
}

static gzFile open_idx(const char *prefix, const char *kind) {
  char path[4096];
  snprintf(path, sizeof path, "%s-%s", prefix, kind);
  gzFile f = gzopen(path, "rb");
  if (!f) {
    snprintf(path, sizeof path, "%s-%s.gz", prefix, kind);
    f = gzopen(path, "rb");
  }
  return f;
}

static int read_u32s(gzFile f, uint32_t *v, int n) {
  unsigned char b[4];
  for (int i = 0; i < n; i++) {
    if (gzread(f, b, 4) != 4) return -1;
    v[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  }
  return 0;
}

/* A version 1.0 .npy header for <f4 of the given shape. */
static void npy_header(FILE *out, long n, long m) {
  char h[128];
  int len = snprintf(h, sizeof h, "{'descr': '<f4', 'fortran_order': False, 'shape': (%ld, %ld), }",
                     n, m);
  while ((10 + len + 1) % 64) h[len++] = ' ';
  h[len++] = '\n';
  fwrite("\x93NUMPY\x01\x00", 1, 8, out);
  fputc(len & 0xff, out);
  fputc(len >> 8, out);
  fwrite(h, 1, (size_t)len, out);
}

static int extract(const char *prefix, long n, const char *path) {
  gzFile im = open_idx(prefix, "images-idx3-ubyte"), lb = open_idx(prefix, "labels-idx1-ubyte");
  uint32_t ih[4], lh[2];
  if (!im || !lb) return fail("cannot open the images and labels", prefix);
  if (read_u32s(im, ih, 4) || ih[0] != 0x803 || read_u32s(lb, lh, 2) || lh[0] != 0x801)
    return fail("not an IDX image and label pair", prefix);
  if (n < 1 || n > (long)ih[1] || n > (long)lh[1]) return fail("too many images asked for", prefix);
  long px = (long)ih[2] * ih[3];
  unsigned char *buf = malloc((size_t)(n * px));
  FILE *out = fopen(path, "wb");
  if (!buf || !out) return fail("cannot write", path);
  if (gzread(im, buf, (unsigned)(n * px)) != (int)(n * px)) return fail("truncated", prefix);
  npy_header(out, n, px);
  for (long i = 0; i < n * px; i++) {
    float v = (float)buf[i] / 255.0f;
    fwrite(&v, 4, 1, out);
  }
  for (long i = 0; i < n; i++) {
    unsigned char l;
    if (gzread(lb, &l, 1) != 1) return fail("truncated", prefix);
    printf("%d %s\n", l, l < 10 ? classes[l] : "?");
  }
  free(buf);
  gzclose(im);
  gzclose(lb);
  return fclose(out) ? fail("cannot write", path) : 0;
}

/* Rows of a 2-D <f4 .npy: the argmax of each. */
static int classify(const char *path) {
  FILE *f = fopen(path, "rb");
  unsigned char pre[10];
  if (!f || fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY\x01", 7) != 0)
    return fail("not a version 1 .npy file", path);
  size_t hl = pre[8] | (size_t)pre[9] << 8;
  char *h = calloc(hl + 1, 1);
  long n = 0, m = 0;
  if (!h || fread(h, 1, hl, f) != hl || !strstr(h, "'<f4'") || !strstr(h, "'shape': (") ||
      sscanf(strstr(h, "'shape': (") + 10, "%ld, %ld", &n, &m) != 2 || n < 1 || m < 1)
    return fail("expected a 2-D <f4 array", path);
  float *row = malloc((size_t)m * sizeof *row);
  for (long i = 0; row && i < n; i++) {
    if (fread(row, sizeof *row, (size_t)m, f) != (size_t)m) return fail("truncated", path);
    long best = 0;
    for (long k = 1; k < m; k++)
      if (row[k] > row[best]) best = k;
    printf("%ld %s\n", best, best < 10 && m == 10 ? classes[best] : "");
  }
  free(row);
  free(h);
  fclose(f);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "extract") == 0)
    return extract(argv[2], strtol(argv[3], NULL, 10), argv[4]);
  if (argc == 3 && strcmp(argv[1], "classify") == 0) return classify(argv[2]);
  fprintf(stderr, "usage: fmnist extract PREFIX N OUT.npy | fmnist classify LOGITS.npy\n");
  return 2;
}
