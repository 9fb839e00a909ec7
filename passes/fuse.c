/* fuse.c - groups the nodes of a graph into kernels, the way TVM's FuseOps does.
 * Needs: a verified graph. Guarantees: every node but a named source is in exactly one kernel
 * (n->kernel, 0..nkernels-1) or inline (IR_KERNEL_INLINE: recomputed by every kernel that reads
 * it); each kernel is contiguous in g->nodes, the kernels in execution order, convex, with at most
 * one anchor and one entry subset; values are unchanged (only the order of g->nodes moves).
 *
 * Patterns, from the IR_F_* flags: elementwise (and broadcast; reshape too: it keeps the flat
 * order), injective (other data movement), reduction, anchor (matmul, conv, lstm and their
 * gradients, and the pooling gradients: max_pool2d_grad(%r, dy) * greater(%r, 0), the backward
 * relu mask, is one kernel writing the product, not the pooled gradient), opaque (no flag: the
 * embedding gradient). A reduction and an anchor both count as a kernel's anchor.
 *
 * Rules (docs/IR.md, "Kernels and buffers"):
 *   - a kernel is [prologue] anchor [epilogue], or an elementwise chain. A prologue is elementwise
 *     work over a reduction's input space; an anchor op's operands come from memory or from
 *     inline nodes (the GEMM packer or conv reads through them). An epilogue is elementwise work
 *     over the anchor's output space (a sum over the last axis with keepdim: over its input's
 *     space instead, the row's sum broadcast); it may also hold independent elementwise nodes of
 *     that space (greater(%fc2, 0) beside a matmul's gradient).
 *   - nodes of one kernel are needed by the same entry points (m_infer / m_grad / m_train_step):
 *     each entry runs its own subset of kernels, so outputs, the loss and gradients end kernels.
 *   - merging two groups must keep them convex: no path leaves the group and comes back,
 *     another group counting as one node (the kernels must keep an order).
 * Recompute policy: a value is computed once and stored unless recomputing it is no dearer than
 * the round trip through memory: consts and causal_mask, reshapes (the same bytes as their input:
 * readers read through them), injective ops (each output element reads
 * one input element, so a reader evaluating it by index reads no more than it would read from
 * the stored copy) and cheap elementwise ops left alone in a kernel whose arena inputs are no
 * larger than their result (relu of a stored value read by two matmuls), and costly activations
 * read only by matrix products whose input is stored anyway (fuse_mark_gemm_maps). Those are
 * inline.
 * Then the target (PassCtx.target, the backend) says which launches it makes of each kernel:
 * fuse_split makes each launch a kernel, and an inline value computed by a launch of its own a
 * kernel of its own, so that the fused graph's kernels are what runs. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

typedef enum Pattern {
  PAT_SOURCE,
  PAT_ELEMWISE,
  PAT_INJECTIVE,
  PAT_REDUCTION,
  PAT_ANCHOR,
  PAT_OPAQUE
} Pattern;

/* Why an edge between two groups stays unfused (fuse_explain prints these). */
typedef enum Reason {
  R_OK,
  R_ENTRY,
  R_ROOT,
  R_OPAQUE,
  R_ANCHOR_OPERAND,
  R_LAYOUT,
  R_ANCHOR_LIMIT,
  R_REDUCTION,
  R_SPACE,
  R_CYCLE,
  R_INLINE,
  R_TARGET,
} Reason;

static const char *const reason_text[] = {
    [R_OK] = "fusable",
    [R_ENTRY] = "entry boundary: m_infer, m_grad and m_train_step need different subsets",
    [R_ROOT] = "materialized: an output, the loss or a gradient ends its entry's work",
    [R_OPAQUE] = "opaque op",
    [R_ANCHOR_OPERAND] = "anchor operand: read from memory (only inline prologues)",
    [R_LAYOUT] = "layout change: the user reads its input out of order",
    [R_ANCHOR_LIMIT] = "anchor limit: both kernels have an anchor",
    [R_REDUCTION] = "reduction boundary: iteration spaces before and after a reduction differ",
    [R_SPACE] = "iteration spaces differ (broadcast)",
    [R_CYCLE] = "would make the kernel non-convex (a path leaves it and comes back)",
    [R_INLINE] = "the user is inline: it is recomputed by each of its readers",
    [R_TARGET] = "backend: no single launch computes both",
};

