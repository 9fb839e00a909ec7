/* llvm_layout.c - the program the backend lowers: kernels, the instance layout, what each entry
 * point runs. */
#include <stdlib.h>
#include <string.h>

#include "llvm_gemm.h"

#define LAYOUT_ALIGN 64

static uint64_t align_up(uint64_t v) {
  return (v + LAYOUT_ALIGN - 1) / LAYOUT_ALIGN * LAYOUT_ALIGN;
}

static uint64_t value_bytes(const Node *n) {
  return (uint64_t)ir_type_numel(&n->type) * ir_dtype_size(n->type.dtype);
}

/* lstm and lstm_grad keep packed weights and a tape (llvm_lower_lstm.c). */
int64_t llvm_scratch_bytes(const Graph *g, const Node *n) {
  if (n->op != OP_LSTM && n->op != OP_LSTM_GRAD) return 0;
  return llvm_lstm_scratch_bytes(n, llvm_lstm_pair(g, n) != NULL);
}

/* ---- Kernels ------------------------------------------------------------ */

/* The name of launch k: kiln_k<N>_<what>. */
static void launch_name(Kernel *k, const char *what) {
  snprintf(k->name, sizeof k->name, "kiln_k%d_%s", k->index, what);
}

static bool program_kernels(Program *p) {
  const Graph *g = p->g;
  p->kernels = calloc((size_t)g->nnodes + 1, sizeof *p->kernels);
  if (!p->kernels) return false;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (ir_op_is_named_source(n->op)) continue;
    Kernel *k = &p->kernels[p->nkernels];
    k->index = p->nkernels++;
    k->nodes = &g->nodes[i];
    k->nnodes = 1;
    k->out = n;
    k->args = n->in;
    k->nargs = n->nin;
    k->group = k->nodes;
    k->ngroup = 1;
    k->scratch_bytes = llvm_scratch_bytes(g, n);
    launch_name(k, ir_op_name(n->op));
  }
  return true;
}

static bool program_sources(Program *p) {
  const Graph *g = p->g;
  size_t cap = (size_t)g->nnodes + 1;
  p->inputs = calloc(cap, sizeof *p->inputs);
  p->params = calloc(cap, sizeof *p->params);
  p->states = calloc(cap, sizeof *p->states);
  if (!p->inputs || !p->params || !p->states) return false;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (n->op == OP_INPUT) p->inputs[p->ninputs++] = n;
    if (n->op == OP_PARAM) p->params[p->nparams++] = n;
    if (n->op == OP_STATE) p->states[p->nstates++] = n;
  }
  return true;
}

/* ---- Layout ------------------------------------------------------------- */

/* The part both layouts share: the offset tables, then params, their
 * gradients and optimizer state from offset 0; the arena starts after them.
 * False when out of memory. */
static bool layout_instance(Program *p) {
  const Graph *g = p->g;
  Layout *l = &p->layout;
  size_t ids = (size_t)g->next_id + 1;
  l->offset = malloc(ids * sizeof *l->offset);
  l->grad_offset = malloc(ids * sizeof *l->grad_offset);
  l->snap_offset = malloc(((size_t)g->nupdates + 1) * sizeof *l->snap_offset);
  if (!l->offset || !l->grad_offset || !l->snap_offset) return false;
  for (size_t i = 0; i < ids; i++) l->offset[i] = l->grad_offset[i] = -1;
  uint64_t at = 0;
  for (int i = 0; i < p->nparams; i++, at = align_up(at))
    l->offset[p->params[i]->id] = (int64_t)at, at += value_bytes(p->params[i]);
  for (int i = 0; p->has_train && i < p->nparams; i++, at = align_up(at))
    l->grad_offset[p->params[i]->id] = (int64_t)at, at += value_bytes(p->params[i]);
  for (int i = 0; i < p->nstates; i++, at = align_up(at))
    l->offset[p->states[i]->id] = (int64_t)at, at += value_bytes(p->states[i]);
  l->arena_offset = at;
  return true;
}

static bool program_layout(Program *p) {
  const Graph *g = p->g;
  Layout *l = &p->layout;
  if (!layout_instance(p)) return false;
  uint64_t at = l->arena_offset;
  for (int i = 0; i < p->nkernels; i++, at = align_up(at))
    l->offset[p->kernels[i].out->id] = (int64_t)at, at += value_bytes(p->kernels[i].out);
  /* An lstm_grad shares its lstm's scratch (the tape). */
  for (int i = 0; i < p->nkernels; i++, at = align_up(at)) {
    Kernel *k = &p->kernels[i];
    const Node *pair = k->out->op == OP_LSTM_GRAD ? llvm_lstm_pair(g, k->out) : NULL;
    if (pair) {
      for (int j = 0; j < i; j++)
        if (p->kernels[j].out == pair) k->scratch_offset = p->kernels[j].scratch_offset;
    } else {
      k->scratch_offset = (int64_t)at, at += (uint64_t)k->scratch_bytes;
    }
  }
  /* An update whose value is itself a source (another target, perhaps) reads
   * it from a copy taken before the first write. */
  for (int k = 0; k < g->nupdates; k++, at = align_up(at)) {
    const Node *v = g->updates[k].value;
    l->snap_offset[k] = ir_op_is_named_source(v->op) ? (int64_t)at : -1;
    if (l->snap_offset[k] >= 0) at += value_bytes(v);
  }
  l->arena_bytes = at - l->arena_offset;
  l->mem_bytes = at ? at : LAYOUT_ALIGN;
  return true;
}

