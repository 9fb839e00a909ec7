/* fuzz_rt_safetensors.c - libFuzzer target: libkilnrt's own safetensors header parser
 * (rt_json.c) on raw bytes, and its loader on whole files for a small model. A file the runtime
 * accepts must also be accepted by the host reader (runtime/safetensors.c) with the same values. */
#include <stdint.h>

#include "fuzz_common.h"
#include "kiln_rt.h"
#include "rt_json.h"

/* The model the loader checks files against: w f32[2, 3], b f32[3], n f64[]. */
static const int64_t shape_w[] = {2, 3}, shape_b[] = {3};
static const kiln_tensor_desc params[] = {
    {"w", KILN_DTYPE_F32, 2, shape_w, 0, 64, KILN_INIT_ZEROS, 0, NULL},
    {"b", KILN_DTYPE_F32, 1, shape_b, 32, 96, KILN_INIT_ZEROS, 0, NULL},
    {"n", KILN_DTYPE_F64, 0, NULL, 48, 112, KILN_INIT_ZEROS, 0, NULL},
};
static const kiln_model_desc desc = {
    .abi_version = KILN_ABI_VERSION,
    .name = "fuzz",
    .nparams = 3,
    .params = params,
    .mem_bytes = 128,
};

static void fuzz_header(const uint8_t *data, size_t size) {
  RtStHeader h;
  char err[256];
  if (rt_json_parse_header((const char *)data, size, &h, err, sizeof err) != 0) {
    if (!err[0]) fuzz_fail("failure without a message", NULL);
    return;
  }
  for (int i = 0; i < h.n; i++) {
    const RtStEntry *e = &h.entries[i];
    if (!e->name || e->rank < 0 || e->rank > RT_JSON_MAX_RANK || e->begin > e->end)
      fuzz_fail("inconsistent header entry", e->name);
  }
  rt_json_header_free(&h);
}

/* The runtime accepted the file: the host reader must agree, value for value. */
static void fuzz_agree(const kiln_instance *inst, const uint8_t *data, size_t size) {
  KilnTensorFile f;
  char err[512];
  if (kiln_safetensors_parse(data, size, "fuzz", &f, err, sizeof err) != 0)
    fuzz_fail("libkilnrt accepts what the host reader refuses", err);
  for (int i = 0; i < desc.nparams; i++) {
    const KilnTensor *t = kiln_tensor_find(&f, params[i].name);
    const float *p = kiln_rt_param(inst, params[i].name);
    if (!t || !p || memcmp(t->data, p, t->nbytes) != 0)
      fuzz_fail("libkilnrt and the host reader load different values", params[i].name);
  }
  kiln_tensor_file_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static kiln_instance *inst;
  if (!inst && kiln_rt_create(&desc, &inst, 0) != KILN_OK) fuzz_fail("kiln_rt_create", NULL);
  if (size >= 8) fuzz_header(data + 8, size - 8);
  int rc = kiln_rt_load_buffer(inst, data, size, "fuzz");
  if (rc != KILN_OK && !kiln_rt_message(inst)[0]) fuzz_fail("failure without a message", NULL);
  if (rc == KILN_OK) fuzz_agree(inst, data, size);
  return 0;
}
