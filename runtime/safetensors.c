/* safetensors.c - the safetensors weights format: checked parsing over memory, atomic writing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tensor_io_internal.h"

/* Where one tensor's bytes lie in the data region; idx keeps the header's order for ties. */
typedef struct StRange {
  uint64_t begin, end;
  int idx;
} StRange;

/* A parse in progress: what names the input in messages. */
typedef struct StParse {
  const char *what;
  char *err;
  size_t errlen;
  uint64_t datalen;
} StParse;

static int st_dtype(StParse *p, const char *name, json_t *v, KilnDType *dt) {
  const char *s = json_string_value(v);
  if (!s) {
    tio_err(p->err, p->errlen, "%s: tensor '%s': 'dtype' is %s", p->what, name,
            v ? "not a string" : "missing");
    return -1;
  }
  if (strcmp(s, "F32") == 0)
    *dt = KILN_F32;
  else if (strcmp(s, "F64") == 0)
    *dt = KILN_F64;
  else if (strcmp(s, "I32") == 0)
    *dt = KILN_I32;
  else {
    tio_err(p->err, p->errlen, "%s: tensor '%s': unsupported dtype '%s' (expected F32, F64 or I32)",
            p->what, name, s);
    return -1;
  }
  return 0;
}

static int st_shape(StParse *p, const char *name, json_t *v, KilnTensor *t) {
  if (!json_is_array(v)) {
    tio_err(p->err, p->errlen, "%s: tensor '%s': 'shape' is %s", p->what, name,
            v ? "not an array" : "missing");
    return -1;
  }
  size_t rank = json_array_size(v);
  if (rank > KILN_MAX_RANK) {
    tio_err(p->err, p->errlen, "%s: tensor '%s': rank %zu exceeds the maximum of %d", p->what, name,
            rank, KILN_MAX_RANK);
    return -1;
  }
  t->rank = (int)rank;
  for (size_t i = 0; i < rank; i++) {
    json_t *d = json_array_get(v, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0) {
      tio_err(p->err, p->errlen, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
              p->what, name, i);
      return -1;
    }
    t->shape[i] = (int64_t)json_integer_value(d);
  }
  return 0;
}

static int st_offsets(StParse *p, const char *name, json_t *v, StRange *r) {
  json_t *b = json_array_get(v, 0), *e = json_array_get(v, 1);
  if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(b) || !json_is_integer(e)) {
    tio_err(p->err, p->errlen, "%s: tensor '%s': 'data_offsets' is %s", p->what, name,
            v ? "not an array of two integers" : "missing");
    return -1;
  }
  json_int_t bv = json_integer_value(b), ev = json_integer_value(e);
  if (bv < 0 || ev < bv) {
    tio_err(p->err, p->errlen,
            "%s: tensor '%s': data_offsets [%lld, %lld] are not 0 <= begin <= end", p->what, name,
            (long long)bv, (long long)ev);
    return -1;
  }
  r->begin = (uint64_t)bv;
  r->end = (uint64_t)ev;
  if (r->end > p->datalen) {
    tio_err(p->err, p->errlen,
            "%s: tensor '%s': data range [%llu, %llu) ends past the end of the file (%llu bytes of "
            "data)",
            p->what, name, (unsigned long long)r->begin, (unsigned long long)r->end,
            (unsigned long long)p->datalen);
    return -1;
  }
  return 0;
}

/* The range must hold exactly the bytes the dtype and shape need. */
static int st_check_size(StParse *p, const char *name, const KilnTensor *t, const StRange *r) {
  char s[256];
  uint64_t nb;
  tio_shape_str(s, sizeof s, t->shape, t->rank);
  if (tio_shape_bytes(t->shape, t->rank, t->dtype, &nb) != 0) {
    tio_err(p->err, p->errlen, "%s: tensor '%s': shape %s is too large (its byte count overflows)",
            p->what, name, s);
    return -1;
  }
  if (nb != r->end - r->begin) {
    tio_err(
        p->err, p->errlen,
        "%s: tensor '%s': shape %s of %s needs %llu bytes, but data range [%llu, %llu) holds %llu",
        p->what, name, s, kiln_dtype_name(t->dtype), (unsigned long long)nb,
        (unsigned long long)r->begin, (unsigned long long)r->end,
        (unsigned long long)(r->end - r->begin));
    return -1;
  }
  return 0;
}

/* One header entry: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}; data not yet copied.
 */
