/* shape.c - the shape rule of every op: output types from input types and attributes. */
#include "ir.h"

#include <stdarg.h>
#include <string.h>

/* A rule sets n->type only on success; on a user error it writes a message
 * naming the op and the shapes involved and returns false. */
typedef bool ShapeFn(Node *n, char *msg, size_t len);

/* Redundant declarations of a static function are legal C, so expanding the
 * table declares every rule it names (the same rule may appear many times). */
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  static ShapeFn shape;
#include "ops.def"
#undef OP

static ShapeFn *const shape_rules[OP_COUNT] = {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  [OP_##NAME] = shape,
#include "ops.def"
#undef OP
};

/* ---- Helpers ------------------------------------------------------------ */

static bool fail(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *msg, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (len) vsnprintf(msg, len, fmt, ap);
  va_end(ap);
  return false;
}

/* A type's spelling as a value: C11 keeps the returned struct alive to the
 * end of the full expression, so TS(t) can be passed straight to fail(). */
typedef struct TStr {
  char s[IR_TYPE_STR_MAX];
} TStr;
static TStr tstr(const Type *t) {
  TStr r;
  ir_type_str(t, r.s, sizeof r.s);
  return r;
}
#define TS(t) (tstr(&(t)).s)

typedef struct IStr {
  char s[IR_MAX_ATTR_LEN * 24 + 3];
} IStr;
/* An ints attribute as "[1,0,2]". */
static IStr istr(const AttrVal *a) {
  IStr r;
  size_t used = 0;
  r.s[used++] = '[';
  for (int i = 0; i < a->n && i < IR_MAX_ATTR_LEN; i++)
    used +=
        (size_t)snprintf(r.s + used, sizeof r.s - used, "%s%lld", i ? "," : "", (long long)a->i[i]);
  snprintf(r.s + used, sizeof r.s - used, "]");
  return r;
}

static const char *op_name(const Node *n) { return ir_op_name(n->op); }
static const Type *in_type(const Node *n, int i) { return &n->in[i]->type; }

/* Element count of t, or -1 when it exceeds IR_MAX_NUMEL (checked before
 * every multiplication, so nothing overflows). Dims must be >= 1. */
static int64_t checked_numel(const Type *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (t->dims[i] > IR_MAX_NUMEL / n) return -1;
    n *= t->dims[i];
  }
  return n;
}

/* Rank, dims >= 1 and element count of a type the builder set. */
static bool check_type(const char *what, const Type *t, char *msg, size_t len) {
  if ((unsigned)t->dtype >= DT_COUNT) return fail(msg, len, "%s: invalid dtype", what);
  if (t->rank < 0 || t->rank > IR_MAX_RANK)
    return fail(msg, len, "%s: rank %d is out of range 0..%d", what, t->rank, IR_MAX_RANK);
  for (int i = 0; i < t->rank; i++)
    if (t->dims[i] < 1)
      return fail(msg, len, "%s: dim %d of %s is %lld; every dim must be >= 1", what, i, TS(*t),
                  (long long)t->dims[i]);
  if (checked_numel(t) < 0)
    return fail(msg, len, "%s: %s has more than %lld elements", what, TS(*t),
                (long long)IR_MAX_NUMEL);
  return true;
}

static bool need_float(const Node *n, int i, char *msg, size_t len) {
  if (ir_dtype_is_float(in_type(n, i)->dtype)) return true;
  return fail(msg, len, "%s expects a float tensor, got %s", op_name(n), TS(*in_type(n, i)));
}

static bool need_rank(const Node *n, int i, int rank, const char *what, char *msg, size_t len) {
  if (in_type(n, i)->rank == rank) return true;
  return fail(msg, len, "%s: %s must have rank %d, got %s", op_name(n), what, rank,
              TS(*in_type(n, i)));
}

/* Every input float, all of input 0's dtype. */
static bool need_floats_alike(const Node *n, char *msg, size_t len) {
  for (int i = 0; i < n->nin; i++) {
    if (!need_float(n, i, msg, len)) return false;
    if (in_type(n, i)->dtype != in_type(n, 0)->dtype)
      return fail(msg, len, "%s: mismatched dtypes: %s and %s", op_name(n), TS(*in_type(n, 0)),
                  TS(*in_type(n, i)));
  }
  return true;
}

