/* grad_rules.c - gradient rules of elementwise ops and reductions, and the node builders. */
#include "grad_rules.h"

/* ---- Node builders ------------------------------------------------------ */

Node *ad_new(GradCtx *cx, OpKind op, Node *const *in, int nin) {
  return ir_node_new(cx->g, op, in, nin, cx->loc);
}

Node *ad_finish(Node *n) {
  char msg[256];
  IR_ASSERT(ir_infer_type(n, msg, sizeof msg), "autodiff: %s node %d has no valid type: %s",
            ir_op_name(n->op), n->id, msg);
  return n;
}

Node *ad_op1(GradCtx *cx, OpKind op, Node *a) { return ad_finish(ad_new(cx, op, &a, 1)); }

Node *ad_op2(GradCtx *cx, OpKind op, Node *a, Node *b) {
  return ad_finish(ad_new(cx, op, (Node *[]){a, b}, 2));
}

Node *ad_const(GradCtx *cx, double v, const Type *t) {
  Node *n = ad_new(cx, OP_CONST, NULL, 0);
  n->type = *t;
  ir_set_attr_float(n, "value", v);
  return ad_finish(n);
}

Node *ad_scalar(GradCtx *cx, double v, DType dt) {
  Type t = ir_type(dt, 0, NULL);
  return ad_const(cx, v, &t);
}

Node *ad_scale(GradCtx *cx, Node *a, double v) {
  return ad_op2(cx, OP_MUL, a, ad_scalar(cx, v, a->type.dtype));
}

Node *ad_div_by(GradCtx *cx, Node *a, double v) {
  return ad_op2(cx, OP_DIV, a, ad_scalar(cx, v, a->type.dtype));
}

Node *ad_pow(GradCtx *cx, Node *a, double v) {
  Node *n = ad_new(cx, OP_POW, &a, 1);
  ir_set_attr_float(n, "exponent", v);
  return ad_finish(n);
}

Node *ad_sum(GradCtx *cx, Node *x, const int64_t *axes, int naxes, bool keepdim) {
  Node *n = ad_new(cx, OP_SUM, &x, 1);
  ir_set_attr_ints(n, "axes", axes, naxes);
  ir_set_attr_int(n, "keepdim", keepdim);
  return ad_finish(n);
}

Node *ad_reshape(GradCtx *cx, Node *x, const Type *t) {
  if (ir_type_eq(&x->type, t)) return x;
  Node *n = ad_new(cx, OP_RESHAPE, &x, 1);
  n->type = *t;
  return ad_finish(n);
}

Node *ad_broadcast(GradCtx *cx, Node *x, const Type *t) {
  if (ir_type_eq(&x->type, t)) return x;
  Node *n = ad_new(cx, OP_BROADCAST, &x, 1);
  ir_set_attr_ints(n, "shape", t->dims, t->rank);
  return ad_finish(n);
}

Node *ad_permute(GradCtx *cx, Node *x, const int64_t *perm) {
  Node *n = ad_new(cx, OP_PERMUTE, &x, 1);
  ir_set_attr_ints(n, "perm", perm, x->type.rank);
  return ad_finish(n);
}

Node *ad_slice(GradCtx *cx, Node *x, const int64_t *begin, const int64_t *end) {
  Node *n = ad_new(cx, OP_SLICE, &x, 1);
  ir_set_attr_ints(n, "begin", begin, x->type.rank);
  ir_set_attr_ints(n, "end", end, x->type.rank);
  return ad_finish(n);
}

/* A number as a scalar of v's dtype, for formulas. */
static Node *num(GradCtx *cx, const Node *v, double x) { return ad_scalar(cx, x, v->type.dtype); }

/* ---- Elementwise, one input ----------------------------------------------
 * y = f(x), dx = dy f'(x), written with y where PyTorch uses the result. */

/* y = -x;  dx = -dy */
void grad_neg(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_op1(cx, OP_NEG, dy));
}

/* y = max(x, 0);  dx = dy [y > 0]  (0 at x == 0; y > 0 exactly when x > 0,
 * NaN included). From the result, as PyTorch's threshold_backward: x need
 * not stay alive until the backward pass. */
void grad_relu(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_MUL, dy, ad_op2(cx, OP_GREATER, n, num(cx, n, 0))));
}

