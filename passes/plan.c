/* plan.c - orders the kernels of a fused graph and places every stored value in one arena.
 * Needs: a fused graph (passes/fuse). Guarantees: kernels renumbered in the order chosen and
 * contiguous in g->nodes; every value read outside its kernel, and every output, loss, gradient
 * and update value, has a home (n->offset): an arena offset (64-aligned), its param's gradient
 * block (IR_BUF_GRAD) or, in place, its update target (IR_BUF_UPDATE); two arena buffers live at
 * once never overlap, except an elementwise kernel writing over its dead input of the same size.
 *
 * Live ranges are over the whole train step: a buffer lives from the kernel that writes it to the
 * last kernel that reads it (through inline nodes too); the loss, gradients and update values
 * live to the end (outputs do not: m_infer writes them to the caller's memory).
 * Inputs, params, gradients and optimizer state live in the instance, outside the arena. A plan
 * for the train step holds for m_infer and m_grad too: they run a subset of the same kernels in
 * the same order, so no two buffers they use are live at once unless they are in the full step.
 *
 * Orders tried: the fused order and a memory-aware list schedule (among ready kernels, the one
 * freeing the most bytes net). Placements tried: greedy by size, by lifetime, by size x lifetime
 * and in order of birth, each best-fit and first-fit, with and without in-place reuse, each
 * order then improved by local search (one buffer moved earlier, up to PLAN_IMPROVE_MAX
 * buffers); up to PLAN_EXACT_MAX buffers are solved exactly by branch and bound. The smallest
 * arena wins. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

#define PLAN_EXACT_MAX    12
#define PLAN_EXACT_BUDGET 2000000 /* search nodes before branch and bound gives up */
#define PLAN_IMPROVE_MAX  24      /* slots up to which a heuristic's order is improved locally */

typedef struct Slot {
  int64_t size, start, end; /* bytes (aligned); first and last step, inclusive */
  int64_t offset;
} Slot;

typedef struct Plan {
  Graph *g;
  int nn, nk;
  int *pos;       /* by id: position in g->nodes */
  int **kmembers; /* by kernel: positions of its nodes */
  int *nkmembers;
  int **reads; /* by kernel: positions of the stored values and named sources it reads */
  int *nreads;
  bool **via_inline; /* by kernel, parallel to reads: read through an inline node */
  int *order;        /* step -> kernel */
  int *step;         /* kernel -> step */
  int64_t *home;     /* by position: IR_BUF_* or >= 0: the slot index */
  int *slot_of;      /* by position: the slot of an arena value, -1 */
  Slot *slots;
  int nslots;
} Plan;

static void *plan_alloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz);
  IR_ASSERT(p, "plan: out of memory for %zu entries", n);
  return p;
}

static Node *node_at(const Plan *P, int i) { return P->g->nodes[i]; }
static int posof(const Plan *P, const Node *n) { return P->pos[n->id]; }

static int64_t align_up(int64_t v) { return (v + IR_BUF_ALIGN - 1) / IR_BUF_ALIGN * IR_BUF_ALIGN; }

static int64_t value_bytes(const Node *n) {
  return ir_type_numel(&n->type) * (int64_t)ir_dtype_size(n->type.dtype);
}

static bool is_stored_kind(const Node *n) { return n->kernel >= 0; }

/* An elementwise kernel: every node keeps the flat index (elementwise, broadcast, reshape). */
static bool kernel_elementwise(const Plan *P, int k) {
  for (int j = 0; j < P->nkmembers[k]; j++) {
    OpKind op = node_at(P, P->kmembers[k][j])->op;
    if (!(ir_op_info(op)->flags & IR_F_ELEMWISE) && op != OP_RESHAPE) return false;
  }
  return true;
}

/* ---- Reads: what each kernel takes from memory --------------------------- */

static void add_read(Plan *P, int k, int q, bool inl, int *cap) {
  for (int j = 0; j < P->nreads[k]; j++)
    if (P->reads[k][j] == q) {
      P->via_inline[k][j] |= inl;
      return;
    }
  if (P->nreads[k] == *cap) {
    *cap = *cap ? 2 * *cap : 8;
    P->reads[k] = realloc(P->reads[k], (size_t)*cap * sizeof **P->reads);
    P->via_inline[k] = realloc(P->via_inline[k], (size_t)*cap * sizeof **P->via_inline);
    IR_ASSERT(P->reads[k] && P->via_inline[k], "plan: out of memory");
  }
  P->reads[k][P->nreads[k]] = q;
  P->via_inline[k][P->nreads[k]++] = inl;
}