static Type scalar_of(DType dt) { return ir_type(dt, 0, NULL); }

/* ---- Broadcasting ------------------------------------------------------- */

bool ir_broadcast(const Type *a, const Type *b, Type *out) {
  int rank = a->rank > b->rank ? a->rank : b->rank;
  Type r = {.dtype = a->dtype, .rank = rank};
  for (int i = 0; i < rank; i++) {
    int ia = a->rank - rank + i, ib = b->rank - rank + i;
    int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    r.dims[i] = da == 1 ? db : da;
  }
  *out = r;
  return true;
}

/* ---- Sources ------------------------------------------------------------ */

static bool shape_given(Node *n, char *msg, size_t len) {
  char what[96];
  snprintf(what, sizeof what, "%s%s%s", op_name(n), n->name ? " " : "", n->name ? n->name : "");
  if (!check_type(what, &n->type, msg, len)) return false;
  /* Parameters are trained and constants are fill values: both float. */
  if ((n->op == OP_PARAM || n->op == OP_CONST) && !ir_dtype_is_float(n->type.dtype))
    return fail(msg, len, "%s must be a float tensor, got %s", what, TS(n->type));
  return true;
}

static bool shape_causal_mask(Node *n, char *msg, size_t len) {
  if (!check_type("causal_mask", &n->type, msg, len)) return false;
  const Type *t = &n->type;
  /* f32 as built; f64 once a graph is promoted for gradient checks. */
  if (!ir_dtype_is_float(t->dtype) || t->rank != 2 || t->dims[0] != t->dims[1])
    return fail(msg, len, "causal_mask: expected f32[n,n], got %s", TS(*t));
  return true;
}

/* ---- Elementwise -------------------------------------------------------- */

static bool shape_unary_float(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len)) return false;
  n->type = *in_type(n, 0);
  return true;
}

static bool shape_broadcast(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len)) return false;
  Type out;
  if (!ir_broadcast(in_type(n, 0), in_type(n, 1), &out))
    return fail(msg, len, "%s: cannot broadcast %s with %s", op_name(n), TS(*in_type(n, 0)),
                TS(*in_type(n, 1)));
  n->type = out;
  return true;
}

/* ---- Contractions ------------------------------------------------------- */

/* torch.matmul for rank >= 2: [..., m, k] @ [..., k, n] -> [..., m, n]. */
static bool shape_matmul(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len)) return false;
  const Type *a = in_type(n, 0), *b = in_type(n, 1);
  if (a->rank < 2 || b->rank < 2)
    return fail(msg, len, "matmul: operands must have rank >= 2: %s @ %s", TS(*a), TS(*b));
  if (a->dims[a->rank - 1] != b->dims[b->rank - 2])
    return fail(msg, len, "matmul: inner dimensions differ: %s @ %s", TS(*a), TS(*b));
  Type ba = *a, bb = *b, out;
  ba.rank -= 2;
  bb.rank -= 2;
  if (!ir_broadcast(&ba, &bb, &out))
    return fail(msg, len, "matmul: cannot broadcast batch dimensions: %s @ %s", TS(*a), TS(*b));
  out.dims[out.rank++] = a->dims[a->rank - 2];
  out.dims[out.rank++] = b->dims[b->rank - 1];
  n->type = out;
  return true;
}

/* Output length of a window of size k sliding by stride over d padded by p
 * on both sides, or 0 when it does not fit. */
static int64_t window_out(int64_t d, int64_t k, int64_t stride, int64_t pad) {
  int64_t padded = d + 2 * pad; /* pad and d are bounded by the callers */
  return padded < k ? 0 : (padded - k) / stride + 1;
}

/* Attributes far beyond any tensor size would only overflow the arithmetic. */
static bool attr_in(const Node *n, const char *name, int64_t lo, char *msg, size_t len) {
  int64_t v = ir_attr_int(n, name);
  if (v >= lo && v <= IR_MAX_NUMEL) return true;
  return fail(msg, len, "%s: %s must be >= %lld, got %lld", op_name(n), name, (long long)lo,
              (long long)v);
}

