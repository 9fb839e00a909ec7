/* sample.c - kiln sample: text from a byte-level language model (models/transformer.kl).
 *
 * The model reads one i32 input of shape [batch, seq] (byte ids) and has an
 * output [batch, seq, vocab] of next-byte logits. The model is compiled for
 * batch 1 (when it has a size named batch and -D does not set it). Each step
 * feeds the last seq bytes of the text so far at positions 0.. (the rest of
 * the row zeros, which a causal model's earlier positions never see), takes
 * the logits at the last fed position, divides them by --temperature and
 * samples the softmax with Philox (--seed, stream 0). Prints the prompt and
 * what follows it to stdout.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "invoke.h"
#include "kiln_rt.h"
#include "llvm_backend.h"
#include "rng.h"

#define ERR_LEN 1024

/* Some model statement sets the batch size: compile for one sequence unless -D batch is given. */
static int default_batch_one(Options *o) {
  for (int i = 0; i < o->ndefs; i++)
    if (strcmp(o->defs[i].name, "batch") == 0) return EXIT_OK;
  Loaded m;
  int rc = cli_load_source(o, &m);
  if (!rc) rc = cli_load_graph(o, &m);
  bool has = false;
  for (int i = 0; !rc && i < m.graph->nsizes; i++)
    has |= strcmp(m.graph->sizes[i].name, "batch") == 0;
  cli_loaded_free(&m);
  if (rc || !has || o->ndefs == KILN_MAX_DEFINES) return rc;
  char *name = malloc(6);
  if (!name) return cli_error("out of memory");
  memcpy(name, "batch", 6);
  o->defs[o->ndefs++] = (Define){name, 1}; /* freed by main with the others */
  return EXIT_OK;
}

/* One draw from softmax(logits / temperature). */
static int sample_logits(const float *l, int64_t vocab, double temperature, KilnRng *r) {
  double m = -INFINITY, sum = 0;
  for (int64_t k = 0; k < vocab; k++) m = l[k] > m ? l[k] : m;
  for (int64_t k = 0; k < vocab; k++) sum += exp((l[k] - m) / temperature);
  double u = kiln_rng_uniform(r) * sum;
  for (int64_t k = 0; k < vocab; k++) {
    u -= exp((l[k] - m) / temperature);
    if (u < 0) return (int)k;
  }
  return (int)(vocab - 1);
}

typedef struct Sampler {
  const kiln_model_desc *d;
  void *self;
  int32_t *ids;
  float *logits;
  void **outs; /* the other outputs' scratch buffers */
  int64_t batch, seq, vocab;
  int out; /* the logits output's index */
} Sampler;

static size_t desc_numel(const kiln_tensor_desc *t) {
  size_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= (size_t)t->shape[i];
  return n;
}

/* The input [batch, seq] of i32 and the first output [batch, seq, vocab]. */
static int find_shapes(const Options *o, Sampler *s) {
  const kiln_model_desc *d = s->d;
  const kiln_tensor_desc *in = d->ninfer_inputs == 1 ? &d->inputs[d->infer_inputs[0]] : NULL;
  if (!in || in->dtype != KILN_DTYPE_I32 || in->rank != 2)
    return cli_error("%s: kiln sample needs a model whose outputs read one i32 input "
                     "[batch, seq] of byte ids",
                     o->model);
  s->batch = in->shape[0];
  s->seq = in->shape[1];
  s->out = -1;
  for (int k = 0; k < d->noutputs && s->out < 0; k++) {
    const kiln_tensor_desc *t = &d->outputs[k];
    if (t->dtype == KILN_DTYPE_F32 && t->rank == 3 && t->shape[0] == s->batch &&
        t->shape[1] == s->seq)
      s->out = k;
  }
  if (s->out < 0)
    return cli_error("%s: kiln sample needs an f32 output [batch, seq, vocab] of logits", o->model);
  s->vocab = d->outputs[s->out].shape[2];
  s->ids = calloc((size_t)(s->batch * s->seq), sizeof *s->ids);
  s->logits = malloc(desc_numel(&d->outputs[s->out]) * sizeof *s->logits);
  s->outs = calloc((size_t)d->noutputs + 1, sizeof *s->outs);
  if (!s->ids || !s->logits || !s->outs) return cli_error("out of memory");
  for (int k = 0; k < d->noutputs; k++)
    if (k != s->out && !(s->outs[k] = malloc(desc_numel(&d->outputs[k]) * 4 + 1)))
      return cli_error("out of memory");
  return EXIT_OK;
}

