/* train.c - kiln train: the train step (forward, backward, optimizer) on the interpreter over a
 * data set.
 *
 * Data. The inputs the loss reads are fed; each has shape [batch, ...] with
 * the same batch, and a sample is the rest of its shape. npy:DIR gives each
 * such input DIR/NAME.npy of shape [N, ...sample] and exactly its dtype;
 * idx:PREFIX gives the images (f32 in [0, 1]) to the one float input and
 * the labels to the one i32 input, each reshaped to the input's sample when
 * the element counts agree (784 pixels = 1*28*28).
 *
 * Order. Step k (from 0, counted over every run of a checkpoint) takes the
 * samples at positions k*batch .. k*batch + batch - 1 of the endless
 * sequence epoch 0, epoch 1, ...: position s is sample perm_e[s mod N] of
 * epoch e = s / N. A batch that crosses the end of the data wraps into the
 * next epoch (a static-shape model cannot take PyTorch's short last batch).
 * perm_e is the identity, or with --shuffle a Fisher-Yates permutation:
 * for i = N-1 down to 1, j = floor(u * (i+1)) with u = kiln_rng_uniform of
 * Philox seeded (--seed, stream 2^63 | e); swap i and j. --epochs E runs
 * ceil(E*N / batch) steps, the fewest that show every sample E times; with
 * --steps as well, the smaller count.
 *
 * Checkpoints. --save writes every param, every optimizer state (optim.*)
 * and optim.steps_done (F64, exact to 2^53) atomically; --weights reads the
 * params (all required), any optim.* state (missing state starts at zero,
 * state the optimizer does not keep is ignored with a warning) and
 * optim.steps_done, so a resumed run continues the same step sequence:
 * 3 steps, save, 2 steps equals 5 steps bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dataset.h"
#include "interp.h"
#include "rng.h"

#define ERR_LEN         1024
#define STEPS_DONE_NAME "optim.steps_done"
#define SHUFFLE_STREAM  ((uint64_t)1 << 63)
#define MAX_FEEDS       KILN_MAX_INPUTS

/* One model input fed from one data column. */
typedef struct Feed {
  const Node *input;
  const KilnTensor *col;
  size_t sample_bytes;
  unsigned char *batch; /* batch samples */
} Feed;

typedef struct Trainer {
  const Options *o;
  Graph *g;
  Interp *it;
  KilnDataset data;
  Feed feeds[MAX_FEEDS];
  int nfeeds;
  int64_t batch;
  int64_t done; /* steps completed, this run and the runs it resumes */
  int64_t *perm, perm_epoch;
} Trainer;

/* ---- Checks ------------------------------------------------------------- */

static int train_checks(const Options *o) {
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  if (!o->data) return cli_usage_error(o->cmd, "missing --data npy:DIR|idx:PREFIX");
  if (strncmp(o->data, "npy:", 4) != 0 && strncmp(o->data, "idx:", 4) != 0)
    return cli_usage_error(o->cmd, "--data expects npy:DIR or idx:PREFIX, got '%s'", o->data);
  if (!o->data[4]) return cli_usage_error(o->cmd, "--data %s needs a path", o->data);
  if (!o->steps && !o->epochs) return cli_usage_error(o->cmd, "missing --steps N or --epochs E");
  if (o->backend == BACKEND_JIT)
    return cli_usage_error(o->cmd, "the JIT backend is not built yet; use --backend=interp");
  return EXIT_OK;
}

static int graph_checks(const Options *o, const Graph *g) {
  if (!g->loss)
    return cli_usage_error(o->cmd, "%s has no train statement: nothing to train", o->model);
  bool has_params = false;
  for (int i = 0; i < g->nnodes; i++) has_params |= g->nodes[i]->op == OP_PARAM;
  if (!has_params) return cli_error("%s has no params: nothing to train", o->model);
  if (g->optim.kind == OPTIM_NONE)
    return cli_error("%s: the train statement names no optimizer", o->model);
  if (g->ngrads == 0 || g->nupdates == 0) {
    fprintf(stderr, "kiln: internal error: no gradients or updates: this build lacks the autodiff "
                    "or optimizer pass\n");
    return EXIT_INTERNAL;
  }
  return EXIT_OK;
}

/* ---- Params and state --------------------------------------------------- */

/* Every param by its INIT rule for --seed, as kiln init writes it. */
static int init_params(Trainer *t) {
  const Graph *g = t->g;
  int rc = EXIT_OK;
  for (int i = 0; !rc && i < g->nnodes; i++) {
    const Node *p = g->nodes[i];
    if (p->op != OP_PARAM) continue;
    size_t bytes = (size_t)ir_type_numel(&p->type) * ir_dtype_size(p->type.dtype);
    void *data = malloc(bytes ? bytes : 1);
    char err[ERR_LEN];
    if (!data) rc = cli_error("out of memory for param '%s'", p->name);
    if (!rc) rc = cli_init_param(p, t->o->seed, data);
    if (!rc && !interp_set(t->it, p->name, p->type.dtype, p->type.rank, p->type.dims, data, err,
                           sizeof err))
      rc = cli_error("%s", err);
    free(data);
  }
  return rc;
}

