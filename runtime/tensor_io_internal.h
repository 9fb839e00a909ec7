/* tensor_io_internal.h - helpers shared by the safetensors and .npy readers and writers. */
#ifndef KILN_TENSOR_IO_INTERNAL_H
#define KILN_TENSOR_IO_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor_io.h"

#if defined(__GNUC__)
#define TIO_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TIO_PRINTF(f, a)
#endif

/* A piece of a file being written. */
typedef struct TioChunk {
  const void *p;
  size_t n;
} TioChunk;

/* snprintf into err; a NULL err or zero errlen drops the message. */
void tio_err(char *err, size_t errlen, const char *fmt, ...) TIO_PRINTF(3, 4);

/* Reads a whole regular file into a malloc'd buffer (never NULL on success). */
int tio_read_file(const char *path, unsigned char **buf, size_t *len, char *err, size_t errlen);

/* Writes the chunks to PATH.tmp.XXXXXX, then renames it over PATH; removes the temp on failure. */
int tio_write_atomic(const char *path, const TioChunk *chunks, int n, char *err, size_t errlen);

/* numel * itemsize of a shape, or -1 when it overflows int64 (or a dim is negative). */
int tio_shape_bytes(const int64_t *shape, int rank, KilnDType dt, uint64_t *nbytes);

/* "[2, 3]" into buf (truncated to fit; 256 bytes hold any shape). */
void tio_shape_str(char *buf, size_t n, const int64_t *shape, int rank);

/* Checks a tensor about to be written: rank, dims, nbytes against the shape, data. */
int tio_check_tensor(const KilnTensor *t, const char *path, char *err, size_t errlen);

/* Little-endian integers from bytes, whatever the alignment. */
uint64_t tio_le64(const unsigned char *p);
unsigned tio_le16(const unsigned char *p);

/* malloc(n) that never returns NULL for n == 0, and a copy of bytes. */
void *tio_malloc(size_t n);
void *tio_memdup(const void *p, size_t n);

#endif
