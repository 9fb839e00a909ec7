/* kiln_rt.h - libkilnrt: what compiled models call at run time (libc, libm, pthreads only).
 *
 * Generated code (backend/llvm) calls these functions; they are linked into
 * every .so and executable with hidden visibility, and into the kiln tool
 * itself for the JIT. Nothing here knows the compiler.
 *
 * An instance is one block of memory laid out by the compiler (params, their
 * gradients, optimizer state, then the arena of intermediate values, each at
 * the offset its kiln_tensor_desc gives) plus a thread pool. The exported
 * m_create, m_load, ... of a compiled model are thin wrappers that pass the
 * model's descriptor to the generic functions below.
 */
#ifndef KILN_RT_H
#define KILN_RT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

typedef struct kiln_pool kiln_pool;

/* The instance every compiled model's `m *` points to. */
typedef struct kiln_instance {
  const kiln_model_desc *desc;
  unsigned char *mem; /* desc->mem_bytes, 64-byte aligned, prefaulted */
  kiln_pool *pool;
  int nthreads;
  int32_t status; /* set by kernels that find a bad id or label (KILN_ERR_RANGE) */
} kiln_instance;

/* ---- Instances (generic over the descriptor) --------------------------- */

int kiln_rt_create(const kiln_model_desc *d, kiln_instance **out, uint64_t seed);
void kiln_rt_destroy(kiln_instance *self);
int kiln_rt_set_threads(kiln_instance *self, int n);
int kiln_rt_load(kiln_instance *self, const char *path);
int kiln_rt_save(const kiln_instance *self, const char *path);
const float *kiln_rt_param(const kiln_instance *self, const char *name);
const float *kiln_rt_param_grad(const kiln_instance *self, const char *name);
const char *kiln_rt_strerror(int status);

/* ---- Threads ------------------------------------------------------------ */

/* A kernel's outlined body: processes iterations [begin, end) of its outer
 * loop. ctx is the kernel's argument block (buffer pointers). */
typedef void (*kiln_task_fn)(void *ctx, int64_t begin, int64_t end);

/* A pool of n - 1 persistent worker threads plus the caller. */
kiln_pool *kiln_pool_new(int nthreads);
void kiln_pool_free(kiln_pool *pool);
/* Runs fn over [0, n) split into at most nthreads contiguous chunks of at
 * least min_chunk iterations (static, deterministic chunking: the same n and
 * thread count always give the same chunks). Runs inline when one chunk
 * suffices. Workers spin briefly between kernels, then sleep. */
void kiln_parallel_for(kiln_pool *pool, kiln_task_fn fn, void *ctx, int64_t n, int64_t min_chunk);

/* ---- Memory ------------------------------------------------------------- */

/* Zeroed, 64-byte aligned, huge-page advised and prefaulted, so no kernel
 * ever pays for a first touch; NULL if out of memory. */
void *kiln_mem_alloc(size_t bytes);
void kiln_mem_free(void *p, size_t bytes);

#endif
