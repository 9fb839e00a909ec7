/* run.c - kiln init and kiln run: parameters from INIT rules, inference on .npy inputs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "interp.h"
#include "rng.h"
#include "tensor_io.h"

#define ERR_LEN 1024

KilnDType cli_kiln_dtype(DType dt) {
  return dt == DT_F64 ? KILN_F64 : dt == DT_I32 ? KILN_I32 : KILN_F32;
}

DType cli_ir_dtype(KilnDType dt) {
  return dt == KILN_F64 ? DT_F64 : dt == KILN_I32 ? DT_I32 : DT_F32;
}

KilnTensor cli_tensor_view(const Node *n, const char *name, const void *data) {
  KilnTensor t = {.name = (char *)name,
                  .dtype = cli_kiln_dtype(n->type.dtype),
                  .rank = n->type.rank,
                  .data = (void *)data};
  memcpy(t.shape, n->type.dims, sizeof(int64_t) * (size_t)n->type.rank);
  t.nbytes = (size_t)ir_type_numel(&n->type) * ir_dtype_size(n->type.dtype);
  return t;
}

/* ---- kiln init ---------------------------------------------------------- */

int cli_init_param(const Node *p, uint64_t seed, void *data) {
  KilnInit init;
  const AttrVal *args = ir_attr_c(p, "args");
  if (kiln_init_from_name(ir_attr_c(p, "init")->s, &init) != 0)
    return cli_error("param '%s': unknown init '%s'", p->name, ir_attr_c(p, "init")->s);
  int rc = p->type.dtype == DT_F64 ? kiln_init_fill_f64(data, p->type.dims, p->type.rank, init,
                                                        args->f, args->n, seed, p->name)
                                   : kiln_init_fill(data, p->type.dims, p->type.rank, init, args->f,
                                                    args->n, seed, p->name);
  if (rc != 0)
    return cli_error("param '%s': bad arguments for init '%s'", p->name, kiln_init_name(init));
  return EXIT_OK;
}

int cmd_init(Options *o) {
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  if (!o->output) return cli_usage_error(o->cmd, "missing -o W.safetensors");
  Loaded m;
  int rc = cli_load_model(o, &m, STAGE_GRAPH);
  const Graph *g = m.graph;
  KilnTensor *ts = rc ? NULL : calloc((size_t)g->nnodes + 1, sizeof *ts);
  int n = 0;
  for (int i = 0; !rc && i < g->nnodes; i++) {
    const Node *p = g->nodes[i];
    if (p->op != OP_PARAM) continue;
    size_t bytes = (size_t)ir_type_numel(&p->type) * ir_dtype_size(p->type.dtype);
    void *data = malloc(bytes ? bytes : 1);
    if (!data)
      rc = cli_error("out of memory for param '%s'", p->name);
    else
      ts[n++] = cli_tensor_view(p, p->name, data);
    if (!rc) rc = cli_init_param(p, o->seed, data);
  }
  char err[ERR_LEN];
  if (!rc && kiln_safetensors_write(o->output, ts, n, err, sizeof err) != 0)
    rc = cli_error("%s", err);
  if (!rc && o->verbose) fprintf(stderr, "kiln: wrote %d params to %s\n", n, o->output);
  for (int i = 0; i < n; i++) free(ts[i].data);
  free(ts);
  cli_loaded_free(&m);
  return rc;
}

/* ---- Binding weights and inputs ----------------------------------------- */

/* Optimizer state saved by kiln train lives under this prefix; inference
 * ignores it. */
#define OPTIM_PREFIX "optim."

/* Binds a file's tensor to node n. The dtype must be n's exactly (SPEC §4):
 * the interpreter could convert f64 to f32, but compiled models cannot, and
 * both backends accept the same files. */
static int bind_tensor(Interp *it, const char *what, const Node *n, const KilnTensor *t) {
  char err[ERR_LEN], want[IR_TYPE_STR_MAX], got[IR_TYPE_STR_MAX];
  if (cli_ir_dtype(t->dtype) != n->type.dtype) {
    Type given = ir_type(cli_ir_dtype(t->dtype), t->rank, t->shape);
    return cli_error("%s: %s '%s' expects %s, got %s", what, ir_op_name(n->op), n->name,
                     ir_type_str(&n->type, want, sizeof want),
                     ir_type_str(&given, got, sizeof got));
  }
  if (!interp_set(it, n->name, cli_ir_dtype(t->dtype), t->rank, t->shape, t->data, err, sizeof err))
    return cli_error("%s: %s", what, err);
  return EXIT_OK;
}

