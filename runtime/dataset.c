/* dataset.c - training data: .npy columns from a folder, IDX image/label pairs through zlib. */
#include "dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "tensor_io_internal.h"

void kiln_dataset_free(KilnDataset *d) {
  for (int i = 0; d->columns && i < d->n; i++) kiln_tensor_free(&d->columns[i]);
  free(d->columns);
  memset(d, 0, sizeof *d);
}

size_t kiln_dataset_sample_bytes(const KilnDataset *d, int c) {
  return d->count > 0 ? d->columns[c].nbytes / (size_t)d->count : 0;
}

/* ---- npy:DIR ------------------------------------------------------------ */

/* DIR/NAME.npy as a named column with at least one sample. */
static int npy_column(const char *dir, const char *name, KilnTensor *t, char *err, size_t errlen) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/%s.npy", dir, name) >= (int)sizeof path) {
    tio_err(err, errlen, "%s: path too long for '%s.npy'", dir, name);
    return -1;
  }
  if (kiln_npy_read(path, t, err, errlen) != 0) return -1;
  if (t->rank < 1 || t->shape[0] < 1) {
    tio_err(err, errlen, "%s: expected one sample per row, got %s", path,
            t->rank < 1 ? "a scalar" : "no rows");
    kiln_tensor_free(t);
    return -1;
  }
  t->name = tio_memdup(name, strlen(name) + 1);
  return 0;
}

int kiln_dataset_read_npy(const char *dir, const char *const *names, int nnames, KilnDataset *out,
                          char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->columns = calloc((size_t)(nnames > 0 ? nnames : 1), sizeof *out->columns);
  if (!out->columns) {
    tio_err(err, errlen, "%s: out of memory", dir);
    return -1;
  }
  int rc = 0;
  for (int i = 0; !rc && i < nnames; i++) {
    KilnTensor *t = &out->columns[i];
    rc = npy_column(dir, names[i], t, err, errlen);
    if (rc) break;
    out->n++;
    if (i > 0 && t->shape[0] != out->count) {
      tio_err(err, errlen,
              "%s/%s.npy has %lld samples but %s/%s.npy has %lld: every file needs the same count",
              dir, names[i], (long long)t->shape[0], dir, names[0], (long long)out->count);
      rc = -1;
    }
    out->count = t->shape[0];
  }
  if (rc) kiln_dataset_free(out);
  return rc;
}

/* ---- idx:PREFIX --------------------------------------------------------- */

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* PREFIX-KIND, or PREFIX-KIND.gz when only that exists. */
static int idx_path(const char *prefix, const char *kind, char *path, size_t len, char *err,
                    size_t errlen) {
  struct stat st;
  if (snprintf(path, len, "%s-%s.gz", prefix, kind) >= (int)len) {
    tio_err(err, errlen, "%s: path too long", prefix);
    return -1;
  }
  snprintf(path, len, "%s-%s", prefix, kind);
  if (stat(path, &st) == 0) return 0;
  snprintf(path, len, "%s-%s.gz", prefix, kind);
  if (stat(path, &st) == 0) return 0;
  tio_err(err, errlen, "cannot open '%s-%s' or '%s': %s", prefix, kind, path, strerror(errno));
  return -1;
}

/* The most bytes an IDX file may hold once decompressed: the largest header,
 * the data cap, and one byte more to tell that there is more. */
#define IDX_MAX_FILE (16 + KILN_IDX_MAX_BYTES + 1)

/* Grows a decompression buffer, doubling up to IDX_MAX_FILE; false when out of memory. */
static bool idx_grow(unsigned char **o, size_t *cap) {
  size_t want = *cap * 2 < IDX_MAX_FILE ? *cap * 2 : IDX_MAX_FILE;
  unsigned char *p = realloc(*o, want);
  if (!p) return false;
  *o = p;
  *cap = want;
  return true;
}

