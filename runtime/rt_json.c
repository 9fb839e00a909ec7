/* rt_json.c - the safetensors header's JSON, parsed strictly from memory (see rt_json.h for why).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_json.h"

/* A cursor over the header; on failure, why and where. */
typedef struct Jp {
  const unsigned char *s;
  size_t len, at;
  const char *why;
  size_t why_at;
  char whybuf[128];
} Jp;

static int jp_fail(Jp *p, const char *why) {
  if (!p->why) {
    p->why = why;
    p->why_at = p->at;
  }
  return -1;
}

static int jp_peek(const Jp *p) { return p->at < p->len ? p->s[p->at] : -1; }

static void jp_ws(Jp *p) {
  for (int c; (c = jp_peek(p)) == ' ' || c == '\t' || c == '\n' || c == '\r';) p->at++;
}

/* Skips whitespace, then consumes c if it is next. */
static bool jp_eat(Jp *p, char c) {
  jp_ws(p);
  if (jp_peek(p) != (unsigned char)c) return false;
  p->at++;
  return true;
}

/* ---- Strings ------------------------------------------------------------ */

static int jp_hex4(Jp *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++, p->at++) {
    int c = jp_peek(p);
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) return jp_fail(p, "expected four hex digits after \\u");
    *v = *v << 4 | (unsigned)d;
  }
  return 0;
}

/* escape = '\' ( '"' | '\' | '/' | b | f | n | r | t | 'u' hex4 [ '\u' hex4 ] ); p->at is on the
 * backslash. Gives the code point. */
static int jp_escape(Jp *p, unsigned *cp) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  p->at++;
  int c = jp_peek(p);
  const char *k = c > 0 && c != 'u' ? strchr(from, c) : NULL;
  if (k) {
    p->at++;
    *cp = (unsigned char)to[k - from];
    return 0;
  }
  if (c != 'u') return jp_fail(p, "unknown escape in a string");
  p->at++;
  if (jp_hex4(p, cp) != 0) return -1;
  if (*cp >= 0xDC00 && *cp <= 0xDFFF) return jp_fail(p, "lone low surrogate in a string");
  if (*cp >= 0xD800 && *cp <= 0xDBFF) {
    unsigned lo;
    if (p->len - p->at < 2 || p->s[p->at] != '\\' || p->s[p->at + 1] != 'u')
      return jp_fail(p, "high surrogate not followed by \\u and a low surrogate");
    p->at += 2;
    if (jp_hex4(p, &lo) != 0) return -1;
    if (lo < 0xDC00 || lo > 0xDFFF) return jp_fail(p, "high surrogate not followed by a low one");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
  }
  if (*cp == 0) return jp_fail(p, "\\u0000 in a string");
  return 0;
}

/* One raw UTF-8 sequence at p->at (first byte >= 0x80): its length, or -1 if malformed
 * (overlong, a surrogate, above U+10FFFF, truncated, bad continuation). */
static int jp_utf8_len(const Jp *p) {
  unsigned c = p->s[p->at];
  int k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (k == 0 || p->len - p->at < (size_t)k) return -1;
  unsigned cp = c & (0x7F >> k);
  for (int i = 1; i < k; i++) {
    unsigned b = p->s[p->at + (size_t)i];
    if ((b & 0xC0) != 0x80) return -1;
    cp = cp << 6 | (b & 0x3F);
  }
  static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[k] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return -1;
  return k;
}

static size_t jp_put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) return o[0] = (char)cp, 1;
  if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* The string's raw extent: bytes up to its closing quote, skipping escaped characters. Decoded
 * text is never longer (an escape of n bytes decodes to at most n - 2 bytes). */
static size_t jp_string_span(const Jp *p) {
  size_t i = p->at;
  while (i < p->len && p->s[i] != '"') i += p->s[i] == '\\' ? 2 : 1;
  return i - p->at;
}

/* Decodes the string body at p->at (after the opening quote) into o (cap bytes). */
static int jp_string_body(Jp *p, char *o, size_t cap) {
  size_t n = 0;
  while (p->at < p->len) {
    int c = p->s[p->at];
    unsigned cp;
    int k = 1;
    if (c == '"') {
      p->at++;
      o[n] = '\0';
      return 0;
    }
    if (c < 0x20) return jp_fail(p, "raw control character in a string");
    if (c == '\\') {
      if (jp_escape(p, &cp) != 0) return -1;
      char tmp[4];
      size_t m = jp_put_utf8(tmp, cp);
      if (n + m >= cap) return jp_fail(p, "string longer than its span (internal)");
      memcpy(o + n, tmp, m), n += m;
      continue;
    }
    if (c >= 0x80 && (k = jp_utf8_len(p)) < 0) return jp_fail(p, "malformed UTF-8 in a string");
    if (n + (size_t)k >= cap) return jp_fail(p, "string longer than its span (internal)");
    memcpy(o + n, p->s + p->at, (size_t)k), n += (size_t)k, p->at += (size_t)k;
  }
  return jp_fail(p, "unterminated string");
}

