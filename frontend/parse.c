/* parse.c - recursive-descent parser of .kl files into the AST of ast.h. */
#include <stdarg.h>
#include <string.h>

#include "ast.h"
#include "lex.h"

/* Besides nesting (PARSE_MAX_DEPTH), left-associative chains such as
 * a+b+c+... or x[0][0]... grow a tree without nesting. Capping every tree's
 * height lets the printer and the graph builder recurse over it safely. */
#define PARSE_MAX_HEIGHT (5 * PARSE_MAX_DEPTH)

/* Names and literals are cut in messages so one bad token cannot flood stderr. */
#define PARSE_SHOW_MAX 40

typedef struct Parser {
  Arena *a;
  Diag *d;
  Lexer lx;
  Token tok;  /* the current token */
  Token peek; /* the one after it, once looked at */
  bool has_peek;
  bool failed; /* an error was reported: report no more, unwind */
  int depth;   /* nesting of ( [ and unary - */
} Parser;

/* ---- tokens and errors ---- */

static void parse_advance(Parser *P) {
  if (P->tok.kind == TK_ERROR) return;
  if (P->has_peek) {
    P->tok = P->peek;
    P->has_peek = false;
  } else if (!lex_next(&P->lx, &P->tok)) {
    P->failed = true;
  }
}

/* The token after the current one, lexed only when asked for so that lexical
 * errors come in source order. */
static const Token *parse_peek(Parser *P) {
  if (!P->has_peek) {
    if (P->tok.kind == TK_ERROR) return &P->tok;
    if (!lex_next(&P->lx, &P->peek)) P->failed = true;
    P->has_peek = true;
  }
  return &P->peek;
}

static bool parse_is(const Parser *P, TokKind k) { return P->tok.kind == k; }

/* Reports the first error only; returns whether it was reported, so that a
 * caller adds its notes only to its own error. */