/* optim.steps_done: a non-negative integer scalar, F64 (or I32). */
static int read_steps_done(const char *path, const KilnTensor *s, int64_t *done) {
  double v = -1;
  if (s->rank == 0 && s->dtype == KILN_F64) memcpy(&v, s->data, sizeof v);
  if (s->rank == 0 && s->dtype == KILN_I32) {
    int32_t i;
    memcpy(&i, s->data, sizeof i);
    v = i;
  }
  if (!(v >= 0 && v <= 9007199254740992.0 && v == floor(v)))
    return cli_error("%s: '%s' must be a non-negative integer F64[] scalar", path, STEPS_DONE_NAME);
  *done = (int64_t)v;
  return EXIT_OK;
}

/* The optim.* tensors of a checkpoint: the optimizer's state and the step count. */
static int load_state(Trainer *t, const char *path) {
  KilnTensorFile f = {0};
  char err[ERR_LEN];
  if (kiln_safetensors_read(path, &f, err, sizeof err) != 0) return cli_error("%s", err);
  int rc = EXIT_OK;
  for (int i = 0; !rc && i < f.n; i++) {
    const KilnTensor *s = &f.tensors[i];
    const Node *n = ir_find_named_source(t->g, s->name);
    if (strcmp(s->name, STEPS_DONE_NAME) == 0)
      rc = read_steps_done(path, s, &t->done);
    else if (strncmp(s->name, "optim.", 6) != 0)
      continue; /* a param, bound already */
    else if (!n || n->op != OP_STATE)
      fprintf(stderr,
              "kiln: warning: %s: ignoring '%s': the model's optimizer keeps no such state\n", path,
              s->name);
    else if (!interp_set(t->it, s->name, cli_ir_dtype(s->dtype), s->rank, s->shape, s->data, err,
                         sizeof err))
      rc = cli_error("%s: %s", path, err);
  }
  kiln_tensor_file_free(&f);
  return rc;
}

static int load_params(Trainer *t) {
  if (!t->o->weights) return init_params(t);
  int rc = cli_bind_weights(t->it, t->g, t->o->weights);
  return rc ? rc : load_state(t, t->o->weights);
}

/* Params, then every state, then optim.steps_done. */
static int save_checkpoint(const Trainer *t, const char *path) {
  const Graph *g = t->g;
  KilnTensor *ts = calloc((size_t)g->nnodes + 1, sizeof *ts);
  if (!ts) return cli_error("out of memory");
  int n = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < g->nnodes; i++) {
      const Node *s = g->nodes[i];
      if (s->op == (pass == 0 ? OP_PARAM : OP_STATE))
        ts[n++] = cli_tensor_view(s, s->name, interp_source(t->it, s->name));
    }
  double done = (double)t->done;
  ts[n++] = (KilnTensor){
      .name = STEPS_DONE_NAME, .dtype = KILN_F64, .data = &done, .nbytes = sizeof done};
  char err[ERR_LEN];
  int rc = kiln_safetensors_write(path, ts, n, err, sizeof err) != 0 ? cli_error("%s", err) : 0;
  free(ts);
  return rc;
}

/* ---- Data --------------------------------------------------------------- */

/* The inputs the loss reads, in declaration order; each has the batch dim. */
static int loss_inputs(Trainer *t, const Node **in, int *nin) {
  const Graph *g = t->g;
  bool *needed = calloc((size_t)g->next_id + 1, sizeof *needed);
  if (!needed) return cli_error("out of memory");
  cli_mark_needed(g, false, true, needed);
  int rc = cli_bind_zero_inputs(t->it, g, needed);
  char ts[IR_TYPE_STR_MAX];
  *nin = 0;
  for (int i = 0; !rc && i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_INPUT || !needed[n->id]) continue;
    if (*nin == MAX_FEEDS)
      rc = cli_error("the loss reads more than %d inputs", MAX_FEEDS);
    else if (n->type.rank < 1)
      rc = cli_error("input '%s' (%s) has no batch dim to feed samples along", n->name,
                     ir_type_str(&n->type, ts, sizeof ts));
    else if (*nin > 0 && n->type.dims[0] != in[0]->type.dims[0])
      rc = cli_error("inputs '%s' and '%s' have different batch dims (%lld and %lld)", in[0]->name,
                     n->name, (long long)in[0]->type.dims[0], (long long)n->type.dims[0]);
    else
      in[(*nin)++] = n;
  }
  free(needed);
  if (!rc && *nin == 0) rc = cli_error("the loss reads no input: there is no data to feed");
  if (!rc) t->batch = in[0]->type.dims[0];
  return rc;
}

