/* simplify.c - constant folding and algebraic identities, repeated to a fixed point.
 * Needs: a verified graph; links kiln_interp, whose kernels evaluate what folds, so a folded
 * constant is bit for bit the value the interpreter would compute at run time.
 * Guarantees: each replacement has the exact type of the node it replaces and takes that node's
 * name when it has none; nodes left unused by a rewrite are removed; the order stays topological.
 *
 * Folding. A const holds one value, a splat of its type, and there are no dense constants: a
 * node whose inputs are all consts folds only when its value is a splat. An elementwise op
 * always gives one (it is evaluated once, on scalars, whatever its size); so do reshape,
 * permute, slice, broadcast and concat of one value; any other op folds when its inputs and
 * result have at most FOLD_MAX_NUMEL elements and every element of the result comes out equal.
 * causal_mask is not a const and never folds.
 *
 * Identities, exact in IEEE arithmetic except where noted, each only when the kept operand
 * already has the result's type (no implicit broadcast is lost):
 *   x*1, 1*x, x/1 -> x              x*-1, -1*x, x/-1 -> neg(x)
 *   x+0, 0+x, x-0 -> x              (inexact only in a zero's sign: -0.0 + +0.0 is +0.0,
 *                                    the rewrite keeps -0.0; see docs/DECISIONS.md)
 *   neg(neg(x)) -> x                log(softmax(x, a)) -> log_softmax(x, a) (more accurate)
 *   permute with the identity perm -> x;  permute(permute(x)) -> one permute, or x
 *   reshape to x's own type -> x;  reshape(reshape(x)) -> one reshape, or x
 *   slice selecting everything, pad by nothing, concat of one input, broadcast to x's own
 *   type -> x;  broadcast(broadcast(x)) -> one broadcast
 *   sum, mean, max over no axes or only axes of size 1 -> x, or a reshape of x
 *   sum of a permute or of a reshape (when the summed axes map onto whole dims of its
 *   input) -> a sum of the input (reassociates: the order of a sum is its kernel's anyway)
 * Left alone on purpose: x*0 (NaN*0 and inf*0 are NaN), x-x (the same), 0-x (signed zero),
 * exp(log_softmax(x)) (softmax's rounding differs), anything reassociating floats.
 */
#include "passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "interp.h"

/* Largest tensor (inputs and result) folded by running the op on its real shape. */
#define FOLD_MAX_NUMEL 4096
/* A safety net: every rewrite removes work, so a fixed point comes long before this. */
#define SIMPLIFY_MAX_SWEEPS 64

typedef struct Simp {
  Graph *g;
  int at; /* index of the node being rewritten: its new nodes go just before it */
  Node **replaced;
  int nreplaced, capreplaced;
} Simp;

/* ---- Building replacements ---------------------------------------------- */

/* A new node, placed just before the node being rewritten (its inputs come earlier still). */
static Node *simp_new(Simp *s, OpKind op, Node *const *in, int nin) {
  Graph *g = s->g;
  Node *n = ir_node_new(g, op, in, nin, g->nodes[s->at]->loc);
  memmove(&g->nodes[s->at + 1], &g->nodes[s->at], (size_t)(g->nnodes - 1 - s->at) * sizeof(Node *));
  g->nodes[s->at++] = n;
  return n;
}

static Node *simp_finish(Node *n) {
  char msg[256];
  IR_ASSERT(ir_infer_type(n, msg, sizeof msg), "simplify: new %s node has no valid type: %s",
            ir_op_name(n->op), msg);
  return n;
}

static Node *simp_op1(Simp *s, OpKind op, Node *x) { return simp_finish(simp_new(s, op, &x, 1)); }

/* A const of type t: f32 values as the shortest decimal that rounds to the same float, so
 * folded constants read as written. */
static Node *simp_const(Simp *s, const Type *t, double v) {
  if (t->dtype == DT_F32 && isfinite(v)) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, v);
      double d = strtod(buf, NULL);
      if ((float)d == (float)v && signbit(d) == signbit(v)) {
        v = d;
        break;
      }
    }
  }
  Node *n = simp_new(s, OP_CONST, NULL, 0);
  n->type = *t;
  ir_set_attr_float(n, "value", v);
  return simp_finish(n);
}

