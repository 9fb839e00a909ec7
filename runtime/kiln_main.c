/* kiln_main.c - the generic main of `kiln build` executables: .npy inputs in, .npy outputs out. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln_rt.h"
#include "tensor_io_internal.h"

/*
 * libc-only, like the rest of libkilnrt. What it knows of the model comes
 * from the small glue object `kiln build` compiles next to it:
 *   kiln_main_describe()            the model's m_describe
 *   kiln_main_infer(self, args)     m_infer(self, args[0], ..., args[n-1])
 *   kiln_main_infer_nargs           n (checked against the descriptor)
 *   kiln_embedded_weights[_size]    a safetensors image, size 0 when none
 */
extern const kiln_model_desc *kiln_main_describe(void);
extern int kiln_main_infer(void *self, void *const *args);
extern const int kiln_main_infer_nargs;
extern const unsigned char kiln_embedded_weights[];
extern const uint64_t kiln_embedded_weights_size;

enum { EXIT_OK = 0, EXIT_USER = 1, EXIT_USAGE = 2, EXIT_INTERNAL = 70 };

#define MAX_INPUTS 64
#define ERR_LEN    512

typedef struct MainArgs {
  const char *prog;
  const char *in_name[MAX_INPUTS], *in_path[MAX_INPUTS];
  size_t in_len[MAX_INPUTS]; /* of the name */
  int ninputs;
  const char *out_dir, *weights;
  int threads; /* 0: all cores */
  uint64_t seed;
  int help;
} MainArgs;

__attribute__((format(printf, 3, 4))) static int fail(const char *prog, int code, const char *fmt,
                                                      ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: error: ", prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (code == EXIT_USAGE) fprintf(stderr, "usage: %s --input NAME=FILE.npy ... --out DIR\n", prog);
  return code;
}

static void shape_text(char *buf, size_t n, const kiln_tensor_desc *t) {
  static const char *const dt[] = {"f32", "i32", "f64"};
  char s[200];
  tio_shape_str(s, sizeof s, t->shape, t->rank);
  snprintf(buf, n, "%s%s", (unsigned)t->dtype < 3 ? dt[t->dtype] : "?", s);
}

static void print_help(const char *prog, const kiln_model_desc *d) {
  char s[256];
  printf("usage: %s --input NAME=FILE.npy ... --out DIR [--weights W.safetensors]\n"
         "          [--threads N] [--seed S]\n\n"
         "Runs inference with the model '%s' compiled into this program and writes each\n"
         "output as DIR/NAME.npy. Inputs are NumPy .npy files (version 1.0, little-endian,\n"
         "C order) of exactly the shapes below.\n\n"
         "  --input NAME=FILE.npy  one per input below\n"
         "  --out DIR              where the outputs go (created if absent)\n"
         "  --weights W            params from a safetensors file (default: the weights\n"
         "                         embedded at build time, if any, else as `kiln init --seed S`)\n"
         "  --threads N            threads (default: all cores)\n"
         "  --seed S               seed of the initial params (default 0)\n"
         "  --help                 this text\n\n"
         "Exit status: 0 success, 1 bad input (weights, inputs, shapes), 2 usage error.\n\n",
         prog, d->name);
  printf("Inputs:\n");
  for (int i = 0; i < d->ninfer_inputs; i++) {
    shape_text(s, sizeof s, &d->inputs[d->infer_inputs[i]]);
    printf("  %-20s %s\n", d->inputs[d->infer_inputs[i]].name, s);
  }
  printf("Outputs:\n");
  for (int i = 0; i < d->noutputs; i++) {
    shape_text(s, sizeof s, &d->outputs[i]);
    printf("  %-20s %s\n", d->outputs[i].name, s);
  }
  printf("Weights: %s\n", kiln_embedded_weights_size ? "embedded" : "none embedded");
}

/* ---- Command line ------------------------------------------------------- */

static int parse_uint(const char *s, uint64_t max, uint64_t *v) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 10);
  if (!*s || *end || errno || s[0] == '-' || x > max) return -1;
  *v = x;
  return 0;
}

/* One flag and its value (given as "--flag=v" or "--flag v"). */
static int parse_flag(MainArgs *a, const char *flag, const char *v) {
  uint64_t n;
  if (strcmp(flag, "--input") == 0) {
    const char *eq = strchr(v, '=');
    if (!eq || eq == v || !eq[1])
      return fail(a->prog, EXIT_USAGE, "--input expects NAME=FILE.npy, got '%s'", v);
    if (a->ninputs == MAX_INPUTS) return fail(a->prog, EXIT_USAGE, "too many --input flags");
    a->in_name[a->ninputs] = v, a->in_len[a->ninputs] = (size_t)(eq - v);
    a->in_path[a->ninputs++] = eq + 1;
  } else if (strcmp(flag, "--out") == 0) {
    a->out_dir = v;
  } else if (strcmp(flag, "--weights") == 0) {
    a->weights = v;
  } else if (strcmp(flag, "--threads") == 0) {
    if (parse_uint(v, 4096, &n) != 0 || n < 1)
      return fail(a->prog, EXIT_USAGE, "--threads expects an integer in 1..4096, got '%s'", v);
    a->threads = (int)n;
  } else if (strcmp(flag, "--seed") == 0) {
    if (parse_uint(v, UINT64_MAX, &a->seed) != 0)
      return fail(a->prog, EXIT_USAGE, "--seed expects a non-negative integer, got '%s'", v);
  } else {
    return fail(a->prog, EXIT_USAGE, "unknown flag '%s'", flag);
  }
  return EXIT_OK;
}