/* ---- Planned programs ---------------------------------------------------
 * Kernel k of the plan (the run of nodes with kernel == k) becomes:
 *   - one fused launch when every node is an elementwise op lower_fused
 *     evaluates in registers over one element count: a single loop computing
 *     the chain per element, inline elementwise nodes included, storing only
 *     the nodes with a home;
 *   - otherwise one launch per node, in order (the fallback: values without a
 *     home go to kernel scratch instead of registers).
 * Inline nodes that cannot be evaluated in the loop (injective ops,
 * causal_mask, any inline input of a fallback launch) are materialized into
 * kernel scratch by a launch of their own just before their reader (but an
 * lstm reads an inline embedding x, and lstm_grad an inline pad of dy along
 * time, through them: plan_lstm_args). Scratch lies after the arena; every
 * group reuses it from its start. */

static void *own(Program *p, size_t bytes) {
  if (p->nowned == p->capowned) {
    int cap = p->capowned ? 2 * p->capowned : 64;
    void **o = realloc(p->owned, (size_t)cap * sizeof *o);
    if (!o) return NULL;
    p->owned = o, p->capowned = cap;
  }
  void *m = calloc(1, bytes ? bytes : 1);
  if (m) p->owned[p->nowned++] = m;
  return m;
}

static Kernel *new_launch(Program *p) {
  if (p->nkernels == p->capkernels) {
    int cap = p->capkernels ? 2 * p->capkernels : 64;
    Kernel *k = realloc(p->kernels, (size_t)cap * sizeof *k);
    if (!k) return NULL;
    p->kernels = k, p->capkernels = cap;
  }
  Kernel *k = &p->kernels[p->nkernels];
  memset(k, 0, sizeof *k);
  k->index = p->nkernels++;
  return k;
}

typedef struct Plan {
  Program *p;
  Node **group;
  int ngroup, gi;
  int64_t *tmp; /* by node id: its place in mem in this group (kernel scratch, or the
                   home of the reshape it is computed into); -1 */
  int *touched; /* ids with tmp set */
  int ntouched;
  int64_t sat;   /* the group's scratch in use */
  bool *inseg;   /* by node id: in the segment being fused */
  int64_t base;  /* scratch base in mem */
  int64_t *tape; /* by node id: an lstm/lstm_grad pair's shared scratch in mem; -1 */
} Plan;

/* Has a place in mem (or caller memory) outside kernel scratch. */
static bool resident(const Plan *pl, const Node *n) {
  return ir_op_is_named_source(n->op) || pl->p->layout.offset[n->id] >= 0;
}

static int64_t tmp_of(Plan *pl, const Node *n, int64_t bytes) {
  if (pl->tmp[n->id] < 0) {
    pl->tmp[n->id] = pl->base + pl->sat;
    pl->touched[pl->ntouched++] = n->id;
    pl->sat = (int64_t)align_up((uint64_t)(pl->sat + bytes));
  }
  return pl->tmp[n->id];
}

static bool launch_common(Plan *pl, Kernel *k, const char *what) {
  k->group = pl->group;
  k->ngroup = pl->ngroup;
  launch_name(k, what);
  return true;
}

static bool plan_single(Plan *pl, Node *n);

/* An inline value some launch reads from memory: computed into scratch first. */
static bool plan_materialize(Plan *pl, Node *n) {
  if (pl->tmp[n->id] >= 0) return true;
  return plan_single(pl, n);
}

/* A contiguous inline view (reshape, slice) read at its source's place. */
static bool in_place_view(const Plan *pl, const Node *a, View *v) {
  return a->kernel == IR_KERNEL_INLINE && pl->tmp[a->id] < 0 && llvm_view_of(a, v) &&
         v->nmaps == 0 && llvm_view_contiguous(v);
}

/* Before a launch reads a: computes it into scratch unless it has a place
 * (a home, a constant of the module) or is a contiguous view of a value
 * that has one. */
static bool plan_read(Plan *pl, Node *a) {
  View v;
  if (a->kernel != IR_KERNEL_INLINE || llvm_const_global(a)) return true;
  if (in_place_view(pl, a, &v)) return plan_read(pl, (Node *)v.src);
  return plan_materialize(pl, a);
}

static int64_t place_of(const Plan *pl, const Node *a) {
  return resident(pl, a) || llvm_const_global(a) ? -1 : pl->tmp[a->id];
}

/* k->at[i] for the value the launch reads as args[i] (after plan_read). */
static bool place_read(Plan *pl, Kernel *k, int i) {
  const Node *a = k->args[i];
  View v;
  if (!in_place_view(pl, a, &v)) {
    k->at[i] = place_of(pl, a);
    return true;
  }
  if (!k->via) {
    k->via = own(pl->p, (size_t)k->nargs * sizeof *k->via);
    k->shift = own(pl->p, (size_t)k->nargs * sizeof *k->shift);
    if (!k->via || !k->shift) return false;
  }
  k->via[i] = (Node *)v.src;
  k->shift[i] = v.offset * (int64_t)ir_dtype_size(a->type.dtype);
  k->at[i] = place_of(pl, v.src);
  return true;
}

/* A GEMM matmul reads an inline view of an operand (permutes, reshapes,
 * slices: the backward pass's A^T B and A B^T, attention's heads) in place,
 * through the view's strides, instead of a copy in scratch. */
static bool plan_views(Plan *pl, Node *n, Node ***args, Node ***view) {
  *args = n->in;
  *view = NULL;
  if (n->op != OP_MATMUL || !llvm_matmul_gemm(n)) return true;
  for (int i = 0; i < n->nin; i++) {
    Node *a = n->in[i];
    View v;
    if (!llvm_view_node(a) || !llvm_view_of(a, &v) || !llvm_matmul_view_ok(n, i)) continue;
    if (!*view) {
      *view = own(pl->p, (size_t)n->nin * sizeof **view);
      Node **copy = own(pl->p, (size_t)n->nin * sizeof *copy);
      if (!*view || !copy) return false;
      memcpy(copy, n->in, (size_t)n->nin * sizeof *copy);
      *args = copy;
    }
    (*view)[i] = a;
    (*args)[i] = (Node *)v.src;
  }
  return true;
}