static bool parse_error(Parser *P, Loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool parse_error(Parser *P, Loc loc, const char *fmt, ...) {
  if (P->failed) return false;
  P->failed = true;
  va_list ap;
  va_start(ap, fmt);
  diag_verror(P->d, loc, fmt, ap);
  va_end(ap);
  return true;
}

/* A token as a message shows it: 'x', '(', keyword 'fn', a newline. */
static const char *parse_show(Parser *P, const Token *t) {
  if (t->kind == TK_EOF) return "the end of the file";
  if (t->kind == TK_NEWLINE) return "a newline";
  if (t->kind == TK_ERROR) return "an invalid token";
  if (lex_is_keyword(t->kind))
    return arena_printf(P->a, "keyword '%s'", lex_kind_spelling(t->kind));
  if (t->kind == TK_IDENT || t->kind == TK_INT || t->kind == TK_FLOAT) {
    int n = t->len > PARSE_SHOW_MAX ? PARSE_SHOW_MAX : (int)t->len;
    return arena_printf(P->a, "'%.*s%s'", n, t->text, t->len > (size_t)n ? "..." : "");
  }
  return arena_printf(P->a, "'%s'", lex_kind_spelling(t->kind));
}

static bool parse_accept(Parser *P, TokKind k) {
  if (!parse_is(P, k)) return false;
  parse_advance(P);
  return true;
}

/* Consumes a k, or reports "expected 'k' CONTEXT, found ...". */
static bool parse_expect(Parser *P, TokKind k, const char *context) {
  if (parse_accept(P, k)) return true;
  parse_error(P, P->tok.loc, "expected '%s' %s, found %s", lex_kind_spelling(k), context,
              parse_show(P, &P->tok));
  return false;
}

/* Consumes the closer of a bracket opened at `open`, or reports it missing. */
static bool parse_close(Parser *P, TokKind close, TokKind open_kind, Loc open) {
  if (parse_accept(P, close)) return true;
  if (parse_error(P, P->tok.loc, "expected '%s' to close '%s', found %s", lex_kind_spelling(close),
                  lex_kind_spelling(open_kind), parse_show(P, &P->tok)))
    diag_note(P->d, open, "to match this '%s'", lex_kind_spelling(open_kind));
  return false;
}

/* An identifier's text, copied into the arena; NULL (reported) otherwise. */
static const char *parse_name(Parser *P, Loc *loc, const char *context) {
  if (!parse_is(P, TK_IDENT)) {
    parse_error(P, P->tok.loc, "expected a name %s, found %s", context, parse_show(P, &P->tok));
    return NULL;
  }
  if (loc) *loc = P->tok.loc;
  const char *s = arena_strndup(P->a, P->tok.text, P->tok.len);
  parse_advance(P);
  return s;
}

static void parse_skip_newlines(Parser *P) {
  while (parse_accept(P, TK_NEWLINE)) {
  }
}

/* Makes room for one more element in an arena array of n used, *cap slots. */
static void *parse_reserve(Parser *P, void *arr, int n, int *cap, size_t sz) {
  if (n < *cap) return arr;
  int ncap = *cap ? *cap * 2 : 4;
  arr = arena_grow(P->a, arr, (size_t)n, (size_t)ncap, sz);
  *cap = ncap;
  return arr;
}

/* Entering one more level of ( [ or unary -: bounded so the C stack is too. */
static bool parse_enter(Parser *P, Loc loc) {
  if (++P->depth <= PARSE_MAX_DEPTH) return true;
  parse_error(P, loc, "expression nested too deeply (the limit is %d levels)", PARSE_MAX_DEPTH);
  return false;
}

static void parse_leave(Parser *P) { P->depth--; }

/* Checks the height of a tree about to be built; see PARSE_MAX_HEIGHT. */
static bool parse_height(Parser *P, int h, Loc loc) {
  if (h <= PARSE_MAX_HEIGHT) return true;
  parse_error(P, loc,
              "expression too large (more than %d levels of operators); split it into "
              "several statements",
              PARSE_MAX_HEIGHT);
  return false;
}

static int parse_max(int a, int b) { return a > b ? a : b; }

static Expr *parse_node(Parser *P, ExprKind kind, Loc loc) {
  Expr *e = arena_alloc(P->a, sizeof *e);
  e->kind = kind;
  e->loc = loc;
  return e;
}

/* ---- expressions ---- */

static Expr *parse_expr(Parser *P, int *h);

/* arg = kwarg | expr ;
 * kwarg = IDENT "=" expr ; */
static bool parse_arg(Parser *P, Arg *arg, int *h) {
  arg->loc = P->tok.loc;
  if (parse_is(P, TK_IDENT) && parse_peek(P)->kind == TK_ASSIGN) {
    arg->name = parse_name(P, NULL, "");
    parse_advance(P); /* the '=' */
  }
  arg->value = parse_expr(P, h);
  return arg->value != NULL;
}

/* A keyword argument may not follow its own name or precede a positional one. */
static bool parse_check_arg(Parser *P, const Arg *args, int n) {
  const Arg *arg = &args[n];
  if (!arg->name) {
    if (n > 0 && args[n - 1].name)
      return !parse_error(P, arg->loc, "positional argument after keyword argument");
    return true;
  }
  for (int i = 0; i < n; i++) {
    if (args[i].name && strcmp(args[i].name, arg->name) == 0) {
      if (parse_error(P, arg->loc, "duplicate keyword argument '%s'", arg->name))
        diag_note(P->d, args[i].loc, "'%s' is first given here", arg->name);
      return false;
    }
  }
  return true;
}

/* args = [ arg { "," arg } ] ")" ;   after the "(" at open */
static bool parse_args(Parser *P, Loc open, Arg **out, int *nout, int *h) {
  Arg *args = NULL;
  int n = 0, cap = 0;
  *h = 0;
  if (!parse_is(P, TK_RPAREN)) {
    do {
      args = parse_reserve(P, args, n, &cap, sizeof *args);
      int ha = 0;
      if (!parse_arg(P, &args[n], &ha) || !parse_check_arg(P, args, n)) return false;
      *h = parse_max(*h, ha);
      n++;
    } while (parse_accept(P, TK_COMMA));
  }
  if (!parse_close(P, TK_RPAREN, TK_LPAREN, open)) return false;
  *out = args;
  *nout = n;
  return true;
}

/* "[" [ expr { "," expr } ] "]" ;   the list literal, at its "[" */
static Expr *parse_list(Parser *P, int *h) {
  Expr *e = parse_node(P, EX_LIST, P->tok.loc);
  if (!parse_enter(P, P->tok.loc)) return NULL;
  parse_advance(P);
  int cap = 0, he = 0;
  *h = 0;
  if (!parse_is(P, TK_RBRACKET)) {
    do {
      e->elems = parse_reserve(P, e->elems, e->nelems, &cap, sizeof *e->elems);
      if (!(e->elems[e->nelems++] = parse_expr(P, &he))) return NULL;
      *h = parse_max(*h, he);
    } while (parse_accept(P, TK_COMMA));
  }
  parse_leave(P);
  *h += 1;
  if (!parse_height(P, *h, e->loc)) return NULL;
  return parse_close(P, TK_RBRACKET, TK_LBRACKET, e->loc) ? e : NULL;
}

/* "(" expr ")" ;   a parenthesized expression is no node of its own */
static Expr *parse_paren(Parser *P, int *h) {
  Loc open = P->tok.loc;
  if (!parse_enter(P, open)) return NULL;
  parse_advance(P);
  Expr *e = parse_expr(P, h);
  parse_leave(P);
  return e && parse_close(P, TK_RPAREN, TK_LPAREN, open) ? e : NULL;
}

/* A literal token as a node: NUMBER, "true" or "false"; NULL for any other. */
static Expr *parse_literal(Parser *P, const Token *t) {
  Expr *e = NULL;
  if (t->kind == TK_INT) {
    e = parse_node(P, EX_INT, t->loc);
    e->ival = t->ival;
  } else if (t->kind == TK_FLOAT) {
    e = parse_node(P, EX_FLOAT, t->loc);
    e->fval = t->fval;
  } else if (t->kind == TK_TRUE || t->kind == TK_FALSE) {
    e = parse_node(P, EX_BOOL, t->loc);
    e->bval = t->kind == TK_TRUE;
  }
  return e;
}

/* primary = NUMBER | "true" | "false" | IDENT | "(" expr ")"
 *         | "[" [ expr { "," expr } ] "]" ; */
static Expr *parse_primary(Parser *P, int *h) {
  Token t = P->tok;
  *h = 1;
  if (t.kind == TK_LPAREN) return parse_paren(P, h);
  if (t.kind == TK_LBRACKET) return parse_list(P, h);
  if (t.kind == TK_IDENT) {
    Expr *e = parse_node(P, EX_NAME, t.loc);
    e->name = parse_name(P, NULL, "");
    return e;
  }
  Expr *e = parse_literal(P, &t);
  if (!e) {
    parse_error(P, t.loc, "expected an expression, found %s", parse_show(P, &t));
    return NULL;
  }
  parse_advance(P);
  return e;
}

/* index = expr | [ expr ] ":" [ expr ] ; */
static bool parse_index(Parser *P, Index *ix, int *h) {
  int hl = 0, hh = 0;
  ix->loc = P->tok.loc;
  if (!parse_is(P, TK_COLON) && !(ix->lo = parse_expr(P, &hl))) return false;
  if (parse_accept(P, TK_COLON)) {
    ix->is_slice = true;
    if (!parse_is(P, TK_COMMA) && !parse_is(P, TK_RBRACKET) && !(ix->hi = parse_expr(P, &hh)))
      return false;
  }
  *h = parse_max(hl, hh);
  return true;
}

/* "[" index { "," index } "]" ;   indexing lhs, at the "[" */
static Expr *parse_subscript(Parser *P, Expr *lhs, int *h) {
  Expr *e = parse_node(P, EX_INDEX, P->tok.loc);
  e->lhs = lhs;
  if (!parse_enter(P, e->loc)) return NULL;
  parse_advance(P);
  if (parse_is(P, TK_RBRACKET)) {
    parse_error(P, P->tok.loc, "expected an index, found ']'");
    return NULL;
  }
  int cap = 0, hi = 0;
  do {
    e->idx = parse_reserve(P, e->idx, e->nidx, &cap, sizeof *e->idx);
    if (!parse_index(P, &e->idx[e->nidx++], &hi)) return NULL;
    *h = parse_max(*h, hi);
  } while (parse_accept(P, TK_COMMA));
  parse_leave(P);
  *h += 1;
  if (!parse_height(P, *h, e->loc)) return NULL;
  return parse_close(P, TK_RBRACKET, TK_LBRACKET, e->loc) ? e : NULL;
}

/* "(" [ arg { "," arg } ] ")" ;   calling the name `callee`, at the "(" */
static Expr *parse_call(Parser *P, Expr *callee, int *h) {
  Loc open = P->tok.loc;
  Expr *e = parse_node(P, EX_CALL, callee->loc);
  e->name = callee->name;
  if (!parse_enter(P, open)) return NULL;
  parse_advance(P);
  int ha = 0;
  if (!parse_args(P, open, &e->args, &e->nargs, &ha)) return NULL;
  parse_leave(P);
  *h = ha + 1;
  return parse_height(P, *h, e->loc) ? e : NULL;
}

/* postfix = primary { "(" [ arg { "," arg } ] ")" | "[" index { "," index } "]" } ; */
static Expr *parse_postfix(Parser *P, int *h) {
  bool is_name = parse_is(P, TK_IDENT);
  Expr *e = parse_primary(P, h);
  while (e && (parse_is(P, TK_LPAREN) || parse_is(P, TK_LBRACKET))) {
    if (parse_is(P, TK_LBRACKET)) {
      e = parse_subscript(P, e, h);
    } else if (is_name) {
      e = parse_call(P, e, h);
    } else {
      parse_error(P, P->tok.loc, "only a name can be called (as in relu(x))");
      return NULL;
    }
    is_name = false;
  }
  return e;
}

/* unary = "-" unary | postfix ; */
static Expr *parse_unary(Parser *P, int *h) {
  if (!parse_is(P, TK_MINUS)) return parse_postfix(P, h);
  Expr *e = parse_node(P, EX_NEG, P->tok.loc);
  if (!parse_enter(P, e->loc)) return NULL;
  parse_advance(P);
  e->lhs = parse_unary(P, h);
  parse_leave(P);
  *h += 1;
  return e->lhs && parse_height(P, *h, e->loc) ? e : NULL;
}

/* Builds lhs op rhs at the operator token t, checking the tree's height. */
static Expr *parse_binary(Parser *P, const Token *t, Expr *lhs, Expr *rhs, int *h, int hr) {
  *h = parse_max(*h, hr) + 1;
  if (!parse_height(P, *h, t->loc)) return NULL;
  Expr *e = parse_node(P, EX_BINARY, t->loc);
  e->op = lex_kind_spelling(t->kind)[0];
  e->lhs = lhs;
  e->rhs = rhs;
  return e;
}

/* term = unary { ( "*" | "/" | "@" ) unary } ; */
static Expr *parse_term(Parser *P, int *h) {
  Expr *e = parse_unary(P, h);
  while (e && (parse_is(P, TK_STAR) || parse_is(P, TK_SLASH) || parse_is(P, TK_AT))) {
    Token op = P->tok;
    int hr = 0;
    parse_advance(P);
    Expr *rhs = parse_unary(P, &hr);
    e = rhs ? parse_binary(P, &op, e, rhs, h, hr) : NULL;
  }
  return e;
}

/* expr = term { ( "+" | "-" ) term } ; */
static Expr *parse_expr(Parser *P, int *h) {
  Expr *e = parse_term(P, h);
  while (e && (parse_is(P, TK_PLUS) || parse_is(P, TK_MINUS))) {
    Token op = P->tok;
    int hr = 0;
    parse_advance(P);
    Expr *rhs = parse_term(P, &hr);
    e = rhs ? parse_binary(P, &op, e, rhs, h, hr) : NULL;
  }
  return e;
}

/* An expression at the top of a statement or argument. */
static Expr *parse_value(Parser *P) {
  int h = 0;
  return parse_expr(P, &h);
}

/* ---- types ---- */

static Expr *parse_dim(Parser *P, int *h);

/* datom = INT | IDENT | "(" dim ")" ; */
static Expr *parse_datom(Parser *P, int *h) {
  Token t = P->tok;
  *h = 1;
  if (t.kind == TK_INT) {
    Expr *e = parse_node(P, EX_INT, t.loc);
    e->ival = t.ival;
    parse_advance(P);
    return e;
  }
  if (t.kind == TK_IDENT) {
    Expr *e = parse_node(P, EX_NAME, t.loc);
    e->name = parse_name(P, NULL, "");
    return e;
  }
  if (t.kind != TK_LPAREN) {
    parse_error(P, t.loc, "expected a dimension (an integer or a size name), found %s",
                parse_show(P, &t));
    return NULL;
  }
  if (!parse_enter(P, t.loc)) return NULL;
  parse_advance(P);
  Expr *e = parse_dim(P, h);
  parse_leave(P);
  return e && parse_close(P, TK_RPAREN, TK_LPAREN, t.loc) ? e : NULL;
}

/* dterm = datom { ( "*" | "/" ) datom } ; */
static Expr *parse_dterm(Parser *P, int *h) {
  Expr *e = parse_datom(P, h);
  while (e && (parse_is(P, TK_STAR) || parse_is(P, TK_SLASH))) {
    Token op = P->tok;
    int hr = 0;
    parse_advance(P);
    Expr *rhs = parse_datom(P, &hr);
    e = rhs ? parse_binary(P, &op, e, rhs, h, hr) : NULL;
  }
  return e;
}

/* dim = dterm { ( "+" | "-" ) dterm } ; */
static Expr *parse_dim(Parser *P, int *h) {
  Expr *e = parse_dterm(P, h);
  while (e && (parse_is(P, TK_PLUS) || parse_is(P, TK_MINUS))) {
    Token op = P->tok;
    int hr = 0;
    parse_advance(P);
    Expr *rhs = parse_dterm(P, &hr);
    e = rhs ? parse_binary(P, &op, e, rhs, h, hr) : NULL;
  }
  return e;
}

/* ( "f32" | "i32" | "f64" ) */
static bool parse_dtype(Parser *P, TypeExpr *ty) {
  ty->loc = P->tok.loc;
  if (!parse_is(P, TK_IDENT)) {
    parse_error(P, P->tok.loc, "expected a type such as f32[...], found %s",
                parse_show(P, &P->tok));
    return false;
  }
  const char *name = arena_strndup(P->a, P->tok.text, P->tok.len);
  if (!ir_dtype_lookup(name, &ty->dtype)) {
    parse_error(P, P->tok.loc, "unknown dtype %s (expected f32, i32 or f64)",
                parse_show(P, &P->tok));
    return false;
  }
  parse_advance(P);
  return true;
}

/* type = ( "f32" | "i32" | "f64" ) "[" [ dim { "," dim } ] "]" ; */
static bool parse_type(Parser *P, TypeExpr *ty) {
  if (!parse_dtype(P, ty)) return false;
  Loc open = P->tok.loc;
  if (!parse_expect(P, TK_LBRACKET, "after the dtype (a scalar is f32[])")) return false;
  int cap = 0, h = 0;
  if (!parse_is(P, TK_RBRACKET)) {
    do {
      ty->dims = parse_reserve(P, ty->dims, ty->ndims, &cap, sizeof *ty->dims);
      if (!(ty->dims[ty->ndims++] = parse_dim(P, &h))) return false;
    } while (parse_accept(P, TK_COMMA));
  }
  return parse_close(P, TK_RBRACKET, TK_LBRACKET, open);
}

/* ---- statements ---- */

/* "input" IDENT ":" type */
static bool parse_input(Parser *P, Stmt *s) {
  s->kind = ST_INPUT;
  parse_advance(P);
  s->name = parse_name(P, &s->name_loc, "after 'input'");
  return s->name && parse_expect(P, TK_COLON, "after the input's name") && parse_type(P, &s->type);
}

/* init = IDENT [ "(" [ arg { "," arg } ] ")" ] ; */
static bool parse_init(Parser *P, Stmt *s) {
  s->callee = parse_name(P, &s->callee_loc, "of an initializer (such as glorot or zeros)");
  if (!s->callee) return false;
  Loc open = P->tok.loc;
  int h = 0;
  if (!parse_accept(P, TK_LPAREN)) return true;
  return parse_args(P, open, &s->args, &s->nargs, &h);
}

/* "param" IDENT ":" type "=" init */
static bool parse_param(Parser *P, Stmt *s) {
  s->kind = ST_PARAM;
  parse_advance(P);
  s->name = parse_name(P, &s->name_loc, "after 'param'");
  return s->name && parse_expect(P, TK_COLON, "after the param's name") &&
         parse_type(P, &s->type) &&
         parse_expect(P, TK_ASSIGN, "and an initializer after the param's type") &&
         parse_init(P, s);
}

/* "output" IDENT { "," IDENT } */
static bool parse_output(Parser *P, Stmt *s) {
  s->kind = ST_OUTPUT;
  parse_advance(P);
  int cap = 0, lcap = 0;
  do {
    s->names = parse_reserve(P, s->names, s->nnames, &cap, sizeof *s->names);
    s->name_locs = parse_reserve(P, s->name_locs, s->nnames, &lcap, sizeof(Loc));
    const char *name = parse_name(P, &s->name_locs[s->nnames], "of a value to output");
    if (!name) return false;
    s->names[s->nnames++] = name;
  } while (parse_accept(P, TK_COMMA));
  return true;
}

/* "train" IDENT "with" IDENT "(" [ arg { "," arg } ] ")" */
static bool parse_train(Parser *P, Stmt *s) {
  s->kind = ST_TRAIN;
  parse_advance(P);
  s->name = parse_name(P, &s->name_loc, "of the loss after 'train'");
  if (!s->name || !parse_expect(P, TK_WITH, "after the loss name")) return false;
  s->callee = parse_name(P, &s->callee_loc, "of an optimizer (sgd or adam) after 'with'");
  if (!s->callee) return false;
  Loc open = P->tok.loc;
  int h = 0;
  return parse_expect(P, TK_LPAREN, "after the optimizer's name (as in sgd(lr = 0.01))") &&
         parse_args(P, open, &s->args, &s->nargs, &h);
}

/* IDENT "=" expr */
static bool parse_bind(Parser *P, Stmt *s) {
  s->kind = ST_BIND;
  s->name = parse_name(P, &s->name_loc, "");
  if (!parse_is(P, TK_ASSIGN)) {
    parse_error(P, P->tok.loc,
                "expected '=' after '%s' (a statement binds a name: NAME = EXPR), found %s",
                s->name, parse_show(P, &P->tok));
    return false;
  }
  parse_advance(P);
  return (s->value = parse_value(P)) != NULL;
}

/* "return" expr ;   the last statement of a fn */
static bool parse_return(Parser *P, const Block *b, Stmt *s) {
  s->kind = ST_RETURN;
  if (b->is_model) {
    parse_error(P, s->loc,
                "'return' is allowed only in a fn (a model names its results with 'output')");
    return false;
  }
  parse_advance(P);
  return (s->value = parse_value(P)) != NULL;
}

/* stmt = "input" IDENT ":" type | "param" IDENT ":" type "=" init
 *      | "output" IDENT { "," IDENT } | "train" IDENT "with" IDENT "(" [ arg { "," arg } ] ")"
 *      | "return" expr | IDENT "=" expr ; */
static bool parse_stmt(Parser *P, const Block *b, Stmt *s) {
  TokKind k = P->tok.kind;
  s->loc = P->tok.loc;
  if (k == TK_INPUT) return parse_input(P, s);
  if (k == TK_PARAM) return parse_param(P, s);
  if (k == TK_OUTPUT) return parse_output(P, s);
  if (k == TK_TRAIN) return parse_train(P, s);
  if (k == TK_RETURN) return parse_return(P, b, s);
  if (k == TK_IDENT) return parse_bind(P, s);
  /* A model or fn keyword here most likely follows a block left open. */
  const char *hint = k == TK_MODEL || k == TK_FN ? " (is a '}' missing?)" : "";
  parse_error(P, s->loc, "expected a statement, found %s%s", parse_show(P, &P->tok), hint);
  return false;
}

static const char *parse_block_kind(const Block *b) { return b->is_model ? "model" : "fn"; }

/* A return must end a fn, and a fn must end with one. */
static bool parse_check_return(Parser *P, const Block *b, Loc close) {
  for (int i = 0; i + 1 < b->nbody; i++)
    if (b->body[i].kind == ST_RETURN)
      return !parse_error(P, b->body[i].loc, "'return' must be the last statement of fn '%s'",
                          b->name);
  if (b->is_model || (b->nbody > 0 && b->body[b->nbody - 1].kind == ST_RETURN)) return true;
  return !parse_error(P, close, "fn '%s' must end with a 'return' statement", b->name);
}

/* The end of the file inside a block. */
static bool parse_unclosed(Parser *P, const Block *b, Loc open) {
  if (parse_error(P, P->tok.loc, "expected '}' to close %s '%s', found the end of the file",
                  parse_block_kind(b), b->name))
    diag_note(P->d, open, "to match this '{'");
  return false;
}

/* After a statement: a newline, or the '}' that closes the block. */
static bool parse_stmt_end(Parser *P, const Block *b, Loc open) {
  if (parse_is(P, TK_RBRACE) || parse_is(P, TK_NEWLINE)) return true;
  if (parse_is(P, TK_EOF)) return parse_unclosed(P, b, open);
  parse_error(P, P->tok.loc, "expected a newline after the statement, found %s",
              parse_show(P, &P->tok));
  return false;
}

/* block = "{" { NEWLINE } [ stmt { NEWLINE { NEWLINE } stmt } { NEWLINE } ] "}" ; */
static bool parse_block(Parser *P, Block *b) {
  Loc open = P->tok.loc;
  if (!parse_is(P, TK_LBRACE)) {
    parse_error(P, open, "expected '{' to open the body of %s '%s', found %s", parse_block_kind(b),
                b->name, parse_show(P, &P->tok));
    return false;
  }
  parse_advance(P);
  parse_skip_newlines(P);
  int cap = 0;
  while (!parse_is(P, TK_RBRACE)) {
    if (P->failed) return false;
    if (parse_is(P, TK_EOF)) return parse_unclosed(P, b, open);
    b->body = parse_reserve(P, b->body, b->nbody, &cap, sizeof *b->body);
    if (!parse_stmt(P, b, &b->body[b->nbody++]) || !parse_stmt_end(P, b, open)) return false;
    parse_skip_newlines(P);
  }
  Loc close = P->tok.loc;
  parse_advance(P);
  return parse_check_return(P, b, close) && !P->failed;
}

/* ---- top level ---- */

/* Reports a name defined twice, with a note at its first definition. */
static bool parse_duplicate(Parser *P, const char *what, const char *name, Loc loc, Loc first) {
  if (parse_error(P, loc, "duplicate %s '%s'", what, name))
    diag_note(P->d, first, "'%s' is first defined here", name);
  return false;
}

/* dimdef = IDENT "=" INT ; */
static bool parse_dimdef(Parser *P, Block *b, DimDef *dd) {
  dd->name = parse_name(P, &dd->loc, "of a size parameter");
  if (!dd->name || !parse_expect(P, TK_ASSIGN, "and its default value after the size parameter"))
    return false;
  for (int i = 0; i < b->ndims; i++)
    if (strcmp(b->dims[i].name, dd->name) == 0)
      return parse_duplicate(P, "size parameter", dd->name, dd->loc, b->dims[i].loc);
  Loc at = P->tok.loc;
  bool neg = parse_accept(P, TK_MINUS);
  if (!parse_is(P, TK_INT)) {
    parse_error(P, P->tok.loc, "expected an integer value for size parameter '%s', found %s",
                dd->name, parse_show(P, &P->tok));
    return false;
  }
  dd->value = neg ? -P->tok.ival : P->tok.ival;
  if (dd->value < 1)
    return !parse_error(P, at, "size parameter '%s' must be >= 1, got %lld", dd->name,
                        (long long)dd->value);
  parse_advance(P);
  return true;
}

/* The header's "(" [ dimdef { "," dimdef } ] ")" */
static bool parse_dimdefs(Parser *P, Block *b) {
  Loc open = P->tok.loc;
  if (!parse_accept(P, TK_LPAREN)) return true;
  int cap = 0;
  if (!parse_is(P, TK_RPAREN)) {
    do {
      b->dims = parse_reserve(P, b->dims, b->ndims, &cap, sizeof *b->dims);
      if (!parse_dimdef(P, b, &b->dims[b->ndims])) return false;
      b->ndims++;
    } while (parse_accept(P, TK_COMMA));
  }
  return parse_close(P, TK_RPAREN, TK_LPAREN, open);
}

/* model = "model" IDENT [ "(" [ dimdef { "," dimdef } ] ")" ] block ; */
static bool parse_model(Parser *P, Ast *ast) {
  Block *b = arena_alloc(P->a, sizeof *b);
  b->is_model = true;
  parse_advance(P);
  if (!(b->name = parse_name(P, &b->loc, "after 'model'"))) return false;
  if (ast->model) {
    if (parse_error(P, b->loc,
                    "second model '%s' (a file holds exactly one model; the first is '%s')",
                    b->name, ast->model->name))
      diag_note(P->d, ast->model->loc, "model '%s' is defined here", ast->model->name);
    return false;
  }
  ast->model = b;
  return parse_dimdefs(P, b) && parse_block(P, b);
}

/* The fn's "(" [ IDENT { "," IDENT } ] ")" */
static bool parse_fn_params(Parser *P, Block *b) {
  Loc open = P->tok.loc;
  if (!parse_expect(P, TK_LPAREN, "and the fn's arguments after its name")) return false;
  int cap = 0, lcap = 0;
  if (!parse_is(P, TK_RPAREN)) {
    do {
      b->params = parse_reserve(P, b->params, b->nparams, &cap, sizeof *b->params);
      b->param_locs = parse_reserve(P, b->param_locs, b->nparams, &lcap, sizeof(Loc));
      Loc *loc = &b->param_locs[b->nparams];
      if (!(b->params[b->nparams] = parse_name(P, loc, "of an argument"))) return false;
      for (int i = 0; i < b->nparams; i++)
        if (strcmp(b->params[i], b->params[b->nparams]) == 0)
          return parse_duplicate(P, "argument", b->params[i], *loc, b->param_locs[i]);
      b->nparams++;
    } while (parse_accept(P, TK_COMMA));
  }
  return parse_close(P, TK_RPAREN, TK_LPAREN, open);
}

/* fn = "fn" IDENT "(" [ IDENT { "," IDENT } ] ")" block ; */
static bool parse_fn(Parser *P, Ast *ast, int *cap) {
  Block *b = arena_alloc(P->a, sizeof *b);
  parse_advance(P);
  if (!(b->name = parse_name(P, &b->loc, "after 'fn'"))) return false;
  for (int i = 0; i < ast->nfns; i++)
    if (strcmp(ast->fns[i]->name, b->name) == 0)
      return parse_duplicate(P, "fn", b->name, b->loc, ast->fns[i]->loc);
  ast->fns = parse_reserve(P, ast->fns, ast->nfns, cap, sizeof *ast->fns);
  ast->fns[ast->nfns++] = b;
  return parse_fn_params(P, b) && parse_block(P, b);
}

/* file = { fn | model } ;   exactly one model */
bool parse_file(Ast *out, Arena *a, Diag *d, const char *src, size_t len) {
  memset(out, 0, sizeof *out);
  out->file = d->file;
  Parser P = {.a = a, .d = d};
  lex_init(&P.lx, d, src, len);
  if (!lex_next(&P.lx, &P.tok)) return false;
  int cap = 0;
  while (!P.failed) {
    parse_skip_newlines(&P);
    if (parse_is(&P, TK_EOF)) break;
    if (parse_is(&P, TK_MODEL))
      parse_model(&P, out);
    else if (parse_is(&P, TK_FN))
      parse_fn(&P, out, &cap);
    else
      parse_error(&P, P.tok.loc, "expected 'model' or 'fn', found %s", parse_show(&P, &P.tok));
  }
  if (!P.failed && !out->model)
    parse_error(&P, (Loc){d->file, 1, 1},
                "no model in this file (a file needs exactly one 'model')");
  if (P.failed) memset(out, 0, sizeof *out);
  return !P.failed;
}
