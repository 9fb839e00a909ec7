/* lex.c - the .kl lexer: bytes to tokens, with located errors for bad input. */
#include "lex.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Long literals are cut in messages so one bad token cannot flood stderr. */
#define LEX_SHOW_MAX 40

static const char *const lex_spellings[] = {
#define LEX_SPELLING(kind, spelling) spelling,
    LEX_TOKENS(LEX_SPELLING)
#undef LEX_SPELLING
};

const char *lex_kind_spelling(TokKind k) {
  if ((unsigned)k >= sizeof lex_spellings / sizeof lex_spellings[0]) return "?";
  return lex_spellings[k];
}

bool lex_is_keyword(TokKind k) { return k >= TK_MODEL && k <= TK_FALSE; }

void lex_init(Lexer *lx, Diag *d, const char *src, size_t len) {
  memset(lx, 0, sizeof *lx);
  lx->d = d;
  lx->p = src ? src : "";
  lx->end = lx->p + (src ? len : 0);
  lx->line_start = lx->p;
  lx->line = 1;
  /* A UTF-8 byte order mark is what some editors write first; it is no token. */
  if (lx->end - lx->p >= 3 && memcmp(lx->p, "\xEF\xBB\xBF", 3) == 0) lx->p += 3;
}

static Loc lex_loc(const Lexer *lx, const char *p) {
  ptrdiff_t col = p - lx->line_start + 1;
  Loc loc = {lx->d->file, lx->line, col > INT_MAX ? INT_MAX : (int)col};
  return loc;
}

/* Moves past a '\n' at p. Counts saturate so a huge file cannot overflow. */
static void lex_newline_at(Lexer *lx, const char *p) {
  if (lx->line < INT_MAX) lx->line++;
  lx->line_start = p + 1;
  lx->p = p + 1;
}

/* The length of the valid UTF-8 sequence at p (1 to 4), or 0 when the bytes
 * are not one: overlong forms, surrogates and values above U+10FFFF fail. */
static int lex_utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  int n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0 || end - p < n) return 0;
  unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
  if (c == 0xE0) lo = 0xA0;
  if (c == 0xED) hi = 0x9F;
  if (c == 0xF0) lo = 0x90;
  if (c == 0xF4) hi = 0x8F;
  if (p[1] < lo || p[1] > hi) return 0;
  for (int i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return n;
}

/* The code point of a valid UTF-8 sequence of n bytes. */
static unsigned lex_utf8_decode(const unsigned char *p, int n) {
  static const unsigned lead_mask[] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  unsigned cp = p[0] & lead_mask[n];
  for (int i = 1; i < n; i++) cp = cp << 6 | (p[i] & 0x3F);
  return cp;
}

