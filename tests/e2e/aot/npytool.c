/* npytool.c - the AOT test's helper: writes deterministic .npy inputs and compares .npy files.
 *   npytool make OUT.npy f32|i32 D0,D1,... SEED [MAX]   f32 uniform in [-1, 1); i32 in [0, MAX)
 *   npytool cmp A.npy B.npy                             same shape and dtype, values close */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int make(const char *out, const char *dt, const char *dims, uint64_t seed, long max) {
  long shape[8], n = 1;
  int rank = 0;
  char shp[256] = "";
  for (const char *p = dims; *p && rank < 8;) {
    shape[rank] = strtol(p, (char **)&p, 10);
    n *= shape[rank];
    snprintf(shp + strlen(shp), sizeof shp - strlen(shp), "%ld,%s", shape[rank], rank ? "" : "");
    rank++;
    if (*p == ',') p++;
  }
  if (rank > 1) shp[strlen(shp) - 1] = '\0'; /* (a,b) not (a,b,) */
  char h[256];
  int hl = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                    strcmp(dt, "i32") == 0 ? "<i4" : "<f4", shp);
  while ((10 + hl + 1) % 64) h[hl++] = ' ';
  h[hl++] = '\n';
  FILE *f = fopen(out, "wb");
  if (!f) return 1;
  unsigned char pre[10] = {
      0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 255), (unsigned char)(hl >> 8)};
  fwrite(pre, 1, 10, f);
  fwrite(h, 1, (size_t)hl, f);
  for (long i = 0; i < n; i++) {
    uint64_t r = next(&seed);
    if (strcmp(dt, "i32") == 0) {
      int32_t v = (int32_t)(r % (uint64_t)max);
      fwrite(&v, 4, 1, f);
    } else {
      float v = (float)((double)(r >> 11) * 0x1p-53 * 2 - 1);
      fwrite(&v, 4, 1, f);
    }
  }
  return fclose(f) != 0;
}

/* The whole file; *data at the array (after the header). */
static unsigned char *slurp(const char *path, size_t *len, size_t *data) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*len + 1);
  if (!b || fread(b, 1, *len, f) != *len || *len < 10) return NULL;
  fclose(f);
  *data = 10 + (size_t)(b[8] | b[9] << 8);
  return b;
}

static int cmp(const char *a, const char *b) {
  size_t la, lb, da, db;
  unsigned char *x = slurp(a, &la, &da), *y = slurp(b, &lb, &db);
  if (!x || !y) return fprintf(stderr, "cannot read %s or %s\n", a, b), 1;
  if (la - da != lb - db || memcmp(x + 10, y + 10, da - 10) != 0)
    return fprintf(stderr, "%s and %s differ in shape or dtype\n", a, b), 1;
  int is_int = strstr((char *)x + 10, "<i4") != NULL;
  size_t n = (la - da) / 4, bad = 0;
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    float u, v;
    memcpy(&u, x + da + 4 * i, 4), memcpy(&v, y + db + 4 * i, 4);
    double e = is_int ? (memcmp(x + da + 4 * i, y + db + 4 * i, 4) != 0) : fabs((double)u - v);
    double tol = is_int ? 0 : 1e-4 + 1e-3 * fabs((double)v);
    if (!(e <= tol) && bad++ < 5) fprintf(stderr, "  [%zu] %g vs %g\n", i, (double)u, (double)v);
    if (e > worst || e != e) worst = e;
  }
  if (bad) fprintf(stderr, "%s vs %s: %zu of %zu differ, largest error %g\n", a, b, bad, n, worst);
  free(x), free(y);
  return bad != 0;
}

int main(int argc, char **argv) {
  if (argc >= 6 && strcmp(argv[1], "make") == 0)
    return make(argv[2], argv[3], argv[4], strtoull(argv[5], NULL, 10),
                argc > 6 ? strtol(argv[6], NULL, 10) : 10);
  if (argc == 4 && strcmp(argv[1], "cmp") == 0) return cmp(argv[2], argv[3]);
  fprintf(stderr, "usage: npytool make OUT DTYPE DIMS SEED [MAX] | npytool cmp A B\n");
  return 2;
}