enum { NEED_INFER = 1, NEED_GRAD = 2, NEED_TRAIN = 4 };
enum { SIDE_PRO, SIDE_ANCHOR, SIDE_OUT };

typedef struct Fuse {
  Graph *g;
  int nn;
  int *pos;         /* by id: position in g->nodes */
  unsigned *need;   /* by position: NEED_* of the entries that compute it */
  bool *root;       /* by position: an output, the loss, a gradient or an update value */
  bool *inl;        /* by position: inline */
  int *parent;      /* by position: union-find */
  int *next, *tail; /* member lists: next by position, tail by group root */
  int *side;        /* by position, valid for the members of a checked group */
  int *stamp, now;  /* traversal marks */
  int *stack, *tmp;
} Fuse;

static Pattern fuse_pattern(OpKind op) {
  unsigned f = ir_op_info(op)->flags;
  if (f & IR_F_SOURCE) return PAT_SOURCE;
  if (f & IR_F_ANCHOR) return PAT_ANCHOR;
  if (f & IR_F_REDUCTION) return PAT_REDUCTION;
  if ((f & IR_F_ELEMWISE) || op == OP_RESHAPE) return PAT_ELEMWISE;
  if (f & IR_F_INJECTIVE) return PAT_INJECTIVE;
  return PAT_OPAQUE;
}

static bool is_anchor_op(OpKind op) {
  Pattern p = fuse_pattern(op);
  return p == PAT_ANCHOR || p == PAT_REDUCTION;
}

/* Elementwise ops worth recomputing instead of storing. */
static bool is_cheap(OpKind op) {
  static const OpKind cheap[] = {OP_NEG, OP_RELU,    OP_ABS,     OP_ADD,     OP_SUB,   OP_MUL,
                                 OP_DIV, OP_MAXIMUM, OP_MINIMUM, OP_GREATER, OP_EQUAL, OP_RESHAPE};
  for (size_t i = 0; i < sizeof cheap / sizeof *cheap; i++)
    if (cheap[i] == op) return true;
  return false;
}

static void *fuse_alloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz);
  IR_ASSERT(p, "fuse: out of memory for %zu entries", n);
  return p;
}

static Node *node_at(const Fuse *F, int i) { return F->g->nodes[i]; }
static int posof(const Fuse *F, const Node *n) { return F->pos[n->id]; }
static int64_t numel(const Fuse *F, int i) { return ir_type_numel(&node_at(F, i)->type); }

static int find(Fuse *F, int i) {
  while (F->parent[i] != i) i = F->parent[i] = F->parent[F->parent[i]];
  return i;
}

/* A node that computes something in a kernel (not a named source, not inline). */
static bool in_kernel(const Fuse *F, int i) {
  return !ir_op_is_named_source(node_at(F, i)->op) && !F->inl[i];
}

/* ---- Setup: entries, roots, inline nodes -------------------------------- */

