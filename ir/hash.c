/* hash.c - XXH3-64 structural hashes of nodes and graphs, for CSE and caching.
 *
 * Hashes must be stable across runs, machines and reorderings of ops.def, so
 * they cover an explicit little-endian byte encoding, never struct memory or
 * enum values: ops and dtypes by name, integers as 8 bytes LE, floats as
 * their IEEE bits with -0.0 and NaN canonical, strings with their length. A
 * change to the encoding must bump the version tags below (and the pinned
 * value in tests/unit/test_hash.c). */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* A buffered byte encoder in front of an XXH3 streaming state. */
typedef struct Enc {
  XXH3_state_t *st;
  size_t n;
  unsigned char buf[512];
} Enc;

static void enc_init(Enc *e, const char *tag);

static void enc_flush(Enc *e) {
  if (e->n) XXH3_64bits_update(e->st, e->buf, e->n);
  e->n = 0;
}

static void enc_bytes(Enc *e, const void *p, size_t n) {
  if (e->n + n > sizeof e->buf) enc_flush(e);
  if (n > sizeof e->buf) {
    XXH3_64bits_update(e->st, p, n);
    return;
  }
  memcpy(e->buf + e->n, p, n);
  e->n += n;
}

static void enc_u64(Enc *e, uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
  enc_bytes(e, b, sizeof b);
}

static void enc_i64(Enc *e, int64_t v) { enc_u64(e, (uint64_t)v); }

/* -0.0 hashes as 0.0 and every NaN as one NaN: equal values, equal hashes. */
static void enc_f64(Enc *e, double d) {
  uint64_t bits = UINT64_C(0x7ff8000000000000);
  if (d == 0) d = 0.0;
  if (!isnan(d)) memcpy(&bits, &d, sizeof bits);
  enc_u64(e, bits);
}

/* The length first, so ("ab", "c") and ("a", "bc") differ; NULL differs from "". */
static void enc_str(Enc *e, const char *s) {
  if (!s) {
    enc_u64(e, UINT64_MAX);
    return;
  }
  size_t n = strlen(s);
  enc_u64(e, n);
  enc_bytes(e, s, n);
}

static void enc_init(Enc *e, const char *tag) {
  e->st = XXH3_createState();
  if (!e->st || XXH3_64bits_reset(e->st) != XXH_OK) ir_fatal("hash: cannot create XXH3 state");
  e->n = 0;
  enc_str(e, tag);
}

static uint64_t enc_done(Enc *e) {
  enc_flush(e);
  uint64_t h = XXH3_64bits_digest(e->st);
  XXH3_freeState(e->st);
  return h;
}

static void enc_type(Enc *e, const Type *t) {
  int rank = t->rank < 0 ? 0 : t->rank > IR_MAX_RANK ? IR_MAX_RANK : t->rank;
  enc_str(e, ir_dtype_name(t->dtype));
  enc_i64(e, rank);
  for (int i = 0; i < rank; i++) enc_i64(e, t->dims[i]);
}

static void enc_attr(Enc *e, AttrKind kind, const AttrVal *a) {
  int n = a->n < 0 ? 0 : a->n > IR_MAX_ATTR_LEN ? IR_MAX_ATTR_LEN : a->n;
  switch (kind) {
  case ATTR_INT:
    enc_i64(e, a->i[0]);
    break;
  case ATTR_FLOAT:
    enc_f64(e, a->f[0]);
    break;
  case ATTR_NAME:
    enc_str(e, a->s);
    break;
  case ATTR_INTS:
    enc_i64(e, n);
    for (int i = 0; i < n; i++) enc_i64(e, a->i[i]);
    break;
  case ATTR_FLOATS:
    enc_i64(e, n);
    for (int i = 0; i < n; i++) enc_f64(e, a->f[i]);
    break;
  }
}

/* op name, type, attributes in schema order, input hashes; sources also
 * their name, so two params with equal types never merge. */
