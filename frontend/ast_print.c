/* ast_print.c - the AST as indented text, for kiln dump --stage=ast.
 *
 * One line per model, fn and statement, each ending in "  # FILE:LINE:COL"
 * (the block's name, the statement's first token). Blocks come in source
 * order, statements indented by two spaces:
 *
 *   model mlp(batch=128, hidden=512)  # mlp.kl:2:7
 *     input x: f32[batch, 784]  # mlp.kl:3:3
 *     param w1: f32[784, hidden] = glorot  # mlp.kl:5:3
 *     param w0: f32[(* 2 hidden)] = normal(0.02)  # ...
 *     bind h = (call relu (+ (@ x w1) b1))  # ...
 *     output logits, h  # ...
 *     train loss with sgd(lr=0.01, momentum=0.9)  # ...
 *   fn linear(x, n_in, n_out)  # ...
 *     return (+ (@ x w) b)  # ...
 *
 * Expressions and dims are fully parenthesized S-expressions: (OP lhs rhs)
 * for + - * / @, (neg x), (call f arg ... name=arg), (list a b),
 * (index x i ...) where a slice is (: lo hi) with () for a missing bound,
 * as in (index x (: () ()) (neg 1)) for x[:, -1]. Integers print as such;
 * floats print with the fewest digits that read back to the same double and
 * always with a '.' or an exponent (3. prints as 3.0), so the two never look
 * alike. */
#include <stdlib.h>
#include <string.h>

#include "ast.h"

static void ast_print_expr(FILE *f, const Expr *e);

/* The shortest %g form that strtod reads back exactly. */
static void ast_print_float(FILE *f, double v) {
  char buf[40];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  if (strspn(buf, "-0123456789") == strlen(buf)) strcat(buf, ".0");
  fputs(buf, f);
}

/* Arguments separated by sep; lead also puts sep before the first. */
static void ast_print_args(FILE *f, const Arg *args, int n, const char *sep, bool lead) {
  for (int i = 0; i < n; i++) {
    if (i > 0 || lead) fputs(sep, f);
    if (args[i].name) fprintf(f, "%s=", args[i].name);
    ast_print_expr(f, args[i].value);
  }
}

static void ast_print_bound(FILE *f, const Expr *e) {
  if (e)
    ast_print_expr(f, e);
  else
    fputs("()", f);
}

/* One index, after a space. */
static void ast_print_index(FILE *f, const Index *ix) {
  fputc(' ', f);
  if (!ix->is_slice) {
    ast_print_expr(f, ix->lo);
    return;
  }
  fputs("(: ", f);
  ast_print_bound(f, ix->lo);
  fputc(' ', f);
  ast_print_bound(f, ix->hi);
  fputc(')', f);
}

/* The parser bounds every tree's height, so this recursion is bounded too. */
static void ast_print_expr(FILE *f, const Expr *e) {
  switch (e->kind) {
  case EX_INT:
    fprintf(f, "%lld", (long long)e->ival);
    return;
  case EX_FLOAT:
    ast_print_float(f, e->fval);
    return;
  case EX_BOOL:
    fputs(e->bval ? "true" : "false", f);
    return;
  case EX_NAME:
    fputs(e->name, f);
    return;
  case EX_BINARY:
    fprintf(f, "(%c ", e->op);
    ast_print_expr(f, e->lhs);
    fputc(' ', f);
    ast_print_expr(f, e->rhs);
    break;
  case EX_NEG:
    fputs("(neg ", f);
    ast_print_expr(f, e->lhs);
    break;
  case EX_CALL:
    fprintf(f, "(call %s", e->name);
    ast_print_args(f, e->args, e->nargs, " ", true);
    break;
  case EX_INDEX:
    fputs("(index ", f);
    ast_print_expr(f, e->lhs);
    for (int i = 0; i < e->nidx; i++) ast_print_index(f, &e->idx[i]);
    break;
  case EX_LIST:
    fputs("(list", f);
    for (int i = 0; i < e->nelems; i++) {
      fputc(' ', f);
      ast_print_expr(f, e->elems[i]);
    }
    break;
  }
  fputc(')', f);
}

