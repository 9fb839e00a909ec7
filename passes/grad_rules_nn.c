/* grad_rules_nn.c - gradient rules of contractions, layers, data movement and losses. */
#include "grad_rules.h"

/* A number as a scalar of v's dtype, for formulas. */
static Node *num(GradCtx *cx, const Node *v, double x) { return ad_scalar(cx, x, v->type.dtype); }

/* ---- Contractions ------------------------------------------------------- */

/* x with its last two dims swapped (a batch of transposes). */
static Node *swap_last2(GradCtx *cx, Node *x) {
  int64_t perm[IR_MAX_RANK];
  int r = x->type.rank;
  for (int d = 0; d < r; d++) perm[d] = d;
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return ad_permute(cx, x, perm);
}

/* x as a matrix: its leading dims flattened into rows. */
static Node *as_rows(GradCtx *cx, Node *x) {
  Type t = x->type;
  int64_t rows = ir_type_numel(&t) / t.dims[t.rank - 1];
  t.dims[0] = rows, t.dims[1] = x->type.dims[x->type.rank - 1], t.rank = 2;
  return ad_reshape(cx, x, &t);
}

/* Y = A B (batch dims broadcast);  dA = dY B^T, dB = A^T dY, each summed
 * back over the batch dims its operand was broadcast along. A matrix B under
 * a batch of A (a linear layer on [batch, seq, features]): dB as one product
 * over all rows, A^T dY with A and dY flattened to rows, never a batch of
 * products summed afterwards. */
void grad_matmul(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1];
  if (grad_needed(cx, a)) grad_accumulate(cx, a, ad_op2(cx, OP_MATMUL, dy, swap_last2(cx, b)));
  if (!grad_needed(cx, b)) return;
  if (b->type.rank == 2 && a->type.rank > 2)
    grad_accumulate(cx, b, ad_op2(cx, OP_MATMUL, swap_last2(cx, as_rows(cx, a)), as_rows(cx, dy)));
  else
    grad_accumulate(cx, b, ad_op2(cx, OP_MATMUL, swap_last2(cx, a), dy));
}

/* y = conv2d(x, w) + b;  dx = conv2d_grad_input(dy, w), dw = conv2d_grad_weight(x, dy),
 * db = sum of dy over batch, height and width */
void grad_conv2d(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *w = n->in[1];
  int64_t s = ir_attr_int(n, "stride"), p = ir_attr_int(n, "padding");
  if (grad_needed(cx, x)) {
    Node *dx = ad_new(cx, OP_CONV2D_GRAD_INPUT, (Node *[]){dy, w}, 2);
    ir_set_attr_int(dx, "stride", s);
    ir_set_attr_int(dx, "padding", p);
    ir_set_attr_int(dx, "height", x->type.dims[2]);
    ir_set_attr_int(dx, "width", x->type.dims[3]);
    grad_accumulate(cx, x, ad_finish(dx));
  }
  if (grad_needed(cx, w)) {
    Node *dw = ad_new(cx, OP_CONV2D_GRAD_WEIGHT, (Node *[]){x, dy}, 2);
    ir_set_attr_int(dw, "stride", s);
    ir_set_attr_int(dw, "padding", p);
    ir_set_attr_int(dw, "kernel_h", w->type.dims[2]);
    ir_set_attr_int(dw, "kernel_w", w->type.dims[3]);
    grad_accumulate(cx, w, ad_finish(dw));
  }
  if (n->nin == 3 && grad_needed(cx, n->in[2]))
    grad_accumulate(cx, n->in[2], ad_sum(cx, dy, (int64_t[]){0, 2, 3}, 3, false));
}

/* ---- layer_norm and pooling --------------------------------------------- */

/* y = xhat gamma + beta, xhat = (x - mean) / sqrt(var + eps) over the last dim;
 * dx = layer_norm_grad(x, gamma, dy), dgamma = sum over rows of dy xhat,
 * dbeta = sum over rows of dy; xhat is recomputed as layer_norm(x, 1, 0) */
void grad_layer_norm(GradCtx *cx, Node *n, Node *dy) {
  Node *x = n->in[0], *gamma = n->in[1], *beta = n->in[2];
  double eps = ir_attr_float(n, "eps");
  int64_t rows[IR_MAX_RANK];
  int nrows = x->type.rank - 1;
  for (int d = 0; d < nrows; d++) rows[d] = d;
  if (grad_needed(cx, x)) {
    Node *dx = ad_new(cx, OP_LAYER_NORM_GRAD, (Node *[]){x, gamma, dy}, 3);
    ir_set_attr_float(dx, "eps", eps);
    grad_accumulate(cx, x, ad_finish(dx));
  }
  if (grad_needed(cx, gamma)) {
    Node *one = ad_const(cx, 1, &gamma->type), *zero = ad_const(cx, 0, &gamma->type);
    Node *xhat = ad_new(cx, OP_LAYER_NORM, (Node *[]){x, one, zero}, 3);
    ir_set_attr_float(xhat, "eps", eps);
    Node *d = ad_op2(cx, OP_MUL, dy, ad_finish(xhat));
    grad_accumulate(cx, gamma, ad_sum(cx, d, rows, nrows, false));
  }
  if (grad_needed(cx, beta)) grad_accumulate(cx, beta, ad_sum(cx, dy, rows, nrows, false));
}