/* The values kernel k reads from other kernels and the named sources, following inline nodes. */
static void plan_reads(Plan *P, int k, int *stack, int *seen, int stamp) {
  int cap = 0, top = 0;
  for (int j = 0; j < P->nkmembers[k]; j++) {
    const Node *n = node_at(P, P->kmembers[k][j]);
    for (int i = 0; i < n->nin; i++) {
      const Node *v = n->in[i];
      if (v->kernel == IR_KERNEL_INLINE) {
        if (seen[posof(P, v)] != stamp) seen[posof(P, v)] = stamp, stack[top++] = posof(P, v);
      } else if (v->kernel != k) {
        add_read(P, k, posof(P, v), false, &cap);
      }
    }
  }
  while (top > 0) {
    const Node *n = node_at(P, stack[--top]);
    for (int i = 0; i < n->nin; i++) {
      const Node *v = n->in[i];
      int q = posof(P, v);
      if (v->kernel == IR_KERNEL_INLINE) {
        if (seen[q] != stamp) seen[q] = stamp, stack[top++] = q;
      } else {
        add_read(P, k, q, true, &cap);
      }
    }
  }
}

static void plan_init(Plan *P, Graph *g) {
  memset(P, 0, sizeof *P);
  P->g = g;
  P->nn = g->nnodes;
  P->nk = g->nkernels;
  size_t nn = (size_t)P->nn, nk = (size_t)P->nk;
  P->pos = plan_alloc((size_t)g->next_id, sizeof *P->pos);
  for (int i = 0; i < P->nn; i++) P->pos[g->nodes[i]->id] = i;
  P->kmembers = plan_alloc(nk, sizeof *P->kmembers);
  P->nkmembers = plan_alloc(nk, sizeof *P->nkmembers);
  for (int i = 0; i < P->nn; i++)
    if (g->nodes[i]->kernel >= 0) P->nkmembers[g->nodes[i]->kernel]++;
  for (int k = 0; k < P->nk; k++) {
    P->kmembers[k] = plan_alloc((size_t)P->nkmembers[k], sizeof **P->kmembers);
    P->nkmembers[k] = 0;
  }
  for (int i = 0; i < P->nn; i++) {
    int k = g->nodes[i]->kernel;
    if (k >= 0) P->kmembers[k][P->nkmembers[k]++] = i;
  }
  P->reads = plan_alloc(nk, sizeof *P->reads);
  P->nreads = plan_alloc(nk, sizeof *P->nreads);
  P->via_inline = plan_alloc(nk, sizeof *P->via_inline);
  int *stack = plan_alloc(nn, sizeof *stack), *seen = plan_alloc(nn, sizeof *seen);
  for (int k = 0; k < P->nk; k++) plan_reads(P, k, stack, seen, k + 1);
  free(stack);
  free(seen);
  P->order = plan_alloc(nk, sizeof *P->order);
  P->step = plan_alloc(nk, sizeof *P->step);
  for (int k = 0; k < P->nk; k++) P->order[k] = P->step[k] = k;
  P->home = plan_alloc(nn, sizeof *P->home);
  P->slot_of = plan_alloc(nn, sizeof *P->slot_of);
  P->slots = plan_alloc(nn, sizeof *P->slots);
}

static void plan_free(Plan *P) {
  for (int k = 0; k < P->nk; k++) free(P->kmembers[k]), free(P->reads[k]), free(P->via_inline[k]);
  free(P->kmembers), free(P->nkmembers), free(P->reads), free(P->nreads), free(P->via_inline);
  free(P->pos), free(P->order), free(P->step), free(P->home), free(P->slot_of), free(P->slots);
}

/* ---- Homes and live ranges ---------------------------------------------- */

static bool is_grad_value(const Graph *g, const Node *n) {
  for (int k = 0; k < g->ngrads; k++)
    if (g->grads[k].grad == n) return true;
  return false;
}

static bool is_root(const Graph *g, const Node *n) {
  for (int k = 0; k < g->noutputs; k++)
    if (g->outputs[k].node == n) return true;
  return n == g->loss || is_grad_value(g, n);
}

/* The loss, gradients and update values live to the end of the step: the entry points copy or
 * apply them after the last kernel. Outputs need not: m_infer has its kernels write them to the
 * caller's memory, and the other entry points do not return them. */
