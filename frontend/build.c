/* build.c - the .kl evaluator: fixes size params and dims, inlines fns, builds the Graph. */
#include "build_priv.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- Values ---------------------------------------------------------------- */

static Value build_tensor(Node *n) { return (Value){.kind = VAL_TENSOR, .node = n}; }
static Value build_int(int64_t i) { return (Value){.kind = VAL_INT, .i = i}; }
static Value build_float(double f) { return (Value){.kind = VAL_FLOAT, .f = f}; }

bool build_is_int(const Value *v) { return v->kind == VAL_INT; }
bool build_is_number(const Value *v) { return v->kind == VAL_INT || v->kind == VAL_FLOAT; }
double build_number(const Value *v) { return v->kind == VAL_INT ? (double)v->i : v->f; }

const char *build_describe(const Value *v, char *buf, size_t len) {
  char ts[IR_TYPE_STR_MAX];
  switch (v->kind) {
  case VAL_TENSOR:
    snprintf(buf, len, "a tensor %s", ir_type_str(&v->node->type, ts, sizeof ts));
    break;
  case VAL_INT:
    snprintf(buf, len, "the integer %" PRId64, v->i);
    break;
  case VAL_FLOAT:
    snprintf(buf, len, "the number %g", v->f);
    break;
  case VAL_BOOL:
    snprintf(buf, len, "%s", v->b ? "true" : "false");
    break;
  case VAL_LIST:
    snprintf(buf, len, "a list of %d elements", v->nelems);
    break;
  case VAL_NONE:
  case VAL_MISSING:
    snprintf(buf, len, "nothing");
    break;
  }
  return buf;
}

/* ---- Locations and nodes ---------------------------------------------------- */

/* Nodes outlive the AST, so their locations point at g's copy of the file name. */
Loc build_loc(Builder *b, Loc loc) {
  if (!loc.file) return loc;
  if (loc.file != b->src_file) {
    b->src_file = loc.file;
    b->g_file = arena_strdup(&b->g->arena, loc.file);
  }
  loc.file = b->g_file;
  return loc;
}

Node *build_node(Builder *b, OpKind op, Node *const *in, int nin, Loc loc) {
  return ir_node_new(b->g, op, in, nin, build_loc(b, loc));
}

bool build_finish(Builder *b, Node *n) {
  char msg[512];
  if (ir_infer_type(n, msg, sizeof msg)) return true;
  diag_error(b->d, n->loc, "%s", msg);
  return false;
}

/* A number meeting a tensor: a scalar constant (SPEC 1.5). */
static Node *build_const(Builder *b, double v, DType dt, Loc loc) {
  Node *n = build_node(b, OP_CONST, NULL, 0, loc);
  n->type = ir_type(dt, 0, NULL);
  ir_set_attr_float(n, "value", v);
  return build_finish(b, n) ? n : NULL;
}

bool build_check_numel(Builder *b, const Type *t, Loc loc) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (__builtin_mul_overflow(n, t->dims[i], &n) || n > IR_MAX_NUMEL) {
      char ts[IR_TYPE_STR_MAX];
      diag_error(b->d, loc, "tensor %s has too many elements (at most %" PRId64 ")",
                 ir_type_str(t, ts, sizeof ts), IR_MAX_NUMEL);
      return false;
    }
  }
  return true;
}

/* ---- Scopes ------------------------------------------------------------------- */

static Frame *build_frame(Builder *b) { return &b->frames[b->depth]; }

static Binding *build_lookup_in(Scope *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->items[i].name, name) == 0) return &s->items[i];
  return NULL;
}

static Binding *build_lookup(Builder *b, const char *name) {
  return build_lookup_in(&build_frame(b)->scope, name);
}

/* A name is bound once per scope (SPEC 1.3). The model's "optim" is taken:
 * optimizer state lives under "optim." (passes/optimizer.c). */
static bool build_bind(Builder *b, const char *name, Loc loc, Value v) {
  if (b->depth == 0 && strcmp(name, "optim") == 0) {
    diag_error(b->d, loc, "the name 'optim' is reserved for optimizer state");
    return false;
  }
  Binding *old = build_lookup(b, name);
  if (old) {
    diag_error(b->d, loc, "'%s' is already bound; a name is bound once per scope", name);
    diag_note(b->d, old->loc, "'%s' was bound here", name);
    return false;
  }
  Scope *s = &build_frame(b)->scope;
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 16;
    s->items = arena_grow(&b->tmp, s->items, (size_t)s->n, (size_t)cap, sizeof *s->items);
    s->cap = cap;
  }
  s->items[s->n++] = (Binding){name, v, loc};
  return true;
}

static const Block *build_find_fn(const Builder *b, const char *name) {
  for (int i = 0; i < b->ast->nfns; i++)
    if (strcmp(b->ast->fns[i]->name, name) == 0) return b->ast->fns[i];
  return NULL;
}

