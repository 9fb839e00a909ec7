/* builtins.c - the builtin functions of SPEC 1.6, the optimizers and the param inits, as tables. */
#include "build_priv.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- Signatures -------------------------------------------------------------- */

/* What an argument may be. */
typedef enum ArgKind {
  AK_TENSOR,     /* a tensor */
  AK_OPT_TENSOR, /* a tensor, or left out (default "none") */
  AK_OPERAND,    /* a tensor or a number: maximum, minimum */
  AK_TENSORS,    /* a non-empty list of tensors */
  AK_INT,        /* an integer: an axis */
  AK_COUNT,      /* an integer >= 1: a size, a stride */
  AK_NAT,        /* an integer >= 0: a padding */
  AK_NUM,        /* an integer or a float */
  AK_BOOL,       /* true or false */
  AK_AXES,       /* an integer, a non-empty list of integers, or left out */
  AK_INTS,       /* a list of integers */
} ArgKind;

#define BI_MAX_PARAMS 6

/* One parameter: its name (for keywords), kind, default and, for the
 * generic builder, the op attribute it sets. */
typedef struct ParamSpec {
  const char *name;
  ArgKind kind;
  const char *def;  /* NULL: required; "none": may be left out; else a literal */
  const char *attr; /* op attribute set from it, or NULL */
} ParamSpec;

/* clang-format off */
#define REQ(n, k)        {n, k, NULL, NULL}
#define OPT(n, k, d)     {n, k, d, NULL}
#define ATTR(n, k, d, a) {n, k, d, a}
#define X                REQ("x", AK_TENSOR)
#define NO_PARAMS        {REQ(NULL, AK_TENSOR)}
/* clang-format on */

/* A call's arguments, bound to the parameters of a signature. */
typedef struct Args {
  Value v[BI_MAX_PARAMS];
  Loc loc[BI_MAX_PARAMS]; /* of the argument, or of the call for defaults */
  Loc call;
} Args;

typedef struct Sig {
  const char *what; /* "sum", "optimizer adam" */
  const ParamSpec *params;
  int n;
} Sig;

static Sig bi_sig(const char *what, const ParamSpec *params) {
  Sig s = {what, params, 0};
  while (s.n < BI_MAX_PARAMS && params[s.n].name) s.n++;
  return s;
}

/* ---- The builtin table ------------------------------------------------------------ */

typedef struct Builtin Builtin;
typedef bool (*BuiltinFn)(Builder *b, const Builtin *bi, Args *a, Value *out);
struct Builtin {
  const char *name;
  OpKind op;
  BuiltinFn build; /* makes the node(s) from the bound arguments */
  ParamSpec params[BI_MAX_PARAMS];
};