/* y = 1 / (1 + e^-x);  dx = dy y (1 - y) */
void grad_sigmoid(GradCtx *cx, Node *n, Node *dy) {
  Node *d = ad_op2(cx, OP_MUL, n, ad_op2(cx, OP_SUB, num(cx, n, 1), n));
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_MUL, dy, d));
}

/* y = tanh x;  dx = dy (1 - y^2) */
void grad_tanh(GradCtx *cx, Node *n, Node *dy) {
  Node *d = ad_op2(cx, OP_SUB, num(cx, n, 1), ad_op2(cx, OP_MUL, n, n));
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_MUL, dy, d));
}

/* y = e^x;  dx = dy y */
void grad_exp(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_MUL, dy, n));
}

/* y = ln x;  dx = dy / x */
void grad_log(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_DIV, dy, n->in[0]));
}

/* y = sqrt x;  dx = dy / (2 y) */
void grad_sqrt(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_DIV, dy, ad_scale(cx, n, 2)));
}

/* y = 1 / sqrt x;  dx = dy (-y^3 / 2) */
void grad_rsqrt(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_MUL, dy, ad_scale(cx, ad_pow(cx, n, 3), -0.5)));
}

/* y = |x|;  dx = dy sign(x), sign(x) = [x > 0] - [x < 0]  (0 at 0, as torch.sign) */
void grad_abs(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *zero = num(cx, x, 0);
  Node *sign = ad_op2(cx, OP_SUB, ad_op2(cx, OP_GREATER, x, zero), ad_op2(cx, OP_GREATER, zero, x));
  grad_accumulate(cx, x, ad_op2(cx, OP_MUL, dy, sign));
}

/* y = x Phi(x);  dx = dy (Phi(x) + x phi(x)): the gelu_grad op (exact erf form) */
void grad_gelu(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_GELU_GRAD, n->in[0], dy));
}

/* y = x s, s = sigmoid(x);  dx = dy s (1 + x (1 - s)) */
void grad_silu(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *s = ad_op1(cx, OP_SIGMOID, x), *one = num(cx, x, 1);
  Node *inner = ad_op2(cx, OP_ADD, one, ad_op2(cx, OP_MUL, x, ad_op2(cx, OP_SUB, one, s)));
  grad_accumulate(cx, x, ad_op2(cx, OP_MUL, dy, ad_op2(cx, OP_MUL, s, inner)));
}

/* y = x^c;  dx = dy c x^(c-1), and 0 for c = 0 (PyTorch masks it) */
void grad_pow(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0];
  double c = ir_attr_float(n, "exponent");
  if (c == 0) return;
  Node *d = c == 1 ? NULL : c == 2 ? ad_scale(cx, x, 2) : ad_scale(cx, ad_pow(cx, x, c - 1), c);
  grad_accumulate(cx, x, d ? ad_op2(cx, OP_MUL, dy, d) : dy);
}

/* ---- Elementwise, two inputs ---------------------------------------------
 * Contributions have the broadcast shape; grad_accumulate sums them back. */

/* y = a + b;  da = dy, db = dy */
void grad_add(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], dy);
  grad_accumulate(cx, n->in[1], dy);
}

/* y = a - b;  da = dy, db = -dy */
void grad_sub(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], dy);
  if (grad_needed(cx, n->in[1])) grad_accumulate(cx, n->in[1], ad_op1(cx, OP_NEG, dy));
}

/* y = a b;  da = dy b, db = dy a */
void grad_mul(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1];
  if (grad_needed(cx, a)) grad_accumulate(cx, a, ad_op2(cx, OP_MUL, dy, b));
  if (grad_needed(cx, b)) grad_accumulate(cx, b, ad_op2(cx, OP_MUL, dy, a));
}

/* y = a / b;  da = dy / b, db = -dy y / b */
void grad_div(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1];
  if (grad_needed(cx, a)) grad_accumulate(cx, a, ad_op2(cx, OP_DIV, dy, b));
  if (grad_needed(cx, b)) {
    Node *d = ad_op2(cx, OP_MUL, dy, ad_op2(cx, OP_DIV, n, b));
    grad_accumulate(cx, b, ad_op1(cx, OP_NEG, d));
  }
}

/* The share of dy for the operand that wins where win > lose: 1 there, 1/2
 * on a tie (half = [a == b] / 2), 0 where it loses. */