static void fuse_mark_need(Fuse *F) {
  const Graph *g = F->g;
  for (int k = 0; k < g->noutputs; k++) F->need[posof(F, g->outputs[k].node)] |= NEED_INFER;
  if (g->loss) F->need[posof(F, g->loss)] |= NEED_GRAD | NEED_TRAIN;
  for (int k = 0; k < g->ngrads; k++) F->need[posof(F, g->grads[k].grad)] |= NEED_GRAD | NEED_TRAIN;
  for (int k = 0; k < g->nupdates; k++) F->need[posof(F, g->updates[k].value)] |= NEED_TRAIN;
  for (int i = F->nn - 1; i >= 0; i--)
    for (int k = 0; k < node_at(F, i)->nin; k++)
      F->need[posof(F, node_at(F, i)->in[k])] |= F->need[i];
  for (int k = 0; k < g->noutputs; k++) F->root[posof(F, g->outputs[k].node)] = true;
  if (g->loss) F->root[posof(F, g->loss)] = true;
  for (int k = 0; k < g->ngrads; k++) F->root[posof(F, g->grads[k].grad)] = true;
  for (int k = 0; k < g->nupdates; k++) F->root[posof(F, g->updates[k].value)] = true;
}

/* Consts, causal_mask and injective ops are recomputed by their readers. */
static void fuse_mark_inline(Fuse *F) {
  for (int i = 0; i < F->nn; i++) {
    Pattern p = fuse_pattern(node_at(F, i)->op);
    bool named = ir_op_is_named_source(node_at(F, i)->op);
    /* A reshape is a view of its input's bytes: its readers read through it. */
    bool view = node_at(F, i)->op == OP_RESHAPE;
    F->inl[i] = !named && !F->root[i] && (p == PAT_SOURCE || p == PAT_INJECTIVE || view);
  }
}

/* Read only by f32 matrix products, directly or through inline reshapes and permutes. */
static bool gemm_reads_only(const Fuse *F, const Node *n, int depth) {
  if (depth > 8 || n->nusers == 0) return false;
  for (int u = 0; u < n->nusers; u++) {
    const Node *r = n->users[u];
    if (r->op == OP_MATMUL && r->type.dtype == DT_F32) continue;
    bool view = r->op == OP_RESHAPE || r->op == OP_PERMUTE;
    if (!view || !F->inl[posof(F, r)] || !gemm_reads_only(F, r, depth + 1)) return false;
  }
  return true;
}

/* A costly unary activation read only by matrix products whose input stays stored anyway (for
 * its gradient: gelu(u) beside gelu_grad(u)) is inline too: the GEMMs apply it while packing
 * that operand, so it takes no buffer (the transformer's MLP activations, 2 MB a block at the
 * peak of the train step), for one more evaluation per element in the backward's product. */
static void fuse_mark_gemm_maps(Fuse *F) {
  for (int i = 0; i < F->nn; i++) {
    const Node *n = node_at(F, i);
    bool act = n->op == OP_GELU || n->op == OP_SILU || n->op == OP_TANH || n->op == OP_SIGMOID;
    if (!act || F->inl[i] || F->root[i] || n->type.dtype != DT_F32 || n->in[0]->nusers < 2)
      continue;
    if (gemm_reads_only(F, n, 0)) F->inl[i] = true;
  }
}

/* ---- Groups ------------------------------------------------------------- */

/* The members of the groups of a and b (b may equal a) into F->tmp; returns the count. */
static int gather(Fuse *F, int ra, int rb) {
  int n = 0;
  for (int m = ra; m >= 0; m = F->next[m]) F->tmp[n++] = m;
  if (rb != ra)
    for (int m = rb; m >= 0; m = F->next[m]) F->tmp[n++] = m;
  return n;
}

/* Group roots are the first member of their list: the lists start at the root. */
static void unite(Fuse *F, int ra, int rb) {
  if (ra == rb) return;
  if (rb < ra) {
    int t = ra;
    ra = rb;
    rb = t;
  }
  F->next[F->tail[ra]] = rb;
  F->tail[ra] = F->tail[rb];
  F->parent[rb] = ra;
}

/* Marks the members 0..n-1 of F->tmp with a fresh stamp; returns it. */
static int mark_members(Fuse *F, int n) {
  int s = ++F->now;
  for (int k = 0; k < n; k++) F->stamp[F->tmp[k]] = s;
  return s;
}