/* "unknown name", with the likely cause: a fn used as a value, a size
 * parameter a fn cannot see, or a typo. */
static bool build_unknown_name(Builder *b, const char *name, Loc loc) {
  if (build_find_fn(b, name) || build_is_builtin(name)) {
    diag_error(b->d, loc, "'%s' is a function; call it: %s(...)", name, name);
    return false;
  }
  if (b->depth > 0 && build_lookup_in(&b->frames[0].scope, name)) {
    diag_error(b->d, loc, "unknown name '%s' (fn '%s' sees only its arguments; pass it in)", name,
               build_frame(b)->block->name);
    return false;
  }
  Scope *s = &build_frame(b)->scope;
  const char **names = arena_array(&b->tmp, (size_t)s->n + 1, sizeof *names);
  for (int i = 0; i < s->n; i++) names[i] = s->items[i].name;
  const char *near = build_suggest(name, names, s->n);
  if (near)
    diag_error(b->d, loc, "unknown name '%s'; did you mean '%s'?", name, near);
  else
    diag_error(b->d, loc, "unknown name '%s'", name);
  return false;
}

/* ---- Dims ------------------------------------------------------------------------ */

static bool build_dim(Builder *b, const Expr *e, int64_t *out, int depth);

static bool build_dim_name(Builder *b, const Expr *e, int64_t *out) {
  Binding *bd = build_lookup(b, e->name);
  if (!bd) return build_unknown_name(b, e->name, e->loc);
  if (bd->v.kind != VAL_INT) {
    char what[128];
    diag_error(b->d, e->loc, "'%s' is %s; a dimension must be an integer", e->name,
               build_describe(&bd->v, what, sizeof what));
    return false;
  }
  *out = bd->v.i;
  return true;
}

/* dim = dterm { ("+" | "-") dterm } ; dterm = datom { ("*" | "/") datom } */
static bool build_dim_binary(Builder *b, const Expr *e, int64_t *out, int depth) {
  int64_t l, r;
  if (!build_dim(b, e->lhs, &l, depth + 1) || !build_dim(b, e->rhs, &r, depth + 1)) return false;
  bool overflow;
  if (e->op == '+') {
    overflow = __builtin_add_overflow(l, r, out);
  } else if (e->op == '-') {
    overflow = __builtin_sub_overflow(l, r, out);
  } else if (e->op == '*') {
    overflow = __builtin_mul_overflow(l, r, out);
  } else if (e->op == '/') {
    /* Integer division, exact or an error (SPEC 1.4). */
    if (r == 0) {
      diag_error(b->d, e->loc, "dimension %" PRId64 " / 0 divides by zero", l);
      return false;
    }
    overflow = l == INT64_MIN && r == -1;
    if (!overflow && l % r != 0) {
      diag_error(b->d, e->loc, "dimension %" PRId64 " / %" PRId64 " is not an integer", l, r);
      return false;
    }
    if (!overflow) *out = l / r;
  } else {
    diag_error(b->d, e->loc, "'%c' cannot appear in a dimension (only + - * /)", e->op);
    return false;
  }
  if (!overflow) return true;
  diag_error(b->d, e->loc, "dimension %" PRId64 " %c %" PRId64 " overflows", l, e->op, r);
  return false;
}

/* datom = INT | IDENT | "(" dim ")", over size params and integer fn arguments. */
static bool build_dim(Builder *b, const Expr *e, int64_t *out, int depth) {
  if (depth > BUILD_MAX_EVAL_DEPTH) {
    diag_error(b->d, e->loc, "dimension expression nested too deeply");
    return false;
  }
  switch (e->kind) {
  case EX_INT:
    *out = e->ival;
    return true;
  case EX_NAME:
    return build_dim_name(b, e, out);
  case EX_BINARY:
    return build_dim_binary(b, e, out, depth);
  case EX_NEG:
    if (!build_dim(b, e->lhs, out, depth + 1)) return false;
    if (*out == INT64_MIN) {
      diag_error(b->d, e->loc, "dimension -(%" PRId64 ") overflows", *out);
      return false;
    }
    *out = -*out;
    return true;
  case EX_FLOAT:
  case EX_BOOL:
  case EX_CALL:
  case EX_INDEX:
  case EX_LIST:
    break;
  }
  diag_error(b->d, e->loc, "a dimension is an integer expression of literals and size parameters");
  return false;
}

/* type = ("f32" | "i32" | "f64") "[" [ dim { "," dim } ] "]", every dim >= 1. */
static bool build_type(Builder *b, const TypeExpr *te, Type *out) {
  if (te->ndims > IR_MAX_RANK) {
    diag_error(b->d, te->loc, "a tensor has at most %d dims, got %d", IR_MAX_RANK, te->ndims);
    return false;
  }
  int64_t dims[IR_MAX_RANK];
  for (int i = 0; i < te->ndims; i++) {
    if (!build_dim(b, te->dims[i], &dims[i], 0)) return false;
    if (dims[i] < 1) {
      diag_error(b->d, te->dims[i]->loc, "dimension must be >= 1, got %" PRId64, dims[i]);
      return false;
    }
  }
  *out = ir_type(te->dtype, te->ndims, dims);
  return build_check_numel(b, out, te->loc);
}