/* string = '"' { char | escape } '"' ; into a malloc'd NUL-terminated *out */
static int jp_string(Jp *p, char **out) {
  *out = NULL;
  jp_ws(p);
  if (jp_peek(p) != '"') return jp_fail(p, "expected a string");
  p->at++;
  size_t span = jp_string_span(p);
  if (p->at + span >= p->len) return jp_fail(p, "unterminated string");
  char *o = malloc(span + 1);
  if (!o) return jp_fail(p, "out of memory");
  if (jp_string_body(p, o, span + 1) != 0) {
    free(o);
    return -1;
  }
  *out = o;
  return 0;
}

/* ---- Numbers and arrays ------------------------------------------------- */

/* int = "0" | [1-9] [0-9]* ; below 2^63 */
static int jp_int(Jp *p, uint64_t *v) {
  jp_ws(p);
  int c = jp_peek(p);
  if (c < '0' || c > '9') return jp_fail(p, "expected a non-negative integer");
  *v = 0;
  if (c == '0' && p->at + 1 < p->len && p->s[p->at + 1] >= '0' && p->s[p->at + 1] <= '9')
    return jp_fail(p, "integer with a leading zero");
  for (; (c = jp_peek(p)) >= '0' && c <= '9'; p->at++) {
    if (*v > (uint64_t)(INT64_MAX - (c - '0')) / 10) return jp_fail(p, "integer too large");
    *v = *v * 10 + (uint64_t)(c - '0');
  }
  c = jp_peek(p);
  if (c == '.' || c == 'e' || c == 'E') return jp_fail(p, "expected an integer, found a fraction");
  return 0;
}

/* ints = "[" [ int { "," int } ] "]" ; at most max elements */
static int jp_ints(Jp *p, uint64_t *v, int max, int *n) {
  *n = 0;
  if (!jp_eat(p, '[')) return jp_fail(p, "expected '[' starting an array of integers");
  if (jp_eat(p, ']')) return 0;
  for (;;) {
    if (*n == max) return jp_fail(p, "too many integers in an array");
    if (jp_int(p, &v[(*n)++]) != 0) return -1;
    if (jp_eat(p, ',')) continue;
    if (jp_eat(p, ']')) return 0;
    return jp_fail(p, "expected ',' or ']' in an array");
  }
}

/* ---- Entries ------------------------------------------------------------ */

static int jp_dtype(Jp *p, RtStEntry *e) {
  char *s;
  if (jp_string(p, &s) != 0) return -1;
  static const struct {
    const char *name;
    kiln_dtype dt;
  } all[] = {{"F32", KILN_DTYPE_F32}, {"I32", KILN_DTYPE_I32}, {"F64", KILN_DTYPE_F64}};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (strcmp(s, all[i].name) == 0) {
      e->dtype = all[i].dt;
      free(s);
      return 0;
    }
  }
  snprintf(p->whybuf, sizeof p->whybuf,
           "tensor '%.40s': unsupported dtype '%.16s' (expected "
           "F32, I32 or F64)",
           e->name, s);
  free(s);
  return jp_fail(p, p->whybuf);
}

static int jp_shape(Jp *p, RtStEntry *e) {
  uint64_t v[RT_JSON_MAX_RANK];
  if (jp_ints(p, v, RT_JSON_MAX_RANK, &e->rank) != 0) return -1;
  for (int i = 0; i < e->rank; i++) e->shape[i] = (int64_t)v[i];
  return 0;
}

static int jp_offsets(Jp *p, RtStEntry *e) {
  uint64_t v[2];
  int n;
  if (jp_ints(p, v, 2, &n) != 0) return -1;
  if (n != 2) return jp_fail(p, "data_offsets must hold exactly two integers");
  if (v[0] > v[1]) return jp_fail(p, "data_offsets [begin, end] with begin > end");
  e->begin = v[0], e->end = v[1];
  return 0;
}

/* field = ("dtype" | "shape" | "data_offsets") ":" value ; seen collects one bit per field */
static int jp_field(Jp *p, RtStEntry *e, unsigned *seen) {
  char *key;
  if (jp_string(p, &key) != 0) return -1;
  unsigned bit = strcmp(key, "dtype") == 0          ? 1u
                 : strcmp(key, "shape") == 0        ? 2u
                 : strcmp(key, "data_offsets") == 0 ? 4u
                                                    : 0u;
  free(key);
  if (!bit)
    return jp_fail(p, "unknown field in a tensor entry (expected dtype, shape, data_offsets)");
  if (*seen & bit) return jp_fail(p, "duplicate field in a tensor entry");
  *seen |= bit;
  if (!jp_eat(p, ':')) return jp_fail(p, "expected ':' after a key");
  return bit == 1 ? jp_dtype(p, e) : bit == 2 ? jp_shape(p, e) : jp_offsets(p, e);
}