static void ast_print_loc(FILE *f, const Ast *ast, Loc loc) {
  const char *file = loc.file ? loc.file : ast->file ? ast->file : "<input>";
  fprintf(f, "  # %s:%d:%d\n", file, loc.line, loc.col);
}

static void ast_print_type(FILE *f, const TypeExpr *t) {
  fprintf(f, "%s[", ir_dtype_name(t->dtype));
  for (int i = 0; i < t->ndims; i++) {
    if (i > 0) fputs(", ", f);
    ast_print_expr(f, t->dims[i]);
  }
  fputc(']', f);
}

/* callee or callee(args), for a param's init and a train's optimizer. */
static void ast_print_callee(FILE *f, const Stmt *s, bool parens) {
  fputs(s->callee, f);
  if (!parens && s->nargs == 0) return;
  fputc('(', f);
  ast_print_args(f, s->args, s->nargs, ", ", false);
  fputc(')', f);
}

static void ast_print_stmt(FILE *f, const Ast *ast, const Stmt *s) {
  fputs("  ", f);
  switch (s->kind) {
  case ST_INPUT:
    fprintf(f, "input %s: ", s->name);
    break;
  case ST_PARAM:
    fprintf(f, "param %s: ", s->name);
    break;
  case ST_OUTPUT:
    fputs("output ", f);
    break;
  case ST_TRAIN:
    fprintf(f, "train %s with ", s->name);
    break;
  case ST_RETURN:
    fputs("return ", f);
    break;
  case ST_BIND:
    fprintf(f, "bind %s = ", s->name);
    break;
  }
  if (s->kind == ST_INPUT || s->kind == ST_PARAM) ast_print_type(f, &s->type);
  if (s->kind == ST_PARAM) {
    fputs(" = ", f);
    ast_print_callee(f, s, false);
  }
  if (s->kind == ST_TRAIN) ast_print_callee(f, s, true);
  if (s->kind == ST_RETURN || s->kind == ST_BIND) ast_print_expr(f, s->value);
  for (int i = 0; s->kind == ST_OUTPUT && i < s->nnames; i++)
    fprintf(f, "%s%s", i > 0 ? ", " : "", s->names[i]);
  ast_print_loc(f, ast, s->loc);
}

static void ast_print_block(FILE *f, const Ast *ast, const Block *b) {
  fprintf(f, "%s %s", b->is_model ? "model" : "fn", b->name);
  if (b->is_model && b->ndims > 0) fputc('(', f);
  for (int i = 0; i < b->ndims; i++)
    fprintf(f, "%s%s=%lld", i > 0 ? ", " : "", b->dims[i].name, (long long)b->dims[i].value);
  if (b->is_model && b->ndims > 0) fputc(')', f);
  if (!b->is_model) fputc('(', f);
  for (int i = 0; i < b->nparams; i++) fprintf(f, "%s%s", i > 0 ? ", " : "", b->params[i]);
  if (!b->is_model) fputc(')', f);
  ast_print_loc(f, ast, b->loc);
  for (int i = 0; i < b->nbody; i++) ast_print_stmt(f, ast, &b->body[i]);
}

static bool ast_before(Loc a, Loc b) {
  return a.line < b.line || (a.line == b.line && a.col < b.col);
}

void ast_print(FILE *f, const Ast *ast) {
  bool model_done = !ast->model;
  for (int i = 0; i < ast->nfns; i++) {
    if (!model_done && ast_before(ast->model->loc, ast->fns[i]->loc)) {
      ast_print_block(f, ast, ast->model);
      model_done = true;
    }
    ast_print_block(f, ast, ast->fns[i]);
  }
  if (!model_done) ast_print_block(f, ast, ast->model);
}
