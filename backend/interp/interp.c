/* interp.c - the reference interpreter's driver: buffers, binding, running the graph in order. */
#include "interp_priv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static InterpKernel *const interp_kernels[OP_COUNT] = {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  [OP_##NAME] = interp,
#include "ops.def"
#undef OP
};

/* Buffers are indexed by node id. val holds the value as doubles while the
 * graph runs; native holds it in the node's dtype for interp_value (for an
 * f64 node it is val itself). */
struct Interp {
  const Graph *g;
  int nids;
  double **val;
  void **native;
  bool *bound;
  const double **in; /* scratch: the inputs of the node being run */
};

bool interp_fail(const InterpCtx *cx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (cx->len) vsnprintf(cx->err, cx->len, fmt, ap);
  va_end(ap);
  return false;
}

void *interp_scratch(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size);
  if (!p) ir_fatal("interp: out of memory allocating %zu scratch elements", count);
  return p;
}

static bool set_err(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool set_err(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (len) vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return false;
}

/* ---- Buffers ------------------------------------------------------------ */

static bool alloc_node(Interp *it, const Node *n) {
  IR_ASSERT(n->id >= 0 && n->id < it->nids, "interp: node id %d outside the graph's ids", n->id);
  IR_ASSERT(!it->val[n->id], "interp: node id %d appears twice in the graph", n->id);
  size_t count = (size_t)ir_type_numel(&n->type); /* <= IR_MAX_NUMEL: no overflow */
  it->val[n->id] = calloc(count, sizeof(double));
  if (!it->val[n->id]) return false;
  if (n->type.dtype == DT_F64)
    it->native[n->id] = it->val[n->id];
  else
    it->native[n->id] = calloc(count, ir_dtype_size(n->type.dtype));
  return it->native[n->id] != NULL;
}

Interp *interp_new(const Graph *g) {
  Interp *it = calloc(1, sizeof *it);
  if (!it) return NULL;
  it->g = g;
  it->nids = g->next_id;
  size_t ids = (size_t)(it->nids ? it->nids : 1);
  it->val = calloc(ids, sizeof *it->val);
  it->native = calloc(ids, sizeof *it->native);
  it->bound = calloc(ids, sizeof *it->bound);
  int maxin = 1;
  for (int i = 0; i < g->nnodes; i++) maxin = g->nodes[i]->nin > maxin ? g->nodes[i]->nin : maxin;
  it->in = calloc((size_t)maxin, sizeof *it->in);
  bool ok = it->val && it->native && it->bound && it->in;
  for (int i = 0; ok && i < g->nnodes; i++) ok = alloc_node(it, g->nodes[i]);
  if (!ok) {
    interp_free(it);
    return NULL;
  }
  return it;
}

void interp_free(Interp *it) {
  if (!it) return;
  for (int id = 0; it->val && it->native && id < it->nids; id++) {
    if (it->native[id] != it->val[id]) free(it->native[id]);
    free(it->val[id]);
  }
  free(it->val);
  free(it->native);
  free(it->bound);
  free(it->in);
  free(it);
}

/* ---- Values in the node's dtype ---------------------------------------- */

/* Rounds an f32 node's doubles to float (keeping val exactly the stored
 * float) and fills the native copy. */
static void store_native(Interp *it, const Node *n) {
  double *v = it->val[n->id];
  int64_t count = ir_type_numel(&n->type);
  switch (n->type.dtype) {
  case DT_F32: {
    float *f = it->native[n->id];
    for (int64_t i = 0; i < count; i++) v[i] = f[i] = (float)v[i];
    break;
  }
  case DT_I32: {
    int32_t *p = it->native[n->id];
    for (int64_t i = 0; i < count; i++) p[i] = (int32_t)v[i]; /* i32 values are copies of ids */
    break;
  }
  case DT_F64:
    break;
  case DT_COUNT:
    ir_fatal("interp: node %d has no dtype", n->id);
  }
}

const void *interp_value(const Interp *it, const Node *n) {
  IR_ASSERT(n && n->id >= 0 && n->id < it->nids && it->native[n->id],
            "interp_value: node is not in the interpreted graph");
  return it->native[n->id];
}

const Node *interp_output(const Interp *it, const char *name) {
  for (int k = 0; k < it->g->noutputs; k++)
    if (strcmp(it->g->outputs[k].name, name) == 0) return it->g->outputs[k].node;
  return NULL;
}

/* ---- Binding ------------------------------------------------------------ */

/* Float data converts between f32 and f64; ids stay i32. */
static bool dtypes_compatible(DType node, DType given) {
  return (unsigned)given < DT_COUNT &&
         (node == given || (ir_dtype_is_float(node) && ir_dtype_is_float(given)));
}

static bool same_shape(const Type *a, const Type *b) {
  if (a->rank != b->rank) return false;
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return false;
  return true;
}

bool interp_set(Interp *it, const char *name, DType dt, int rank, const int64_t *dims,
                const void *data, char *err, size_t len) {
  Node *n = ir_find_named_source(it->g, name);
  if (!n) return set_err(err, len, "no input or param named '%s'", name);
  const char *what = ir_op_name(n->op);
  char want[IR_TYPE_STR_MAX], got[IR_TYPE_STR_MAX];
  ir_type_str(&n->type, want, sizeof want);
  if ((unsigned)dt >= DT_COUNT || rank < 0 || rank > IR_MAX_RANK)
    return set_err(err, len, "%s '%s' expects %s, got an invalid dtype or rank", what, name, want);
  Type given = ir_type(dt, rank, dims);
  if (!dtypes_compatible(n->type.dtype, dt) || !same_shape(&given, &n->type))
    return set_err(err, len, "%s '%s' expects %s, got %s", what, name, want,
                   ir_type_str(&given, got, sizeof got));
  double *v = it->val[n->id];
  int64_t count = ir_type_numel(&n->type);
  for (int64_t i = 0; i < count; i++) v[i] = ir_value_at(dt, data, i);
  store_native(it, n);
  it->bound[n->id] = true;
  return true;
}

/* ---- Running ------------------------------------------------------------ */

bool interp_run(Interp *it, char *err, size_t len) {
  const Graph *g = it->g;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    for (int k = 0; k < n->nin; k++) it->in[k] = it->val[n->in[k]->id];
    InterpCtx cx = {.n = n,
                    .out = it->val[n->id],
                    .in = it->in,
                    .bound = it->bound[n->id],
                    .err = err,
                    .len = len};
    InterpKernel *kernel = interp_kernels[n->op];
    IR_ASSERT(kernel, "interp: no kernel for op %s", ir_op_name(n->op));
    if (!kernel(&cx)) return false;
    store_native(it, n);
  }
  return true;
}

