/* lex.h - the tokens of a .kl file, produced one at a time on demand. */
#ifndef KILN_LEX_H
#define KILN_LEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../ir/diag.h"

/* Every token kind once: TOK(KIND, SPELLING). The spelling of keywords and
 * punctuation is their text; for the others it names the class. */
#define LEX_TOKENS(TOK)                                                                            \
  TOK(TK_EOF, "end of file")                                                                       \
  TOK(TK_NEWLINE, "newline")                                                                       \
  TOK(TK_IDENT, "identifier")                                                                      \
  TOK(TK_INT, "integer")                                                                           \
  TOK(TK_FLOAT, "number")                                                                          \
  TOK(TK_MODEL, "model")                                                                           \
  TOK(TK_FN, "fn")                                                                                 \
  TOK(TK_INPUT, "input")                                                                           \
  TOK(TK_PARAM, "param")                                                                           \
  TOK(TK_OUTPUT, "output")                                                                         \
  TOK(TK_TRAIN, "train")                                                                           \
  TOK(TK_WITH, "with")                                                                             \
  TOK(TK_RETURN, "return")                                                                         \
  TOK(TK_TRUE, "true")                                                                             \
  TOK(TK_FALSE, "false")                                                                           \
  TOK(TK_LPAREN, "(")                                                                              \
  TOK(TK_RPAREN, ")")                                                                              \
  TOK(TK_LBRACKET, "[")                                                                            \
  TOK(TK_RBRACKET, "]")                                                                            \
  TOK(TK_LBRACE, "{")                                                                              \
  TOK(TK_RBRACE, "}")                                                                              \
  TOK(TK_COMMA, ",")                                                                               \
  TOK(TK_COLON, ":")                                                                               \
  TOK(TK_ASSIGN, "=")                                                                              \
  TOK(TK_PLUS, "+")                                                                                \
  TOK(TK_MINUS, "-")                                                                               \
  TOK(TK_STAR, "*")                                                                                \
  TOK(TK_SLASH, "/")                                                                               \
  TOK(TK_AT, "@")                                                                                  \
  TOK(TK_ERROR, "invalid token")

typedef enum TokKind {
#define LEX_ENUM(kind, spelling) kind,
  LEX_TOKENS(LEX_ENUM)
#undef LEX_ENUM
} TokKind;

typedef struct Token {
  TokKind kind;
  Loc loc;
  const char *text; /* the token's bytes in the source (not NUL-terminated) */
  size_t len;
  int64_t ival; /* TK_INT */
  double fval;  /* TK_FLOAT */
} Token;

typedef struct Lexer {
  Diag *d;
  const char *p, *end;
  const char *line_start;
  int line;
  int depth; /* open ( and [: newlines inside them are not tokens */
} Lexer;

/* Lexes src[0..len), which need not be NUL-terminated. Locations take their
 * file name from d->file. */
void lex_init(Lexer *lx, Diag *d, const char *src, size_t len);

/* The next token. On a lexical error it reports one diagnostic through the
 * Diag, sets t->kind to TK_ERROR and returns false; call it no more then. */
bool lex_next(Lexer *lx, Token *t);

/* The spelling of a kind: "(" for TK_LPAREN, "model" for TK_MODEL. */
const char *lex_kind_spelling(TokKind k);

/* Whether a kind is a keyword (model fn input ... true false). */
bool lex_is_keyword(TokKind k);

#endif
