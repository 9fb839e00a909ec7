/* test_rt.c - libkilnrt: the thread pool, memory, instances over a handwritten descriptor, load and
 * save, and the strict safetensors header parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kiln_rt.h"
#include "rng.h"
#include "rt_json.h"
#include "tensor_io.h"

/* ---- Thread pool -------------------------------------------------------- */

#define MAX_CHUNKS 64

/* What one parallel_for did: a hit count per index and the chunks it ran. */
typedef struct Record {
  _Atomic int *hits;
  _Atomic int nchunks;
  int64_t begin[MAX_CHUNKS], end[MAX_CHUNKS];
} Record;

static void record_task(void *ctx, int64_t begin, int64_t end) {
  Record *r = ctx;
  for (int64_t i = begin; i < end; i++) atomic_fetch_add(&r->hits[i], 1);
  int k = atomic_fetch_add(&r->nchunks, 1);
  if (k < MAX_CHUNKS) r->begin[k] = begin, r->end[k] = end;
}

static int chunk_cmp(const void *a, const void *b) {
  const int64_t *x = a, *y = b;
  return (x[0] > y[0]) - (x[0] < y[0]);
}

/* Runs one parallel_for and checks: every index once, at most nthreads
 * contiguous chunks tiling [0, n), each of at least min_chunk when split.
 * Returns the sorted chunk list in out (pairs) for the determinism check. */
static int run_and_check(kiln_pool *p, int nthreads, int64_t n, int64_t min_chunk, int64_t *out) {
  Record r = {0};
  r.hits = calloc((size_t)n + 1, sizeof *r.hits);
  assert_non_null(r.hits);
  kiln_parallel_for(p, record_task, &r, n, min_chunk);
  for (int64_t i = 0; i < n; i++) assert_int_equal(atomic_load(&r.hits[i]), 1);
  int k = atomic_load(&r.nchunks);
  if (n == 0) assert_int_equal(k, 0);
  assert_true(k <= nthreads);
  int64_t pairs[MAX_CHUNKS][2];
  for (int i = 0; i < k; i++) pairs[i][0] = r.begin[i], pairs[i][1] = r.end[i];
  qsort(pairs, (size_t)k, sizeof pairs[0], chunk_cmp);
  int64_t at = 0;
  for (int i = 0; i < k; i++) {
    assert_int_equal(pairs[i][0], at);
    if (k > 1) assert_true(pairs[i][1] - pairs[i][0] >= min_chunk);
    at = pairs[i][1];
    out[2 * i] = pairs[i][0], out[2 * i + 1] = pairs[i][1];
  }
  assert_int_equal(at, n);
  free(r.hits);
  return k;
}

static void test_pool_every_index_once(void **state) {
  (void)state;
  static const int threads[] = {1, 2, 3, 4, 8, 13};
  static const int64_t ns[] = {0, 1, 2, 3, 7, 8, 64, 1000, 100003};
  static const int64_t mins[] = {0, 1, 3, 16, 1000};
  for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
    kiln_pool *p = kiln_pool_new(threads[t]);
    assert_non_null(p);
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++) {
      for (size_t b = 0; b < sizeof mins / sizeof *mins; b++) {
        int64_t first[2 * MAX_CHUNKS], again[2 * MAX_CHUNKS];
        int k1 = run_and_check(p, threads[t], ns[a], mins[b], first);
        int k2 = run_and_check(p, threads[t], ns[a], mins[b], again);
        assert_int_equal(k1, k2); /* deterministic: the same chunks every time */
        assert_memory_equal(first, again, sizeof(int64_t) * 2 * (size_t)k1);
      }
    }
    kiln_pool_free(p);
  }
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, us % 1000000 * 1000};
  nanosleep(&ts, NULL);
}

static void sum_task(void *ctx, int64_t begin, int64_t end) {
  _Atomic int64_t *sum = ctx;
  int64_t s = 0;
  for (int64_t i = begin; i < end; i++) s += i;
  atomic_fetch_add(sum, s);
}

/* Many back-to-back jobs (workers spinning), then jobs after pauses long
 * enough for the workers to fall asleep: no job is lost either way. */