static bool conv2d_operands(const Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len) || !need_rank(n, 0, 4, "input", msg, len) ||
      !need_rank(n, 1, 4, "weight", msg, len))
    return false;
  const Type *x = in_type(n, 0), *w = in_type(n, 1);
  if (w->dims[1] != x->dims[1])
    return fail(msg, len, "conv2d: weight %s expects %lld input channels, input %s has %lld",
                TS(*w), (long long)w->dims[1], TS(*x), (long long)x->dims[1]);
  if (n->nin == 3) {
    const Type *b = in_type(n, 2);
    if (b->rank != 1 || b->dims[0] != w->dims[0])
      return fail(msg, len, "conv2d: bias %s does not match weight %s (expected [%lld])", TS(*b),
                  TS(*w), (long long)w->dims[0]);
  }
  return true;
}

/* F.conv2d, NCHW: x [N,Cin,H,W], w [Cout,Cin,kh,kw], b [Cout]. */
static bool shape_conv2d(Node *n, char *msg, size_t len) {
  if (!conv2d_operands(n, msg, len) || !attr_in(n, "stride", 1, msg, len) ||
      !attr_in(n, "padding", 0, msg, len))
    return false;
  const Type *x = in_type(n, 0), *w = in_type(n, 1);
  int64_t s = ir_attr_int(n, "stride"), p = ir_attr_int(n, "padding");
  int64_t ho = window_out(x->dims[2], w->dims[2], s, p);
  int64_t wo = window_out(x->dims[3], w->dims[3], s, p);
  if (ho < 1 || wo < 1)
    return fail(msg, len, "conv2d: kernel %lldx%lld does not fit input %s with padding %lld",
                (long long)w->dims[2], (long long)w->dims[3], TS(*x), (long long)p);
  n->type = ir_type(x->dtype, 4, (int64_t[]){x->dims[0], w->dims[0], ho, wo});
  return true;
}

/* ---- Reductions --------------------------------------------------------- */

static bool check_axes(const Node *n, const AttrVal *axes, char *msg, size_t len) {
  const Type *x = in_type(n, 0);
  for (int i = 0; i < axes->n; i++) {
    if (axes->i[i] < 0 || axes->i[i] >= x->rank)
      return fail(msg, len, "%s: axis %lld is out of range for %s", op_name(n),
                  (long long)axes->i[i], TS(*x));
    if (i > 0 && axes->i[i] <= axes->i[i - 1])
      return fail(msg, len, "%s: axes %s must be strictly increasing", op_name(n), istr(axes).s);
  }
  return true;
}

/* torch.sum/mean/amax(x, dim=axes, keepdim): axes normalized, sorted, unique. */
static bool shape_reduce(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len)) return false;
  const AttrVal *axes = ir_attr_c(n, "axes");
  int64_t keep = ir_attr_int(n, "keepdim");
  if (!check_axes(n, axes, msg, len)) return false;
  if (keep != 0 && keep != 1)
    return fail(msg, len, "%s: keepdim must be 0 or 1, got %lld", op_name(n), (long long)keep);
  const Type *x = in_type(n, 0);
  Type out = {.dtype = x->dtype};
  for (int d = 0, k = 0; d < x->rank; d++) {
    bool reduced = k < axes->n && axes->i[k] == d;
    k += reduced;
    if (!reduced)
      out.dims[out.rank++] = x->dims[d];
    else if (keep)
      out.dims[out.rank++] = 1;
  }
  n->type = out;
  return true;
}

static bool need_axis(const Node *n, int64_t axis, char *msg, size_t len) {
  const Type *x = in_type(n, 0);
  if (x->rank >= 1 && axis >= 0 && axis < x->rank) return true;
  return fail(msg, len, "%s: axis %lld is out of range for %s", op_name(n), (long long)axis,
              TS(*x));
}

/* softmax and log_softmax along one axis: the shape is unchanged. */
static bool shape_axis_same(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len) || !need_axis(n, ir_attr_int(n, "axis"), msg, len)) return false;
  n->type = *in_type(n, 0);
  return true;
}

