/* parse_ir.c - reads the text IR (docs/IR.md) back into a Graph; the inverse of print.c.
 *
 * The language is line-based: each line is a header, a node, an output, a
 * train statement or the closing brace, and '#' starts a comment. The parser
 * stops at the first error. It reads untrusted bytes (it is fuzzed), so every
 * length is bounded and every number is parsed with range checks. */
#include "ir.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define IR_MAX_TOKEN  64      /* longest number, op or dtype worth copying */
#define IR_MAX_INPUTS 1000000 /* inputs of one node (concat) */
#define IR_MAX_HYPER  8       /* hyper-parameters of one optimizer */

/* ---- A hash table keyed by slices of the text -------------------------- */

typedef struct Entry {
  const char *key; /* NULL: an empty slot */
  size_t len;
  void *val;
  int line, col; /* where a value name was defined */
} Entry;

typedef struct Table {
  Entry *e;
  size_t cap, n; /* cap: 0 or a power of two */
} Table;

static size_t tab_slot(const Table *t, const char *key, size_t len) {
  size_t i = (size_t)XXH3_64bits(key, len) & (t->cap - 1);
  while (t->e[i].key && !(t->e[i].len == len && memcmp(t->e[i].key, key, len) == 0))
    i = (i + 1) & (t->cap - 1);
  return i;
}

static Entry *tab_find(const Table *t, const char *key, size_t len) {
  if (!t->cap) return NULL;
  Entry *e = &t->e[tab_slot(t, key, len)];
  return e->key ? e : NULL;
}

static void tab_grow(Table *t) {
  Table nt = {calloc(t->cap ? 2 * t->cap : 64, sizeof(Entry)), t->cap ? 2 * t->cap : 64, t->n};
  if (!nt.e) ir_fatal("out of memory growing a table of %zu names", t->n);
  for (size_t i = 0; i < t->cap; i++)
    if (t->e[i].key) nt.e[tab_slot(&nt, t->e[i].key, t->e[i].len)] = t->e[i];
  free(t->e);
  *t = nt;
}

/* The entry for key, which must be absent. */
static Entry *tab_add(Table *t, const char *key, size_t len) {
  if (2 * (t->n + 1) > t->cap) tab_grow(t);
  Entry *e = &t->e[tab_slot(t, key, len)];
  e->key = key;
  e->len = len;
  t->n++;
  return e;
}

/* ---- Lines and tokens ---------------------------------------------------- */

typedef enum TokKind { T_END, T_IDENT, T_SSA, T_NUM, T_PUNCT } TokKind;

typedef struct Tok {
  TokKind kind;
  const char *s;
  size_t n;
  int col;
} Tok;

typedef struct Parser {
  Diag *d;
  Graph *g;
  const char *text;
  size_t len, next; /* next: offset of the next line */
  int line;
  const char *bol, *eol; /* the current line */
  const char *p, *eoc;   /* the cursor and the end of the code part */
  const char *comment;   /* the '#' of the line's comment, or NULL */
  Tok tok;               /* the current token */
  Table names, files;    /* value names -> Node; location files -> interned */
  Node **in;             /* the current node's inputs */
  int nin, capin;
  bool failed;
} Parser;

