/* arena.c - bump allocation in large blocks, released all at once. */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK_MIN (64 * 1024)
#define ARENA_ALIGN     16

struct ArenaBlock {
  ArenaBlock *next;
  size_t used, cap;
  _Alignas(ARENA_ALIGN) unsigned char data[];
};

static _Noreturn void arena_oom(size_t n) {
  fprintf(stderr, "kiln: internal error: out of memory allocating %zu bytes\n", n);
  exit(70);
}

void *arena_alloc(Arena *a, size_t n) {
  size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
  if (need < n) arena_oom(n);
  ArenaBlock *b = a->head;
  if (!b || b->cap - b->used < need) {
    size_t cap = need > ARENA_BLOCK_MIN ? need : ARENA_BLOCK_MIN;
    if (cap > SIZE_MAX - sizeof(ArenaBlock)) arena_oom(n);
    b = malloc(sizeof(ArenaBlock) + cap);
    if (!b) arena_oom(n);
    b->used = 0;
    b->cap = cap;
    /* A block for one big request goes behind the head, so the head's
     * free space stays usable. */
    if (a->head && cap == need && need > ARENA_BLOCK_MIN) {
      b->next = a->head->next;
      a->head->next = b;
    } else {
      b->next = a->head;
      a->head = b;
    }
  }
  void *p = b->data + b->used;
  b->used += need;
  a->bytes += need;
  memset(p, 0, need);
  return p;
}

void *arena_array(Arena *a, size_t n, size_t sz) {
  if (sz && n > SIZE_MAX / sz) arena_oom(SIZE_MAX);
  return arena_alloc(a, n * sz);
}

void *arena_grow(Arena *a, const void *old, size_t n_old, size_t n_new, size_t sz) {
  void *p = arena_array(a, n_new, sz);
  if (old && n_old) memcpy(p, old, (n_old < n_new ? n_old : n_new) * sz);
  return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(Arena *a, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  char *p = arena_alloc(a, (size_t)n + 1);
  vsnprintf(p, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return p;
}

void arena_free(Arena *a) {
  ArenaBlock *b = a->head;
  while (b) {
    ArenaBlock *next = b->next;
    free(b);
    b = next;
  }
  a->head = NULL;
  a->bytes = 0;
}