static bool bi_generic(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_binary(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_reduce(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_softmax(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_reshape(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_flatten(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_transpose(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_permute(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_concat(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_pool(Builder *b, const Builtin *bi, Args *a, Value *out);
static bool bi_causal_mask(Builder *b, const Builtin *bi, Args *a, Value *out);

/* clang-format off */
#define UNARY(name, op)      {name, op, bi_generic, {X}}
#define REDUCE(name, op)     {name, op, bi_reduce, {X, OPT("axis", AK_AXES, "none"), OPT("keepdim", AK_BOOL, "false")}}
#define POOL(name, op)       {name, op, bi_pool, {X, REQ("k", AK_COUNT), OPT("stride", AK_COUNT, "none")}}
#define LOSS(name, op, a, b) {name, op, bi_generic, {REQ(a, AK_TENSOR), REQ(b, AK_TENSOR)}}
#define T(name)              REQ(name, AK_TENSOR)

/* SPEC 1.6, with PyTorch's defaults. Every parameter is positional or keyword. */
static const Builtin builtins[] = {
  /* torch.<name>(x), F.gelu (erf form), F.silu */
  UNARY("relu", OP_RELU), UNARY("sigmoid", OP_SIGMOID), UNARY("tanh", OP_TANH),
  UNARY("exp", OP_EXP), UNARY("log", OP_LOG), UNARY("sqrt", OP_SQRT), UNARY("rsqrt", OP_RSQRT),
  UNARY("abs", OP_ABS), UNARY("gelu", OP_GELU), UNARY("silu", OP_SILU),
  /* torch.maximum / torch.minimum: a number becomes a scalar constant; torch.pow */
  {"maximum",     OP_MAXIMUM,     bi_binary,  {REQ("a", AK_OPERAND), REQ("b", AK_OPERAND)}},
  {"minimum",     OP_MINIMUM,     bi_binary,  {REQ("a", AK_OPERAND), REQ("b", AK_OPERAND)}},
  {"pow",         OP_POW,         bi_generic, {X, ATTR("c", AK_NUM, NULL, "exponent")}},
  /* torch.sum / mean / amax(x, dim, keepdim), F.softmax, F.log_softmax, F.layer_norm */
  REDUCE("sum", OP_SUM), REDUCE("mean", OP_MEAN), REDUCE("max", OP_MAX),
  {"softmax",     OP_SOFTMAX,     bi_softmax, {X, OPT("axis", AK_INT, "-1")}},
  {"log_softmax", OP_LOG_SOFTMAX, bi_softmax, {X, OPT("axis", AK_INT, "-1")}},
  {"layer_norm",  OP_LAYER_NORM,  bi_generic, {X, T("gamma"), T("beta"), ATTR("eps", AK_NUM, "1e-5", "eps")}},
  /* x.reshape, torch.flatten(start_dim), x.transpose, x.permute, torch.cat, F.embedding */
  {"reshape",     OP_RESHAPE,     bi_reshape,   {X, REQ("shape", AK_INTS)}},
  {"flatten",     OP_RESHAPE,     bi_flatten,   {X, OPT("start", AK_INT, "1")}},
  {"transpose",   OP_PERMUTE,     bi_transpose, {X, REQ("a", AK_INT), REQ("b", AK_INT)}},
  {"permute",     OP_PERMUTE,     bi_permute,   {X, REQ("perm", AK_INTS)}},
  {"concat",      OP_CONCAT,      bi_concat,    {REQ("tensors", AK_TENSORS), OPT("axis", AK_INT, "0")}},
  {"embedding",   OP_EMBEDDING,   bi_generic,   {T("ids"), T("table")}},
  /* F.conv2d (NCHW, b optional), F.max_pool2d, F.avg_pool2d */
  {"conv2d",      OP_CONV2D,      bi_generic,   {X, T("w"), OPT("b", AK_OPT_TENSOR, "none"),
                                                 ATTR("stride", AK_COUNT, "1", "stride"),
                                                 ATTR("padding", AK_NAT, "0", "padding")}},
  POOL("max_pool2d", OP_MAX_POOL2D), POOL("avg_pool2d", OP_AVG_POOL2D),
  /* nn.LSTM(batch_first=True): one layer, zero initial state */
  {"lstm",        OP_LSTM,        bi_generic,   {X, T("w_ih"), T("w_hh"), T("b_ih"), T("b_hh")}},
  {"causal_mask", OP_CAUSAL_MASK, bi_causal_mask, {REQ("n", AK_COUNT)}},
  /* F.mse_loss, F.cross_entropy, F.binary_cross_entropy(_with_logits), all mean */
  LOSS("mse_loss", OP_MSE_LOSS, "pred", "target"),
  LOSS("cross_entropy", OP_CROSS_ENTROPY, "logits", "labels"),
  LOSS("bce_loss", OP_BCE_LOSS, "p", "target"),
  LOSS("bce_with_logits", OP_BCE_WITH_LOGITS, "z", "target"),
};
/* clang-format on */

#define NBUILTINS ((int)(sizeof builtins / sizeof builtins[0]))

static const Builtin *bi_find(const char *name) {
  for (int i = 0; i < NBUILTINS; i++)
    if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
  return NULL;
}

bool build_is_builtin(const char *name) { return bi_find(name) != NULL; }

/* ---- Suggestions ------------------------------------------------------------------ */

#define SUGGEST_MAX_LEN 64

/* Levenshtein distance, for names up to SUGGEST_MAX_LEN bytes. */
static int bi_edit_distance(const char *s, const char *t) {
  size_t m = strlen(s), n = strlen(t);
  if (m > SUGGEST_MAX_LEN || n > SUGGEST_MAX_LEN) return SUGGEST_MAX_LEN;
  int row[SUGGEST_MAX_LEN + 1];
  for (size_t j = 0; j <= n; j++) row[j] = (int)j;
  for (size_t i = 1; i <= m; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= n; j++) {
      int up = row[j], best = diag + (s[i - 1] != t[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[n];
}

/* Within 2 edits, and fewer edits than the name is long ('a' is no typo of 'x'). */
const char *build_suggest(const char *name, const char *const *names, int n) {
  const char *best = NULL;
  int best_d = 3, len = (int)strlen(name);
  for (int i = 0; i < n; i++) {
    int d = bi_edit_distance(name, names[i]);
    if (d < best_d && d < len) {
      best = names[i];
      best_d = d;
    }
  }
  return best;
}

const char *build_suggest_function(const Builder *b, const char *name) {
  const char *names[NBUILTINS];
  for (int i = 0; i < NBUILTINS; i++) names[i] = builtins[i].name;
  const char *near = build_suggest(name, names, NBUILTINS);
  for (int i = 0; !near && i < b->ast->nfns; i++)
    near = build_suggest(name, &b->ast->fns[i]->name, 1);
  return near;
}

/* ---- Binding arguments ------------------------------------------------------------- */

static int bi_nrequired(const Sig *sig) {
  int n = 0;
  for (int i = 0; i < sig->n; i++) n += sig->params[i].def == NULL;
  return n;
}

static bool bi_count_error(Builder *b, const Sig *sig, int given, Loc loc) {
  int lo = bi_nrequired(sig), hi = sig->n;
  if (lo == hi)
    diag_error(b->d, loc, "%s takes %d argument%s, got %d", sig->what, hi, hi == 1 ? "" : "s",
               given);
  else
    diag_error(b->d, loc, "%s takes %d to %d arguments, got %d", sig->what, lo, hi, given);
  return false;
}

static int bi_unknown_keyword(Builder *b, const Sig *sig, const Arg *arg) {
  const char *names[BI_MAX_PARAMS];
  for (int i = 0; i < sig->n; i++) names[i] = sig->params[i].name;
  const char *near = build_suggest(arg->name, names, sig->n);
  if (near)
    diag_error(b->d, arg->loc, "unknown keyword argument '%s' of %s; did you mean '%s'?", arg->name,
               sig->what, near);
  else
    diag_error(b->d, arg->loc, "unknown keyword argument '%s' of %s", arg->name, sig->what);
  return -1;
}

/* The parameter an argument goes to: the next positional one, or the one it
 * names. -1 after an error. */
static int bi_slot(Builder *b, const Sig *sig, const Arg *arg, int nargs, int *npos, bool *kw,
                   const Args *out) {
  if (!arg->name) {
    if (*kw) {
      diag_error(b->d, arg->loc, "positional argument follows keyword argument");
      return -1;
    }
    if (*npos >= sig->n) return bi_count_error(b, sig, nargs, arg->loc), -1;
    return (*npos)++;
  }
  *kw = true;
  for (int k = 0; k < sig->n; k++) {
    if (strcmp(sig->params[k].name, arg->name) != 0) continue;
    if (out->v[k].kind == VAL_MISSING) return k;
    diag_error(b->d, arg->loc, "argument '%s' of %s is given twice", arg->name, sig->what);
    return -1;
  }
  return bi_unknown_keyword(b, sig, arg);
}

static bool bi_all(const Value *v, bool (*pred)(const Value *)) {
  for (int i = 0; i < v->nelems; i++)
    if (!pred(&v->elems[i])) return false;
  return true;
}

static bool bi_is_tensor(const Value *v) { return v->kind == VAL_TENSOR; }

/* What a kind accepts, for messages, and whether v is one. */
static const char *bi_accepts(ArgKind k, const Value *v, bool *ok) {
  bool list = v->kind == VAL_LIST, tensor = v->kind == VAL_TENSOR;
  switch (k) {
  case AK_TENSOR:
  case AK_OPT_TENSOR:
    *ok = tensor;
    return "a tensor";
  case AK_OPERAND:
    *ok = tensor || build_is_number(v);
    return "a tensor or a number";
  case AK_TENSORS:
    *ok = list && v->nelems > 0 && bi_all(v, bi_is_tensor);
    return "a non-empty list of tensors";
  case AK_INT:
  case AK_COUNT:
  case AK_NAT:
    *ok = build_is_int(v);
    return "an integer";
  case AK_NUM:
    *ok = build_is_number(v);
    return "a number";
  case AK_BOOL:
    *ok = v->kind == VAL_BOOL;
    return "true or false";
  case AK_AXES:
    *ok = build_is_int(v) || (list && v->nelems > 0 && bi_all(v, build_is_int));
    return "an integer or a non-empty list of integers";
  case AK_INTS:
    *ok = list && bi_all(v, build_is_int);
    return "a list of integers";
  }
  ir_fatal("bi_accepts: argument kind %d", (int)k);
}

static bool bi_check_kind(Builder *b, const Sig *sig, int k, const Value *v, Loc loc) {
  const ParamSpec *p = &sig->params[k];
  bool ok;
  const char *want = bi_accepts(p->kind, v, &ok);
  char what[128];
  if (!ok) {
    diag_error(b->d, loc, "argument '%s' of %s must be %s, got %s", p->name, sig->what, want,
               build_describe(v, what, sizeof what));
    return false;
  }
  int64_t min = p->kind == AK_COUNT ? 1 : 0;
  if ((p->kind == AK_COUNT || p->kind == AK_NAT) && v->i < min) {
    diag_error(b->d, loc, "argument '%s' of %s must be >= %" PRId64 ", got %" PRId64, p->name,
               sig->what, min, v->i);
    return false;
  }
  return true;
}

/* A default as written in the table: "none", "true"/"false", or a number. */
static Value bi_default(const ParamSpec *p) {
  if (strcmp(p->def, "none") == 0) return (Value){.kind = VAL_NONE};
  if (p->kind == AK_BOOL) return (Value){.kind = VAL_BOOL, .b = strcmp(p->def, "true") == 0};
  if (p->kind == AK_NUM) return (Value){.kind = VAL_FLOAT, .f = strtod(p->def, NULL)};
  return (Value){.kind = VAL_INT, .i = strtoll(p->def, NULL, 10)};
}

/* Python's argument binding: positional arguments in order, then keywords,
 * then defaults for what is left out; every value checked against its kind. */
static bool bi_bind(Builder *b, const Sig *sig, const Arg *args, int nargs, Loc call, Args *out) {
  /* 1. Each argument to its parameter, evaluated in the caller's scope. */
  out->call = call;
  for (int i = 0; i < BI_MAX_PARAMS; i++) {
    out->v[i] = (Value){.kind = VAL_MISSING};
    out->loc[i] = call;
  }
  int npos = 0;
  bool kw = false;
  for (int i = 0; i < nargs; i++) {
    int k = bi_slot(b, sig, &args[i], nargs, &npos, &kw, out);
    if (k < 0 || !build_eval(b, args[i].value, &out->v[k])) return false;
    out->loc[k] = args[i].loc;
    if (!bi_check_kind(b, sig, k, &out->v[k], args[i].loc)) return false;
  }
  /* 2. Defaults, or a missing argument. */
  for (int k = 0; k < sig->n; k++) {
    const ParamSpec *p = &sig->params[k];
    if (out->v[k].kind != VAL_MISSING) continue;
    if (p->def) {
      out->v[k] = bi_default(p);
    } else if (nargs < bi_nrequired(sig)) {
      return bi_count_error(b, sig, nargs, call);
    } else {
      diag_error(b->d, call, "missing argument '%s' of %s", p->name, sig->what);
      return false;
    }
  }
  return true;
}

bool build_builtin_call(Builder *b, const Expr *call, Value *out) {
  const Builtin *bi = bi_find(call->name);
  IR_ASSERT(bi, "build_builtin_call: '%s' is no builtin", call->name);
  Sig sig = bi_sig(bi->name, bi->params);
  Args a;
  return bi_bind(b, &sig, call->args, call->nargs, call->loc, &a) && bi->build(b, bi, &a, out);
}

/* ---- Builders ------------------------------------------------------------------------ */

static bool bi_finish(Builder *b, Node *n, Value *out) {
  if (!build_finish(b, n)) return false;
  *out = (Value){.kind = VAL_TENSOR, .node = n};
  return true;
}

/* Sets the attribute from a numeric argument, by the op schema's kind. */
static void bi_set_attr(Node *n, const char *attr, const Value *v) {
  const OpInfo *info = ir_op_info(n->op);
  for (int k = 0; k < info->nattrs; k++) {
    if (strcmp(info->attrs[k].name, attr) != 0) continue;
    if (info->attrs[k].kind == ATTR_INT)
      ir_set_attr_int(n, attr, v->i);
    else
      ir_set_attr_float(n, attr, build_number(v));
    return;
  }
  ir_fatal("bi_set_attr: op %s has no attribute '%s'", info->name, attr);
}

/* Tensor arguments are the inputs in order; numeric ones with an attr set it. */
static bool bi_generic(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *in[BI_MAX_PARAMS];
  int nin = 0;
  for (int i = 0; i < BI_MAX_PARAMS; i++)
    if (a->v[i].kind == VAL_TENSOR) in[nin++] = a->v[i].node;
  Node *n = build_node(b, bi->op, in, nin, a->call);
  for (int i = 0; i < BI_MAX_PARAMS && bi->params[i].name; i++)
    if (bi->params[i].attr) bi_set_attr(n, bi->params[i].attr, &a->v[i]);
  return bi_finish(b, n, out);
}

static bool bi_binary(Builder *b, const Builtin *bi, Args *a, Value *out) {
  return build_arith(b, bi->op, &a->v[0], &a->v[1], a->call, out);
}

/* An axis in -rank..rank-1 (PyTorch's dim), made non-negative. */
static bool bi_axis(Builder *b, int64_t axis, const Type *t, Loc loc, int *out) {
  if (axis >= -t->rank && axis < t->rank) {
    *out = (int)(axis < 0 ? axis + t->rank : axis);
    return true;
  }
  char ts[IR_TYPE_STR_MAX];
  ir_type_str(t, ts, sizeof ts);
  if (t->rank == 0)
    diag_error(b->d, loc, "axis %" PRId64 " is out of range for %s, which has no dims", axis, ts);
  else
    diag_error(b->d, loc, "axis %" PRId64 " is out of range for %s (expected %d..%d)", axis, ts,
               -t->rank, t->rank - 1);
  return false;
}

/* axis=A: absent (all axes), an int or a list; normalized, sorted, unique. */
static bool bi_axes(Builder *b, const Value *v, Loc loc, const Type *t, int64_t *axes, int *n) {
  bool seen[IR_MAX_RANK] = {false};
  int count = v->kind == VAL_LIST ? v->nelems : 1;
  for (int i = 0; v->kind != VAL_NONE && i < count; i++) {
    int64_t raw = v->kind == VAL_LIST ? v->elems[i].i : v->i;
    int axis;
    if (!bi_axis(b, raw, t, loc, &axis)) return false;
    if (seen[axis]) {
      diag_error(b->d, loc, "axis %" PRId64 " is repeated", raw);
      return false;
    }
    seen[axis] = true;
  }
  *n = 0;
  for (int i = 0; i < t->rank; i++)
    if (v->kind == VAL_NONE || seen[i]) axes[(*n)++] = i;
  return true;
}

static bool bi_reduce(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *x = a->v[0].node;
  int64_t axes[IR_MAX_RANK];
  int n;
  if (!bi_axes(b, &a->v[1], a->loc[1], &x->type, axes, &n)) return false;
  Node *r = build_node(b, bi->op, &x, 1, a->call);
  ir_set_attr_ints(r, "axes", axes, n);
  ir_set_attr_int(r, "keepdim", a->v[2].b);
  return bi_finish(b, r, out);
}

static bool bi_softmax(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *x = a->v[0].node;
  int axis;
  if (!bi_axis(b, a->v[1].i, &x->type, a->loc[1], &axis)) return false;
  Node *n = build_node(b, bi->op, &x, 1, a->call);
  ir_set_attr_int(n, "axis", axis);
  return bi_finish(b, n, out);
}

static Node *bi_reshape_node(Builder *b, Node *x, const int64_t *dims, int rank, Loc loc) {
  Node *n = build_node(b, OP_RESHAPE, &x, 1, loc);
  n->type = ir_type(x->type.dtype, rank, dims);
  return n;
}

/* "[2, -1]" for messages. */
static const char *bi_ints_str(const Value *list, char *buf, size_t len) {
  size_t at = (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < list->nelems && at < len; i++)
    at += (size_t)snprintf(buf + at, len - at, "%s%" PRId64, i ? ", " : "", list->elems[i].i);
  if (at < len) snprintf(buf + at, len - at, "]");
  return buf;
}

/* Dims >= 1 with at most one -1; *infer is its index or -1, *known the
 * product of the others (0 when it overflows: no tensor has that many). */
static bool bi_shape_dims(Builder *b, const Value *shape, Loc loc, int64_t *dims, int *infer,
                          int64_t *known) {
  *infer = -1;
  *known = 1;
  for (int i = 0; i < shape->nelems; i++) {
    int64_t d = dims[i] = shape->elems[i].i;
    if (d == -1 && *infer < 0) {
      *infer = i;
    } else if (d == -1) {
      diag_error(b->d, loc, "only one dimension of a reshape can be -1");
      return false;
    } else if (d < 1) {
      diag_error(b->d, loc, "reshape dimension must be >= 1 or -1, got %" PRId64, d);
      return false;
    } else if (__builtin_mul_overflow(*known, d, known)) {
      *known = 0;
    }
  }
  return true;
}

/* x.reshape(shape), one -1 resolved from the element count. */
static bool bi_reshape(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *x = a->v[0].node;
  const Value *shape = &a->v[1];
  char ts[IR_TYPE_STR_MAX], ss[256];
  if (shape->nelems > IR_MAX_RANK) {
    diag_error(b->d, a->loc[1], "%s: a tensor has at most %d dims, got %d", bi->name, IR_MAX_RANK,
               shape->nelems);
    return false;
  }
  int64_t dims[IR_MAX_RANK], known, numel = ir_type_numel(&x->type);
  int infer;
  if (!bi_shape_dims(b, shape, a->loc[1], dims, &infer, &known)) return false;
  if (infer >= 0 && known != 0 && numel % known == 0) dims[infer] = numel / known;
  if ((infer >= 0 && (known == 0 || numel % known != 0)) || (infer < 0 && known != numel)) {
    diag_error(b->d, a->loc[1], "cannot reshape %s (%" PRId64 " elements) to %s",
               ir_type_str(&x->type, ts, sizeof ts), numel, bi_ints_str(shape, ss, sizeof ss));
    return false;
  }
  return bi_finish(b, bi_reshape_node(b, x, dims, shape->nelems, a->call), out);
}

/* torch.flatten(x, start_dim=start): the dims from start on become one. */
static bool bi_flatten(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *x = a->v[0].node;
  int start;
  if (!bi_axis(b, a->v[1].i, &x->type, a->loc[1], &start)) return false;
  int64_t dims[IR_MAX_RANK];
  for (int i = 0; i < start; i++) dims[i] = x->type.dims[i];
  dims[start] = 1;
  for (int i = start; i < x->type.rank; i++) dims[start] *= x->type.dims[i];
  (void)bi;
  return bi_finish(b, bi_reshape_node(b, x, dims, start + 1, a->call), out);
}

static bool bi_permute_node(Builder *b, Node *x, const int64_t *perm, Loc loc, Value *out) {
  Node *n = build_node(b, OP_PERMUTE, &x, 1, loc);
  ir_set_attr_ints(n, "perm", perm, x->type.rank);
  return bi_finish(b, n, out);
}

/* x.transpose(a, b): the permutation swapping two axes. */
static bool bi_transpose(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *x = a->v[0].node;
  int p, q;
  if (!bi_axis(b, a->v[1].i, &x->type, a->loc[1], &p) ||
      !bi_axis(b, a->v[2].i, &x->type, a->loc[2], &q))
    return false;
  int64_t perm[IR_MAX_RANK];
  for (int i = 0; i < x->type.rank; i++) perm[i] = i;
  perm[p] = q;
  perm[q] = p;
  (void)bi;
  return bi_permute_node(b, x, perm, a->call, out);
}

/* x.permute(perm): every axis once. */
static bool bi_permute(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *x = a->v[0].node;
  const Value *list = &a->v[1];
  if (list->nelems != x->type.rank) {
    char ts[IR_TYPE_STR_MAX];
    diag_error(b->d, a->loc[1], "%s of %s needs %d axes, got %d", bi->name,
               ir_type_str(&x->type, ts, sizeof ts), x->type.rank, list->nelems);
    return false;
  }
  int64_t perm[IR_MAX_RANK];
  bool seen[IR_MAX_RANK] = {false};
  for (int i = 0; i < list->nelems; i++) {
    int axis;
    if (!bi_axis(b, list->elems[i].i, &x->type, a->loc[1], &axis)) return false;
    if (seen[axis]) {
      diag_error(b->d, a->loc[1], "axis %" PRId64 " is repeated", list->elems[i].i);
      return false;
    }
    seen[axis] = true;
    perm[i] = axis;
  }
  return bi_permute_node(b, x, perm, a->call, out);
}

/* torch.cat(tensors, dim=axis); the axis counts in the first tensor's rank. */
static bool bi_concat(Builder *b, const Builtin *bi, Args *a, Value *out) {
  const Value *list = &a->v[0];
  Node **in = arena_array(&b->tmp, (size_t)list->nelems, sizeof *in);
  for (int i = 0; i < list->nelems; i++) in[i] = list->elems[i].node;
  int axis;
  if (!bi_axis(b, a->v[1].i, &in[0]->type, a->loc[1], &axis)) return false;
  Node *n = build_node(b, bi->op, in, list->nelems, a->call);
  ir_set_attr_int(n, "axis", axis);
  return bi_finish(b, n, out);
}

/* F.max_pool2d / F.avg_pool2d(x, k, stride=k). */
static bool bi_pool(Builder *b, const Builtin *bi, Args *a, Value *out) {
  Node *x = a->v[0].node;
  Node *n = build_node(b, bi->op, &x, 1, a->call);
  ir_set_attr_int(n, "kernel", a->v[1].i);
  ir_set_attr_int(n, "stride", a->v[2].kind == VAL_NONE ? a->v[1].i : a->v[2].i);
  return bi_finish(b, n, out);
}

/* causal_mask(n): f32[n, n], its type fixed here (the op has no inputs). */
static bool bi_causal_mask(Builder *b, const Builtin *bi, Args *a, Value *out) {
  int64_t n = a->v[0].i;
  Type t = ir_type(DT_F32, 2, (int64_t[]){n, n});
  if (!build_check_numel(b, &t, a->loc[0])) return false;
  Node *m = build_node(b, bi->op, NULL, 0, a->call);
  m->type = t;
  return bi_finish(b, m, out);
}

/* ---- Optimizers ---------------------------------------------------------------------- */

/* torch.optim.SGD / Adam and their defaults (SPEC 1.3). */
static const struct {
  const char *name;
  OptimKind kind;
  ParamSpec params[BI_MAX_PARAMS];
} optimizers[] = {
    {"sgd",
     OPTIM_SGD,
     {REQ("lr", AK_NUM), OPT("momentum", AK_NUM, "0"), OPT("weight_decay", AK_NUM, "0")}},
    {"adam",
     OPTIM_ADAM,
     {REQ("lr", AK_NUM), OPT("beta1", AK_NUM, "0.9"), OPT("beta2", AK_NUM, "0.999"),
      OPT("eps", AK_NUM, "1e-8"), OPT("weight_decay", AK_NUM, "0")}},
};

/* Where each hyper-parameter goes, and its valid range [lo, hi) as
 * torch.optim checks it. */
static const struct {
  const char *name;
  size_t offset;
  double lo, hi;
} optim_fields[] = {
    {"lr", offsetof(Optim, lr), 0, INFINITY},
    {"momentum", offsetof(Optim, momentum), 0, INFINITY},
    {"weight_decay", offsetof(Optim, weight_decay), 0, INFINITY},
    {"beta1", offsetof(Optim, beta1), 0, 1},
    {"beta2", offsetof(Optim, beta2), 0, 1},
    {"eps", offsetof(Optim, eps), 0, INFINITY},
};

static bool bi_optim_field(Builder *b, const char *opt, const char *name, double v, Loc loc,
                           Optim *o) {
  for (size_t i = 0; i < sizeof optim_fields / sizeof optim_fields[0]; i++) {
    if (strcmp(optim_fields[i].name, name) != 0) continue;
    if (!(v >= optim_fields[i].lo && v < optim_fields[i].hi)) {
      diag_error(b->d, loc, "argument '%s' of %s must be in [%g, %g), got %g", name, opt,
                 optim_fields[i].lo, optim_fields[i].hi, v);
      return false;
    }
    *(double *)((char *)o + optim_fields[i].offset) = v;
    return true;
  }
  ir_fatal("bi_optim_field: no field '%s'", name);
}

static bool bi_unknown(Builder *b, const char *what, const char *name, Loc loc,
                       const char *const *names, int n) {
  const char *near = build_suggest(name, names, n);
  if (near)
    diag_error(b->d, loc, "unknown %s '%s'; did you mean '%s'?", what, name, near);
  else
    diag_error(b->d, loc, "unknown %s '%s'", what, name);
  return false;
}

bool build_optimizer(Builder *b, const Stmt *s, Optim *out) {
  const int n = (int)(sizeof optimizers / sizeof optimizers[0]);
  const char *names[sizeof optimizers / sizeof optimizers[0]];
  int k = 0;
  for (int i = 0; i < n; i++) names[i] = optimizers[i].name;
  while (k < n && strcmp(optimizers[k].name, s->callee) != 0) k++;
  if (k == n) return bi_unknown(b, "optimizer", s->callee, s->callee_loc, names, n);
  Sig sig = bi_sig(optimizers[k].name, optimizers[k].params);
  Args a;
  if (!bi_bind(b, &sig, s->args, s->nargs, s->callee_loc, &a)) return false;
  *out = (Optim){.kind = optimizers[k].kind};
  for (int i = 0; i < sig.n; i++)
    if (!bi_optim_field(b, sig.what, sig.params[i].name, build_number(&a.v[i]), a.loc[i], out))
      return false;
  return true;
}

/* ---- Param inits ---------------------------------------------------------------------- */

/* torch.nn.init: zeros_, ones_, constant_, normal_, uniform_, xavier_uniform_,
 * kaiming_normal_ (fan-in). Arguments are stored in table order. */
static const struct {
  const char *name;
  int min_rank; /* fan-in and fan-out need two dims */
  ParamSpec params[BI_MAX_PARAMS];
} inits[] = {
    {"zeros", 0, NO_PARAMS},
    {"ones", 0, NO_PARAMS},
    {"constant", 0, {REQ("value", AK_NUM)}},
    {"normal", 0, {OPT("mean", AK_NUM, "0"), REQ("std", AK_NUM)}},
    {"uniform", 0, {REQ("lo", AK_NUM), REQ("hi", AK_NUM)}},
    {"glorot", 2, NO_PARAMS},
    {"he", 2, NO_PARAMS},
};

/* torch.nn.init's own checks. */
static bool bi_init_check(Builder *b, const char *init, const Args *a) {
  if (strcmp(init, "normal") == 0 && !(build_number(&a->v[1]) >= 0)) {
    diag_error(b->d, a->loc[1], "argument 'std' of normal must be >= 0, got %g",
               build_number(&a->v[1]));
    return false;
  }
  if (strcmp(init, "uniform") == 0 && !(build_number(&a->v[0]) <= build_number(&a->v[1]))) {
    diag_error(b->d, a->loc[0], "uniform needs lo <= hi, got %g > %g", build_number(&a->v[0]),
               build_number(&a->v[1]));
    return false;
  }
  return true;
}

static bool bi_init_rank(Builder *b, const Stmt *s, int min_rank, const Type *t) {
  if (t->rank >= min_rank) return true;
  char ts[IR_TYPE_STR_MAX];
  diag_error(b->d, s->callee_loc, "%s needs a param of rank >= %d (fan-in and fan-out), got %s",
             s->callee, min_rank, ir_type_str(t, ts, sizeof ts));
  return false;
}

bool build_init(Builder *b, const Stmt *s, const Type *t, const char **init, double *args,
                int *nargs) {
  const int n = (int)(sizeof inits / sizeof inits[0]);
  const char *names[sizeof inits / sizeof inits[0]];
  int k = 0;
  for (int i = 0; i < n; i++) names[i] = inits[i].name;
  while (k < n && strcmp(inits[k].name, s->callee) != 0) k++;
  if (k == n) return bi_unknown(b, "init", s->callee, s->callee_loc, names, n);
  if (!bi_init_rank(b, s, inits[k].min_rank, t)) return false;
  /* normal(std) is SPEC's short form of normal(mean = 0, std). */
  Arg one;
  const Arg *given = s->args;
  if (strcmp(s->callee, "normal") == 0 && s->nargs == 1 && !s->args[0].name) {
    one = s->args[0];
    one.name = "std";
    given = &one;
  }
  Sig sig = bi_sig(inits[k].name, inits[k].params);
  Args a;
  if (!bi_bind(b, &sig, given, s->nargs, s->callee_loc, &a) || !bi_init_check(b, s->callee, &a))
    return false;
  *init = inits[k].name;
  *nargs = sig.n;
  for (int i = 0; i < sig.n; i++) args[i] = build_number(&a.v[i]);
  return true;
}