static Node *simp_reshape(Simp *s, Node *x, const Type *t) {
  if (ir_type_eq(&x->type, t)) return x;
  Node *n = simp_new(s, OP_RESHAPE, &x, 1);
  n->type = *t;
  return simp_finish(n);
}

/* ---- Constants ---------------------------------------------------------- */

/* A const's value as its dtype holds it (the attribute may carry more digits). */
static double const_value(const Node *c) {
  double v = ir_attr_float(c, "value");
  return c->type.dtype == DT_F32 ? (double)(float)v : v;
}

static bool is_const(const Node *n, double v) { return n->op == OP_CONST && const_value(n) == v; }

/* Equal as values: the sign of a zero counts, and every NaN is one NaN. */
static bool same_value(double a, double b) {
  return (a == b && signbit(a) == signbit(b)) || (isnan(a) && isnan(b));
}

static bool all_inputs_const(const Node *n) {
  for (int k = 0; k < n->nin; k++)
    if (n->in[k]->op != OP_CONST) return false;
  return n->nin > 0;
}

/* Data movement of one value: the result is that value again. */
static bool moves_one_value(const Node *n) {
  if (n->op != OP_RESHAPE && n->op != OP_PERMUTE && n->op != OP_SLICE && n->op != OP_BROADCAST &&
      n->op != OP_CONCAT)
    return false;
  for (int k = 1; k < n->nin; k++)
    if (!same_value(const_value(n->in[k]), const_value(n->in[0]))) return false;
  return true;
}

static bool fits_fold(const Node *n) {
  if (ir_type_numel(&n->type) > FOLD_MAX_NUMEL) return false;
  for (int k = 0; k < n->nin; k++)
    if (ir_type_numel(&n->in[k]->type) > FOLD_MAX_NUMEL) return false;
  return true;
}