static bool lex_fail(Lexer *lx, Token *t, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool lex_fail(Lexer *lx, Token *t, const char *at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  t->kind = TK_ERROR;
  t->loc = lex_loc(lx, at);
  t->text = at;
  t->len = 0;
  diag_verror(lx->d, t->loc, fmt, ap);
  va_end(ap);
  return false;
}

/* comment = "#" { any valid UTF-8 but CR or LF } ; the newline stays. A
 * comment stops at a carriage return too: a lone one is an error, as it would
 * start a new line for an editor but not for Kiln's line numbers. */
static bool lex_comment(Lexer *lx, Token *t) {
  const unsigned char *p = (const unsigned char *)lx->p + 1;
  const unsigned char *end = (const unsigned char *)lx->end;
  while (p < end && *p != '\n' && *p != '\r') {
    int n = lex_utf8_len(p, end);
    if (n == 0) return lex_fail(lx, t, (const char *)p, "invalid UTF-8 in comment");
    p += n;
  }
  lx->p = (const char *)p;
  return true;
}

/* Skips blanks, comments, and the newlines that are not tokens (those inside
 * ( and [). Stops at the next token, or at a newline that is one. */
static bool lex_skip(Lexer *lx, Token *t) {
  while (lx->p < lx->end) {
    char c = *lx->p;
    bool crlf = c == '\r' && lx->end - lx->p >= 2 && lx->p[1] == '\n';
    if (c == ' ' || c == '\t') {
      lx->p++;
    } else if (c == '#') {
      if (!lex_comment(lx, t)) return false;
    } else if ((c == '\n' || crlf) && lx->depth > 0) {
      lex_newline_at(lx, lx->p + crlf);
    } else {
      break;
    }
  }
  return true;
}

static void lex_token(Lexer *lx, Token *t, TokKind kind, const char *start, size_t len) {
  t->kind = kind;
  t->loc = lex_loc(lx, start);
  t->text = start;
  t->len = len;
  lx->p = start + len;
}

static bool lex_is_digit(char c) { return c >= '0' && c <= '9'; }
static bool lex_is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool lex_is_ident_char(char c) { return lex_is_ident_start(c) || lex_is_digit(c); }

/* An INT's value; digits that do not fit int64 are an error. */
static bool lex_int_value(Lexer *lx, Token *t) {
  int64_t v = 0;
  for (size_t i = 0; i < t->len; i++) {
    int digit = t->text[i] - '0';
    if (v > (INT64_MAX - digit) / 10) {
      int n = t->len > LEX_SHOW_MAX ? LEX_SHOW_MAX : (int)t->len;
      return lex_fail(lx, t, t->text,
                      "integer literal '%.*s%s' is too large (the maximum is %" PRId64 ")", n,
                      t->text, t->len > (size_t)n ? "..." : "", INT64_MAX);
    }
    v = v * 10 + digit;
  }
  t->ival = v;
  return true;
}

/* A FLOAT's value through strtod, which needs a NUL-terminated copy. */
static bool lex_float_value(Lexer *lx, Token *t) {
  char small[64];
  char *buf = t->len < sizeof small ? small : malloc(t->len + 1);
  if (!buf) {
    fprintf(stderr, "kiln: internal error: out of memory lexing a number\n");
    exit(70);
  }
  memcpy(buf, t->text, t->len);
  buf[t->len] = '\0';
  errno = 0;
  double v = strtod(buf, NULL);
  bool overflow = errno == ERANGE && isinf(v);
  if (buf != small) free(buf);
  t->fval = v;
  if (!overflow) return true;
  int n = t->len > LEX_SHOW_MAX ? LEX_SHOW_MAX : (int)t->len;
  return lex_fail(lx, t, t->text, "float literal '%.*s%s' is too large for a double", n, t->text,
                  t->len > (size_t)n ? "..." : "");
}

static const char *lex_digits(const char *p, const char *end) {
  while (p < end && lex_is_digit(*p)) p++;
  return p;
}

/* number = digits [ "." digits? ] [ exponent ] | "." digits [ exponent ] ;
 * exponent = ( "e" | "E" ) [ "+" | "-" ] digits ; floats have a '.' or an exponent. */
static bool lex_number(Lexer *lx, Token *t) {
  const char *start = lx->p, *end = lx->end;
  const char *p = lex_digits(start, end);
  bool is_float = false;
  if (p < end && *p == '.') {
    is_float = true;
    p = lex_digits(p + 1, end);
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    const char *q = p + 1;
    if (q < end && (*q == '+' || *q == '-')) q++;
    if (q >= end || !lex_is_digit(*q))
      return lex_fail(lx, t, p, "expected digits in the exponent of '%.*s'", (int)(q - start),
                      start);
    is_float = true;
    p = lex_digits(q, end);
  }
  if (p < end && lex_is_ident_char(*p))
    return lex_fail(lx, t, p, "invalid character '%c' after the number '%.*s'", *p,
                    (int)(p - start > LEX_SHOW_MAX ? LEX_SHOW_MAX : p - start), start);
  lex_token(lx, t, is_float ? TK_FLOAT : TK_INT, start, (size_t)(p - start));
  return is_float ? lex_float_value(lx, t) : lex_int_value(lx, t);
}

static TokKind lex_keyword(const char *s, size_t len) {
  for (int k = TK_MODEL; k <= TK_FALSE; k++) {
    const char *kw = lex_spellings[k];
    if (strlen(kw) == len && memcmp(kw, s, len) == 0) return (TokKind)k;
  }
  return TK_IDENT;
}

/* ident = [A-Za-z_] [A-Za-z0-9_]* ; keywords are identifiers spelled as one. */
static bool lex_ident(Lexer *lx, Token *t) {
  const char *p = lx->p;
  while (p < lx->end && lex_is_ident_char(*p)) p++;
  size_t len = (size_t)(p - lx->p);
  lex_token(lx, t, lex_keyword(lx->p, len), lx->p, len);
  return true;
}

static TokKind lex_punct_kind(char c) {
  switch (c) {
  case '(':
    return TK_LPAREN;
  case ')':
    return TK_RPAREN;
  case '[':
    return TK_LBRACKET;
  case ']':
    return TK_RBRACKET;
  case '{':
    return TK_LBRACE;
  case '}':
    return TK_RBRACE;
  case ',':
    return TK_COMMA;
  case ':':
    return TK_COLON;
  case '=':
    return TK_ASSIGN;
  case '+':
    return TK_PLUS;
  case '-':
    return TK_MINUS;
  case '*':
    return TK_STAR;
  case '/':
    return TK_SLASH;
  case '@':
    return TK_AT;
  default:
    return TK_ERROR;
  }
}

/* Braces do not count: a newline inside { } ends a statement. */
static void lex_track_depth(Lexer *lx, TokKind k) {
  if ((k == TK_LPAREN || k == TK_LBRACKET) && lx->depth < INT_MAX) lx->depth++;
  if ((k == TK_RPAREN || k == TK_RBRACKET) && lx->depth > 0) lx->depth--;
}

/* A byte that starts no token: say what it is as precisely as possible. */
static bool lex_bad_char(Lexer *lx, Token *t) {
  const unsigned char *p = (const unsigned char *)lx->p;
  if (*p == '\r')
    return lex_fail(lx, t, lx->p,
                    "unexpected character '\\r' (a carriage return must be "
                    "followed by a newline)");
  if (*p < 0x20 || *p == 0x7F) return lex_fail(lx, t, lx->p, "unexpected character '\\x%02x'", *p);
  if (*p < 0x80) {
    const char *hint = *p == ';' ? " (a newline ends a statement)" : "";
    return lex_fail(lx, t, lx->p, "unexpected character '%c'%s", *p, hint);
  }
  int n = lex_utf8_len(p, (const unsigned char *)lx->end);
  if (n == 0) return lex_fail(lx, t, lx->p, "unexpected byte 0x%02x (not valid UTF-8)", *p);
  return lex_fail(lx, t, lx->p,
                  "unexpected character '%.*s' (U+%04X); non-ASCII text is allowed only in "
                  "comments",
                  n, lx->p, lex_utf8_decode(p, n));
}

bool lex_next(Lexer *lx, Token *t) {
  memset(t, 0, sizeof *t);
  if (!lex_skip(lx, t)) return false;
  if (lx->p >= lx->end) {
    lex_token(lx, t, TK_EOF, lx->end, 0);
    return true;
  }
  char c = *lx->p;
  if (c == '\n' || (c == '\r' && lx->end - lx->p >= 2 && lx->p[1] == '\n')) {
    lex_token(lx, t, TK_NEWLINE, lx->p, c == '\r' ? 2 : 1);
    lex_newline_at(lx, lx->p - 1);
    return true;
  }
  if (lex_is_digit(c) || (c == '.' && lx->end - lx->p >= 2 && lex_is_digit(lx->p[1])))
    return lex_number(lx, t);
  if (lex_is_ident_start(c)) return lex_ident(lx, t);
  TokKind k = lex_punct_kind(c);
  if (k == TK_ERROR) return lex_bad_char(lx, t);
  lex_track_depth(lx, k);
  lex_token(lx, t, k, lx->p, 1);
  return true;
}