/* Sides of the members in F->tmp[0..n): the anchor's in-group ancestors are its prologue, the
 * rest its epilogue. Returns the anchor's position, -1 if none, -2 if more than one. */
static int assign_sides(Fuse *F, int n) {
  int anchor = -1;
  for (int k = 0; k < n; k++) {
    F->side[F->tmp[k]] = SIDE_OUT;
    if (is_anchor_op(node_at(F, F->tmp[k])->op)) anchor = anchor == -1 ? F->tmp[k] : -2;
  }
  if (anchor < 0) return anchor;
  int s = mark_members(F, n), top = 0;
  F->side[anchor] = SIDE_ANCHOR;
  F->stack[top++] = anchor;
  while (top > 0) {
    const Node *v = node_at(F, F->stack[--top]);
    for (int k = 0; k < v->nin; k++) {
      int q = posof(F, v->in[k]);
      if (F->stamp[q] != s || F->side[q] != SIDE_OUT) continue;
      F->side[q] = SIDE_PRO;
      F->stack[top++] = q;
    }
  }
  return anchor;
}

/* The largest input of a reduction: the space its prologue runs over. */
static int64_t in_space(const Fuse *F, int anchor) {
  const Node *a = node_at(F, anchor);
  int64_t s = 0;
  for (int k = 0; k < a->nin; k++) {
    int64_t e = ir_type_numel(&a->in[k]->type);
    if (e > s) s = e;
  }
  return s;
}

/* Every member of F->tmp[0..n) runs in its side's iteration space. */
static Reason check_spaces(Fuse *F, int n, int anchor) {
  if (anchor < 0) {
    for (int k = 1; k < n; k++)
      if (numel(F, F->tmp[k]) != numel(F, F->tmp[0])) return R_SPACE;
    return R_OK;
  }
  Pattern ap = fuse_pattern(node_at(F, anchor)->op);
  int64_t out = numel(F, anchor), pro = ap == PAT_REDUCTION ? in_space(F, anchor) : -1;
  /* A row sum's epilogue may instead run over its input's rows, reading the row's sum as a
   * broadcast (softmax's and log_softmax's gradients: one kernel for the sum and after). */
  bool row = ap == PAT_REDUCTION && ir_is_row_sum(node_at(F, anchor));
  int at_out = 0, at_in = 0; /* epilogue members in the output's and in the input's space */
  for (int k = 0; k < n; k++) {
    int m = F->tmp[k];
    if (F->side[m] == SIDE_PRO && ap == PAT_ANCHOR) return R_ANCHOR_OPERAND;
    if (F->side[m] == SIDE_PRO && numel(F, m) != pro) return R_REDUCTION;
    if (F->side[m] != SIDE_OUT) continue;
    if (numel(F, m) == out)
      at_out++;
    else if (row && numel(F, m) == pro)
      at_in++;
    else
      return ap == PAT_REDUCTION ? R_REDUCTION : R_SPACE;
  }
  return at_out && at_in ? R_REDUCTION : R_OK;
}

/* No path leaves the members of F->tmp[0..n) and comes back, counting each other group as one
 * node (it runs as one kernel: anything reading one of its members waits for all of it, so two
 * groups each reading the other would deadlock the kernel order even when no node-level path
 * joins them). Walks forward from the members; reaching a member of another group reaches the
 * whole group. A group whose first member (its root) comes after the last member cannot lead
 * back. */