static void test_pool_spin_and_sleep(void **state) {
  (void)state;
  kiln_pool *p = kiln_pool_new(4);
  assert_non_null(p);
  for (int rep = 0; rep < 20000; rep++) {
    _Atomic int64_t sum = 0;
    kiln_parallel_for(p, sum_task, &sum, 100, 1);
    assert_int_equal(atomic_load(&sum), 4950);
  }
  for (int rep = 0; rep < 20; rep++) {
    sleep_us(rep % 2 ? 2000 : 50);
    _Atomic int64_t sum = 0;
    kiln_parallel_for(p, sum_task, &sum, 1000, 1);
    assert_int_equal(atomic_load(&sum), 499500);
  }
  kiln_pool_free(p);
  assert_null(kiln_pool_new(0));
  _Atomic int64_t inline_sum = 0;
  kiln_parallel_for(NULL, sum_task, &inline_sum, 10, 1); /* no pool: inline */
  assert_int_equal(atomic_load(&inline_sum), 45);
}

typedef struct Nested {
  kiln_pool *pool;
  _Atomic int64_t sum;
} Nested;

static void nested_inner(void *ctx, int64_t begin, int64_t end) {
  Nested *n = ctx;
  atomic_fetch_add(&n->sum, end - begin);
}

static void nested_outer(void *ctx, int64_t begin, int64_t end) {
  Nested *n = ctx;
  for (int64_t i = begin; i < end; i++) kiln_parallel_for(n->pool, nested_inner, n, 10, 1);
}

/* A kernel that calls parallel_for runs the inner call inline instead of deadlocking. */
static void test_pool_nested(void **state) {
  (void)state;
  Nested n = {kiln_pool_new(3), 0};
  assert_non_null(n.pool);
  kiln_parallel_for(n.pool, nested_outer, &n, 6, 1);
  assert_int_equal(atomic_load(&n.sum), 60);
  kiln_pool_free(n.pool);
}

static void noop_task(void *ctx, int64_t begin, int64_t end) { (void)ctx, (void)begin, (void)end; }

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Not a pass/fail check: prints the cost of dispatching an empty job to
 * spinning workers and to sleeping ones, for the record. */
static void test_pool_latency(void **state) {
  (void)state;
  int n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  kiln_pool *p = kiln_pool_new(n < 2 ? 2 : n);
  assert_non_null(p);
  for (int i = 0; i < 1000; i++) kiln_parallel_for(p, noop_task, NULL, 1 << 20, 1);
  int reps = 20000;
  double t0 = now_us();
  for (int i = 0; i < reps; i++) kiln_parallel_for(p, noop_task, NULL, 1 << 20, 1);
  double hot = (now_us() - t0) / reps, cold = 0;
  for (int i = 0; i < 20; i++) {
    sleep_us(3000);
    double t1 = now_us();
    kiln_parallel_for(p, noop_task, NULL, 1 << 20, 1);
    cold += (now_us() - t1) / 20;
  }
  printf("# parallel_for with %d threads: %.2f us to spinning workers, %.1f us to sleeping ones\n",
         n < 2 ? 2 : n, hot, cold);
  kiln_pool_free(p);
}

/* ---- Memory ------------------------------------------------------------- */

static void test_mem(void **state) {
  (void)state;
  static const size_t sizes[] = {0, 1, 63, 4096, 4097, 2u << 20, (3u << 20) + 5};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    unsigned char *p = kiln_mem_alloc(sizes[i]);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    if (sizes[i] >= (2u << 20)) assert_int_equal((uintptr_t)p % (2u << 20), 0);
    for (size_t k = 0; k < sizes[i]; k++) assert_int_equal(p[k], 0);
    memset(p, 0xab, sizes[i]);
    kiln_mem_free(p, sizes[i]);
  }
  assert_null(kiln_mem_alloc(SIZE_MAX - 10));
  kiln_mem_free(NULL, 10);
}

/* ---- Instances ---------------------------------------------------------- */

/* A handwritten model: w f32[3, 4] glorot, b f32[4] constant(0.5), s f64[2]
 * normal(1, 2), with gradients and one optimizer state tensor. */
