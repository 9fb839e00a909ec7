/* fuzz_common.h - what the file-format fuzz targets share: a scratch folder and checked tensors. */
#ifndef KILN_FUZZ_COMMON_H
#define KILN_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor_io.h"

static inline _Noreturn void fuzz_fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz: %s: %s\n", what, detail ? detail : "");
  abort();
}

static char fuzz_dir[64];

/* Removes the scratch folder and what the targets write there, at exit. */
static inline void fuzz_scratch_remove(void) {
  static const char *const names[] = {"t.npy", "t.safetensors"};
  char path[128];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, names[i]);
    unlink(path);
  }
  rmdir(fuzz_dir);
}

/* A per-process scratch file path for write/read round trips. */
static inline const char *fuzz_scratch(const char *name) {
  static char path[128];
  char *dir = fuzz_dir;
  if (!dir[0]) {
    snprintf(dir, sizeof fuzz_dir, "/tmp/kiln_fuzz_XXXXXX");
    if (!mkdtemp(dir)) fuzz_fail("mkdtemp", dir);
    atexit(fuzz_scratch_remove);
  }
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return path;
}

/* What every parsed tensor must satisfy: a sane rank and shape, and exactly
 * numel * itemsize bytes of data. */
static inline void fuzz_check_tensor(const KilnTensor *t) {
  if (t->rank < 0 || t->rank > KILN_MAX_RANK) fuzz_fail("rank out of range", t->name);
  for (int i = 0; i < t->rank; i++)
    if (t->shape[i] < 0) fuzz_fail("negative dim", t->name);
  if (!t->data) fuzz_fail("NULL data", t->name);
  uint64_t n = (uint64_t)kiln_tensor_numel(t);
  if (n * kiln_dtype_size(t->dtype) != t->nbytes) fuzz_fail("nbytes != numel * itemsize", t->name);
}

/* Same dtype, shape and bytes. */
static inline void fuzz_check_same(const KilnTensor *a, const KilnTensor *b, const char *what) {
  if (a->dtype != b->dtype || a->rank != b->rank || a->nbytes != b->nbytes ||
      memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->rank) != 0 ||
      (a->nbytes && memcmp(a->data, b->data, a->nbytes) != 0))
    fuzz_fail("round trip differs", what);
}

#endif
