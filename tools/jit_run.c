/* jit_run.c - kiln run --backend=jit: compile in memory, call the model through its descriptor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "invoke.h"
#include "kiln_rt.h"
#include "llvm_backend.h"
#include "tensor_io.h"
#include "train_jit.h"

/*
 * The JIT'd model is driven exactly as any compiled model is by a generic
 * tool: through its kiln_model_desc, with the entry points' variable argument
 * lists built at run time and called through libffi (kiln_invoke). Its
 * instances are libkilnrt's, linked into kiln (kiln_rt_symbols below keeps
 * every runtime entry point in the binary for the JIT to bind).
 */

#define ERR_LEN 1024

/* "f32[2, 3]" */
static void desc_type_str(const kiln_tensor_desc *t, char *buf, size_t len) {
  static const char *const names[] = {"f32", "i32", "f64"};
  int at = snprintf(buf, len, "%s[", (unsigned)t->dtype < 3 ? names[t->dtype] : "?");
  for (int i = 0; i < t->rank && at > 0 && (size_t)at < len; i++)
    at += snprintf(buf + at, len - (size_t)at, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (at > 0 && (size_t)at < len) snprintf(buf + at, len - (size_t)at, "]");
}

static void tensor_type_str(const KilnTensor *t, char *buf, size_t len) {
  kiln_tensor_desc d = {.dtype = (kiln_dtype)t->dtype, .rank = t->rank, .shape = t->shape};
  desc_type_str(&d, buf, len);
}

/* The message a failed entry point left in the instance (it names the file or
 * value), else what failed and the status's name. */
static int entry_error(void *self, int status, const char *what) {
  const char *m = kiln_rt_message(self);
  if (m[0]) return cli_error("%s", m);
  return cli_error("%s: %s", what, kiln_rt_strerror(status));
}

/* ---- Inputs ------------------------------------------------------------- */

/* Every --input names an input of the model, at most once. */
static int check_input_names(const Options *o, const kiln_model_desc *d) {
  for (int i = 0; i < o->ninputs; i++) {
    for (int j = 0; j < i; j++)
      if (strcmp(o->inputs[i].name, o->inputs[j].name) == 0)
        return cli_usage_error(o->cmd, "--input %s is given twice", o->inputs[i].name);
    bool known = false;
    for (int k = 0; k < d->ninputs && !known; k++)
      known = strcmp(d->inputs[k].name, o->inputs[i].name) == 0;
    if (!known)
      return cli_error("--input %s: the model has no input '%s'", o->inputs[i].name,
                       o->inputs[i].name);
  }
  return EXIT_OK;
}

/* Reads the .npy for one of infer's inputs and checks its dtype and shape. */
static int read_input(const Options *o, const kiln_tensor_desc *t, KilnTensor *x) {
  char want[256], have[256], err[ERR_LEN];
  desc_type_str(t, want, sizeof want);
  const InputArg *in = NULL;
  for (int i = 0; i < o->ninputs && !in; i++)
    if (strcmp(o->inputs[i].name, t->name) == 0) in = &o->inputs[i];
  if (!in) return cli_error("missing --input %s=FILE.npy (%s)", t->name, want);
  if (kiln_npy_read(in->path, x, err, sizeof err) != 0) return cli_error("%s", err);
  tensor_type_str(x, have, sizeof have);
  if ((int)x->dtype != (int)t->dtype || x->rank != t->rank ||
      memcmp(x->shape, t->shape, sizeof *t->shape * (size_t)t->rank) != 0)
    return cli_error("%s: input '%s' is %s, the model expects %s", in->path, t->name, have, want);
  return EXIT_OK;
}

static int alloc_output(const kiln_tensor_desc *t, KilnTensor *y) {
  memset(y, 0, sizeof *y);
  y->name = (char *)t->name; /* a view: not freed */
  y->dtype = (KilnDType)t->dtype;
  y->rank = t->rank;
  memcpy(y->shape, t->shape, sizeof *t->shape * (size_t)t->rank);
  int64_t n = kiln_tensor_numel(y);
  size_t bytes = (size_t)n * kiln_dtype_size(y->dtype);
  y->data = calloc(bytes ? bytes : 1, 1);
  y->nbytes = bytes;
  return y->data ? EXIT_OK : cli_error("out of memory for output '%s'", t->name);
}

/* ---- Running ------------------------------------------------------------ */

typedef struct JitRun {
  const kiln_model_desc *d;
  const Graph *g;
  void *self;
  KilnTensor *xs, *ys;
} JitRun;

static int jit_infer(const Options *o, JitRun *r) {
  const kiln_model_desc *d = r->d;
  int nargs = d->ninfer_inputs + d->noutputs;
  void **args = calloc((size_t)nargs + 1, sizeof *args);
  if (!args) return cli_error("out of memory");
  for (int i = 0; i < d->ninfer_inputs; i++) args[i] = r->xs[i].data;
  for (int i = 0; i < d->noutputs; i++) args[d->ninfer_inputs + i] = r->ys[i].data;
  double t0 = cli_now_ms();
  int st = kiln_invoke(d->entry.infer, r->self, args, nargs);
  free(args);
  if (o->verbose) fprintf(stderr, "kiln: ran %s in %.3f ms\n", d->name, cli_now_ms() - t0);
  if (st == KILN_OK) return EXIT_OK;
  if (st == KILN_ERR_RANGE) return entry_error(r->self, st, "inference failed");
  fprintf(stderr, "kiln: internal error: inference failed with status %d: %s\n", st,
          st < 0 ? "cannot call the entry point" : kiln_rt_strerror(st));
  return EXIT_INTERNAL;
}

/* --grads: m_grad over the train inputs; gs[0] the loss (in the loss's element type: an f64
 * model's m_grad returns it as a float), then d loss / d param, views of the instance's
 * gradients under the params' names (as the interpreter's grads.safetensors). */
static int jit_grads(const Options *o, JitRun *r, KilnTensor *gs, int *ngs, double *loss_buf) {
  const kiln_model_desc *d = r->d;
  const Graph *g = r->g;
  if (!d->entry.grad) return cli_error("the compiled model has no grad entry");
  KilnTensor *xs = calloc((size_t)d->ntrain_inputs + 1, sizeof *xs);
  void **args = calloc((size_t)d->ntrain_inputs + 2, sizeof *args);
  int rc = xs && args ? EXIT_OK : cli_error("out of memory");
  for (int k = 0; !rc && k < d->ntrain_inputs; k++) {
    rc = read_input(o, &d->inputs[d->train_inputs[k]], &xs[k]);
    args[k] = xs[k].data;
  }
  float loss = 0;
  if (!rc) {
    args[d->ntrain_inputs] = &loss;
    int st = kiln_invoke(d->entry.grad, r->self, args, d->ntrain_inputs + 1);
    if (st == KILN_ERR_RANGE) {
      rc = entry_error(r->self, st, "gradients failed");
    } else if (st != KILN_OK) {
      fprintf(stderr, "kiln: internal error: gradients failed with status %d: %s\n", st,
              st < 0 ? "cannot call the entry point" : kiln_rt_strerror(st));
      rc = EXIT_INTERNAL;
    }
  }
  if (!rc) {
    if (g->loss->type.dtype == DT_F64)
      *loss_buf = loss;
    else
      memcpy(loss_buf, &loss, sizeof loss);
    gs[0] = cli_tensor_view(g->loss, g->loss->name ? g->loss->name : "loss", loss_buf);
    *ngs = 1;
    for (int k = 0; !rc && k < g->ngrads; k++) {
      const char *name = g->grads[k].param->name;
      const float *grad = d->entry.param_grad(r->self, name);
      if (!grad) {
        fprintf(stderr, "kiln: internal error: no gradient of '%s' in the instance\n", name);
        rc = EXIT_INTERNAL;
      } else {
        gs[(*ngs)++] = cli_tensor_view(g->grads[k].grad, name, grad);
      }
    }
  }
  for (int k = 0; xs && k < d->ntrain_inputs; k++) kiln_tensor_free(&xs[k]);
  free(xs);
  free(args);
  return rc;
}

/* Weights, threads, inputs, the call, the outputs (and with --grads, the gradients). */
static int jit_steps(const Options *o, JitRun *r) {
  const kiln_model_desc *d = r->d;
  int rc = check_input_names(o, d);
  if (!rc && d->nparams > 0 && !o->weights)
    rc = cli_usage_error(o->cmd, "missing --weights W.safetensors (kiln init writes one)");
  int st;
  KilnTensor steps = {0}; /* a train checkpoint's optim.steps_done: the training loop's */
  if (!rc && o->weights && o->grads) {
    rc = train_jit_load_into(r->self, o->weights, "optim.steps_done", &steps);
    kiln_tensor_free(&steps);
  } else if (!rc && o->weights && (st = d->entry.load(r->self, o->weights)) != KILN_OK)
    rc = entry_error(r->self, st, "cannot load weights");
  if (!rc && o->threads && (st = d->entry.set_threads(r->self, o->threads)) != KILN_OK)
    rc = entry_error(r->self, st, "--threads");
  for (int i = 0; !rc && i < d->ninfer_inputs; i++)
    rc = read_input(o, &d->inputs[d->infer_inputs[i]], &r->xs[i]);
  for (int i = 0; !rc && i < d->noutputs; i++) rc = alloc_output(&d->outputs[i], &r->ys[i]);
  if (!rc) rc = jit_infer(o, r);
  KilnTensor *gs = o->grads ? calloc((size_t)r->g->ngrads + 1, sizeof *gs) : NULL;
  int ngs = 0;
  double loss_buf = 0;
  if (!rc && o->grads) rc = gs ? jit_grads(o, r, gs, &ngs, &loss_buf) : cli_error("out of memory");
  if (!rc) rc = cli_write_npy_files(o->out_dir, r->ys, d->noutputs, gs, ngs);
  free(gs);
  return rc;
}

static int jit_instance(const Options *o, const Graph *g, const kiln_model_desc *d) {
  JitRun r = {d, g, NULL, calloc((size_t)d->ninfer_inputs + 1, sizeof(KilnTensor)),
              calloc((size_t)d->noutputs + 1, sizeof(KilnTensor))};
  int st = r.xs && r.ys ? d->entry.create(&r.self, o->seed) : KILN_ERR_NOMEM;
  int rc = EXIT_OK;
  if (st != KILN_OK) {
    fprintf(stderr, "kiln: internal error: cannot create the model: %s\n", kiln_rt_strerror(st));
    rc = EXIT_INTERNAL;
  }
  if (!rc) rc = jit_steps(o, &r);
  if (r.self) d->entry.destroy(r.self);
  for (int i = 0; r.xs && i < d->ninfer_inputs; i++) kiln_tensor_free(&r.xs[i]);
  for (int i = 0; r.ys && i < d->noutputs; i++) free(r.ys[i].data);
  free(r.xs);
  free(r.ys);
  return rc;
}

int cli_run_jit(Options *o) {
  if (!kiln_rt_symbols[0].addr) return EXIT_INTERNAL; /* keeps the runtime linked in whole */
  Loaded m;
  o->passes.inference = !o->grads;
  int rc = cli_load_model(o, &m, STAGE_PLANNED);
  if (!rc && o->grads) rc = cli_grads_checks(o, m.graph);
  LlvmOptions lo = {.opt_level = o->opt_level, .train = o->grads};
  char err[ERR_LEN];
  double t0 = cli_now_ms();
  LlvmJit *j = rc ? NULL : llvm_jit_compile(m.graph, &lo, err, sizeof err);
  if (!rc && !j) {
    fprintf(stderr, "kiln: internal error: JIT compilation failed: %s\n", err);
    rc = EXIT_INTERNAL;
  }
  if (!rc && o->verbose)
    fprintf(stderr, "kiln: JIT-compiled %s in %.1f ms\n", m.graph->name, cli_now_ms() - t0);
  if (!rc) rc = jit_instance(o, m.graph, llvm_jit_desc(j));
  if (j) llvm_jit_free(j);
  cli_loaded_free(&m);
  return rc;
}
