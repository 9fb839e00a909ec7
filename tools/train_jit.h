/* train_jit.h - kiln train's compiled engine (train_jit.c). */
#ifndef KILN_TRAIN_JIT_H
#define KILN_TRAIN_JIT_H

#include "cli.h"
#include "kiln_rt.h"
#include "tensor_io.h"

typedef struct JitTrainer JitTrainer;

/* Compiles g's train step and creates an instance with --seed's params. On
 * failure *out may hold a partly built trainer: close it. */
int train_jit_open(JitTrainer **out, const Options *o, const Graph *g);
void train_jit_close(JitTrainer *j);
/* Params (all required) and optimizer state from a checkpoint; the tensor
 * named steps_name, if present, is moved to *steps (the caller frees it). */
int train_jit_load(JitTrainer *j, const char *path, const char *steps_name, KilnTensor *steps);
/* The same into any compiled model's instance (kiln run --grads on the JIT). */
int train_jit_load_into(kiln_instance *self, const char *path, const char *steps_name,
                        KilnTensor *steps);
/* The current values of a param or state, or NULL. */
const void *train_jit_source(const JitTrainer *j, const char *name);
/* One train step with the n named input batches. */
int train_jit_step(JitTrainer *j, const char *const *names, void *const *data, int n, float *loss);
/* The loss of the named batches without updating (the grad entry). */
int train_jit_grad(JitTrainer *j, const char *const *names, void *const *data, int n, float *loss);
/* Inference on the named batches: the output named output into out (its
 * descriptor's shape and dtype); the other outputs go to scratch buffers. */
int train_jit_infer(JitTrainer *j, const char *const *names, void *const *data, int n,
                    const char *output, void *out);

#endif
