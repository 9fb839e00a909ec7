/* kiln_bench.c - time one entry point of a model compiled by `kiln compile`, in a fresh
 * process, and print one JSON line.
 *
 *   cc -O2 -std=c11 -Wall -Wextra -I runtime bench/kiln_bench.c -o kiln_bench -ldl
 *   kiln compile models/mlp.kl -o mlp.so
 *   ./kiln_bench mlp.so train 1 --reps 30 --range y=10
 *
 * usage: kiln_bench SO MODE THREADS [--name NAME] [--reps N] [--warmup N] [--max-seconds S]
 *                   [--steps N] [--range INPUT=N]...
 *   MODE train   time m_train_step (forward, loss, backward, optimizer update)
 *        infer   time m_infer (every output)
 *        rss     run --steps (default 50) train steps, report getrusage's peak RSS
 * NAME is the model's name (m in m_describe); default: the .so's file name without .so.
 * Float inputs are uniform in [-1, 1); integer inputs (ids, labels) uniform in [0, N) with N
 * from --range INPUT=N (default 2, valid for any model). The run stops after --reps timed
 * calls, or earlier once --max-seconds have passed and at least 5 calls were timed.
 * Output: {"impl":"kiln","model":...,"mode":...,"threads":...,"reps":...,"median_ms":...,
 * "min_ms":...,"max_ms":...,"mem_bytes":...,"arena_bytes":...,"maxrss_kib":...,"loss":...,
 * "samples_ms":[every timed call, sorted]}. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kiln.h"

#define MAX_ARGS   16
#define MAX_RANGES 16

typedef int (*fn1)(void *);
typedef int (*fn2)(void *, void *);
typedef int (*fn3)(void *, void *, void *);
typedef int (*fn4)(void *, void *, void *, void *);
typedef int (*fn5)(void *, void *, void *, void *, void *);
typedef int (*fn6)(void *, void *, void *, void *, void *, void *);
typedef int (*fn7)(void *, void *, void *, void *, void *, void *, void *);
typedef int (*fn8)(void *, void *, void *, void *, void *, void *, void *, void *);
typedef int (*fn9)(void *, void *, void *, void *, void *, void *, void *, void *, void *);
typedef int (*fn10)(void *, void *, void *, void *, void *, void *, void *, void *, void *, void *);
typedef int (*fn11)(void *, void *, void *, void *, void *, void *, void *, void *, void *, void *,
                    void *);
typedef int (*fn12)(void *, void *, void *, void *, void *, void *, void *, void *, void *, void *,
                    void *, void *);

/* Every argument of infer and train_step is a pointer, so a cast to the exact arity is the
 * entry point's real type (up to the pointee types). */