static int st_entry(StParse *p, const char *name, json_t *v, KilnTensor *t, StRange *r) {
  if (!json_is_object(v)) {
    tio_err(p->err, p->errlen, "%s: tensor '%s': entry is not a JSON object", p->what, name);
    return -1;
  }
  if (st_dtype(p, name, json_object_get(v, "dtype"), &t->dtype) != 0 ||
      st_shape(p, name, json_object_get(v, "shape"), t) != 0 ||
      st_offsets(p, name, json_object_get(v, "data_offsets"), r) != 0 ||
      st_check_size(p, name, t, r) != 0)
    return -1;
  t->nbytes = (size_t)(r->end - r->begin);
  t->name = strdup(name);
  if (!t->name) {
    tio_err(p->err, p->errlen, "%s: out of memory", p->what);
    return -1;
  }
  return 0;
}

static int st_check_metadata(StParse *p, json_t *v) {
  const char *k;
  json_t *s;
  if (!json_is_object(v)) goto bad;
  json_object_foreach(v, k, s) {
    if (!json_is_string(s)) goto bad;
  }
  return 0;
bad:
  tio_err(p->err, p->errlen, "%s: '__metadata__' must be an object of strings", p->what);
  return -1;
}

static int st_range_cmp(const void *a, const void *b) {
  const StRange *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorted ranges must tile [0, datalen) exactly: the spec forbids holes and overlaps. */
static int st_check_tiling(StParse *p, const KilnTensor *ts, StRange *rs, int n) {
  qsort(rs, (size_t)n, sizeof *rs, st_range_cmp);
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    const char *name = ts[rs[i].idx].name;
    if (rs[i].begin < at) {
      tio_err(p->err, p->errlen, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
              p->what, ts[rs[i - 1].idx].name, (unsigned long long)rs[i - 1].begin,
              (unsigned long long)rs[i - 1].end, name, (unsigned long long)rs[i].begin,
              (unsigned long long)rs[i].end);
      return -1;
    }
    if (rs[i].begin > at) {
      tio_err(p->err, p->errlen,
              "%s: hole in the data: bytes [%llu, %llu) before tensor '%s' belong to no tensor",
              p->what, (unsigned long long)at, (unsigned long long)rs[i].begin, name);
      return -1;
    }
    at = rs[i].end;
  }
  if (at != p->datalen) {
    tio_err(p->err, p->errlen,
            "%s: hole in the data: bytes [%llu, %llu) at the end belong to no tensor", p->what,
            (unsigned long long)at, (unsigned long long)p->datalen);
    return -1;
  }
  return 0;
}

/* Reads every entry of the header object into ts/rs (n slots, n counted by the caller). */
static int st_entries(StParse *p, json_t *root, KilnTensor *ts, StRange *rs) {
  const char *key;
  json_t *v;
  int i = 0;
  json_object_foreach(root, key, v) {
    if (strcmp(key, "__metadata__") == 0) {
      if (st_check_metadata(p, v) != 0) return -1;
      continue;
    }
    rs[i].idx = i;
    if (st_entry(p, key, v, &ts[i], &rs[i]) != 0) return -1;
    i++;
  }
  return 0;
}

/* Copies each tensor's bytes out of the data region, in data order. */
static int st_copy_data(StParse *p, const unsigned char *data, KilnTensor *ts, const StRange *rs,
                        int n, KilnTensorFile *out) {
  out->tensors = calloc((size_t)(n ? n : 1), sizeof *out->tensors);
  if (!out->tensors) goto oom;
  for (int i = 0; i < n; i++) {
    KilnTensor *t = &out->tensors[i];
    *t = ts[rs[i].idx];
    memset(&ts[rs[i].idx], 0, sizeof *t);
    out->n = i + 1;
    t->data = tio_memdup(data + rs[i].begin, t->nbytes);
    if (!t->data) goto oom;
  }
  return 0;
oom:
  tio_err(p->err, p->errlen, "%s: out of memory", p->what);
  return -1;
}

/* Reads the 8-byte header length and checks it against the limit and the buffer. */
static int st_header_len(StParse *p, const unsigned char *b, size_t len, size_t *hlen) {
  if (len < 8) {
    tio_err(p->err, p->errlen, "%s: file is %zu bytes, too short for the 8-byte header length",
            p->what, len);
    return -1;
  }
  uint64_t h = tio_le64(b);
  if (h > KILN_SAFETENSORS_MAX_HEADER) {
    tio_err(p->err, p->errlen, "%s: header length %llu exceeds the limit of %u bytes", p->what,
            (unsigned long long)h, KILN_SAFETENSORS_MAX_HEADER);
    return -1;
  }
  if (h > len - 8) {
    tio_err(p->err, p->errlen, "%s: header length %llu runs past the end of the file (%zu bytes)",
            p->what, (unsigned long long)h, len);
    return -1;
  }
  *hlen = (size_t)h;
  return 0;
}