static int parse_args(MainArgs *a, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      a->help = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0)
      return fail(a->prog, EXIT_USAGE, "unexpected argument '%s'", arg);
    char flag[32];
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    if (n >= sizeof flag) return fail(a->prog, EXIT_USAGE, "unknown flag '%s'", arg);
    memcpy(flag, arg, n);
    flag[n] = '\0';
    if (!eq && i + 1 >= argc) return fail(a->prog, EXIT_USAGE, "flag '%s' needs a value", arg);
    int rc = parse_flag(a, flag, eq ? eq + 1 : argv[++i]);
    if (rc) return rc;
  }
  if (!a->help && !a->out_dir) return fail(a->prog, EXIT_USAGE, "missing --out DIR");
  return EXIT_OK;
}

/* ---- Inputs and outputs ------------------------------------------------- */

/* The --input of that name, or -1. */
static int find_input(const MainArgs *a, const char *name) {
  for (int i = 0; i < a->ninputs; i++)
    if (strlen(name) == a->in_len[i] && strncmp(a->in_name[i], name, a->in_len[i]) == 0) return i;
  return -1;
}

/* Every --input names a model input, at most once. */
static int check_input_names(const MainArgs *a, const kiln_model_desc *d) {
  for (int i = 0; i < a->ninputs; i++) {
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)a->in_len[i], a->in_name[i]);
    int known = 0;
    for (int k = 0; k < d->ninputs && !known; k++) known = strcmp(d->inputs[k].name, name) == 0;
    if (!known)
      return fail(a->prog, EXIT_USER, "--input %s: the model has no input '%s'", name, name);
    if (find_input(a, name) != i)
      return fail(a->prog, EXIT_USAGE, "--input %s is given twice", name);
  }
  return EXIT_OK;
}

/* Reads one infer input and checks its dtype and shape against the model. */
static int read_input(const MainArgs *a, const kiln_tensor_desc *t, KilnTensor *x) {
  char err[ERR_LEN], want[256], have[256];
  int k = find_input(a, t->name);
  shape_text(want, sizeof want, t);
  if (k < 0) return fail(a->prog, EXIT_USER, "missing --input %s=FILE.npy (%s)", t->name, want);
  if (kiln_npy_read(a->in_path[k], x, err, sizeof err) != 0)
    return fail(a->prog, EXIT_USER, "%s", err);
  kiln_tensor_desc got = {
      .name = t->name, .dtype = (kiln_dtype)x->dtype, .rank = x->rank, .shape = x->shape};
  shape_text(have, sizeof have, &got);
  if ((int)x->dtype != (int)t->dtype || x->rank != t->rank ||
      memcmp(x->shape, t->shape, sizeof *t->shape * (size_t)t->rank) != 0) {
    fprintf(stderr, "%s: error: %s: input '%s' is %s, the model expects %s\n", a->prog,
            a->in_path[k], t->name, have, want);
    return EXIT_USER;
  }
  return EXIT_OK;
}

static int alloc_output(const MainArgs *a, const kiln_tensor_desc *t, KilnTensor *y) {
  memset(y, 0, sizeof *y);
  y->dtype = (KilnDType)t->dtype;
  y->rank = t->rank;
  memcpy(y->shape, t->shape, sizeof *t->shape * (size_t)t->rank);
  uint64_t bytes;
  if (tio_shape_bytes(y->shape, y->rank, y->dtype, &bytes) != 0 ||
      !(y->data = calloc(1, bytes ? (size_t)bytes : 1)))
    return fail(a->prog, EXIT_INTERNAL, "out of memory for output '%s'", t->name);
  y->nbytes = (size_t)bytes;
  return EXIT_OK;
}

/* Writes every output into a fresh folder inside DIR, then renames them into DIR: a failure
 * leaves no partial output. */