/* An lstm or lstm_grad whose x is an inline f32 embedding: it reads x's rows from the table. */
static bool lstm_embed_x(const Plan *pl, const Node *n) {
  if (n->op != OP_LSTM && n->op != OP_LSTM_GRAD) return false;
  const Node *x = n->in[0];
  return x->op == OP_EMBEDDING && x->kernel == IR_KERNEL_INLINE && pl->tmp[x->id] < 0 &&
         x->type.dtype == DT_F32 && x->in[1]->type.dtype == DT_F32 && !llvm_const_global(x);
}

/* An lstm_grad whose dy is an inline pad along the time axis only: it reads dy's rows from the
 * pad's source, zero outside it. */
static bool lstm_pad_dy(const Plan *pl, const Node *n) {
  if (n->op != OP_LSTM_GRAD) return false;
  const Node *d = n->in[5];
  if (d->op != OP_PAD || d->kernel != IR_KERNEL_INLINE || pl->tmp[d->id] >= 0 ||
      d->type.dtype != n->type.dtype || d->type.rank != 3 || d->in[0]->type.dims[1] < 1 ||
      llvm_const_global(d))
    return false;
  const AttrVal *b = ir_attr_c(d, "before"), *a = ir_attr_c(d, "after");
  return b->i[0] == 0 && a->i[0] == 0 && b->i[2] == 0 && a->i[2] == 0;
}

/* The values an lstm or lstm_grad reads instead of an inline embedding x (its ids in x's
 * place, the table after the operands) or an inline pad dy (its source in dy's place), so
 * neither is materialized (Kernel.x_embed, dy_pad). */
static bool plan_lstm_args(Plan *pl, Node *n, Node ***args, int *nargs, bool *x_embed,
                           bool *dy_pad) {
  *x_embed = lstm_embed_x(pl, n);
  *dy_pad = lstm_pad_dy(pl, n);
  *nargs = n->nin + *x_embed;
  if (!*x_embed && !*dy_pad) return true;
  Node **a = own(pl->p, (size_t)*nargs * sizeof *a);
  if (!a) return false;
  memcpy(a, n->in, (size_t)n->nin * sizeof *a);
  if (*x_embed) a[0] = n->in[0]->in[0], a[n->nin] = n->in[0]->in[1];
  if (*dy_pad) a[5] = n->in[5]->in[0];
  *args = a;
  return true;
}

/* One node by its own lowering; inputs from their homes or scratch. */
static bool plan_single(Plan *pl, Node *n) {
  Program *p = pl->p;
  Node **args, **view;
  int nargs;
  bool x_embed, dy_pad;
  if (!plan_views(pl, n, &args, &view) || !plan_lstm_args(pl, n, &args, &nargs, &x_embed, &dy_pad))
    return false;
  for (int i = 0; i < nargs; i++)
    if (!plan_read(pl, args[i])) return false;
  int64_t *at = own(p, ((size_t)nargs + 1) * sizeof *at);
  if (!at) return false;
  at[nargs] = resident(pl, n) ? -1 : tmp_of(pl, n, (int64_t)value_bytes(n));
  Kernel *k = new_launch(p);
  if (!k) return false;
  k->nodes = own(p, sizeof *k->nodes);
  if (!k->nodes) return false;
  k->nodes[0] = n;
  k->nnodes = 1;
  k->out = n;
  k->args = args;
  k->view = view;
  k->nargs = nargs;
  k->at = at;
  k->x_embed = x_embed;
  k->dy_pad = dy_pad;
  for (int i = 0; i < nargs; i++)
    if (!place_read(pl, k, i)) return false;
  k->writes_update = n->offset == IR_BUF_UPDATE;
  k->scratch_bytes = llvm_scratch_bytes(p->g, n);
  if (pl->tape[n->id] >= 0) {
    k->scratch_offset = pl->tape[n->id];
  } else if (k->scratch_bytes) {
    k->scratch_offset = pl->base + pl->sat;
    pl->sat = (int64_t)align_up((uint64_t)(pl->sat + k->scratch_bytes));
  }
  launch_common(pl, k, ir_op_name(n->op));
  return true;
}

static bool fusable_value(const Node *n) {
  return llvm_fusable_op(n->op) && n->type.dtype != DT_I32 &&
         (n->op != OP_RESHAPE || n->in[0]->type.dtype == n->type.dtype);
}

/* An inline node a fused loop evaluates by index (llvm_lower_fused.c): elementwise ops,
 * embeddings (a row of the table per id) and data movement (permute, slice, broadcast, pad:
 * each element reads one element of its input), as the fuse pass's recompute policy assumes. */
static bool loop_value(const Node *n) {
  if (n->kernel != IR_KERNEL_INLINE) return false;
  if (n->op == OP_EMBEDDING) return n->type.dtype == n->in[1]->type.dtype;
  if (llvm_fused_gather(n)) return n->type.dtype != DT_I32 && !llvm_const_global(n);
  return fusable_value(n);
}

/* The values a fused loop reads from memory, found from n down (mark: seen ids). */
static bool fused_reads(Plan *pl, Node *n, bool *seen, Node **reads, int *nreads) {
  if (seen[n->id]) return true;
  seen[n->id] = true;
  View v; /* a contiguous view is read at its source's place rather than evaluated */
  bool loop = pl->inseg[n->id] || (loop_value(n) && !in_place_view(pl, n, &v));
  if (!loop) {
    if (!plan_read(pl, n)) return false;
    reads[(*nreads)++] = n;
    return true;
  }
  for (int i = 0; i < n->nin; i++)
    if (!fused_reads(pl, n->in[i], seen, reads, nreads)) return false;
  return true;
}

/* Read after the segment: by a later node of the group, or an inline node a
 * later launch evaluates (the next groups read only values with a home). */