/* Every param of g from the weights file: none missing, none extra, each of
 * the right dtype and shape. */
int cli_bind_weights(Interp *it, const Graph *g, const char *path) {
  KilnTensorFile f = {0};
  char err[ERR_LEN];
  if (kiln_safetensors_read(path, &f, err, sizeof err) != 0) return cli_error("%s", err);
  int rc = EXIT_OK;
  for (int i = 0; !rc && i < f.n; i++) {
    const KilnTensor *t = &f.tensors[i];
    if (strncmp(t->name, OPTIM_PREFIX, strlen(OPTIM_PREFIX)) == 0) continue;
    const Node *p = ir_find_param(g, t->name);
    if (!p)
      rc = cli_error("%s: unexpected tensor '%s': the model has no param of that name", path,
                     t->name);
    else
      rc = bind_tensor(it, path, p, t);
  }
  for (int i = 0; !rc && i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_PARAM && !kiln_tensor_find(&f, g->nodes[i]->name))
      rc = cli_error("%s: missing param '%s'", path, g->nodes[i]->name);
  kiln_tensor_file_free(&f);
  return rc;
}

static int bind_input(Interp *it, const Graph *g, const InputArg *in) {
  Node *n = ir_find_input(g, in->name);
  if (!n) return cli_error("--input %s: the model has no input '%s'", in->name, in->name);
  KilnTensor t = {0};
  char err[ERR_LEN];
  if (kiln_npy_read(in->path, &t, err, sizeof err) != 0) return cli_error("%s", err);
  int rc = bind_tensor(it, in->path, n, &t);
  kiln_tensor_free(&t);
  return rc;
}

void cli_mark_needed(const Graph *g, bool outputs, bool loss, bool *needed) {
  for (int i = g->nnodes - 1; i >= 0; i--) {
    const Node *n = g->nodes[i];
    bool root = (loss && n == g->loss);
    for (int k = 0; outputs && k < g->noutputs && !root; k++) root = g->outputs[k].node == n;
    if (root) needed[n->id] = true;
    if (!needed[n->id]) continue;
    for (int k = 0; k < n->nin; k++) needed[n->in[k]->id] = true;
  }
}

int cli_bind_zero_inputs(Interp *it, const Graph *g, const bool *needed) {
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_INPUT || needed[n->id]) continue;
    size_t bytes = (size_t)ir_type_numel(&n->type) * ir_dtype_size(n->type.dtype);
    void *zeros = calloc(bytes ? bytes : 1, 1);
    if (!zeros) return cli_error("out of memory for input '%s'", n->name);
    char err[ERR_LEN];
    bool ok =
        interp_set(it, n->name, n->type.dtype, n->type.rank, n->type.dims, zeros, err, sizeof err);
    free(zeros);
    if (!ok) return cli_error("%s", err);
  }
  return EXIT_OK;
}

static int bind_inputs(Interp *it, const Graph *g, const Options *o, bool with_loss) {
  bool *needed = calloc((size_t)g->next_id + 1, sizeof *needed);
  if (!needed) return cli_error("out of memory");
  cli_mark_needed(g, true, with_loss, needed);
  int rc = cli_bind_zero_inputs(it, g, needed);
  for (int i = 0; !rc && i < o->ninputs; i++) {
    for (int j = 0; !rc && j < i; j++)
      if (strcmp(o->inputs[i].name, o->inputs[j].name) == 0)
        rc = cli_usage_error(o->cmd, "--input %s is given twice", o->inputs[i].name);
    if (!rc) rc = bind_input(it, g, &o->inputs[i]);
  }
  for (int i = 0; !rc && i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->op != OP_INPUT || !needed[n->id]) continue;
    bool given = false;
    for (int k = 0; k < o->ninputs; k++) given = given || strcmp(o->inputs[k].name, n->name) == 0;
    char ts[IR_TYPE_STR_MAX];
    if (!given)
      rc = cli_error("missing --input %s=FILE.npy (%s)", n->name,
                     ir_type_str(&n->type, ts, sizeof ts));
  }
  free(needed);
  return rc;
}