/* ---- Train steps -------------------------------------------------------- */

static void copy_value(Interp *it, const Node *target, const double *v) {
  size_t count = (size_t)ir_type_numel(&target->type);
  memcpy(it->val[target->id], v, count * sizeof(double));
  store_native(it, target);
  it->bound[target->id] = true;
}

/* Targets are params and states, which no kernel writes, so only a value
 * that is itself a source (another update's target, perhaps) needs a copy
 * taken before the first write. */
bool interp_apply_updates(Interp *it, char *err, size_t len) {
  const Graph *g = it->g;
  double **snap = calloc((size_t)(g->nupdates ? g->nupdates : 1), sizeof *snap);
  bool ok = snap != NULL;
  for (int k = 0; ok && k < g->nupdates; k++) {
    const Node *v = g->updates[k].value;
    if (!ir_op_is_named_source(v->op)) continue;
    size_t bytes = (size_t)ir_type_numel(&v->type) * sizeof(double);
    snap[k] = malloc(bytes ? bytes : 1);
    if (snap[k]) memcpy(snap[k], it->val[v->id], bytes);
    ok = snap[k] != NULL;
  }
  for (int k = 0; ok && k < g->nupdates; k++) {
    const GraphUpdate *u = &g->updates[k];
    copy_value(it, u->target, snap[k] ? snap[k] : it->val[u->value->id]);
  }
  for (int k = 0; snap && k < g->nupdates; k++) free(snap[k]);
  free(snap);
  return ok || set_err(err, len, "out of memory applying %d updates", g->nupdates);
}

const void *interp_source(const Interp *it, const char *name) {
  const Node *n = ir_find_named_source(it->g, name);
  return n ? it->native[n->id] : NULL;
}

/* ---- f64 promotion ------------------------------------------------------ */

void interp_promote_f64(Graph *g) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->type.dtype == DT_F32) g->nodes[i]->type.dtype = DT_F64;
}