/* F.layer_norm over the last dim: x [..., D], gamma [D], beta [D]. */
static bool shape_layer_norm(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len)) return false;
  const Type *x = in_type(n, 0);
  if (x->rank < 1) return fail(msg, len, "layer_norm: input must have rank >= 1, got %s", TS(*x));
  int64_t d = x->dims[x->rank - 1];
  for (int i = 1; i <= 2; i++) {
    const Type *p = in_type(n, i);
    if (p->rank != 1 || p->dims[0] != d)
      return fail(msg, len, "layer_norm: %s %s does not match input %s (expected [%lld])",
                  i == 1 ? "gamma" : "beta", TS(*p), TS(*x), (long long)d);
  }
  double eps = ir_attr_float(n, "eps");
  if (!(eps > 0)) return fail(msg, len, "layer_norm: eps must be > 0, got %g", eps);
  n->type = *x;
  return true;
}

/* F.max_pool2d / F.avg_pool2d on NCHW, no padding: floor((H - k) / s) + 1. */
static bool shape_pool2d(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len) || !need_rank(n, 0, 4, "input", msg, len) ||
      !attr_in(n, "kernel", 1, msg, len) || !attr_in(n, "stride", 1, msg, len))
    return false;
  const Type *x = in_type(n, 0);
  int64_t k = ir_attr_int(n, "kernel"), s = ir_attr_int(n, "stride");
  int64_t ho = window_out(x->dims[2], k, s, 0), wo = window_out(x->dims[3], k, s, 0);
  if (ho < 1 || wo < 1)
    return fail(msg, len, "%s: kernel %lld does not fit input %s", op_name(n), (long long)k,
                TS(*x));
  n->type = ir_type(x->dtype, 4, (int64_t[]){x->dims[0], x->dims[1], ho, wo});
  return true;
}

/* ---- Data movement ------------------------------------------------------ */

/* The builder set the target type; it must hold the same elements. */
static bool shape_reshape(Node *n, char *msg, size_t len) {
  if (!check_type("reshape", &n->type, msg, len)) return false;
  const Type *x = in_type(n, 0);
  if (n->type.dtype != x->dtype)
    return fail(msg, len, "reshape: cannot change the dtype of %s to %s", TS(*x), TS(n->type));
  int64_t a = checked_numel(x), b = checked_numel(&n->type);
  if (a != b)
    return fail(msg, len, "cannot reshape %s (%lld elements) into %s (%lld elements)", TS(*x),
                (long long)a, TS(n->type), (long long)b);
  return true;
}

static bool shape_permute(Node *n, char *msg, size_t len) {
  const Type *x = in_type(n, 0);
  const AttrVal *perm = ir_attr_c(n, "perm");
  bool seen[IR_MAX_RANK] = {false};
  bool ok = perm->n == x->rank;
  for (int i = 0; ok && i < perm->n; i++) {
    ok = perm->i[i] >= 0 && perm->i[i] < x->rank && !seen[perm->i[i]];
    if (ok) seen[perm->i[i]] = true;
  }
  if (!ok)
    return fail(msg, len, "permute: %s is not a permutation of the dims of %s", istr(perm).s,
                TS(*x));
  Type out = *x;
  for (int i = 0; i < x->rank; i++) out.dims[i] = x->dims[perm->i[i]];
  n->type = out;
  return true;
}

/* Normalized basic slicing with step 1, one [begin, end) per dim. */
static bool shape_slice(Node *n, char *msg, size_t len) {
  const Type *x = in_type(n, 0);
  const AttrVal *b = ir_attr_c(n, "begin"), *e = ir_attr_c(n, "end");
  if (b->n != x->rank || e->n != x->rank)
    return fail(msg, len, "slice: begin %s and end %s need one entry per dim of %s", istr(b).s,
                istr(e).s, TS(*x));
  Type out = *x;
  for (int i = 0; i < x->rank; i++) {
    if (b->i[i] < 0 || b->i[i] >= e->i[i] || e->i[i] > x->dims[i])
      return fail(msg, len, "slice: [%lld:%lld] is out of range for dim %d of %s",
                  (long long)b->i[i], (long long)e->i[i], i, TS(*x));
    out.dims[i] = e->i[i] - b->i[i];
  }
  n->type = out;
  return true;
}

