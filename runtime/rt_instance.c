/* rt_instance.c - model instances: create with initialized params, threads, param lookup, errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rng.h"
#include "rt_internal.h"

/* ---- Shared helpers ----------------------------------------------------- */

size_t rt_dtype_size(kiln_dtype dt) {
  switch (dt) {
  case KILN_DTYPE_F32:
  case KILN_DTYPE_I32:
    return 4;
  case KILN_DTYPE_F64:
    return 8;
  }
  return 0;
}

const char *rt_dtype_name(kiln_dtype dt) {
  switch (dt) {
  case KILN_DTYPE_F32:
    return "F32";
  case KILN_DTYPE_I32:
    return "I32";
  case KILN_DTYPE_F64:
    return "F64";
  }
  return "?";
}

int rt_tensor_bytes(const int64_t *shape, int rank, kiln_dtype dt, uint64_t *bytes) {
  uint64_t n = rt_dtype_size(dt);
  if (n == 0 || rank < 0 || rank > RT_MAX_RANK || (rank > 0 && !shape)) return -1;
  for (int i = 0; i < rank; i++) {
    if (shape[i] < 0) return -1;
    if (shape[i] > 0 && n > UINT64_MAX / (uint64_t)shape[i]) return -1;
    n *= (uint64_t)shape[i];
  }
  *bytes = n;
  return 0;
}

void rt_msg(const kiln_instance *self, const char *fmt, ...) {
  if (!self) return;
  kiln_instance *w = (kiln_instance *)self;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->message, sizeof w->message, fmt, ap);
  va_end(ap);
}

int rt_default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > RT_MAX_THREADS ? RT_MAX_THREADS : (int)n;
}

const char *kiln_rt_message(const kiln_instance *self) { return self ? self->message : ""; }

const char *kiln_rt_strerror(int status) {
  switch (status) {
  case KILN_OK:
    return "success";
  case KILN_ERR_NULL:
    return "a NULL pointer argument";
  case KILN_ERR_RANGE:
    return "an embedding id or class label is out of range";
  case KILN_ERR_IO:
    return "a file could not be opened, read or written";
  case KILN_ERR_FORMAT:
    return "a weights file (or the model descriptor) is malformed";
  case KILN_ERR_MISMATCH:
    return "a weights file's names, dtypes or shapes differ from the model";
  case KILN_ERR_NOMEM:
    return "out of memory";
  case KILN_ERR_THREADS:
    return "a thread count below 1 (or too large), or threads could not start";
  case KILN_ERR_NOTRAIN:
    return "the model was compiled without a train step";
  default:
    return "unknown status";
  }
}

/* ---- Checking the descriptor -------------------------------------------- */

/* A param or state tensor must lie inside the memory block (its gradient too). */
static int desc_check_tensor(const kiln_model_desc *d, const kiln_tensor_desc *t, bool param) {
  uint64_t bytes;
  if (!t->name || rt_tensor_bytes(t->shape, t->rank, t->dtype, &bytes) != 0) return -1;
  if (t->offset > d->mem_bytes || bytes > d->mem_bytes - t->offset) return -1;
  if (t->offset % rt_dtype_size(t->dtype) != 0) return -1;
  if (!param || !d->has_train || t->grad_offset == UINT64_MAX) return 0;
  if (t->grad_offset > d->mem_bytes || bytes > d->mem_bytes - t->grad_offset) return -1;
  return 0;
}

/* A malformed descriptor is the compiler's bug; refuse it rather than write out of bounds. */
static int desc_check(const kiln_model_desc *d) {
  if (d->abi_version != KILN_ABI_VERSION || d->nparams < 0 || d->nstate < 0 ||
      (d->nparams > 0 && !d->params) || (d->nstate > 0 && !d->state) ||
      d->arena_bytes > d->mem_bytes)
    return -1;
  for (int i = 0; i < d->nparams; i++)
    if (desc_check_tensor(d, &d->params[i], true) != 0) return -1;
  for (int i = 0; i < d->nstate; i++)
    if (desc_check_tensor(d, &d->state[i], false) != 0) return -1;
  return 0;
}

