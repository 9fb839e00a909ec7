/* ast.h - the syntax tree of a .kl file, as the parser reads it. */
#ifndef KILN_AST_H
#define KILN_AST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../ir/arena.h"
#include "../ir/diag.h"
#include "../ir/ir.h"

typedef enum ExprKind {
  EX_INT,    /* ival: 128 */
  EX_FLOAT,  /* fval: 0.5, 1e-3, 3. */
  EX_BOOL,   /* bval: true, false */
  EX_NAME,   /* name */
  EX_BINARY, /* lhs op rhs, op one of + - * / @ */
  EX_NEG,    /* -lhs */
  EX_CALL,   /* name(args) */
  EX_INDEX,  /* lhs[idx, ...] */
  EX_LIST,   /* [elems, ...] */
} ExprKind;

typedef struct Expr Expr;

/* A call argument: positional when name is NULL, else name = value. */
typedef struct Arg {
  const char *name;
  Loc loc; /* of the name, or of the value when positional */
  Expr *value;
} Arg;

/* One index of x[...]: a single expression (is_slice false, lo holds it)
 * or a slice lo:hi where either bound may be NULL. */
typedef struct Index {
  bool is_slice;
  Expr *lo, *hi;
  Loc loc;
} Index;

struct Expr {
  ExprKind kind;
  Loc loc; /* binary: the operator; call: the callee; index: the '[' */
  int64_t ival;
  double fval;
  bool bval;
  const char *name; /* EX_NAME, EX_CALL */
  char op;          /* EX_BINARY */
  Expr *lhs, *rhs;  /* EX_BINARY; EX_NEG and EX_INDEX use lhs */
  Arg *args;        /* EX_CALL */
  int nargs;
  Index *idx; /* EX_INDEX */
  int nidx;
  Expr **elems; /* EX_LIST */
  int nelems;
};

/* f32[batch, 784]: dims are expressions of INT, NAME, + - * / and ( ). */
typedef struct TypeExpr {
  DType dtype;
  Loc loc;
  Expr **dims;
  int ndims;
} TypeExpr;

typedef enum StmtKind { ST_INPUT, ST_PARAM, ST_OUTPUT, ST_TRAIN, ST_RETURN, ST_BIND } StmtKind;

typedef struct Stmt {
  StmtKind kind;
  Loc loc;          /* the statement's first token */
  const char *name; /* input, param, bind: the bound name; train: the loss */
  Loc name_loc;
  TypeExpr type; /* input, param */
  /* param: the INIT (callee "glorot", args); train: the optimizer. */
  const char *callee;
  Loc callee_loc;
  Arg *args;
  int nargs;
  Expr *value;        /* bind, return */
  const char **names; /* output */
  Loc *name_locs;
  int nnames;
} Stmt;

/* A size parameter of the model header: batch = 128. */
typedef struct DimDef {
  const char *name;
  Loc loc;
  int64_t value;
} DimDef;

/* A model or a fn. */
typedef struct Block {
  bool is_model;
  const char *name;
  Loc loc;      /* the name */
  DimDef *dims; /* model */
  int ndims;
  const char **params; /* fn arguments */
  Loc *param_locs;
  int nparams;
  Stmt *body;
  int nbody;
} Block;

typedef struct Ast {
  const char *file;
  Block *model; /* exactly one */
  Block **fns;
  int nfns;
} Ast;

/* Lexes and parses src. On the first error, reports through d and returns
 * false. Everything is allocated in a. Never recurses deeper than
 * PARSE_MAX_DEPTH nested expressions. */
#define PARSE_MAX_DEPTH 200
bool parse_file(Ast *out, Arena *a, Diag *d, const char *src, size_t len);

/* The AST as indented text (kiln dump --stage=ast). */
void ast_print(FILE *f, const Ast *ast);

#endif
