/* rng.c - Philox4x32-10, uniform and normal draws, and the parameter init rules of SPEC §1.3. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <Random123/philox.h>

#include "rng.h"

static const double kiln_two_pi = 6.283185307179586476925286766559;

/* The block function comes from Random123 (Debian's librandom123-dev, header
 * only, so compiled code carries it without a run-time dependency). */
void kiln_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  philox4x32_ctr_t c = {{ctr[0], ctr[1], ctr[2], ctr[3]}};
  philox4x32_key_t k = {{key[0], key[1]}};
  philox4x32_ctr_t r = philox4x32_R(10, c, k);
  memcpy(out, r.v, sizeof r.v);
}

void kiln_rng_seed(KilnRng *r, uint64_t seed, uint64_t stream) {
  memset(r, 0, sizeof *r);
  r->key[0] = (uint32_t)seed;
  r->key[1] = (uint32_t)(seed >> 32);
  r->ctr[2] = (uint32_t)stream;
  r->ctr[3] = (uint32_t)(stream >> 32);
}

uint32_t kiln_rng_u32(KilnRng *r) {
  if (r->avail == 0) {
    kiln_philox4x32_10(r->ctr, r->key, r->buf);
    if (++r->ctr[0] == 0) r->ctr[1]++; /* 64-bit block index in ctr[0..1] */
    r->avail = 4;
  }
  return r->buf[4 - r->avail--];
}

double kiln_rng_uniform(KilnRng *r) {
  uint64_t a = kiln_rng_u32(r), b = kiln_rng_u32(r);
  return (double)((a << 32 | b) >> 11) * 0x1.0p-53;
}

double kiln_rng_normal(KilnRng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  /* 1 - u1 lies in (0, 1], so the log is finite. */
  double u1 = kiln_rng_uniform(r), u2 = kiln_rng_uniform(r);
  double rad = sqrt(-2.0 * log(1.0 - u1)), t = kiln_two_pi * u2;
  r->spare = rad * sin(t);
  r->has_spare = 1;
  return rad * cos(t);
}

uint64_t kiln_fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    h ^= *p;
    h *= 0x100000001b3ull;
  }
  return h;
}

static const char *const init_names[] = {"zeros",   "ones",   "constant", "normal",
                                         "uniform", "glorot", "he"};

const char *kiln_init_name(KilnInit init) {
  switch (init) {
  case KILN_INIT_ZEROS:
  case KILN_INIT_ONES:
  case KILN_INIT_CONSTANT:
  case KILN_INIT_NORMAL:
  case KILN_INIT_UNIFORM:
  case KILN_INIT_GLOROT:
  case KILN_INIT_HE:
    return init_names[init];
  }
  return "?";
}

int kiln_init_from_name(const char *name, KilnInit *out) {
  for (size_t i = 0; name && i < sizeof init_names / sizeof init_names[0]; i++) {
    if (strcmp(name, init_names[i]) == 0) {
      *out = (KilnInit)i;
      return 0;
    }
  }
  return -1;
}

static int args_finite(const double *args, int nargs) {
  for (int i = 0; i < nargs; i++)
    if (!isfinite(args[i])) return 0;
  return 1;
}

int kiln_init_check_args(KilnInit init, const double *args, int nargs) {
  if (nargs < 0 || (nargs > 0 && !args) || !args_finite(args, nargs)) return -1;
  switch (init) {
  case KILN_INIT_ZEROS:
  case KILN_INIT_ONES:
  case KILN_INIT_GLOROT:
  case KILN_INIT_HE:
    return nargs == 0 ? 0 : -1;
  case KILN_INIT_CONSTANT:
    return nargs == 1 ? 0 : -1;
  case KILN_INIT_NORMAL:
    return (nargs == 1 || nargs == 2) && args[nargs - 1] >= 0 ? 0 : -1;
  case KILN_INIT_UNIFORM:
    return nargs == 2 && args[0] <= args[1] ? 0 : -1;
  }
  return -1;
}

void kiln_init_fans(const int64_t *shape, int rank, double *fan_in, double *fan_out) {
  if (rank == 0) {
    *fan_in = *fan_out = 1;
  } else if (rank == 1) {
    *fan_in = *fan_out = (double)shape[0];
  } else if (rank == 2) {
    *fan_in = (double)shape[0];
    *fan_out = (double)shape[1];
  } else {
    double receptive = 1;
    for (int i = 2; i < rank; i++) receptive *= (double)shape[i];
    *fan_in = (double)shape[1] * receptive;
    *fan_out = (double)shape[0] * receptive;
  }
}

/* One init rule as an affine map of a draw: value = shift + scale * draw (draw:
 * none/uniform/normal). */
typedef struct InitRule {
  int draw; /* 0: none, 1: uniform, 2: normal */
  double shift, scale;
} InitRule;

static InitRule init_rule(KilnInit init, const double *a, int nargs, const int64_t *shape,
                          int rank) {
  double fi, fo;
  kiln_init_fans(shape, rank, &fi, &fo);
  switch (init) {
  case KILN_INIT_ZEROS:
    return (InitRule){0, 0, 0};
  case KILN_INIT_ONES:
    return (InitRule){0, 1, 0};
  case KILN_INIT_CONSTANT:
    return (InitRule){0, a[0], 0};
  case KILN_INIT_NORMAL:
    return nargs == 1 ? (InitRule){2, 0, a[0]} : (InitRule){2, a[0], a[1]};
  case KILN_INIT_UNIFORM:
    return (InitRule){1, a[0], a[1] - a[0]};
  case KILN_INIT_GLOROT: {
    double b = sqrt(6.0 / (fi + fo));
    return (InitRule){1, -b, 2 * b};
  }
  case KILN_INIT_HE:
    return (InitRule){2, 0, sqrt(2.0 / fi)};
  }
  return (InitRule){0, 0, 0};
}

/* Shared by both fills: exactly one of f32 and f64 is non-NULL. */
static int init_fill(float *f32, double *f64, const int64_t *shape, int rank, KilnInit init,
                     const double *args, int nargs, uint64_t seed, const char *name) {
  if (rank < 0 || rank > 8 || (rank > 0 && !shape) || !name ||
      kiln_init_check_args(init, args, nargs) != 0)
    return -1;
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / shape[i])) return -1;
    n *= shape[i];
  }
  if (n == 0) return 0; /* a zero dim also makes a fan zero: nothing to divide */
  InitRule rule = init_rule(init, args, nargs, shape, rank);
  KilnRng r;
  kiln_rng_seed(&r, seed, kiln_fnv1a64(name));
  for (int64_t i = 0; i < n; i++) {
    double d = rule.draw == 1 ? kiln_rng_uniform(&r) : rule.draw == 2 ? kiln_rng_normal(&r) : 0;
    double v = rule.shift + rule.scale * d;
    if (f32)
      f32[i] = (float)v;
    else
      f64[i] = v;
  }
  return 0;
}

int kiln_init_fill(float *dst, const int64_t *shape, int rank, KilnInit init, const double *args,
                   int nargs, uint64_t seed, const char *param_name) {
  if (!dst) return -1;
  return init_fill(dst, NULL, shape, rank, init, args, nargs, seed, param_name);
}

int kiln_init_fill_f64(double *dst, const int64_t *shape, int rank, KilnInit init,
                       const double *args, int nargs, uint64_t seed, const char *param_name) {
  if (!dst) return -1;
  return init_fill(NULL, dst, shape, rank, init, args, nargs, seed, param_name);
}