/* ---- Arithmetic ------------------------------------------------------------------- */

static const char *build_op_text(OpKind op) {
  static const struct {
    OpKind op;
    const char *text;
  } texts[] = {{OP_ADD, "+"}, {OP_SUB, "-"}, {OP_MUL, "*"}, {OP_DIV, "/"}};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    if (texts[i].op == op) return texts[i].text;
  return ir_op_name(op);
}

/* Python's int arithmetic, checked: int op int stays an int except a
 * division that is not exact. */
static bool build_int_arith(Builder *b, OpKind op, int64_t x, int64_t y, Loc loc, Value *out) {
  int64_t r = 0;
  bool overflow = false;
  if (op == OP_ADD) overflow = __builtin_add_overflow(x, y, &r);
  if (op == OP_SUB) overflow = __builtin_sub_overflow(x, y, &r);
  if (op == OP_MUL) overflow = __builtin_mul_overflow(x, y, &r);
  if (op == OP_MAXIMUM) r = x > y ? x : y;
  if (op == OP_MINIMUM) r = x < y ? x : y;
  if (op == OP_DIV) {
    if (y == 0) {
      diag_error(b->d, loc, "division by zero");
      return false;
    }
    if ((x == INT64_MIN && y == -1) || x % y != 0) {
      *out = build_float((double)x / (double)y);
      return true;
    }
    r = x / y;
  }
  if (overflow) {
    diag_error(b->d, loc, "integer overflow in %" PRId64 " %s %" PRId64, x, build_op_text(op), y);
    return false;
  }
  *out = build_int(r);
  return true;
}

static bool build_num_arith(Builder *b, OpKind op, const Value *x, const Value *y, Loc loc,
                            Value *out) {
  if (x->kind == VAL_INT && y->kind == VAL_INT) return build_int_arith(b, op, x->i, y->i, loc, out);
  double p = build_number(x), q = build_number(y);
  if (op == OP_MAXIMUM || op == OP_MINIMUM) {
    /* Python's max/min: the chosen operand keeps its kind. */
    *out = (op == OP_MAXIMUM) == (p >= q) ? *x : *y;
    return true;
  }
  if (op == OP_DIV && q == 0) {
    diag_error(b->d, loc, "division by zero");
    return false;
  }
  *out = build_float(op == OP_ADD ? p + q : op == OP_SUB ? p - q : op == OP_MUL ? p * q : p / q);
  return true;
}

/* A number meeting a tensor becomes a scalar of the tensor's float dtype
 * (SPEC 1.5); constants are always float, so an i32 tensor meets an f32. */
static Node *build_operand(Builder *b, const Value *v, const Value *other, Loc loc) {
  if (v->kind == VAL_TENSOR) return v->node;
  DType dt = other->node->type.dtype;
  if (!ir_dtype_is_float(dt)) dt = DT_F32;
  return build_const(b, build_number(v), dt, loc);
}

static bool build_check_operand(Builder *b, OpKind op, const Value *v, Loc loc) {
  if (v->kind == VAL_TENSOR || build_is_number(v)) return true;
  char what[128];
  diag_error(b->d, loc, "operand of '%s' must be a tensor or a number, got %s", build_op_text(op),
             build_describe(v, what, sizeof what));
  return false;
}

bool build_arith(Builder *b, OpKind op, const Value *x, const Value *y, Loc loc, Value *out) {
  if (!build_check_operand(b, op, x, loc) || !build_check_operand(b, op, y, loc)) return false;
  if (x->kind != VAL_TENSOR && y->kind != VAL_TENSOR) return build_num_arith(b, op, x, y, loc, out);
  Node *in[2] = {build_operand(b, x, y, loc), NULL};
  if (!in[0] || !(in[1] = build_operand(b, y, x, loc))) return false;
  Node *n = build_node(b, op, in, 2, loc);
  if (!build_finish(b, n)) return false;
  *out = build_tensor(n);
  return true;
}

/* ---- Expressions -------------------------------------------------------------------- */

static bool build_call(Builder *b, const Expr *e, const char *bind_name, Value *out);
static bool build_index(Builder *b, const Expr *e, Value *out);

static bool build_eval_name(Builder *b, const Expr *e, Value *out) {
  Binding *bd = build_lookup(b, e->name);
  if (!bd) return build_unknown_name(b, e->name, e->loc);
  *out = bd->v;
  return true;
}

