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

/* ---- Kernels and buffers (passes/fuse.c, passes/plan.c; docs/IR.md) ----- */

enum { ROOT_OUT = 1, ROOT_END = 2 };

typedef struct KernelCheck {
  unsigned *need;      /* by index: which entries compute it (1 infer, 2 grad, 4 train) */
  int *last;           /* by index: the last kernel reading it (through inline nodes too); -1 */
  bool *last_inl;      /* by index: that kernel reads it through an inline node */
  unsigned char *root; /* by index: ROOT_OUT an output; ROOT_END the loss, a gradient or an update
                          value, which the entry points read after the last kernel */
  int *stamp, *stack;
} KernelCheck;

static bool is_anchor_kind(OpKind op) {
  return (ir_op_info(op)->flags & (IR_F_ANCHOR | IR_F_REDUCTION)) != 0;
}

static bool kernel_is_elementwise(const Graph *g, int first, int k) {
  for (int i = first; i < g->nnodes && g->nodes[i]->kernel == k; i++)
    if (!(ir_op_info(g->nodes[i]->op)->flags & IR_F_ELEMWISE) && g->nodes[i]->op != OP_RESHAPE)
      return false;
  return true;
}

static void kc_read(KernelCheck *c, int q, int k, bool inl) {
  if (c->last[q] < k)
    c->last[q] = k, c->last_inl[q] = inl;
  else if (c->last[q] == k)
    c->last_inl[q] |= inl;
}

/* What kernel k (nodes from index i on) reads from outside it, through inline nodes. */
static void kc_reads(Verifier *v, KernelCheck *c, int i) {
  const Graph *g = v->g;
  int k = g->nodes[i]->kernel, top = 0;
  for (; i < g->nnodes && g->nodes[i]->kernel == k; i++)
    for (int j = 0; j < g->nodes[i]->nin; j++) {
      int q = vindex(v, g->nodes[i]->in[j]);
      if (g->nodes[q]->kernel == IR_KERNEL_INLINE) {
        if (c->stamp[q] != k + 1) c->stamp[q] = k + 1, c->stack[top++] = q;
      } else if (g->nodes[q]->kernel != k) {
        kc_read(c, q, k, false);
      }
    }
  while (top > 0) {
    const Node *n = g->nodes[c->stack[--top]];
    for (int j = 0; j < n->nin; j++) {
      int q = vindex(v, n->in[j]);
      if (g->nodes[q]->kernel != IR_KERNEL_INLINE)
        kc_read(c, q, k, true);
      else if (c->stamp[q] != k + 1)
        c->stamp[q] = k + 1, c->stack[top++] = q;
    }
  }
}

static void kc_init(Verifier *v, KernelCheck *c) {
  const Graph *g = v->g;
  size_t n = (size_t)(g->nnodes ? g->nnodes : 1);
  c->need = calloc(n, sizeof *c->need);
  c->last = malloc(n * sizeof *c->last);
  c->last_inl = calloc(n, sizeof *c->last_inl);
  c->root = calloc(n, sizeof *c->root);
  c->stamp = calloc(n, sizeof *c->stamp);
  c->stack = malloc(n * sizeof *c->stack);
  if (!c->need || !c->last || !c->last_inl || !c->root || !c->stamp || !c->stack)
    ir_fatal("verify: out of memory for %d nodes", g->nnodes);
  for (int i = 0; i < g->nnodes; i++) c->last[i] = -1;
  for (int k = 0; k < g->noutputs; k++) c->need[vindex(v, g->outputs[k].node)] |= 1;
  if (g->loss) c->need[vindex(v, g->loss)] |= 6;
  for (int k = 0; k < g->ngrads; k++) c->need[vindex(v, g->grads[k].grad)] |= 6;
  for (int k = 0; k < g->nupdates; k++) c->need[vindex(v, g->updates[k].value)] |= 4;
  for (int i = g->nnodes - 1; i >= 0; i--)
    for (int j = 0; j < g->nodes[i]->nin; j++) c->need[vindex(v, g->nodes[i]->in[j])] |= c->need[i];
  for (int k = 0; k < g->noutputs; k++) c->root[vindex(v, g->outputs[k].node)] |= ROOT_OUT;
  if (g->loss) c->root[vindex(v, g->loss)] |= ROOT_END;
  for (int k = 0; k < g->ngrads; k++) c->root[vindex(v, g->grads[k].grad)] |= ROOT_END;
  for (int k = 0; k < g->nupdates; k++) c->root[vindex(v, g->updates[k].value)] |= ROOT_END;
}

