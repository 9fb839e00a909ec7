/* rt_load.c - an instance's params and optimizer state from and to safetensors, every size checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt_internal.h"
#include "rt_json.h"
#include "tensor_io_internal.h"

/* Header limit as the format's reference loader (and runtime/tensor_io.h). */
#define LOAD_MAX_HEADER (100u * 1000u * 1000u)
#define OPTIM_PREFIX    "optim."

/* Where the bytes come from: a buffer in memory, or a file read with pread. */
typedef struct LoadSrc {
  const unsigned char *buf; /* NULL: read fd */
  int fd;
  uint64_t size;
  const char *what; /* names the source in messages */
} LoadSrc;

/* Reads n bytes at off (off + n <= size, checked by the callers). */
static int src_read(const LoadSrc *s, uint64_t off, void *dst, size_t n) {
  if (s->buf) {
    if (n) memcpy(dst, s->buf + off, n);
    return 0;
  }
  for (size_t got = 0; got < n;) {
    ssize_t r = pread(s->fd, (unsigned char *)dst + got, n - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* ---- Checking the file -------------------------------------------------- */

/* Reads and parses the header; *data is where the data region starts. */
static int load_header(kiln_instance *self, const LoadSrc *s, RtStHeader *h, uint64_t *data) {
  unsigned char lenbytes[8];
  if (s->size < 8 || src_read(s, 0, lenbytes, 8) != 0) {
    rt_msg(self, "%s: too short for a safetensors file (%llu bytes)", s->what,
           (unsigned long long)s->size);
    return s->size < 8 ? KILN_ERR_FORMAT : KILN_ERR_IO;
  }
  uint64_t hlen = tio_le64(lenbytes);
  if (hlen > LOAD_MAX_HEADER || hlen > s->size - 8) {
    rt_msg(self, "%s: header length %llu runs past the end of the file or the 100 MB limit",
           s->what, (unsigned long long)hlen);
    return KILN_ERR_FORMAT;
  }
  char *json = malloc(hlen ? (size_t)hlen : 1);
  if (!json) return rt_msg(self, "%s: out of memory", s->what), KILN_ERR_NOMEM;
  char err[192];
  int rc = KILN_OK;
  if (src_read(s, 8, json, (size_t)hlen) != 0)
    rt_msg(self, "%s: read failed: %s", s->what, strerror(errno)), rc = KILN_ERR_IO;
  else if (rt_json_parse_header(json, (size_t)hlen, h, err, sizeof err) != 0)
    rt_msg(self, "%s: malformed header: %s", s->what, err), rc = KILN_ERR_FORMAT;
  free(json);
  *data = 8 + hlen;
  return rc;
}

static int range_cmp(const void *a, const void *b) {
  const RtStEntry *x = *(const RtStEntry *const *)a, *y = *(const RtStEntry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

/* Each tensor's range holds exactly its bytes, and the ranges tile the data
 * region with no hole, overlap or trailing bytes (as the format demands). */
static int load_check_ranges(kiln_instance *self, const LoadSrc *s, const RtStHeader *h,
                             uint64_t datalen) {
  for (int i = 0; i < h->n; i++) {
    const RtStEntry *e = &h->entries[i];
    uint64_t bytes;
    if (rt_tensor_bytes(e->shape, e->rank, e->dtype, &bytes) != 0 || e->end > datalen ||
        e->end - e->begin != bytes) {
      rt_msg(self, "%s: tensor '%s': data range [%llu, %llu) does not hold its shape's bytes",
             s->what, e->name, (unsigned long long)e->begin, (unsigned long long)e->end);
      return KILN_ERR_FORMAT;
    }
  }
  const RtStEntry **v = malloc(sizeof *v * (h->n > 0 ? (size_t)h->n : 1u));
  if (!v) return rt_msg(self, "%s: out of memory", s->what), KILN_ERR_NOMEM;
  for (int i = 0; i < h->n; i++) v[i] = &h->entries[i];
  qsort(v, (size_t)h->n, sizeof *v, range_cmp);
  uint64_t at = 0;
  int rc = KILN_OK;
  for (int i = 0; i < h->n && rc == KILN_OK; i++) {
    if (v[i]->begin != at)
      rt_msg(self, "%s: tensor '%s': data range [%llu, %llu) leaves a hole or overlaps", s->what,
             v[i]->name, (unsigned long long)v[i]->begin, (unsigned long long)v[i]->end),
          rc = KILN_ERR_FORMAT;
    at = v[i]->end;
  }
  if (rc == KILN_OK && at != datalen)
    rt_msg(self, "%s: %llu trailing bytes after the last tensor", s->what,
           (unsigned long long)(datalen - at)),
        rc = KILN_ERR_FORMAT;
  free(v);
  return rc;
}

static const kiln_tensor_desc *find_tensor(const kiln_tensor_desc *ts, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(ts[i].name, name) == 0) return &ts[i];
  return NULL;
}

/* The file's tensor against the model's: name (param, or optim.* state), dtype, shape. */
static int load_match(kiln_instance *self, const LoadSrc *s, const RtStEntry *e,
                      const kiln_tensor_desc **out) {
  const kiln_model_desc *d = self->desc;
  bool optim = strncmp(e->name, OPTIM_PREFIX, strlen(OPTIM_PREFIX)) == 0;
  *out = NULL;
  /* A training checkpoint loads into a model compiled without its optimizer
     (inference): the state is skipped, as `kiln run` skips it. */
  if (optim && d->nstate == 0) return KILN_OK;
  const kiln_tensor_desc *t = optim ? find_tensor(d->state, d->nstate, e->name)
                                    : find_tensor(d->params, d->nparams, e->name);
  if (!t) {
    rt_msg(self, "%s: unexpected tensor '%s': the model has no %s of that name", s->what, e->name,
           optim ? "optimizer state" : "param");
    return KILN_ERR_MISMATCH;
  }
  if (t->dtype != e->dtype) {
    rt_msg(self, "%s: tensor '%s' has dtype %s, the model expects %s", s->what, e->name,
           rt_dtype_name(e->dtype), rt_dtype_name(t->dtype));
    return KILN_ERR_MISMATCH;
  }
  if (t->rank != e->rank || memcmp(t->shape, e->shape, sizeof *t->shape * (size_t)t->rank) != 0) {
    char have[96], want[96];
    tio_shape_str(have, sizeof have, e->shape, e->rank);
    tio_shape_str(want, sizeof want, t->shape, t->rank);
    rt_msg(self, "%s: tensor '%s' has shape %s, the model expects %s", s->what, e->name, have,
           want);
    return KILN_ERR_MISMATCH;
  }
  *out = t;
  return KILN_OK;
}

/* Every tensor matches, and every param is there (state may be absent: it
 * stays as it is). dst[i] is where entry i goes, NULL if it is skipped. */
static int load_match_all(kiln_instance *self, const LoadSrc *s, const RtStHeader *h,
                          const kiln_tensor_desc **dst) {
  for (int i = 0; i < h->n; i++) {
    int rc = load_match(self, s, &h->entries[i], &dst[i]);
    if (rc) return rc;
  }
  const kiln_model_desc *d = self->desc;
  for (int k = 0; k < d->nparams; k++) {
    bool found = false;
    for (int i = 0; i < h->n && !found; i++) found = dst[i] == &d->params[k];
    if (!found) {
      rt_msg(self, "%s: missing param '%s'", s->what, d->params[k].name);
      return KILN_ERR_MISMATCH;
    }
  }
  return KILN_OK;
}

/* ---- Loading ------------------------------------------------------------ */

/* Everything is checked before the first byte is copied, so a bad file leaves
 * the instance as it was (a read error halfway through a file that changed
 * under us is the one exception). */
static int load_from(kiln_instance *self, const LoadSrc *s) {
  RtStHeader h = {0};
  uint64_t data = 0;
  int rc = load_header(self, s, &h, &data);
  const kiln_tensor_desc **dst = NULL;
  if (!rc) rc = load_check_ranges(self, s, &h, s->size - data);
  if (!rc && !(dst = calloc(h.n > 0 ? (size_t)h.n : 1u, sizeof *dst)))
    rt_msg(self, "%s: out of memory", s->what), rc = KILN_ERR_NOMEM;
  if (!rc) rc = load_match_all(self, s, &h, dst);
  for (int i = 0; !rc && i < h.n; i++) {
    const RtStEntry *e = &h.entries[i];
    if (dst[i] &&
        src_read(s, data + e->begin, self->mem + dst[i]->offset, (size_t)(e->end - e->begin)))
      rt_msg(self, "%s: read failed: %s", s->what, strerror(errno)), rc = KILN_ERR_IO;
  }
  if (!rc) self->message[0] = '\0';
  free(dst);
  rt_json_header_free(&h);
  return rc;
}

int kiln_rt_load(kiln_instance *self, const char *path) {
  if (!self || !path) return KILN_ERR_NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rt_msg(self, "%s: cannot open: %s", path, strerror(errno));
    return KILN_ERR_IO;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) {
    rt_msg(self, "%s: not a regular file", path);
    close(fd);
    return KILN_ERR_IO;
  }
  LoadSrc s = {NULL, fd, (uint64_t)st.st_size, path};
  int rc = load_from(self, &s);
  close(fd);
  return rc;
}

int kiln_rt_load_buffer(kiln_instance *self, const void *buf, size_t len, const char *what) {
  if (!self || (!buf && len)) return KILN_ERR_NULL;
  LoadSrc s = {buf ? buf : (const void *)"", -1, len, what ? what : "<memory>"};
  return load_from(self, &s);
}

/* ---- Saving ------------------------------------------------------------- */

/* A growing text buffer for the header JSON; ok turns false on out of memory. */
typedef struct SaveBuf {
  char *p;
  size_t n, cap;
  bool ok;
} SaveBuf;

static void sb_add(SaveBuf *b, const char *s, size_t n) {
  if (!b->ok) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = (b->n + n + 1) * 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->ok = false;
      return;
    }
    b->p = q, b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void sb_str(SaveBuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* A JSON string: quotes, backslashes and control characters escaped. */
static void sb_json_str(SaveBuf *b, const char *s) {
  sb_add(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\')
      snprintf(esc, sizeof esc, "\\%c", c), sb_str(b, esc);
    else if (c < 0x20)
      snprintf(esc, sizeof esc, "\\u%04x", c), sb_str(b, esc);
    else
      sb_add(b, s, 1);
  }
  sb_add(b, "\"", 1);
}

static void sb_entry(SaveBuf *b, const kiln_tensor_desc *t, uint64_t begin, uint64_t bytes) {
  char num[64];
  sb_json_str(b, t->name);
  sb_str(b, ":{\"dtype\":\"");
  sb_str(b, rt_dtype_name(t->dtype));
  sb_str(b, "\",\"shape\":[");
  for (int i = 0; i < t->rank; i++) {
    snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    sb_str(b, num);
  }
  snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)begin,
           (unsigned long long)(begin + bytes));
  sb_str(b, num);
}

/* The tensors a save writes: params, then state. */
static const kiln_tensor_desc *save_tensor(const kiln_model_desc *d, int i) {
  return i < d->nparams ? &d->params[i] : &d->state[i - d->nparams];
}

/* Header and chunk list: 8-byte dtypes first, then 4-byte ones, so that every
 * tensor's data is aligned to its element size in the file (the header is
 * padded to a multiple of 8), as runtime/safetensors.c writes them. */
static int save_layout(const kiln_instance *self, SaveBuf *b, TioChunk *chunks) {
  const kiln_model_desc *d = self->desc;
  int n = d->nparams + d->nstate, k = 2;
  uint64_t at = 0;
  sb_str(b, "{");
  for (size_t size = 8; size >= 4; size /= 2) {
    for (int i = 0; i < n; i++) {
      const kiln_tensor_desc *t = save_tensor(d, i);
      uint64_t bytes = 0;
      if (rt_dtype_size(t->dtype) != size) continue;
      rt_tensor_bytes(t->shape, t->rank, t->dtype, &bytes); /* checked at create */
      if (k > 2) sb_str(b, ",");
      sb_entry(b, t, at, bytes);
      chunks[k++] = (TioChunk){self->mem + t->offset, (size_t)bytes};
      at += bytes;
    }
  }
  sb_str(b, "}");
  while (b->ok && b->n % 8 != 0) sb_str(b, " ");
  return b->ok ? 0 : -1;
}

int kiln_rt_save(const kiln_instance *self, const char *path) {
  if (!self || !path) return KILN_ERR_NULL;
  const kiln_model_desc *d = self->desc;
  SaveBuf b = {NULL, 0, 0, true};
  TioChunk *chunks = malloc(sizeof *chunks * ((size_t)d->nparams + (size_t)d->nstate + 2));
  if (!chunks || save_layout(self, &b, chunks) != 0) {
    free(chunks);
    free(b.p);
    rt_msg(self, "%s: out of memory", path);
    return KILN_ERR_NOMEM;
  }
  unsigned char lenbytes[8];
  for (int i = 0; i < 8; i++) lenbytes[i] = (unsigned char)((uint64_t)b.n >> (8 * i));
  chunks[0] = (TioChunk){lenbytes, 8};
  chunks[1] = (TioChunk){b.p, b.n};
  char err[KILN_RT_MESSAGE_LEN];
  int rc = tio_write_atomic(path, chunks, d->nparams + d->nstate + 2, err, sizeof err);
  if (rc != 0)
    rt_msg(self, "%s", err);
  else
    rt_msg(self, "%s", "");
  free(chunks);
  free(b.p);
  return rc != 0 ? KILN_ERR_IO : KILN_OK;
}