static bool convex(Fuse *F, int n) {
  int in = mark_members(F, n), hi = 0, top = 0;
  for (int k = 0; k < n; k++) hi = F->tmp[k] > hi ? F->tmp[k] : hi;
  int out = ++F->now;
  for (int k = 0; k < n; k++) F->stack[top++] = F->tmp[k];
  while (top > 0) {
    const Node *v = node_at(F, F->stack[--top]);
    for (int u = 0; u < v->nusers; u++) {
      int q = posof(F, v->users[u]), rq = in_kernel(F, q) ? find(F, q) : q;
      if (rq > hi || F->stamp[q] == in || F->stamp[q] == out) continue;
      for (int m = rq; m >= 0; m = F->next[m]) /* its whole group (a node alone: itself) */
        if (F->stamp[m] != out) F->stamp[m] = out, F->stack[top++] = m;
    }
  }
  for (int k = 0; k < n; k++) {
    const Node *v = node_at(F, F->tmp[k]);
    for (int j = 0; j < v->nin; j++)
      if (F->stamp[posof(F, v->in[j])] == out) return false;
  }
  return true;
}

/* Whether the groups of producer p and user n can become one kernel, and if not, why. */
static Reason fuse_check(Fuse *F, int p, int n) {
  int ra = find(F, p), rb = find(F, n);
  if (ra == rb) return R_OK;
  if (F->need[p] != F->need[n]) return F->root[p] ? R_ROOT : R_ENTRY;
  Pattern pp = fuse_pattern(node_at(F, p)->op), pn = fuse_pattern(node_at(F, n)->op);
  if (pp == PAT_OPAQUE || pn == PAT_OPAQUE) return R_OPAQUE;
  if (pn == PAT_ANCHOR) return R_ANCHOR_OPERAND;
  if (pn == PAT_INJECTIVE) return R_LAYOUT;
  int cnt = gather(F, ra, rb);
  int anchor = assign_sides(F, cnt);
  if (anchor == -2) return R_ANCHOR_LIMIT;
  Reason r = check_spaces(F, cnt, anchor);
  if (r != R_OK) return r;
  /* p on a reduction's prologue and n beside it: n would need p outside the reduction's loop. */
  if (anchor >= 0 && F->side[p] == SIDE_PRO && F->side[n] == SIDE_OUT) return R_REDUCTION;
  return convex(F, cnt) ? R_OK : R_CYCLE;
}

/* One sweep over every edge between kernel nodes; returns the number of merges. */
static int fuse_sweep(Fuse *F) {
  int merged = 0;
  for (int i = 0; i < F->nn; i++) {
    if (!in_kernel(F, i)) continue;
    const Node *n = node_at(F, i);
    /* Inputs in anchored groups first: an epilogue attaches to its matmul before its other
     * operands pull it elsewhere. */
    for (int pass = 0; pass < 2; pass++)
      for (int k = 0; k < n->nin; k++) {
        int p = posof(F, n->in[k]);
        if (!in_kernel(F, p)) continue;
        int cnt = gather(F, find(F, p), find(F, p));
        bool anchored = assign_sides(F, cnt) != -1;
        if (anchored != (pass == 0)) continue;
        if (find(F, p) != find(F, i) && fuse_check(F, p, i) == R_OK) {
          unite(F, find(F, p), find(F, i));
          merged++;
        }
      }
  }
  return merged;
}

/* A cheap elementwise node left alone in its kernel, no smaller than its arena inputs, is
 * recomputed by its readers instead of stored. */
static void fuse_inline_singletons(Fuse *F) {
  for (int i = 0; i < F->nn; i++) {
    const Node *n = node_at(F, i);
    if (!in_kernel(F, i) || F->root[i] || !is_cheap(n->op)) continue;
    if (F->next[i] >= 0 || find(F, i) != i) continue;
    int64_t in_bytes = 0, own = numel(F, i) * (int64_t)ir_dtype_size(n->type.dtype);
    for (int k = 0; k < n->nin; k++) {
      int q = posof(F, n->in[k]);
      if (in_kernel(F, q))
        in_bytes += ir_type_numel(&n->in[k]->type) * (int64_t)ir_dtype_size(n->in[k]->type.dtype);
    }
    if (in_bytes <= own) F->inl[i] = true;
  }
}

/* ---- Order -------------------------------------------------------------- */

