/* rt_pool.c - kiln_parallel_for: persistent pthreads, static chunks, workers spin then sleep. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt_internal.h"

/*
 * One call of kiln_parallel_for is one "job": chunk 0 runs on the caller,
 * chunk i on worker i. The caller publishes a job by storing `word`
 * (a sequence number << 16 | the chunk count); a worker whose index is
 * below the count reads fn/ctx/n, runs its chunk and decrements `remaining`;
 * the caller waits for `remaining` to reach zero. Workers past the chunk
 * count never touch the job fields, so the caller may publish the next job
 * as soon as the workers it used are done.
 *
 * Between jobs a worker spins on `word` for about POOL_SPIN_NS, then sleeps
 * on a condition variable. Handing a job to a spinning worker costs ~3 us on
 * the machines Kiln is tuned on; waking a sleeping one 80-115 us. Spinning
 * for about what a wake-up costs is the classic 2-competitive rule: never
 * worse than twice the better choice made in hindsight, and consecutive
 * kernels of one m_infer (gaps of a few us) always find spinning workers.
 *
 * Memory ordering: the job fields and `remaining` are written before the
 * seq_cst store of `word` and read after a worker's acquire load of it; a
 * worker's writes (its chunk's results) happen before its release decrement
 * of `remaining`, which the caller reads with acquire. Sleeping uses the
 * Dekker pattern: a worker increments `nsleeping` then re-reads `word`
 * (both seq_cst, under the mutex); the caller stores `word` then reads
 * `nsleeping`, and if any sleep, broadcasts under the mutex. Either the
 * worker sees the new word or the caller sees the sleeper: no lost wake-up.
 */

#define POOL_SPIN_NS     100000 /* ~ the cost of a wake-up, see above */
#define POOL_SPIN_CHECK  64     /* pauses between clock reads */
#define POOL_CHUNK_BITS  16     /* of `word`: up to 65535 chunks */
#define POOL_CACHE_LINE  64
#define POOL_CALLER_SPIN 4096 /* pauses before the waiting caller starts yielding */

typedef struct PoolWorker {
  kiln_pool *pool;
  int index; /* 1 .. nthreads - 1: the chunk it runs */
  pthread_t thread;
} PoolWorker;

struct kiln_pool {
  /* Written by workers on every job: a line of its own. */
  _Alignas(POOL_CACHE_LINE) _Atomic int remaining;
  /* Read by spinning workers. */
  _Alignas(POOL_CACHE_LINE) _Atomic uint64_t word;
  _Atomic int stop;
  _Atomic int nsleeping;
  kiln_task_fn fn;
  void *ctx;
  int64_t n;
  /* The job's barrier (kiln_job_barrier): arrivals, and the generation they wait to change. */
  _Alignas(POOL_CACHE_LINE) _Atomic int bar_count;
  _Atomic unsigned bar_gen;
  /* The caller's. */
  _Alignas(POOL_CACHE_LINE) _Atomic int busy; /* a job is running: nested calls run inline */
  uint64_t seq;
  int nthreads, nstarted;
  bool oversubscribed; /* more threads than cores: waiting threads yield, never spin */
  PoolWorker *workers;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

static inline void pool_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static uint64_t pool_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Chunk i of n iterations split into nchunks: the first n % nchunks chunks
 * get one more. Only n, nchunks and i decide it (deterministic). */
static void pool_chunk(int64_t n, int nchunks, int i, int64_t *begin, int64_t *end) {
  int64_t base = n / nchunks, rem = n % nchunks;
  *begin = i * base + (i < rem ? i : rem);
  *end = *begin + base + (i < rem ? 1 : 0);
}

/* One round of waiting on another thread of the job: a pause for the first rounds, then a
 * yield (always when the pool has more threads than cores: a preempted thread needs the
 * core more than we need the latency). */
static void pool_backoff(const kiln_pool *p, unsigned round) {
  if (round < POOL_CALLER_SPIN && !p->oversubscribed)
    pool_pause();
  else
    sched_yield();
}

/* The job the calling thread is running a chunk of (kiln_job_shape, kiln_job_barrier). */
typedef struct JobSeat {
  kiln_pool *pool; /* NULL: inline, alone */
  int index, count;
} JobSeat;
static _Thread_local JobSeat job_seat = {NULL, 0, 1};

static void run_chunk(kiln_pool *pool, int index, int count, kiln_task_fn fn, void *ctx,
                      int64_t begin, int64_t end) {
  JobSeat saved = job_seat;
  job_seat = (JobSeat){pool, index, count};
  fn(ctx, begin, end);
  job_seat = saved;
}

void kiln_job_shape(int64_t *index, int64_t *count) {
  *index = job_seat.index;
  *count = job_seat.count;
}

/* The last of the job's chunks to arrive resets the count and moves the generation on; the
 * others wait for it (pool_backoff). */
void kiln_job_barrier(void) {
  kiln_pool *p = job_seat.pool;
  if (!p || job_seat.count <= 1) return;
  unsigned gen = atomic_load_explicit(&p->bar_gen, memory_order_acquire);
  if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == job_seat.count - 1) {
    atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->bar_gen, 1, memory_order_release);
    return;
  }
  for (unsigned i = 0; atomic_load_explicit(&p->bar_gen, memory_order_acquire) == gen; i++)
    pool_backoff(p, i);
}

/* ---- Workers ------------------------------------------------------------ */

/* Spins for about POOL_SPIN_NS waiting for `word` to leave `seen`. With more
 * threads than cores a spinning thread would hold the core the thread it
 * waits for needs, so it yields instead of pausing. */
