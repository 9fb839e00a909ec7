/* verify.c - checks every structural invariant of a Graph; run after each pass.
 *
 * It reports the first broken invariant, naming the node (its index in
 * g->nodes, its op and its name) so a failing pass can be bisected. It reads
 * anything a buggy pass may leave behind, so it checks bounds before it
 * follows a pointer or an index. */
#include "ir.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct Verifier {
  const Graph *g;
  char *msg;
  size_t len;
  int *index; /* node index by id, -1 when no node has that id */
  int nindex;
  int *count; /* scratch, by node index, zero between uses */
} Verifier;

static bool vfail(Verifier *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool vfail(Verifier *v, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (v->msg && v->len) vsnprintf(v->msg, v->len, fmt, ap);
  va_end(ap);
  return false;
}

/* [A-Za-z_][A-Za-z0-9_.]*: what the text IR can spell without quotes. */
static bool is_name(const char *s) {
  if (!s || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return false;
  for (s++; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || *s == '.'))
      return false;
  return true;
}

/* "node 5 (relu %h)" */
static const char *vname(const Node *n, int index, char *buf, size_t len) {
  const char *op = n->op >= 0 && n->op < OP_COUNT ? ir_op_name(n->op) : "?";
  snprintf(buf, len, "node %d (%s%s%s)", index, op, n->name ? " %" : "", n->name ? n->name : "");
  return buf;
}

/* The index of n in g->nodes, or -1 when n is not a node of the graph. */
static int vindex(const Verifier *v, const Node *n) {
  if (!n || n->id < 0 || n->id >= v->nindex) return -1;
  int i = v->index[n->id];
  return i >= 0 && v->g->nodes[i] == n ? i : -1;
}

/* Ids are unique and below next_id, so the next node created gets a fresh one. */
static bool check_ids(Verifier *v) {
  const Graph *g = v->g;
  if (g->nnodes < 0 || (g->nnodes > 0 && !g->nodes) || g->next_id < 0)
    return vfail(v, "graph: bad node list (nnodes %d, next_id %d)", g->nnodes, g->next_id);
  v->nindex = g->next_id;
  v->index = malloc((size_t)(v->nindex ? v->nindex : 1) * sizeof *v->index);
  v->count = calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof *v->count);
  if (!v->index || !v->count) ir_fatal("verify: out of memory for %d nodes", g->nnodes);
  for (int i = 0; i < v->nindex; i++) v->index[i] = -1;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    char b[160];
    if (!n) return vfail(v, "node %d is NULL", i);
    if (n->id < 0 || n->id >= g->next_id)
      return vfail(v, "%s: id %d is not in [0, next_id %d)", vname(n, i, b, sizeof b), n->id,
                   g->next_id);
    if (v->index[n->id] >= 0)
      return vfail(v, "%s: id %d is also the id of node %d", vname(n, i, b, sizeof b), n->id,
                   v->index[n->id]);
    v->index[n->id] = i;
  }
  return true;
}

/* Inputs are nodes of the graph that come earlier: g->nodes is topological. */
static bool check_inputs(Verifier *v, const Node *n, int i) {
  const OpInfo *info = ir_op_info(n->op);
  char b[160];
  if (n->nin < info->min_in || (info->max_in >= 0 && n->nin > info->max_in) ||
      (n->nin > 0 && !n->in))
    return vfail(v, "%s: %d inputs, but %s takes %d to %d", vname(n, i, b, sizeof b), n->nin,
                 info->name, info->min_in, info->max_in);
  for (int k = 0; k < n->nin; k++) {
    int j = vindex(v, n->in[k]);
    if (j < 0)
      return vfail(v, "%s: input %d is not a node of the graph", vname(n, i, b, sizeof b), k);
    if (j >= i)
      return vfail(v, "%s: input %d (node %d) does not come before it", vname(n, i, b, sizeof b), k,
                   j);
  }
  return true;
}

static bool check_attrs(Verifier *v, const Node *n, int i) {
  const OpInfo *info = ir_op_info(n->op);
  char b[160];
  for (int k = 0; k < info->nattrs; k++) {
    const AttrVal *a = &n->attr[k];
    AttrKind kind = info->attrs[k].kind;
    bool list = kind == ATTR_INTS || kind == ATTR_FLOATS;
    bool ok = kind == ATTR_NAME ? is_name(a->s)
              : list            ? a->n >= 0 && a->n <= IR_MAX_ATTR_LEN
                                : a->n == 1;
    if (!ok)
      return vfail(v, "%s: attribute '%s' is malformed (n = %d%s)", vname(n, i, b, sizeof b),
                   info->attrs[k].name, a->n, kind == ATTR_NAME ? ", not a NAME" : "");
  }
  return true;
}