static int call(void (*f)(void), int n, void **a) {
  switch (n) {
  case 1:
    return ((fn1)f)(a[0]);
  case 2:
    return ((fn2)f)(a[0], a[1]);
  case 3:
    return ((fn3)f)(a[0], a[1], a[2]);
  case 4:
    return ((fn4)f)(a[0], a[1], a[2], a[3]);
  case 5:
    return ((fn5)f)(a[0], a[1], a[2], a[3], a[4]);
  case 6:
    return ((fn6)f)(a[0], a[1], a[2], a[3], a[4], a[5]);
  case 7:
    return ((fn7)f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
  case 8:
    return ((fn8)f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
  case 9:
    return ((fn9)f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
  case 10:
    return ((fn10)f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
  case 11:
    return ((fn11)f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]);
  case 12:
    return ((fn12)f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
  default:
    return -1;
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void die(const char *msg, const char *arg) {
  fprintf(stderr, "kiln_bench: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
  exit(1);
}

/* xorshift64*: the inputs need not be good random numbers, only not constant. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1du;
}

static int64_t numel(const kiln_tensor_desc *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->shape[i];
  return n;
}

static size_t dtype_size(kiln_dtype d) {
  switch (d) {
  case KILN_DTYPE_F32:
    return 4;
  case KILN_DTYPE_I32:
    return 4;
  case KILN_DTYPE_F64:
    return 8;
  }
  return 8;
}

static void *alloc_tensor(const kiln_tensor_desc *t) {
  size_t bytes = (size_t)numel(t) * dtype_size(t->dtype);
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) die("out of memory", t->name);
  memset(p, 0, bytes);
  return p;
}

static void fill_input(const kiln_tensor_desc *t, void *p, int64_t range) {
  int64_t n = numel(t);
  for (int64_t i = 0; i < n; i++) {
    double u = (double)(rng() >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
    switch (t->dtype) {
    case KILN_DTYPE_F32:
      ((float *)p)[i] = (float)(2 * u - 1);
      break;
    case KILN_DTYPE_F64:
      ((double *)p)[i] = 2 * u - 1;
      break;
    case KILN_DTYPE_I32:
      ((int32_t *)p)[i] = (int32_t)(rng() % (uint64_t)range);
      break;
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: kiln_bench SO train|infer|rss THREADS [--name NAME] [--reps N] "
                    "[--warmup N] [--max-seconds S] [--steps N] [--range INPUT=N]...\n");
    return 2;
  }
  const char *so = argv[1], *mode = argv[2];
  int threads = atoi(argv[3]);
  int reps = 30, warmup = -1, steps = 50;
  double max_seconds = 3.0;
  char name[256] = "";
  const char *range_name[MAX_RANGES];
  int64_t range_val[MAX_RANGES];
  int nranges = 0;
  for (int i = 4; i < argc; i += 2) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) die("missing value after", a);
    if (!strcmp(a, "--name"))
      snprintf(name, sizeof name, "%s", v);
    else if (!strcmp(a, "--reps"))
      reps = atoi(v);
    else if (!strcmp(a, "--warmup"))
      warmup = atoi(v);
    else if (!strcmp(a, "--steps"))
      steps = atoi(v);
    else if (!strcmp(a, "--max-seconds"))
      max_seconds = atof(v);
    else if (!strcmp(a, "--range")) {
      const char *eq = strchr(v, '=');
      if (!eq || nranges == MAX_RANGES) die("bad --range (want INPUT=N)", v);
      range_name[nranges] = v;
      range_val[nranges] = strtoll(eq + 1, NULL, 10);
      if (range_val[nranges] < 1) die("bad --range (want INPUT=N, N >= 1)", v);
      nranges++;
    } else
      die("unknown option", a);
  }
  if (threads < 1 || reps < 1 || steps < 1) die("THREADS, --reps and --steps must be >= 1", NULL);
  if (warmup < 0) warmup = reps / 10 > 3 ? reps / 10 : 3;
  if (strcmp(mode, "train") && strcmp(mode, "infer") && strcmp(mode, "rss"))
    die("MODE must be train, infer or rss", mode);
  if (!name[0]) {
    const char *base = strrchr(so, '/');
    snprintf(name, sizeof name, "%s", base ? base + 1 : so);
    char *dot = strstr(name, ".so");
    if (dot) *dot = 0;
  }

  /* dlopen needs a path with a slash to avoid the library search. */
  char path[4096];
  snprintf(path, sizeof path, "%s%s", strchr(so, '/') ? "" : "./", so);
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) die("dlopen failed", dlerror());
  char sym[300];
  snprintf(sym, sizeof sym, "%s_describe", name);
  const kiln_model_desc *(*describe)(void);
  *(void **)&describe = dlsym(lib, sym);
  if (!describe) die("no such symbol (pass --name MODEL)", sym);
  const kiln_model_desc *d = describe();
  if (d->abi_version != KILN_ABI_VERSION) die("ABI version mismatch", NULL);
  int train = strcmp(mode, "infer") != 0;
  if (train && !d->has_train) die("model compiled without a train step", name);

  void *self = NULL;
  int rc = d->entry.create(&self, 42);
  if (rc) die("create failed", d->entry.strerror(rc));
  rc = d->entry.set_threads(self, threads);
  if (rc) die("set_threads failed", d->entry.strerror(rc));

  /* Arguments: self, the entry's inputs in order, then the outputs or float *loss. */
  void *args[MAX_ARGS];
  int nargs = 0;
  args[nargs++] = self;
  int nin = train ? d->ntrain_inputs : d->ninfer_inputs;
  const int32_t *idx = train ? d->train_inputs : d->infer_inputs;
  for (int i = 0; i < nin; i++) {
    const kiln_tensor_desc *t = &d->inputs[idx[i]];
    int64_t range = 2;
    size_t len = strlen(t->name);
    for (int r = 0; r < nranges; r++)
      if (!strncmp(range_name[r], t->name, len) && range_name[r][len] == '=') range = range_val[r];
    void *p = alloc_tensor(t);
    fill_input(t, p, range);
    if (nargs == MAX_ARGS) die("too many arguments", NULL);
    args[nargs++] = p;
  }
  float loss = 0;
  if (train)
    args[nargs++] = &loss;
  else
    for (int i = 0; i < d->noutputs; i++) {
      if (nargs == MAX_ARGS) die("too many arguments", NULL);
      args[nargs++] = alloc_tensor(&d->outputs[i]);
    }
  void (*entry)(void) = train ? d->entry.train_step : d->entry.infer;

  double *t = calloc((size_t)reps, sizeof *t);
  if (!t) die("out of memory", NULL);
  int done = 0;
  if (!strcmp(mode, "rss")) {
    double t0 = now();
    for (int s = 0; s < steps; s++)
      if ((rc = call(entry, nargs, args)) != 0) die("train_step failed", d->entry.strerror(rc));
    t[done++] = (now() - t0) / steps;
  } else {
    double start = now();
    for (int w = 0; w < warmup && (w < 3 || now() - start < max_seconds / 4); w++)
      if ((rc = call(entry, nargs, args)) != 0) die("call failed", d->entry.strerror(rc));
    start = now();
    while (done < reps && (done < 5 || now() - start < max_seconds)) {
      double t0 = now();
      rc = call(entry, nargs, args);
      t[done++] = now() - t0;
      if (rc) die("call failed", d->entry.strerror(rc));
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  qsort(t, (size_t)done, sizeof *t, cmp_double);
  double median = done % 2 ? t[done / 2] : (t[done / 2 - 1] + t[done / 2]) / 2;
  printf("{\"impl\":\"kiln\",\"model\":\"%s\",\"mode\":\"%s\",\"threads\":%d,\"reps\":%d,"
         "\"median_ms\":%.6f,\"min_ms\":%.6f,\"max_ms\":%.6f,\"mem_bytes\":%" PRIu64
         ",\"arena_bytes\":%" PRIu64 ",\"maxrss_kib\":%ld,\"loss\":%.6g,\"samples_ms\":[",
         name, mode, threads, !strcmp(mode, "rss") ? steps : done, median * 1e3, t[0] * 1e3,
         t[done - 1] * 1e3, d->mem_bytes, d->arena_bytes, ru.ru_maxrss, (double)loss);
  for (int i = 0; i < done; i++) printf("%s%.6f", i ? "," : "", t[i] * 1e3);
  printf("]}\n");
  d->entry.destroy(self);
  return 0;
}