static uint64_t pool_spin(kiln_pool *p, uint64_t seen) {
  uint64_t deadline = 0;
  for (unsigned i = 1;; i++) {
    uint64_t w = atomic_load_explicit(&p->word, memory_order_acquire);
    if (w != seen) return w;
    if (p->oversubscribed)
      sched_yield();
    else
      pool_pause();
    if (i % POOL_SPIN_CHECK != 0) continue;
    uint64_t now = pool_now_ns();
    if (deadline == 0)
      deadline = now + POOL_SPIN_NS;
    else if (now >= deadline)
      return seen;
  }
}

static uint64_t pool_wait(kiln_pool *p, uint64_t seen) {
  uint64_t w = pool_spin(p, seen);
  if (w != seen) return w;
  pthread_mutex_lock(&p->mu);
  atomic_fetch_add(&p->nsleeping, 1);
  while ((w = atomic_load(&p->word)) == seen) pthread_cond_wait(&p->cv, &p->mu);
  atomic_fetch_sub(&p->nsleeping, 1);
  pthread_mutex_unlock(&p->mu);
  return w;
}

static void *pool_worker(void *arg) {
  PoolWorker *me = arg;
  kiln_pool *p = me->pool;
  uint64_t seen = 0; /* the word's initial value: a job published before we run is not missed */
  for (;;) {
    seen = pool_wait(p, seen);
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
    int nchunks = (int)(seen & ((1u << POOL_CHUNK_BITS) - 1));
    if (me->index >= nchunks) continue;
    int64_t begin, end;
    pool_chunk(p->n, nchunks, me->index, &begin, &end);
    run_chunk(p, me->index, nchunks, p->fn, p->ctx, begin, end);
    atomic_fetch_sub_explicit(&p->remaining, 1, memory_order_release);
  }
  return NULL;
}

/* ---- The pool ----------------------------------------------------------- */

/* Publishes a new word (a job, or a stop) and wakes sleepers if there are any. */
static void pool_publish(kiln_pool *p, int nchunks) {
  p->seq++;
  atomic_store(&p->word, p->seq << POOL_CHUNK_BITS | (uint64_t)nchunks);
  if (atomic_load(&p->nsleeping) > 0) {
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
  }
}

static void pool_stop_workers(kiln_pool *p) {
  atomic_store_explicit(&p->stop, 1, memory_order_release);
  pool_publish(p, 0);
  for (int i = 0; i < p->nstarted; i++) pthread_join(p->workers[i].thread, NULL);
  p->nstarted = 0;
}

static void pool_release(kiln_pool *p) {
  pool_stop_workers(p);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p->workers);
  free(p);
}

kiln_pool *kiln_pool_new(int nthreads) {
  if (nthreads < 1 || nthreads > RT_MAX_THREADS) return NULL;
  size_t size = (sizeof(kiln_pool) + POOL_CACHE_LINE - 1) / POOL_CACHE_LINE * POOL_CACHE_LINE;
  kiln_pool *p = aligned_alloc(POOL_CACHE_LINE, size);
  if (!p) return NULL;
  memset(p, 0, sizeof *p);
  atomic_init(&p->remaining, 0);
  atomic_init(&p->word, 0);
  atomic_init(&p->stop, 0);
  atomic_init(&p->nsleeping, 0);
  atomic_init(&p->busy, 0);
  atomic_init(&p->bar_count, 0);
  atomic_init(&p->bar_gen, 0);
  p->nthreads = nthreads;
  p->oversubscribed = nthreads > rt_default_threads();
  p->workers = calloc((size_t)nthreads, sizeof *p->workers);
  if (!p->workers || pthread_mutex_init(&p->mu, NULL) != 0) {
    free(p->workers);
    free(p);
    return NULL;
  }
  pthread_cond_init(&p->cv, NULL);
  for (int i = 1; i < nthreads; i++) {
    PoolWorker *w = &p->workers[p->nstarted];
    *w = (PoolWorker){p, i, 0};
    if (pthread_create(&w->thread, NULL, pool_worker, w) != 0) {
      pool_release(p);
      return NULL;
    }
    p->nstarted++;
  }
  return p;
}

void kiln_pool_free(kiln_pool *pool) {
  if (pool) pool_release(pool);
}

/* Waits for the workers' chunks (pool_backoff). */
static void pool_join(kiln_pool *p) {
  for (unsigned i = 0; atomic_load_explicit(&p->remaining, memory_order_acquire) != 0; i++)
    pool_backoff(p, i);
}

void kiln_parallel_for(kiln_pool *pool, kiln_task_fn fn, void *ctx, int64_t n, int64_t min_chunk) {
  if (n <= 0) return;
  int64_t most = min_chunk > 1 ? n / min_chunk : n;
  int nchunks = !pool ? 1 : most < pool->nthreads ? (int)most : pool->nthreads;
  /* One chunk, or a call from inside a job (nested, or a second thread on
     the same instance): run inline. */
  if (nchunks <= 1 || atomic_exchange_explicit(&pool->busy, 1, memory_order_acquire)) {
    run_chunk(NULL, 0, 1, fn, ctx, 0, n);
    return;
  }
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n = n;
  atomic_store_explicit(&pool->remaining, nchunks - 1, memory_order_relaxed);
  pool_publish(pool, nchunks);
  int64_t begin, end;
  pool_chunk(n, nchunks, 0, &begin, &end);
  run_chunk(pool, 0, nchunks, fn, ctx, begin, end);
  pool_join(pool);
  atomic_store_explicit(&pool->busy, 0, memory_order_release);
}