static bool read_later(const Plan *pl, const Node *n) {
  for (int u = 0; u < n->nusers; u++) {
    const Node *r = n->users[u];
    if (!pl->inseg[r->id] && (r->kernel == pl->gi || r->kernel == IR_KERNEL_INLINE)) return true;
  }
  return false;
}

static bool chain_reads(Plan *pl, const Node *anchor, const Node *x, Node *n, bool *seen,
                        Node **reads, int *nreads);

/* What a fused launch reads from memory and which of its nodes it stores
 * (those with a home, and those a later launch reads: given scratch), with
 * seg (and the anchor, when there is one) marked as the launch's own. */
typedef struct Scan {
  bool *seen;
  Node **reads, **outs;
  int nreads, nouts;
  bool anchor_store; /* the anchor's value is needed after the launch */
} Scan;

/* With anchor: an epilogue of it, or with pro its prologue (the chain computing its input). */
static bool scan_launch(Plan *pl, Node *anchor, bool pro, Node **seg, int nseg, Scan *sc) {
  size_t ids = (size_t)pl->p->g->next_id + 1;
  memset(sc, 0, sizeof *sc);
  sc->seen = calloc(ids, sizeof *sc->seen);
  sc->reads = calloc(ids, sizeof *sc->reads);
  sc->outs = calloc((size_t)nseg + 1, sizeof *sc->outs);
  bool ok = sc->seen && sc->reads && sc->outs;
  for (int i = 0; i < nseg; i++) pl->inseg[seg[i]->id] = true;
  if (anchor && ok) pl->inseg[anchor->id] = sc->seen[anchor->id] = true;
  for (int i = 0; ok && i < nseg; i++) {
    Node *n = seg[i];
    ok = !anchor ? fused_reads(pl, n, sc->seen, sc->reads, &sc->nreads)
         : pro   ? chain_reads(pl, NULL, anchor->in[0], n, sc->seen, sc->reads, &sc->nreads)
                 : chain_reads(pl, anchor, NULL, n, sc->seen, sc->reads, &sc->nreads);
    if (resident(pl, n)) {
      sc->outs[sc->nouts++] = n;
    } else if (read_later(pl, n)) {
      tmp_of(pl, n, (int64_t)value_bytes(n));
      sc->outs[sc->nouts++] = n;
    }
  }
  if (anchor) sc->anchor_store = resident(pl, anchor) || read_later(pl, anchor);
  for (int i = 0; i < nseg; i++) pl->inseg[seg[i]->id] = false;
  if (anchor) pl->inseg[anchor->id] = false;
  return ok;
}

static void scan_free(Scan *sc) {
  free(sc->seen);
  free(sc->reads);
  free(sc->outs);
}

/* Segment seg[0..nseg) of the group: one loop. */
static bool plan_fused(Plan *pl, Node **seg, int nseg) {
  Program *p = pl->p;
  Scan sc;
  bool ok = scan_launch(pl, NULL, false, seg, nseg, &sc);
  Node **reads = sc.reads, **outs = sc.outs;
  int nreads = sc.nreads, nouts = sc.nouts;
  Kernel *k = ok && nouts > 0 ? new_launch(p) : NULL;
  if (k) {
    k->fused = true;
    k->nodes = own(p, (size_t)nseg * sizeof *k->nodes);
    k->args = own(p, ((size_t)nreads + (size_t)nouts) * sizeof *k->args);
    ok = k->nodes && k->args;
    if (ok) {
      memcpy(k->nodes, seg, (size_t)nseg * sizeof *k->nodes);
      k->nnodes = nseg;
      memcpy(k->args, reads, (size_t)nreads * sizeof *k->args);
      for (int i = 1; i < nouts; i++) k->args[nreads + i - 1] = outs[i];
      k->nreads = nreads;
      k->nargs = nreads + nouts - 1;
      k->out = outs[0];
      k->at = own(p, ((size_t)k->nargs + 1) * sizeof *k->at);
      ok = k->at != NULL;
      for (int i = 0; ok && i < nreads; i++) ok = place_read(pl, k, i);
      for (int i = 1; ok && i < nouts; i++) k->at[nreads + i - 1] = place_of(pl, outs[i]);
      if (ok) k->at[k->nargs] = place_of(pl, outs[0]);
      for (int i = 0; i < nouts; i++) k->writes_update |= outs[i]->offset == IR_BUF_UPDATE;
      char what[64];
      snprintf(what, sizeof what, "fused%d_%s", nseg, ir_op_name(seg[nseg - 1]->op));
      launch_common(pl, k, what);
    }
  } else if (ok && nouts > 0) {
    ok = false; /* out of memory; no outputs: only gradients no entry point computes */
  }
  scan_free(&sc);
  return ok;
}

/* The values a chain reads from memory, from n down: nodes of the segment and the loop nodes
 * of an epilogue of anchor (inline elementwise nodes of its dims), or of a prologue computing x
 * (anchor NULL; inline elementwise nodes and embeddings of x's dims) are evaluated. */
static bool chain_reads(Plan *pl, const Node *anchor, const Node *x, Node *n, bool *seen,
                        Node **reads, int *nreads) {
  if (seen[n->id]) return true;
  seen[n->id] = true;
  bool loop = anchor ? llvm_epilogue_loop_node(anchor, n) : llvm_prologue_loop_node(x, n);
  if (!pl->inseg[n->id] && !loop) {
    if (!plan_read(pl, n)) return false;
    reads[(*nreads)++] = n;
    return true;
  }
  for (int i = 0; i < n->nin; i++)
    if (!chain_reads(pl, anchor, x, n->in[i], seen, reads, nreads)) return false;
  return true;
}