/* torch.cat: equal dtype, rank and dims except along axis. */
static bool shape_concat(Node *n, char *msg, size_t len) {
  const Type *x = in_type(n, 0);
  int64_t axis = ir_attr_int(n, "axis");
  if (!need_axis(n, axis, msg, len)) return false;
  Type out = *x;
  for (int i = 1; i < n->nin; i++) {
    const Type *t = in_type(n, i);
    bool ok = t->dtype == x->dtype && t->rank == x->rank;
    for (int d = 0; ok && d < x->rank; d++) ok = d == axis || t->dims[d] == x->dims[d];
    if (!ok)
      return fail(msg, len, "concat: cannot concatenate %s and %s along axis %lld", TS(*x), TS(*t),
                  (long long)axis);
    out.dims[axis] += t->dims[axis];          /* both <= IR_MAX_NUMEL: cannot overflow */
    if (out.dims[axis] > IR_MAX_NUMEL) break; /* the result check reports it */
  }
  n->type = out;
  return true;
}

/* F.embedding: ids i32 [...], table [V, D] -> [..., D]. */
static bool shape_embedding(Node *n, char *msg, size_t len) {
  const Type *ids = in_type(n, 0), *table = in_type(n, 1);
  if (ids->dtype != DT_I32 || ids->rank > IR_MAX_RANK - 1)
    return fail(msg, len, "embedding: ids must be i32 of rank 0..%d, got %s", IR_MAX_RANK - 1,
                TS(*ids));
  if (!ir_dtype_is_float(table->dtype) || table->rank != 2)
    return fail(msg, len, "embedding: table must be a float [V,D] tensor, got %s", TS(*table));
  Type out = *ids;
  out.dtype = table->dtype;
  out.dims[out.rank++] = table->dims[1];
  n->type = out;
  return true;
}

/* ---- Special ops -------------------------------------------------------- */

/* Checks that input i has the given dims (rank = count). */
static bool lstm_operand(const Node *n, int i, const char *name, const int64_t *dims, int rank,
                         char *msg, size_t len) {
  Type want = ir_type(in_type(n, 0)->dtype, rank, dims);
  if (ir_type_eq(in_type(n, i), &want)) return true;
  return fail(msg, len, "lstm: %s %s does not match input %s (expected %s)", name,
              TS(*in_type(n, i)), TS(*in_type(n, 0)), TS(want));
}

/* One-layer nn.LSTM(batch_first=True): x [B,T,I], w_ih [4H,I], w_hh [4H,H],
 * b_ih [4H], b_hh [4H] -> [B,T,H]. */
static bool shape_lstm(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len) || !need_rank(n, 0, 3, "input", msg, len)) return false;
  const Type *x = in_type(n, 0), *wih = in_type(n, 1);
  if (wih->rank != 2 || wih->dims[0] % 4 != 0)
    return fail(msg, len, "lstm: w_ih %s must be [4H,I]", TS(*wih));
  int64_t h4 = wih->dims[0], h = h4 / 4;
  if (!lstm_operand(n, 1, "w_ih", (int64_t[]){h4, x->dims[2]}, 2, msg, len) ||
      !lstm_operand(n, 2, "w_hh", (int64_t[]){h4, h}, 2, msg, len) ||
      !lstm_operand(n, 3, "b_ih", (int64_t[]){h4}, 1, msg, len) ||
      !lstm_operand(n, 4, "b_hh", (int64_t[]){h4}, 1, msg, len))
    return false;
  n->type = ir_type(x->dtype, 3, (int64_t[]){x->dims[0], x->dims[1], h});
  return true;
}

/* ---- Losses: a scalar mean ---------------------------------------------- */

/* F.mse_loss broadcasts its operands, as PyTorch does (with a warning). */
static bool shape_mse_loss(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len)) return false;
  Type out;
  if (!ir_broadcast(in_type(n, 0), in_type(n, 1), &out) || checked_numel(&out) < 0)
    return fail(msg, len, "mse_loss: cannot broadcast %s with %s", TS(*in_type(n, 0)),
                TS(*in_type(n, 1)));
  n->type = scalar_of(out.dtype);
  return true;
}

/* Kiln is class-last: logits [..., C] and i32 labels [...], unlike
 * F.cross_entropy's class-second [N, C, d1, ...]; for 2-D logits they agree. */