static bool build_eval_list(Builder *b, const Expr *e, Value *out) {
  Value *elems = arena_array(&b->tmp, (size_t)e->nelems + 1, sizeof *elems);
  for (int i = 0; i < e->nelems; i++)
    if (!build_eval(b, e->elems[i], &elems[i])) return false;
  *out = (Value){.kind = VAL_LIST, .elems = elems, .nelems = e->nelems};
  return true;
}

/* unary = "-" unary | postfix */
static bool build_eval_neg(Builder *b, const Expr *e, Value *out) {
  Value x;
  if (!build_eval(b, e->lhs, &x)) return false;
  if (x.kind == VAL_INT && x.i != INT64_MIN) {
    *out = build_int(-x.i);
  } else if (x.kind == VAL_FLOAT) {
    *out = build_float(-x.f);
  } else if (x.kind == VAL_TENSOR) {
    Node *n = build_node(b, OP_NEG, &x.node, 1, e->loc);
    if (!build_finish(b, n)) return false;
    *out = build_tensor(n);
  } else if (x.kind == VAL_INT) {
    diag_error(b->d, e->loc, "integer overflow in -(%" PRId64 ")", x.i);
    return false;
  } else {
    char what[128];
    diag_error(b->d, e->loc, "operand of unary '-' must be a tensor or a number, got %s",
               build_describe(&x, what, sizeof what));
    return false;
  }
  return true;
}

static bool build_matmul(Builder *b, const Expr *e, const Value *x, const Value *y, Value *out) {
  const Value *bad = x->kind != VAL_TENSOR ? x : y->kind != VAL_TENSOR ? y : NULL;
  if (bad) {
    char what[128];
    diag_error(b->d, e->loc, "operands of '@' must be tensors, got %s",
               build_describe(bad, what, sizeof what));
    return false;
  }
  Node *in[2] = {x->node, y->node};
  Node *n = build_node(b, OP_MATMUL, in, 2, e->loc);
  if (!build_finish(b, n)) return false;
  *out = build_tensor(n);
  return true;
}

/* expr = term { ("+" | "-") term } ; term = unary { ("*" | "/" | "@") unary } */
static bool build_eval_binary(Builder *b, const Expr *e, Value *out) {
  Value x, y;
  if (!build_eval(b, e->lhs, &x) || !build_eval(b, e->rhs, &y)) return false;
  switch (e->op) {
  case '+':
    return build_arith(b, OP_ADD, &x, &y, e->loc, out);
  case '-':
    return build_arith(b, OP_SUB, &x, &y, e->loc, out);
  case '*':
    return build_arith(b, OP_MUL, &x, &y, e->loc, out);
  case '/':
    return build_arith(b, OP_DIV, &x, &y, e->loc, out);
  case '@':
    return build_matmul(b, e, &x, &y, out);
  default:
    ir_fatal("build_eval_binary: operator '%c' from the parser", e->op);
  }
}

static bool build_eval_expr(Builder *b, const Expr *e, Value *out) {
  switch (e->kind) {
  case EX_INT:
    *out = build_int(e->ival);
    return true;
  case EX_FLOAT:
    *out = build_float(e->fval);
    return true;
  case EX_BOOL:
    *out = (Value){.kind = VAL_BOOL, .b = e->bval};
    return true;
  case EX_NAME:
    return build_eval_name(b, e, out);
  case EX_BINARY:
    return build_eval_binary(b, e, out);
  case EX_NEG:
    return build_eval_neg(b, e, out);
  case EX_CALL:
    return build_call(b, e, NULL, out);
  case EX_INDEX:
    return build_index(b, e, out);
  case EX_LIST:
    return build_eval_list(b, e, out);
  }
  ir_fatal("build_eval: expression kind %d from the parser", (int)e->kind);
}

bool build_eval(Builder *b, const Expr *e, Value *out) {
  /* The parser bounds one expression; calls nest expressions further. */
  if (b->eval_depth >= BUILD_MAX_EVAL_DEPTH) {
    diag_error(b->d, e->loc, "expressions nested too deeply (through fn calls)");
    return false;
  }
  b->eval_depth++;
  bool ok = build_eval_expr(b, e, out);
  b->eval_depth--;
  return ok;
}

/* ---- Indexing ------------------------------------------------------------------------ */

static bool build_index_int(Builder *b, const Expr *e, int64_t *out) {
  Value v;
  if (!build_eval(b, e, &v)) return false;
  if (!build_is_int(&v)) {
    char what[128];
    diag_error(b->d, e->loc, "an index must be an integer, got %s",
               build_describe(&v, what, sizeof what));
    return false;
  }
  *out = v.i;
  return true;
}

/* One integer index: in range after counting negatives from the end. */
static bool build_index_at(Builder *b, const Index *ix, int axis, int64_t size, int64_t *lo,
                           int64_t *hi) {
  int64_t i;
  if (!build_index_int(b, ix->lo, &i)) return false;
  int64_t k = i < 0 ? i + size : i;
  if (k < 0 || k >= size) {
    diag_error(b->d, ix->loc,
               "index %" PRId64 " is out of bounds for dimension %d with size %" PRId64, i, axis,
               size);
    return false;
  }
  *lo = k;
  *hi = k + 1;
  return true;
}