/* Emits the inline nodes v reads that are not out yet, inputs first (an explicit stack). */
static void emit_inline(Fuse *F, int v, Node **order, int *no, bool *done) {
  int top = 0;
  F->stack[top++] = v;
  while (top > 0) {
    int i = F->stack[top - 1];
    const Node *n = node_at(F, i);
    bool ready = true;
    for (int k = 0; k < n->nin; k++) {
      int q = posof(F, n->in[k]);
      if (F->inl[q] && !done[q]) {
        F->stack[top++] = q;
        ready = false;
        break;
      }
    }
    if (!ready) continue;
    top--;
    if (!done[i] && F->inl[i]) {
      done[i] = true;
      order[(*no)++] = node_at(F, i);
    }
  }
}

/* The kernels a group waits for: those of its members' inputs, through inline nodes. */
static void group_deps(Fuse *F, int r, int *indeg, int **users, int *nusers, int *capusers) {
  int s = ++F->now, top = 0;
  for (int m = r; m >= 0; m = F->next[m]) F->stamp[m] = s;
  for (int m = r; m >= 0; m = F->next[m]) F->stack[top++] = m;
  while (top > 0) {
    const Node *v = node_at(F, F->stack[--top]);
    for (int k = 0; k < v->nin; k++) {
      int q = posof(F, v->in[k]);
      if (F->stamp[q] == s) continue;
      F->stamp[q] = s;
      if (F->inl[q]) {
        F->stack[top++] = q;
      } else if (in_kernel(F, q)) {
        int rq = find(F, q);
        if (F->stamp[rq] == s && rq != q) continue;
        F->stamp[rq] = s;
        indeg[r]++;
        if (nusers[rq] == capusers[rq]) {
          capusers[rq] = capusers[rq] ? 2 * capusers[rq] : 4;
          users[rq] = realloc(users[rq], (size_t)capusers[rq] * sizeof **users);
          IR_ASSERT(users[rq], "fuse: out of memory");
        }
        users[rq][nusers[rq]++] = r;
      }
    }
  }
}