static bool shape_cross_entropy(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len)) return false;
  const Type *logits = in_type(n, 0), *labels = in_type(n, 1);
  if (logits->rank < 1)
    return fail(msg, len, "cross_entropy: logits must have rank >= 1, got %s", TS(*logits));
  Type want = ir_type(DT_I32, logits->rank - 1, logits->dims);
  if (!ir_type_eq(labels, &want))
    return fail(msg, len, "cross_entropy: labels %s do not match logits %s (expected %s)",
                TS(*labels), TS(*logits), TS(want));
  n->type = scalar_of(logits->dtype);
  return true;
}

/* F.binary_cross_entropy(_with_logits): probabilities (or logits) and
 * targets of one shape. */
static bool shape_bce(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len)) return false;
  if (!ir_type_eq(in_type(n, 0), in_type(n, 1)))
    return fail(msg, len, "%s: input %s and target %s must have the same shape", op_name(n),
                TS(*in_type(n, 0)), TS(*in_type(n, 1)));
  n->type = scalar_of(in_type(n, 0)->dtype);
  return true;
}

/* ---- Backward ops (autodiff) --------------------------------------------- */

/* Input i must have exactly the type want (a gradient has its value's type). */
static bool need_type(const Node *n, int i, const char *what, const Type *want, char *msg,
                      size_t len) {
  if (ir_type_eq(in_type(n, i), want)) return true;
  return fail(msg, len, "%s: %s %s does not match %s", op_name(n), what, TS(*in_type(n, i)),
              TS(*want));
}

/* x broadcast (NumPy rules) to the float type with the dims of "shape". */
static bool shape_broadcast_to(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len)) return false;
  const AttrVal *shape = ir_attr_c(n, "shape");
  Type want = ir_type(in_type(n, 0)->dtype, shape->n, shape->i), out;
  if (!check_type("broadcast", &want, msg, len)) return false;
  if (!ir_broadcast(in_type(n, 0), &want, &out) || !ir_type_eq(&out, &want))
    return fail(msg, len, "broadcast: cannot broadcast %s to %s", TS(*in_type(n, 0)), TS(want));
  n->type = want;
  return true;
}

/* Zero padding: dim d grows by before[d] + after[d] (the gradient of slice). */
static bool shape_pad(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len)) return false;
  const Type *x = in_type(n, 0);
  const AttrVal *b = ir_attr_c(n, "before"), *a = ir_attr_c(n, "after");
  if (b->n != x->rank || a->n != x->rank)
    return fail(msg, len, "pad: before %s and after %s need one entry per dim of %s", istr(b).s,
                istr(a).s, TS(*x));
  Type out = *x;
  for (int i = 0; i < x->rank; i++) {
    if (b->i[i] < 0 || a->i[i] < 0 || b->i[i] > IR_MAX_NUMEL || a->i[i] > IR_MAX_NUMEL)
      return fail(msg, len, "pad: before %s and after %s must be in 0..%lld", istr(b).s, istr(a).s,
                  (long long)IR_MAX_NUMEL);
    out.dims[i] += b->i[i] + a->i[i]; /* each term <= IR_MAX_NUMEL: no overflow */
  }
  n->type = out;
  return true;
}

/* f_grad(x, dy): two float operands of one type, the result of that type. */
static bool shape_same_grad(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len) || !need_type(n, 1, "gradient", in_type(n, 0), msg, len))
    return false;
  n->type = *in_type(n, 0);
  return true;
}

/* layer_norm_grad(x [..., D], gamma [D], dy like x) -> dx like x. */
static bool shape_layer_norm_grad(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len)) return false;
  const Type *x = in_type(n, 0);
  if (x->rank < 1)
    return fail(msg, len, "layer_norm_grad: input must have rank >= 1, got %s", TS(*x));
  Type gamma = ir_type(x->dtype, 1, &x->dims[x->rank - 1]);
  if (!need_type(n, 1, "gamma", &gamma, msg, len) || !need_type(n, 2, "gradient", x, msg, len))
    return false;
  double eps = ir_attr_float(n, "eps");
  if (!(eps > 0)) return fail(msg, len, "layer_norm_grad: eps must be > 0, got %g", eps);
  n->type = *x;
  return true;
}

