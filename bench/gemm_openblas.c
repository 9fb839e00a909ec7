/* gemm_openblas.c - time OpenBLAS cblas_sgemm at one shape, for comparison with Kiln's GEMM
 * (bench/RESULTS.md, bench/KERNELS.md). Built outside the main build (bench/run.sh does it):
 *   cc -O2 -std=c11 -Wall -Wextra bench/gemm_openblas.c -o gemm_openblas -lopenblas
 *
 *   gemm_openblas [N]                     N x N x N (default 1024), threads from the environment
 *   gemm_openblas M K N [--form NN|TN|NT] [--batch B] [--threads T] [--reps R]
 *                 [--max-seconds S]
 *
 * C[M,N] = op(A) op(B), row-major: NN is A[M,K] B[K,N]; TN is A^T B with A stored [K,M] (a
 * weight gradient); NT is A B^T with B stored [N,K] (an input gradient). --batch B runs B
 * independent products of that shape (attention's batched matmuls), one cblas_sgemm each.
 * --threads calls openblas_set_num_threads; otherwise OPENBLAS_NUM_THREADS decides.
 * Prints one JSON line: median / min / max ms over the timed calls, GFLOP/s at the median,
 * and the kernel core OpenBLAS picked (OPENBLAS_CORETYPE overrides its detection). */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static float *alloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n * sizeof(float)) != 0) {
    fprintf(stderr, "gemm_openblas: out of memory\n");
    exit(1);
  }
  return p;
}

int main(int argc, char **argv) {
  long m = 1024, k = 1024, n = 1024, batch = 1;
  int reps = 11, threads = 0, pos = 0;
  double max_seconds = 3.0;
  const char *form = "NN";
  for (int i = 1; i < argc;) {
    const char *a = argv[i++], *v = i < argc ? argv[i] : NULL;
    if (a[0] != '-') {
      long x = atol(a);
      if (pos == 0)
        m = k = n = x;
      else if (pos == 1)
        k = x;
      else if (pos == 2)
        n = x;
      pos++;
      continue;
    }
    if (!v) {
      fprintf(stderr, "gemm_openblas: missing value after %s\n", a);
      return 2;
    }
    if (!strcmp(a, "--form"))
      form = v;
    else if (!strcmp(a, "--batch"))
      batch = atol(v);
    else if (!strcmp(a, "--threads"))
      threads = atoi(v);
    else if (!strcmp(a, "--reps"))
      reps = atoi(v);
    else if (!strcmp(a, "--max-seconds"))
      max_seconds = atof(v);
    else {
      fprintf(stderr, "gemm_openblas: unknown option %s\n", a);
      return 2;
    }
    i++; /* the option's value */
  }
  if (pos == 2 || m < 1 || k < 1 || n < 1 || batch < 1 || reps < 1 ||
      (strcmp(form, "NN") && strcmp(form, "TN") && strcmp(form, "NT"))) {
    fprintf(stderr, "usage: gemm_openblas [N] | M K N [--form NN|TN|NT] [--batch B] "
                    "[--threads T] [--reps R] [--max-seconds S]\n");
    return 2;
  }
  if (threads > 0) openblas_set_num_threads(threads);
  int ta = form[0] == 'T', tb = form[1] == 'T';
  /* Row-major leading dimensions of the stored operands. */
  long lda = ta ? m : k, ldb = tb ? k : n;
  float *a = alloc((size_t)(batch * m * k)), *b = alloc((size_t)(batch * k * n)),
        *c = alloc((size_t)(batch * m * n));
  for (long i = 0; i < batch * m * k; i++) a[i] = (float)(i % 7) - 3;
  for (long i = 0; i < batch * k * n; i++) b[i] = (float)(i % 5) - 2;
  double *t = calloc((size_t)reps, sizeof *t);
  if (!t) return 1;
#define GEMM()                                                                                     \
  for (long e = 0; e < batch; e++)                                                                 \
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,       \
              (int)m, (int)n, (int)k, 1.0f, a + e * m * k, (int)lda, b + e * k * n, (int)ldb,      \
              0.0f, c + e * m * n, (int)n)
  double start = now();
  for (int w = 0; w < 3 || (w < reps / 10 && now() - start < max_seconds / 4); w++) GEMM();
  int done = 0;
  start = now();
  while (done < reps && (done < 5 || now() - start < max_seconds)) {
    double t0 = now();
    GEMM();
    t[done++] = now() - t0;
  }
  qsort(t, (size_t)done, sizeof *t, cmp);
  double median = done % 2 ? t[done / 2] : (t[done / 2 - 1] + t[done / 2]) / 2;
  double flop = 2.0 * (double)batch * (double)m * (double)n * (double)k;
  printf("{\"impl\":\"openblas\",\"m\":%ld,\"k\":%ld,\"n\":%ld,\"batch\":%ld,\"form\":\"%s\","
         "\"threads\":%d,\"reps\":%d,\"median_ms\":%.6f,\"min_ms\":%.6f,\"max_ms\":%.6f,"
         "\"gflops\":%.2f,\"core\":\"%s\",\"samples_ms\":[",
         m, k, n, batch, form, openblas_get_num_threads(), done, median * 1e3, t[0] * 1e3,
         t[done - 1] * 1e3, flop / median * 1e-9, openblas_get_corename());
  for (int i = 0; i < done; i++) printf("%s%.6f", i ? "," : "", t[i] * 1e3);
  printf("]}\n");
  return 0;
}
