/* cse.c - common subexpression elimination through XXH3 structural hashes.
 * Needs: a verified graph. Guarantees: no two nodes left are equal (same op, type, attributes
 * and inputs; add(a, b) equals add(b, a) for commutative ops); inputs, params and states are
 * never merged; of two equal nodes the first stays and takes the second's name if it has none;
 * the order is unchanged.
 *
 * Nodes are hashed in order with ir_hash_node over their inputs' hashes, the two inputs of a
 * commutative op taken in node-id order; a table keyed by the 64-bit hash holds one node per
 * distinct value. A hit merges only after a full comparison (cse_equal): a hash collision
 * never merges different nodes. Inputs are compared as pointers, which holds equal inputs
 * because every earlier duplicate was already replaced by its first copy.
 */
#include "passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct CseSlot {
  uint64_t hash;
  Node *node; /* NULL: empty */
} CseSlot;

/* Open addressing, linear probing, at most half full. */
typedef struct CseTable {
  CseSlot *slots;
  size_t mask;
} CseTable;

/* Equal as values: bit for bit (so 0.0 and -0.0 differ), and every NaN is one NaN. */
static bool cse_same_float(double a, double b) {
  return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

static bool cse_attr_equal(AttrKind kind, const AttrVal *a, const AttrVal *b) {
  switch (kind) {
  case ATTR_INT:
    return a->i[0] == b->i[0];
  case ATTR_FLOAT:
    return cse_same_float(a->f[0], b->f[0]);
  case ATTR_NAME:
    return a->s == b->s || (a->s && b->s && strcmp(a->s, b->s) == 0);
  case ATTR_INTS:
    if (a->n != b->n) return false;
    for (int k = 0; k < a->n; k++)
      if (a->i[k] != b->i[k]) return false;
    return true;
  case ATTR_FLOATS:
    if (a->n != b->n) return false;
    for (int k = 0; k < a->n; k++)
      if (!cse_same_float(a->f[k], b->f[k])) return false;
    return true;
  }
  return false;
}

static bool cse_inputs_equal(const Node *a, const Node *b) {
  if (a->nin != b->nin) return false;
  bool same = true;
  for (int k = 0; same && k < a->nin; k++) same = a->in[k] == b->in[k];
  if (same || a->nin != 2 || !(ir_op_info(a->op)->flags & IR_F_COMMUTATIVE)) return same;
  return a->in[0] == b->in[1] && a->in[1] == b->in[0];
}

/* The full check behind every hash hit: a and b compute the same value. A named source
 * (input, param, state) equals only itself: it is bound by name at run time. */
static bool cse_equal(const Node *a, const Node *b) {
  if (a == b) return true;
  if (a->op != b->op || ir_op_is_named_source(a->op) || !ir_type_eq(&a->type, &b->type))
    return false;
  const OpInfo *info = ir_op_info(a->op);
  for (int k = 0; k < info->nattrs; k++)
    if (!cse_attr_equal(info->attrs[k].kind, &a->attr[k], &b->attr[k])) return false;
  return cse_inputs_equal(a, b);
}

/* n's hash from its inputs' (hash by node id); a commutative op's two inputs in id order. */
static uint64_t cse_hash(const Node *n, const uint64_t *hash, uint64_t *in) {
  for (int k = 0; k < n->nin; k++) in[k] = hash[n->in[k]->id];
  bool commutative = n->nin == 2 && (ir_op_info(n->op)->flags & IR_F_COMMUTATIVE);
  if (commutative && n->in[0]->id > n->in[1]->id) {
    uint64_t t = in[0];
    in[0] = in[1];
    in[1] = t;
  }
  return ir_hash_node(n, in);
}

/* The node equal to n already in the table, or n itself after adding it. */
static Node *cse_find_or_add(CseTable *t, uint64_t h, Node *n) {
  size_t i = (size_t)h & t->mask;
  for (; t->slots[i].node; i = (i + 1) & t->mask)
    if (t->slots[i].hash == h && cse_equal(t->slots[i].node, n)) return t->slots[i].node;
  t->slots[i] = (CseSlot){h, n};
  return n;
}

bool pass_cse(Graph *g, PassCtx *cx) {
  size_t ids = (size_t)(g->next_id ? g->next_id : 1), cap = 16;
  while (cap < 2 * (size_t)g->nnodes) cap *= 2;
  int maxin = 1;
  for (int i = 0; i < g->nnodes; i++) maxin = g->nodes[i]->nin > maxin ? g->nodes[i]->nin : maxin;
  uint64_t *hash = calloc(ids, sizeof *hash), *in = calloc((size_t)maxin, sizeof *in);
  bool *dead = calloc(ids, sizeof *dead);
  CseTable t = {calloc(cap, sizeof(CseSlot)), cap - 1};
  IR_ASSERT(hash && in && dead && t.slots, "cse: out of memory");
  bool changed = false;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    hash[n->id] = cse_hash(n, hash, in);
    if (ir_op_is_named_source(n->op)) continue;
    Node *first = cse_find_or_add(&t, hash[n->id], n);
    if (first == n) continue;
    if (!first->name && n->name) first->name = n->name;
    ir_replace_uses(g, n, first);
    dead[n->id] = changed = true;
  }
  if (changed) ir_remove_nodes(g, dead);
  free(hash);
  free(in);
  free(dead);
  free(t.slots);
  return changed;
}