/* y = max over each k x k window of x;  dx = max_pool2d_grad(x, dy): each
 * dy to its window's first maximum, as PyTorch */
void grad_max_pool2d(GradCtx *cx, Node *n, Node *dy) {
  Node *dx = ad_new(cx, OP_MAX_POOL2D_GRAD, (Node *[]){n->in[0], dy}, 2);
  ir_set_attr_int(dx, "kernel", ir_attr_int(n, "kernel"));
  ir_set_attr_int(dx, "stride", ir_attr_int(n, "stride"));
  grad_accumulate(cx, n->in[0], ad_finish(dx));
}

/* y = mean over each k x k window of x;  dx = avg_pool2d_grad(dy): dy / k^2
 * to every element of its window */
void grad_avg_pool2d(GradCtx *cx, Node *n, Node *dy) {
  const Type *xt = &n->in[0]->type;
  Node *dx = ad_new(cx, OP_AVG_POOL2D_GRAD, &dy, 1);
  ir_set_attr_int(dx, "kernel", ir_attr_int(n, "kernel"));
  ir_set_attr_int(dx, "stride", ir_attr_int(n, "stride"));
  ir_set_attr_int(dx, "height", xt->dims[2]);
  ir_set_attr_int(dx, "width", xt->dims[3]);
  grad_accumulate(cx, n->in[0], ad_finish(dx));
}

/* ---- Data movement ------------------------------------------------------ */

/* y = reshape(x);  dx = reshape(dy) to x's shape */
void grad_reshape(GradCtx *cx, Node *n, Node *dy) {
  grad_accumulate(cx, n->in[0], ad_reshape(cx, dy, &n->in[0]->type));
}

/* y = permute(x, perm);  dx = permute(dy, perm^-1) */
void grad_permute(GradCtx *cx, Node *n, Node *dy) {
  const AttrVal *perm = ir_attr_c(n, "perm");
  int64_t inv[IR_MAX_RANK];
  for (int d = 0; d < perm->n; d++) inv[perm->i[d]] = d;
  grad_accumulate(cx, n->in[0], ad_permute(cx, dy, inv));
}

/* y = x[begin:end];  dx = dy padded with zeros back to x's shape */
void grad_slice(GradCtx *cx, Node *n, Node *dy) {
  const Type *xt = &n->in[0]->type;
  const AttrVal *begin = ir_attr_c(n, "begin"), *end = ir_attr_c(n, "end");
  int64_t after[IR_MAX_RANK];
  for (int d = 0; d < xt->rank; d++) after[d] = xt->dims[d] - end->i[d];
  Node *dx = ad_new(cx, OP_PAD, &dy, 1);
  ir_set_attr_ints(dx, "before", begin->i, xt->rank);
  ir_set_attr_ints(dx, "after", after, xt->rank);
  grad_accumulate(cx, n->in[0], ad_finish(dx));
}

/* y = concat(x_0, ..., x_k) along axis;  dx_i = the slice of dy where x_i went */
void grad_concat(GradCtx *cx, Node *n, Node *dy) {
  int64_t axis = ir_attr_int(n, "axis"), begin[IR_MAX_RANK] = {0}, end[IR_MAX_RANK];
  for (int d = 0; d < n->type.rank; d++) end[d] = n->type.dims[d];
  end[axis] = 0;
  for (int i = 0; i < n->nin; i++) {
    Node *x = n->in[i];
    begin[axis] = end[axis];
    end[axis] += x->type.dims[axis];
    if (grad_needed(cx, x)) grad_accumulate(cx, x, ad_slice(cx, dy, begin, end));
  }
}

/* y[p, :] = table[ids[p], :];  dtable = embedding_grad(ids, dy): scatter-add,
 * so repeated ids accumulate; the i32 ids have no gradient */
void grad_embedding(GradCtx *cx, Node *n, Node *dy) {
  Node *table = n->in[1];
  Node *d = ad_new(cx, OP_EMBEDDING_GRAD, (Node *[]){n->in[0], dy}, 2);
  ir_set_attr_int(d, "vocab", table->type.dims[0]);
  grad_accumulate(cx, table, ad_finish(d));
}

/* ---- lstm --------------------------------------------------------------- */