/* Finishes the launch of an anchor (k->out) with a chain seg (its prologue or epilogue, kind)
 * storing outs: whether it writes an update target, and its name
 * kiln_k<N>_<anchor>_<kind><count>_<last op>. */
static void chain_launch(Plan *pl, Kernel *k, const char *kind, Node **seg, int nseg, Node **outs,
                         int nouts) {
  k->writes_update = k->out->offset == IR_BUF_UPDATE;
  for (int i = 0; i < nouts; i++) k->writes_update |= outs[i]->offset == IR_BUF_UPDATE;
  char what[64];
  snprintf(what, sizeof what, "%s_%s%d_%s", ir_op_name(k->out->op), kind, nseg,
           ir_op_name(seg[nseg - 1]->op));
  launch_common(pl, k, what);
}

/* The launch of an anchor with a chain seg its scan sc found: nodes (the anchor, then seg),
 * args (the anchor's operands aargs, the chain's reads, its outputs), the reads from args[from]
 * on placed and the outputs at their places; NULL if out of memory or a read cannot be placed.
 * The caller places the anchor's own value and anything before args[from]. */
static Kernel *chain_kernel(Plan *pl, Node *anchor, Node **aargs, Node **seg, int nseg,
                            const Scan *sc, int from) {
  Program *p = pl->p;
  int nargs = anchor->nin + sc->nreads + sc->nouts;
  Kernel *k = new_launch(p);
  if (!k) return NULL;
  k->nodes = own(p, ((size_t)nseg + 1) * sizeof *k->nodes);
  k->args = own(p, (size_t)nargs * sizeof *k->args);
  k->at = own(p, ((size_t)nargs + 1) * sizeof *k->at);
  if (!k->nodes || !k->args || !k->at) return NULL;
  k->nodes[0] = anchor;
  memcpy(k->nodes + 1, seg, (size_t)nseg * sizeof *seg);
  k->nnodes = nseg + 1;
  memcpy(k->args, aargs, (size_t)anchor->nin * sizeof *aargs);
  memcpy(k->args + anchor->nin, sc->reads, (size_t)sc->nreads * sizeof *sc->reads);
  memcpy(k->args + anchor->nin + sc->nreads, sc->outs, (size_t)sc->nouts * sizeof *sc->outs);
  k->epi_args = anchor->nin;
  k->nreads = sc->nreads;
  k->nargs = nargs;
  k->out = anchor;
  for (int i = from; i < nargs - sc->nouts; i++)
    if (!place_read(pl, k, i)) return NULL;
  for (int i = nargs - sc->nouts; i < nargs; i++) k->at[i] = place_of(pl, k->args[i]);
  return k;
}

/* An anchor taking a prologue (a layer_norm, or a reduction over runs of whole rows:
 * llvm_prologue_anchor) and the elementwise chain seg[0..nseg) computing its input x: one
 * launch, each row of x computed by the prologue (into x's home when it has one or a later
 * launch reads it, else onto the stack) right before the anchor reads it. */
static bool plan_prologue(Plan *pl, Node *anchor, Node **seg, int nseg, Node **eseg, int neseg) {
  Node *x = anchor->in[0];
  for (int i = 1; i < anchor->nin; i++)
    if (!plan_read(pl, anchor->in[i])) return false;
  Scan sc, se = {0};
  bool ok = scan_launch(pl, anchor, true, seg, nseg, &sc), x_stored = false;
  /* x is args[0] (the anchor's operand), not one of the prologue's other outputs. */
  for (int i = 0; i < sc.nouts; i++)
    if (sc.outs[i] == x) {
      x_stored = true;
      memmove(sc.outs + i, sc.outs + i + 1, (size_t)(sc.nouts - i - 1) * sizeof *sc.outs);
      sc.nouts--;
      break;
    }
  /* An epilogue too (a reduction's over its output, llvm_reduce_out_epi): its reads join the
   * prologue's, its outputs come after the prologue's, the chain's nodes after them. */
  int pro_outs = sc.nouts;
  Node **both = NULL;
  if (ok && neseg > 0) {
    ok = scan_launch(pl, anchor, false, eseg, neseg, &se);
    Node **outs = realloc(sc.outs, ((size_t)sc.nouts + (size_t)se.nouts + 1) * sizeof *outs);
    both = malloc(((size_t)nseg + (size_t)neseg) * sizeof *both);
    ok = ok && outs && both;
    if (outs) sc.outs = outs;
    for (int i = 0; ok && i < se.nreads; i++) {
      int r = 0;
      while (r < sc.nreads && sc.reads[r] != se.reads[i]) r++;
      if (r == sc.nreads) sc.reads[sc.nreads++] = se.reads[i];
    }
    for (int i = 0; ok && i < se.nouts; i++) sc.outs[sc.nouts++] = se.outs[i];
    if (ok) {
      memcpy(both, seg, (size_t)nseg * sizeof *both);
      memcpy(both + nseg, eseg, (size_t)neseg * sizeof *both);
    }
  }
  Kernel *k =
      ok ? chain_kernel(pl, anchor, anchor->in, both ? both : seg, nseg + neseg, &sc, 1) : NULL;
  if (k) {
    k->npro = nseg;
    k->nepi = neseg;
    k->pro_outs = pro_outs;
    k->pro_stack = !x_stored;
    k->anchor_store = neseg > 0 && se.anchor_store;
    /* x: its home (written by the prologue), or never read (a row on the stack). */
    k->at[0] = x_stored ? place_of(pl, x) : pl->base;
    /* With an epilogue the anchor is stored only when read later (else never addressed). */
    bool buffer = neseg == 0 || se.anchor_store;
    k->at[k->nargs] = resident(pl, anchor) ? -1
                      : buffer             ? tmp_of(pl, anchor, (int64_t)value_bytes(anchor))
                                           : pl->base;
    char kind[32];
    snprintf(kind, sizeof kind, neseg ? "pro%d_epi" : "pro", nseg);
    chain_launch(pl, k, kind, neseg ? eseg : seg, neseg ? neseg : nseg, sc.outs, sc.nouts);
  }
  if (neseg > 0) scan_free(&se);
  free(both);
  scan_free(&sc);
  return k != NULL;
}