static void grad_share(GradCtx *cx, Node *v, Node *win, Node *lose, Node *half, Node *dy) {
  if (!grad_needed(cx, v)) return;
  Node *share = ad_op2(cx, OP_ADD, ad_op2(cx, OP_GREATER, win, lose), half);
  grad_accumulate(cx, v, ad_op2(cx, OP_MUL, dy, share));
}

/* y = max(a, b);  da = dy ([a > b] + [a == b] / 2), db = dy ([b > a] + [a == b] / 2):
 * a tie splits the gradient evenly, as torch.maximum */
void grad_maximum(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1], *half = ad_scale(cx, ad_op2(cx, OP_EQUAL, a, b), 0.5);
  grad_share(cx, a, a, b, half, dy);
  grad_share(cx, b, b, a, half, dy);
}

/* y = min(a, b);  da = dy ([a < b] + [a == b] / 2), db = dy ([b < a] + [a == b] / 2) */
void grad_minimum(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1], *half = ad_scale(cx, ad_op2(cx, OP_EQUAL, a, b), 0.5);
  grad_share(cx, a, b, a, half, dy);
  grad_share(cx, b, a, b, half, dy);
}

/* ---- Reductions --------------------------------------------------------- */

/* The type of a reduction's result with keepdim: x's with the axes at 1. */
static Type kept_type(const Node *n) {
  Type t = n->in[0]->type;
  t.dtype = n->type.dtype;
  const AttrVal *axes = ir_attr_c(n, "axes");
  for (int k = 0; k < axes->n; k++) t.dims[axes->i[k]] = 1;
  return t;
}

/* y = sum over axes of x;  dx = dy broadcast back along the axes */
void grad_sum(GradCtx *cx, Node *n, Node *dy) {
  Type kept = kept_type(n);
  Node *x = n->in[0];
  grad_accumulate(cx, x, ad_broadcast(cx, ad_reshape(cx, dy, &kept), &x->type));
}

/* y = sum over axes of x / m, m their element count;  dx = dy / m broadcast back */
void grad_mean(GradCtx *cx, Node *n, Node *dy) {
  Type kept = kept_type(n);
  Node *x = n->in[0];
  int64_t m = ir_type_numel(&x->type) / ir_type_numel(&n->type);
  Node *d = m == 1 ? dy : ad_div_by(cx, dy, (double)m);
  grad_accumulate(cx, x, ad_broadcast(cx, ad_reshape(cx, d, &kept), &x->type));
}

/* y = amax over axes of x;  mask = [x == y], dx = mask dy / (sum of mask over
 * the axes): ties share the gradient evenly, as torch.amax */
void grad_max(GradCtx *cx, Node *n, Node *dy) {
  Type kept = kept_type(n);
  Node *x = n->in[0];
  const AttrVal *axes = ir_attr_c(n, "axes");
  Node *mask = ad_op2(cx, OP_EQUAL, x, ad_reshape(cx, n, &kept));
  Node *count = ad_sum(cx, mask, axes->i, axes->n, true);
  Node *share = ad_op2(cx, OP_DIV, ad_reshape(cx, dy, &kept), count);
  grad_accumulate(cx, x, ad_op2(cx, OP_MUL, mask, share));
}

/* y = softmax(x) along axis;  dx = y (dy - sum(dy y) along axis) */
void grad_softmax(GradCtx *cx, Node *n, Node *dy) {
  int64_t axis = ir_attr_int(n, "axis");
  Node *dot = ad_sum(cx, ad_op2(cx, OP_MUL, dy, n), &axis, 1, true);
  grad_accumulate(cx, n->in[0], ad_op2(cx, OP_MUL, n, ad_op2(cx, OP_SUB, dy, dot)));
}

/* y = log_softmax(x) along axis;  dx = dy - e^y sum(dy) along axis */
void grad_log_softmax(GradCtx *cx, Node *n, Node *dy) {
  int64_t axis = ir_attr_int(n, "axis");
  Node *total = ad_sum(cx, dy, &axis, 1, true);
  Node *d = ad_op2(cx, OP_SUB, dy, ad_op2(cx, OP_MUL, ad_op1(cx, OP_EXP, n), total));
  grad_accumulate(cx, n->in[0], d);
}
