/* fuzz_npy.c - libFuzzer target: the .npy reader. Whatever parses must be a consistent tensor,
 * write back, and read back identically. */
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  KilnTensor t;
  char err[512];
  if (kiln_npy_parse(data, size, "fuzz", &t, err, sizeof err) != 0) {
    if (!err[0]) fuzz_fail("failure without a message", NULL);
    return 0;
  }
  fuzz_check_tensor(&t);
  const char *path = fuzz_scratch("t.npy");
  if (kiln_npy_write(path, &t, err, sizeof err) != 0)
    fuzz_fail("parsed tensor does not write", err);
  KilnTensor back;
  if (kiln_npy_read(path, &back, err, sizeof err) != 0)
    fuzz_fail("written file does not read back", err);
  fuzz_check_same(&t, &back, "npy");
  kiln_tensor_free(&back);
  kiln_tensor_free(&t);
  return 0;
}
