/* tensor_io.c - dtypes, tensors, and the file plumbing under the safetensors and .npy code. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tensor_io_internal.h"

/* Tensor data is handed out as native arrays and written as little-endian bytes unchanged. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) &&                                 \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Kiln's runtime assumes a little-endian host"
#endif

size_t kiln_dtype_size(KilnDType dt) {
  switch (dt) {
  case KILN_F32:
    return 4;
  case KILN_I32:
    return 4;
  case KILN_F64:
    return 8;
  }
  return 0;
}

const char *kiln_dtype_name(KilnDType dt) {
  switch (dt) {
  case KILN_F32:
    return "F32";
  case KILN_I32:
    return "I32";
  case KILN_F64:
    return "F64";
  }
  return "?";
}

const char *kiln_dtype_npy_descr(KilnDType dt) {
  switch (dt) {
  case KILN_F32:
    return "<f4";
  case KILN_I32:
    return "<i4";
  case KILN_F64:
    return "<f8";
  }
  return "?";
}

const char *kiln_dtype_lower_name(KilnDType dt) {
  switch (dt) {
  case KILN_F32:
    return "f32";
  case KILN_I32:
    return "i32";
  case KILN_F64:
    return "f64";
  }
  return "?";
}

int kiln_dtype_from_name(const char *s, KilnDType *out) {
  static const KilnDType all[] = {KILN_F32, KILN_I32, KILN_F64};
  for (size_t i = 0; s && i < sizeof all / sizeof all[0]; i++) {
    if (strcmp(s, kiln_dtype_name(all[i])) == 0 || strcmp(s, kiln_dtype_lower_name(all[i])) == 0) {
      *out = all[i];
      return 0;
    }
  }
  return -1;
}

int64_t kiln_tensor_numel(const KilnTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank && i < KILN_MAX_RANK; i++) n *= t->shape[i];
  return n;
}

void kiln_tensor_free(KilnTensor *t) {
  if (!t) return;
  free(t->name);
  free(t->data);
  memset(t, 0, sizeof *t);
}

void tio_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

uint64_t tio_le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

unsigned tio_le16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

void *tio_malloc(size_t n) { return malloc(n ? n : 1); }

void *tio_memdup(const void *p, size_t n) {
  void *q = tio_malloc(n);
  if (q && n) memcpy(q, p, n);
  return q;
}

int tio_shape_bytes(const int64_t *shape, int rank, KilnDType dt, uint64_t *nbytes) {
  /* The product skips zero dims, so a zero cannot hide an overflowing product of the others
     (which later stride arithmetic would still meet). */
  uint64_t n = kiln_dtype_size(dt);
  int zero = 0;
  for (int i = 0; i < rank; i++) {
    if (shape[i] < 0) return -1;
    uint64_t d = (uint64_t)shape[i];
    if (d == 0)
      zero = 1;
    else if (n > (uint64_t)INT64_MAX / d)
      return -1;
    else
      n *= d;
  }
  *nbytes = zero ? 0 : n;
  return 0;
}

void tio_shape_str(char *buf, size_t n, const int64_t *shape, int rank) {
  int w = snprintf(buf, n, "[");
  size_t at = w > 0 ? (size_t)w : 0;
  for (int i = 0; i < rank && at < n; i++) {
    w = snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    at += w > 0 ? (size_t)w : 0;
  }
  if (at < n) snprintf(buf + at, n - at, "]");
}

