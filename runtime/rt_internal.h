/* rt_internal.h - what the files of libkilnrt share: tensor sizes, shape text, messages. */
#ifndef KILN_RT_INTERNAL_H
#define KILN_RT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln_rt.h"

#if defined(__GNUC__)
#define RT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define RT_PRINTF(f, a)
#endif

#define RT_MAX_RANK    8
#define RT_MAX_THREADS 4096

/* Bytes per element of a dtype; 0 for a value outside the enum. */
size_t rt_dtype_size(kiln_dtype dt);
/* "F32", "I32", "F64" as safetensors spells them; "?" otherwise. */
const char *rt_dtype_name(kiln_dtype dt);
/* numel * element size into *bytes; -1 if a dim is negative, the rank is
 * outside 0..8 or the product overflows uint64. */
int rt_tensor_bytes(const int64_t *shape, int rank, kiln_dtype dt, uint64_t *bytes);
/* File writing, shape text and the .npy code come from tensor_io.c and
 * npy.c (tensor_io_internal.h), which are libc-only and part of libkilnrt. */

/* Sets self->message (a const instance's too: instances are always heap
 * objects, so writing the message through the cast is defined). */
void rt_msg(const kiln_instance *self, const char *fmt, ...) RT_PRINTF(2, 3);

/* sysconf(_SC_NPROCESSORS_ONLN), clamped to 1..RT_MAX_THREADS. */
int rt_default_threads(void);

#endif