static const int64_t shape_w[] = {3, 4}, shape_b[] = {4}, shape_s[] = {2};
static const double args_b[] = {0.5}, args_s[] = {1, 2};
static const kiln_tensor_desc params[] = {
    {"w", KILN_DTYPE_F32, 2, shape_w, 0, 128, KILN_INIT_GLOROT, 0, NULL},
    {"b", KILN_DTYPE_F32, 1, shape_b, 64, 192, KILN_INIT_CONSTANT, 1, args_b},
    {"s", KILN_DTYPE_F64, 1, shape_s, 96, 208, KILN_INIT_NORMAL, 2, args_s},
};
static const kiln_tensor_desc states[] = {
    {"optim.w.m", KILN_DTYPE_F32, 2, shape_w, 256, UINT64_MAX, KILN_INIT_ZEROS, 0, NULL},
};
static const kiln_model_desc desc = {
    .abi_version = KILN_ABI_VERSION,
    .name = "toy",
    .nparams = 3,
    .params = params,
    .nstate = 1,
    .state = states,
    .has_train = 1,
    .mem_bytes = 512,
    .arena_bytes = 192,
};

static char tmpdir[64];

static int make_tmpdir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln_rt_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static const char *tmp_path(const char *name) {
  static char buf[4][128];
  static int k;
  char *b = buf[k++ % 4];
  snprintf(b, 128, "%s/%s", tmpdir, name);
  return b;
}

static void test_create_init(void **state) {
  (void)state;
  kiln_instance *m;
  assert_int_equal(kiln_rt_create(&desc, &m, 7), KILN_OK);
  float w[12], b[4];
  double s[2];
  assert_int_equal(kiln_init_fill(w, shape_w, 2, KILN_INIT_GLOROT, NULL, 0, 7, "w"), 0);
  assert_int_equal(kiln_init_fill(b, shape_b, 1, KILN_INIT_CONSTANT, args_b, 1, 7, "b"), 0);
  assert_int_equal(kiln_init_fill_f64(s, shape_s, 1, KILN_INIT_NORMAL, args_s, 2, 7, "s"), 0);
  assert_memory_equal(kiln_rt_param(m, "w"), w, sizeof w);
  assert_memory_equal(kiln_rt_param(m, "b"), b, sizeof b);
  assert_memory_equal(kiln_rt_param(m, "s"), s, sizeof s);
  assert_null(kiln_rt_param(m, "nope"));
  assert_null(kiln_rt_param(m, NULL));
  assert_ptr_equal(kiln_rt_param_grad(m, "w"), (const float *)(const void *)(m->mem + 128));
  assert_true(m->nthreads >= 1);
  assert_int_equal(kiln_rt_set_threads(m, 0), KILN_ERR_THREADS);
  assert_non_null(strstr(kiln_rt_message(m), "thread count 0"));
  assert_int_equal(kiln_rt_set_threads(m, 3), KILN_OK);
  assert_int_equal(m->nthreads, 3);
  assert_int_equal(kiln_rt_set_threads(NULL, 3), KILN_ERR_NULL);
  kiln_rt_destroy(m);
  kiln_rt_destroy(NULL);

  kiln_model_desc bad = desc;
  bad.mem_bytes = 100; /* param s would end past the block */
  assert_int_equal(kiln_rt_create(&bad, &m, 0), KILN_ERR_FORMAT);
  assert_null(m);
  bad = desc;
  bad.abi_version = 99;
  assert_int_equal(kiln_rt_create(&bad, &m, 0), KILN_ERR_FORMAT);
  assert_int_equal(kiln_rt_create(NULL, &m, 0), KILN_ERR_NULL);
  assert_int_equal(kiln_rt_create(&desc, NULL, 0), KILN_ERR_NULL);
}

static void test_no_train(void **state) {
  (void)state;
  kiln_model_desc d = desc;
  d.has_train = 0;
  kiln_instance *m;
  assert_int_equal(kiln_rt_create(&d, &m, 0), KILN_OK);
  assert_null(kiln_rt_param_grad(m, "w"));
  kiln_rt_destroy(m);
}