/* The spatial size (height, width) whose window_out is dy's (ho, wo). */
static bool window_fits(const Node *n, const Type *dy, int64_t h, int64_t w, int64_t kh, int64_t kw,
                        int64_t s, int64_t p, char *msg, size_t len) {
  if (window_out(h, kh, s, p) == dy->dims[2] && window_out(w, kw, s, p) == dy->dims[3]) return true;
  return fail(msg, len, "%s: gradient %s does not fit a %lldx%lld input (kernel %lldx%lld)",
              op_name(n), TS(*dy), (long long)h, (long long)w, (long long)kh, (long long)kw);
}

/* conv2d_grad_input(dy [N,Co,Ho,Wo], w [Co,Ci,kh,kw]) -> dx [N,Ci,height,width]. */
static bool shape_conv2d_grad_input(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len) || !need_rank(n, 0, 4, "gradient", msg, len) ||
      !need_rank(n, 1, 4, "weight", msg, len) || !attr_in(n, "stride", 1, msg, len) ||
      !attr_in(n, "padding", 0, msg, len) || !attr_in(n, "height", 1, msg, len) ||
      !attr_in(n, "width", 1, msg, len))
    return false;
  const Type *dy = in_type(n, 0), *w = in_type(n, 1);
  int64_t h = ir_attr_int(n, "height"), wd = ir_attr_int(n, "width");
  if (dy->dims[1] != w->dims[0])
    return fail(msg, len, "conv2d_grad_input: gradient %s does not match weight %s", TS(*dy),
                TS(*w));
  if (!window_fits(n, dy, h, wd, w->dims[2], w->dims[3], ir_attr_int(n, "stride"),
                   ir_attr_int(n, "padding"), msg, len))
    return false;
  n->type = ir_type(dy->dtype, 4, (int64_t[]){dy->dims[0], w->dims[1], h, wd});
  return true;
}

/* conv2d_grad_weight(x [N,Ci,H,W], dy [N,Co,Ho,Wo]) -> dw [Co,Ci,kernel_h,kernel_w]. */
static bool shape_conv2d_grad_weight(Node *n, char *msg, size_t len) {
  if (!need_floats_alike(n, msg, len) || !need_rank(n, 0, 4, "input", msg, len) ||
      !need_rank(n, 1, 4, "gradient", msg, len) || !attr_in(n, "stride", 1, msg, len) ||
      !attr_in(n, "padding", 0, msg, len) || !attr_in(n, "kernel_h", 1, msg, len) ||
      !attr_in(n, "kernel_w", 1, msg, len))
    return false;
  const Type *x = in_type(n, 0), *dy = in_type(n, 1);
  int64_t kh = ir_attr_int(n, "kernel_h"), kw = ir_attr_int(n, "kernel_w");
  if (dy->dims[0] != x->dims[0])
    return fail(msg, len, "conv2d_grad_weight: gradient %s does not match input %s", TS(*dy),
                TS(*x));
  if (!window_fits(n, dy, x->dims[2], x->dims[3], kh, kw, ir_attr_int(n, "stride"),
                   ir_attr_int(n, "padding"), msg, len))
    return false;
  n->type = ir_type(x->dtype, 4, (int64_t[]){dy->dims[1], x->dims[1], kh, kw});
  return true;
}

/* max_pool2d_grad(x [N,C,H,W], dy like max_pool2d(x)) -> dx like x. */
static bool shape_max_pool2d_grad(Node *n, char *msg, size_t len) {
  Type saved = n->type;
  if (!need_floats_alike(n, msg, len) || !shape_pool2d(n, msg, len)) return false;
  bool ok = need_type(n, 1, "gradient", &n->type, msg, len);
  n->type = ok ? *in_type(n, 0) : saved;
  return ok;
}