/* entry = "{" field "," field "," field "}" */
static int jp_entry(Jp *p, RtStEntry *e) {
  unsigned seen = 0;
  if (!jp_eat(p, '{')) return jp_fail(p, "expected '{' starting a tensor entry");
  for (;;) {
    if (jp_field(p, e, &seen) != 0) return -1;
    if (jp_eat(p, ',')) continue;
    if (jp_eat(p, '}')) break;
    return jp_fail(p, "expected ',' or '}' in a tensor entry");
  }
  if (seen != 7u) return jp_fail(p, "tensor entry lacks one of dtype, shape, data_offsets");
  return 0;
}

/* meta = "{" [ string ":" string { "," string ":" string } ] "}" (keys not checked for
 * duplicates: nothing reads them) */
static int jp_meta(Jp *p) {
  if (!jp_eat(p, '{')) return jp_fail(p, "'__metadata__' must be an object of strings");
  if (jp_eat(p, '}')) return 0;
  for (;;) {
    char *s;
    if (jp_string(p, &s) != 0) return -1;
    free(s);
    if (!jp_eat(p, ':')) return jp_fail(p, "expected ':' after a key");
    if (jp_string(p, &s) != 0) return -1;
    free(s);
    if (jp_eat(p, ',')) continue;
    if (jp_eat(p, '}')) return 0;
    return jp_fail(p, "expected ',' or '}' in '__metadata__'");
  }
}

/* ---- The header --------------------------------------------------------- */

static int jp_grow(Jp *p, RtStHeader *h, int *cap) {
  if (h->n < *cap) return 0;
  if (*cap > (1 << 28)) return jp_fail(p, "too many tensors");
  int ncap = *cap ? *cap * 2 : 16;
  RtStEntry *e = realloc(h->entries, sizeof *e * (size_t)ncap);
  if (!e) return jp_fail(p, "out of memory");
  h->entries = e, *cap = ncap;
  return 0;
}

/* member = string ":" ( meta | entry ) */
static int jp_member(Jp *p, RtStHeader *h, int *cap, bool *seen_meta) {
  char *key;
  if (jp_string(p, &key) != 0) return -1;
  if (!jp_eat(p, ':')) {
    free(key);
    return jp_fail(p, "expected ':' after a key");
  }
  if (strcmp(key, "__metadata__") == 0) {
    free(key);
    if (*seen_meta) return jp_fail(p, "duplicate key '__metadata__'");
    *seen_meta = true;
    return jp_meta(p);
  }
  if (jp_grow(p, h, cap) != 0) {
    free(key);
    return -1;
  }
  RtStEntry *e = &h->entries[h->n++];
  memset(e, 0, sizeof *e);
  e->name = key;
  return jp_entry(p, e);
}

static int name_cmp(const void *a, const void *b) {
  return strcmp((*(const RtStEntry *const *)a)->name, (*(const RtStEntry *const *)b)->name);
}

/* Names must be unique: checked on a sorted list of pointers. */
static int jp_unique(Jp *p, const RtStHeader *h) {
  if (h->n < 2) return 0;
  const RtStEntry **v = malloc(sizeof *v * (size_t)h->n);
  if (!v) return jp_fail(p, "out of memory");
  for (int i = 0; i < h->n; i++) v[i] = &h->entries[i];
  qsort(v, (size_t)h->n, sizeof *v, name_cmp);
  int rc = 0;
  for (int i = 1; i < h->n && rc == 0; i++) {
    if (strcmp(v[i - 1]->name, v[i]->name) != 0) continue;
    snprintf(p->whybuf, sizeof p->whybuf, "duplicate tensor '%.80s'", v[i]->name);
    p->at = p->len;
    rc = jp_fail(p, p->whybuf);
  }
  free(v);
  return rc;
}

/* header = "{" [ member { "," member } ] "}" */
static int jp_header(Jp *p, RtStHeader *h) {
  int cap = 0;
  bool seen_meta = false;
  if (!jp_eat(p, '{')) return jp_fail(p, "expected '{': the header must be a JSON object");
  if (!jp_eat(p, '}')) {
    for (;;) {
      if (jp_member(p, h, &cap, &seen_meta) != 0) return -1;
      if (jp_eat(p, ',')) continue;
      if (jp_eat(p, '}')) break;
      return jp_fail(p, "expected ',' or '}' after a tensor entry");
    }
  }
  jp_ws(p);
  if (p->at != p->len) return jp_fail(p, "text after the header object");
  return jp_unique(p, h);
}

void rt_json_header_free(RtStHeader *h) {
  if (!h) return;
  for (int i = 0; i < h->n; i++) free(h->entries[i].name);
  free(h->entries);
  h->entries = NULL;
  h->n = 0;
}

int rt_json_parse_header(const char *json, size_t len, RtStHeader *out, char *err, size_t errlen) {
  Jp p = {.s = (const unsigned char *)json, .len = json ? len : 0};
  memset(out, 0, sizeof *out);
  if (jp_header(&p, out) == 0) return 0;
  if (err && errlen) snprintf(err, errlen, "%s (at byte %zu of the header)", p.why, p.why_at);
  rt_json_header_free(out);
  return -1;
}
