/* tensor_io.h - run-time tensors and their files: safetensors and NumPy .npy, every size checked.
 */
#ifndef KILN_TENSOR_IO_H
#define KILN_TENSOR_IO_H

/*
 * Reading a weights file and one input:
 *
 *   char err[512];
 *   KilnTensorFile w;
 *   if (kiln_safetensors_read("w1.safetensors", &w, err, sizeof err) != 0) {
 *     fprintf(stderr, "%s\n", err);   // "w1.safetensors: tensor 'fc1.w': ..."
 *     return 1;
 *   }
 *   const KilnTensor *fc1 = kiln_tensor_find(&w, "fc1.w");   // NULL if absent
 *   KilnTensor x;
 *   if (kiln_npy_read("x.npy", &x, err, sizeof err) != 0) ...
 *   ... use (const float *)fc1->data, x.shape, kiln_tensor_numel(&x) ...
 *   kiln_tensor_free(&x);
 *   kiln_tensor_file_free(&w);
 *
 * Every function returns 0 on success, else -1 with a message in err that
 * names the file (or the `what` given to a parser), the tensor where there is
 * one, and what was wrong. On failure the output is left empty (nothing to
 * free). Writers never leave a partial file: they write PATH.tmp.XXXXXX in the
 * same folder and rename it over PATH.
 *
 * Formats:
 *   safetensors  https://github.com/huggingface/safetensors (dtypes F32, F64, I32);
 *                header capped at KILN_SAFETENSORS_MAX_HEADER bytes; the data
 *                ranges must tile the data region exactly (no holes, overlaps
 *                or trailing bytes), as the format's reference loader demands.
 *   .npy         version 1.0 only, descr '<f4', '<f8' or '<i4', C order.
 *
 * Data is kept in memory in little-endian byte order, which is the host's
 * order on every machine Kiln supports (runtime/tensor_io.c refuses to build
 * elsewhere).
 */

#include <stddef.h>
#include <stdint.h>

typedef enum KilnDType { KILN_F32, KILN_I32, KILN_F64 } KilnDType;

#define KILN_MAX_RANK               8
#define KILN_SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u) /* 100 MB, as the reference loader */

typedef struct KilnTensor {
  char *name; /* safetensors: the tensor's name; npy: NULL */
  KilnDType dtype;
  int rank;
  int64_t shape[KILN_MAX_RANK];
  void *data; /* little-endian, C order, malloc'd, owned (non-NULL even when nbytes is 0) */
  size_t nbytes;
} KilnTensor;

/* Tensors of a safetensors file, in the order of their data in the file. */
typedef struct KilnTensorFile {
  KilnTensor *tensors;
  int n;
} KilnTensorFile;

/* dtypes */
size_t kiln_dtype_size(KilnDType dt);            /* 4, 4, 8 */
const char *kiln_dtype_name(KilnDType dt);       /* "F32", "I32", "F64" (safetensors) */
const char *kiln_dtype_npy_descr(KilnDType dt);  /* "<f4", "<i4", "<f8" */
const char *kiln_dtype_lower_name(KilnDType dt); /* "f32", "i32", "f64" (the model language) */
int kiln_dtype_from_name(const char *s, KilnDType *out); /* "F32"/"f32"...; 0 or -1 */

/* tensors */
int64_t kiln_tensor_numel(const KilnTensor *t); /* product of the shape; 1 for rank 0 */
void kiln_tensor_free(KilnTensor *t);           /* frees name and data; t may be zeroed */

/* safetensors. `what` names the buffer in messages (NULL: "<memory>"). */
int kiln_safetensors_parse(const void *buf, size_t len, const char *what, KilnTensorFile *out,
                           char *err, size_t errlen);
int kiln_safetensors_read(const char *path, KilnTensorFile *out, char *err, size_t errlen);
/* Header entries in the given order; data 8-byte dtypes first, then 4-byte ones (each aligned in
   the file to its element size). Names must be unique, non-empty UTF-8. */
int kiln_safetensors_write(const char *path, const KilnTensor *tensors, int n, char *err,
                           size_t errlen);
const KilnTensor *kiln_tensor_find(const KilnTensorFile *f, const char *name);
void kiln_tensor_file_free(KilnTensorFile *f);

/* NumPy .npy */
int kiln_npy_parse(const void *buf, size_t len, const char *what, KilnTensor *out, char *err,
                   size_t errlen);
int kiln_npy_read(const char *path, KilnTensor *out, char *err, size_t errlen);
int kiln_npy_write(const char *path, const KilnTensor *t, char *err, size_t errlen);

#endif