/* The anchor (a GEMM) and the elementwise chain seg[0..nseg) after it: one
 * launch, the chain applied to the GEMM's results in registers. The anchor
 * keeps a buffer (its home, or scratch): the GEMM accumulates K slices in it. */
static bool plan_epilogue(Plan *pl, Node *anchor, Node **seg, int nseg) {
  Node **aargs, **view;
  if (!plan_views(pl, anchor, &aargs, &view)) return false;
  for (int i = 0; i < anchor->nin; i++)
    if (!plan_read(pl, aargs[i])) return false;
  Scan sc;
  bool ok = scan_launch(pl, anchor, false, seg, nseg, &sc);
  Kernel *k = ok ? chain_kernel(pl, anchor, aargs, seg, nseg, &sc, 0) : NULL;
  if (k) {
    k->view = view;
    k->nepi = nseg;
    k->anchor_store = sc.anchor_store;
    /* A non-resident anchor needs scratch only to accumulate K slices or for a
     * later reader; else it is never stored and its pointer never read (a row
     * kernel's: layer_norm, layer_norm_grad; a pooling gradient's, whose
     * planes add up on the stack). */
    bool gemm =
        anchor->op == OP_MATMUL || anchor->op == OP_CONV2D || anchor->op == OP_CONV2D_GRAD_INPUT;
    bool buffer = sc.anchor_store || (gemm && !lw_gemm_one_slice(llvm_gemm_depth(anchor)));
    k->at[k->nargs] = resident(pl, anchor) ? -1
                      : buffer             ? tmp_of(pl, anchor, (int64_t)value_bytes(anchor))
                                           : pl->base;
    chain_launch(pl, k, "epi", seg, nseg, sc.outs, sc.nouts);
  }
  scan_free(&sc);
  return k != NULL;
}

static bool node_fusable(const Node *n) {
  if (!fusable_value(n)) return false;
  for (int j = 0; j < n->nin; j++)
    if (n->in[j]->type.dtype == DT_I32) return false;
  return true;
}

/* A reshape r of the group whose input x is computed in the group only for
 * it: x is computed into r's home (the same bytes), and r needs no launch
 * (a sum reshaped to a bias's shape). Not for outputs: m_infer writes those
 * to the caller. */
static bool reshape_in_place(Plan *pl, const Node *r) {
  const Program *p = pl->p;
  const Node *x = r->nin == 1 ? r->in[0] : NULL;
  if (r->op != OP_RESHAPE || x->type.dtype != r->type.dtype || x->kernel != pl->gi ||
      x->nusers != 1 || resident(pl, x) || p->layout.offset[r->id] < 0)
    return false;
  for (int i = 0; i < p->g->noutputs; i++)
    if (p->g->outputs[i].node == r) return false;
  return true;
}

/* The end of anchor group[a]'s epilogue: the longest run of the nodes after it that
 * llvm_epilogue_ok accepts (a + 1: none). */
static int epilogue_end(Node **group, int ng, int a) {
  Node *n = group[a];
  int e = a + 1;
  if (llvm_epilogue_trail(n))
    while (e < ng && node_fusable(group[e]) &&
           ir_type_numel(&group[e]->type) == ir_type_numel(llvm_epilogue_space(n)))
      e++;
  while (e > a + 1 && !llvm_epilogue_ok(n, &group[a + 1], e - a - 1)) e--;
  return e;
}

/* The group as segments: each maximal run of fusable elementwise nodes over
 * one element count is one loop (with a row kernel after it that reads it: that kernel's
 * prologue), every other node a launch of its own. */
static bool plan_group(Plan *pl) {
  Node **group = malloc((size_t)pl->ngroup * sizeof *group);
  if (!group) return false;
  int ng = 0;
  for (int j = 0; j < pl->ngroup; j++) {
    Node *r = pl->group[j];
    if (reshape_in_place(pl, r)) {
      pl->tmp[r->in[0]->id] = pl->p->layout.offset[r->id];
      pl->touched[pl->ntouched++] = r->in[0]->id;
    } else {
      group[ng++] = r;
    }
  }
  bool ok = true;
  for (int j = 0; ok && j < ng;) {
    Node *n = group[j];
    if (!node_fusable(n)) {
      int e = epilogue_end(group, ng, j);
      ok = e > j + 1 ? plan_epilogue(pl, n, &group[j + 1], e - j - 1) : plan_single(pl, n);
      j = e;
      continue;
    }
    int e = j + 1;
    int64_t numel = ir_type_numel(&n->type);
    while (e < ng && node_fusable(group[e]) && ir_type_numel(&group[e]->type) == numel) e++;
    int ee = e < ng ? epilogue_end(group, ng, e) : e;
    if (e < ng && (ee == e + 1 || llvm_reduce_out_epi(group[e])) &&
        llvm_prologue_ok(group[e], &group[j], e - j)) {
      ok = plan_prologue(pl, group[e], &group[j], e - j, &group[e + 1], ee - e - 1);
      j = ee;
      continue;
    }
    ok = plan_fused(pl, &group[j], e - j);
    j = e;
  }
  free(group);
  return ok;
}

