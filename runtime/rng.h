/* rng.h - the deterministic random numbers behind parameter init: Philox4x32-10, exactly specified.
 */
#ifndef KILN_RNG_H
#define KILN_RNG_H

/*
 * Everything below is specified to the bit so that another implementation
 * (tests/data/rng_reference.py is one, in plain Python) reproduces it.
 *
 * Block function: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
 * numbers: as easy as 1, 2, 3", SC'11; the Random123 library):
 *   multipliers  M0 = 0xD2511F53, M1 = 0xCD9E8D57
 *   key bumps    W0 = 0x9E3779B9, W1 = 0xBB67AE85   (golden ratio, sqrt(3) - 1)
 *   one round on counter (c0, c1, c2, c3) with key (k0, k1), products 64-bit:
 *     hi0:lo0 = M0 * c0,  hi1:lo1 = M1 * c2
 *     (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
 *   ten rounds; between rounds k0 += W0, k1 += W1 (mod 2^32).
 *   Known answer (Random123): counter 0, key 0 -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8.
 *
 * Generator (KilnRng), seeded with (seed, stream):
 *   key     = (seed & 0xffffffff, seed >> 32)
 *   counter = (n & 0xffffffff, n >> 32, stream & 0xffffffff, stream >> 32), n = 0, 1, 2, ...
 *   kiln_rng_u32 returns the four words of block n = 0 in order, then of block 1, ...
 *   kiln_rng_uniform: a = u32(), b = u32(); ((a << 32 | b) >> 11) * 2^-53, in [0, 1).
 *   kiln_rng_normal: Box-Muller on pairs. u1 = uniform(), u2 = uniform();
 *     r = sqrt(-2 ln(1 - u1)), t = 2 pi u2; one call returns r cos t, the next r sin t.
 *     u32 and uniform are bit-exact everywhere; normal goes through libm's log, sqrt,
 *     cos and sin, which may differ in the last bit of a double between C libraries
 *     (invisible after rounding to f32 in practice).
 *
 * Parameter init (kiln_init_fill), SPEC §1.3:
 *   Each parameter gets its own stream: stream = FNV-1a 64 of its name's bytes
 *   (offset basis 0xcbf29ce484222325, prime 0x100000001b3), seed = the --seed.
 *   So a parameter's values depend only on (seed, name, shape, init), never on
 *   other parameters. Values are drawn in C order (last index fastest), computed
 *   in double and rounded to nearest for f32.
 *     zeros, ones          0, 1 (no draws)
 *     constant(v)          v
 *     normal(std)          0 + std * normal()
 *     normal(mean, std)    mean + std * normal()
 *     uniform(lo, hi)      lo + (hi - lo) * uniform()
 *     glorot               a = sqrt(6 / (fan_in + fan_out)); -a + 2a * uniform()
 *     he                   sqrt(2 / fan_in) * normal()          (Kaiming normal, fan-in)
 *   Fans (kiln_init_fans):
 *     rank 0               fan_in = fan_out = 1
 *     rank 1 [n]           fan_in = fan_out = n
 *     rank 2 [in, out]     fan_in = in, fan_out = out            (x @ w weights)
 *     rank >= 3 [out, in, k...] (conv weights)
 *                          fan_in = in * prod(k), fan_out = out * prod(k)
 */

#include "kiln.h"
#include <stdint.h>

typedef struct KilnRng {
  uint32_t key[2];
  uint32_t ctr[4]; /* the next block's counter */
  uint32_t buf[4]; /* the current block's output */
  int avail;       /* words of buf not yet returned, taken from buf[4 - avail] */
  int has_spare;   /* Box-Muller's second value waits in spare */
  double spare;
} KilnRng;

void kiln_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

void kiln_rng_seed(KilnRng *r, uint64_t seed, uint64_t stream);
uint32_t kiln_rng_u32(KilnRng *r);
double kiln_rng_uniform(KilnRng *r); /* [0, 1), 53 random bits */
double kiln_rng_normal(KilnRng *r);  /* N(0, 1), Box-Muller as above */

uint64_t kiln_fnv1a64(const char *s);

/* The INIT rules, numbered as kiln.h's public kiln_init: ZEROS, ONES,
 * CONSTANT (args: v), NORMAL (args: std, or mean, std), UNIFORM (args: lo,
 * hi), GLOROT, HE. */
typedef kiln_init KilnInit;

const char *kiln_init_name(KilnInit init);                /* "zeros", ..., "he" */
int kiln_init_from_name(const char *name, KilnInit *out); /* 0, or -1 if unknown */
/* 0 if nargs suits init (see the enum), else -1. */
int kiln_init_check_args(KilnInit init, const double *args, int nargs);
void kiln_init_fans(const int64_t *shape, int rank, double *fan_in, double *fan_out);

/* Fills numel(shape) values. Returns 0, or -1 for bad arguments: rank outside 0..8, a
   negative dim, wrong nargs, std < 0, lo > hi, a non-finite argument, NULL pointers. */
int kiln_init_fill(float *dst, const int64_t *shape, int rank, KilnInit init, const double *args,
                   int nargs, uint64_t seed, const char *param_name);
/* The same values before rounding to f32, for f64 parameters. */
int kiln_init_fill_f64(double *dst, const int64_t *shape, int rank, KilnInit init,
                       const double *args, int nargs, uint64_t seed, const char *param_name);

#endif