static int64_t build_clamp_bound(int64_t v, int64_t size) {
  if (v < 0) v = v < -size ? 0 : v + size;
  return v > size ? size : v;
}

/* One slice lo:hi: bounds count from the end when negative and clamp like
 * NumPy; an empty result is an error since every dim is >= 1. */
static bool build_index_slice(Builder *b, const Index *ix, int axis, int64_t size, int64_t *lo,
                              int64_t *hi) {
  int64_t l = 0, h = size;
  if (ix->lo && !build_index_int(b, ix->lo, &l)) return false;
  if (ix->hi && !build_index_int(b, ix->hi, &h)) return false;
  *lo = build_clamp_bound(l, size);
  *hi = build_clamp_bound(h, size);
  if (*hi > *lo) return true;
  char lt[32] = "", ht[32] = "";
  if (ix->lo) snprintf(lt, sizeof lt, "%" PRId64, l);
  if (ix->hi) snprintf(ht, sizeof ht, "%" PRId64, h);
  diag_error(b->d, ix->loc, "slice %s:%s of dimension %d with size %" PRId64 " is empty", lt, ht,
             axis, size);
  return false;
}

/* Drops the integer-indexed dims with a reshape. */
static Node *build_drop_dims(Builder *b, Node *x, const bool *drop, Loc loc) {
  int64_t dims[IR_MAX_RANK];
  int rank = 0;
  for (int i = 0; i < x->type.rank; i++)
    if (!drop[i]) dims[rank++] = x->type.dims[i];
  Node *n = build_node(b, OP_RESHAPE, &x, 1, loc);
  n->type = ir_type(x->type.dtype, rank, dims);
  return build_finish(b, n) ? n : NULL;
}

/* postfix "[" index { "," index } "]": NumPy basic indexing with step 1, as
 * one slice (same rank; skipped when it selects everything) and a reshape
 * dropping the integer-indexed dims. */
static bool build_index(Builder *b, const Expr *e, Value *out) {
  Value x;
  if (!build_eval(b, e->lhs, &x)) return false;
  char what[128];
  if (x.kind != VAL_TENSOR) {
    diag_error(b->d, e->loc, "only tensors can be indexed, got %s",
               build_describe(&x, what, sizeof what));
    return false;
  }
  const Type *t = &x.node->type;
  if (e->nidx > t->rank) {
    diag_error(b->d, e->loc, "too many indices for %s: %d", build_describe(&x, what, sizeof what),
               e->nidx);
    return false;
  }
  /* 1. Each index to a range of its dim. */
  int64_t begin[IR_MAX_RANK], end[IR_MAX_RANK];
  bool drop[IR_MAX_RANK] = {false}, whole = true, dropping = false;
  for (int i = 0; i < t->rank; i++) {
    begin[i] = 0;
    end[i] = t->dims[i];
    if (i >= e->nidx) continue;
    const Index *ix = &e->idx[i];
    bool ok = ix->is_slice ? build_index_slice(b, ix, i, t->dims[i], &begin[i], &end[i])
                           : build_index_at(b, ix, i, t->dims[i], &begin[i], &end[i]);
    if (!ok) return false;
    drop[i] = !ix->is_slice;
    dropping |= drop[i];
    whole &= begin[i] == 0 && end[i] == t->dims[i];
  }
  /* 2. The slice, then the reshape. */
  Node *n = x.node;
  if (!whole) {
    n = build_node(b, OP_SLICE, &n, 1, e->loc);
    ir_set_attr_ints(n, "begin", begin, t->rank);
    ir_set_attr_ints(n, "end", end, t->rank);
    if (!build_finish(b, n)) return false;
  }
  if (dropping && !(n = build_drop_dims(b, n, drop, e->loc))) return false;
  *out = build_tensor(n);
  return true;
}

/* ---- fn calls ------------------------------------------------------------------------- */

static bool build_stmt(Builder *b, const Stmt *s);

/* The fn's statements, then its return value. */
static bool build_fn_body(Builder *b, const Block *fn, Value *out) {
  for (int i = 0; i < fn->nbody; i++) {
    const Stmt *s = &fn->body[i];
    if (s->kind != ST_RETURN) {
      if (!build_stmt(b, s)) return false;
      continue;
    }
    if (i != fn->nbody - 1) {
      diag_error(b->d, s->loc, "return must be the last statement of fn '%s'", fn->name);
      return false;
    }
    return build_eval(b, s->value, out);
  }
  diag_error(b->d, fn->loc, "fn '%s' has no return statement", fn->name);
  return false;
}

