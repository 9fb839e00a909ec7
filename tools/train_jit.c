/* train_jit.c - kiln train's compiled engine: the train step through the JIT and its descriptor. */
#include "train_jit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invoke.h"
#include "kiln_rt.h"
#include "llvm_backend.h"
#include "tensor_io.h"

#define ERR_LEN 1024

/* The model is driven as any compiled model is by a generic tool: its
 * instance is libkilnrt's (params initialized as `kiln init --seed` does),
 * its train step called through libffi with the descriptor's argument list.
 * Checkpoints are read and written here rather than by m_load/m_save because
 * they also carry optim.steps_done, which is the training loop's, not the
 * model's. */
struct JitTrainer {
  LlvmJit *jit;
  const kiln_model_desc *desc;
  kiln_instance *self;
  void **outs; /* scratch buffers for the outputs evaluation does not read */
};

static int jit_status(const JitTrainer *j, int status, const char *what) {
  const char *m = kiln_rt_message(j->self);
  if (m[0]) return cli_error("%s", m);
  return cli_error("%s: %s", what, kiln_rt_strerror(status));
}

int train_jit_open(JitTrainer **out, const Options *o, const Graph *g) {
  JitTrainer *j = calloc(1, sizeof *j);
  char err[ERR_LEN];
  if (!j) return cli_error("out of memory");
  *out = j;
  LlvmOptions lo = {.opt_level = o->opt_level, .train = true};
  j->jit = llvm_jit_compile(g, &lo, err, sizeof err);
  if (!j->jit) return cli_error("%s", err);
  j->desc = llvm_jit_desc(j->jit);
  if (!j->desc->has_train || !j->desc->entry.train_step)
    return cli_error("the compiled model has no train step");
  void *self = NULL;
  int rc = j->desc->entry.create(&self, o->seed);
  if (rc) return cli_error("cannot create the model: %s", kiln_rt_strerror(rc));
  j->self = self;
  if (o->threads && (rc = j->desc->entry.set_threads(self, o->threads)) != 0)
    return jit_status(j, rc, "--threads");
  return EXIT_OK;
}

void train_jit_close(JitTrainer *j) {
  if (!j) return;
  if (j->self) j->desc->entry.destroy(j->self);
  for (int k = 0; j->outs && k < j->desc->noutputs; k++) free(j->outs[k]);
  free(j->outs);
  if (j->jit) llvm_jit_free(j->jit); /* the descriptor with it */
  free(j);
}

/* The param or state of that name, or NULL. */
static const kiln_tensor_desc *find_tensor(const kiln_model_desc *d, const char *name) {
  for (int i = 0; i < d->nparams; i++)
    if (strcmp(d->params[i].name, name) == 0) return &d->params[i];
  for (int i = 0; i < d->nstate; i++)
    if (strcmp(d->state[i].name, name) == 0) return &d->state[i];
  return NULL;
}

static size_t desc_bytes(const kiln_tensor_desc *t) {
  size_t n = t->dtype == KILN_DTYPE_F64 ? 8 : 4;
  for (int i = 0; i < t->rank; i++) n *= (size_t)t->shape[i];
  return n;
}

/* "f32[4,3]", as the IR prints types. */
static void type_str(int dtype, int rank, const int64_t *shape, char *buf, size_t len) {
  static const char *const names[] = {"f32", "i32", "f64"};
  int at = snprintf(buf, len, "%s[", (unsigned)dtype < 3 ? names[dtype] : "?");
  for (int i = 0; i < rank && at > 0 && (size_t)at < len; i++)
    at += snprintf(buf + at, len - (size_t)at, "%s%lld", i ? "," : "", (long long)shape[i]);
  if (at > 0 && (size_t)at < len) snprintf(buf + at, len - (size_t)at, "]");
}

static bool same_type(const kiln_tensor_desc *t, const KilnTensor *x) {
  bool same = (int)t->dtype == (int)x->dtype && t->rank == x->rank;
  for (int i = 0; same && i < t->rank; i++) same = t->shape[i] == x->shape[i];
  return same;
}

/* One tensor of a checkpoint into the instance. */
static int load_one(kiln_instance *self, const char *path, const KilnTensor *x) {
  const kiln_tensor_desc *t = find_tensor(self->desc, x->name);
  if (!t && strncmp(x->name, "optim.", 6) == 0) {
    fprintf(stderr, "kiln: warning: %s: ignoring '%s': the model's optimizer keeps no such state\n",
            path, x->name);
    return EXIT_OK;
  }
  if (!t)
    return cli_error("%s: unexpected tensor '%s': the model has no param of that name", path,
                     x->name);
  if (!same_type(t, x)) {
    char want[128], got[128];
    type_str(t->dtype, t->rank, t->shape, want, sizeof want);
    type_str(x->dtype, x->rank, x->shape, got, sizeof got);
    const char *what = strncmp(x->name, "optim.", 6) == 0 ? "state" : "param";
    return cli_error("%s: %s '%s' expects %s, got %s", path, what, x->name, want, got);
  }
  memcpy(self->mem + t->offset, x->data, desc_bytes(t));
  return EXIT_OK;
}