static void test_strerror(void **state) {
  (void)state;
  for (int i = 0; i < KILN_STATUS_COUNT; i++) {
    const char *s = kiln_rt_strerror(i);
    assert_true(strlen(s) > 3);
    for (int k = 0; k < i; k++) assert_string_not_equal(s, kiln_rt_strerror(k));
  }
  assert_string_equal(kiln_rt_strerror(-1), "unknown status");
  assert_string_equal(kiln_rt_strerror(KILN_STATUS_COUNT), "unknown status");
}

static void test_save_load_round_trip(void **state) {
  (void)state;
  kiln_instance *a, *b;
  assert_int_equal(kiln_rt_create(&desc, &a, 1), KILN_OK);
  assert_int_equal(kiln_rt_create(&desc, &b, 2), KILN_OK);
  for (int i = 0; i < 12; i++)
    ((float *)(void *)(a->mem + 256))[i] = (float)i; /* optimizer state */
  assert_int_equal(kiln_rt_save(a, tmp_path("a.safetensors")), KILN_OK);
  assert_memory_not_equal(kiln_rt_param(a, "w"), kiln_rt_param(b, "w"), 48);
  assert_int_equal(kiln_rt_load(b, tmp_path("a.safetensors")), KILN_OK);
  assert_string_equal(kiln_rt_message(b), "");
  assert_memory_equal(a->mem, b->mem, 96 + 16);        /* params */
  assert_memory_equal(a->mem + 256, b->mem + 256, 48); /* state */

  /* The host-side reader agrees on what was written. */
  KilnTensorFile f;
  char err[512];
  assert_int_equal(kiln_safetensors_read(tmp_path("a.safetensors"), &f, err, sizeof err), 0);
  assert_int_equal(f.n, 4);
  const KilnTensor *s = kiln_tensor_find(&f, "s");
  assert_non_null(s);
  assert_int_equal(s->dtype, KILN_F64);
  assert_memory_equal(s->data, kiln_rt_param(a, "s"), 16);
  assert_non_null(kiln_tensor_find(&f, "optim.w.m"));

  /* From memory, as an executable's embedded weights. */
  unsigned char *buf = malloc(4096);
  FILE *fp = fopen(tmp_path("a.safetensors"), "rb");
  size_t len = fread(buf, 1, 4096, fp);
  fclose(fp);
  kiln_instance *c;
  assert_int_equal(kiln_rt_create(&desc, &c, 3), KILN_OK);
  assert_int_equal(kiln_rt_load_buffer(c, buf, len, "embedded"), KILN_OK);
  assert_memory_equal(a->mem, c->mem, 112);
  /* Every truncation fails cleanly, and never changes the instance. */
  kiln_instance *d;
  assert_int_equal(kiln_rt_create(&desc, &d, 4), KILN_OK);
  unsigned char before[512];
  memcpy(before, d->mem, 512);
  for (size_t cut = 0; cut < len; cut++) {
    unsigned char *t = malloc(cut ? cut : 1); /* exactly cut bytes: ASan sees any overread */
    memcpy(t, buf, cut);
    assert_int_not_equal(kiln_rt_load_buffer(d, t, cut, "cut"), KILN_OK);
    assert_memory_equal(d->mem, before, 512);
    free(t);
  }
  free(buf);
  kiln_tensor_file_free(&f);
  kiln_rt_destroy(a);
  kiln_rt_destroy(b);
  kiln_rt_destroy(c);
  kiln_rt_destroy(d);
}

/* Writes a weights file with the host-side writer: the tensors given. */
static void write_weights(const char *path, const KilnTensor *ts, int n) {
  char err[512];
  assert_int_equal(kiln_safetensors_write(path, ts, n, err, sizeof err), 0);
}

static void expect_load(const char *path, int status, const char *msg) {
  kiln_instance *m;
  assert_int_equal(kiln_rt_create(&desc, &m, 0), KILN_OK);
  int rc = kiln_rt_load(m, path);
  if (rc != status || !strstr(kiln_rt_message(m), msg))
    fail_msg("load %s: status %d (want %d), message '%s' (want '%s')", path, rc, status,
             kiln_rt_message(m), msg);
  kiln_rt_destroy(m);
}

