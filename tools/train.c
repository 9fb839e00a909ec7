/* train.c - kiln train: the train step (forward, backward, optimizer) over a data set, compiled
 * (--backend=jit, the default; train_jit.c) or on the interpreter (--backend=interp).
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
 * 3 steps, save, 2 steps equals 5 steps bit for bit. --checkpoint-every N
 * also saves after every step whose global count is a multiple of N, and
 * Ctrl-C (SIGINT, checked between steps) saves and exits with status 130.
 *
 * Reports. --eval SPEC (the forms of --data) runs the held-out set after
 * every epoch and the last step, in batches of the model's batch (the last
 * one padded by wrapping to the set's start; only real samples count),
 * without updating: the compiled engine's m_infer (or m_grad), or the
 * interpreter without apply_updates. A classifier (the loss is
 * cross_entropy of an output and an i32 input) gets its loss and accuracy
 * (argmax over the class dim == label, every position of every sample)
 * from the output; another model gets the mean loss. Stderr shows a
 * progress bar (step/total, epoch, loss since the last log point, steps/s,
 * ETA; at most 10 redraws a second) when it is a terminal, otherwise a line
 * at every tenth of the run; --log CSV gets a row at each of those points
 * and at each evaluation: step,epoch,loss,eval_loss,eval_accuracy,seconds
 * (the eval columns empty when there was none).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dataset.h"
#include "interp.h"
#include "rng.h"
#include "train_jit.h"

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

/* A data set (--data or --eval) and the inputs it feeds. */
typedef struct DataSet {
  const char *spec; /* npy:DIR or idx:PREFIX */
  KilnDataset data;
  Feed feeds[MAX_FEEDS];
  int nfeeds;
} DataSet;

typedef struct Trainer {
  const Options *o;
  Graph *g;
  Interp *it;      /* --backend=interp */
  JitTrainer *jit; /* --backend=jit */
  DataSet train, eval;
  int64_t batch;
  int64_t done; /* steps completed, this run and the runs it resumes */
  int64_t *perm, perm_epoch;
  /* A classifier: the loss is cross_entropy(logits, labels) of an output and an i32 input. */
  const Node *logits, *labels;
  const char *logits_name;
  void *logit_buf;
  FILE *log; /* --log */
  bool bar;  /* stderr is a terminal: a progress bar instead of log lines */
  double t0; /* when the loop started (ms) */
} Trainer;

/* Set by SIGINT; the loop checks it between steps. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

/* ---- Checks ------------------------------------------------------------- */

