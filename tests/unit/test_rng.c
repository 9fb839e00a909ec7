/* test_rng.c - Philox known answers, pinned draws and init values, statistics, init rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* Random123's kat_vectors for philox4x32 10 rounds. */
static void test_philox_known_answers(void **state) {
  (void)state;
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  for (int i = 0; i < 3; i++) {
    uint32_t out[4];
    kiln_philox4x32_10(kat[i], kat[i] + 4, out);
    for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[i][6 + j]);
  }
}

/* Seed 0, stream 0 is block counter 0 with key 0; the fifth word starts block 1. */
static void test_u32_walks_blocks(void **state) {
  (void)state;
  KilnRng r;
  kiln_rng_seed(&r, 0, 0);
  static const uint32_t first[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
  for (int j = 0; j < 4; j++) assert_int_equal(kiln_rng_u32(&r), first[j]);
  uint32_t ctr[4] = {1, 0, 0, 0}, key[2] = {0, 0}, out[4];
  kiln_philox4x32_10(ctr, key, out);
  assert_int_equal(kiln_rng_u32(&r), out[0]);
}

/* Pinned values; tests/data/rng_reference.py derives them independently. */
static void test_pinned_draws(void **state) {
  (void)state;
  static const uint32_t u[6] = {0x67ee6f2cu, 0xe55410ccu, 0x6c7eca35u,
                                0x557398d3u, 0xe5dde940u, 0x600f6196u};
  static const double uni[3] = {0.4059819683655663, 0.42380965997786146, 0.8979173452535725};
  static const double nor[3] = {-0.9058995257248131, 0.4701459952803784, -1.9776184871367581};
  KilnRng r;
  kiln_rng_seed(&r, 42, 7);
  for (int i = 0; i < 6; i++) assert_int_equal(kiln_rng_u32(&r), u[i]);
  kiln_rng_seed(&r, 42, 7);
  for (int i = 0; i < 3; i++) assert_true(kiln_rng_uniform(&r) == uni[i]); /* bit-exact */
  kiln_rng_seed(&r, 42, 7);
  for (int i = 0; i < 3; i++) assert_true(fabs(kiln_rng_normal(&r) - nor[i]) < 1e-14);
}

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static void test_pinned_init(void **state) {
  (void)state;
  assert_true(kiln_fnv1a64("") == 0xcbf29ce484222325ull);
  assert_true(kiln_fnv1a64("a") == 0xaf63dc4c8601ec8cull);
  assert_true(kiln_fnv1a64("fc1.w") == 0xaa9afdd2549f19caull);
  float g[12], h[24];
  int64_t gs[2] = {3, 4}, hs[4] = {2, 3, 2, 2};
  assert_int_equal(kiln_init_fill(g, gs, 2, KILN_INIT_GLOROT, NULL, 0, 1, "fc1.w"), 0);
  static const uint32_t gw[4] = {0x3d722c6e, 0x3e8d6718, 0xbf032eb2, 0x3f5c5a62};
  for (int i = 0; i < 4; i++) assert_int_equal(f32_bits(g[i]), gw[i]);
  assert_int_equal(kiln_init_fill(h, hs, 4, KILN_INIT_HE, NULL, 0, 5, "conv.w"), 0);
  static const uint32_t hw[4] = {0xbecb653c, 0xbdc621f2, 0xbee84d50, 0x3d7e1551};
  for (int i = 0; i < 4; i++) assert_int_equal(f32_bits(h[i]), hw[i]);
}

static void mean_std(const double *x, int n, double *mean, double *std) {
  double s = 0, ss = 0;
  for (int i = 0; i < n; i++) s += x[i];
  *mean = s / n;
  for (int i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
  *std = sqrt(ss / n);
}

static void test_normal_statistics(void **state) {
  (void)state;
  enum { N = 100000 };
  double *x = malloc(sizeof *x * N), m, s;
  assert_non_null(x);
  KilnRng r;
  kiln_rng_seed(&r, 123, 0);
  for (int i = 0; i < N; i++) x[i] = kiln_rng_normal(&r);
  mean_std(x, N, &m, &s);
  assert_true(fabs(m) < 0.015); /* 4.7 standard errors */
  assert_true(fabs(s - 1) < 0.01);
  kiln_rng_seed(&r, 123, 1);
  for (int i = 0; i < N; i++) x[i] = kiln_rng_uniform(&r);
  mean_std(x, N, &m, &s);
  assert_true(fabs(m - 0.5) < 0.005);
  assert_true(fabs(s - sqrt(1.0 / 12)) < 0.005);
  for (int i = 0; i < N; i++) assert_true(x[i] >= 0 && x[i] < 1);
  free(x);
}

static void test_glorot_bound_and_he_std(void **state) {
  (void)state;
  int64_t shape[2] = {784, 512};
  int n = 784 * 512;
  float *w = malloc(sizeof *w * (size_t)n);
  assert_non_null(w);
  assert_int_equal(kiln_init_fill(w, shape, 2, KILN_INIT_GLOROT, NULL, 0, 0, "w1"), 0);
  float a = (float)sqrt(6.0 / (784 + 512)), mx = 0;
  for (int i = 0; i < n; i++) mx = fmaxf(mx, fabsf(w[i]));
  assert_true(mx <= a && mx > 0.999f * a);
  assert_int_equal(kiln_init_fill(w, shape, 2, KILN_INIT_HE, NULL, 0, 0, "w1"), 0);
  double s = 0, ss = 0;
  for (int i = 0; i < n; i++) s += w[i], ss += (double)w[i] * w[i];
  double std = sqrt(ss / n - (s / n) * (s / n));
  assert_true(fabs(std / sqrt(2.0 / 784) - 1) < 0.01);
  free(w);
}

static void test_same_and_different_streams(void **state) {
  (void)state;
  int64_t shape[2] = {16, 8};
  float a[128], b[128], c[128], d[128];
  assert_int_equal(kiln_init_fill(a, shape, 2, KILN_INIT_GLOROT, NULL, 0, 9, "fc.w"), 0);
  assert_int_equal(kiln_init_fill(b, shape, 2, KILN_INIT_GLOROT, NULL, 0, 9, "fc.w"), 0);
  assert_int_equal(kiln_init_fill(c, shape, 2, KILN_INIT_GLOROT, NULL, 0, 9, "fc.b"), 0);
  assert_int_equal(kiln_init_fill(d, shape, 2, KILN_INIT_GLOROT, NULL, 0, 10, "fc.w"), 0);
  assert_memory_equal(a, b, sizeof a);
  int same_c = 0, same_d = 0;
  for (int i = 0; i < 128; i++) same_c += a[i] == c[i], same_d += a[i] == d[i];
  assert_true(same_c < 3 && same_d < 3);
}

static void test_simple_rules(void **state) {
  (void)state;
  int64_t shape[3] = {2, 3, 4};
  float x[24], y[24];
  double v = 0.25, ms[2] = {0, 0.5}, lohi[2] = {-2, -1};
  assert_int_equal(kiln_init_fill(x, shape, 3, KILN_INIT_ZEROS, NULL, 0, 1, "p"), 0);
  for (int i = 0; i < 24; i++) assert_true(x[i] == 0 && !signbit(x[i]));
  assert_int_equal(kiln_init_fill(x, shape, 3, KILN_INIT_ONES, NULL, 0, 1, "p"), 0);
  for (int i = 0; i < 24; i++) assert_true(x[i] == 1);
  assert_int_equal(kiln_init_fill(x, shape, 3, KILN_INIT_CONSTANT, &v, 1, 1, "p"), 0);
  for (int i = 0; i < 24; i++) assert_true(x[i] == 0.25f);
  /* normal(std) is normal(0, std). */
  assert_int_equal(kiln_init_fill(x, shape, 3, KILN_INIT_NORMAL, ms + 1, 1, 1, "p"), 0);
  assert_int_equal(kiln_init_fill(y, shape, 3, KILN_INIT_NORMAL, ms, 2, 1, "p"), 0);
  assert_memory_equal(x, y, sizeof x);
  assert_int_equal(kiln_init_fill(x, shape, 3, KILN_INIT_UNIFORM, lohi, 2, 1, "p"), 0);
  for (int i = 0; i < 24; i++) assert_true(x[i] >= -2 && x[i] <= -1);
  /* Scalars and empty tensors. */
  float s = 7;
  assert_int_equal(kiln_init_fill(&s, NULL, 0, KILN_INIT_HE, NULL, 0, 1, "s"), 0);
  assert_true(s != 7 && isfinite(s));
  int64_t empty[2] = {0, 5};
  assert_int_equal(kiln_init_fill(x, empty, 2, KILN_INIT_GLOROT, NULL, 0, 1, "e"), 0);
}

static void test_f64_matches_f32(void **state) {
  (void)state;
  int64_t shape[2] = {5, 7};
  float f[35];
  double d[35];
  assert_int_equal(kiln_init_fill(f, shape, 2, KILN_INIT_HE, NULL, 0, 3, "x"), 0);
  assert_int_equal(kiln_init_fill_f64(d, shape, 2, KILN_INIT_HE, NULL, 0, 3, "x"), 0);
  for (int i = 0; i < 35; i++) assert_true(f[i] == (float)d[i]);
}

static void test_bad_arguments(void **state) {
  (void)state;
  int64_t shape[2] = {2, 2}, neg[2] = {2, -1};
  float x[4];
  double two[3] = {1, 0, 0}, negstd[2] = {0, -1}, inf = INFINITY;
  assert_int_equal(kiln_init_fill(x, shape, 2, KILN_INIT_ZEROS, two, 1, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, shape, 2, KILN_INIT_CONSTANT, NULL, 0, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, shape, 2, KILN_INIT_CONSTANT, &inf, 1, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, shape, 2, KILN_INIT_NORMAL, negstd, 2, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, shape, 2, KILN_INIT_UNIFORM, two, 2, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, shape, 2, KILN_INIT_UNIFORM, two, 3, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, neg, 2, KILN_INIT_ONES, NULL, 0, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, shape, 9, KILN_INIT_ONES, NULL, 0, 0, "p"), -1);
  assert_int_equal(kiln_init_fill(x, shape, 2, KILN_INIT_ONES, NULL, 0, 0, NULL), -1);
  assert_int_equal(kiln_init_fill(NULL, shape, 2, KILN_INIT_ONES, NULL, 0, 0, "p"), -1);
}

static void test_fans_and_names(void **state) {
  (void)state;
  double fi, fo;
  int64_t s[4] = {8, 3, 5, 5};
  kiln_init_fans(s, 0, &fi, &fo);
  assert_true(fi == 1 && fo == 1);
  kiln_init_fans(s, 1, &fi, &fo);
  assert_true(fi == 8 && fo == 8);
  kiln_init_fans(s, 2, &fi, &fo);
  assert_true(fi == 8 && fo == 3);
  kiln_init_fans(s, 4, &fi, &fo);
  assert_true(fi == 75 && fo == 200);
  for (int i = KILN_INIT_ZEROS; i <= KILN_INIT_HE; i++) {
    KilnInit k;
    assert_int_equal(kiln_init_from_name(kiln_init_name((KilnInit)i), &k), 0);
    assert_int_equal(k, i);
  }
  KilnInit k;
  assert_int_equal(kiln_init_from_name("xavier", &k), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_philox_known_answers),
      cmocka_unit_test(test_u32_walks_blocks),
      cmocka_unit_test(test_pinned_draws),
      cmocka_unit_test(test_pinned_init),
      cmocka_unit_test(test_normal_statistics),
      cmocka_unit_test(test_glorot_bound_and_he_std),
      cmocka_unit_test(test_same_and_different_streams),
      cmocka_unit_test(test_simple_rules),
      cmocka_unit_test(test_f64_matches_f32),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_fans_and_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