/* Inflates one or more gzip members (as gzread reads them; trailing bytes
 * that are not a gzip member are ignored, as gzread does) into *out, stopping
 * at IDX_MAX_FILE bytes. */
static int idx_gunzip(const unsigned char *buf, size_t len, const char *what, unsigned char **out,
                      size_t *outlen, char *err, size_t errlen) {
  z_stream z;
  memset(&z, 0, sizeof z);
  size_t cap = 1u << 16, n = 0;
  unsigned char *o = malloc(cap);
  if (!o || len > UINT_MAX || inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
    free(o);
    tio_err(err, errlen, "%s: out of memory to decompress %zu bytes", what, len);
    return -1;
  }
  z.next_in = (Bytef *)buf;
  z.avail_in = (uInt)len;
  const char *why = NULL, *zmsg = NULL;
  while (!why && n < IDX_MAX_FILE) {
    if (n == cap && !idx_grow(&o, &cap)) why = "out of memory while decompressing";
    if (why) break;
    size_t room = cap - n < UINT_MAX ? cap - n : UINT_MAX;
    z.next_out = o + n;
    z.avail_out = (uInt)room;
    int r = inflate(&z, Z_NO_FLUSH);
    n += room - z.avail_out;
    bool more = z.avail_in >= 2 && z.next_in[0] == 0x1f && z.next_in[1] == 0x8b;
    if (r == Z_STREAM_END && !more) break;
    if (r == Z_STREAM_END)
      inflateReset(&z);
    else if (r == Z_BUF_ERROR && z.avail_in == 0)
      why = "truncated compressed data (the gzip stream ends early)";
    else if (r != Z_OK && r != Z_BUF_ERROR)
      why = "corrupt compressed data", zmsg = z.msg;
  }
  if (why) tio_err(err, errlen, "%s: %s%s%s", what, why, zmsg ? ": " : "", zmsg ? zmsg : "");
  inflateEnd(&z);
  if (why) {
    free(o);
    return -1;
  }
  *out = o;
  *outlen = n;
  return 0;
}

/* The header (magic and dims, each dim >= 1, the data no larger than the cap)
 * and exactly prod(dims) bytes of data after it. */
static int idx_check(const unsigned char *b, size_t len, const char *what, int ndims,
                     uint32_t *dims, uint64_t *bytes, char *err, size_t errlen) {
  size_t hlen = 4 + 4 * (size_t)ndims;
  if (len < hlen) {
    tio_err(err, errlen, "%s: truncated header: expected %zu bytes, got %zu", what, hlen, len);
    return -1;
  }
  uint32_t magic = be32(b), want = 0x00000800u | (uint32_t)ndims;
  if (magic != want) {
    tio_err(err, errlen, "%s: bad magic 0x%08x: expected 0x%08x (IDX, unsigned bytes, %d dims)",
            what, magic, want, ndims);
    return -1;
  }
  *bytes = 1;
  for (int i = 0; i < ndims; i++) {
    dims[i] = be32(b + 4 + 4 * i);
    *bytes *= dims[i]; /* three u32 factors cannot reach 2^96, but stop at the cap */
    if (dims[i] == 0 || *bytes > KILN_IDX_MAX_BYTES) {
      tio_err(err, errlen, "%s: dim %d is %u: %s", what, i, dims[i],
              dims[i] ? "the data is larger than 2 GiB" : "every dim must be >= 1");
      return -1;
    }
  }
  uint64_t have = len - hlen;
  if (have < *bytes)
    tio_err(err, errlen, "%s: truncated data: expected %llu bytes, got %llu", what,
            (unsigned long long)*bytes, (unsigned long long)have);
  else if (have > *bytes)
    tio_err(err, errlen, "%s: unexpected bytes after the %llu bytes of data", what,
            (unsigned long long)*bytes);
  return have == *bytes ? 0 : -1;
}