/* Elements [off, off + numel(v)) of the packed vector, shaped as v. */
static Node *unpack(GradCtx *cx, Node *packed, int64_t off, const Node *v) {
  int64_t end = off + ir_type_numel(&v->type);
  return ad_reshape(cx, ad_slice(cx, packed, &off, &end), &v->type);
}

/* h = lstm(x, W_ih, W_hh, b_ih, b_hh);  lstm_grad runs backward through time
 * once and packs [dx | dW_ih | dW_hh | db]; db is both biases' gradient */
void grad_lstm(GradCtx *cx, Node *n, Node *dy) {
  Node *packed = ad_finish(ad_new(
      cx, OP_LSTM_GRAD, (Node *[]){n->in[0], n->in[1], n->in[2], n->in[3], n->in[4], dy}, 6));
  int64_t off = 0;
  for (int i = 0; i < 3; i++) {
    if (grad_needed(cx, n->in[i])) grad_accumulate(cx, n->in[i], unpack(cx, packed, off, n->in[i]));
    off += ir_type_numel(&n->in[i]->type);
  }
  if (!grad_needed(cx, n->in[3]) && !grad_needed(cx, n->in[4])) return;
  Node *db = unpack(cx, packed, off, n->in[3]);
  grad_accumulate(cx, n->in[3], db);
  grad_accumulate(cx, n->in[4], db);
}

/* ---- Losses: a mean over m elements, dy a scalar --------------------------- */

/* dy / m as a scalar node. */
static Node *per_element(GradCtx *cx, Node *dy, const Type *t) {
  return ad_div_by(cx, dy, (double)ir_type_numel(t));
}

/* y = sum (a - b)^2 / m over the broadcast shape;  da = (a - b) (2 / m) dy,
 * db = -da (each summed back to its operand's shape) */
void grad_mse_loss(GradCtx *cx, Node *n, Node *dy) {
  Node *a = n->in[0], *b = n->in[1], *diff = ad_op2(cx, OP_SUB, a, b);
  Node *da = ad_op2(cx, OP_MUL, diff, ad_scale(cx, dy, 2.0 / (double)ir_type_numel(&diff->type)));
  grad_accumulate(cx, a, da);
  if (grad_needed(cx, b)) grad_accumulate(cx, b, ad_op1(cx, OP_NEG, da));
}

/* y = mean_p (logsumexp(z_p) - z_p[label_p]);  dz = cross_entropy_grad(z, labels, dy)
 * = (softmax(z) - onehot(labels)) dy / P, fused; labels have no gradient */
void grad_cross_entropy(GradCtx *cx, Node *n, Node *dy) {
  Node *d = ad_new(cx, OP_CROSS_ENTROPY_GRAD, (Node *[]){n->in[0], n->in[1], dy}, 3);
  grad_accumulate(cx, n->in[0], ad_finish(d));
}

/* y = mean(-(t log p + (1 - t) log(1 - p)));  as PyTorch,
 * dp = (p - t) / max(p (1 - p), 1e-12) dy / m,  dt = (log(1 - p) - log p) dy / m */
void grad_bce_loss(GradCtx *cx, Node *n, Node *dy) {
  Node *p = n->in[0], *t = n->in[1], *s = per_element(cx, dy, &p->type);
  Node *q = ad_op2(cx, OP_SUB, num(cx, p, 1), p);
  if (grad_needed(cx, p)) {
    Node *den = ad_op2(cx, OP_MAXIMUM, ad_op2(cx, OP_MUL, p, q), num(cx, p, 1e-12));
    Node *d = ad_op2(cx, OP_DIV, ad_op2(cx, OP_SUB, p, t), den);
    grad_accumulate(cx, p, ad_op2(cx, OP_MUL, d, s));
  }
  if (grad_needed(cx, t)) {
    Node *d = ad_op2(cx, OP_SUB, ad_op1(cx, OP_LOG, q), ad_op1(cx, OP_LOG, p));
    grad_accumulate(cx, t, ad_op2(cx, OP_MUL, d, s));
  }
}

/* y = mean(max(z, 0) - z t + log(1 + e^-|z|));  dz = (sigmoid(z) - t) dy / m,
 * dt = -z dy / m */
void grad_bce_with_logits(GradCtx *cx, Node *n, Node *dy) {
  Node *z = n->in[0], *t = n->in[1], *s = per_element(cx, dy, &z->type);
  if (grad_needed(cx, z)) {
    Node *d = ad_op2(cx, OP_SUB, ad_op1(cx, OP_SIGMOID, z), t);
    grad_accumulate(cx, z, ad_op2(cx, OP_MUL, d, s));
  }
  if (grad_needed(cx, t)) grad_accumulate(cx, t, ad_op2(cx, OP_MUL, ad_op1(cx, OP_NEG, z), s));
}