/* ---- Writing outputs ---------------------------------------------------- */

/* The outputs go to a fresh folder inside DIR first and are renamed into DIR
 * only when all were written, so a failure leaves no partial output. */
typedef struct OutDir {
  const char *dir;
  char tmp[4096];
} OutDir;

static int outdir_open(OutDir *d, const char *dir) {
  d->dir = dir;
  if (mkdir(dir, 0777) != 0 && errno != EEXIST)
    return cli_error("cannot create output folder '%s': %s", dir, strerror(errno));
  if (snprintf(d->tmp, sizeof d->tmp, "%s/.kiln-out-XXXXXX", dir) >= (int)sizeof d->tmp)
    return cli_error("output folder path too long: '%s'", dir);
  if (!mkdtemp(d->tmp)) return cli_error("cannot write into '%s': %s", dir, strerror(errno));
  return EXIT_OK;
}

static int outdir_path(const OutDir *d, bool final, const char *file, char *buf, size_t len) {
  if (snprintf(buf, len, "%s/%s", final ? d->dir : d->tmp, file) >= (int)len)
    return cli_error("output path too long for '%s'", file);
  return EXIT_OK;
}

/* Renames every file of the temporary folder into DIR (commit) or removes
 * them (abort), then the folder. */
static int outdir_close(OutDir *d, const char *const *files, int n, bool commit) {
  char from[4200], to[4200];
  int rc = EXIT_OK;
  for (int i = 0; i < n; i++) {
    if (outdir_path(d, false, files[i], from, sizeof from)) continue;
    if (commit && !rc && !outdir_path(d, true, files[i], to, sizeof to) && rename(from, to) != 0)
      rc = cli_error("cannot move '%s' into place: %s", to, strerror(errno));
    unlink(from);
  }
  rmdir(d->tmp);
  return rc;
}

static int write_npy(const OutDir *d, const char *file, const Node *n, const void *data) {
  char path[4200], err[ERR_LEN];
  int rc = outdir_path(d, false, file, path, sizeof path);
  KilnTensor t = cli_tensor_view(n, NULL, data);
  if (!rc && kiln_npy_write(path, &t, err, sizeof err) != 0) rc = cli_error("%s", err);
  return rc;
}

/* grads.safetensors: the loss under its name, then d loss / d param under
 * each param's name. */
static int write_grads(const Interp *it, const Graph *g, const OutDir *d, const char *file) {
  char path[4200], err[ERR_LEN];
  int rc = outdir_path(d, false, file, path, sizeof path);
  KilnTensor *ts = rc ? NULL : calloc((size_t)g->ngrads + 1, sizeof *ts);
  if (!rc && !ts) rc = cli_error("out of memory");
  if (rc) return rc;
  const char *loss = g->loss->name ? g->loss->name : "loss";
  ts[0] = cli_tensor_view(g->loss, loss, interp_value(it, g->loss));
  for (int k = 0; k < g->ngrads; k++)
    ts[k + 1] = cli_tensor_view(g->grads[k].grad, g->grads[k].param->name,
                                interp_value(it, g->grads[k].grad));
  if (kiln_safetensors_write(path, ts, g->ngrads + 1, err, sizeof err) != 0)
    rc = cli_error("%s", err);
  free(ts);
  return rc;
}

static int write_outputs(const Interp *it, const Graph *g, const char *dir, bool grads) {
  OutDir d;
  int rc = outdir_open(&d, dir);
  if (rc) return rc;
  const char **files = calloc((size_t)g->noutputs + 2, sizeof *files);
  int n = 0;
  if (!files) rc = cli_error("out of memory");
  for (int i = 0; !rc && i < g->noutputs; i++) {
    char name[512];
    snprintf(name, sizeof name, "%s.npy", g->outputs[i].name);
    files[n] = strdup(name);
    if (!files[n])
      rc = cli_error("out of memory");
    else
      rc = write_npy(&d, files[n++], g->outputs[i].node, interp_value(it, g->outputs[i].node));
  }
  if (!rc && grads && (files[n] = strdup("grads.safetensors")) == NULL)
    rc = cli_error("out of memory");
  if (!rc && grads) rc = write_grads(it, g, &d, files[n++]);
  int closed = outdir_close(&d, files, n, rc == EXIT_OK);
  for (int i = 0; i < n; i++) free((char *)files[i]);
  free(files);
  return rc ? rc : closed;
}

