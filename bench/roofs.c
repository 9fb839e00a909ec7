/* roofs.c - the roofs this machine actually gives one thread, for bench/ANALYSIS.md's
 * rooflines: AVX-512 FMA throughput (24 independent accumulators, no memory operands) and
 * memory bandwidth (a 256 MiB triad a[i] = b[i] + s*c[i], 3 x 4 B per element moved, plus a
 * read-only sum). Times are thread CPU time (CLOCK_THREAD_CPUTIME_ID), so time-slicing by
 * other processes is excluded; the best of several runs is reported.
 *
 *   cc -O2 -mavx512f -std=c11 bench/roofs.c -o roofs && ./roofs
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define DECL(i) __m512 a##i = _mm512_set1_ps((float)i), b##i = _mm512_set1_ps(100.f + i), \
  c##i = _mm512_set1_ps(200.f + i);
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, x, y); b##i = _mm512_fmadd_ps(b##i, x, y); \
  c##i = _mm512_fmadd_ps(c##i, x, y);
#define SUM(i) s = _mm512_add_ps(s, _mm512_add_ps(a##i, _mm512_add_ps(b##i, c##i)));

static double fma_gflops(long iters) {
  __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
  R8(DECL)
  double t0 = now();
  for (long n = 0; n < iters; n++) {
    R8(STEP)
  }
  double t = now() - t0;
  __m512 s = _mm512_setzero_ps();
  R8(SUM)
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return (double)iters * 24 * 16 * 2 / t * 1e-9;
}

static float vsum(const float *a, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

int main(void) {
  double best = 0;
  for (int r = 0; r < 5; r++) {
    double g = fma_gflops(20000000);
    if (g > best) best = g;
  }
  printf("fma: %.1f GFLOP/s (zmm FMA, 24 chains, best of 5; thread CPU time)\n", best);

  size_t n = (size_t)64 << 20; /* 64 Mi floats = 256 MiB per array */
  float *a = aligned_alloc(64, n * 4), *b = aligned_alloc(64, n * 4), *c = aligned_alloc(64, n * 4);
  if (!a || !b || !c) return 1;
  for (size_t i = 0; i < n; i++) a[i] = 0, b[i] = 1, c[i] = 2;
  double tri = 0, rd = 0;
  for (int r = 0; r < 4; r++) {
    double t0 = now();
    for (size_t i = 0; i < n; i++) a[i] = b[i] + 0.5f * c[i];
    double t = now() - t0;
    if (3.0 * 4 * n / t * 1e-9 > tri) tri = 3.0 * 4 * n / t * 1e-9;
    t0 = now();
    float s = vsum(a, n);
    t = now() - t0;
    volatile float sink = s;
    (void)sink;
    if (4.0 * n / t * 1e-9 > rd) rd = 4.0 * n / t * 1e-9;
  }
  printf("triad: %.1f GB/s (256 MiB arrays, 12 B per element, best of 4)\n", tri);
  printf("read: %.1f GB/s (sum of 256 MiB, best of 4)\n", rd);
  free(a), free(b), free(c);
  return 0;
}