static int64_t sample_numel(const Type *t) { return ir_type_numel(t) / t->dims[0]; }

/* npy: the column has the input's dtype and, after its leading count, the input's sample shape. */
static int check_npy_column(const Node *in, const KilnTensor *c, const char *dir) {
  bool same = c->rank == in->type.rank && cli_ir_dtype(c->dtype) == in->type.dtype;
  for (int d = 1; same && d < c->rank; d++) same = c->shape[d] == in->type.dims[d];
  if (same) return EXIT_OK;
  char want[IR_TYPE_STR_MAX], got[IR_TYPE_STR_MAX];
  Type sample = in->type, file = ir_type(cli_ir_dtype(c->dtype), c->rank, c->shape);
  sample.dims[0] = c->shape[0];
  return cli_error("%s/%s.npy: input '%s' needs %s (N samples of its shape without the batch "
                   "dim), got %s",
                   dir, in->name, in->name, ir_type_str(&sample, want, sizeof want),
                   ir_type_str(&file, got, sizeof got));
}

static int load_npy(Trainer *t, const Node **in, int nin) {
  const char *dir = t->o->data + 4, *names[MAX_FEEDS];
  for (int i = 0; i < nin; i++) names[i] = in[i]->name;
  char err[ERR_LEN];
  if (kiln_dataset_read_npy(dir, names, nin, &t->data, err, sizeof err) != 0)
    return cli_error("%s", err);
  int rc = EXIT_OK;
  for (int i = 0; !rc && i < nin; i++) {
    rc = check_npy_column(in[i], &t->data.columns[i], dir);
    t->feeds[t->nfeeds++] = (Feed){.input = in[i], .col = &t->data.columns[i]};
  }
  return rc;
}

/* idx: images to the one float input, labels to the one i32 input. */
static int load_idx(Trainer *t, const Node **in, int nin) {
  const Node *x = NULL, *y = NULL;
  for (int i = 0; i < nin; i++) *(ir_dtype_is_float(in[i]->type.dtype) ? &x : &y) = in[i];
  if (nin != 2 || !x || !y)
    return cli_error("--data idx: needs a loss that reads one float input (images) and one i32 "
                     "input (labels); %s's reads %d inputs",
                     t->o->model, nin);
  char err[ERR_LEN];
  if (kiln_dataset_read_idx(t->o->data + 4, &t->data, err, sizeof err) != 0)
    return cli_error("%s", err);
  const KilnTensor *img = &t->data.columns[0], *lab = &t->data.columns[1];
  if (sample_numel(&x->type) != img->shape[1] * img->shape[2])
    return cli_error(
        "%s: images of %lldx%lld pixels do not fit input '%s' (%lld elements a sample)",
        t->o->data + 4, (long long)img->shape[1], (long long)img->shape[2], x->name,
        (long long)sample_numel(&x->type));
  if (sample_numel(&y->type) != 1)
    return cli_error("%s: one label a sample does not fit input '%s' (%lld elements a sample)",
                     t->o->data + 4, y->name, (long long)sample_numel(&y->type));
  t->feeds[t->nfeeds++] = (Feed){.input = x, .col = img};
  t->feeds[t->nfeeds++] = (Feed){.input = y, .col = lab};
  return EXIT_OK;
}

static int load_data(Trainer *t) {
  const Node *in[MAX_FEEDS];
  int nin = 0, rc = loss_inputs(t, in, &nin);
  if (!rc) rc = strncmp(t->o->data, "npy:", 4) == 0 ? load_npy(t, in, nin) : load_idx(t, in, nin);
  for (int i = 0; !rc && i < t->nfeeds; i++) {
    Feed *f = &t->feeds[i];
    f->sample_bytes = (size_t)f->col->nbytes / (size_t)t->data.count;
    f->batch = malloc(f->sample_bytes * (size_t)t->batch + 1);
    if (!f->batch) rc = cli_error("out of memory for a batch of '%s'", f->input->name);
  }
  t->perm_epoch = -1;
  return rc;
}

/* Epoch e's order: Fisher-Yates driven by Philox (seed, stream 2^63 | e). */
static void shuffle_epoch(Trainer *t, int64_t e) {
  int64_t n = t->data.count;
  KilnRng r;
  kiln_rng_seed(&r, t->o->seed, SHUFFLE_STREAM | (uint64_t)e);
  for (int64_t i = 0; i < n; i++) t->perm[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(kiln_rng_uniform(&r) * (double)(i + 1));
    if (j > i) j = i;
    int64_t tmp = t->perm[i];
    t->perm[i] = t->perm[j];
    t->perm[j] = tmp;
  }
  t->perm_epoch = e;
}

