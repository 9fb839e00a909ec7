/* kiln.h - the public C ABI of models compiled by Kiln.
 *
 * `kiln compile m.kl -o m.so` writes m.so and m.h. m.h declares, for a model
 * named m (SPEC §3):
 *
 *   m *net;
 *   if (m_create(&net, 42) != 0) ...;            // params as `kiln init --seed 42`
 *   m_load(net, "w.safetensors");                // or keep the initial params
 *   float logits[128 * 10], loss;
 *   int rc = m_infer(net, x, logits);            // inputs, then outputs
 *   rc = m_train_step(net, x, y, &loss);         // forward, backward, update
 *   if (rc) fprintf(stderr, "%s\n", m_strerror(rc));
 *   m_destroy(net);
 *
 * This header describes every compiled model in the same terms, so generic
 * tools (kiln run, through libffi) can call any of them: m_describe() returns
 * a kiln_model_desc.
 */
#ifndef KILN_H
#define KILN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_ABI_VERSION 1

typedef enum kiln_dtype { KILN_DTYPE_F32 = 0, KILN_DTYPE_I32 = 1, KILN_DTYPE_F64 = 2 } kiln_dtype;

/* Status codes of every entry point; m_strerror names them. */
enum kiln_status {
  KILN_OK = 0,
  KILN_ERR_NULL = 1,     /* a NULL pointer argument */
  KILN_ERR_RANGE = 2,    /* an embedding id or class label out of range */
  KILN_ERR_IO = 3,       /* a file could not be opened, read or written */
  KILN_ERR_FORMAT = 4,   /* a weights file is malformed */
  KILN_ERR_MISMATCH = 5, /* a weights file's names, dtypes or shapes differ from the model */
  KILN_ERR_NOMEM = 6,    /* out of memory */
  KILN_ERR_THREADS = 7,  /* a thread count below 1, or threads could not start */
  KILN_ERR_NOTRAIN = 8,  /* the model was compiled without a train step */
  KILN_STATUS_COUNT
};

/* How a param is initialized (SPEC §1.3), for m_create. */
typedef enum kiln_init {
  KILN_INIT_ZEROS = 0,
  KILN_INIT_ONES,
  KILN_INIT_CONSTANT, /* args: v */
  KILN_INIT_NORMAL,   /* args: mean, std */
  KILN_INIT_UNIFORM,  /* args: lo, hi */
  KILN_INIT_GLOROT,
  KILN_INIT_HE
} kiln_init;

/* One tensor of the model. Shapes are static. For params and state, offset
 * is the byte offset of the values in the instance's memory block; for
 * params, grad_offset that of the gradient (UINT64_MAX when the model has no
 * train step). Inputs and outputs are the caller's; their offsets are unused. */
typedef struct kiln_tensor_desc {
  const char *name;
  kiln_dtype dtype;
  int32_t rank;
  const int64_t *shape;
  uint64_t offset;
  uint64_t grad_offset;
  kiln_init init; /* params */
  int32_t ninit_args;
  const double *init_args;
} kiln_tensor_desc;

/* Entry points, as function pointers. The argument lists of infer,
 * train_step and grad depend on the model: the instance, then one pointer per
 * tensor of infer_inputs (or train_inputs), then one per output (infer) or a
 * float *loss (train_step, grad). */
typedef struct kiln_model_entry {
  int (*create)(void **out, uint64_t seed);
  void (*destroy)(void *self);
  int (*set_threads)(void *self, int n);
  int (*load)(void *self, const char *path);
  int (*save)(const void *self, const char *path);
  void (*infer)(void); /* cast to the model's signature, or call through libffi */
  void (*train_step)(void);
  void (*grad)(void);
  const float *(*param)(const void *self, const char *name);
  const float *(*param_grad)(const void *self, const char *name);
  const char *(*strerror)(int status);
} kiln_model_entry;

typedef struct kiln_model_desc {
  uint32_t abi_version; /* KILN_ABI_VERSION */
  const char *name;
  int32_t ninputs;
  const kiln_tensor_desc *inputs; /* every input, in declaration order */
  int32_t noutputs;
  const kiln_tensor_desc *outputs;
  int32_t nparams;
  const kiln_tensor_desc *params;
  int32_t nstate;
  const kiln_tensor_desc *state; /* optimizer state, named optim.* */
  int32_t ninfer_inputs;         /* m_infer's inputs: indices into inputs */
  const int32_t *infer_inputs;
  int32_t ntrain_inputs; /* m_train_step's and m_grad's inputs; 0 if none */
  const int32_t *train_inputs;
  int32_t has_train;
  uint64_t mem_bytes;   /* the instance memory block: params, grads, state, arena */
  uint64_t arena_bytes; /* the part of it that holds intermediate values */
  kiln_model_entry entry;
} kiln_model_desc;

#ifdef __cplusplus
}
#endif

#endif
