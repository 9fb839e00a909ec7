/* npy.c - NumPy .npy version 1.0 tensors: a hand-written parser of the header dict, atomic writing.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor_io_internal.h"

#define NPY_MAGIC     "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_PREFIX    10 /* magic, major, minor, 2-byte header length */
#define NPY_ALIGN     64 /* numpy aligns the data to 64 bytes since 1.14 */

/* A cursor over the header text; why says what a failed step expected. */
typedef struct NpyCur {
  const char *s, *start, *end;
  const char *why;
} NpyCur;

/* What the header dict says, before it is checked. */
typedef struct NpyHeader {
  char descr[32];
  int fortran;
  int rank;
  int64_t shape[KILN_MAX_RANK];
  int seen_descr, seen_fortran, seen_shape;
} NpyHeader;

static int np_fail(NpyCur *c, const char *why) {
  c->why = why;
  return -1;
}

static void np_ws(NpyCur *c) {
  while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

/* Skips whitespace, then consumes ch if it is next. */
static int np_eat(NpyCur *c, char ch) {
  np_ws(c);
  if (c->s < c->end && *c->s == ch) {
    c->s++;
    return 1;
  }
  return 0;
}

/* string = "'" chars "'" | '"' chars '"' ; no escapes (numpy never writes them) */
static int np_string(NpyCur *c, char *out, size_t outlen) {
  np_ws(c);
  if (c->s >= c->end || (*c->s != '\'' && *c->s != '"')) return np_fail(c, "expected a string");
  char q = *c->s++;
  size_t n = 0;
  for (; c->s < c->end && *c->s != q; c->s++) {
    if (*c->s == '\\') return np_fail(c, "escapes in strings are not supported");
    if (n + 1 >= outlen) return np_fail(c, "string too long");
    out[n++] = *c->s;
  }
  if (c->s >= c->end) return np_fail(c, "unterminated string");
  c->s++;
  out[n] = '\0';
  return 0;
}

/* int = digit { digit } [ "L" ] ; the L of Python 2 era files is accepted */
static int np_int(NpyCur *c, int64_t *v) {
  np_ws(c);
  if (c->s >= c->end || !isdigit((unsigned char)*c->s))
    return np_fail(c, "expected a non-negative integer");
  int64_t x = 0;
  for (; c->s < c->end && isdigit((unsigned char)*c->s); c->s++) {
    int d = *c->s - '0';
    if (x > (INT64_MAX - d) / 10) return np_fail(c, "integer too large");
    x = x * 10 + d;
  }
  if (c->s < c->end && *c->s == 'L') c->s++;
  *v = x;
  return 0;
}

/* bool = "True" | "False" */
static int np_bool(NpyCur *c, int *v) {
  np_ws(c);
  size_t left = (size_t)(c->end - c->s);
  if (left >= 4 && memcmp(c->s, "True", 4) == 0)
    *v = 1, c->s += 4;
  else if (left >= 5 && memcmp(c->s, "False", 5) == 0)
    *v = 0, c->s += 5;
  else
    return np_fail(c, "expected True or False");
  return 0;
}

/* shape = "(" [ int { "," int } [ "," ] ] ")" ; one element needs its comma, as in Python */
static int np_shape(NpyCur *c, NpyHeader *h) {
  if (!np_eat(c, '(')) return np_fail(c, "expected '(' starting the shape tuple");
  int commas = 0;
  h->rank = 0;
  while (!np_eat(c, ')')) {
    if (h->rank == KILN_MAX_RANK) return np_fail(c, "shape has more than 8 dims");
    if (np_int(c, &h->shape[h->rank]) != 0) return -1;
    h->rank++;
    if (np_eat(c, ','))
      commas++;
    else if (!np_eat(c, ')'))
      return np_fail(c, "expected ',' or ')' in the shape");
    else
      break;
  }
  if (h->rank == 1 && commas == 0) return np_fail(c, "shape (n) is not a tuple; write (n,)");
  return 0;
}

/* item = string ":" value, for the three keys numpy writes, each exactly once */
static int np_item(NpyCur *c, NpyHeader *h) {
  char key[32];
  if (np_string(c, key, sizeof key) != 0) return -1;
  if (!np_eat(c, ':')) return np_fail(c, "expected ':' after a key");
  int *seen = strcmp(key, "descr") == 0           ? &h->seen_descr
              : strcmp(key, "fortran_order") == 0 ? &h->seen_fortran
              : strcmp(key, "shape") == 0         ? &h->seen_shape
                                                  : NULL;
  if (!seen) return np_fail(c, "unknown key (expected 'descr', 'fortran_order', 'shape')");
  if (*seen) return np_fail(c, "duplicate key");
  *seen = 1;
  if (seen == &h->seen_descr) return np_string(c, h->descr, sizeof h->descr);
  if (seen == &h->seen_fortran) return np_bool(c, &h->fortran);
  return np_shape(c, h);
}

/* dict = "{" [ item { "," item } [ "," ] ] "}" ; then only whitespace (numpy pads with spaces and
 * \n) */
static int np_dict(NpyCur *c, NpyHeader *h) {
  if (!np_eat(c, '{')) return np_fail(c, "expected '{'");
  while (!np_eat(c, '}')) {
    if (np_item(c, h) != 0) return -1;
    if (!np_eat(c, ',')) {
      if (np_eat(c, '}')) break;
      return np_fail(c, "expected ',' or '}'");
    }
  }
  np_ws(c);
  if (c->s != c->end) return np_fail(c, "unexpected text after the dict");
  if (!h->seen_descr || !h->seen_fortran || !h->seen_shape)
    return np_fail(c, "missing key (need 'descr', 'fortran_order' and 'shape')");
  return 0;
}

static int np_dtype(const char *what, const char *descr, KilnDType *dt, char *err, size_t errlen) {
  static const KilnDType all[] = {KILN_F32, KILN_F64, KILN_I32};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (strcmp(descr, kiln_dtype_npy_descr(all[i])) == 0) {
      *dt = all[i];
      return 0;
    }
  }
  if (descr[0] == '>')
    tio_err(err, errlen, "%s: big-endian data is not supported (descr '%s')", what, descr);
  else
    tio_err(err, errlen, "%s: unsupported dtype '%s' (expected '<f4', '<f8' or '<i4')", what,
            descr);
  return -1;
}