static void kc_free(KernelCheck *c) {
  free(c->need), free(c->last), free(c->last_inl), free(c->root), free(c->stamp), free(c->stack);
}

/* Each kernel is one contiguous run of g->nodes, kernels in order 0, 1, ...: with the nodes in
 * topological order, no path can leave a kernel and come back (the kernels are convex). */
static bool check_kernel_runs(Verifier *v, KernelCheck *c) {
  const Graph *g = v->g;
  int cur = -1, anchors = 0;
  char b[160];
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    int k = n->kernel;
    bool named = ir_op_is_named_source(n->op);
    if (named ? k != IR_KERNEL_NONE : (k != IR_KERNEL_INLINE && (k < 0 || k >= g->nkernels)))
      return vfail(v, "%s: bad kernel %d (%d kernels)", vname(n, i, b, sizeof b), k, g->nkernels);
    if (k == IR_KERNEL_INLINE && c->root[i])
      return vfail(v, "%s: an output, loss, gradient or update value cannot be inline",
                   vname(n, i, b, sizeof b));
    if (k < 0) continue;
    if (k != cur && k != cur + 1)
      return vfail(v, "%s: kernel k%d after k%d: kernels must come in order",
                   vname(n, i, b, sizeof b), k, cur);
    if (k == cur && g->nodes[i - 1]->kernel != k)
      return vfail(v, "%s: kernel k%d is not contiguous", vname(n, i, b, sizeof b), k);
    if (k != cur) {
      cur = k, anchors = 0;
      kc_reads(v, c, i);
    }
    anchors += is_anchor_kind(n->op);
    if (anchors > 1)
      return vfail(v, "%s: a second anchor in kernel k%d", vname(n, i, b, sizeof b), k);
    if (c->need[i] != c->need[i - (i > 0 && g->nodes[i - 1]->kernel == k)])
      return vfail(v, "%s: kernel k%d mixes values different entry points need",
                   vname(n, i, b, sizeof b), k);
  }
  if (cur != g->nkernels - 1)
    return vfail(v, "graph: %d kernels but k%d is the last", g->nkernels, cur);
  return true;
}

/* A value's home: where a planned graph stores it. */
static bool check_home(Verifier *v, KernelCheck *c, int i) {
  const Graph *g = v->g;
  const Node *n = g->nodes[i];
  int64_t size = ir_type_numel(&n->type) * (int64_t)ir_dtype_size(n->type.dtype);
  bool stored = c->root[i] || c->last[i] > n->kernel;
  char b[160];
  if (n->kernel < 0 && n->offset != IR_BUF_NONE)
    return vfail(v, "%s: a buffer for a value no kernel computes", vname(n, i, b, sizeof b));
  if (n->kernel < 0) return true;
  if (stored && n->offset == IR_BUF_NONE)
    return vfail(v, "%s: read outside kernel k%d but has no buffer", vname(n, i, b, sizeof b),
                 n->kernel);
  if (n->offset >= 0 && (n->offset % IR_BUF_ALIGN || n->offset > g->arena_bytes - size))
    return vfail(v, "%s: buffer @%lld+%lld misaligned or outside the arena (%lld bytes)",
                 vname(n, i, b, sizeof b), (long long)n->offset, (long long)size,
                 (long long)g->arena_bytes);
  bool grad = false;
  for (int k = 0; k < g->ngrads; k++) grad |= g->grads[k].grad == n;
  if (n->offset == IR_BUF_GRAD && !grad)
    return vfail(v, "%s: @grad but it is no param's gradient", vname(n, i, b, sizeof b));
  if (n->offset < IR_BUF_UPDATE)
    return vfail(v, "%s: bad buffer %lld", vname(n, i, b, sizeof b), (long long)n->offset);
  return true;
}

/* An update written in place into its target: nothing reads the target after the value's
 * kernel, which is elementwise and reads the target only directly. */
static bool check_update_home(Verifier *v, KernelCheck *c, int i, int first) {
  const Graph *g = v->g;
  const Node *n = g->nodes[i];
  char b[160];
  for (int u = 0; u < g->nupdates; u++) {
    if (g->updates[u].value != n) continue;
    int t = vindex(v, g->updates[u].target);
    if (c->last[t] > n->kernel || (c->last[t] == n->kernel && c->last_inl[t]) ||
        !kernel_is_elementwise(g, first, n->kernel))
      return vfail(v, "%s: @update, but its target is read later or out of order",
                   vname(n, i, b, sizeof b));
    return true;
  }
  return vfail(v, "%s: @update but it is no update value", vname(n, i, b, sizeof b));
}