static int train_checks(const Options *o) {
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  if (!o->data) return cli_usage_error(o->cmd, "missing --data npy:DIR|idx:PREFIX");
  if (strncmp(o->data, "npy:", 4) != 0 && strncmp(o->data, "idx:", 4) != 0)
    return cli_usage_error(o->cmd, "--data expects npy:DIR or idx:PREFIX, got '%s'", o->data);
  if (!o->data[4]) return cli_usage_error(o->cmd, "--data %s needs a path", o->data);
  if (!o->steps && !o->epochs) return cli_usage_error(o->cmd, "missing --steps N or --epochs E");
  if (o->checkpoint_every && !o->save)
    return cli_usage_error(o->cmd, "--checkpoint-every needs --save W.safetensors to write to");
  if (o->eval && strncmp(o->eval, "npy:", 4) != 0 && strncmp(o->eval, "idx:", 4) != 0)
    return cli_usage_error(o->cmd, "--eval expects npy:DIR or idx:PREFIX, got '%s'", o->eval);
  if (o->eval && !o->eval[4]) return cli_usage_error(o->cmd, "--eval %s needs a path", o->eval);
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

/* The compiled engine: its instance already holds --seed's params. */
static int load_params_jit(Trainer *t) {
  if (!t->o->weights) return EXIT_OK;
  KilnTensor steps = {0};
  int rc = train_jit_load(t->jit, t->o->weights, STEPS_DONE_NAME, &steps);
  if (!rc && steps.data) rc = read_steps_done(t->o->weights, &steps, &t->done);
  kiln_tensor_free(&steps);
  return rc;
}

static int load_params(Trainer *t) {
  if (t->jit) return load_params_jit(t);
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
        ts[n++] = cli_tensor_view(
            s, s->name, t->jit ? train_jit_source(t->jit, s->name) : interp_source(t->it, s->name));
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
  /* The interpreter runs the whole graph: inputs only the outputs read get zeros. */
  int rc = t->it ? cli_bind_zero_inputs(t->it, g, needed) : EXIT_OK;
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

static int load_npy(DataSet *ds, const Node **in, int nin) {
  const char *dir = ds->spec + 4, *names[MAX_FEEDS] = {0};
  for (int i = 0; i < nin; i++) names[i] = in[i]->name;
  char err[ERR_LEN];
  if (kiln_dataset_read_npy(dir, names, nin, &ds->data, err, sizeof err) != 0)
    return cli_error("%s", err);
  int rc = EXIT_OK;
  for (int i = 0; !rc && i < nin; i++) {
    rc = check_npy_column(in[i], &ds->data.columns[i], dir);
    ds->feeds[ds->nfeeds++] = (Feed){.input = in[i], .col = &ds->data.columns[i]};
  }
  return rc;
}

/* idx: images to the one float input, labels to the one i32 input. */
static int load_idx(const Trainer *t, DataSet *ds, const Node **in, int nin) {
  const Node *x = NULL, *y = NULL;
  const char *prefix = ds->spec + 4;
  for (int i = 0; i < nin; i++) *(ir_dtype_is_float(in[i]->type.dtype) ? &x : &y) = in[i];
  if (nin != 2 || !x || !y)
    return cli_error("idx: needs a loss that reads one float input (images) and one i32 "
                     "input (labels); %s's reads %d inputs",
                     t->o->model, nin);
  char err[ERR_LEN];
  if (kiln_dataset_read_idx(prefix, &ds->data, err, sizeof err) != 0) return cli_error("%s", err);
  const KilnTensor *img = &ds->data.columns[0], *lab = &ds->data.columns[1];
  if (sample_numel(&x->type) != img->shape[1] * img->shape[2])
    return cli_error(
        "%s: images of %lldx%lld pixels do not fit input '%s' (%lld elements a sample)", prefix,
        (long long)img->shape[1], (long long)img->shape[2], x->name,
        (long long)sample_numel(&x->type));
  if (sample_numel(&y->type) != 1)
    return cli_error("%s: one label a sample does not fit input '%s' (%lld elements a sample)",
                     prefix, y->name, (long long)sample_numel(&y->type));
  ds->feeds[ds->nfeeds++] = (Feed){.input = x, .col = img};
  ds->feeds[ds->nfeeds++] = (Feed){.input = y, .col = lab};
  return EXIT_OK;
}

static int load_set(Trainer *t, DataSet *ds, const Node **in, int nin) {
  int rc = strncmp(ds->spec, "npy:", 4) == 0 ? load_npy(ds, in, nin) : load_idx(t, ds, in, nin);
  for (int i = 0; !rc && i < ds->nfeeds; i++) {
    Feed *f = &ds->feeds[i];
    f->sample_bytes = (size_t)f->col->nbytes / (size_t)ds->data.count;
    f->batch = malloc(f->sample_bytes * (size_t)t->batch + 1);
    if (!f->batch) rc = cli_error("out of memory for a batch of '%s'", f->input->name);
  }
  return rc;
}

static int load_data(Trainer *t) {
  const Node *in[MAX_FEEDS];
  int nin = 0, rc = loss_inputs(t, in, &nin);
  t->train.spec = t->o->data;
  t->eval.spec = t->o->eval;
  if (!rc) rc = load_set(t, &t->train, in, nin);
  if (!rc && t->eval.spec) rc = load_set(t, &t->eval, in, nin);
  t->perm_epoch = -1;
  return rc;
}

/* Epoch e's order: Fisher-Yates driven by Philox (seed, stream 2^63 | e). */
static void shuffle_epoch(Trainer *t, int64_t e) {
  int64_t n = t->train.data.count;
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
  int64_t n = t->train.data.count, e = s / n;
  if (!t->o->shuffle) return s % n;
  if (e != t->perm_epoch) shuffle_epoch(t, e);
  return t->perm[s % n];
}

/* Sample k of the set into row j of every feed's batch. */
static void copy_row(DataSet *ds, int64_t j, int64_t k) {
  for (int i = 0; i < ds->nfeeds; i++) {
    Feed *f = &ds->feeds[i];
    memcpy(f->batch + (size_t)j * f->sample_bytes,
           (const unsigned char *)f->col->data + (size_t)k * f->sample_bytes, f->sample_bytes);
  }
}

/* The interpreter reads its inputs from its own copies. */
static int bind_interp(Trainer *t, const DataSet *ds) {
  char err[ERR_LEN];
  for (int i = 0; t->it && i < ds->nfeeds; i++) {
    const Node *in = ds->feeds[i].input;
    if (!interp_set(t->it, in->name, cli_ir_dtype(ds->feeds[i].col->dtype), in->type.rank,
                    in->type.dims, ds->feeds[i].batch, err, sizeof err))
      return cli_error("%s", err);
  }
  return EXIT_OK;
}

/* Binds step t->done's batch to the fed inputs. */
static int bind_batch(Trainer *t) {
  for (int64_t j = 0; j < t->batch; j++)
    copy_row(&t->train, j, sample_at(t, t->done * t->batch + j));
  return bind_interp(t, &t->train);
}

/* The names and batches of a set's feeds, for the compiled engine. */
static void feed_args(const DataSet *ds, const char **names, void **data) {
  for (int i = 0; i < ds->nfeeds; i++) {
    names[i] = ds->feeds[i].input->name;
    data[i] = ds->feeds[i].batch;
  }
}

/* ---- Evaluation --------------------------------------------------------- */

/* A classifier's loss is cross_entropy(OUT, LABELS) with OUT an output, LABELS an i32 input and
 * OUT's shape LABELS's plus the class dim. */
static void find_classifier(Trainer *t) {
  const Node *l = t->g->loss;
  if (l->op != OP_CROSS_ENTROPY || l->nin != 2) return;
  const Node *x = l->in[0], *y = l->in[1];
  if (y->op != OP_INPUT || y->type.dtype != DT_I32 || x->type.dtype != DT_F32 ||
      x->type.rank != y->type.rank + 1)
    return;
  for (int d = 0; d < y->type.rank; d++)
    if (x->type.dims[d] != y->type.dims[d]) return;
  for (int i = 0; i < t->g->noutputs; i++)
    if (t->g->outputs[i].node == x) {
      t->logits = x;
      t->labels = y;
      t->logits_name = t->g->outputs[i].name;
      return;
    }
}

typedef struct EvalResult {
  double loss, accuracy; /* accuracy < 0: not a classifier */
} EvalResult;

static double loss_value(const Trainer *t) {
  const void *v = interp_value(t->it, t->g->loss);
  return t->g->loss->type.dtype == DT_F64 ? *(const double *)v : *(const float *)v;
}

/* The classifier's scores for the bound batch into t->logit_buf. */
static int eval_logits(Trainer *t) {
  char err[ERR_LEN];
  size_t bytes = (size_t)ir_type_numel(&t->logits->type) * sizeof(float);
  if (t->jit) {
    const char *names[MAX_FEEDS];
    void *data[MAX_FEEDS];
    feed_args(&t->eval, names, data);
    return train_jit_infer(t->jit, names, data, t->eval.nfeeds, t->logits_name, t->logit_buf);
  }
  if (!interp_run(t->it, err, sizeof err)) return cli_error("evaluation: %s", err);
  memcpy(t->logit_buf, interp_value(t->it, t->logits), bytes);
  return EXIT_OK;
}

/* The loss of the bound batch, without updating. */
static int eval_loss(Trainer *t, double *loss) {
  char err[ERR_LEN];
  if (t->jit) {
    const char *names[MAX_FEEDS];
    void *data[MAX_FEEDS];
    feed_args(&t->eval, names, data);
    float l = 0;
    int rc = train_jit_grad(t->jit, names, data, t->eval.nfeeds, &l);
    *loss = l;
    return rc;
  }
  if (!interp_run(t->it, err, sizeof err)) return cli_error("evaluation: %s", err);
  *loss = loss_value(t);
  return EXIT_OK;
}

/* Cross-entropy and hits of rows [0, real) of the bound batch's scores. */
static int score_rows(Trainer *t, int64_t real, double *loss, int64_t *hits, int64_t *count) {
  const int32_t *y = NULL;
  for (int i = 0; i < t->eval.nfeeds; i++)
    if (t->eval.feeds[i].input == t->labels) y = (const int32_t *)t->eval.feeds[i].batch;
  const float *x = t->logit_buf;
  int64_t c = t->logits->type.dims[t->logits->type.rank - 1];
  int64_t per_row = ir_type_numel(&t->labels->type) / t->batch;
  for (int64_t p = 0; p < real * per_row; p++) {
    const float *r = x + p * c;
    if (y[p] < 0 || y[p] >= c)
      return cli_error("%s: label %d is out of range [0, %lld)", t->eval.spec + 4, y[p],
                       (long long)c);
    int64_t best = 0;
    double m = r[0], sum = 0;
    for (int64_t k = 1; k < c; k++)
      if (r[k] > m) m = r[k], best = k;
    for (int64_t k = 0; k < c; k++) sum += exp(r[k] - m);
    *loss += m + log(sum) - r[y[p]];
    *hits += best == y[p];
  }
  *count += real * per_row;
  return EXIT_OK;
}

/* The mean loss (and accuracy) over the --eval set, in batches; the last
 * batch wraps around to the first samples, which are not counted twice. */
static int evaluate(Trainer *t, EvalResult *r) {
  int64_t n = t->eval.data.count, hits = 0, count = 0;
  double sum = 0;
  int rc = EXIT_OK;
  for (int64_t first = 0; !rc && first < n; first += t->batch) {
    int64_t real = n - first < t->batch ? n - first : t->batch;
    for (int64_t j = 0; j < t->batch; j++) copy_row(&t->eval, j, (first + j) % n);
    rc = bind_interp(t, &t->eval);
    if (!rc && t->logits) {
      rc = eval_logits(t);
      if (!rc) rc = score_rows(t, real, &sum, &hits, &count);
    } else if (!rc) {
      double l = 0; /* the batch mean: a partial batch's includes its wrapped samples */
      rc = eval_loss(t, &l);
      sum += l * (double)real;
      count += real;
    }
  }
  r->loss = count ? sum / (double)count : 0;
  r->accuracy = t->logits && count ? (double)hits / (double)count : -1;
  return rc;
}

/* ---- The loop ----------------------------------------------------------- */

/* --steps, or ceil(E*N / batch) for --epochs E, the smaller when both. */
static int count_steps(const Trainer *t, int64_t *steps) {
  const Options *o = t->o;
  int64_t n = t->train.data.count, b = t->batch, limit = INT64_MAX / b - 1;
  *steps = o->steps ? o->steps : INT64_MAX;
  if (o->epochs) {
    if (o->epochs > limit / n) return cli_error("--epochs %lld is too many", (long long)o->epochs);
    int64_t by_epochs = (o->epochs * n + b - 1) / b;
    *steps = by_epochs < *steps ? by_epochs : *steps;
  }
  if (t->done > limit - *steps) return cli_error("too many steps for the data position to count");
  return EXIT_OK;
}

/* One step: forward, backward and update; *loss is the step's loss. */
static int run_step(Trainer *t, double *loss) {
  char err[ERR_LEN];
  if (t->jit) {
    const char *names[MAX_FEEDS];
    void *data[MAX_FEEDS];
    feed_args(&t->train, names, data);
    float l = 0;
    int rc = train_jit_step(t->jit, names, data, t->train.nfeeds, &l);
    *loss = l;
    return rc;
  }
  if (!interp_run(t->it, err, sizeof err))
    return cli_error("step %lld: %s", (long long)t->done + 1, err);
  *loss = loss_value(t);
  if (!interp_apply_updates(t->it, err, sizeof err)) return cli_error("%s", err);
  return EXIT_OK;
}

/* Epochs (passes over the training data) completed after `steps` steps. */
static double epochs_at(const Trainer *t, int64_t steps) {
  return (double)steps * (double)t->batch / (double)t->train.data.count;
}
static int64_t epoch_index(const Trainer *t, int64_t steps) {
  return steps * t->batch / t->train.data.count;
}

static void format_secs(double s, char *buf, size_t len) {
  long v = s < 0 ? 0 : (long)(s + 0.5);
  if (v >= 3600)
    snprintf(buf, len, "%ld:%02ld:%02ld", v / 3600, v / 60 % 60, v % 60);
  else
    snprintf(buf, len, "%ld:%02ld", v / 60, v % 60);
}

/* step/total [#####.....] epoch e/E  loss L  R steps/s  ETA m:ss, redrawn in place. */
static void draw_bar(const Trainer *t, int64_t k, int64_t steps, double loss, double now) {
  double secs = (now - t->t0) / 1e3, rate = secs > 0 ? (double)k / secs : 0;
  int64_t total = t->done - k + steps, width = 24, filled = k * width / steps;
  char bar[32], eta[32];
  for (int64_t i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  format_secs(rate > 0 ? (double)(steps - k) / rate : 0, eta, sizeof eta);
  int64_t epochs = (total * t->batch + t->train.data.count - 1) / t->train.data.count;
  int64_t e = epoch_index(t, t->done - 1) + 1; /* the epoch the last step was in */
  fprintf(stderr, "\r%lld/%lld [%s] epoch %lld/%lld  loss %.4f  %.1f steps/s  ETA %s\033[K",
          (long long)t->done, (long long)total, bar, (long long)(e > epochs ? epochs : e),
          (long long)epochs, loss, rate, eta);
  fflush(stderr);
}

static void report_eval(Trainer *t, const EvalResult *r) {
  if (t->bar) fputs("\r\033[K", stderr);
  fprintf(stderr, "eval after step %lld (epoch %.2f): loss %.6f", (long long)t->done,
          epochs_at(t, t->done), r->loss);
  if (r->accuracy >= 0) fprintf(stderr, "  accuracy %.4f", r->accuracy);
  fputc('\n', stderr);
}

/* One --log row; ev NULL: no evaluation at this point. */
static int log_row(Trainer *t, double loss, const EvalResult *ev, double now) {
  if (!t->log) return EXIT_OK;
  fprintf(t->log, "%lld,%.4f,%.6f,", (long long)t->done, epochs_at(t, t->done), loss);
  if (ev) fprintf(t->log, "%.6f", ev->loss);
  fputc(',', t->log);
  if (ev && ev->accuracy >= 0) fprintf(t->log, "%.6f", ev->accuracy);
  fprintf(t->log, ",%.3f\n", (now - t->t0) / 1e3);
  if (fflush(t->log) != 0 || ferror(t->log)) return cli_error("cannot write %s", t->o->log_path);
  return EXIT_OK;
}

/* Ctrl-C: save what there is and stop with status 130. */
static int stop_interrupted(Trainer *t) {
  if (t->bar) fputc('\n', stderr);
  int rc = t->o->save ? save_checkpoint(t, t->o->save) : EXIT_OK;
  if (rc) return rc;
  if (t->o->save)
    fprintf(stderr, "kiln: interrupted after step %lld; saved to %s (resume with --weights %s)\n",
            (long long)t->done, t->o->save, t->o->save);
  else
    fprintf(stderr, "kiln: interrupted after step %lld; nothing saved (no --save)\n",
            (long long)t->done);
  return 130;
}

static int train_steps(Trainer *t, int64_t steps) {
  const Options *o = t->o;
  int64_t every = steps >= 10 ? steps / 10 : 1, total = t->done + steps, since = 0;
  double last_log = t->t0 = cli_now_ms(), last_draw = 0, loss_sum = 0;
  for (int64_t k = 1; k <= steps; k++) {
    if (interrupted) return stop_interrupted(t);
    double loss = 0;
    int rc = bind_batch(t);
    if (!rc) rc = run_step(t, &loss);
    if (rc) return rc;
    t->done++;
    since++;
    loss_sum += loss;
    if (o->checkpoint_every && o->save && t->done % o->checkpoint_every == 0) {
      if ((rc = save_checkpoint(t, o->save))) return rc;
      if (o->verbose) fprintf(stderr, "kiln: checkpoint at step %lld\n", (long long)t->done);
    }
    bool last = k == steps, logged = k % every == 0 || last;
    bool eval = t->eval.spec && (last || epoch_index(t, t->done) > epoch_index(t, t->done - 1));
    double now = cli_now_ms(), mean = loss_sum / (double)since;
    if (t->bar && (now - last_draw >= 100 || last || eval)) {
      draw_bar(t, k, steps, mean, now);
      last_draw = now;
    }
    EvalResult ev;
    if (eval && (rc = evaluate(t, &ev))) return rc;
    if (eval) report_eval(t, &ev);
    if (!logged && !eval) continue;
    double secs = (now - last_log) / 1e3;
    if (!t->bar && logged)
      fprintf(stderr, "step %lld/%lld  loss %.6f  %.1f steps/s\n", (long long)t->done,
              (long long)total, mean, secs > 0 ? (double)since / secs : 0.0);
    if ((rc = log_row(t, mean, eval ? &ev : NULL, now))) return rc;
    if (!logged) continue;
    last_log = now;
    since = 0;
    loss_sum = 0;
  }
  if (t->bar) fputc('\n', stderr);
  return EXIT_OK;
}

static void trainer_free(Trainer *t) {
  DataSet *sets[] = {&t->train, &t->eval};
  for (int s = 0; s < 2; s++) {
    for (int i = 0; i < sets[s]->nfeeds; i++) free(sets[s]->feeds[i].batch);
    kiln_dataset_free(&sets[s]->data);
  }
  free(t->perm);
  free(t->logit_buf);
  if (t->log) fclose(t->log);
  if (t->it) interp_free(t->it);
  train_jit_close(t->jit);
}

/* --eval's classifier scores and --log's header. */
static int open_reports(Trainer *t) {
  const Options *o = t->o;
  t->bar = isatty(STDERR_FILENO);
  if (o->eval) find_classifier(t);
  if (t->logits && !(t->logit_buf = malloc((size_t)ir_type_numel(&t->logits->type) * 4)))
    return cli_error("out of memory");
  if (!o->log_path) return EXIT_OK;
  if (!(t->log = fopen(o->log_path, "w")))
    return cli_error("cannot write %s: %s", o->log_path, strerror(errno));
  fputs("step,epoch,loss,eval_loss,eval_accuracy,seconds\n", t->log);
  return fflush(t->log) == 0 ? EXIT_OK : cli_error("cannot write %s", o->log_path);
}

int cmd_train(Options *o) {
  int rc = train_checks(o);
  if (rc) return rc;
  struct sigaction sa = {.sa_handler = on_sigint}, old_sa;
  sigemptyset(&sa.sa_mask);
  interrupted = 0;
  sigaction(SIGINT, &sa, &old_sa);
  Loaded m;
  o->passes.inference = false;
  /* Compiled code gets the optimized, fused and planned graph; the
   * interpreter, the oracle, the graph as built. */
  rc = cli_load_model(o, &m, o->backend == BACKEND_JIT ? STAGE_PLANNED : STAGE_GRAD);
  Trainer t = {.o = o, .g = m.graph};
  if (!rc) rc = graph_checks(o, m.graph);
  if (!rc && o->backend == BACKEND_JIT)
    rc = train_jit_open(&t.jit, o, m.graph);
  else if (!rc && !(t.it = interp_new(m.graph)))
    rc = cli_error("out of memory for the interpreter");
  if (!rc) rc = load_params(&t);
  if (!rc) rc = load_data(&t);
  if (!rc && o->shuffle && !(t.perm = malloc((size_t)t.train.data.count * sizeof *t.perm)))
    rc = cli_error("out of memory for the shuffle order of %lld samples",
                   (long long)t.train.data.count);
  int64_t steps = 0;
  if (!rc) rc = count_steps(&t, &steps);
  if (!rc) rc = open_reports(&t);
  if (!rc) rc = train_steps(&t, steps);
  if (!rc && o->save) rc = save_checkpoint(&t, o->save);
  if (!rc && o->save && o->verbose)
    fprintf(stderr, "kiln: saved %lld steps to %s\n", (long long)t.done, o->save);
  trainer_free(&t);
  cli_loaded_free(&m);
  sigaction(SIGINT, &old_sa, NULL);
  return rc;
}