static json_t *st_load_json(StParse *p, const unsigned char *b, size_t hlen) {
  json_error_t je;
  json_t *root = json_loadb((const char *)b + 8, hlen, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    tio_err(p->err, p->errlen, "%s: header is not valid JSON: %s (at byte %d of the header)",
            p->what, je.text, je.position);
    return NULL;
  }
  if (!json_is_object(root)) {
    tio_err(p->err, p->errlen, "%s: header is not a JSON object", p->what);
    json_decref(root);
    return NULL;
  }
  return root;
}

static void st_free_tensors(KilnTensor *ts, int n) {
  for (int i = 0; ts && i < n; i++) kiln_tensor_free(&ts[i]);
  free(ts);
}

int kiln_safetensors_parse(const void *buf, size_t len, const char *what, KilnTensorFile *out,
                           char *err, size_t errlen) {
  const unsigned char *b = buf;
  StParse p = {what ? what : "<memory>", err, errlen, 0};
  size_t hlen;
  memset(out, 0, sizeof *out);
  if (st_header_len(&p, b, len, &hlen) != 0) return -1;
  p.datalen = len - 8 - hlen;
  json_t *root = st_load_json(&p, b, hlen);
  if (!root) return -1;

  /* The header holds at most 100 MB, so the entry count fits an int. */
  int n = (int)json_object_size(root) - (json_object_get(root, "__metadata__") != NULL);
  KilnTensor *ts = calloc((size_t)(n ? n : 1), sizeof *ts);
  StRange *rs = calloc((size_t)(n ? n : 1), sizeof *rs);
  int rc = -1;
  if (!ts || !rs)
    tio_err(err, errlen, "%s: out of memory", p.what);
  else if (st_entries(&p, root, ts, rs) == 0 && st_check_tiling(&p, ts, rs, n) == 0)
    rc = st_copy_data(&p, b + 8 + hlen, ts, rs, n, out);
  if (rc != 0) kiln_tensor_file_free(out);
  st_free_tensors(ts, n);
  free(rs);
  json_decref(root);
  return rc;
}

int kiln_safetensors_read(const char *path, KilnTensorFile *out, char *err, size_t errlen) {
  unsigned char *buf;
  size_t len;
  memset(out, 0, sizeof *out);
  if (tio_read_file(path, &buf, &len, err, errlen) != 0) return -1;
  int rc = kiln_safetensors_parse(buf, len, path, out, err, errlen);
  free(buf);
  return rc;
}