static bool lives_to_end(const Graph *g, const Node *n) {
  for (int k = 0; k < g->nupdates; k++)
    if (g->updates[k].value == n) return true;
  return n == g->loss || is_grad_value(g, n);
}

/* Update value v may be written straight into its target t: no kernel after v's reads t, and
 * v's kernel is elementwise and reads t only directly, element i before writing element i. */
static bool update_in_place(const Plan *P, const Node *v, const Node *t) {
  if (!is_stored_kind(v) || is_root(P->g, v) || !ir_type_eq(&v->type, &t->type)) return false;
  int kv = v->kernel, tp = posof(P, t);
  if (!kernel_elementwise(P, kv) || ir_type_numel(&v->type) != ir_type_numel(&t->type))
    return false;
  for (int k = 0; k < P->nk; k++)
    for (int j = 0; j < P->nreads[k]; j++) {
      if (P->reads[k][j] != tp) continue;
      if (P->step[k] > P->step[kv] || (k == kv && P->via_inline[k][j])) return false;
    }
  return true;
}

/* Sets every stored value's home under the current order; makes the arena buffers' slots. */
static void plan_homes(Plan *P) {
  const Graph *g = P->g;
  P->nslots = 0;
  for (int i = 0; i < P->nn; i++) P->home[i] = IR_BUF_NONE, P->slot_of[i] = -1;
  for (int k = 0; k < P->nk; k++)
    for (int j = 0; j < P->nreads[k]; j++) {
      int q = P->reads[k][j];
      if (is_stored_kind(node_at(P, q))) P->home[q] = 0; /* stored; decided below */
    }
  for (int i = 0; i < P->nn; i++)
    if (is_stored_kind(node_at(P, i)) && is_root(g, node_at(P, i))) P->home[i] = 0;
  for (int u = 0; u < g->nupdates; u++) {
    const Node *v = g->updates[u].value;
    if (is_stored_kind(v)) P->home[posof(P, v)] = 0;
  }
  for (int u = 0; u < g->nupdates; u++) {
    const Node *v = g->updates[u].value;
    if (is_stored_kind(v) && update_in_place(P, v, g->updates[u].target))
      P->home[posof(P, v)] = IR_BUF_UPDATE;
  }
  for (int i = 0; i < P->nn; i++) {
    const Node *n = node_at(P, i);
    if (P->home[i] == 0 && is_grad_value(g, n)) P->home[i] = IR_BUF_GRAD;
    if (P->home[i] != 0) continue;
    Slot *s = &P->slots[P->nslots];
    s->size = align_up(value_bytes(n));
    s->start = s->end = P->step[n->kernel];
    if (lives_to_end(g, n)) s->end = P->nk; /* the step after the last kernel */
    P->slot_of[i] = P->nslots++;
  }
  for (int k = 0; k < P->nk; k++)
    for (int j = 0; j < P->nreads[k]; j++) {
      int s = P->slot_of[P->reads[k][j]];
      if (s >= 0 && P->slots[s].end < P->step[k]) P->slots[s].end = P->step[k];
    }
}

/* In place: an elementwise kernel writes value b over a that it alone (and last) reads directly,
 * of the same size. b's slot merges into a's. Returns the slot count after merging into map. */
static int plan_inplace(const Plan *P, int *map, Slot *out) {
  int n = 0;
  bool *taken = plan_alloc((size_t)P->nslots, sizeof *taken);
  for (int s = 0; s < P->nslots; s++) map[s] = -1;
  for (int st = 0; st < P->nk; st++) {
    int k = P->order[st];
    bool ew = kernel_elementwise(P, k);
    for (int j = 0; j < P->nkmembers[k]; j++) {
      int b = P->kmembers[k][j], sb = P->slot_of[b];
      if (sb < 0) continue;
      int into = -1;
      for (int r = 0; ew && into < 0 && r < P->nreads[k]; r++) {
        int a = P->reads[k][r], sa = P->slot_of[a];
        if (sa < 0 || taken[sa] || P->via_inline[k][r] || P->slots[sa].end != st) continue;
        if (P->slots[sa].size != P->slots[sb].size) continue;
        if (ir_type_numel(&node_at(P, a)->type) != ir_type_numel(&node_at(P, b)->type)) continue;
        if (ir_dtype_size(node_at(P, a)->type.dtype) != ir_dtype_size(node_at(P, b)->type.dtype))
          continue;
        into = sa;
      }
      if (into >= 0) {
        taken[into] = true;
        map[sb] = map[into];
        if (out[map[sb]].end < P->slots[sb].end) out[map[sb]].end = P->slots[sb].end;
      } else {
        map[sb] = n;
        out[n++] = P->slots[sb];
      }
    }
  }
  free(taken);
  return n;
}