static void test_load_mismatch(void **state) {
  (void)state;
  static float w[15], b[4];
  static double s[2];
  KilnTensor good[3] = {
      {"w", KILN_F32, 2, {3, 4}, w, 48},
      {"b", KILN_F32, 1, {4}, b, 16},
      {"s", KILN_F64, 1, {2}, s, 16},
  };
  KilnTensor t[4];
  memcpy(t, good, sizeof good);
  t[0] = (KilnTensor){"w", KILN_F32, 2, {3, 5}, w, 60};
  write_weights(tmp_path("shape.safetensors"), t, 3);
  expect_load(tmp_path("shape.safetensors"), KILN_ERR_MISMATCH,
              "shape.safetensors: tensor 'w' has shape [3, 5], the model expects [3, 4]");
  memcpy(t, good, sizeof good);
  t[2] = (KilnTensor){"s", KILN_F32, 1, {2}, b, 8};
  write_weights(tmp_path("dtype.safetensors"), t, 3);
  expect_load(tmp_path("dtype.safetensors"), KILN_ERR_MISMATCH,
              "tensor 's' has dtype F32, the model expects F64");
  write_weights(tmp_path("missing.safetensors"), good, 2);
  expect_load(tmp_path("missing.safetensors"), KILN_ERR_MISMATCH, "missing param 's'");
  memcpy(t, good, sizeof good);
  t[3] = (KilnTensor){"extra", KILN_F32, 1, {4}, b, 16};
  write_weights(tmp_path("extra.safetensors"), t, 4);
  expect_load(tmp_path("extra.safetensors"), KILN_ERR_MISMATCH,
              "unexpected tensor 'extra': the model has no param");
  t[3] = (KilnTensor){"optim.nope", KILN_F32, 1, {4}, b, 16};
  write_weights(tmp_path("optim.safetensors"), t, 4);
  expect_load(tmp_path("optim.safetensors"), KILN_ERR_MISMATCH,
              "unexpected tensor 'optim.nope': the model has no optimizer state");
  /* Optimizer state of a training checkpoint: skipped by a model without state. */
  kiln_model_desc nostate = desc;
  nostate.nstate = 0;
  kiln_instance *ns;
  assert_int_equal(kiln_rt_create(&nostate, &ns, 0), KILN_OK);
  assert_int_equal(kiln_rt_load(ns, tmp_path("optim.safetensors")), KILN_OK);
  kiln_rt_destroy(ns);
  write_weights(tmp_path("ok.safetensors"), good, 3); /* state absent: fine */
  expect_load(tmp_path("ok.safetensors"), KILN_OK, "");
  expect_load(tmp_path("absent.safetensors"), KILN_ERR_IO, "cannot open");
  FILE *fp = fopen(tmp_path("junk.safetensors"), "wb");
  fwrite("\x10\0\0\0\0\0\0\0{\"a\": 1}        ", 1, 24, fp);
  fclose(fp);
  expect_load(tmp_path("junk.safetensors"), KILN_ERR_FORMAT, "malformed header");
  kiln_instance *m;
  assert_int_equal(kiln_rt_create(&desc, &m, 0), KILN_OK);
  assert_int_equal(kiln_rt_load(m, NULL), KILN_ERR_NULL);
  assert_int_equal(kiln_rt_save(m, "/nonexistent-dir/x.safetensors"), KILN_ERR_IO);
  assert_true(strlen(kiln_rt_message(m)) > 0);
  kiln_rt_destroy(m);
}

/* ---- The header parser -------------------------------------------------- */

static void expect_bad_header(const char *json, const char *why) {
  RtStHeader h;
  char err[256] = "";
  size_t len = strlen(json);
  char *copy = malloc(len ? len : 1); /* no terminating NUL: the parser must not need one */
  memcpy(copy, json, len);
  int rc = rt_json_parse_header(copy, len, &h, err, sizeof err);
  free(copy);
  if (rc == 0) fail_msg("accepted: %s", json);
  if (!strstr(err, why)) fail_msg("header %s: message '%s' lacks '%s'", json, err, why);
  assert_null(h.entries);
}