/* avg_pool2d_grad(dy [N,C,Ho,Wo]) -> dx [N,C,height,width]. */
static bool shape_avg_pool2d_grad(Node *n, char *msg, size_t len) {
  if (!need_float(n, 0, msg, len) || !need_rank(n, 0, 4, "gradient", msg, len) ||
      !attr_in(n, "kernel", 1, msg, len) || !attr_in(n, "stride", 1, msg, len) ||
      !attr_in(n, "height", 1, msg, len) || !attr_in(n, "width", 1, msg, len))
    return false;
  const Type *dy = in_type(n, 0);
  int64_t k = ir_attr_int(n, "kernel"), h = ir_attr_int(n, "height"), w = ir_attr_int(n, "width");
  if (!window_fits(n, dy, h, w, k, k, ir_attr_int(n, "stride"), 0, msg, len)) return false;
  n->type = ir_type(dy->dtype, 4, (int64_t[]){dy->dims[0], dy->dims[1], h, w});
  return true;
}

/* embedding_grad(ids i32 [...], dy [..., D]) -> dtable [vocab, D]. */
static bool shape_embedding_grad(Node *n, char *msg, size_t len) {
  const Type *ids = in_type(n, 0), *dy = in_type(n, 1);
  if (ids->dtype != DT_I32 || ids->rank > IR_MAX_RANK - 1)
    return fail(msg, len, "embedding_grad: ids must be i32 of rank 0..%d, got %s", IR_MAX_RANK - 1,
                TS(*ids));
  if (!need_float(n, 1, msg, len) || !attr_in(n, "vocab", 1, msg, len)) return false;
  bool ok = dy->rank == ids->rank + 1;
  for (int d = 0; ok && d < ids->rank; d++) ok = dy->dims[d] == ids->dims[d];
  if (!ok)
    return fail(msg, len, "embedding_grad: gradient %s does not match ids %s", TS(*dy), TS(*ids));
  n->type = ir_type(dy->dtype, 2, (int64_t[]){ir_attr_int(n, "vocab"), dy->dims[dy->rank - 1]});
  return true;
}

/* lstm_grad(x, w_ih, w_hh, b_ih, b_hh, dy [B,T,H]) -> [dx | dw_ih | dw_hh | db] packed. */
static bool shape_lstm_grad(Node *n, char *msg, size_t len) {
  Type saved = n->type;
  if (!shape_lstm(n, msg, len)) return false;
  if (!need_type(n, 5, "gradient", &n->type, msg, len)) {
    n->type = saved;
    return false;
  }
  const Type *x = in_type(n, 0);
  int64_t h4 = in_type(n, 1)->dims[0], h = h4 / 4; /* each product <= IR_MAX_NUMEL */
  int64_t total = ir_type_numel(x) + h4 * x->dims[2] + h4 * h + h4;
  n->type = ir_type(x->dtype, 1, &total);
  return true;
}

/* cross_entropy_grad(logits [..., C], labels i32 [...], dy []) -> dlogits. */
static bool shape_cross_entropy_grad(Node *n, char *msg, size_t len) {
  Type saved = n->type;
  if (!shape_cross_entropy(n, msg, len)) return false;
  bool ok = need_type(n, 2, "gradient", &n->type, msg, len);
  n->type = ok ? *in_type(n, 0) : saved;
  return ok;
}

/* ---- Dispatch ----------------------------------------------------------- */

/* Arity and well-formed input types are the builder's guarantee. */
static void check_inputs(const Node *n) {
  const OpInfo *info = ir_op_info(n->op);
  IR_ASSERT(n->nin >= info->min_in && (info->max_in < 0 || n->nin <= info->max_in),
            "%s node %d has %d inputs", info->name, n->id, n->nin);
  for (int i = 0; i < n->nin; i++) {
    const Type *t = n->in[i] ? &n->in[i]->type : NULL;
    IR_ASSERT(t && (unsigned)t->dtype < DT_COUNT && t->rank >= 0 && t->rank <= IR_MAX_RANK,
              "%s node %d: input %d has no valid type", info->name, n->id, i);
  }
}

bool ir_infer_type(Node *n, char *msg, size_t len) {
  check_inputs(n);
  if (len) msg[0] = '\0';
  Type saved = n->type;
  if (!shape_rules[n->op](n, msg, len)) return false;
  /* Broadcasting, concat and batch dims can multiply sizes past the limit. */
  if (checked_numel(&n->type) < 0) {
    fail(msg, len, "%s: result %s has more than %lld elements", op_name(n), TS(n->type),
         (long long)IR_MAX_NUMEL);
    n->type = saved;
    return false;
  }
  return true;
}
