/* test_arena.c - the bump arena: alignment, zeroing, big blocks, grow, strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arena.h"

static bool all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

static void test_alignment(void **state) {
  (void)state;
  Arena a = {0};
  for (size_t n = 0; n < 200; n += 7) {
    void *p = arena_alloc(&a, n);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
  }
  arena_free(&a);
}

static void test_zeroed_and_disjoint(void **state) {
  (void)state;
  Arena a = {0};
  unsigned char *prev = NULL;
  /* Fill each allocation so a reuse of its bytes would show as non-zero. */
  for (int i = 0; i < 5000; i++) {
    size_t n = (size_t)(i % 97) + 1;
    unsigned char *p = arena_alloc(&a, n);
    assert_true(all_zero(p, n));
    assert_ptr_not_equal(p, prev);
    memset(p, 0xAB, n);
    prev = p;
  }
  assert_true(a.bytes >= 5000 * 16);
  arena_free(&a);
  assert_null(a.head);
  assert_int_equal(a.bytes, 0);
}

static void test_big_blocks(void **state) {
  (void)state;
  Arena a = {0};
  unsigned char *small = arena_alloc(&a, 32);
  size_t big_n = (size_t)4 << 20;
  unsigned char *big = arena_alloc(&a, big_n);
  assert_int_equal((uintptr_t)big % 16, 0);
  assert_true(all_zero(big, big_n));
  memset(big, 1, big_n);
  /* The head block's free space stays in use after a big request. */
  unsigned char *next = arena_alloc(&a, 32);
  assert_ptr_equal(next, small + 32);
  assert_true(a.bytes >= big_n + 64);
  arena_free(&a);
}

static void test_array_and_grow(void **state) {
  (void)state;
  Arena a = {0};
  int *v = arena_array(&a, 10, sizeof(int));
  for (int i = 0; i < 10; i++) v[i] = i * i;
  int *w = arena_grow(&a, v, 10, 25, sizeof(int));
  assert_ptr_not_equal(v, w);
  for (int i = 0; i < 10; i++) assert_int_equal(w[i], i * i);
  for (int i = 10; i < 25; i++) assert_int_equal(w[i], 0);
  int *s = arena_grow(&a, w, 25, 3, sizeof(int)); /* shrinking copies a prefix */
  assert_int_equal(s[2], 4);
  int *fresh = arena_grow(&a, NULL, 0, 4, sizeof(int));
  assert_true(all_zero((unsigned char *)fresh, 4 * sizeof(int)));
  arena_free(&a);
}

static void test_strings(void **state) {
  (void)state;
  Arena a = {0};
  const char *src = "hello, kiln";
  char *d = arena_strdup(&a, src);
  assert_ptr_not_equal(d, src);
  assert_string_equal(d, src);
  assert_string_equal(arena_strndup(&a, src, 5), "hello");
  assert_string_equal(arena_strdup(&a, ""), "");
  assert_string_equal(arena_printf(&a, "%s[%d,%d]", "f32", 128, 784), "f32[128,784]");
  char *long_s = arena_printf(&a, "%0300d", 7);
  assert_int_equal(strlen(long_s), 300);
  assert_int_equal(long_s[299], '7');
  arena_free(&a);
}

/* Running out of memory is an internal error: exit 70, never a crash. */
static void test_overflow_exits_70(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (!freopen("/dev/null", "w", stderr)) _exit(1);
    Arena a = {0};
    arena_array(&a, SIZE_MAX / 2, 4);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 70);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alignment),  cmocka_unit_test(test_zeroed_and_disjoint),
      cmocka_unit_test(test_big_blocks), cmocka_unit_test(test_array_and_grow),
      cmocka_unit_test(test_strings),    cmocka_unit_test(test_overflow_exits_70),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