static void test_json_malformed(void **state) {
  (void)state;
  static const char *const cases[][2] = {
      {"", "expected '{'"},
      {"[]", "expected '{'"},
      {"{", "expected a string"},
      {"{\"a\"", "expected ':'"},
      {"{\"a\":", "expected '{' starting a tensor entry"},
      {"{\"a\":{}}", "expected a string"},
      {"{\"a\":{\"dtype\":\"F32\"}}", "lacks one of"},
      {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,2]}}",
       "unsupported dtype 'BF16'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "non-negative integer"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "fraction"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", "leading zero"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
       "too many integers"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
       "too large"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4]}}", "exactly two"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,0]}}", "begin > end"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", "unknown field"},
      {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}", "duplicate field"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
       "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}",
       "duplicate tensor 'a'"},
      {"{\"__metadata__\":{\"k\":1}}", "expected a string"},
      {"{\"__metadata__\":{},\"__metadata__\":{}}", "duplicate key"},
      {"{} x", "text after"},
      {"{\"a\\q\":{}}", "unknown escape"},
      {"{\"a\\u12\":{}}", "four hex digits"},
      {"{\"a\\ud800\":{}}", "high surrogate"},
      {"{\"a\\udc00\":{}}", "lone low surrogate"},
      {"{\"a\\u0000\":{}}", "\\u0000"},
      {"{\"a\tb\":{}}", "control character"},
      {"{\"a\xc0\x80\":{}}", "malformed UTF-8"},
      {"{\"a\xed\xa0\x80\":{}}", "malformed UTF-8"},
      {"{\"a\xf4\x90\x80\x80\":{}}", "malformed UTF-8"},
      {"{\"a\xe2\x82\":{}}", "malformed UTF-8"},
      {"{\"abc", "unterminated string"},
      {"{\"abc\\", "unterminated string"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}", "expected ',' or '}'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4] true}}",
       "expected ',' or '}'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1 2],\"data_offsets\":[0,4]}}", "expected ',' or ']'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},}", "expected a string"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    expect_bad_header(cases[i][0], cases[i][1]);
}

static void test_json_good(void **state) {
  (void)state;
  const char *json = " {\"__metadata__\" : {\"format\":\"pt\", \"k\\\"\":\"v\\n\"},\n"
                     "\"fc1.w\":{\"shape\":[784, 0 ,10],\"dtype\":\"F64\",\"data_offsets\":[0,0]},"
                     "\"\\u00e9\\ud83d\\ude00\\/x\\u4e2d\xc3\xa9\":{\"data_offsets\":[8,12],"
                     "\"dtype\":\"I32\",\"shape\":[]}}\r\n\t  ";
  RtStHeader h;
  char err[256];
  assert_int_equal(rt_json_parse_header(json, strlen(json), &h, err, sizeof err), 0);
  assert_int_equal(h.n, 2);
  assert_string_equal(h.entries[0].name, "fc1.w");
  assert_int_equal(h.entries[0].dtype, KILN_DTYPE_F64);
  assert_int_equal(h.entries[0].rank, 3);
  assert_int_equal(h.entries[0].shape[0], 784);
  assert_int_equal(h.entries[0].shape[1], 0);
  assert_int_equal(h.entries[0].shape[2], 10);
  assert_string_equal(h.entries[1].name, "\xc3\xa9\xf0\x9f\x98\x80/x\xe4\xb8\xad\xc3\xa9");
  assert_int_equal(h.entries[1].dtype, KILN_DTYPE_I32);
  assert_int_equal(h.entries[1].rank, 0);
  assert_int_equal(h.entries[1].begin, 8);
  assert_int_equal(h.entries[1].end, 12);
  rt_json_header_free(&h);
  assert_int_equal(rt_json_parse_header("{}", 2, &h, err, sizeof err), 0);
  assert_int_equal(h.n, 0);
  rt_json_header_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_every_index_once),
      cmocka_unit_test(test_pool_spin_and_sleep),
      cmocka_unit_test(test_pool_nested),
      cmocka_unit_test(test_pool_latency),
      cmocka_unit_test(test_mem),
      cmocka_unit_test(test_create_init),
      cmocka_unit_test(test_no_train),
      cmocka_unit_test(test_strerror),
      cmocka_unit_test(test_save_load_round_trip),
      cmocka_unit_test(test_load_mismatch),
      cmocka_unit_test(test_json_malformed),
      cmocka_unit_test(test_json_good),
  };
  return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