/* The shape rule, run again on a copy, must agree with the stored type. */
static bool check_type(Verifier *v, const Node *n, int i) {
  char b[160], msg[256], t1[IR_TYPE_STR_MAX], t2[IR_TYPE_STR_MAX];
  const Type *t = &n->type;
  bool sane = t->dtype >= 0 && t->dtype < DT_COUNT && t->rank >= 0 && t->rank <= IR_MAX_RANK;
  for (int k = 0; sane && k < t->rank; k++) sane = t->dims[k] >= 0;
  if (!sane)
    return vfail(v, "%s: malformed type (dtype %d, rank %d)", vname(n, i, b, sizeof b),
                 (int)t->dtype, t->rank);
  Node copy = *n;
  if (!ir_infer_type(&copy, msg, sizeof msg))
    return vfail(v, "%s: shape rule fails: %s", vname(n, i, b, sizeof b), msg);
  if (!ir_type_eq(&copy.type, t))
    return vfail(v, "%s: type %s but the shape rule gives %s", vname(n, i, b, sizeof b),
                 ir_type_str(t, t1, sizeof t1), ir_type_str(&copy.type, t2, sizeof t2));
  return true;
}

static bool check_node(Verifier *v, int i) {
  const Node *n = v->g->nodes[i];
  char b[160];
  if (n->op < 0 || n->op >= OP_COUNT) return vfail(v, "node %d: bad op %d", i, (int)n->op);
  if (n->nusers < 0 || n->nusers > n->capusers || (n->nusers > 0 && !n->users))
    return vfail(v, "%s: bad users list (%d of %d)", vname(n, i, b, sizeof b), n->nusers,
                 n->capusers);
  return check_inputs(v, n, i) && check_attrs(v, n, i) && check_type(v, n, i);
}

static int count_in(const Node *u, const Node *n) {
  int c = 0;
  for (int k = 0; k < u->nin; k++) c += u->in[k] == n;
  return c;
}

static int count_users(const Node *n, const Node *u) {
  int c = 0;
  for (int k = 0; k < n->nusers; k++) c += n->users[k] == u;
  return c;
}

/* n's users list holds each user u exactly as often as u uses n. Counting
 * through v->count keeps this linear in the number of edges. */
static bool check_users_of(Verifier *v, const Node *n, int i) {
  char b[160], c[160];
  for (int k = 0; k < n->nusers; k++) {
    int j = vindex(v, n->users[k]);
    if (j < 0)
      return vfail(v, "%s: user %d is not a node of the graph", vname(n, i, b, sizeof b), k);
    v->count[j]++;
  }
  bool ok = true;
  for (int k = 0; k < n->nusers; k++) {
    int j = vindex(v, n->users[k]);
    if (ok && v->count[j] && v->count[j] != count_in(n->users[k], n))
      ok = vfail(v, "%s lists %s as a user %d times, but it uses it %d times",
                 vname(n, i, b, sizeof b), vname(n->users[k], j, c, sizeof c), v->count[j],
                 count_in(n->users[k], n));
    v->count[j] = 0;
  }
  return ok;
}

/* Every use appears in a users list: with check_users_of, the totals
 * matching means no use is missing. */
static bool check_uses(Verifier *v) {
  const Graph *g = v->g;
  long long nusers = 0, nuses = 0;
  char b[160], c[160];
  for (int i = 0; i < g->nnodes; i++) {
    if (!check_users_of(v, g->nodes[i], i)) return false;
    nusers += g->nodes[i]->nusers;
    nuses += g->nodes[i]->nin;
  }
  if (nusers == nuses) return true;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *u = g->nodes[i];
    for (int k = 0; k < u->nin; k++) {
      const Node *n = u->in[k];
      if (count_users(n, u) != count_in(u, n))
        return vfail(v, "%s uses %s %d times, but its users list has it %d times",
                     vname(u, i, b, sizeof b), vname(n, vindex(v, n), c, sizeof c), count_in(u, n),
                     count_users(n, u));
    }
  }
  return vfail(v, "graph: %lld users entries but %lld uses", nusers, nuses);
}