static int cmp_int(const void *a, const void *b) {
  return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* Kernels in a topological order (earliest first member first); nodes reordered so each kernel
 * is contiguous; n->kernel set. */
static void fuse_order(Fuse *F) {
  int nn = F->nn, nk = 0, no = 0;
  int *indeg = fuse_alloc((size_t)nn, sizeof *indeg),
      *nusers = fuse_alloc((size_t)nn, sizeof *nusers);
  int *capusers = fuse_alloc((size_t)nn, sizeof *capusers),
      *ready = fuse_alloc((size_t)nn, sizeof *ready);
  int **users = fuse_alloc((size_t)nn, sizeof *users);
  bool *done = fuse_alloc((size_t)nn, sizeof *done);
  Node **order = fuse_alloc((size_t)nn, sizeof *order);
  for (int i = 0; i < nn; i++)
    if (in_kernel(F, i) && find(F, i) == i) group_deps(F, i, indeg, users, nusers, capusers);
  int nready = 0;
  for (int i = 0; i < nn; i++)
    if (in_kernel(F, i) && find(F, i) == i && indeg[i] == 0) ready[nready++] = i;
  for (int i = 0; i < nn; i++)
    if (ir_op_is_named_source(node_at(F, i)->op)) order[no++] = node_at(F, i), done[i] = true;
  while (nready > 0) {
    int best = 0; /* the ready group whose first member comes first */
    for (int k = 1; k < nready; k++) best = ready[k] < ready[best] ? k : best;
    int r = ready[best];
    ready[best] = ready[--nready];
    for (int m = r; m >= 0; m = F->next[m]) {
      const Node *v = node_at(F, m);
      for (int k = 0; k < v->nin; k++)
        if (F->inl[posof(F, v->in[k])]) emit_inline(F, posof(F, v->in[k]), order, &no, done);
    }
    int cnt = gather(F, r, r); /* members in their (topological) order */
    qsort(F->tmp, (size_t)cnt, sizeof *F->tmp, cmp_int);
    for (int j = 0; j < cnt; j++) {
      node_at(F, F->tmp[j])->kernel = nk;
      order[no++] = node_at(F, F->tmp[j]), done[F->tmp[j]] = true;
    }
    nk++;
    for (int k = 0; k < nusers[r]; k++)
      if (--indeg[users[r][k]] == 0) ready[nready++] = users[r][k];
  }
  for (int i = 0; i < nn; i++) /* inline nodes no kernel reads */
    if (F->inl[i] && !done[i]) emit_inline(F, i, order, &no, done);
  IR_ASSERT(no == nn, "fuse: the kernel graph has a cycle (%d of %d nodes ordered)", no, nn);
  for (int i = 0; i < nn; i++) {
    Node *v = node_at(F, i);
    if (F->inl[i]) v->kernel = IR_KERNEL_INLINE;
    if (ir_op_is_named_source(v->op)) v->kernel = IR_KERNEL_NONE;
    v->offset = IR_BUF_NONE;
  }
  memcpy(F->g->nodes, order, (size_t)nn * sizeof *order);
  F->g->nkernels = nk;
  for (int i = 0; i < nn; i++) free(users[i]);
  free(users), free(indeg), free(nusers), free(capusers), free(ready), free(done), free(order);
}

/* ---- The backend's launches --------------------------------------------- */

/* One pass of the target's verdict over a fused graph: a kernel it runs as several launches
 * becomes one kernel per launch, an inline value it computes by a launch of its own a kernel of
 * its own (it sits before its first reader). Kernels stay contiguous and in execution order: a
 * kernel's launches run in the order of its nodes. Returns whether anything changed. */
static bool fuse_split(Graph *g, const FuseTarget *t) {
  int *launch = fuse_alloc((size_t)g->nnodes, sizeof *launch);
  IR_ASSERT(t->launches(g, launch), "fuse: out of memory asking %s for its launches", t->name);
  bool changed = false;
  int nk = 0, group = IR_KERNEL_NONE, at = -1; /* the old kernel and the launch of the last one */
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (n->kernel == IR_KERNEL_INLINE && launch[i] >= 0) {
      n->kernel = nk++;
      group = IR_KERNEL_NONE;
      changed = true;
      continue;
    }
    if (n->kernel < 0) continue;
    bool split = n->kernel == group && at >= 0 && launch[i] > at;
    if (n->kernel != group || split) nk++, at = -1;
    changed |= split;
    group = n->kernel;
    if (launch[i] >= 0) at = launch[i];
    n->kernel = nk - 1;
  }
  g->nkernels = nk;
  free(launch);
  return changed;
}

/* ---- The pass and the explanation --------------------------------------- */

static void fuse_init(Fuse *F, Graph *g) {
  memset(F, 0, sizeof *F);
  F->g = g;
  F->nn = g->nnodes;
  size_t nn = (size_t)g->nnodes;
  F->pos = fuse_alloc((size_t)g->next_id, sizeof *F->pos);
  F->need = fuse_alloc(nn, sizeof *F->need);
  F->root = fuse_alloc(nn, sizeof *F->root);
  F->inl = fuse_alloc(nn, sizeof *F->inl);
  F->parent = fuse_alloc(nn, sizeof *F->parent);
  F->next = fuse_alloc(nn, sizeof *F->next);
  F->tail = fuse_alloc(nn, sizeof *F->tail);
  F->side = fuse_alloc(nn, sizeof *F->side);
  F->stamp = fuse_alloc(nn, sizeof *F->stamp);
  F->stack = fuse_alloc(nn, sizeof *F->stack);
  F->tmp = fuse_alloc(nn, sizeof *F->tmp);
  for (int i = 0; i < g->nnodes; i++) {
    F->pos[g->nodes[i]->id] = i;
    F->parent[i] = F->tail[i] = i;
    F->next[i] = -1;
  }
  fuse_mark_need(F);
}