int train_jit_load(JitTrainer *j, const char *path, const char *steps_name, KilnTensor *steps) {
  return train_jit_load_into(j->self, path, steps_name, steps);
}

int train_jit_load_into(kiln_instance *self, const char *path, const char *steps_name,
                        KilnTensor *steps) {
  const kiln_model_desc *d = self->desc;
  KilnTensorFile f = {0};
  char err[ERR_LEN];
  if (kiln_safetensors_read(path, &f, err, sizeof err) != 0) return cli_error("%s", err);
  int rc = EXIT_OK;
  for (int i = 0; !rc && i < f.n; i++) {
    KilnTensor *x = &f.tensors[i];
    if (strcmp(x->name, steps_name) == 0) {
      *steps = *x; /* handed over: the caller frees it */
      memset(x, 0, sizeof *x);
      continue;
    }
    rc = load_one(self, path, x);
  }
  for (int i = 0; !rc && i < d->nparams; i++)
    if (!kiln_tensor_find(&f, d->params[i].name))
      rc = cli_error("%s: missing param '%s'", path, d->params[i].name);
  kiln_tensor_file_free(&f);
  return rc;
}

const void *train_jit_source(const JitTrainer *j, const char *name) {
  const kiln_tensor_desc *t = find_tensor(j->desc, name);
  return t ? j->self->mem + t->offset : NULL;
}

/* The descriptor's inputs at idx[0..nidx) from the named batches, appended to args. */
static int bind_inputs(const kiln_model_desc *d, const int32_t *idx, int nidx,
                       const char *const *names, void *const *data, int n, void **args,
                       int *nargs) {
  for (int k = 0; k < nidx; k++) {
    const char *want = d->inputs[idx[k]].name;
    void *p = NULL;
    for (int i = 0; i < n && !p; i++)
      if (strcmp(names[i], want) == 0) p = data[i];
    if (!p) return cli_error("the model reads input '%s', which the data does not feed", want);
    args[(*nargs)++] = p;
  }
  return EXIT_OK;
}

static int call_train(JitTrainer *j, void (*entry)(void), const char *what,
                      const char *const *names, void *const *data, int n, float *loss) {
  const kiln_model_desc *d = j->desc;
  void *args[KILN_INVOKE_MAX_ARGS];
  int nargs = 0;
  int rc = bind_inputs(d, d->train_inputs, d->ntrain_inputs, names, data, n, args, &nargs);
  if (rc) return rc;
  args[nargs++] = loss;
  rc = kiln_invoke(entry, j->self, args, nargs);
  return rc ? jit_status(j, rc, what) : EXIT_OK;
}

int train_jit_step(JitTrainer *j, const char *const *names, void *const *data, int n, float *loss) {
  return call_train(j, j->desc->entry.train_step, "train step", names, data, n, loss);
}

int train_jit_grad(JitTrainer *j, const char *const *names, void *const *data, int n, float *loss) {
  if (!j->desc->entry.grad) return cli_error("the compiled model has no grad entry");
  return call_train(j, j->desc->entry.grad, "evaluation", names, data, n, loss);
}

int train_jit_infer(JitTrainer *j, const char *const *names, void *const *data, int n,
                    const char *output, void *out) {
  const kiln_model_desc *d = j->desc;
  void *args[KILN_INVOKE_MAX_ARGS];
  int nargs = 0, rc = EXIT_OK;
  if (!d->entry.infer) return cli_error("the compiled model has no inference entry");
  if (!j->outs && !(j->outs = calloc((size_t)d->noutputs + 1, sizeof *j->outs)))
    return cli_error("out of memory");
  rc = bind_inputs(d, d->infer_inputs, d->ninfer_inputs, names, data, n, args, &nargs);
  for (int k = 0; !rc && k < d->noutputs; k++) {
    if (strcmp(d->outputs[k].name, output) == 0) {
      args[nargs++] = out;
      continue;
    }
    if (!j->outs[k] && !(j->outs[k] = malloc(desc_bytes(&d->outputs[k]) + 1)))
      return cli_error("out of memory for output '%s'", d->outputs[k].name);
    args[nargs++] = j->outs[k];
  }
  if (rc) return rc;
  rc = kiln_invoke(d->entry.infer, j->self, args, nargs);
  return rc ? jit_status(j, rc, "inference") : EXIT_OK;
}