/* The text so far (len bytes) -> the next byte. */
static int next_byte(Sampler *s, const unsigned char *text, size_t len, double temperature,
                     KilnRng *r, int *byte) {
  size_t n = len < (size_t)s->seq ? len : (size_t)s->seq;
  memset(s->ids, 0, (size_t)s->seq * sizeof *s->ids);
  for (size_t i = 0; i < n; i++) s->ids[i] = text[len - n + i];
  void *args[KILN_INVOKE_MAX_ARGS];
  int nargs = 0;
  args[nargs++] = s->ids;
  for (int k = 0; k < s->d->noutputs; k++) args[nargs++] = k == s->out ? s->logits : s->outs[k];
  int st = kiln_invoke(s->d->entry.infer, s->self, args, nargs);
  if (st) {
    const char *m = kiln_rt_message(s->self);
    return m[0] ? cli_error("%s", m) : cli_error("inference: %s", kiln_rt_strerror(st));
  }
  *byte = sample_logits(s->logits + (n - 1) * (size_t)s->vocab, s->vocab, temperature, r);
  return EXIT_OK;
}

static int generate(const Options *o, Sampler *s) {
  size_t plen = strlen(o->prompt), cap = plen + (size_t)o->count + 1;
  unsigned char *text = malloc(cap);
  if (!text) return cli_error("out of memory");
  memcpy(text, o->prompt, plen);
  int rc = EXIT_OK;
  for (size_t i = 0; i < plen && !rc; i++)
    if (text[i] >= s->vocab)
      rc = cli_error("--prompt: byte %d is outside the model's vocabulary of %lld", text[i],
                     (long long)s->vocab);
  KilnRng r;
  kiln_rng_seed(&r, o->seed, 0);
  fwrite(text, 1, plen, stdout);
  size_t len = plen;
  for (int64_t k = 0; !rc && k < o->count; k++) {
    int b = 0;
    rc = next_byte(s, text, len, o->temperature, &r, &b);
    if (rc) break;
    text[len++] = (unsigned char)b;
    putchar(b);
    fflush(stdout);
  }
  putchar('\n');
  free(text);
  return rc;
}

int cmd_sample(Options *o) {
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  if (!o->weights) return cli_usage_error(o->cmd, "missing --weights W.safetensors");
  if (!o->prompt || !o->prompt[0]) return cli_usage_error(o->cmd, "missing --prompt TEXT");
  if (!(o->temperature > 0)) return cli_usage_error(o->cmd, "--temperature must be positive");
  if (!kiln_rt_symbols[0].addr) return EXIT_INTERNAL; /* keeps the runtime linked in whole */
  int rc = default_batch_one(o);
  if (rc) return rc;
  Loaded m;
  o->passes.inference = true;
  rc = cli_load_model(o, &m, STAGE_PLANNED);
  LlvmOptions lo = {.opt_level = o->opt_level, .train = false};
  char err[ERR_LEN];
  LlvmJit *j = rc ? NULL : llvm_jit_compile(m.graph, &lo, err, sizeof err);
  if (!rc && !j) {
    fprintf(stderr, "kiln: internal error: JIT compilation failed: %s\n", err);
    rc = EXIT_INTERNAL;
  }
  Sampler s = {.d = j ? llvm_jit_desc(j) : NULL};
  if (!rc) rc = find_shapes(o, &s);
  int st = 0;
  if (!rc && (st = s.d->entry.create(&s.self, o->seed)) != 0)
    rc = cli_error("cannot create the model: %s", kiln_rt_strerror(st));
  if (!rc && o->threads && (st = s.d->entry.set_threads(s.self, o->threads)) != 0)
    rc = cli_error("--threads: %s", kiln_rt_strerror(st));
  if (!rc && (st = s.d->entry.load(s.self, o->weights)) != 0) {
    const char *msg = kiln_rt_message(s.self);
    rc = msg[0] ? cli_error("%s", msg) : cli_error("%s: %s", o->weights, kiln_rt_strerror(st));
  }
  if (!rc) rc = generate(o, &s);
  if (s.self) s.d->entry.destroy(s.self);
  for (int k = 0; s.outs && k < s.d->noutputs; k++) free(s.outs[k]);
  free(s.outs);
  free(s.ids);
  free(s.logits);
  if (j) llvm_jit_free(j);
  cli_loaded_free(&m);
  return rc;
}