static bool check_outputs(Verifier *v) {
  const Graph *g = v->g;
  char b[IR_TYPE_STR_MAX];
  for (int k = 0; k < g->noutputs; k++) {
    if (!is_name(g->outputs[k].name)) return vfail(v, "output %d has no valid name", k);
    if (vindex(v, g->outputs[k].node) < 0)
      return vfail(v, "output '%s' is not a node of the graph", g->outputs[k].name);
  }
  if (!g->loss) return true;
  if (vindex(v, g->loss) < 0) return vfail(v, "the loss is not a node of the graph");
  if (g->loss->type.rank != 0 || !ir_dtype_is_float(g->loss->type.dtype))
    return vfail(v, "the loss (node %d) must be a float scalar, not %s", vindex(v, g->loss),
                 ir_type_str(&g->loss->type, b, sizeof b));
  return true;
}

/* A gradient belongs to a param, an update to a param or a state; each
 * value has its target's type; no param has two gradients and no target
 * two updates (a step's updates happen at once). */
static bool check_pairs(Verifier *v, const char *what, const Node *target, const Node *value,
                        bool state_ok) {
  char a[IR_TYPE_STR_MAX], c[IR_TYPE_STR_MAX];
  if (vindex(v, target) < 0 || vindex(v, value) < 0)
    return vfail(v, "%s: a node that is not in the graph", what);
  if (target->op != OP_PARAM && !(state_ok && target->op == OP_STATE))
    return vfail(v, "%s of node %d, a %s", what, vindex(v, target), ir_op_name(target->op));
  if (!ir_type_eq(&target->type, &value->type))
    return vfail(v, "%s of '%s': %s value for a %s target", what, target->name,
                 ir_type_str(&value->type, a, sizeof a), ir_type_str(&target->type, c, sizeof c));
  return true;
}

static bool check_grads_updates(Verifier *v) {
  const Graph *g = v->g;
  for (int k = 0; k < g->ngrads; k++) {
    if (!check_pairs(v, "grad", g->grads[k].param, g->grads[k].grad, false)) return false;
    for (int j = 0; j < k; j++)
      if (g->grads[j].param == g->grads[k].param)
        return vfail(v, "param '%s' has two gradients", g->grads[k].param->name);
  }
  for (int k = 0; k < g->nupdates; k++) {
    if (!check_pairs(v, "update", g->updates[k].target, g->updates[k].value, true)) return false;
    for (int j = 0; j < k; j++)
      if (g->updates[j].target == g->updates[k].target)
        return vfail(v, "'%s' is updated twice", g->updates[k].target->name);
  }
  return true;
}

typedef struct NameRef {
  const char *name;
  int index;
} NameRef;

static int cmp_nameref(const void *a, const void *b) {
  const NameRef *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Inputs, params and states are bound by name at run time: one namespace, no
 * duplicates. Sorting finds a duplicate in O(n log n). */
static bool check_names(Verifier *v) {
  const Graph *g = v->g;
  NameRef *refs = malloc((size_t)(g->nnodes ? g->nnodes : 1) * sizeof *refs);
  int n = 0;
  char b[160], c[160];
  if (!refs) ir_fatal("verify: out of memory for %d names", g->nnodes);
  bool ok = true;
  for (int i = 0; ok && i < g->nnodes; i++) {
    const Node *s = g->nodes[i];
    if (!ir_op_is_named_source(s->op)) continue;
    if (!is_name(s->name))
      ok = vfail(v, "%s has no valid name", vname(s, i, b, sizeof b));
    else
      refs[n++] = (NameRef){s->name, i};
  }
  if (ok) qsort(refs, (size_t)n, sizeof *refs, cmp_nameref);
  for (int k = 1; ok && k < n; k++)
    if (strcmp(refs[k].name, refs[k - 1].name) == 0)
      ok = vfail(v, "%s and %s have the same name",
                 vname(g->nodes[refs[k - 1].index], refs[k - 1].index, b, sizeof b),
                 vname(g->nodes[refs[k].index], refs[k].index, c, sizeof c));
  free(refs);
  return ok;
}

bool ir_verify(const Graph *g, char *msg, size_t len) {
  Verifier v = {.g = g, .msg = msg, .len = len};
  bool ok = check_ids(&v);
  for (int i = 0; ok && i < g->nnodes; i++) ok = check_node(&v, i);
  ok = ok && check_uses(&v) && check_outputs(&v) && check_grads_updates(&v) && check_names(&v);
  if (ok && msg && len) msg[0] = '\0';
  free(v.index);
  free(v.count);
  return ok;
}
