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

/* The entry points below have default visibility although libkilnrt is
 * built with -fvisibility=hidden: the kiln tool exports them to code it JITs
 * (it links with -rdynamic). A .so made by `kiln compile` keeps them local
 * with a version script that exports only the model's own functions. */
#if defined(__GNUC__)
#define KILN_RT_API __attribute__((visibility("default")))
#else
#define KILN_RT_API
#endif

/* Longest detail message an instance keeps (see kiln_instance.message). */
#define KILN_RT_MESSAGE_LEN 256

typedef struct kiln_pool kiln_pool;

/* The instance every compiled model's `m *` points to. */
typedef struct kiln_instance {
  const kiln_model_desc *desc;
  unsigned char *mem; /* desc->mem_bytes, 64-byte aligned, prefaulted */
  kiln_pool *pool;
  int nthreads;
  int32_t status; /* set by kernels that find a bad id or label (KILN_ERR_RANGE) */
  /* What the last failing call found, in words ("w.safetensors: tensor
   * 'fc1.w' has shape [784, 512], the model expects [784, 256]"); "" after a
   * success. For tools: m_strerror names only the status. */
  char message[KILN_RT_MESSAGE_LEN];
} kiln_instance;

/* ---- Instances (generic over the descriptor) --------------------------- */

KILN_RT_API int kiln_rt_create(const kiln_model_desc *d, kiln_instance **out, uint64_t seed);
KILN_RT_API void kiln_rt_destroy(kiln_instance *self);
KILN_RT_API int kiln_rt_set_threads(kiln_instance *self, int n);
KILN_RT_API int kiln_rt_load(kiln_instance *self, const char *path);
KILN_RT_API int kiln_rt_save(const kiln_instance *self, const char *path);
KILN_RT_API const float *kiln_rt_param(const kiln_instance *self, const char *name);
KILN_RT_API const float *kiln_rt_param_grad(const kiln_instance *self, const char *name);
KILN_RT_API const char *kiln_rt_strerror(int status);
/* kiln_rt_load from a safetensors image in memory (a `kiln build` executable's
 * embedded weights); `what` names it in messages. Never reads outside
 * [buf, buf + len). */
KILN_RT_API int kiln_rt_load_buffer(kiln_instance *self, const void *buf, size_t len,
                                    const char *what);
/* The instance's detail message (self->message), or "" for NULL. */
KILN_RT_API const char *kiln_rt_message(const kiln_instance *self);

/* ---- Threads ------------------------------------------------------------ */

/* A kernel's outlined body: processes iterations [begin, end) of its outer
 * loop. ctx is the kernel's argument block (buffer pointers). */
typedef void (*kiln_task_fn)(void *ctx, int64_t begin, int64_t end);

/* A pool of n - 1 persistent worker threads plus the caller. */
KILN_RT_API kiln_pool *kiln_pool_new(int nthreads);
KILN_RT_API void kiln_pool_free(kiln_pool *pool);
/* Runs fn over [0, n) split into at most nthreads contiguous chunks of at
 * least min_chunk iterations (static, deterministic chunking: the same n and
 * thread count always give the same chunks). Runs inline when one chunk
 * suffices. Workers spin briefly between kernels, then sleep. */
KILN_RT_API void kiln_parallel_for(kiln_pool *pool, kiln_task_fn fn, void *ctx, int64_t n,
                                   int64_t min_chunk);
/* Inside a task of kiln_parallel_for: this thread's chunk index and the job's chunk count (0
 * and 1 when it runs inline), so a kernel in phases can split each phase's own work. */
KILN_RT_API void kiln_job_shape(int64_t *index, int64_t *count);
/* Inside a task: returns once every chunk of the job has reached it (a no-op with one chunk).
 * Each chunk must call it the same number of times. */
KILN_RT_API void kiln_job_barrier(void);

/* ---- Memory ------------------------------------------------------------- */

/* Zeroed, 64-byte aligned, huge-page advised and prefaulted, so no kernel
 * ever pays for a first touch; NULL if out of memory. */
KILN_RT_API void *kiln_mem_alloc(size_t bytes);
KILN_RT_API void kiln_mem_free(void *p, size_t bytes);

/* ---- For JITs ----------------------------------------------------------- */

/* Every function above by name, ending with {NULL, NULL}: a JIT can define
 * these symbols for generated code without the process's symbol table. */
typedef struct kiln_rt_symbol {
  const char *name;
  void (*addr)(void);
} kiln_rt_symbol;
KILN_RT_API extern const kiln_rt_symbol kiln_rt_symbols[];

#endif
