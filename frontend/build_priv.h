/* build_priv.h - what build.c (the evaluator) and builtins.c (the builtin table) share. */
#ifndef KILN_BUILD_PRIV_H
#define KILN_BUILD_PRIV_H

#include "build.h"

/* A value of the evaluator. Numbers stay numbers until they meet a tensor;
 * lists exist for arguments such as axis=[0, 2] and concat([a, b]). */
typedef enum ValKind {
  VAL_MISSING, /* an argument not given (the binder's marker) */
  VAL_NONE,    /* an optional argument left out: b of conv2d, axis of sum */
  VAL_TENSOR,
  VAL_INT,
  VAL_FLOAT,
  VAL_BOOL,
  VAL_LIST,
} ValKind;

typedef struct Value Value;
struct Value {
  ValKind kind;
  Node *node;   /* VAL_TENSOR */
  int64_t i;    /* VAL_INT */
  double f;     /* VAL_FLOAT */
  bool b;       /* VAL_BOOL */
  Value *elems; /* VAL_LIST */
  int nelems;
};

/* One name bound in a scope, and where. */
typedef struct Binding {
  const char *name;
  Value v;
  Loc loc;
} Binding;

/* A model's or an inlined call's names. A fn sees only its own scope. */
typedef struct Scope {
  Binding *items;
  int n, cap;
} Scope;

/* One inlined fn call (frames[0] is the model itself). */
typedef struct Frame {
  const Block *block;
  Scope scope;
  const char *prefix; /* "fc1", "outer.inner"; NULL in the model */
  bool anonymous;     /* inside a call not bound by NAME = f(...) */
  Loc call_loc;
} Frame;

#define BUILD_MAX_CALL_DEPTH 64
/* Evaluation recursion, across inlined calls too. The parser bounds one
 * expression tree's height to 5 * PARSE_MAX_DEPTH; this bounds their nesting
 * through fns, and so the C stack. */
#define BUILD_MAX_EVAL_DEPTH (8 * PARSE_MAX_DEPTH)

typedef struct Builder {
  const Ast *ast;
  Graph *g;
  Diag *d;
  Arena tmp; /* scopes and values, freed when the build ends */
  Frame frames[BUILD_MAX_CALL_DEPTH + 1];
  int depth; /* index of the current frame */
  int eval_depth;
  Loc *output_locs;              /* where each of g->outputs was named, for notes */
  const char *src_file, *g_file; /* Loc.file as given, and its copy in g */
} Builder;

/* ---- build.c ------------------------------------------------------------ */

Loc build_loc(Builder *b, Loc loc);
/* Evaluates e in the current scope; false after reporting an error. */
bool build_eval(Builder *b, const Expr *e, Value *out);
/* A node of op with inputs, located at loc; attributes are set by the
 * caller before build_finish. */
Node *build_node(Builder *b, OpKind op, Node *const *in, int nin, Loc loc);
/* Runs the shape rule; reports its message at the node's location. */
bool build_finish(Builder *b, Node *n);
/* a OP b for + - * / maximum minimum over numbers and tensors. */
bool build_arith(Builder *b, OpKind op, const Value *x, const Value *y, Loc loc, Value *out);
/* "a tensor f32[3,4]", "the integer 3", ... for messages. */
const char *build_describe(const Value *v, char *buf, size_t len);
/* t's element count is at most IR_MAX_NUMEL, else an error at loc. */
bool build_check_numel(Builder *b, const Type *t, Loc loc);
/* v is an integer (not a bool). */
bool build_is_int(const Value *v);
bool build_is_number(const Value *v);
double build_number(const Value *v);

/* ---- builtins.c --------------------------------------------------------- */

/* Evaluates a call of the builtin function call->name (build_is_builtin). */
bool build_builtin_call(Builder *b, const Expr *call, Value *out);
bool build_is_builtin(const char *name);
/* The train statement's optimizer into g->optim. */
bool build_optimizer(Builder *b, const Stmt *s, Optim *out);
/* A param's INIT: its name and float arguments (at most IR_MAX_ATTR_LEN). */
bool build_init(Builder *b, const Stmt *s, const Type *t, const char **init, double *args,
                int *nargs);
/* The closest of names to name within edit distance 2, or NULL. */
const char *build_suggest(const char *name, const char *const *names, int n);
/* The closest builtin or fn name, for "unknown function" messages. */
const char *build_suggest_function(const Builder *b, const char *name);

#endif
