/* gemm_openblas.c - time OpenBLAS cblas_sgemm at one shape, for comparison with Kiln's GEMM
 * (bench/RESULTS.md, bench/KERNELS.md). Built outside the main build (bench/run.sh does it):
 *   cc -O2 -std=c11 -Wall -Wextra -I runtime bench/gemm_openblas.c -o gemm_openblas -lopenblas -ldl
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
 * and the kernel core OpenBLAS picked (OPENBLAS_CORETYPE overrides its detection).
 *
 *   gemm_openblas ... --kiln SO [--name NAME]
 *
 * also times m_infer of a `kiln compile`d one-product model (NAME, default g: its inputs filled
 * with values in [-1, 1), its own buffers), alternating with cblas_sgemm call by call in this
 * one process (which goes first alternates too), so both see the same machine state; then a
 * second JSON line, "impl":"kiln", follows. For one thread only: two thread pools in one
 * process would take each other's cores while they spin. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The Kiln side of --kiln: the model's m_infer, bound to buffers of its own. */
typedef int (*infer4)(void *, void *, void *, void *); /* self, A, B, C */
typedef struct KilnCall {
  const kiln_model_desc *d;
  void *self, *args[4];
  int nargs;
} KilnCall;

static float *alloc(size_t n);

static int64_t numel(const kiln_tensor_desc *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->shape[i];
  return n;
}

static void kiln_open(KilnCall *kc, const char *so, const char *name, int threads) {
  char path[4096], sym[300];
  snprintf(path, sizeof path, "%s%s", strchr(so, '/') ? "" : "./", so);
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  snprintf(sym, sizeof sym, "%s_describe", name);
  const kiln_model_desc *(*describe)(void) = NULL;
  if (lib) *(void **)&describe = dlsym(lib, sym);
  if (!describe) {
    fprintf(stderr, "gemm_openblas: no %s in %s: %s\n", sym, so, lib ? "" : dlerror());
    exit(1);
  }
  const kiln_model_desc *d = kc->d = describe();
  if (d->abi_version != KILN_ABI_VERSION || d->ninfer_inputs + d->noutputs != 3 ||
      d->entry.create(&kc->self, 42) || d->entry.set_threads(kc->self, threads)) {
    fprintf(stderr, "gemm_openblas: %s is not a one-product model of this ABI\n", so);
    exit(1);
  }
  kc->args[kc->nargs++] = kc->self;
  for (int i = 0; i < d->ninfer_inputs; i++) {
    const kiln_tensor_desc *t = &d->inputs[d->infer_inputs[i]];
    float *x = alloc((size_t)numel(t));
    for (int64_t j = 0; j < numel(t); j++) x[j] = (float)((j * 7919) % 2001) / 1000.0f - 1.0f;
    kc->args[kc->nargs++] = x;
  }
  kc->args[kc->nargs++] = alloc((size_t)numel(&d->outputs[0]));
}

static int kiln_call(const KilnCall *kc) {
  return ((infer4)kc->d->entry.infer)(kc->args[0], kc->args[1], kc->args[2], kc->args[3]);
}

static void print_times(const char *head, double *t, int done, double flop) {
  qsort(t, (size_t)done, sizeof *t, cmp);
  double median = done % 2 ? t[done / 2] : (t[done / 2 - 1] + t[done / 2]) / 2;
  printf("%s\"reps\":%d,\"median_ms\":%.6f,\"min_ms\":%.6f,\"max_ms\":%.6f,\"gflops\":%.2f,"
         "\"samples_ms\":[",
         head, done, median * 1e3, t[0] * 1e3, t[done - 1] * 1e3, flop / median * 1e-9);
  for (int i = 0; i < done; i++) printf("%s%.6f", i ? "," : "", t[i] * 1e3);
  printf("]}\n");
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
  const char *form = "NN", *kiln_so = NULL, *kiln_name = "g";
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
    else if (!strcmp(a, "--kiln"))
      kiln_so = v;
    else if (!strcmp(a, "--name"))
      kiln_name = v;
    else {
      fprintf(stderr, "gemm_openblas: unknown option %s\n", a);
      return 2;
    }
    i++; /* the option's value */
  }
  if (pos == 2 || m < 1 || k < 1 || n < 1 || batch < 1 || reps < 1 ||
      (strcmp(form, "NN") && strcmp(form, "TN") && strcmp(form, "NT"))) {
    fprintf(stderr, "usage: gemm_openblas [N] | M K N [--form NN|TN|NT] [--batch B] "
                    "[--threads T] [--reps R] [--max-seconds S] [--kiln SO [--name NAME]]\n");
    return 2;
  }
  if (kiln_so && threads != 1) {
    fprintf(stderr, "gemm_openblas: --kiln needs --threads 1\n");
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
  double *t = calloc((size_t)reps, sizeof *t), *tk = calloc((size_t)reps, sizeof *tk);
  if (!t || !tk) return 1;
  KilnCall kc = {0};
  if (kiln_so) kiln_open(&kc, kiln_so, kiln_name, threads);
#define GEMM()                                                                                     \
  for (long e = 0; e < batch; e++)                                                                 \
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,       \
              (int)m, (int)n, (int)k, 1.0f, a + e * m * k, (int)lda, b + e * k * n, (int)ldb,      \
              0.0f, c + e * m * n, (int)n)
  double start = now();
  for (int w = 0; w < 3 || (w < reps / 10 && now() - start < max_seconds / 4); w++) {
    GEMM();
    if (kiln_so && kiln_call(&kc)) return 1;
  }
  int done = 0;
  start = now();
  while (done < reps && (done < 5 || now() - start < max_seconds * (kiln_so ? 2 : 1))) {
    for (int side = 0; side < (kiln_so ? 2 : 1); side++) {
      bool kiln = kiln_so && (side + done) % 2 == 1;
      double t0 = now();
      if (kiln) {
        if (kiln_call(&kc)) return 1;
        tk[done] = now() - t0;
      } else {
        GEMM();
        t[done] = now() - t0;
      }
    }
    done++;
  }
  double flop = 2.0 * (double)batch * (double)m * (double)n * (double)k;
  char head[512];
  snprintf(head, sizeof head,
           "{\"impl\":\"openblas\",\"m\":%ld,\"k\":%ld,\"n\":%ld,\"batch\":%ld,\"form\":\"%s\","
           "\"threads\":%d,\"core\":\"%s\",\"paired\":%s,",
           m, k, n, batch, form, openblas_get_num_threads(), openblas_get_corename(),
           kiln_so ? "true" : "false");
  print_times(head, t, done, flop);
  if (kiln_so) {
    snprintf(head, sizeof head,
             "{\"impl\":\"kiln\",\"m\":%ld,\"k\":%ld,\"n\":%ld,\"batch\":%ld,\"form\":\"%s\","
             "\"threads\":%d,\"paired\":true,",
             m, k, n, batch, form, threads);
    print_times(head, tk, done, flop);
    kc.d->entry.destroy(kc.self);
  }
  return 0;
}