int cli_write_npy_files(const char *dir, const KilnTensor *ts, int n, const KilnTensor *grads,
                        int ngrads) {
  OutDir d;
  int rc = outdir_open(&d, dir);
  if (rc) return rc;
  const char **files = calloc((size_t)n + 2, sizeof *files);
  int k = 0;
  if (!files) rc = cli_error("out of memory");
  for (; !rc && k < n; k++) {
    char name[512], path[4200], err[ERR_LEN];
    snprintf(name, sizeof name, "%s.npy", ts[k].name);
    if (!(files[k] = strdup(name))) {
      rc = cli_error("out of memory");
      break;
    }
    rc = outdir_path(&d, false, name, path, sizeof path);
    KilnTensor t = ts[k];
    t.name = NULL;
    if (!rc && kiln_npy_write(path, &t, err, sizeof err) != 0) rc = cli_error("%s", err);
  }
  if (!rc && grads) { /* grads.safetensors: as write_grads */
    char path[4200], err[ERR_LEN];
    if (!(files[k] = strdup("grads.safetensors"))) rc = cli_error("out of memory");
    if (!rc) rc = outdir_path(&d, false, files[k++], path, sizeof path);
    if (!rc && kiln_safetensors_write(path, grads, ngrads, err, sizeof err) != 0)
      rc = cli_error("%s", err);
  }
  int closed = outdir_close(&d, files, k, rc == EXIT_OK);
  for (int i = 0; i < k; i++) free((char *)files[i]);
  free(files);
  return rc ? rc : closed;
}

/* ---- kiln run ----------------------------------------------------------- */

static int run_checks(const Options *o) {
  if (!o->model) return cli_usage_error(o->cmd, "missing MODEL file");
  if (!o->out_dir) return cli_usage_error(o->cmd, "missing --out DIR");
  return EXIT_OK;
}

/* --grads needs the train statement's loss and the gradients autodiff records. */
int cli_grads_checks(const Options *o, const Graph *g) {
  if (!g->loss)
    return cli_usage_error(o->cmd, "--grads needs a model with a train statement; %s has none",
                           o->model);
  bool has_params = false;
  for (int i = 0; i < g->nnodes; i++) has_params |= g->nodes[i]->op == OP_PARAM;
  if (has_params && g->ngrads == 0) {
    fprintf(stderr, "kiln: internal error: no gradients: this build lacks the autodiff pass\n");
    return EXIT_INTERNAL;
  }
  return EXIT_OK;
}

int cmd_run(Options *o) {
  int rc = run_checks(o);
  if (rc) return rc;
  /* The JIT (jit_run.c: m_infer, and m_grad for --grads), or the interpreter. */
  if (o->backend == BACKEND_JIT) return cli_run_jit(o);
  Loaded m;
  o->passes.inference = !o->grads;
  rc = cli_load_model(o, &m, o->grads ? STAGE_GRAD : STAGE_GRAPH);
  if (!rc && o->grads) rc = cli_grads_checks(o, m.graph);
  Interp *it = rc ? NULL : interp_new(m.graph);
  if (!rc && !it) rc = cli_error("out of memory for the interpreter");
  bool has_params = false;
  for (int i = 0; !rc && i < m.graph->nnodes; i++) has_params |= m.graph->nodes[i]->op == OP_PARAM;
  if (!rc && has_params && !o->weights)
    rc = cli_usage_error(o->cmd, "missing --weights W.safetensors (kiln init writes one)");
  if (!rc && o->weights) rc = cli_bind_weights(it, m.graph, o->weights);
  if (!rc) rc = bind_inputs(it, m.graph, o, o->grads);
  char err[ERR_LEN];
  double t0 = cli_now_ms();
  if (!rc && !interp_run(it, err, sizeof err)) rc = cli_error("%s", err);
  if (!rc && o->verbose)
    fprintf(stderr, "kiln: ran %s in %.3f ms\n", m.graph->name, cli_now_ms() - t0);
  if (!rc) rc = write_outputs(it, m.graph, o->out_dir, o->grads);
  if (it) interp_free(it);
  cli_loaded_free(&m);
  return rc;
}