/* The value of element i of an interpreter result of dtype dt. */
static double value_at(DType dt, const void *p, int64_t i) {
  return dt == DT_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

/* Copies n into a scratch graph fed by copies of its consts (as scalars when `scalar`),
 * runs the interpreter and returns in *v the value every element of the result has. */
static bool fold_eval(const Node *n, bool scalar, double *v) {
  Graph *t = ir_graph_new("fold");
  Node **in = calloc((size_t)n->nin, sizeof *in);
  IR_ASSERT(in, "simplify: out of memory");
  for (int k = 0; k < n->nin; k++) {
    in[k] = ir_node_new(t, OP_CONST, NULL, 0, n->loc);
    in[k]->type = scalar ? ir_type(n->in[k]->type.dtype, 0, NULL) : n->in[k]->type;
    ir_set_attr_float(in[k], "value", ir_attr_float(n->in[k], "value"));
  }
  Node *m = ir_node_new(t, n->op, in, n->nin, n->loc);
  memcpy(m->attr, n->attr, sizeof m->attr);
  m->type = n->type;
  char msg[256];
  bool ok = ir_infer_type(m, msg, sizeof msg);
  Interp *it = ok ? interp_new(t) : NULL;
  ok = it && interp_run(it, msg, sizeof msg);
  if (ok) {
    const void *p = interp_value(it, m);
    *v = value_at(m->type.dtype, p, 0);
    for (int64_t i = 1; ok && i < ir_type_numel(&m->type); i++)
      ok = same_value(value_at(m->type.dtype, p, i), *v);
  }
  interp_free(it);
  free(in);
  ir_graph_free(t);
  return ok;
}

static Node *rule_fold(Simp *s, Node *n) {
  if (!all_inputs_const(n) || !ir_dtype_is_float(n->type.dtype)) return NULL;
  double v;
  if (moves_one_value(n))
    v = ir_attr_float(n->in[0], "value");
  else if (ir_op_info(n->op)->flags & IR_F_ELEMWISE) {
    if (!fold_eval(n, true, &v)) return NULL;
  } else if (!fits_fold(n) || !fold_eval(n, false, &v))
    return NULL;
  return simp_const(s, &n->type, v);
}

/* ---- Identities --------------------------------------------------------- */

/* The operand x of n = x OP c (or c OP x when `either`) for a const c equal to one of vals,
 * when x has n's type; which value matched goes to *hit. */
static Node *operand_with_const(const Node *n, bool either, const double *vals, int nvals,
                                int *hit) {
  for (int k = 1; k >= (either ? 0 : 1); k--) {
    Node *x = n->in[1 - k];
    if (!ir_type_eq(&x->type, &n->type)) continue;
    for (int j = 0; j < nvals; j++)
      if (is_const(n->in[k], vals[j])) return *hit = j, x;
  }
  return NULL;
}

/* x*1, 1*x -> x; x*-1, -1*x -> neg(x); x/1 -> x; x/-1 -> neg(x). */
static Node *rule_scale(Simp *s, Node *n) {
  static const double ones[] = {1.0, -1.0};
  int hit;
  Node *x = operand_with_const(n, n->op == OP_MUL, ones, 2, &hit);
  if (!x) return NULL;
  return hit == 0 ? x : simp_op1(s, OP_NEG, x);
}

/* x+0, 0+x, x-0 -> x (either sign of zero). */
static Node *rule_add_zero(Simp *s, Node *n) {
  static const double zero[] = {0.0};
  int hit;
  return operand_with_const(n, n->op == OP_ADD, zero, 1, &hit);
}

static Node *rule_neg(Simp *s, Node *n) { return n->in[0]->op == OP_NEG ? n->in[0]->in[0] : NULL; }

/* log(softmax(x)) -> log_softmax(x): one op, and no log(0) where softmax underflows. */
static Node *rule_log(Simp *s, Node *n) {
  Node *sm = n->in[0];
  if (sm->op != OP_SOFTMAX) return NULL;
  Node *r = simp_new(s, OP_LOG_SOFTMAX, &sm->in[0], 1);
  ir_set_attr_int(r, "axis", ir_attr_int(sm, "axis"));
  return simp_finish(r);
}

static bool is_identity_perm(const AttrVal *p) {
  for (int i = 0; i < p->n; i++)
    if (p->i[i] != i) return false;
  return true;
}

/* permute(permute(x, p), q)[i] reads x at p[q[i]]: one permute by that, or x itself. */
static Node *rule_permute(Simp *s, Node *n) {
  const AttrVal *q = ir_attr_c(n, "perm");
  if (is_identity_perm(q)) return n->in[0];
  Node *inner = n->in[0];
  if (inner->op != OP_PERMUTE) return NULL;
  const AttrVal *p = ir_attr_c(inner, "perm");
  int64_t perm[IR_MAX_RANK];
  bool identity = true;
  for (int i = 0; i < q->n; i++) {
    perm[i] = p->i[q->i[i]];
    identity &= perm[i] == i;
  }
  if (identity) return inner->in[0];
  Node *r = simp_new(s, OP_PERMUTE, &inner->in[0], 1);
  ir_set_attr_ints(r, "perm", perm, q->n);
  return simp_finish(r);
}

/* Reshape to the input's own type, or of a reshape: one reshape (or none). */
static Node *rule_reshape(Simp *s, Node *n) {
  Node *x = n->in[0];
  if (ir_type_eq(&x->type, &n->type)) return x;
  if (x->op != OP_RESHAPE) return NULL;
  return simp_reshape(s, x->in[0], &n->type);
}

/* A slice from 0 to the end of every dim. */
static Node *rule_slice(Simp *s, Node *n) {
  const AttrVal *b = ir_attr_c(n, "begin"), *e = ir_attr_c(n, "end");
  const Type *t = &n->in[0]->type;
  for (int i = 0; i < t->rank; i++)
    if (b->i[i] != 0 || e->i[i] != t->dims[i]) return NULL;
  return n->in[0];
}

static Node *rule_pad(Simp *s, Node *n) {
  const AttrVal *b = ir_attr_c(n, "before"), *a = ir_attr_c(n, "after");
  for (int i = 0; i < b->n; i++)
    if (b->i[i] != 0 || a->i[i] != 0) return NULL;
  return n->in[0];
}

static Node *rule_concat(Simp *s, Node *n) { return n->nin == 1 ? n->in[0] : NULL; }

/* Broadcast to the input's own type; a broadcast of a broadcast is one broadcast (NumPy
 * broadcasting composes). */
static Node *rule_broadcast(Simp *s, Node *n) {
  Node *x = n->in[0];
  if (ir_type_eq(&x->type, &n->type)) return x;
  if (x->op != OP_BROADCAST) return NULL;
  Node *r = simp_new(s, OP_BROADCAST, &x->in[0], 1);
  const AttrVal *shape = ir_attr_c(n, "shape");
  ir_set_attr_ints(r, "shape", shape->i, shape->n);
  return simp_finish(r);
}

/* A sum of y over axes (no kept dims), placed before the node being rewritten. */
static Node *simp_sum(Simp *s, Node *y, const int64_t *axes, int naxes) {
  Node *r = simp_new(s, OP_SUM, &y, 1);
  ir_set_attr_ints(r, "axes", axes, naxes);
  ir_set_attr_int(r, "keepdim", 0);
  return simp_finish(r);
}

/* A sum (keepdim 0) of a data movement reduces the moved tensor directly, so no kernel
 * copies it first (the bias gradients of attention's projections):
 *   sum(permute(y, p), A) -> sum(y, p[A]) when the kept dims keep their order;
 *   sum(reshape(y), [0, a)) -> reshape(sum(y, [0, a))) when y's first a dims are the
 *   reshape's.
 * The same elements are added, in another order: like every Kiln reduction, whose order is
 * its kernel's (docs/DECISIONS.md). */
static Node *rule_sum_view(Simp *s, Node *n) {
  Node *x = n->in[0];
  const AttrVal *axes = ir_attr_c(n, "axes");
  if (ir_attr_int(n, "keepdim") != 0 || axes->n == 0) return NULL;
  int r = x->type.rank;
  bool summed[IR_MAX_RANK] = {false};
  for (int k = 0; k < axes->n; k++) summed[axes->i[k]] = true;
  if (x->op == OP_PERMUTE) {
    const AttrVal *p = ir_attr_c(x, "perm");
    int64_t last = -1, mapped[IR_MAX_RANK];
    int nm = 0;
    for (int d = 0; d < r; d++) {
      if (summed[d]) continue;
      if (p->i[d] < last) return NULL; /* the kept dims would come out in another order */
      last = p->i[d];
    }
    bool in[IR_MAX_RANK] = {false};
    for (int k = 0; k < axes->n; k++) in[p->i[axes->i[k]]] = true;
    for (int d = 0; d < r; d++)
      if (in[d]) mapped[nm++] = d;
    return simp_sum(s, x->in[0], mapped, nm);
  }
  if (x->op == OP_RESHAPE) {
    const Type *yt = &x->in[0]->type;
    int a = axes->n;
    for (int k = 0; k < a; k++)
      if (!summed[k] || k >= yt->rank || yt->dims[k] != x->type.dims[k]) return NULL;
    if (a >= yt->rank) return NULL;
    int64_t prefix[IR_MAX_RANK];
    for (int k = 0; k < a; k++) prefix[k] = k;
    return simp_reshape(s, simp_sum(s, x->in[0], prefix, a), &n->type);
  }
  return NULL;
}

/* A sum, mean or max of one element per output is that element: x, reshaped if a reduced
 * axis of size 1 is dropped. A sum of a permute or reshape: rule_sum_view. */
static Node *rule_reduce(Simp *s, Node *n) {
  Node *x = n->in[0];
  const AttrVal *axes = ir_attr_c(n, "axes");
  bool ones = true;
  for (int k = 0; k < axes->n; k++) ones &= x->type.dims[axes->i[k]] == 1;
  if (ones) return simp_reshape(s, x, &n->type);
  return n->op == OP_SUM ? rule_sum_view(s, n) : NULL;
}

/* ---- The driver ----------------------------------------------------------- */

typedef Node *Rule(Simp *s, Node *n);

/* Identities by op; folding is tried first for every op. */
static Rule *const rules[OP_COUNT] = {
    [OP_MUL] = rule_scale,       [OP_DIV] = rule_scale,       [OP_ADD] = rule_add_zero,
    [OP_SUB] = rule_add_zero,    [OP_NEG] = rule_neg,         [OP_LOG] = rule_log,
    [OP_PERMUTE] = rule_permute, [OP_RESHAPE] = rule_reshape, [OP_SLICE] = rule_slice,
    [OP_PAD] = rule_pad,         [OP_CONCAT] = rule_concat,   [OP_BROADCAST] = rule_broadcast,
    [OP_SUM] = rule_reduce,      [OP_MEAN] = rule_reduce,     [OP_MAX] = rule_reduce,
};

/* Outputs, the loss, gradients and updates keep a node alive without a user. */
static bool is_root(const Graph *g, const Node *n) {
  if (n == g->loss) return true;
  for (int k = 0; k < g->noutputs; k++)
    if (g->outputs[k].node == n) return true;
  for (int k = 0; k < g->ngrads; k++)
    if (g->grads[k].grad == n || g->grads[k].param == n) return true;
  for (int k = 0; k < g->nupdates; k++)
    if (g->updates[k].value == n || g->updates[k].target == n) return true;
  return false;
}

static bool is_unused(const Graph *g, const Node *n) {
  return n->nusers == 0 && !ir_op_is_named_source(n->op) && !is_root(g, n);
}

/* n's uses become r's; r takes n's name for dumps unless it has one or is bound by name. */
static void simp_replace(Simp *s, Node *n, Node *r) {
  char a[IR_TYPE_STR_MAX], b[IR_TYPE_STR_MAX];
  IR_ASSERT(ir_type_eq(&n->type, &r->type), "simplify: %s node %d (%s) replaced by a %s (%s)",
            ir_op_name(n->op), n->id, ir_type_str(&n->type, a, sizeof a), ir_op_name(r->op),
            ir_type_str(&r->type, b, sizeof b));
  if (!r->name && n->name && !ir_op_is_named_source(r->op)) r->name = n->name;
  ir_replace_uses(s->g, n, r);
  if (s->nreplaced == s->capreplaced) {
    s->capreplaced = s->capreplaced ? 2 * s->capreplaced : 64;
    s->replaced = realloc(s->replaced, (size_t)s->capreplaced * sizeof *s->replaced);
    IR_ASSERT(s->replaced, "simplify: out of memory");
  }
  s->replaced[s->nreplaced++] = n;
}

/* Removes the replaced nodes and, transitively, the inputs only they used. */
static void simp_remove_orphans(Simp *s) {
  Graph *g = s->g;
  size_t ids = (size_t)g->next_id;
  int *uses = calloc(ids, sizeof *uses);
  bool *dead = calloc(ids, sizeof *dead);
  Node **work = malloc((size_t)(s->nreplaced + g->nnodes) * sizeof *work);
  IR_ASSERT(uses && dead && work, "simplify: out of memory");
  for (int i = 0; i < g->nnodes; i++) uses[g->nodes[i]->id] = g->nodes[i]->nusers;
  int top = 0;
  for (int k = 0; k < s->nreplaced; k++) work[top++] = s->replaced[k];
  while (top > 0) {
    Node *n = work[--top];
    if (dead[n->id] || uses[n->id] > 0 || ir_op_is_named_source(n->op) || is_root(g, n)) continue;
    dead[n->id] = true;
    for (int k = 0; k < n->nin; k++)
      if (--uses[n->in[k]->id] == 0) work[top++] = n->in[k];
  }
  ir_remove_nodes(g, dead);
  s->nreplaced = 0;
  free(uses);
  free(dead);
  free(work);
}

/* One pass over the graph in order; true if anything was rewritten. */
static bool simp_sweep(Simp *s) {
  Graph *g = s->g;
  bool changed = false;
  for (s->at = 0; s->at < g->nnodes; s->at++) {
    Node *n = g->nodes[s->at];
    if (is_unused(g, n)) continue;
    Node *r = rule_fold(s, n);
    if (!r && rules[n->op]) r = rules[n->op](s, n);
    if (!r) continue;
    simp_replace(s, n, r);
    changed = true;
  }
  if (changed) simp_remove_orphans(s);
  return changed;
}

bool pass_simplify(Graph *g, PassCtx *cx) {
  Simp s = {.g = g};
  bool changed = false;
  for (int sweep = 0; sweep < SIMPLIFY_MAX_SWEEPS && simp_sweep(&s); sweep++) changed = true;
  free(s.replaced);
  return changed;
}
