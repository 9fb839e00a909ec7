/* app_mlp.c - a user's program against the generated mlp.h (built with -D batch=2) and mlp.so.
 * usage: app_mlp W1.safetensors W2.safetensors X.npy Y.npy REF1.npy REF2.npy SAVE.safetensors
 *   REF1: logits with the params of `kiln init --seed 1` (what mlp_create(.., 1) must give);
 *   REF2: logits with W2 loaded. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"

static int failures;
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) fprintf(stderr, "app_mlp: line %d: check failed: %s\n", __LINE__, #c), failures++;   \
  } while (0)

/* The float32 array of a .npy file (exactly n values). */
static float *read_npy(const char *path, size_t n) {
  FILE *f = fopen(path, "rb");
  unsigned char pre[10];
  if (!f || fread(pre, 1, 10, f) != 10) return NULL;
  fseek(f, 10 + (pre[8] | pre[9] << 8), SEEK_SET);
  float *v = malloc(n * sizeof *v);
  if (!v || fread(v, sizeof *v, n, f) != n) return NULL;
  fclose(f);
  return v;
}

static void close_to(const float *a, const float *b, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++) {
    if (fabsf(a[i] - b[i]) <= 1e-4f + 1e-3f * fabsf(b[i])) continue;
    fprintf(stderr, "app_mlp: %s[%zu] = %g, expected %g\n", what, i, a[i], b[i]);
    failures++;
    return;
  }
}

int main(int argc, char **argv) {
  if (argc != 8) return 2;
  float *x = read_npy(argv[3], 2 * 784), *ref1 = read_npy(argv[5], 20),
        *ref2 = read_npy(argv[6], 20);
  float *yf = read_npy(argv[4], 2); /* i32 labels, read as raw 4-byte values */
  if (!x || !ref1 || !ref2 || !yf) return fprintf(stderr, "app_mlp: cannot read inputs\n"), 1;
  const int32_t *y = (const int32_t *)(void *)yf;
  float logits[20], loss = NAN;

  mlp *net = NULL;
  CHECK(mlp_create(&net, 1) == 0 && net);
  CHECK(mlp_infer(net, x, logits) == 0);
  close_to(logits, ref1, 20, "logits after create(seed 1)");
  CHECK(mlp_load(net, argv[2]) == 0);
  CHECK(mlp_set_threads(net, 1) == 0);
  CHECK(mlp_infer(net, x, logits) == 0);
  close_to(logits, ref2, 20, "logits with W2, 1 thread");
  CHECK(mlp_set_threads(net, 0) != 0);
  CHECK(mlp_set_threads(net, 2) == 0);
  CHECK(mlp_infer(net, x, logits) == 0);
  close_to(logits, ref2, 20, "logits with W2, 2 threads");

  /* Errors are statuses, never crashes. */
  CHECK(mlp_infer(net, NULL, logits) == KILN_ERR_NULL);
  CHECK(mlp_infer(NULL, x, logits) == KILN_ERR_NULL);
  CHECK(mlp_load(net, "/nonexistent/w.safetensors") == KILN_ERR_IO);
  CHECK(mlp_load(net, argv[3]) == KILN_ERR_FORMAT); /* a .npy is no safetensors file */
  CHECK(strlen(mlp_strerror(KILN_ERR_MISMATCH)) > 0);
  CHECK(mlp_param(net, "fc1.w") != NULL);
  CHECK(mlp_param(net, "nope") == NULL);

  /* The descriptor. */
  const kiln_model_desc *d = mlp_describe();
  CHECK(d && strcmp(d->name, "mlp") == 0 && d->ninfer_inputs == 1 && d->noutputs == 1);
  CHECK(d && d->nparams == 6 && d->has_train);

  /* Training: the loss is finite, gradients readable, a step changes the params. */
  CHECK(mlp_grad(net, x, y, &loss) == 0 && isfinite(loss) && loss > 0);
  CHECK(mlp_param_grad(net, "fc3.b") != NULL);
  float before = mlp_param(net, "fc3.b")[0];
  CHECK(mlp_train_step(net, x, y, &loss) == 0 && isfinite(loss));
  CHECK(mlp_param(net, "fc3.b")[0] != before);

  /* Save and load back into a second instance: the same params. */
  CHECK(mlp_save(net, argv[7]) == 0);
  mlp *other = NULL;
  CHECK(mlp_create(&other, 5) == 0);
  CHECK(mlp_load(other, argv[7]) == 0);
  CHECK(memcmp(mlp_param(net, "fc1.w"), mlp_param(other, "fc1.w"), 784 * 512 * 4) == 0);
  mlp_destroy(other);
  mlp_destroy(net);
  free(x), free(yf), free(ref1), free(ref2);
  if (failures) fprintf(stderr, "app_mlp: %d failures\n", failures);
  return failures != 0;
}