int tio_check_tensor(const KilnTensor *t, const char *path, char *err, size_t errlen) {
  const char *name = t->name ? t->name : "";
  if (t->rank < 0 || t->rank > KILN_MAX_RANK) {
    tio_err(err, errlen, "%s: tensor '%s': rank %d is outside 0..%d", path, name, t->rank,
            KILN_MAX_RANK);
    return -1;
  }
  if (kiln_dtype_size(t->dtype) == 0) {
    tio_err(err, errlen, "%s: tensor '%s': unknown dtype %d", path, name, (int)t->dtype);
    return -1;
  }
  uint64_t nb;
  char s[256];
  tio_shape_str(s, sizeof s, t->shape, t->rank);
  if (tio_shape_bytes(t->shape, t->rank, t->dtype, &nb) != 0) {
    tio_err(err, errlen, "%s: tensor '%s': shape %s is negative or too large", path, name, s);
    return -1;
  }
  if (nb != t->nbytes) {
    tio_err(err, errlen, "%s: tensor '%s': shape %s of %s needs %llu bytes, but nbytes is %zu",
            path, name, s, kiln_dtype_name(t->dtype), (unsigned long long)nb, t->nbytes);
    return -1;
  }
  if (nb > 0 && !t->data) {
    tio_err(err, errlen, "%s: tensor '%s': data is NULL", path, name);
    return -1;
  }
  return 0;
}

/* Reads exactly len bytes; a file that shrank under us is an error, not a short buffer. */
static int read_all(int fd, unsigned char *p, size_t len, const char *path, char *err,
                    size_t errlen) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(fd, p + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      tio_err(err, errlen, "%s: read failed after %zu of %zu bytes: %s", path, got, len,
              r < 0 ? strerror(errno) : "unexpected end of file");
      return -1;
    }
    got += (size_t)r;
  }
  return 0;
}

int tio_read_file(const char *path, unsigned char **buf, size_t *len, char *err, size_t errlen) {
  *buf = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    tio_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
      (uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
    tio_err(err, errlen, "%s: not a regular file", path);
    close(fd);
    return -1;
  }
  size_t n = (size_t)st.st_size;
  unsigned char *p = tio_malloc(n);
  if (!p) {
    tio_err(err, errlen, "%s: out of memory reading %zu bytes", path, n);
    close(fd);
    return -1;
  }
  if (read_all(fd, p, n, path, err, errlen) != 0) {
    free(p);
    close(fd);
    return -1;
  }
  close(fd);
  *buf = p;
  *len = n;
  return 0;
}

static int write_all(int fd, const void *p, size_t n) {
  const unsigned char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

/* splitmix64: spreads pid, time and a counter over the temp name's letters. */
static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* Opens a fresh PATH.tmp.XXXXXX with O_EXCL; mode 0666 so the umask applies as for any file. */
static int open_temp(const char *path, char *tmp, size_t tmplen) {
  static _Atomic unsigned counter;
  static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  for (int attempt = 0; attempt < 100; attempt++) {
    uint64_t x = mix64((uint64_t)getpid() << 32 ^ (uint64_t)time(NULL) ^ (uint64_t)counter++ << 48 ^
                       (uint64_t)(uintptr_t)tmp);
    char suffix[7];
    for (int i = 0; i < 6; i++, x /= 62) suffix[i] = letters[x % 62];
    suffix[6] = '\0';
    snprintf(tmp, tmplen, "%s.tmp.%s", path, suffix);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return -1;
}

int tio_write_atomic(const char *path, const TioChunk *chunks, int n, char *err, size_t errlen) {
  size_t tmplen = strlen(path) + 16;
  char *tmp = malloc(tmplen);
  if (!tmp) {
    tio_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  int fd = open_temp(path, tmp, tmplen);
  if (fd < 0) {
    tio_err(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) rc = write_all(fd, chunks[i].p, chunks[i].n);
  if (rc != 0) tio_err(err, errlen, "%s: cannot write %s: %s", path, tmp, strerror(errno));
  if (close(fd) != 0 && rc == 0) {
    tio_err(err, errlen, "%s: cannot write %s: %s", path, tmp, strerror(errno));
    rc = -1;
  }
  if (rc == 0 && rename(tmp, path) != 0) {
    tio_err(err, errlen, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    rc = -1;
  }
  if (rc != 0) unlink(tmp);
  free(tmp);
  return rc;
}
