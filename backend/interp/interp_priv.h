/* interp_priv.h - what the kernels share: their context, declarations and index walks. */
#ifndef KILN_INTERP_PRIV_H
#define KILN_INTERP_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "interp.h"

/* Every value lives as doubles while the graph runs (i32 values are exact in
 * a double); the interpreter rounds an f32 node's result once after its
 * kernel. A kernel sees its node, its output and its inputs, and overwrites
 * every element of the output. */
typedef struct InterpCtx {
  const Node *n;
  double *out;             /* ir_type_numel(&n->type) elements */
  const double *const *in; /* one per input, in the node's input order */
  bool bound;              /* input, param: interp_set gave it data (already in out) */
  char *err;               /* run-time user errors */
  size_t len;
} InterpCtx;

/* A kernel returns false only on a run-time user error, with a message. */
typedef bool InterpKernel(const InterpCtx *cx);

#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  InterpKernel interp;
#include "ops.def"
#undef OP

/* malloc that treats running out of memory as fatal (scratch inside kernels). */
void *interp_scratch(size_t count, size_t size);

bool interp_fail(const InterpCtx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Input i's type. */
static inline const Type *interp_in_type(const InterpCtx *cx, int i) { return &cx->n->in[i]->type; }

/* ---- Strided walks -------------------------------------------------------
 * A walk visits a shape in C order one innermost row at a time, keeping for
 * each of up to two operands an offset that moves by that operand's own
 * stride per dim (0 where it broadcasts). Index math happens once a row. */

typedef struct Walk {
  int rank;
  int64_t dims[IR_MAX_RANK];
  int64_t idx[IR_MAX_RANK];
  int64_t stride[2][IR_MAX_RANK];
  int64_t off[2];
} Walk;

/* C-order strides of t: stride[rank-1] = 1. */
void interp_strides(const Type *t, int64_t *stride);
/* Strides of in read as the trailing dims of out under NumPy broadcasting:
 * 0 where in has size 1 or lacks the dim. */
void interp_broadcast_strides(const Type *in, const Type *out, int64_t *stride);
/* A walk over shape (rank dims), offsets at 0 and strides cleared. */
void interp_walk_init(Walk *w, int rank, const int64_t *dims);
/* Length of the innermost row (1 for a scalar) and number of rows. */
int64_t interp_walk_row_len(const Walk *w);
int64_t interp_walk_rows(const Walk *w);
/* Moves to the next row: advances every dim but the innermost. */
void interp_walk_next_row(Walk *w);
/* Moves to the next element. */
void interp_walk_next(Walk *w);

/* "[3, 7]": the multi-index of flat position p in t, for messages. */
#define INTERP_INDEX_STR_MAX (IR_MAX_RANK * 24 + 4)
void interp_index_str(const Type *t, int64_t p, char *buf, size_t len);

/* out = f(a, b) elementwise, a and b broadcast to out's type. */
void interp_broadcast_map(const Type *out_t, double *out, const Type *at, const double *a,
                          const Type *bt, const double *b, double (*f)(double, double));

#endif