static int write_outputs(const MainArgs *a, const kiln_model_desc *d, const KilnTensor *ys) {
  char tmp[4096], from[4400], to[4400], err[ERR_LEN];
  if (mkdir(a->out_dir, 0777) != 0 && errno != EEXIST)
    return fail(a->prog, EXIT_USER, "cannot create '%s': %s", a->out_dir, strerror(errno));
  if (snprintf(tmp, sizeof tmp, "%s/.kiln-out-XXXXXX", a->out_dir) >= (int)sizeof tmp ||
      !mkdtemp(tmp))
    return fail(a->prog, EXIT_USER, "cannot write into '%s'", a->out_dir);
  int rc = EXIT_OK, n = 0;
  for (; n < d->noutputs && !rc; n++) {
    snprintf(from, sizeof from, "%s/%s.npy", tmp, d->outputs[n].name);
    if (kiln_npy_write(from, &ys[n], err, sizeof err) != 0)
      rc = fail(a->prog, EXIT_USER, "%s", err);
  }
  for (int i = 0; i < n; i++) {
    snprintf(from, sizeof from, "%s/%s.npy", tmp, d->outputs[i].name);
    snprintf(to, sizeof to, "%s/%s.npy", a->out_dir, d->outputs[i].name);
    if (!rc && rename(from, to) != 0)
      rc = fail(a->prog, EXIT_USER, "cannot write '%s': %s", to, strerror(errno));
    unlink(from);
  }
  rmdir(tmp);
  return rc;
}

/* ---- Running ------------------------------------------------------------ */

/* Params: --weights, else the embedded image, else the seeded initial values. */
static int load_weights(const MainArgs *a, kiln_instance *self) {
  int st = KILN_OK;
  if (a->weights)
    st = self->desc->entry.load(self, a->weights);
  else if (kiln_embedded_weights_size)
    st = kiln_rt_load_buffer(self, kiln_embedded_weights, (size_t)kiln_embedded_weights_size,
                             "embedded weights");
  if (st == KILN_OK) return EXIT_OK;
  const char *m = kiln_rt_message(self);
  return fail(a->prog, st == KILN_ERR_NOMEM ? EXIT_INTERNAL : EXIT_USER, "%s",
              m[0] ? m : kiln_rt_strerror(st));
}

static int infer(const MainArgs *a, kiln_instance *self, KilnTensor *xs, KilnTensor *ys) {
  const kiln_model_desc *d = self->desc;
  void *args[2 * MAX_INPUTS + 256];
  int n = 0;
  if (d->ninfer_inputs + d->noutputs != kiln_main_infer_nargs ||
      kiln_main_infer_nargs > (int)(sizeof args / sizeof *args))
    return fail(a->prog, EXIT_INTERNAL, "the glue's argument count disagrees with the descriptor");
  for (int i = 0; i < d->ninfer_inputs; i++) args[n++] = xs[i].data;
  for (int i = 0; i < d->noutputs; i++) args[n++] = ys[i].data;
  int st = kiln_main_infer(self, args);
  if (st == KILN_OK) return EXIT_OK;
  const char *m = kiln_rt_message(self);
  return fail(a->prog, st == KILN_ERR_RANGE ? EXIT_USER : EXIT_INTERNAL, "inference failed: %s%s%s",
              kiln_rt_strerror(st), m[0] ? ": " : "", m);
}

static int run(const MainArgs *a, kiln_instance *self) {
  const kiln_model_desc *d = self->desc;
  KilnTensor *xs = calloc((size_t)d->ninfer_inputs + 1, sizeof *xs);
  KilnTensor *ys = calloc((size_t)d->noutputs + 1, sizeof *ys);
  int rc = xs && ys ? EXIT_OK : fail(a->prog, EXIT_INTERNAL, "out of memory");
  if (!rc) rc = check_input_names(a, d);
  if (!rc) rc = load_weights(a, self);
  if (!rc && a->threads && d->entry.set_threads(self, a->threads) != KILN_OK)
    rc = fail(a->prog, EXIT_USER, "%s", kiln_rt_message(self));
  for (int i = 0; !rc && i < d->ninfer_inputs; i++)
    rc = read_input(a, &d->inputs[d->infer_inputs[i]], &xs[i]);
  for (int i = 0; !rc && i < d->noutputs; i++) rc = alloc_output(a, &d->outputs[i], &ys[i]);
  if (!rc) rc = infer(a, self, xs, ys);
  if (!rc) rc = write_outputs(a, d, ys);
  for (int i = 0; xs && i < d->ninfer_inputs; i++) kiln_tensor_free(&xs[i]);
  for (int i = 0; ys && i < d->noutputs; i++) kiln_tensor_free(&ys[i]);
  free(xs);
  free(ys);
  return rc;
}

int main(int argc, char **argv) {
  MainArgs a = {.prog = argc > 0 && argv[0] ? argv[0] : "model"};
  const kiln_model_desc *d = kiln_main_describe();
  int rc = parse_args(&a, argc, argv);
  if (rc) return rc;
  if (a.help) return print_help(a.prog, d), EXIT_OK;
  void *self = NULL;
  int st = d->entry.create(&self, a.seed);
  if (st != KILN_OK)
    return fail(a.prog, st == KILN_ERR_NOMEM ? EXIT_USER : EXIT_INTERNAL,
                "cannot create the model: %s", kiln_rt_strerror(st));
  rc = run(&a, self);
  d->entry.destroy(self);
  return rc;
}