static bool program_planned_kernels(Program *p) {
  const Graph *g = p->g;
  Plan pl = {.p = p};
  size_t ids = (size_t)g->next_id + 1;
  pl.tmp = malloc(ids * sizeof *pl.tmp);
  pl.touched = malloc(ids * sizeof *pl.touched);
  pl.inseg = calloc(ids, sizeof *pl.inseg);
  pl.tape = malloc(ids * sizeof *pl.tape);
  Node **group = calloc((size_t)g->nnodes + 1, sizeof *group);
  bool ok = pl.tmp && pl.touched && pl.inseg && pl.tape && group;
  for (size_t i = 0; ok && i < ids; i++) pl.tmp[i] = pl.tape[i] = -1;
  /* lstm/lstm_grad pairs first: their scratch lives from the forward to the backward. */
  int64_t at = (int64_t)align_up(p->layout.arena_offset + (uint64_t)g->arena_bytes);
  for (int i = 0; ok && i < g->nnodes; i++) {
    const Node *f = g->nodes[i], *b = llvm_lstm_pair(g, f);
    if (f->op != OP_LSTM || !b) continue;
    pl.tape[f->id] = pl.tape[b->id] = at;
    int64_t bytes = (int64_t)align_up((uint64_t)llvm_scratch_bytes(g, f));
    at += bytes, p->tape_bytes += bytes;
  }
  pl.base = at;
  for (int i = 0; ok && i < g->nnodes;) {
    Node *n = g->nodes[i];
    if (n->kernel < 0) {
      i++;
      continue;
    }
    int ng = 0;
    for (; i < g->nnodes && g->nodes[i]->kernel == n->kernel; i++) group[ng++] = g->nodes[i];
    pl.group = own(p, (size_t)ng * sizeof *pl.group);
    ok = pl.group != NULL;
    if (!ok) break;
    memcpy(pl.group, group, (size_t)ng * sizeof *group);
    pl.ngroup = ng;
    pl.gi = n->kernel;
    pl.sat = 0;
    ok = plan_group(&pl);
    if (pl.sat > p->scratch_bytes) p->scratch_bytes = pl.sat;
    for (int j = 0; j < pl.ntouched; j++) pl.tmp[pl.touched[j]] = -1;
    pl.ntouched = 0;
  }
  free(pl.tmp);
  free(pl.touched);
  free(pl.inseg);
  free(pl.tape);
  free(group);
  return ok;
}

/* Params, gradients, state as program_layout; the arena as planned; then
 * kernel scratch, then snapshots of update values that are sources. */
static bool program_planned(Program *p) {
  const Graph *g = p->g;
  Layout *l = &p->layout;
  if (!layout_instance(p)) return false;
  uint64_t at = l->arena_offset;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    if (n->offset >= 0) l->offset[n->id] = (int64_t)(l->arena_offset + (uint64_t)n->offset);
  }
  for (int i = 0; p->has_train && i < g->ngrads; i++)
    if (g->grads[i].grad->offset == IR_BUF_GRAD)
      l->offset[g->grads[i].grad->id] = l->grad_offset[g->grads[i].param->id];
  for (int i = 0; i < g->nupdates; i++)
    if (g->updates[i].value->offset == IR_BUF_UPDATE)
      l->offset[g->updates[i].value->id] = l->offset[g->updates[i].target->id];
  if (!program_planned_kernels(p)) return false;
  at = align_up(at + (uint64_t)g->arena_bytes) + (uint64_t)p->tape_bytes +
       (uint64_t)p->scratch_bytes;
  at = align_up(at);
  for (int k = 0; k < g->nupdates; k++, at = align_up(at)) {
    const Node *v = g->updates[k].value;
    l->snap_offset[k] = ir_op_is_named_source(v->op) ? (int64_t)at : -1;
    if (l->snap_offset[k] >= 0) at += value_bytes(v);
  }
  l->arena_bytes = at - l->arena_offset;
  l->mem_bytes = at ? at : LAYOUT_ALIGN;
  return true;
}

/* ---- The launches of a fused graph (FuseTarget) ------------------------- */

/* Whether v, computed by a kernel, is read by another kernel (directly or through inline
 * nodes): the plan gives such values a home. */
static void mark_crossing(int kernel, const Node *v, bool *home, int depth) {
  if (v->kernel == IR_KERNEL_INLINE && depth < 64) {
    for (int i = 0; i < v->nin; i++) mark_crossing(kernel, v->in[i], home, depth + 1);
  } else if (v->kernel >= 0 && v->kernel != kernel) {
    home[v->id] = true;
  }
}

/* The launches program_planned_kernels makes of a fused graph, before the plan: every value the
 * plan will give a home (read by another kernel, an output, the loss, a gradient, an update
 * value) is taken as resident, the rest as scratch. */
static bool fuse_launches(const Graph *g, int *launch) {
  Program p = {.g = g, .planned = true};
  size_t ids = (size_t)g->next_id + 1;
  bool *home = calloc(ids, sizeof *home);
  int *pos = malloc(ids * sizeof *pos);
  p.layout.offset = malloc(ids * sizeof *p.layout.offset);
  bool ok = home && pos && p.layout.offset;
  for (int i = 0; ok && i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    pos[n->id] = i;
    launch[i] = -1;
    if (n->kernel >= 0)
      for (int j = 0; j < n->nin; j++) mark_crossing(n->kernel, n->in[j], home, 0);
  }
  for (int i = 0; ok && i < g->noutputs; i++) home[g->outputs[i].node->id] = true;
  for (int i = 0; ok && i < g->ngrads; i++) home[g->grads[i].grad->id] = true;
  for (int i = 0; ok && i < g->nupdates; i++) home[g->updates[i].value->id] = true;
  if (ok && g->loss) home[g->loss->id] = true;
  for (int i = 0; ok && i < g->nnodes; i++) {
    const Node *n = g->nodes[i];
    p.layout.offset[n->id] = n->kernel >= 0 && home[n->id] ? 0 : -1;
  }
  ok = ok && program_planned_kernels(&p);
  for (int k = 0; ok && k < p.nkernels; k++)
    for (int j = 0; j < p.kernels[k].nnodes; j++) {
      int at = pos[p.kernels[k].nodes[j]->id];
      if (launch[at] < 0) launch[at] = k;
    }
  free(home);
  free(pos);
  llvm_program_free(&p);
  return ok;
}