static bool perr(Parser *P, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool perr(Parser *P, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(P->d, (Loc){NULL, P->line > 0 ? P->line : 1, col > 0 ? col : 1}, fmt, ap);
  va_end(ap);
  P->failed = true;
  return false;
}

static bool is_alpha(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_ident_char(char c) { return is_alpha(c) || is_digit(c) || c == '.'; }

/* "'tok'" or "end of line", for messages. */
static const char *tok_desc(const Tok *t, char *buf, size_t len) {
  if (t->kind == T_END) return "end of line";
  snprintf(buf, len, "'%.*s%s'", (int)(t->n > 32 ? 32 : t->n), t->s, t->n > 32 ? "..." : "");
  return buf;
}

static const char *ir_scan_number(const char *q, const char *end) {
  while (q < end && (is_ident_char(*q) || ((*q == '+' || *q == '-') && (q[-1] | 0x20) == 'e'))) q++;
  return q;
}

/* token = "%" [A-Za-z0-9_.]* | ident | number | one of = , : { } [ ] ( ) @ */
static bool lex(Parser *P) {
  /* '\r' only as part of a CRLF line end: diag shows a line up to its
   * first '\r', so a column beyond one could not be pointed at. */
  while (P->p < P->eoc && (*P->p == ' ' || *P->p == '\t' || (*P->p == '\r' && P->p + 1 == P->eol)))
    P->p++;
  Tok *t = &P->tok;
  const char *q = P->p + 1;
  t->s = P->p;
  t->col = (int)(P->p - P->bol) + 1;
  if (P->p == P->eoc) {
    t->kind = T_END;
    t->n = 0;
    return true;
  }
  char c = *P->p;
  if (c == '%') {
    while (q < P->eoc && is_ident_char(*q)) q++;
    t->kind = T_SSA;
  } else if (is_alpha(c)) {
    while (q < P->eoc && is_ident_char(*q)) q++;
    t->kind = T_IDENT;
  } else if (is_digit(c) || c == '-' || c == '+' || c == '.') {
    q = ir_scan_number(q, P->eoc);
    t->kind = T_NUM;
  } else if (c && strchr("=,:{}[]()@", c)) {
    t->kind = T_PUNCT;
  } else {
    unsigned char u = (unsigned char)c;
    return u > ' ' && u < 0x7f ? perr(P, t->col, "unexpected character '%c'", c)
                               : perr(P, t->col, "unexpected byte 0x%02x", u);
  }
  t->n = (size_t)(q - P->p);
  P->p = q;
  return true;
}

/* Moves to the next line and its first token; false at the end of the text
 * or on a bad character (then P->failed). */
static bool next_line(Parser *P) {
  if (P->next >= P->len) return false;
  const char *s = P->text + P->next;
  const char *nl = memchr(s, '\n', P->len - P->next);
  const char *e = nl ? nl : P->text + P->len;
  P->bol = P->p = s;
  P->eol = e;
  P->line++;
  P->next = (size_t)(e - P->text) + (nl ? 1 : 0);
  P->comment = memchr(s, '#', (size_t)(e - s));
  P->eoc = P->comment ? P->comment : e;
  return lex(P);
}

/* Skips lines holding nothing but blanks and comments. */
static bool next_nonblank(Parser *P) {
  while (next_line(P))
    if (P->tok.kind != T_END) return true;
  return false;
}

static bool tok_is(const Parser *P, TokKind k, const char *s) {
  return P->tok.kind == k && P->tok.n == strlen(s) && memcmp(P->tok.s, s, P->tok.n) == 0;
}

static bool is_punct(const Parser *P, char c) { return P->tok.kind == T_PUNCT && P->tok.s[0] == c; }

static bool expect(Parser *P, char c) {
  char buf[48];
  if (is_punct(P, c)) return lex(P);
  return perr(P, P->tok.col, "expected '%c', got %s", c, tok_desc(&P->tok, buf, sizeof buf));
}

static bool expect_end(Parser *P) {
  char buf[48];
  if (P->tok.kind == T_END) return true;
  return perr(P, P->tok.col, "unexpected %s at the end of the line",
              tok_desc(&P->tok, buf, sizeof buf));
}

/* Copies a token into buf as a C string; false if it does not fit. */
static bool tok_cstr(const Tok *t, char *buf, size_t len) {
  if (t->n >= len) return false;
  memcpy(buf, t->s, t->n);
  buf[t->n] = '\0';
  return true;
}

static bool tok_int(const Tok *t, int64_t *out) {
  char buf[IR_MAX_TOKEN], *end;
  if (t->kind != T_NUM || !tok_cstr(t, buf, sizeof buf)) return false;
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (errno || end == buf || *end) return false;
  *out = (int64_t)v;
  return true;
}

/* Out-of-range magnitudes read as inf or 0, as strtod gives them. */
static bool tok_float(const Tok *t, double *out) {
  char buf[IR_MAX_TOKEN], *end;
  if (t->kind == T_IDENT && t->n == 3 && (!memcmp(t->s, "inf", 3) || !memcmp(t->s, "nan", 3))) {
    *out = strtod(t->s[0] == 'i' ? "inf" : "nan", NULL);
    return true;
  }
  if (t->kind != T_NUM || !tok_cstr(t, buf, sizeof buf)) return false;
  double v = strtod(buf, &end);
  if (end == buf || *end) return false;
  *out = v;
  return true;
}

/* A decimal int in [0, INT_MAX] spelled by s..e, nothing else. */
static bool digits_int(const char *s, const char *e, int *out) {
  long v = 0;
  if (s == e) return false;
  for (; s < e; s++) {
    if (!is_digit(*s) || v > (INT_MAX - (*s - '0')) / 10) return false;
    v = v * 10 + (*s - '0');
  }
  *out = (int)v;
  return true;
}

static const char *last_colon(const char *s, const char *e) {
  while (e > s)
    if (*--e == ':') return e;
  return NULL;
}

/* One arena copy per distinct file name. */
static const char *intern_file(Parser *P, const char *s, size_t n) {
  if (n == 0) return NULL;
  Entry *e = tab_find(&P->files, s, n);
  if (!e) {
    e = tab_add(&P->files, s, n);
    e->val = arena_strndup(&P->g->arena, s, n);
  }
  return e->val;
}

/* loc = "#" FILE ":" LINE ":" COL at the end of the line; any other comment
 * gives no location. FILE may hold ':' (the last two colons split). */
static Loc comment_loc(Parser *P) {
  Loc loc = {0};
  if (!P->comment) return loc;
  const char *s = P->comment + 1, *e = P->eol;
  while (s < e && (*s == ' ' || *s == '\t')) s++;
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
  const char *c2 = last_colon(s, e), *c1 = c2 ? last_colon(s, c2) : NULL;
  int line, col;
  if (!c1 || !digits_int(c1 + 1, c2, &line) || !digits_int(c2 + 1, e, &col) || line < 1) return loc;
  for (const char *q = s; q < c1; q++)
    if ((unsigned char)*q < ' ') return loc;
  loc.file = intern_file(P, s, (size_t)(c1 - s));
  loc.line = line;
  loc.col = col;
  return loc;
}

/* ---- Values, attributes, types ------------------------------------------ */

/* A value name is digits (an unnamed node) or an identifier. */
static bool check_value_name(Parser *P, const Tok *t) {
  bool digits = t->n > 1, ident = t->n > 1 && is_alpha(t->s[1]);
  for (size_t i = 1; i < t->n; i++) digits = digits && is_digit(t->s[i]);
  if (digits || ident) return true;
  return perr(P, t->col, "bad value name '%.*s': expected %%NUMBER or %%IDENTIFIER",
              (int)(t->n > 32 ? 32 : t->n), t->s);
}

/* value = "%" name, defined on an earlier line */
static bool parse_value(Parser *P, Node **out) {
  char buf[48];
  if (P->tok.kind != T_SSA)
    return perr(P, P->tok.col, "expected a value, got %s", tok_desc(&P->tok, buf, sizeof buf));
  if (!check_value_name(P, &P->tok)) return false;
  Entry *e = tab_find(&P->names, P->tok.s + 1, P->tok.n - 1);
  if (!e)
    return perr(P, P->tok.col, "use of undefined value %.*s", (int)(P->tok.n > 40 ? 40 : P->tok.n),
                P->tok.s);
  *out = e->val;
  return lex(P);
}

static const char *kind_desc(AttrKind k) {
  switch (k) {
  case ATTR_INT:
    return "an int";
  case ATTR_INTS:
    return "a list of ints";
  case ATTR_FLOAT:
    return "a float";
  case ATTR_FLOATS:
    return "a list of floats";
  case ATTR_NAME:
    return "a name";
  }
  return "?";
}

static bool wrong_kind(Parser *P, const AttrSpec *a, const char *owner) {
  return perr(P, P->tok.col, "attribute '%s' of %s must be %s", a->name, owner, kind_desc(a->kind));
}

/* list = "[" [number ("," number)*] "]" */
static bool parse_list(Parser *P, const AttrSpec *a, const char *owner, AttrVal *v) {
  if (!is_punct(P, '[')) return wrong_kind(P, a, owner);
  if (!lex(P)) return false;
  v->n = 0;
  if (is_punct(P, ']')) return lex(P);
  for (;;) {
    if (v->n == IR_MAX_ATTR_LEN)
      return perr(P, P->tok.col, "attribute '%s' of %s has more than %d elements", a->name, owner,
                  IR_MAX_ATTR_LEN);
    bool ok =
        a->kind == ATTR_INTS ? tok_int(&P->tok, &v->i[v->n]) : tok_float(&P->tok, &v->f[v->n]);
    if (!ok) return wrong_kind(P, a, owner);
    v->n++;
    if (!lex(P)) return false;
    if (!is_punct(P, ',')) return expect(P, ']');
    if (!lex(P)) return false;
  }
}

/* attrvalue = int | float | list | name, as the schema says */
static bool parse_attr_value(Parser *P, const AttrSpec *a, const char *owner, AttrVal *v) {
  switch (a->kind) {
  case ATTR_INT:
    if (!tok_int(&P->tok, &v->i[0])) return wrong_kind(P, a, owner);
    break;
  case ATTR_FLOAT:
    if (!tok_float(&P->tok, &v->f[0])) return wrong_kind(P, a, owner);
    break;
  case ATTR_NAME:
    if (P->tok.kind != T_IDENT) return wrong_kind(P, a, owner);
    v->s = arena_strndup(&P->g->arena, P->tok.s, P->tok.n);
    break;
  case ATTR_INTS:
  case ATTR_FLOATS:
    return parse_list(P, a, owner, v);
  }
  v->n = 1;
  return lex(P);
}

static int find_spec(const Tok *t, const AttrSpec *spec, int nspec) {
  for (int k = 0; k < nspec; k++)
    if (strlen(spec[k].name) == t->n && memcmp(spec[k].name, t->s, t->n) == 0) return k;
  return -1;
}

/* attrs = "{" [name "=" attrvalue ("," name "=" attrvalue)*] "}", every
 * attribute of the schema exactly once, in any order */
static bool parse_attrs(Parser *P, const AttrSpec *spec, int nspec, AttrVal *out,
                        const char *owner) {
  bool seen[IR_MAX_HYPER] = {0};
  int brace_col = P->tok.col;
  char buf[48];
  if (!is_punct(P, '{'))
    return nspec == 0 || perr(P, brace_col, "missing attribute '%s' of %s", spec[0].name, owner);
  if (!lex(P)) return false;
  while (!is_punct(P, '}')) {
    if (P->tok.kind != T_IDENT)
      return perr(P, P->tok.col, "expected an attribute name, got %s",
                  tok_desc(&P->tok, buf, sizeof buf));
    int k = find_spec(&P->tok, spec, nspec);
    if (k < 0)
      return perr(P, P->tok.col, "unknown attribute '%.*s' of %s",
                  (int)(P->tok.n > 32 ? 32 : P->tok.n), P->tok.s, owner);
    if (seen[k]) return perr(P, P->tok.col, "duplicate attribute '%s'", spec[k].name);
    seen[k] = true;
    if (!lex(P) || !expect(P, '=') || !parse_attr_value(P, &spec[k], owner, &out[k])) return false;
    if (!is_punct(P, ',')) break;
    if (!lex(P)) return false;
  }
  if (!expect(P, '}')) return false;
  for (int k = 0; k < nspec; k++)
    if (!seen[k]) return perr(P, brace_col, "missing attribute '%s' of %s", spec[k].name, owner);
  return true;
}

static bool parse_dim(Parser *P, int64_t *d) {
  char buf[48];
  if (!tok_int(&P->tok, d))
    return perr(P, P->tok.col, "malformed type: %s %s",
                P->tok.kind == T_NUM ? "bad dimension" : "expected a dimension, got",
                tok_desc(&P->tok, buf, sizeof buf));
  if (*d < 0 || *d > IR_MAX_NUMEL)
    return perr(P, P->tok.col, "malformed type: dimension %lld out of range", (long long)*d);
  return lex(P);
}

/* type = dtype "[" [int ("," int)*] "]" */
static bool parse_type(Parser *P, Type *t) {
  char name[IR_MAX_TOKEN], buf[48];
  memset(t, 0, sizeof *t);
  if (P->tok.kind != T_IDENT || !tok_cstr(&P->tok, name, sizeof name) ||
      !ir_dtype_lookup(name, &t->dtype))
    return perr(P, P->tok.col, "malformed type: expected a dtype (f32, i32, f64), got %s",
                tok_desc(&P->tok, buf, sizeof buf));
  if (!lex(P)) return false;
  if (!is_punct(P, '['))
    return perr(P, P->tok.col, "malformed type: expected '[', got %s",
                tok_desc(&P->tok, buf, sizeof buf));
  if (!lex(P)) return false;
  while (!is_punct(P, ']')) {
    if (t->rank == IR_MAX_RANK)
      return perr(P, P->tok.col, "malformed type: more than %d dimensions", IR_MAX_RANK);
    if (!parse_dim(P, &t->dims[t->rank++])) return false;
    if (!is_punct(P, ',')) break;
    if (!lex(P)) return false;
  }
  if (!is_punct(P, ']'))
    return perr(P, P->tok.col, "malformed type: expected ']', got %s",
                tok_desc(&P->tok, buf, sizeof buf));
  return lex(P);
}

/* ---- Lines --------------------------------------------------------------- */

/* inputs = [value ("," value)*] */
static bool parse_inputs(Parser *P) {
  P->nin = 0;
  if (P->tok.kind != T_SSA) return true;
  for (;;) {
    if (P->nin == IR_MAX_INPUTS) return perr(P, P->tok.col, "more than %d inputs", IR_MAX_INPUTS);
    if (P->nin == P->capin) {
      P->capin = P->capin ? 2 * P->capin : 16;
      P->in = realloc(P->in, (size_t)P->capin * sizeof *P->in);
      if (!P->in) ir_fatal("out of memory reading %d inputs", P->capin);
    }
    if (!parse_value(P, &P->in[P->nin++])) return false;
    if (!is_punct(P, ',')) return true;
    if (!lex(P)) return false;
  }
}

static bool check_arity(Parser *P, const OpInfo *info, int col) {
  int n = P->nin, lo = info->min_in, hi = info->max_in;
  if (n >= lo && (hi < 0 || n <= hi)) return true;
  if (hi < 0) return perr(P, col, "%s takes at least %d inputs, got %d", info->name, lo, n);
  if (lo == hi)
    return perr(P, col, "%s takes %d input%s, got %d", info->name, lo, lo == 1 ? "" : "s", n);
  return perr(P, col, "%s takes %d to %d inputs, got %d", info->name, lo, hi, n);
}

/* Sources and reshape carry their type; every other op's type must be what
 * its shape rule computes, so a printed type is a checked claim. */
static bool check_type(Parser *P, Node *n, const Type *printed, int opcol, int tycol) {
  char msg[256], a[IR_TYPE_STR_MAX], b[IR_TYPE_STR_MAX];
  bool given = (ir_op_info(n->op)->flags & IR_F_SOURCE) || n->op == OP_RESHAPE;
  if (given) n->type = *printed;
  if (!ir_infer_type(n, msg, sizeof msg)) return perr(P, given ? tycol : opcol, "%s", msg);
  if (ir_type_eq(&n->type, printed)) return true;
  return perr(P, tycol, "type mismatch: printed %s but the shape rule gives %s",
              ir_type_str(printed, a, sizeof a), ir_type_str(&n->type, b, sizeof b));
}

static OpKind lookup_op(const Tok *t) {
  char name[IR_MAX_TOKEN];
  return tok_cstr(t, name, sizeof name) ? ir_op_lookup(name) : OP_COUNT;
}

/* where = "k" INT | "inline" */
static bool parse_kernel(Parser *P, Node *n) {
  char buf[48];
  int k;
  if (tok_is(P, T_IDENT, "inline")) {
    n->kernel = IR_KERNEL_INLINE;
  } else if (P->tok.kind == T_IDENT && P->tok.n > 1 && P->tok.s[0] == 'k' &&
             digits_int(P->tok.s + 1, P->tok.s + P->tok.n, &k)) {
    if (k >= P->g->nkernels)
      return perr(P, P->tok.col, "kernel k%d of a graph with %d kernels", k, P->g->nkernels);
    n->kernel = k;
  } else {
    return perr(P, P->tok.col, "expected a kernel (k0, k1, ...) or 'inline', got %s",
                tok_desc(&P->tok, buf, sizeof buf));
  }
  return lex(P);
}

/* home = "@" (INT "+" INT | "grad" | "update"): INT + INT is the arena offset and the value's
 * size in bytes */
static bool parse_home(Parser *P, Node *n) {
  char buf[48];
  int64_t off, size, want = ir_type_numel(&n->type) * (int64_t)ir_dtype_size(n->type.dtype);
  int col = P->tok.col;
  if (P->g->annot != IR_ANNOT_PLANNED)
    return perr(P, col, "a buffer in a graph that is not planned");
  if (!lex(P)) return false;
  if (tok_is(P, T_IDENT, "grad") || tok_is(P, T_IDENT, "update")) {
    n->offset = P->tok.s[0] == 'g' ? IR_BUF_GRAD : IR_BUF_UPDATE;
    return lex(P);
  }
  if (!tok_int(&P->tok, &off) || off < 0 || off % IR_BUF_ALIGN != 0)
    return perr(P, P->tok.col,
                "expected an arena offset (a multiple of %d), 'grad' or 'update', got %s",
                IR_BUF_ALIGN, tok_desc(&P->tok, buf, sizeof buf));
  if (!lex(P)) return false;
  if (!tok_int(&P->tok, &size) || P->tok.s[0] != '+' || size != want)
    return perr(P, P->tok.col, "expected the buffer's size +%lld, got %s", (long long)want,
                tok_desc(&P->tok, buf, sizeof buf));
  if (off > P->g->arena_bytes - size)
    return perr(P, col, "buffer [%lld, %lld) outside the arena of %lld bytes", (long long)off,
                (long long)(off + size), (long long)P->g->arena_bytes);
  n->offset = off;
  return lex(P);
}

/* annot = "[" where [home] "]", on every node but a named source of a fused graph */
static bool parse_annot(Parser *P, Node *n) {
  bool named = ir_op_is_named_source(n->op);
  if (P->g->annot == IR_ANNOT_NONE || named) {
    if (is_punct(P, '['))
      return perr(P, P->tok.col,
                  named ? "a named source belongs to no kernel"
                        : "a kernel annotation in a graph that is not fused");
    return true;
  }
  if (!is_punct(P, '[')) return perr(P, P->tok.col, "missing kernel annotation [k...]");
  if (!lex(P) || !parse_kernel(P, n)) return false;
  if (is_punct(P, '@') && !parse_home(P, n)) return false;
  return expect(P, ']');
}

/* kernels = ("fused" | "planned") "{" "kernels" "=" INT ["," "arena" "=" INT] "}", before the
 * nodes */
static bool parse_kernels_line(Parser *P) {
  static const AttrSpec fused[] = {{"kernels", ATTR_INT}};
  static const AttrSpec planned[] = {{"kernels", ATTR_INT}, {"arena", ATTR_INT}};
  AttrVal v[2];
  bool is_planned = P->tok.s[0] == 'p';
  int col = P->tok.col;
  memset(v, 0, sizeof v);
  if (P->g->nnodes > 0 || P->g->annot != IR_ANNOT_NONE)
    return perr(P, col, "'%s' must come once, before the nodes", is_planned ? "planned" : "fused");
  if (!lex(P) ||
      !parse_attrs(P, is_planned ? planned : fused, is_planned ? 2 : 1, v,
                   is_planned ? "planned" : "fused") ||
      !expect_end(P))
    return false;
  if (v[0].i[0] < 0 || v[0].i[0] > INT_MAX / 2) return perr(P, col, "bad kernel count");
  if (is_planned &&
      (v[1].i[0] < 0 || v[1].i[0] % IR_BUF_ALIGN != 0 || v[1].i[0] > ((int64_t)1 << 56)))
    return perr(P, col, "bad arena size (a multiple of %d)", IR_BUF_ALIGN);
  P->g->annot = is_planned ? IR_ANNOT_PLANNED : IR_ANNOT_FUSED;
  P->g->nkernels = (int)v[0].i[0];
  P->g->arena_bytes = is_planned ? v[1].i[0] : 0;
  return true;
}

/* node = "%" name "=" op inputs [attrs] ":" type [annot] [loc] */
static bool parse_node(Parser *P) {
  Tok def = P->tok, op;
  AttrVal attrs[IR_MAX_HYPER];
  Type ty;
  if (!check_value_name(P, &def)) return false;
  Entry *prev = tab_find(&P->names, def.s + 1, def.n - 1);
  if (prev) {
    perr(P, def.col, "redefinition of %.*s", (int)(def.n > 40 ? 40 : def.n), def.s);
    diag_note(P->d, (Loc){NULL, prev->line, prev->col}, "previous definition is here");
    return false;
  }
  if (!lex(P) || !expect(P, '=')) return false;
  op = P->tok;
  OpKind k = op.kind == T_IDENT ? lookup_op(&op) : OP_COUNT;
  if (k == OP_COUNT)
    return perr(P, op.col, "unknown op '%.*s'", (int)(op.n > 32 ? 32 : op.n), op.s);
  const OpInfo *info = ir_op_info(k);
  /* Inputs and params are bound by name when the model runs. */
  if (ir_op_is_named_source(k) && is_digit(def.s[1]))
    return perr(P, def.col, "%s %.*s needs a name (%%NAME, not %%NUMBER)", info->name,
                (int)(def.n > 40 ? 40 : def.n), def.s);
  memset(attrs, 0, sizeof attrs);
  if (!lex(P) || !parse_inputs(P) || !check_arity(P, info, op.col) ||
      !parse_attrs(P, info->attrs, info->nattrs, attrs, info->name) || !expect(P, ':'))
    return false;
  int tycol = P->tok.col;
  if (!parse_type(P, &ty)) return false;

  Node *n = ir_node_new(P->g, k, P->in, P->nin, comment_loc(P));
  if (!is_digit(def.s[1])) n->name = arena_strndup(&P->g->arena, def.s + 1, def.n - 1);
  for (int i = 0; i < info->nattrs && i < IR_MAX_ATTRS; i++) n->attr[i] = attrs[i];
  if (!check_type(P, n, &ty, op.col, tycol) || !parse_annot(P, n) || !expect_end(P)) return false;
  Entry *e = tab_add(&P->names, def.s + 1, def.n - 1);
  e->val = n;
  e->line = P->line;
  e->col = def.col;
  return true;
}

/* output = "output" name "=" value */
static bool parse_output(Parser *P) {
  char buf[48];
  Node *v;
  if (!lex(P)) return false;
  Tok name = P->tok;
  if (name.kind != T_IDENT)
    return perr(P, name.col, "expected an output name, got %s", tok_desc(&name, buf, sizeof buf));
  if (!lex(P) || !expect(P, '=') || !parse_value(P, &v) || !expect_end(P)) return false;
  ir_add_output(P->g, arena_strndup(&P->g->arena, name.s, name.n), v);
  return true;
}

/* grad = "grad" value "=" value;  update = "update" value "=" value */
static bool parse_grad_or_update(Parser *P, bool is_grad) {
  Node *target, *value;
  int col = P->tok.col;
  if (!lex(P) || !parse_value(P, &target) || !expect(P, '=') || !parse_value(P, &value) ||
      !expect_end(P))
    return false;
  if (is_grad && target->op != OP_PARAM)
    return perr(P, col, "grad of a %s: only a param has a gradient", ir_op_name(target->op));
  if (!is_grad && target->op != OP_PARAM && target->op != OP_STATE)
    return perr(P, col, "update of a %s: only a param or a state can be updated",
                ir_op_name(target->op));
  if (!ir_type_eq(&target->type, &value->type))
    return perr(P, col, "%s: the value's type differs from its target's",
                is_grad ? "grad" : "update");
  if (is_grad)
    ir_add_grad(P->g, target, value);
  else
    ir_add_update(P->g, target, value);
  return true;
}

static const AttrSpec ir_sgd_spec[] = {
    {"lr", ATTR_FLOAT}, {"momentum", ATTR_FLOAT}, {"weight_decay", ATTR_FLOAT}};
static const AttrSpec ir_adam_spec[] = {{"lr", ATTR_FLOAT},
                                        {"beta1", ATTR_FLOAT},
                                        {"beta2", ATTR_FLOAT},
                                        {"eps", ATTR_FLOAT},
                                        {"weight_decay", ATTR_FLOAT}};

/* optimizer = ("sgd" | "adam") attrs, with the hyper-parameters as floats */
static bool parse_optim(Parser *P, Optim *o) {
  AttrVal v[IR_MAX_HYPER];
  Tok t = P->tok;
  memset(v, 0, sizeof v);
  memset(o, 0, sizeof *o);
  if (t.kind == T_END) return true;
  bool sgd = tok_is(P, T_IDENT, "sgd");
  if (!sgd && !tok_is(P, T_IDENT, "adam"))
    return perr(P, t.col, "unknown optimizer '%.*s': expected sgd or adam",
                (int)(t.n > 32 ? 32 : t.n), t.s);
  if (!lex(P)) return false;
  if (sgd) {
    if (!parse_attrs(P, ir_sgd_spec, 3, v, "sgd")) return false;
    *o = (Optim){OPTIM_SGD, .lr = v[0].f[0], .momentum = v[1].f[0], .weight_decay = v[2].f[0]};
  } else {
    if (!parse_attrs(P, ir_adam_spec, 5, v, "adam")) return false;
    *o = (Optim){OPTIM_ADAM,         .lr = v[0].f[0],  .beta1 = v[1].f[0],
                 .beta2 = v[2].f[0], .eps = v[3].f[0], .weight_decay = v[4].f[0]};
  }
  return true;
}

/* train = "train" value [optimizer] [loc] */
static bool parse_train(Parser *P) {
  char ty[IR_TYPE_STR_MAX];
  Node *loss;
  Optim o;
  if (P->g->loss) return perr(P, P->tok.col, "duplicate train statement");
  if (!lex(P)) return false;
  int col = P->tok.col;
  if (!parse_value(P, &loss) || !parse_optim(P, &o) || !expect_end(P)) return false;
  if (loss->type.rank != 0 || !ir_dtype_is_float(loss->type.dtype))
    return perr(P, col, "the loss must be a float scalar, not %s",
                ir_type_str(&loss->type, ty, sizeof ty));
  P->g->loss = loss;
  P->g->optim = o;
  P->g->train_loc = comment_loc(P);
  return true;
}

/* sizes = "(" name "=" int ("," name "=" int)* ")" */
static bool parse_sizes(Parser *P) {
  Graph *g = P->g;
  int cap = 0;
  char buf[48];
  do {
    if (!lex(P)) return false;
    Tok name = P->tok;
    if (name.kind != T_IDENT)
      return perr(P, name.col, "expected a size name, got %s", tok_desc(&name, buf, sizeof buf));
    if (!lex(P) || !expect(P, '=')) return false;
    int64_t v;
    if (!tok_int(&P->tok, &v))
      return perr(P, P->tok.col, "expected an integer size, got %s",
                  tok_desc(&P->tok, buf, sizeof buf));
    if (g->nsizes == cap) {
      cap = cap ? 2 * cap : 4;
      g->sizes = arena_grow(&g->arena, g->sizes, (size_t)g->nsizes, (size_t)cap, sizeof *g->sizes);
    }
    g->sizes[g->nsizes++] = (SizeParam){arena_strndup(&g->arena, name.s, name.n), v};
    if (!lex(P)) return false;
  } while (is_punct(P, ','));
  return expect(P, ')');
}

/* header = "graph" name [sizes] "{" */
static bool parse_header(Parser *P) {
  char buf[48];
  if (!tok_is(P, T_IDENT, "graph"))
    return perr(P, P->tok.col, "expected 'graph', got %s", tok_desc(&P->tok, buf, sizeof buf));
  if (!lex(P)) return false;
  if (P->tok.kind != T_IDENT)
    return perr(P, P->tok.col, "expected the graph's name, got %s",
                tok_desc(&P->tok, buf, sizeof buf));
  P->g = ir_graph_new("");
  P->g->name = arena_strndup(&P->g->arena, P->tok.s, P->tok.n);
  if (!lex(P)) return false;
  if (is_punct(P, '(') && !parse_sizes(P)) return false;
  return expect(P, '{') && expect_end(P);
}

static bool parse_body_line(Parser *P) {
  char buf[48];
  if (P->tok.kind == T_SSA) return parse_node(P);
  if (tok_is(P, T_IDENT, "output")) return parse_output(P);
  if (tok_is(P, T_IDENT, "train")) return parse_train(P);
  if (tok_is(P, T_IDENT, "grad")) return parse_grad_or_update(P, true);
  if (tok_is(P, T_IDENT, "update")) return parse_grad_or_update(P, false);
  if (tok_is(P, T_IDENT, "fused") || tok_is(P, T_IDENT, "planned")) return parse_kernels_line(P);
  return perr(P, P->tok.col, "expected a node, 'output', 'train', 'grad', 'update' or '}', got %s",
              tok_desc(&P->tok, buf, sizeof buf));
}

/* graph = header {node | output | train | grad | update} "}" */
static bool parse_graph(Parser *P) {
  if (!next_nonblank(P)) return !P->failed && perr(P, 1, "expected 'graph', got end of input");
  if (!parse_header(P)) return false;
  for (;;) {
    if (!next_nonblank(P)) {
      if (P->failed) return false;
      P->line++; /* at the end of the text */
      return perr(P, 1, "missing '}' at the end of graph %s", P->g->name);
    }
    if (is_punct(P, '}')) break;
    if (!parse_body_line(P)) return false;
  }
  if (!lex(P) || !expect_end(P)) return false;
  if (next_nonblank(P)) return perr(P, P->tok.col, "unexpected text after the end of the graph");
  return !P->failed;
}

Graph *ir_parse(Diag *d, const char *text, size_t len) {
  Parser P = {.d = d, .text = text ? text : "", .len = text ? len : 0};
  if (P.len > INT_MAX) {
    diag_error(d, (Loc){0}, "IR text too large (%zu bytes)", P.len);
    return NULL;
  }
  bool ok = parse_graph(&P);
  free(P.names.e);
  free(P.files.e);
  free(P.in);
  if (ok) return P.g;
  if (P.g) ir_graph_free(P.g);
  return NULL;
}
