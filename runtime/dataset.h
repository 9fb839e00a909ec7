/* dataset.h - training data for kiln train: a folder of .npy files or an IDX pair (MNIST), every
 * size checked.
 */
#ifndef KILN_DATASET_H
#define KILN_DATASET_H

/*
 * A data set is a few columns of N samples each, every column a tensor whose
 * leading dim is N (one sample per row):
 *
 *   const char *names[] = {"x", "y"};
 *   KilnDataset d;
 *   if (kiln_dataset_read_npy("data", names, 2, &d, err, sizeof err) != 0) ...
 *   // d.columns[0] is data/x.npy, d.columns[1] is data/y.npy, d.count is N
 *   kiln_dataset_free(&d);
 *
 * Formats:
 *   npy:DIR      DIR/NAME.npy per name (runtime/tensor_io.h's .npy rules),
 *                rank >= 1, the same leading count N >= 1 in every file.
 *   idx:PREFIX   PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte, each
 *                plain or gzip-compressed (NAME.gz, read through zlib; the
 *                plain name wins when both exist). An IDX file is the
 *                big-endian magic 0x00000800 | ndims (unsigned bytes), ndims
 *                big-endian u32 dims, then exactly prod(dims) bytes: images
 *                are [N, rows, cols] (magic 0x00000803), labels [N]
 *                (0x00000801). Columns: "images" F32 [N, rows, cols] with
 *                byte / 255 (torchvision's ToTensor), "labels" I32 [N].
 *
 * Functions return 0, or -1 with a message naming the file in err; on
 * failure the output is left empty.
 */

#include <stddef.h>
#include <stdint.h>

#include "tensor_io.h"

/* Refused above this many bytes of IDX data (2 GiB): an f32 copy is 4x. */
#define KILN_IDX_MAX_BYTES ((uint64_t)1 << 31)

typedef struct KilnDataset {
  KilnTensor *columns; /* named, each [count, ...] */
  int n;
  int64_t count; /* N, the samples */
} KilnDataset;

int kiln_dataset_read_npy(const char *dir, const char *const *names, int nnames, KilnDataset *out,
                          char *err, size_t errlen);
int kiln_dataset_read_idx(const char *prefix, KilnDataset *out, char *err, size_t errlen);
/* One IDX file's bytes, plain or gzip-compressed (as its file holds them), as
 * the column it makes: ndims 3 gives "images", ndims 1 "labels" (see above).
 * what names the buffer in messages (NULL: "<memory>"). */
int kiln_idx_parse(const void *buf, size_t len, const char *what, int ndims, KilnTensor *out,
                   char *err, size_t errlen);
/* Bytes of one sample of column c: nbytes / count. */
size_t kiln_dataset_sample_bytes(const KilnDataset *d, int c);
void kiln_dataset_free(KilnDataset *d);

#endif