uint64_t ir_hash_node(const Node *n, const uint64_t *input_hashes) {
  const OpInfo *info = ir_op_info(n->op);
  Enc e;
  enc_init(&e, "kiln.node.v1");
  enc_str(&e, info->name);
  enc_type(&e, &n->type);
  enc_i64(&e, info->nattrs);
  for (int k = 0; k < info->nattrs && k < IR_MAX_ATTRS; k++)
    enc_attr(&e, info->attrs[k].kind, &n->attr[k]);
  enc_i64(&e, n->nin);
  for (int k = 0; k < n->nin; k++) enc_u64(&e, input_hashes ? input_hashes[k] : 0);
  if (ir_op_is_named_source(n->op)) enc_str(&e, n->name);
  return enc_done(&e);
}

/* Only the hyper-parameters the optimizer uses, as the printer shows them. */
static void enc_optim(Enc *e, const Optim *o) {
  switch (o->kind) {
  case OPTIM_NONE:
    enc_str(e, "none");
    break;
  case OPTIM_SGD:
    enc_str(e, "sgd");
    enc_f64(e, o->lr);
    enc_f64(e, o->momentum);
    enc_f64(e, o->weight_decay);
    break;
  case OPTIM_ADAM:
    enc_str(e, "adam");
    enc_f64(e, o->lr);
    enc_f64(e, o->beta1);
    enc_f64(e, o->beta2);
    enc_f64(e, o->eps);
    enc_f64(e, o->weight_decay);
    break;
  }
}

/* Node hashes by id: inputs come first in a topological graph. */
typedef struct HashMap {
  uint64_t *by_id;
  int nids;
} HashMap;

static uint64_t hash_of(const HashMap *m, const Node *n) {
  return n && n->id >= 0 && n->id < m->nids ? m->by_id[n->id] : 0;
}

static void enc_nodes(Enc *e, const Graph *g, HashMap *m) {
  uint64_t *in = NULL;
  int capin = 0;
  enc_i64(e, g->nnodes);
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->nin > capin) {
      capin = n->nin;
      in = realloc(in, (size_t)capin * sizeof *in);
      if (!in) ir_fatal("hash: out of memory for %d inputs", capin);
    }
    for (int k = 0; k < n->nin; k++) in[k] = hash_of(m, n->in[k]);
    uint64_t h = ir_hash_node(n, in);
    if (n->id >= 0 && n->id < m->nids) m->by_id[n->id] = h;
    enc_u64(e, h);
  }
  free(in);
}

/* The graph's name and sizes, every node in order, the outputs, the loss and
 * the optimizer. */
uint64_t ir_hash_graph(const Graph *g) {
  HashMap m = {.nids = g->next_id > 0 ? g->next_id : 0};
  m.by_id = calloc((size_t)(m.nids ? m.nids : 1), sizeof *m.by_id);
  if (!m.by_id) ir_fatal("hash: out of memory for %d nodes", m.nids);
  Enc e;
  enc_init(&e, "kiln.graph.v1");
  enc_str(&e, g->name);
  enc_i64(&e, g->nsizes);
  for (int i = 0; i < g->nsizes; i++) {
    enc_str(&e, g->sizes[i].name);
    enc_i64(&e, g->sizes[i].value);
  }
  enc_nodes(&e, g, &m);
  enc_i64(&e, g->noutputs);
  for (int i = 0; i < g->noutputs; i++) {
    enc_str(&e, g->outputs[i].name);
    enc_u64(&e, hash_of(&m, g->outputs[i].node));
  }
  enc_i64(&e, g->loss != NULL);
  if (g->loss) enc_u64(&e, hash_of(&m, g->loss));
  enc_optim(&e, &g->optim);
  /* Gradients and updates (train-step graphs only: a forward graph's
   * encoding stays as it was before they existed). */
  if (g->ngrads || g->nupdates) {
    enc_i64(&e, g->ngrads);
    for (int i = 0; i < g->ngrads; i++) {
      enc_u64(&e, hash_of(&m, g->grads[i].param));
      enc_u64(&e, hash_of(&m, g->grads[i].grad));
    }
    enc_i64(&e, g->nupdates);
    for (int i = 0; i < g->nupdates; i++) {
      enc_u64(&e, hash_of(&m, g->updates[i].target));
      enc_u64(&e, hash_of(&m, g->updates[i].value));
    }
  }
  free(m.by_id);
  return enc_done(&e);
}
