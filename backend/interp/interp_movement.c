/* interp_movement.c - data movement: reshape, permute, slice, concat, embedding. */
#include "interp_priv.h"

#include <string.h>

/* out (C order over the walk's shape) = x read at the walk's first offset. */
static void gather(double *out, const double *x, Walk *w) {
  int64_t len = interp_walk_row_len(w), rows = interp_walk_rows(w);
  int64_t s = w->rank ? w->stride[0][w->rank - 1] : 0;
  for (int64_t r = 0; r < rows; r++, interp_walk_next_row(w)) {
    const double *px = x + w->off[0];
    double *po = out + r * len;
    for (int64_t j = 0; j < len; j++) po[j] = px[j * s];
  }
}

/* x.reshape(type): the same elements in the same C order. */
bool interp_reshape(const InterpCtx *cx) {
  memcpy(cx->out, cx->in[0], (size_t)ir_type_numel(&cx->n->type) * sizeof(double));
  return true;
}

/* x.permute(perm): out[i_0, ..., i_r-1] = x[j] with j[perm[d]] = i_d. */
bool interp_permute(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0);
  const AttrVal *perm = ir_attr_c(cx->n, "perm");
  int64_t xs[IR_MAX_RANK];
  interp_strides(xt, xs);
  Walk w;
  interp_walk_init(&w, cx->n->type.rank, cx->n->type.dims);
  for (int d = 0; d < w.rank; d++) w.stride[0][d] = xs[perm->i[d]];
  gather(cx->out, cx->in[0], &w);
  return true;
}

/* x[begin_0:end_0, ..., begin_r-1:end_r-1]: out[i] = x[begin + i]. */
bool interp_slice(const InterpCtx *cx) {
  const Type *xt = interp_in_type(cx, 0);
  const AttrVal *begin = ir_attr_c(cx->n, "begin");
  Walk w;
  interp_walk_init(&w, cx->n->type.rank, cx->n->type.dims);
  interp_strides(xt, w.stride[0]);
  for (int d = 0; d < xt->rank; d++) w.off[0] += begin->i[d] * w.stride[0][d];
  gather(cx->out, cx->in[0], &w);
  return true;
}

/* torch.cat(inputs, axis): each outer index (dims before axis) takes every
 * input's block [len_k * inner] in turn. */
bool interp_concat(const InterpCtx *cx) {
  const Type *ot = &cx->n->type;
  int64_t axis = ir_attr_int(cx->n, "axis"), outer = 1, inner = 1;
  for (int d = 0; d < axis; d++) outer *= ot->dims[d];
  for (int d = (int)axis + 1; d < ot->rank; d++) inner *= ot->dims[d];
  double *o = cx->out;
  for (int64_t i = 0; i < outer; i++)
    for (int k = 0; k < cx->n->nin; k++) {
      int64_t block = interp_in_type(cx, k)->dims[axis] * inner;
      memcpy(o, cx->in[k] + i * block, (size_t)block * sizeof(double));
      o += block;
    }
  return true;
}

/* F.embedding(ids, table): out[p, :] = table[ids[p], :]; an id outside
 * [0, V) is a run-time error. */
bool interp_embedding(const InterpCtx *cx) {
  const Type *idt = interp_in_type(cx, 0), *tt = interp_in_type(cx, 1);
  int64_t v = tt->dims[0], d = tt->dims[1], count = ir_type_numel(idt);
  for (int64_t p = 0; p < count; p++) {
    double id = cx->in[0][p]; /* an i32, exact */
    if (id < 0 || id >= (double)v) {
      char at[INTERP_INDEX_STR_MAX];
      interp_index_str(idt, p, at, sizeof at);
      return interp_fail(cx, "embedding: id %lld at %s is out of range [0, %lld)", (long long)id,
                         at, (long long)v);
    }
    memcpy(cx->out + p * d, cx->in[1] + (int64_t)id * d, (size_t)d * sizeof(double));
  }
  return true;
}