/* Refuses recursion (calls are inlined) and a bad argument list. */
static bool build_check_call(Builder *b, const Block *fn, const Expr *call) {
  for (int i = 1; i <= b->depth; i++) {
    if (b->frames[i].block != fn) continue;
    diag_error(b->d, call->loc, "recursive call of '%s'", fn->name);
    diag_note(b->d, b->frames[i].call_loc, "'%s' was entered here", fn->name);
    return false;
  }
  if (b->depth >= BUILD_MAX_CALL_DEPTH) {
    diag_error(b->d, call->loc, "fn calls nested deeper than %d", BUILD_MAX_CALL_DEPTH);
    return false;
  }
  for (int i = 0; i < call->nargs; i++) {
    if (!call->args[i].name) continue;
    diag_error(b->d, call->args[i].loc, "fn '%s' takes positional arguments only", fn->name);
    return false;
  }
  if (call->nargs != fn->nparams) {
    diag_error(b->d, call->loc, "fn '%s' takes %d argument%s, got %d", fn->name, fn->nparams,
               fn->nparams == 1 ? "" : "s", call->nargs);
    return false;
  }
  return true;
}

/* The prefix of names made inside a call bound by NAME = f(...): NAME in the
 * model, OUTER.NAME inside another call. */
static void build_push_frame(Builder *b, const Block *fn, const Expr *call, const char *bind_name) {
  Frame *caller = build_frame(b);
  Frame *f = &b->frames[++b->depth];
  *f = (Frame){.block = fn, .call_loc = call->loc};
  f->anonymous = caller->anonymous || !bind_name;
  if (f->anonymous) return;
  f->prefix = caller->prefix ? arena_printf(&b->g->arena, "%s.%s", caller->prefix, bind_name)
                             : arena_strdup(&b->g->arena, bind_name);
}

/* Inlines a call of fn: its arguments, evaluated in the caller's scope, are
 * bound to its parameter names in a fresh scope that sees nothing else. */
static bool build_inline(Builder *b, const Block *fn, const Expr *call, const char *bind_name,
                         Value *out) {
  if (!build_check_call(b, fn, call)) return false;
  Value *args = arena_array(&b->tmp, (size_t)call->nargs + 1, sizeof *args);
  for (int i = 0; i < call->nargs; i++)
    if (!build_eval(b, call->args[i].value, &args[i])) return false;
  build_push_frame(b, fn, call, bind_name);
  bool ok = true;
  for (int i = 0; ok && i < fn->nparams; i++)
    ok = build_bind(b, fn->params[i], fn->param_locs[i], args[i]);
  ok = ok && build_fn_body(b, fn, out);
  b->depth--;
  return ok;
}

static bool build_not_function(Builder *b, const Expr *e) {
  Binding *bd = build_lookup(b, e->name);
  if (bd) {
    char what[128];
    diag_error(b->d, e->loc, "'%s' is %s, not a function", e->name,
               build_describe(&bd->v, what, sizeof what));
    return false;
  }
  const char *near = build_suggest_function(b, e->name);
  if (near)
    diag_error(b->d, e->loc, "unknown function '%s'; did you mean '%s'?", e->name, near);
  else
    diag_error(b->d, e->loc, "unknown function '%s'", e->name);
  return false;
}

/* postfix NAME "(" args ")": a fn (inlined) or a builtin. bind_name is set
 * when the call is the whole right side of NAME = f(...). */
static bool build_call(Builder *b, const Expr *e, const char *bind_name, Value *out) {
  const Block *fn = build_find_fn(b, e->name);
  if (fn) return build_inline(b, fn, e, bind_name, out);
  if (build_is_builtin(e->name)) return build_builtin_call(b, e, out);
  return build_not_function(b, e);
}

/* ---- Statements ------------------------------------------------------------------------ */

/* input, output and train belong to the model. */
static bool build_model_only(Builder *b, const Stmt *s, const char *what) {
  if (b->depth == 0) return true;
  diag_error(b->d, s->loc, "%s cannot appear in fn '%s'%s", what, build_frame(b)->block->name,
             s->kind == ST_INPUT ? "; pass the value as an argument" : "");
  return false;
}

static const char *build_node_name(Builder *b, const char *name) {
  const char *prefix = build_frame(b)->prefix;
  return prefix ? arena_printf(&b->g->arena, "%s.%s", prefix, name)
                : arena_strdup(&b->g->arena, name);
}

/* "input" IDENT ":" type */
static bool build_input(Builder *b, const Stmt *s) {
  Type t;
  if (!build_model_only(b, s, "input") || !build_type(b, &s->type, &t)) return false;
  Node *n = build_node(b, OP_INPUT, NULL, 0, s->loc);
  n->name = arena_strdup(&b->g->arena, s->name);
  n->type = t;
  return build_finish(b, n) && build_bind(b, s->name, s->name_loc, build_tensor(n));
}