const KilnTensor *kiln_tensor_find(const KilnTensorFile *f, const char *name) {
  for (int i = 0; f && name && i < f->n; i++)
    if (f->tensors[i].name && strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

void kiln_tensor_file_free(KilnTensorFile *f) {
  if (!f) return;
  st_free_tensors(f->tensors, f->n);
  f->tensors = NULL;
  f->n = 0;
}

/* ---- writing ---- */

static int st_name_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names must be present, not the reserved key, and unique (checked on a sorted copy). */
static int st_check_names(const char *path, const KilnTensor *ts, int n, char *err, size_t errlen) {
  const char **names = malloc(sizeof *names * (size_t)(n ? n : 1));
  if (!names) {
    tio_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    names[i] = ts[i].name;
    if (!ts[i].name || !ts[i].name[0] || strcmp(ts[i].name, "__metadata__") == 0) {
      tio_err(err, errlen, "%s: tensor %d: name '%s' is not allowed", path, i,
              ts[i].name ? ts[i].name : "(null)");
      rc = -1;
    }
  }
  if (rc == 0) qsort(names, (size_t)n, sizeof *names, st_name_cmp);
  for (int i = 1; i < n && rc == 0; i++) {
    if (strcmp(names[i - 1], names[i]) == 0) {
      tio_err(err, errlen, "%s: tensor '%s' appears twice", path, names[i]);
      rc = -1;
    }
  }
  free(names);
  return rc;
}

static json_t *st_entry_json(const KilnTensor *t, uint64_t begin) {
  json_t *shape = json_array();
  for (int i = 0; shape && i < t->rank; i++)
    json_array_append_new(shape, json_integer((json_int_t)t->shape[i]));
  return json_pack("{s:s, s:o, s:[I, I]}", "dtype", kiln_dtype_name(t->dtype), "shape", shape,
                   "data_offsets", (json_int_t)begin, (json_int_t)(begin + t->nbytes));
}

/* The header JSON, offsets assigned in the given order, padded with spaces to a multiple of 8. */
/* The header JSON in the given order with offsets off[], padded with spaces to a multiple of 8. */
static char *st_header(const char *path, const KilnTensor *ts, const uint64_t *off, int n,
                       size_t *hlen, char *err, size_t errlen) {
  json_t *root = json_object();
  for (int i = 0; root && i < n; i++) {
    json_t *e = st_entry_json(&ts[i], off[i]);
    if (!e || json_object_set_new(root, ts[i].name, e) != 0) {
      tio_err(err, errlen, "%s: tensor '%s': cannot encode its header entry (is the name UTF-8?)",
              path, ts[i].name);
      json_decref(root);
      return NULL;
    }
  }
  char *js = root ? json_dumps(root, JSON_COMPACT) : NULL;
  json_decref(root);
  size_t jl = js ? strlen(js) : 0, padded = (jl + 7) / 8 * 8;
  char *h = js ? realloc(js, padded + 1) : NULL;
  if (!h) {
    free(js);
    tio_err(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  memset(h + jl, ' ', padded - jl);
  h[padded] = '\0';
  *hlen = padded;
  return h;
}

/* Data order: 8-byte dtypes first, then 4-byte ones, each in the given order. The header is a
   multiple of 8 bytes, so every tensor's data is aligned to its element size in the file, as
   safetensors' own writer arranges: a loader (or embedded weights) may use the bytes in place. */
static void st_data_order(const KilnTensor *ts, int n, int *ord, uint64_t *off) {
  int k = 0;
  uint64_t at = 0;
  for (size_t sz = 8; sz >= 4; sz /= 2) {
    for (int i = 0; i < n; i++) {
      if (kiln_dtype_size(ts[i].dtype) != sz) continue;
      ord[k++] = i;
      off[i] = at;
      at += ts[i].nbytes;
    }
  }
}

static int st_check_all(const char *path, const KilnTensor *ts, int n, char *err, size_t errlen) {
  if (n < 0 || (n > 0 && !ts)) {
    tio_err(err, errlen, "%s: invalid tensor list", path);
    return -1;
  }
  uint64_t total = 0;
  for (int i = 0; i < n; i++) {
    if (tio_check_tensor(&ts[i], path, err, errlen) != 0) return -1;
    if (ts[i].nbytes > (uint64_t)INT64_MAX - total) {
      tio_err(err, errlen, "%s: tensors total more than 2^63 bytes", path);
      return -1;
    }
    total += ts[i].nbytes;
  }
  return st_check_names(path, ts, n, err, errlen);
}

/* The length, the header, then each tensor's bytes in data order. */
static int st_write_file(const char *path, const KilnTensor *ts, int n, const int *ord,
                         const char *header, size_t hlen, char *err, size_t errlen) {
  TioChunk *chunks = malloc(sizeof *chunks * ((size_t)n + 2));
  if (!chunks) {
    tio_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  unsigned char lenbytes[8];
  for (int i = 0; i < 8; i++) lenbytes[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  chunks[0] = (TioChunk){lenbytes, 8};
  chunks[1] = (TioChunk){header, hlen};
  for (int j = 0; j < n; j++) chunks[j + 2] = (TioChunk){ts[ord[j]].data, ts[ord[j]].nbytes};
  int rc = tio_write_atomic(path, chunks, n + 2, err, errlen);
  free(chunks);
  return rc;
}

int kiln_safetensors_write(const char *path, const KilnTensor *tensors, int n, char *err,
                           size_t errlen) {
  if (st_check_all(path, tensors, n, err, errlen) != 0) return -1;
  int *ord = malloc(sizeof *ord * (size_t)(n ? n : 1));
  uint64_t *off = malloc(sizeof *off * (size_t)(n ? n : 1));
  char *header = NULL;
  size_t hlen = 0;
  int rc = -1;
  if (!ord || !off)
    tio_err(err, errlen, "%s: out of memory", path);
  else {
    st_data_order(tensors, n, ord, off);
    header = st_header(path, tensors, off, n, &hlen, err, errlen);
  }
  if (header) rc = st_write_file(path, tensors, n, ord, header, hlen, err, errlen);
  free(header);
  free(off);
  free(ord);
  return rc;
}