/* ---- Placement ---------------------------------------------------------- */

static bool overlap_time(const Slot *a, const Slot *b) {
  return a->start <= b->end && b->start <= a->end;
}

typedef struct Range {
  int64_t lo, hi;
} Range;

static int cmp_range(const void *a, const void *b) {
  const Range *x = a, *y = b;
  return (x->lo > y->lo) - (x->lo < y->lo);
}

/* Places slot s among the placed slots: the lowest gap that fits (first fit) or the smallest
 * (best fit), else above them all. */
static int64_t place_one(Slot *sl, const int *placed, int np, int s, bool best, Range *tmp) {
  int nr = 0;
  for (int j = 0; j < np; j++)
    if (overlap_time(&sl[placed[j]], &sl[s]))
      tmp[nr++] = (Range){sl[placed[j]].offset, sl[placed[j]].offset + sl[placed[j]].size};
  qsort(tmp, (size_t)nr, sizeof *tmp, cmp_range);
  int64_t at = 0, pick = -1, pick_gap = 0;
  for (int j = 0; j < nr; j++) {
    int64_t gap = tmp[j].lo - at;
    if (gap >= sl[s].size && (pick < 0 || (best && gap < pick_gap))) {
      pick = at, pick_gap = gap;
      if (!best) break;
    }
    if (tmp[j].hi > at) at = tmp[j].hi;
  }
  return pick >= 0 ? pick : at;
}

typedef enum Order { BY_SIZE, BY_LIFETIME, BY_AREA, BY_BIRTH, NORDERS } Order;

static int64_t sort_key(const Slot *s, Order o) {
  int64_t life = s->end - s->start + 1;
  switch (o) {
  case BY_SIZE:
    return s->size;
  case BY_LIFETIME:
    return life;
  case BY_AREA:
    return s->size * life;
  case BY_BIRTH:
    return -s->start;
  case NORDERS:
    break;
  }
  return 0;
}

/* Slot x goes before slot y: larger key, then larger, then born earlier, then first made. */
static bool slot_before(const Slot *sl, Order o, int x, int y) {
  int64_t kx = sort_key(&sl[x], o), ky = sort_key(&sl[y], o);
  if (kx != ky) return kx > ky;
  if (sl[x].size != sl[y].size) return sl[x].size > sl[y].size;
  if (sl[x].start != sl[y].start) return sl[x].start < sl[y].start;
  return x < y;
}