/* A param's name must be unique in the graph, so every call around it must
 * be bound: NAME = f(...). Reports the outermost call that is not. */
static bool build_param_named(Builder *b, const Stmt *s) {
  if (!build_frame(b)->anonymous) return true;
  int i = 1;
  while (!b->frames[i].anonymous) i++;
  const char *fn = b->frames[i].block->name;
  diag_error(b->d, b->frames[i].call_loc, "call of '%s' declares params; bind it: NAME = %s(...)",
             fn, fn);
  diag_note(b->d, s->loc, "param '%s' is declared here", s->name);
  return false;
}

static bool build_param_type(Builder *b, const Stmt *s, Type *t) {
  if (!build_type(b, &s->type, t)) return false;
  if (ir_dtype_is_float(t->dtype)) return true;
  char ts[IR_TYPE_STR_MAX];
  diag_error(b->d, s->type.loc, "param '%s' must be f32 or f64, got %s", s->name,
             ir_type_str(t, ts, sizeof ts));
  return false;
}

/* "param" IDENT ":" type "=" init; in a call bound to fc1 its name is fc1.w. */
static bool build_param(Builder *b, const Stmt *s) {
  Type t;
  const char *init;
  double args[IR_MAX_ATTR_LEN];
  int nargs = 0;
  if (!build_param_named(b, s) || !build_param_type(b, s, &t)) return false;
  if (!build_init(b, s, &t, &init, args, &nargs)) return false;
  const char *name = build_node_name(b, s->name);
  if (ir_find_param(b->g, name)) {
    diag_error(b->d, s->name_loc, "param '%s' is declared twice", name);
    return false;
  }
  Node *n = build_node(b, OP_PARAM, NULL, 0, s->loc);
  n->name = name;
  n->type = t;
  ir_set_attr_name(b->g, n, "init", init);
  ir_set_attr_floats(n, "args", args, nargs);
  return build_finish(b, n) && build_bind(b, s->name, s->name_loc, build_tensor(n));
}

/* IDENT "=" expr. A tensor takes the name unless it has one (y = x keeps x). */
static bool build_bind_stmt(Builder *b, const Stmt *s) {
  Value v;
  const Expr *e = s->value;
  bool ok = e->kind == EX_CALL && build_find_fn(b, e->name) ? build_call(b, e, s->name, &v)
                                                            : build_eval(b, e, &v);
  if (!ok) return false;
  if (v.kind == VAL_TENSOR && !v.node->name && !build_frame(b)->anonymous)
    v.node->name = build_node_name(b, s->name);
  return build_bind(b, s->name, s->name_loc, v);
}

static bool build_output_one(Builder *b, const char *name, Loc loc) {
  Binding *bd = build_lookup(b, name);
  if (!bd) return build_unknown_name(b, name, loc);
  char what[128];
  if (bd->v.kind != VAL_TENSOR) {
    diag_error(b->d, loc, "output '%s' must be a tensor, got %s", name,
               build_describe(&bd->v, what, sizeof what));
    return false;
  }
  Graph *g = b->g;
  for (int i = 0; i < g->noutputs; i++) {
    if (strcmp(g->outputs[i].name, name) != 0) continue;
    diag_error(b->d, loc, "'%s' is already an output", name);
    diag_note(b->d, b->output_locs[i], "'%s' was named as an output here", name);
    return false;
  }
  b->output_locs = arena_grow(&b->tmp, b->output_locs, (size_t)g->noutputs, (size_t)g->noutputs + 1,
                              sizeof *b->output_locs);
  b->output_locs[g->noutputs] = loc;
  ir_add_output(g, arena_strdup(&g->arena, name), bd->v.node);
  return true;
}

/* "output" IDENT { "," IDENT } */
static bool build_output(Builder *b, const Stmt *s) {
  if (!build_model_only(b, s, "output")) return false;
  for (int i = 0; i < s->nnames; i++)
    if (!build_output_one(b, s->names[i], s->name_locs[i])) return false;
  return true;
}

/* The loss of a train statement is a float scalar. */
static bool build_loss(Builder *b, const Stmt *s, Node **out) {
  Binding *bd = build_lookup(b, s->name);
  if (!bd) return build_unknown_name(b, s->name, s->name_loc);
  const Value *v = &bd->v;
  if (v->kind == VAL_TENSOR && v->node->type.rank == 0 && ir_dtype_is_float(v->node->type.dtype)) {
    *out = v->node;
    return true;
  }
  char what[128], ts[IR_TYPE_STR_MAX];
  diag_error(b->d, s->name_loc, "loss must be a scalar f32[], got %s",
             v->kind == VAL_TENSOR ? ir_type_str(&v->node->type, ts, sizeof ts)
                                   : build_describe(v, what, sizeof what));
  return false;
}

