/* fuzz_idx.c - libFuzzer target: IDX training data (plain or gzip), as images and as labels.
 * Whatever parses must be a consistent column with values in the format's range. */
#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
#include "fuzz_common.h"

static void fuzz_idx(const uint8_t *data, size_t size, int ndims) {
  KilnTensor t;
  char err[512];
  if (kiln_idx_parse(data, size, "fuzz", ndims, &t, err, sizeof err) != 0) {
    if (!err[0]) fuzz_fail("failure without a message", NULL);
    return;
  }
  fuzz_check_tensor(&t);
  if (t.rank != ndims || t.shape[0] < 1) fuzz_fail("bad column shape", t.name);
  int64_t n = kiln_tensor_numel(&t);
  for (int64_t i = 0; i < n; i++) {
    bool ok = ndims == 3 ? ((const float *)t.data)[i] >= 0 && ((const float *)t.data)[i] <= 1
                         : ((const int32_t *)t.data)[i] >= 0 && ((const int32_t *)t.data)[i] < 256;
    if (!ok) fuzz_fail("value out of range", t.name);
  }
  kiln_tensor_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_idx(data, size, 1);
  fuzz_idx(data, size, 3);
  return 0;
}