/* The checked data as a tensor: images byte / 255 in f32, labels as i32. */
static int idx_tensor(const unsigned char *px, int ndims, const uint32_t *d, uint64_t n,
                      const char *what, KilnTensor *t, char *err, size_t errlen) {
  size_t esize = ndims == 3 ? sizeof(float) : sizeof(int32_t);
  void *v = malloc((size_t)n * esize);
  if (!v) {
    tio_err(err, errlen, "%s: out of memory for %llu values", what, (unsigned long long)n);
    return -1;
  }
  for (uint64_t i = 0; i < n; i++) {
    if (ndims == 3)
      ((float *)v)[i] = (float)px[i] / 255.0f;
    else
      ((int32_t *)v)[i] = px[i];
  }
  *t = (KilnTensor){.name = tio_memdup(ndims == 3 ? "images" : "labels", 7),
                    .dtype = ndims == 3 ? KILN_F32 : KILN_I32,
                    .rank = ndims,
                    .shape = {d[0], ndims == 3 ? d[1] : 0, ndims == 3 ? d[2] : 0},
                    .data = v,
                    .nbytes = (size_t)n * esize};
  return 0;
}

int kiln_idx_parse(const void *buf, size_t len, const char *what, int ndims, KilnTensor *out,
                   char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  what = what ? what : "<memory>";
  if (ndims != 1 && ndims != 3) {
    tio_err(err, errlen, "%s: IDX files of %d dims are not training data", what, ndims);
    return -1;
  }
  const unsigned char *b = buf;
  unsigned char *plain = NULL;
  if (len >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
    if (idx_gunzip(b, len, what, &plain, &len, err, errlen) != 0) return -1;
    b = plain;
  }
  uint32_t dims[3];
  uint64_t n;
  int rc = idx_check(b, len, what, ndims, dims, &n, err, errlen);
  if (!rc) rc = idx_tensor(b + 4 + 4 * ndims, ndims, dims, n, what, out, err, errlen);
  free(plain);
  return rc;
}

/* One IDX file, plain or gzip, read whole. */
static int idx_file(const char *path, int ndims, KilnTensor *t, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) == 0 && (uint64_t)st.st_size > IDX_MAX_FILE) {
    tio_err(err, errlen, "%s: %llu bytes: IDX data is limited to 2 GiB", path,
            (unsigned long long)st.st_size);
    return -1;
  }
  unsigned char *buf;
  size_t len;
  if (tio_read_file(path, &buf, &len, err, errlen) != 0) return -1;
  int rc = kiln_idx_parse(buf, len, path, ndims, t, err, errlen);
  free(buf);
  return rc;
}

int kiln_dataset_read_idx(const char *prefix, KilnDataset *out, char *err, size_t errlen) {
  char ipath[4096], lpath[4096];
  memset(out, 0, sizeof *out);
  if (idx_path(prefix, "images-idx3-ubyte", ipath, sizeof ipath, err, errlen) != 0 ||
      idx_path(prefix, "labels-idx1-ubyte", lpath, sizeof lpath, err, errlen) != 0)
    return -1;
  out->columns = calloc(2, sizeof *out->columns);
  if (!out->columns) {
    tio_err(err, errlen, "%s: out of memory", prefix);
    return -1;
  }
  int rc = idx_file(ipath, 3, &out->columns[0], err, errlen);
  if (!rc) out->n = 1;
  if (!rc) rc = idx_file(lpath, 1, &out->columns[1], err, errlen);
  if (!rc) out->n = 2;
  if (!rc && out->columns[0].shape[0] != out->columns[1].shape[0]) {
    tio_err(err, errlen, "%s has %lld images but %s has %lld labels", ipath,
            (long long)out->columns[0].shape[0], lpath, (long long)out->columns[1].shape[0]);
    rc = -1;
  }
  if (rc) {
    kiln_dataset_free(out);
    return -1;
  }
  out->count = out->columns[0].shape[0];
  return 0;
}