/* idx[0..n) sorted by slot_before (a merge sort: qsort has no context argument). */
static void sort_slots(const Slot *sl, Order o, int *idx, int n, int *tmp) {
  if (n < 2) return;
  int h = n / 2;
  sort_slots(sl, o, idx, h, tmp);
  sort_slots(sl, o, idx + h, n - h, tmp);
  int a = 0, b = h, k = 0;
  while (a < h || b < n)
    tmp[k++] = b >= n || (a < h && !slot_before(sl, o, idx[b], idx[a])) ? idx[a++] : idx[b++];
  memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

/* Places every slot in the given order; returns the arena's size. */
static int64_t place_all(Slot *sl, int n, const int *idx, bool best) {
  int *placed = plan_alloc((size_t)n, sizeof *placed);
  Range *tmp = plan_alloc((size_t)n, sizeof *tmp);
  int64_t top = 0;
  for (int j = 0; j < n; j++) {
    sl[idx[j]].offset = place_one(sl, placed, j, idx[j], best, tmp);
    placed[j] = idx[j];
    if (sl[idx[j]].offset + sl[idx[j]].size > top) top = sl[idx[j]].offset + sl[idx[j]].size;
  }
  free(placed);
  free(tmp);
  return top;
}

/* Local search from a placement order (idx, giving arena *top): moving one slot to an earlier
 * place in the order, kept when the arena shrinks, until no move helps (a few passes; small
 * plans only: each try places all n). idx, *top and the offsets in sl end as the best order's. */
static void improve_order(Slot *sl, int n, int *idx, bool best, int64_t *top, int64_t bound) {
  if (n > PLAN_IMPROVE_MAX || n < 3) return;
  int *try_idx = plan_alloc((size_t)n, sizeof *try_idx);
  int64_t arena = *top;
  for (int pass = 0; pass < 4 && arena > bound; pass++) {
    bool moved = false;
    for (int j = 1; j < n && arena > bound; j++)
      for (int i = 0; i < j && arena > bound; i++) {
        memcpy(try_idx, idx, (size_t)i * sizeof *idx);
        try_idx[i] = idx[j];
        memcpy(try_idx + i + 1, idx + i, (size_t)(j - i) * sizeof *idx);
        memcpy(try_idx + j + 1, idx + j + 1, (size_t)(n - j - 1) * sizeof *idx);
        int64_t tried = place_all(sl, n, try_idx, best);
        if (tried < arena) {
          arena = tried;
          memcpy(idx, try_idx, (size_t)n * sizeof *idx);
          moved = true;
        }
      }
    if (!moved) break;
  }
  place_all(sl, n, idx, best); /* the offsets of the order kept */
  free(try_idx);
  *top = arena;
}

/* The most bytes live at one step. */
static int64_t lower_bound(const Slot *sl, int n, int64_t nsteps, int64_t *peak_step) {
  int64_t *live = plan_alloc((size_t)nsteps + 2, sizeof *live), best = 0;
  for (int j = 0; j < n; j++) {
    live[sl[j].start] += sl[j].size;
    live[sl[j].end + 1] -= sl[j].size;
  }
  int64_t run = 0;
  *peak_step = 0;
  for (int64_t t = 0; t <= nsteps; t++) {
    run += live[t];
    if (run > best) best = run, *peak_step = t;
  }
  free(live);
  return best;
}

/* Branch and bound over placement orders, each slot at its lowest fitting offset: some order
 * gives an optimal placement (order an optimal one by offset; lowest-fit never places a slot
 * higher). */
typedef struct Exact {
  Slot *sl;
  int n;
  int64_t best, bound;
  int64_t *best_off;
  long budget;
  int *placed;
  bool *used;
  Range *tmp;
} Exact;

static void exact_dfs(Exact *E, int depth, int64_t top) {
  if (top >= E->best || E->budget <= 0 || E->best == E->bound) return;
  if (depth == E->n) {
    E->best = top;
    for (int j = 0; j < E->n; j++) E->best_off[j] = E->sl[j].offset;
    return;
  }
  for (int s = 0; s < E->n; s++) {
    if (E->used[s]) continue;
    E->budget--;
    int64_t off = place_one(E->sl, E->placed, depth, s, false, E->tmp);
    E->sl[s].offset = off;
    E->used[s] = true;
    E->placed[depth] = s;
    exact_dfs(E, depth + 1, off + E->sl[s].size > top ? off + E->sl[s].size : top);
    E->used[s] = false;
  }
}

/* Places sl below upper if the search finds such a placement in budget (then *arena is its
 * size); else leaves sl as it was. */
static bool place_exact(Slot *sl, int n, int64_t *arena, int64_t upper, int64_t bound) {
  Exact E = {sl,
             n,
             upper,
             bound,
             plan_alloc((size_t)n, sizeof(int64_t)),
             PLAN_EXACT_BUDGET,
             plan_alloc((size_t)n, sizeof(int)),
             plan_alloc((size_t)n, sizeof(bool)),
             plan_alloc((size_t)n, sizeof(Range))};
  int64_t *keep = plan_alloc((size_t)n, sizeof *keep);
  for (int j = 0; j < n; j++) keep[j] = sl[j].offset;
  exact_dfs(&E, 0, 0);
  bool better = E.best < upper;
  for (int j = 0; j < n; j++) sl[j].offset = better ? E.best_off[j] : keep[j];
  if (better) *arena = E.best;
  free(E.best_off), free(E.placed), free(E.used), free(E.tmp), free(keep);
  return better;
}

/* The best placement of the current order's slots: fills P->slots' offsets (through the
 * in-place map when that wins) and returns the arena size. */
typedef struct Best {
  int64_t arena;
  bool inplace;
  int *map; /* slot -> placed slot */
  Slot *sl; /* placed slots */
  int n;
} Best;

static void plan_place(const Plan *P, Best *b) {
  int *tmp = plan_alloc((size_t)P->nslots, sizeof *tmp);
  int *map = plan_alloc((size_t)P->nslots, sizeof *map),
      *idx = plan_alloc((size_t)P->nslots, sizeof *idx);
  Slot *sl = plan_alloc((size_t)P->nslots, sizeof *sl);
  b->arena = -1;
  for (int inplace = 0; inplace < 2; inplace++) {
    int n = P->nslots;
    if (inplace) {
      n = plan_inplace(P, map, sl);
    } else {
      for (int s = 0; s < n; s++) map[s] = s, sl[s] = P->slots[s];
    }
    int64_t pk, bound = lower_bound(sl, n, P->nk, &pk), variant_best = -1;
    for (int o = 0; o < NORDERS; o++)
      for (int best = 1; best >= 0; best--) {
        for (int j = 0; j < n; j++) idx[j] = j;
        sort_slots(sl, (Order)o, idx, n, tmp);
        int64_t arena = place_all(sl, n, idx, best);
        improve_order(sl, n, idx, best, &arena, bound);
        /* After the last heuristic, search for better than the variant's best so far. */
        bool last = o == NORDERS - 1 && best == 0;
        int64_t upper = variant_best >= 0 && variant_best < arena ? variant_best : arena;
        if (last && n <= PLAN_EXACT_MAX && upper > bound) place_exact(sl, n, &arena, upper, bound);
        if (variant_best < 0 || arena < variant_best) variant_best = arena;
        if (b->arena < 0 || arena < b->arena) {
          free(b->map), free(b->sl);
          b->arena = arena, b->inplace = inplace, b->n = n;
          b->map = plan_alloc((size_t)P->nslots, sizeof *b->map);
          b->sl = plan_alloc((size_t)n, sizeof *b->sl);
          memcpy(b->map, map, (size_t)P->nslots * sizeof *map);
          memcpy(b->sl, sl, (size_t)n * sizeof *sl);
        }
      }
  }
  free(map), free(idx), free(sl), free(tmp);
}

/* ---- Kernel order ------------------------------------------------------- */

/* deps: by kernel, the kernels producing what it reads. */
static int kernel_of_read(const Plan *P, int q) { return node_at(P, q)->kernel; }

/* Among ready kernels, the one that frees the most arena bytes net of what it writes (under
 * the homes of the fused order); ties to the earlier kernel. */
static void order_memory_aware(Plan *P, int *order) {
  int nk = P->nk;
  int *indeg = plan_alloc((size_t)nk, sizeof *indeg),
      *left = plan_alloc((size_t)P->nn, sizeof *left);
  bool *done = plan_alloc((size_t)nk, sizeof *done);
  for (int k = 0; k < nk; k++)
    for (int j = 0; j < P->nreads[k]; j++) {
      int q = P->reads[k][j];
      if (kernel_of_read(P, q) >= 0) indeg[k]++, left[q]++;
    }
  for (int st = 0; st < nk; st++) {
    int pick = -1;
    int64_t pick_gain = 0;
    for (int k = 0; k < nk; k++) {
      if (done[k] || indeg[k] > 0) continue;
      int64_t gain = 0;
      for (int j = 0; j < P->nkmembers[k]; j++) {
        int s = P->slot_of[P->kmembers[k][j]];
        if (s >= 0) gain -= P->slots[s].size;
      }
      for (int j = 0; j < P->nreads[k]; j++) {
        int s = P->slot_of[P->reads[k][j]];
        if (s >= 0 && left[P->reads[k][j]] == 1 && P->slots[s].end < nk) gain += P->slots[s].size;
      }
      if (pick < 0 || gain > pick_gain) pick = k, pick_gain = gain;
    }
    IR_ASSERT(pick >= 0, "plan: the kernels of '%s' have a cycle", P->g->name);
    done[pick] = true;
    order[st] = pick;
    for (int j = 0; j < P->nreads[pick]; j++) left[P->reads[pick][j]]--;
    for (int k = 0; k < nk; k++)
      for (int j = 0; j < P->nreads[k] && !done[k]; j++)
        if (kernel_of_read(P, P->reads[k][j]) == pick) indeg[k]--;
  }
  free(indeg), free(left), free(done);
}

static void set_order(Plan *P, const int *order) {
  for (int st = 0; st < P->nk; st++) P->order[st] = order[st], P->step[order[st]] = st;
}

/* ---- Applying the plan -------------------------------------------------- */

/* Inline nodes v reads, inputs first, then v (an explicit stack). */
static void emit_inline(const Plan *P, int v, Node **out, int *no, bool *done, int *stack) {
  int top = 0;
  stack[top++] = v;
  while (top > 0) {
    int i = stack[top - 1];
    const Node *n = node_at(P, i);
    bool ready = true;
    for (int k = 0; k < n->nin && ready; k++) {
      int q = posof(P, n->in[k]);
      if (n->in[k]->kernel == IR_KERNEL_INLINE && !done[q]) stack[top++] = q, ready = false;
    }
    if (!ready) continue;
    top--;
    if (!done[i]) done[i] = true, out[(*no)++] = node_at(P, i);
  }
}

static void plan_apply(Plan *P, const Best *b) {
  Graph *g = P->g;
  int nn = P->nn, no = 0;
  Node **out = plan_alloc((size_t)nn, sizeof *out);
  bool *done = plan_alloc((size_t)nn, sizeof *done);
  int *stack = plan_alloc((size_t)nn, sizeof *stack);
  for (int i = 0; i < nn; i++) {
    Node *n = node_at(P, i);
    n->offset = P->home[i] < 0 ? P->home[i] : b->sl[b->map[P->slot_of[i]]].offset;
    if (ir_op_is_named_source(n->op)) out[no++] = n, done[i] = true;
  }
  for (int st = 0; st < P->nk; st++) {
    int k = P->order[st];
    for (int j = 0; j < P->nkmembers[k]; j++) {
      const Node *n = node_at(P, P->kmembers[k][j]);
      for (int i = 0; i < n->nin; i++)
        if (n->in[i]->kernel == IR_KERNEL_INLINE)
          emit_inline(P, posof(P, n->in[i]), out, &no, done, stack);
    }
    for (int j = 0; j < P->nkmembers[k]; j++) {
      out[no++] = node_at(P, P->kmembers[k][j]);
      done[P->kmembers[k][j]] = true;
    }
  }
  for (int i = 0; i < nn; i++)
    if (!done[i]) emit_inline(P, i, out, &no, done, stack);
  IR_ASSERT(no == nn, "plan: %d of %d nodes ordered", no, nn);
  for (int i = 0; i < nn; i++)
    if (out[i]->kernel >= 0) out[i]->kernel = P->step[out[i]->kernel];
  memcpy(g->nodes, out, (size_t)nn * sizeof *out);
  g->arena_bytes = b->arena;
  g->annot = IR_ANNOT_PLANNED;
  free(out), free(done), free(stack);
}

bool pass_plan(Graph *g, PassCtx *cx) {
  if (g->annot == IR_ANNOT_NONE) pass_fuse(g, cx);
  Plan P;
  plan_init(&P, g);
  int *orders[2] = {plan_alloc((size_t)P.nk, sizeof(int)), plan_alloc((size_t)P.nk, sizeof(int))};
  for (int k = 0; k < P.nk; k++) orders[0][k] = k;
  plan_homes(&P);
  order_memory_aware(&P, orders[1]);
  Best best = {0}, cand = {0};
  int pick = 0;
  for (int o = 0; o < 2; o++) {
    set_order(&P, orders[o]);
    plan_homes(&P);
    cand = (Best){0};
    plan_place(&P, &cand);
    if (o == 0 || cand.arena < best.arena) {
      free(best.map), free(best.sl);
      best = cand, pick = o;
    } else {
      free(cand.map), free(cand.sl);
    }
  }
  set_order(&P, orders[pick]);
  plan_homes(&P);
  plan_apply(&P, &best);
  free(best.map), free(best.sl), free(orders[0]), free(orders[1]);
  plan_free(&P);
  return true;
}

/* ---- The report --------------------------------------------------------- */

/* Live ranges of the arena buffers of a planned graph, recomputed from its annotations. */
static int stats_slots(const Graph *g, Plan *P, int **node_of) {
  plan_init(P, (Graph *)g);
  *node_of = plan_alloc((size_t)P->nn, sizeof **node_of);
  P->nslots = 0;
  for (int i = 0; i < P->nn; i++) {
    const Node *n = node_at(P, i);
    P->slot_of[i] = -1;
    if (n->kernel < 0 || n->offset < 0) continue;
    Slot *s = &P->slots[P->nslots];
    s->size = align_up(value_bytes(n));
    s->start = s->end = n->kernel;
    s->offset = n->offset;
    if (lives_to_end(g, n)) s->end = P->nk;
    (*node_of)[P->nslots] = i;
    P->slot_of[i] = P->nslots++;
  }
  for (int k = 0; k < P->nk; k++)
    for (int j = 0; j < P->nreads[k]; j++) {
      int s = P->slot_of[P->reads[k][j]];
      if (s >= 0 && P->slots[s].end < k) P->slots[s].end = k;
    }
  return P->nslots;
}

void plan_stats(const Graph *g, PlanStats *st) {
  memset(st, 0, sizeof *st);
  if (g->annot != IR_ANNOT_PLANNED) return;
  Plan P;
  int *node_of;
  int n = stats_slots(g, &P, &node_of);
  /* Slots sharing an offset in place count once where they meet: the bound is over the memory
   * actually occupied, merged slots as one. */
  Slot *m = plan_alloc((size_t)n, sizeof *m);
  int nm = 0;
  for (int j = 0; j < n; j++) {
    st->sum_bytes += P.slots[j].size;
    int into = -1;
    for (int k = 0; k < nm && into < 0; k++)
      if (m[k].offset == P.slots[j].offset && m[k].size == P.slots[j].size &&
          (m[k].end == P.slots[j].start || P.slots[j].end == m[k].start))
        into = k;
    if (into < 0) {
      m[nm++] = P.slots[j];
    } else {
      if (P.slots[j].start < m[into].start) m[into].start = P.slots[j].start;
      if (P.slots[j].end > m[into].end) m[into].end = P.slots[j].end;
    }
  }
  int64_t peak;
  st->lower_bound = lower_bound(m, nm, P.nk, &peak);
  st->peak_kernel = (int)peak;
  st->nkernels = g->nkernels;
  st->nbuffers = n;
  st->arena_bytes = g->arena_bytes;
  st->efficiency = g->arena_bytes ? (double)st->lower_bound / (double)g->arena_bytes : 1.0;
  for (int i = 0; i < P.nn; i++) {
    const Node *v = node_at(&P, i);
    if (v->offset == IR_BUF_GRAD) st->grad_bytes += value_bytes(v);
    if (v->offset == IR_BUF_UPDATE) st->update_bytes += value_bytes(v);
  }
  free(m), free(node_of);
  plan_free(&P);
}

void plan_report(FILE *f, const Graph *g) {
  PlanStats st;
  if (g->annot != IR_ANNOT_PLANNED) return;
  plan_stats(g, &st);
  fprintf(f, "# plan of %s: %d kernels, %d arena buffers\n", g->name ? g->name : "_", st.nkernels,
          st.nbuffers);
  fprintf(f, "#   arena        %12lld bytes\n", (long long)st.arena_bytes);
  fprintf(f, "#   sum          %12lld bytes (every buffer its own)\n", (long long)st.sum_bytes);
  fprintf(f, "#   lower bound  %12lld bytes (most live at once, at k%d)\n",
          (long long)st.lower_bound, st.peak_kernel);
  fprintf(f, "#   efficiency   %12.4f (lower bound / arena)\n", st.efficiency);
  fprintf(f, "#   outside      %12lld bytes of gradients, %lld of updates in place\n",
          (long long)st.grad_bytes, (long long)st.update_bytes);
  Plan P;
  int *node_of;
  int n = stats_slots(g, &P, &node_of);
  const char **names = ir_print_names(g);
  fprintf(f, "#   live at the peak:\n");
  for (int j = 0; j < n; j++) {
    const Slot *s = &P.slots[j];
    if (s->start > st.peak_kernel || s->end < st.peak_kernel) continue;
    int i = node_of[j];
    char ty[IR_TYPE_STR_MAX];
    char end[24];
    if (s->end == P.nk)
      snprintf(end, sizeof end, "end");
    else
      snprintf(end, sizeof end, "k%lld", (long long)s->end);
    fprintf(f, "#     @%-10lld +%-10lld k%lld..%-6s ", (long long)s->offset, (long long)s->size,
            (long long)s->start, end);
    if (names[i])
      fprintf(f, "%%%s", names[i]);
    else
      fprintf(f, "%%%d", i);
    fprintf(f, " : %s\n", ir_type_str(&node_at(&P, i)->type, ty, sizeof ty));
  }
  free(names), free(node_of);
  plan_free(&P);
}