/* ---- Instances ---------------------------------------------------------- */

/* Every param by its INIT rule, exactly as `kiln init --seed` writes it (runtime/rng.h). */
static int init_params(kiln_instance *self, uint64_t seed) {
  const kiln_model_desc *d = self->desc;
  for (int i = 0; i < d->nparams; i++) {
    const kiln_tensor_desc *t = &d->params[i];
    void *dst = self->mem + t->offset;
    int rc =
        t->dtype == KILN_DTYPE_F64   ? kiln_init_fill_f64(dst, t->shape, t->rank, t->init,
                                                          t->init_args, t->ninit_args, seed, t->name)
        : t->dtype == KILN_DTYPE_F32 ? kiln_init_fill(dst, t->shape, t->rank, t->init, t->init_args,
                                                      t->ninit_args, seed, t->name)
                                     : -1;
    if (rc != 0) return -1;
  }
  return 0;
}

int kiln_rt_create(const kiln_model_desc *d, kiln_instance **out, uint64_t seed) {
  if (!out) return KILN_ERR_NULL;
  *out = NULL;
  if (!d) return KILN_ERR_NULL;
  if (desc_check(d) != 0) return KILN_ERR_FORMAT;
  kiln_instance *self = calloc(1, sizeof *self);
  if (!self) return KILN_ERR_NOMEM;
  self->desc = d;
  self->mem = kiln_mem_alloc((size_t)d->mem_bytes);
  if (!self->mem || (uint64_t)(size_t)d->mem_bytes != d->mem_bytes) {
    kiln_rt_destroy(self);
    return KILN_ERR_NOMEM;
  }
  if (init_params(self, seed) != 0) {
    kiln_rt_destroy(self);
    return KILN_ERR_FORMAT;
  }
  self->nthreads = rt_default_threads();
  self->pool = kiln_pool_new(self->nthreads);
  if (!self->pool) {
    kiln_rt_destroy(self);
    return KILN_ERR_THREADS;
  }
  *out = self;
  return KILN_OK;
}

void kiln_rt_destroy(kiln_instance *self) {
  if (!self) return;
  kiln_pool_free(self->pool);
  kiln_mem_free(self->mem, (size_t)self->desc->mem_bytes);
  free(self);
}

int kiln_rt_set_threads(kiln_instance *self, int n) {
  if (!self) return KILN_ERR_NULL;
  if (n < 1 || n > RT_MAX_THREADS) {
    rt_msg(self, "thread count %d is outside 1..%d", n, RT_MAX_THREADS);
    return KILN_ERR_THREADS;
  }
  if (n == self->nthreads) return KILN_OK;
  kiln_pool *p = kiln_pool_new(n);
  if (!p) {
    rt_msg(self, "cannot start %d threads", n);
    return KILN_ERR_THREADS;
  }
  kiln_pool_free(self->pool);
  self->pool = p;
  self->nthreads = n;
  self->message[0] = '\0';
  return KILN_OK;
}

static const kiln_tensor_desc *find_param(const kiln_instance *self, const char *name) {
  if (!self || !name) return NULL;
  for (int i = 0; i < self->desc->nparams; i++)
    if (strcmp(self->desc->params[i].name, name) == 0) return &self->desc->params[i];
  return NULL;
}

const float *kiln_rt_param(const kiln_instance *self, const char *name) {
  const kiln_tensor_desc *t = find_param(self, name);
  return t ? (const float *)(const void *)(self->mem + t->offset) : NULL;
}

const float *kiln_rt_param_grad(const kiln_instance *self, const char *name) {
  const kiln_tensor_desc *t = find_param(self, name);
  if (!t || !self->desc->has_train || t->grad_offset == UINT64_MAX) return NULL;
  return (const float *)(const void *)(self->mem + t->grad_offset);
}
