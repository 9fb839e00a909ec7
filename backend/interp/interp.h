/* interp.h - the reference interpreter: runs a Graph with plain loops, f32 and f64, the oracle.
 *
 *   Interp *it = interp_new(g);
 *   interp_set(it, "x", DT_F32, 2, (int64_t[]){4, 8}, xs, err, sizeof err);
 *   if (!interp_run(it, err, sizeof err)) ... a run-time error in err ...
 *   const float *y = interp_value(it, interp_output(it, "y"));
 *   interp_free(it);
 *
 * Every op has PyTorch's semantics (SPEC.md 1.6). Kernels compute in double
 * and round once per op to the node's dtype, so an f32 value is what an
 * exactly rounded f32 kernel would give; interp_promote_f64 turns a whole
 * graph into f64 for gradient checks.
 */
#ifndef KILN_INTERP_H
#define KILN_INTERP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir.h"

typedef struct Interp Interp;

/* One buffer per node, sized from its type. NULL when out of memory. The
 * graph must outlive the interpreter and stay unchanged. */
Interp *interp_new(const Graph *g);
void interp_free(Interp *it);

/* Binds an input, param or state by name to a copy of data (C order). f32 and f64
 * data convert to the node's float dtype; i32 binds only i32. The shape must
 * equal the node's. On a mismatch, returns false with a message naming the
 * tensor and the expected and given types. */
bool interp_set(Interp *it, const char *name, DType dt, int rank, const int64_t *dims,
                const void *data, char *err, size_t len);

/* Runs every node in order. Returns false with a message on a run-time user
 * error: an input or param not set, an embedding id or class label out of
 * range. A state (optimizer state) never set reads as zeros, as torch.optim
 * creates its state. */
bool interp_run(Interp *it, char *err, size_t len);

/* After interp_run: every update's target (a param or a state) takes its
 * value, all at once (every value is read before any target is written), and
 * counts as set. The next interp_run is the next train step. False with a
 * message only when out of memory. */
bool interp_apply_updates(Interp *it, char *err, size_t len);

/* The current data of the input, param or state of that name (C order, in
 * its dtype), or NULL if the graph has no such source. */
const void *interp_source(const Interp *it, const char *name);

/* A node's value after interp_run, C order, in its dtype (float, double or
 * int32_t). */
const void *interp_value(const Interp *it, const Node *n);
/* The node of the named output, or NULL. */
const Node *interp_output(const Interp *it, const char *name);

/* Rewrites every f32 type in g to f64: one switch promotes a whole graph. */
void interp_promote_f64(Graph *g);

#endif
