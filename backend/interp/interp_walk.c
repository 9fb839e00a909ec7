/* interp_walk.c - strided index walks: C order a row at a time, with broadcasting strides. */
#include "interp_priv.h"

#include <stdio.h>
#include <string.h>

void interp_strides(const Type *t, int64_t *stride) {
  int64_t s = 1;
  for (int d = t->rank - 1; d >= 0; d--) {
    stride[d] = s;
    s *= t->dims[d];
  }
}

void interp_broadcast_strides(const Type *in, const Type *out, int64_t *stride) {
  int64_t own[IR_MAX_RANK];
  interp_strides(in, own);
  for (int d = 0; d < out->rank; d++) {
    int k = in->rank - out->rank + d; /* in's dims align with out's last ones */
    stride[d] = k >= 0 && in->dims[k] != 1 ? own[k] : 0;
  }
}

void interp_walk_init(Walk *w, int rank, const int64_t *dims) {
  memset(w, 0, sizeof *w);
  w->rank = rank;
  for (int d = 0; d < rank; d++) w->dims[d] = dims[d];
}

int64_t interp_walk_row_len(const Walk *w) { return w->rank ? w->dims[w->rank - 1] : 1; }

int64_t interp_walk_rows(const Walk *w) {
  int64_t rows = 1;
  for (int d = 0; d + 1 < w->rank; d++) rows *= w->dims[d];
  return rows;
}

/* An odometer over dims from .. 0: bump dim from, carry leftwards. */
static void advance(Walk *w, int from) {
  for (int d = from; d >= 0; d--) {
    w->off[0] += w->stride[0][d];
    w->off[1] += w->stride[1][d];
    if (++w->idx[d] < w->dims[d]) return;
    w->off[0] -= w->stride[0][d] * w->dims[d];
    w->off[1] -= w->stride[1][d] * w->dims[d];
    w->idx[d] = 0;
  }
}

void interp_walk_next_row(Walk *w) { advance(w, w->rank - 2); }
void interp_walk_next(Walk *w) { advance(w, w->rank - 1); }

void interp_broadcast_map(const Type *out_t, double *out, const Type *at, const double *a,
                          const Type *bt, const double *b, double (*f)(double, double)) {
  int64_t count = ir_type_numel(out_t);
  if (ir_type_numel(at) == count && ir_type_numel(bt) == count) {
    /* Same shape (up to leading 1s): no index math at all. */
    for (int64_t i = 0; i < count; i++) out[i] = f(a[i], b[i]);
    return;
  }
  Walk w;
  interp_walk_init(&w, out_t->rank, out_t->dims);
  interp_broadcast_strides(at, out_t, w.stride[0]);
  interp_broadcast_strides(bt, out_t, w.stride[1]);
  int64_t len = interp_walk_row_len(&w), rows = interp_walk_rows(&w);
  int64_t sa = out_t->rank ? w.stride[0][out_t->rank - 1] : 0;
  int64_t sb = out_t->rank ? w.stride[1][out_t->rank - 1] : 0;
  for (int64_t r = 0; r < rows; r++, interp_walk_next_row(&w)) {
    const double *pa = a + w.off[0], *pb = b + w.off[1];
    double *po = out + r * len;
    for (int64_t j = 0; j < len; j++) po[j] = f(pa[j * sa], pb[j * sb]);
  }
}

/* "[3, 7]": the multi-index of flat position p in t. */
void interp_index_str(const Type *t, int64_t p, char *buf, size_t len) {
  int64_t idx[IR_MAX_RANK];
  for (int d = t->rank - 1; d >= 0; d--) {
    idx[d] = p % t->dims[d];
    p /= t->dims[d];
  }
  size_t used = (size_t)snprintf(buf, len, "[");
  for (int d = 0; d < t->rank && used < len; d++)
    used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "", (long long)idx[d]);
  if (used < len) snprintf(buf + used, len - used, "]");
}
