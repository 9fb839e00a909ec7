/* dataset.c - training data: .npy columns from a folder, IDX image/label pairs through zlib. */
#include "dataset.h"

#include <errno.h>
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

/* Reads exactly n bytes; false on a short read or a zlib error. */
static int idx_read(gzFile f, void *buf, uint64_t n, const char *path, const char *what, char *err,
                    size_t errlen) {
  unsigned char *p = buf;
  uint64_t got = 0;
  while (got < n) {
    unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
    int r = gzread(f, p + got, chunk);
    if (r <= 0) break;
    got += (uint64_t)r;
  }
  if (got == n) return 0;
  int zerr = Z_OK;
  const char *msg = gzerror(f, &zerr);
  tio_err(err, errlen, "%s: truncated %s: expected %llu bytes, got %llu%s%s", path, what,
          (unsigned long long)n, (unsigned long long)got, zerr != Z_OK ? ": " : "",
          zerr != Z_OK ? msg : "");
  return -1;
}

/* The header: magic and dims, each dim >= 1, the data no larger than the cap. */
static int idx_header(gzFile f, const char *path, int ndims, uint32_t *dims, uint64_t *bytes,
                      char *err, size_t errlen) {
  unsigned char h[4 + 4 * 3];
  if (idx_read(f, h, 4 + 4 * (uint64_t)ndims, path, "header", err, errlen) != 0) return -1;
  uint32_t magic = be32(h), want = 0x00000800u | (uint32_t)ndims;
  if (magic != want) {
    tio_err(err, errlen, "%s: bad magic 0x%08x: expected 0x%08x (IDX, unsigned bytes, %d dims)",
            path, magic, want, ndims);
    return -1;
  }
  *bytes = 1;
  for (int i = 0; i < ndims; i++) {
    dims[i] = be32(h + 4 + 4 * i);
    *bytes *= dims[i]; /* three u32 factors cannot reach 2^96, but stop at the cap */
    if (dims[i] == 0 || *bytes > KILN_IDX_MAX_BYTES) {
      tio_err(err, errlen, "%s: dim %d is %u: %s", path, i, dims[i],
              dims[i] ? "the data is larger than 2 GiB" : "every dim must be >= 1");
      return -1;
    }
  }
  return 0;
}

/* One IDX file of ndims dims: its dims and exactly prod(dims) data bytes. */
static int idx_load(const char *path, int ndims, uint32_t *dims, unsigned char **data,
                    uint64_t *bytes, char *err, size_t errlen) {
  gzFile f = gzopen(path, "rb");
  if (!f) {
    tio_err(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    return -1;
  }
  int rc = idx_header(f, path, ndims, dims, bytes, err, errlen);
  *data = rc ? NULL : tio_malloc((size_t)*bytes);
  if (!rc && !*data) {
    tio_err(err, errlen, "%s: out of memory for %llu bytes", path, (unsigned long long)*bytes);
    rc = -1;
  }
  if (!rc) rc = idx_read(f, *data, *bytes, path, "data", err, errlen);
  unsigned char extra;
  int more = rc ? 0 : gzread(f, &extra, 1);
  int zerr = Z_OK;
  if (more > 0)
    tio_err(err, errlen, "%s: unexpected bytes after the %llu bytes of data", path,
            (unsigned long long)*bytes);
  else if (more < 0)
    tio_err(err, errlen, "%s: corrupt compressed data: %s", path, gzerror(f, &zerr));
  if (more != 0) rc = -1;
  gzclose(f);
  if (rc) {
    free(*data);
    *data = NULL;
  }
  return rc;
}

static int idx_images(const char *path, KilnTensor *t, char *err, size_t errlen) {
  uint32_t d[3];
  unsigned char *px;
  uint64_t n;
  if (idx_load(path, 3, d, &px, &n, err, errlen) != 0) return -1;
  float *f = malloc((size_t)n * sizeof *f);
  if (!f) {
    free(px);
    tio_err(err, errlen, "%s: out of memory for %llu pixels", path, (unsigned long long)n);
    return -1;
  }
  for (uint64_t i = 0; i < n; i++) f[i] = (float)px[i] / 255.0f;
  free(px);
  *t = (KilnTensor){.name = tio_memdup("images", 7),
                    .dtype = KILN_F32,
                    .rank = 3,
                    .shape = {d[0], d[1], d[2]},
                    .data = f,
                    .nbytes = (size_t)n * sizeof *f};
  return 0;
}

static int idx_labels(const char *path, KilnTensor *t, char *err, size_t errlen) {
  uint32_t d[1];
  unsigned char *b;
  uint64_t n;
  if (idx_load(path, 1, d, &b, &n, err, errlen) != 0) return -1;
  int32_t *v = malloc((size_t)n * sizeof *v);
  if (!v) {
    free(b);
    tio_err(err, errlen, "%s: out of memory for %llu labels", path, (unsigned long long)n);
    return -1;
  }
  for (uint64_t i = 0; i < n; i++) v[i] = b[i];
  free(b);
  *t = (KilnTensor){.name = tio_memdup("labels", 7),
                    .dtype = KILN_I32,
                    .rank = 1,
                    .shape = {d[0]},
                    .data = v,
                    .nbytes = (size_t)n * sizeof *v};
  return 0;
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
  int rc = idx_images(ipath, &out->columns[0], err, errlen);
  if (!rc) out->n = 1;
  if (!rc) rc = idx_labels(lpath, &out->columns[1], err, errlen);
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