typedef struct Buf {
  int index;
  int64_t lo, hi, start, end;
} Buf;

/* Two arena buffers live at one kernel never share a byte, unless the kernel where one dies and
 * the other is born is elementwise and writes the second in place over the first. */
static bool check_buffers(Verifier *v, KernelCheck *c, const int *first) {
  const Graph *g = v->g;
  Buf *bufs = malloc((size_t)(g->nnodes ? g->nnodes : 1) * sizeof *bufs);
  int nb = 0;
  char b1[160], b2[160];
  if (!bufs) ir_fatal("verify: out of memory");
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->kernel < 0 || n->offset < 0) continue;
    int64_t size = ir_type_numel(&n->type) * (int64_t)ir_dtype_size(n->type.dtype);
    /* Outputs live to their last reader: m_infer writes them to the caller's memory. */
    int64_t end = c->root[i] & ROOT_END    ? g->nkernels
                  : c->last[i] > n->kernel ? c->last[i]
                                           : n->kernel;
    bufs[nb++] = (Buf){i, n->offset, n->offset + size, n->kernel, end};
  }
  bool ok = true;
  for (int x = 0; ok && x < nb; x++)
    for (int y = x + 1; ok && y < nb; y++) {
      const Buf *a = &bufs[x], *d = &bufs[y];
      if (a->lo >= d->hi || d->lo >= a->hi || a->start > d->end || d->start > a->end) continue;
      if (a->start > d->start) a = &bufs[y], d = &bufs[x];
      const Node *na = g->nodes[a->index], *nd = g->nodes[d->index];
      bool inplace = a->lo == d->lo && a->hi == d->hi && a->end == d->start &&
                     !c->last_inl[a->index] &&
                     kernel_is_elementwise(g, first[d->start], (int)d->start) &&
                     ir_type_numel(&na->type) == ir_type_numel(&nd->type);
      if (!inplace)
        ok = vfail(v,
                   "%s and %s: buffers [%lld, %lld) and [%lld, %lld) overlap while both live "
                   "(k%lld..k%lld and k%lld..k%lld)",
                   vname(na, a->index, b1, sizeof b1), vname(nd, d->index, b2, sizeof b2),
                   (long long)a->lo, (long long)a->hi, (long long)d->lo, (long long)d->hi,
                   (long long)a->start, (long long)a->end, (long long)d->start, (long long)d->end);
    }
  free(bufs);
  return ok;
}

static bool check_kernels(Verifier *v) {
  const Graph *g = v->g;
  if (g->annot == IR_ANNOT_NONE) return true;
  if (g->nkernels < 0 || g->arena_bytes < 0) return vfail(v, "graph: bad kernel count or arena");
  KernelCheck c;
  kc_init(v, &c);
  int *first = malloc((size_t)(g->nkernels + 1) * sizeof *first);
  if (!first) ir_fatal("verify: out of memory");
  bool ok = check_kernel_runs(v, &c);
  for (int i = 0; ok && i < g->nnodes; i++)
    if (g->nodes[i]->kernel >= 0 && (i == 0 || g->nodes[i - 1]->kernel != g->nodes[i]->kernel))
      first[g->nodes[i]->kernel] = i;
  for (int i = 0; ok && g->annot == IR_ANNOT_PLANNED && i < g->nnodes; i++) {
    ok = check_home(v, &c, i);
    if (ok && g->nodes[i]->offset == IR_BUF_UPDATE)
      ok = check_update_home(v, &c, i, first[g->nodes[i]->kernel]);
  }
  if (ok && g->annot == IR_ANNOT_PLANNED) ok = check_buffers(v, &c, first);
  free(first);
  kc_free(&c);
  return ok;
}

bool ir_verify(const Graph *g, char *msg, size_t len) {
  Verifier v = {.g = g, .msg = msg, .len = len};
  bool ok = check_ids(&v);
  for (int i = 0; ok && i < g->nnodes; i++) ok = check_node(&v, i);
  ok = ok && check_uses(&v) && check_outputs(&v) && check_grads_updates(&v) && check_names(&v) &&
       check_kernels(&v);
  if (ok && msg && len) msg[0] = '\0';
  free(v.index);
  free(v.count);
  return ok;
}