/* Magic, version and header length; *hlen is checked against the buffer. */
static int np_prefix(const char *what, const unsigned char *b, size_t len, size_t *hlen, char *err,
                     size_t errlen) {
  if (len < NPY_MAGIC_LEN || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
    tio_err(err, errlen, "%s: not a .npy file (bad magic; expected \\x93NUMPY)", what);
    return -1;
  }
  if (len < NPY_PREFIX) {
    tio_err(err, errlen, "%s: file is %zu bytes, too short for the 10-byte .npy prefix", what, len);
    return -1;
  }
  if (b[6] != 1 || b[7] != 0) {
    tio_err(err, errlen, "%s: unsupported .npy version %u.%u (only 1.0 is supported)", what,
            (unsigned)b[6], (unsigned)b[7]);
    return -1;
  }
  *hlen = tio_le16(b + 8);
  if (*hlen > len - NPY_PREFIX) {
    tio_err(err, errlen, "%s: header length %zu runs past the end of the file (%zu bytes)", what,
            *hlen, len);
    return -1;
  }
  return 0;
}

/* Checks the parsed header's meaning and fills dtype and shape. */
static int np_meaning(const char *what, const NpyHeader *h, KilnTensor *t, char *err,
                      size_t errlen) {
  if (np_dtype(what, h->descr, &t->dtype, err, errlen) != 0) return -1;
  if (h->fortran) {
    tio_err(err, errlen, "%s: Fortran-order arrays are not supported", what);
    return -1;
  }
  t->rank = h->rank;
  memcpy(t->shape, h->shape, sizeof t->shape);
  return 0;
}

