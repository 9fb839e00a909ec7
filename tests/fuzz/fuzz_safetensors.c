/* fuzz_safetensors.c - libFuzzer target: the host safetensors reader (jansson). Whatever parses
 * must hold consistent tensors, and what the writer accepts must read back identically. */
#include <stdint.h>

#include "fuzz_common.h"

static void fuzz_roundtrip(const KilnTensorFile *f) {
  char err[512];
  const char *path = fuzz_scratch("t.safetensors");
  /* The writer may refuse what the reader accepts (empty or non-UTF-8 names). */
  if (kiln_safetensors_write(path, f->tensors, f->n, err, sizeof err) != 0) return;
  KilnTensorFile back;
  if (kiln_safetensors_read(path, &back, err, sizeof err) != 0)
    fuzz_fail("written file does not read back", err);
  if (back.n != f->n) fuzz_fail("round trip changed the tensor count", NULL);
  for (int i = 0; i < f->n; i++) {
    const KilnTensor *b = kiln_tensor_find(&back, f->tensors[i].name);
    if (!b) fuzz_fail("round trip lost a tensor", f->tensors[i].name);
    fuzz_check_same(&f->tensors[i], b, f->tensors[i].name);
  }
  kiln_tensor_file_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  KilnTensorFile f;
  char err[512];
  if (kiln_safetensors_parse(data, size, "fuzz", &f, err, sizeof err) != 0) {
    if (!err[0]) fuzz_fail("failure without a message", NULL);
    return 0;
  }
  for (int i = 0; i < f.n; i++) {
    fuzz_check_tensor(&f.tensors[i]);
    if (!f.tensors[i].name) fuzz_fail("unnamed tensor", NULL);
    if (kiln_tensor_find(&f, f.tensors[i].name) != &f.tensors[i])
      fuzz_fail("duplicate tensor name", f.tensors[i].name);
  }
  fuzz_roundtrip(&f);
  kiln_tensor_file_free(&f);
  return 0;
}