/* "train" IDENT "with" IDENT "(" [ arg { "," arg } ] ")" */
static bool build_train(Builder *b, const Stmt *s) {
  if (!build_model_only(b, s, "train")) return false;
  if (b->g->loss) {
    diag_error(b->d, s->loc, "a model has at most one train statement");
    diag_note(b->d, b->g->train_loc, "the first train statement is here");
    return false;
  }
  Node *loss = NULL;
  Optim optim;
  if (!build_loss(b, s, &loss) || !build_optimizer(b, s, &optim)) return false;
  b->g->loss = loss;
  b->g->optim = optim;
  b->g->train_loc = build_loc(b, s->loc);
  return true;
}

static bool build_stmt(Builder *b, const Stmt *s) {
  switch (s->kind) {
  case ST_INPUT:
    return build_input(b, s);
  case ST_PARAM:
    return build_param(b, s);
  case ST_BIND:
    return build_bind_stmt(b, s);
  case ST_OUTPUT:
    return build_output(b, s);
  case ST_TRAIN:
    return build_train(b, s);
  case ST_RETURN:
    diag_error(b->d, s->loc, "return outside a fn");
    return false;
  }
  ir_fatal("build_stmt: statement kind %d from the parser", (int)s->kind);
}

/* ---- The model ----------------------------------------------------------------------- */

/* Two fns of one name would make calls ambiguous. */
static bool build_check_fns(Builder *b) {
  const Ast *ast = b->ast;
  for (int i = 0; i < ast->nfns; i++) {
    for (int j = 0; j < i; j++) {
      if (strcmp(ast->fns[i]->name, ast->fns[j]->name) != 0) continue;
      diag_error(b->d, ast->fns[i]->loc, "fn '%s' is defined twice", ast->fns[i]->name);
      diag_note(b->d, ast->fns[j]->loc, "the first definition is here");
      return false;
    }
  }
  return true;
}

/* Every -D names a size parameter of the model. */
static bool build_check_defines(Builder *b, const Define *defs, int ndefs) {
  const Block *m = b->ast->model;
  for (int i = 0; i < ndefs; i++) {
    int k = 0;
    while (k < m->ndims && strcmp(m->dims[k].name, defs[i].name) != 0) k++;
    if (k < m->ndims) continue;
    diag_error(b->d, (Loc){0}, "model '%s' has no size parameter '%s'", m->name, defs[i].name);
    return false;
  }
  return true;
}

/* Size params: header defaults, overridden by -D (the last one wins); each is
 * >= 1 and bound as an integer in the model's scope. */
static bool build_sizes(Builder *b, const Define *defs, int ndefs) {
  const Block *m = b->ast->model;
  Graph *g = b->g;
  if (!build_check_defines(b, defs, ndefs)) return false;
  g->sizes = arena_array(&g->arena, (size_t)m->ndims + 1, sizeof *g->sizes);
  for (int i = 0; i < m->ndims; i++) {
    const DimDef *dd = &m->dims[i];
    int def = -1;
    for (int k = 0; k < ndefs; k++)
      if (strcmp(defs[k].name, dd->name) == 0) def = k;
    int64_t v = def >= 0 ? defs[def].value : dd->value;
    if (v < 1) {
      diag_error(b->d, def >= 0 ? (Loc){0} : dd->loc,
                 "size parameter '%s' must be >= 1, got %" PRId64 "%s", dd->name, v,
                 def >= 0 ? " (from -D)" : "");
      return false;
    }
    g->sizes[g->nsizes++] = (SizeParam){arena_strdup(&g->arena, dd->name), v};
    if (!build_bind(b, dd->name, dd->loc, build_int(v))) return false;
  }
  return true;
}

static bool build_model(Builder *b) {
  const Block *m = b->ast->model;
  for (int i = 0; i < m->nbody; i++)
    if (!build_stmt(b, &m->body[i])) return false;
  if (b->g->noutputs > 0 || b->g->loss) return true;
  diag_error(b->d, m->loc, "model has no output and no train statement");
  return false;
}

Graph *build_graph(const Ast *ast, const Define *defs, int ndefs, Diag *d) {
  if (!ast->model) {
    diag_error(d, (Loc){0}, "no model in this file");
    return NULL;
  }
  Builder *b = calloc(1, sizeof *b);
  IR_ASSERT(b, "build_graph: out of memory");
  b->ast = ast;
  b->d = d;
  b->g = ir_graph_new(ast->model->name);
  b->g->name = arena_strdup(&b->g->arena, ast->model->name);
  b->frames[0] = (Frame){.block = ast->model};
  bool ok = build_check_fns(b) && build_sizes(b, defs, ndefs) && build_model(b);
  Graph *g = b->g;
  arena_free(&b->tmp);
  free(b);
  if (!ok) {
    ir_graph_free(g);
    return NULL;
  }
  char msg[512];
  if (!ir_verify(g, msg, sizeof msg)) ir_fatal("build_graph made an invalid graph: %s", msg);
  return g;
}
