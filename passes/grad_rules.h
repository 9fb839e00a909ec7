/* grad_rules.h - what autodiff's gradient rules share: the context, the node builders, the rules.
 *
 * A rule is the grad column of ops.def: given a forward node n and dy =
 * d loss / d n, it builds the IR for d loss / d (each input) and hands each
 * to grad_accumulate, which reduces a broadcast contribution back to the
 * input's shape and adds it to what the input already has. A rule builds
 * nothing for an input that grad_needed rejects.
 */
#ifndef KILN_GRAD_RULES_H
#define KILN_GRAD_RULES_H

#include "passes.h"

typedef struct GradCtx {
  Graph *g;
  int nids;     /* the forward graph's ids are below nids, new nodes' are not */
  Node **grad;  /* by forward id: d loss / d node accumulated so far, NULL for zero */
  bool *active; /* by forward id: the node lies on a path from a param to the loss */
  Loc loc;      /* the forward node being differentiated: new nodes take its location */
} GradCtx;

/* True if the gradient of forward value v is wanted: v lies on a path from
 * a param to the loss. i32 values (ids, labels) never do. */
bool grad_needed(const GradCtx *cx, const Node *v);
/* Adds contribution d to d loss / d v. d has v's type or a type v
 * broadcasts to; it is summed over the broadcast axes and reshaped back. */
void grad_accumulate(GradCtx *cx, Node *v, Node *d);

/* ---- Node builders (grad_rules.c), prefix ad_ ---------------------------
 * Each new node gets cx->loc, no name, and its type from its shape rule (a
 * rule that fails is an internal error naming the op). */

/* A node whose attributes the caller sets before ad_finish types it. */
Node *ad_new(GradCtx *cx, OpKind op, Node *const *in, int nin);
Node *ad_finish(Node *n);
Node *ad_op1(GradCtx *cx, OpKind op, Node *a);
Node *ad_op2(GradCtx *cx, OpKind op, Node *a, Node *b);
/* A const filled with v, of type t; ad_scalar: of rank 0. */
Node *ad_const(GradCtx *cx, double v, const Type *t);
Node *ad_scalar(GradCtx *cx, double v, DType dt);
/* a * v, a / v and pow(a, v) with v a number. */
Node *ad_scale(GradCtx *cx, Node *a, double v);
Node *ad_div_by(GradCtx *cx, Node *a, double v);
Node *ad_pow(GradCtx *cx, Node *a, double v);
Node *ad_sum(GradCtx *cx, Node *x, const int64_t *axes, int naxes, bool keepdim);
/* x itself when it already has type t. */
Node *ad_reshape(GradCtx *cx, Node *x, const Type *t);
Node *ad_broadcast(GradCtx *cx, Node *x, const Type *t);
Node *ad_permute(GradCtx *cx, Node *x, const int64_t *perm);
Node *ad_slice(GradCtx *cx, Node *x, const int64_t *begin, const int64_t *end);

/* ---- The rules ---------------------------------------------------------- */

typedef void GradRule(GradCtx *cx, Node *n, Node *dy);

/* grad_rules.c: elementwise ops and reductions. */
GradRule grad_neg, grad_relu, grad_sigmoid, grad_tanh, grad_exp, grad_log, grad_sqrt, grad_rsqrt,
    grad_abs, grad_gelu, grad_silu, grad_pow;
GradRule grad_add, grad_sub, grad_mul, grad_div, grad_maximum, grad_minimum;
GradRule grad_sum, grad_mean, grad_max, grad_softmax, grad_log_softmax;

/* grad_rules_nn.c: contractions, normalization, pooling, data movement,
 * the LSTM and the losses. */
GradRule grad_matmul, grad_conv2d, grad_layer_norm, grad_max_pool2d, grad_avg_pool2d;
GradRule grad_reshape, grad_permute, grad_slice, grad_concat, grad_embedding;
GradRule grad_lstm, grad_mse_loss, grad_cross_entropy, grad_bce_loss, grad_bce_with_logits;

#endif