/* The data must be exactly numel * itemsize bytes: neither truncated nor followed by more. */
static int np_data(const char *what, const unsigned char *data, size_t avail, KilnTensor *t,
                   char *err, size_t errlen) {
  uint64_t need;
  char s[256];
  tio_shape_str(s, sizeof s, t->shape, t->rank);
  if (tio_shape_bytes(t->shape, t->rank, t->dtype, &need) != 0) {
    tio_err(err, errlen, "%s: shape %s is too large (its byte count overflows)", what, s);
    return -1;
  }
  if (need != avail) {
    tio_err(err, errlen,
            need > avail ? "%s: data is truncated: shape %s of '%s' needs %llu bytes, found %zu"
                         : "%s: trailing bytes: shape %s of '%s' needs %llu bytes, found %zu",
            what, s, kiln_dtype_npy_descr(t->dtype), (unsigned long long)need, avail);
    return -1;
  }
  t->nbytes = (size_t)need;
  t->data = tio_memdup(data, t->nbytes);
  if (!t->data) {
    tio_err(err, errlen, "%s: out of memory", what);
    return -1;
  }
  return 0;
}

int kiln_npy_parse(const void *buf, size_t len, const char *what, KilnTensor *out, char *err,
                   size_t errlen) {
  const unsigned char *b = buf;
  size_t hlen;
  what = what ? what : "<memory>";
  memset(out, 0, sizeof *out);
  if (np_prefix(what, b, len, &hlen, err, errlen) != 0) return -1;
  const char *text = (const char *)b + NPY_PREFIX;
  NpyCur c = {text, text, text + hlen, NULL};
  NpyHeader h = {0};
  if (np_dict(&c, &h) != 0) {
    tio_err(err, errlen, "%s: malformed .npy header: %s (at byte %zu of the header)", what, c.why,
            (size_t)(c.s - c.start));
    return -1;
  }
  if (np_meaning(what, &h, out, err, errlen) != 0 ||
      np_data(what, b + NPY_PREFIX + hlen, len - NPY_PREFIX - hlen, out, err, errlen) != 0) {
    kiln_tensor_free(out);
    return -1;
  }
  return 0;
}

int kiln_npy_read(const char *path, KilnTensor *out, char *err, size_t errlen) {
  unsigned char *buf;
  size_t len;
  memset(out, 0, sizeof *out);
  if (tio_read_file(path, &buf, &len, err, errlen) != 0) return -1;
  int rc = kiln_npy_parse(buf, len, path, out, err, errlen);
  free(buf);
  return rc;
}

/* The header numpy itself writes: dict, spaces, '\n', data starting at a multiple of 64. */
static size_t np_header(const KilnTensor *t, char *h, size_t cap) {
  char shape[256] = "";
  size_t at = 0;
  for (int i = 0; i < t->rank; i++)
    at += (size_t)snprintf(shape + at, sizeof shape - at, "%s%lld", i ? ", " : "",
                           (long long)t->shape[i]);
  if (t->rank == 1) snprintf(shape + at, sizeof shape - at, ",");
  int n = snprintf(h, cap, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                   kiln_dtype_npy_descr(t->dtype), shape);
  size_t len = (size_t)n;
  size_t pad = NPY_ALIGN - (NPY_PREFIX + len + 1) % NPY_ALIGN;
  memset(h + len, ' ', pad);
  h[len + pad] = '\n';
  return len + pad + 1;
}

int kiln_npy_write(const char *path, const KilnTensor *t, char *err, size_t errlen) {
  if (tio_check_tensor(t, path, err, errlen) != 0) return -1;
  /* 8 dims of at most 19 digits keep the header far below 512 bytes. */
  char h[512];
  size_t hlen = np_header(t, h, sizeof h);
  unsigned char prefix[NPY_PREFIX];
  memcpy(prefix, NPY_MAGIC, NPY_MAGIC_LEN);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix[8] = (unsigned char)(hlen & 0xff);
  prefix[9] = (unsigned char)(hlen >> 8);
  TioChunk chunks[3] = {{prefix, sizeof prefix}, {h, hlen}, {t->data, t->nbytes}};
  return tio_write_atomic(path, chunks, 3, err, errlen);
}
