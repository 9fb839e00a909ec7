/* arena.h - bump allocation for everything one compilation creates. */
#ifndef KILN_ARENA_H
#define KILN_ARENA_H

#include <stddef.h>

/* Nothing allocated from an arena is freed alone; arena_free releases all.
 * Allocations are zeroed and 16-byte aligned. Running out of memory is an
 * internal error: it prints a message and exits 70. */
typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
  ArenaBlock *head;
  size_t bytes; /* total bytes handed out */
} Arena;

void *arena_alloc(Arena *a, size_t n);
/* n elements of size sz, checking n * sz for overflow. */
void *arena_array(Arena *a, size_t n, size_t sz);
/* A copy of the old array (n_old elements) grown to n_new elements. */
void *arena_grow(Arena *a, const void *old, size_t n_old, size_t n_new, size_t sz);
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(Arena *a);

#endif