static void fuse_free(Fuse *F) {
  free(F->pos), free(F->need), free(F->root), free(F->inl), free(F->parent), free(F->next);
  free(F->tail), free(F->side), free(F->stamp), free(F->stack), free(F->tmp);
}

bool pass_fuse(Graph *g, PassCtx *cx) {
  Fuse F;
  fuse_init(&F, g);
  fuse_mark_inline(&F);
  fuse_mark_gemm_maps(&F);
  while (fuse_sweep(&F) > 0) {
  }
  fuse_inline_singletons(&F);
  fuse_order(&F);
  fuse_free(&F);
  g->annot = IR_ANNOT_FUSED;
  g->arena_bytes = 0;
  /* Each split can leave a new kernel whose inline inputs the backend computes by a launch of
   * their own (broadcast(div(a, b)): the div); a few rounds reach the fixed point. */
  for (int round = 0; cx->target && round < 8 && fuse_split(g, cx->target); round++) {
  }
  return true;
}

/* Rebuilds the groups of a fused graph from its annotations. */
static void fuse_from_annot(Fuse *F) {
  int *first = fuse_alloc((size_t)F->g->nkernels + 1, sizeof *first);
  for (int k = 0; k <= F->g->nkernels; k++) first[k] = -1;
  for (int i = 0; i < F->nn; i++) {
    int k = node_at(F, i)->kernel;
    F->inl[i] = k == IR_KERNEL_INLINE;
    if (k < 0 || k >= F->g->nkernels) continue;
    if (first[k] < 0)
      first[k] = i;
    else
      unite(F, find(F, first[k]), i);
  }
  free(first);
}

static void explain_ref(FILE *f, const char **names, int i) {
  if (names[i])
    fprintf(f, "%%%s", names[i]);
  else
    fprintf(f, "%%%d", i);
}

static void explain_where(FILE *f, const Node *n) {
  if (n->kernel >= 0)
    fprintf(f, "k%d", n->kernel);
  else
    fprintf(f, "inline");
}

void fuse_explain(FILE *f, const Graph *g, const FuseTarget *t) {
  if (g->annot == IR_ANNOT_NONE) {
    fprintf(f, "# not fused\n");
    return;
  }
  Fuse F;
  fuse_init(&F, (Graph *)g);
  fuse_from_annot(&F);
  const char **names = ir_print_names(g);
  int nedges = 0;
  fprintf(f, "# unfused edges of %s: %d kernels\n", g->name ? g->name : "_", g->nkernels);
  for (int i = 0; i < F.nn; i++) {
    const Node *n = node_at(&F, i);
    if (n->kernel == IR_KERNEL_NONE) continue;
    for (int k = 0; k < n->nin; k++) {
      int p = posof(&F, n->in[k]);
      if (!in_kernel(&F, p) || n->in[k]->kernel == n->kernel) continue;
      Reason r = F.inl[i] ? R_INLINE : fuse_check(&F, p, i);
      if (r == R_OK) r = R_TARGET; /* fusable by the rules: the backend split them (fuse_split) */
      fprintf(f, "  ");
      explain_ref(f, names, p);
      fprintf(f, " (%s, ", ir_op_name(n->in[k]->op));
      explain_where(f, n->in[k]);
      fprintf(f, ") -> ");
      explain_ref(f, names, i);
      fprintf(f, " (%s, ", ir_op_name(n->op));
      explain_where(f, n);
      char why[256] = "";
      if (r == R_TARGET && t && t->why) t->why(n->in[k], n, why, sizeof why);
      fprintf(f, "): %s\n", why[0] ? why : reason_text[r]);
      nedges++;
    }
  }
  fprintf(f, "# %d unfused edges\n", nedges);
  free(names);
  fuse_free(&F);
}
