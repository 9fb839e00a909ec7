/* gemm_openblas.c - OpenBLAS sgemm at 1024^3 for comparison with Kiln's GEMM
 * (bench/RESULTS.md). Built outside the main build:
 *   cc -O2 bench/gemm_openblas.c -o /tmp/gemm_openblas -lopenblas
 *   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 /tmp/gemm_openblas */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1024, reps = 11;
  float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
        *c = malloc(sizeof(float) * n * n);
  for (int i = 0; i < n * n; i++) a[i] = (float)(i % 7) - 3, b[i] = (float)(i % 5) - 2;
  double t[64];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    t[r] = now() - t0;
  }
  qsort(t, reps, sizeof *t, cmp);
  printf("openblas sgemm %d^3: median %.3f ms, %.1f GFLOP/s (min %.3f ms)\n", n, t[reps / 2] * 1e3,
         2.0 * n * n * n / t[reps / 2] * 1e-9, t[0] * 1e3);
  return 0;
}