/* The sample at position s of the endless epoch sequence. */
static int64_t sample_at(Trainer *t, int64_t s) {
  int64_t n = t->data.count, e = s / n;
  if (!t->o->shuffle) return s % n;
  if (e != t->perm_epoch) shuffle_epoch(t, e);
  return t->perm[s % n];
}

/* Binds step t->done's batch to the fed inputs. */
static int bind_batch(Trainer *t) {
  for (int64_t j = 0; j < t->batch; j++) {
    int64_t k = sample_at(t, t->done * t->batch + j);
    for (int i = 0; i < t->nfeeds; i++) {
      Feed *f = &t->feeds[i];
      memcpy(f->batch + (size_t)j * f->sample_bytes,
             (const unsigned char *)f->col->data + (size_t)k * f->sample_bytes, f->sample_bytes);
    }
  }
  char err[ERR_LEN];
  for (int i = 0; i < t->nfeeds; i++) {
    const Node *in = t->feeds[i].input;
    if (!interp_set(t->it, in->name, cli_ir_dtype(t->feeds[i].col->dtype), in->type.rank,
                    in->type.dims, t->feeds[i].batch, err, sizeof err))
      return cli_error("%s", err);
  }
  return EXIT_OK;
}

/* ---- The loop ----------------------------------------------------------- */

/* --steps, or ceil(E*N / batch) for --epochs E, the smaller when both. */
static int count_steps(const Trainer *t, int64_t *steps) {
  const Options *o = t->o;
  int64_t n = t->data.count, b = t->batch, limit = INT64_MAX / b - 1;
  *steps = o->steps ? o->steps : INT64_MAX;
  if (o->epochs) {
    if (o->epochs > limit / n) return cli_error("--epochs %lld is too many", (long long)o->epochs);
    int64_t by_epochs = (o->epochs * n + b - 1) / b;
    *steps = by_epochs < *steps ? by_epochs : *steps;
  }
  if (t->done > limit - *steps) return cli_error("too many steps for the data position to count");
  return EXIT_OK;
}

static double loss_value(const Trainer *t) {
  const void *v = interp_value(t->it, t->g->loss);
  return t->g->loss->type.dtype == DT_F64 ? *(const double *)v : *(const float *)v;
}

static int train_steps(Trainer *t, int64_t steps) {
  int64_t every = steps >= 10 ? steps / 10 : 1, total = t->done + steps;
  double t0 = cli_now_ms();
  int64_t since = 0;
  char err[ERR_LEN];
  for (int64_t k = 1; k <= steps; k++) {
    int rc = bind_batch(t);
    if (rc) return rc;
    if (!interp_run(t->it, err, sizeof err))
      return cli_error("step %lld: %s", (long long)t->done + 1, err);
    double loss = loss_value(t);
    if (!interp_apply_updates(t->it, err, sizeof err)) return cli_error("%s", err);
    t->done++;
    since++;
    if (k % every != 0 && k != steps) continue;
    double now = cli_now_ms(), secs = (now - t0) / 1e3;
    fprintf(stderr, "step %lld/%lld  loss %.6f  %.1f steps/s\n", (long long)t->done,
            (long long)total, loss, secs > 0 ? (double)since / secs : 0.0);
    t0 = now;
    since = 0;
  }
  return EXIT_OK;
}

static void trainer_free(Trainer *t) {
  for (int i = 0; i < t->nfeeds; i++) free(t->feeds[i].batch);
  kiln_dataset_free(&t->data);
  free(t->perm);
  if (t->it) interp_free(t->it);
}

int cmd_train(Options *o) {
  int rc = train_checks(o);
  if (rc) return rc;
  Loaded m;
  o->passes.inference = false;
  rc = cli_load_model(o, &m, STAGE_GRAD);
  Trainer t = {.o = o, .g = m.graph};
  if (!rc) rc = graph_checks(o, m.graph);
  if (!rc && !(t.it = interp_new(m.graph))) rc = cli_error("out of memory for the interpreter");
  if (!rc) rc = load_params(&t);
  if (!rc) rc = load_data(&t);
  if (!rc && o->shuffle && !(t.perm = malloc((size_t)t.data.count * sizeof *t.perm)))
    rc = cli_error("out of memory for the shuffle order of %lld samples", (long long)t.data.count);
  int64_t steps = 0;
  if (!rc) rc = count_steps(&t, &steps);
  if (!rc) rc = train_steps(&t, steps);
  if (!rc && o->save) rc = save_checkpoint(&t, o->save);
  if (!rc && o->save && o->verbose)
    fprintf(stderr, "kiln: saved %lld steps to %s\n", (long long)t.done, o->save);
  trainer_free(&t);
  cli_loaded_free(&m);
  return rc;
}