int llvm_launch_count(const Graph *g) {
  Program p;
  LlvmOptions o = {.train = true};
  int n = llvm_program_build(&p, g, &o) ? p.nkernels : -1;
  llvm_program_free(&p);
  return n;
}

/* Whether the kernel of anchor a also computes a prologue (an input of a in a's kernel) or an
 * epilogue (a user of a in a's kernel). */
static bool has_pro(const Node *a) {
  for (int i = 0; i < a->nin; i++)
    if (a->in[i]->kernel == a->kernel) return true;
  return false;
}
static bool has_epi(const Node *a) {
  for (int u = 0; u < a->nusers; u++)
    if (a->users[u]->kernel == a->kernel) return true;
  return false;
}

/* The reason for --explain-fusion, from the same predicates plan_group follows. */
static void fuse_why(const Node *p, const Node *n, char *buf, size_t len) {
  const char *po = ir_op_name(p->op), *no = ir_op_name(n->op);
  if (ir_op_info(p->op)->flags & IR_F_INJECTIVE)
    snprintf(buf, len,
             "backend: %s is computed into memory by a launch of its own (the %s's "
             "launch cannot evaluate it by index)",
             po, no);
  else if (!node_fusable(p) && node_fusable(n) && !llvm_epilogue_trail(p))
    snprintf(buf, len,
             "backend: %s takes no epilogue here (f32 GEMMs, convolutions, row sums, "
             "layer_norm and pooling gradients do)",
             po);
  else if (!node_fusable(p) && node_fusable(n) && has_pro(p) && !llvm_reduce_out_epi(p))
    snprintf(buf, len,
             "backend: %s takes a prologue here, and a prologue or an epilogue, "
             "not both",
             po);
  else if (!node_fusable(p) && node_fusable(n))
    snprintf(buf, len, "backend: %s's epilogue reads a value it cannot read along its rows", po);
  else if (node_fusable(p) && !node_fusable(n) && !llvm_prologue_anchor(n))
    snprintf(buf, len,
             "backend: %s takes no prologue here (f32 layer_norm, softmax and "
             "log_softmax over the last axis, cross_entropy and reductions of whole trailing rows "
             "do)",
             no);
  else if (node_fusable(p) && !node_fusable(n) && has_epi(n) && !llvm_reduce_out_epi(n))
    snprintf(buf, len,
             "backend: %s takes an epilogue here, and a prologue or an epilogue, "
             "not both",
             no);
  else if (node_fusable(p) && !node_fusable(n))
    snprintf(buf, len, "backend: %s's prologue reads a value it cannot read row by row", no);
  else
    snprintf(buf, len,
             "backend: their group runs as several launches, another one between "
             "them");
}

static const FuseTarget llvm_target = {
    .name = "the LLVM backend", .launches = fuse_launches, .why = fuse_why};

const FuseTarget *llvm_fuse_target(void) { return &llvm_target; }

/* ---- Entry subsets ------------------------------------------------------ */

static void mark(bool *need, const Node *n) {
  if (need[n->id]) return;
  need[n->id] = true;
  for (int i = 0; i < n->nin; i++) mark(need, n->in[i]);
}

static bool program_entry(Program *p, EntryKind e) {
  const Graph *g = p->g;
  bool *need = calloc((size_t)g->next_id + 1, sizeof *need);
  p->runs[e] = calloc((size_t)p->nkernels + 1, sizeof *p->runs[e]);
  p->entry_inputs[e] = calloc((size_t)p->ninputs + 1, sizeof *p->entry_inputs[e]);
  if (!need || !p->runs[e] || !p->entry_inputs[e]) {
    free(need);
    return false;
  }
  if (e == ENTRY_INFER)
    for (int i = 0; i < g->noutputs; i++) mark(need, g->outputs[i].node);
  if (e != ENTRY_INFER && p->has_train) {
    mark(need, g->loss);
    for (int i = 0; i < g->ngrads; i++) mark(need, g->grads[i].grad);
  }
  if (e == ENTRY_TRAIN && p->has_train)
    for (int i = 0; i < g->nupdates; i++) mark(need, g->updates[i].value);
  for (int i = 0; i < p->nkernels; i++) {
    const Kernel *k = &p->kernels[i];
    for (int j = 0; j < k->ngroup && !p->runs[e][i]; j++) p->runs[e][i] = need[k->group[j]->id];
  }
  for (int i = 0; i < p->ninputs; i++)
    if (need[p->inputs[i]->id]) p->entry_inputs[e][p->nentry_inputs[e]++] = i;
  free(need);
  return true;
}

bool llvm_program_build(Program *p, const Graph *g, const LlvmOptions *o) {
  memset(p, 0, sizeof *p);
  p->g = g;
  p->opts = *o;
  p->has_train = o->train && g->loss && g->ngrads > 0;
  p->planned = g->annot == IR_ANNOT_PLANNED;
  bool ok = program_sources(p) &&
            (p->planned ? program_planned(p) : program_kernels(p) && program_layout(p));
  for (int e = 0; ok && e < ENTRY_COUNT; e++) ok = program_entry(p, (EntryKind)e);
  return ok;
}

void llvm_program_free(Program *p) {
  free(p->kernels);
  for (int i = 0; i < p->nowned; i++) free(p->owned[i]);
  free(p->owned);
  free(p->inputs);
  free(p->params);
  free(p->states);
  free(p->layout.offset);
  free(p->layout.grad_offset);
  free(p->layout.snap_offset);
  for (int e = 0; e < ENTRY_COUNT; e++) {
    free(p->runs[e]);
    free(p->entry_inputs[e]);
  }
  memset(p, 0, sizeof *p);
}
