/* autodiff.c - reverse-mode differentiation: d loss / d param for every param, as IR.
 * Needs: a verified graph with a scalar loss (without one, or for inference, it does nothing).
 * Guarantees: one `grad` per param in graph order, of the param's type; gradient nodes follow
 * the forward graph in topological order; none is built for a value off every param-to-loss path.
 */
#include "grad_rules.h"

#include <stdlib.h>
#include <string.h>

/* The gradient rules, from the grad column of ops.def (NULL: none). */
static GradRule *const grad_rules[OP_COUNT] = {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower) [OP_##NAME] = grad,
#include "ops.def"
#undef OP
};

/* ---- Accumulation ------------------------------------------------------- */

bool grad_needed(const GradCtx *cx, const Node *v) { return v->id < cx->nids && cx->active[v->id]; }

/* A gradient d of a value broadcast from type t back to t: summed over the
 * axes t lacks or has as 1, then reshaped to t (NumPy rules in reverse). */
static Node *ad_unbroadcast(GradCtx *cx, Node *d, const Type *t) {
  if (ir_type_eq(&d->type, t)) return d;
  int lead = d->type.rank - t->rank, naxes = 0;
  IR_ASSERT(lead >= 0, "autodiff: gradient of rank %d for a value of rank %d", d->type.rank,
            t->rank);
  int64_t axes[IR_MAX_RANK];
  for (int i = 0; i < d->type.rank; i++) {
    bool broadcast = i < lead || t->dims[i - lead] == 1;
    if (broadcast && d->type.dims[i] != 1) axes[naxes++] = i;
  }
  if (naxes) d = ad_sum(cx, d, axes, naxes, false);
  return ad_reshape(cx, d, t);
}

/* d (L) / d v = sum of the contributions of v's uses. */
void grad_accumulate(GradCtx *cx, Node *v, Node *d) {
  if (!grad_needed(cx, v)) return;
  d = ad_unbroadcast(cx, d, &v->type);
  Node *old = cx->grad[v->id];
  cx->grad[v->id] = old ? ad_op2(cx, OP_ADD, old, d) : d;
}

/* ---- Which values need a gradient --------------------------------------- */

/* active[id]: the node depends on a param (in graph order, inputs first) and
 * the loss depends on it (in reverse order, users first). */
static void ad_mark_active(GradCtx *cx) {
  Graph *g = cx->g;
  bool *leads = calloc((size_t)cx->nids, sizeof *leads);
  bool *reaches = calloc((size_t)cx->nids, sizeof *reaches);
  IR_ASSERT(leads && reaches, "autodiff: out of memory");
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    leads[n->id] = n->op == OP_PARAM;
    for (int k = 0; k < n->nin; k++) leads[n->id] |= leads[n->in[k]->id];
  }
  reaches[g->loss->id] = true;
  for (int i = g->nnodes - 1; i >= 0; i--) {
    Node *n = g->nodes[i];
    if (!reaches[n->id]) continue;
    for (int k = 0; k < n->nin; k++) reaches[n->in[k]->id] = true;
  }
  for (int id = 0; id < cx->nids; id++) cx->active[id] = leads[id] && reaches[id];
  free(leads);
  free(reaches);
}

/* ---- The backward walk -------------------------------------------------- */

/* Hands d loss / d n (complete: every user of n comes later in the graph
 * and was visited first) to n's rule. */
static void ad_visit(GradCtx *cx, Node *n) {
  Node *dy = cx->grad[n->id];
  if (!cx->active[n->id] || !dy || (ir_op_info(n->op)->flags & IR_F_SOURCE)) return;
  GradRule *rule = grad_rules[n->op];
  IR_ASSERT(rule, "autodiff: op %s (node %d) has no gradient rule", ir_op_name(n->op), n->id);
  cx->loc = n->loc;
  rule(cx, n, dy);
}

/* "d." + the param's name, for dumps; only for a node autodiff made. */
static void ad_name_grad(GradCtx *cx, Node *param, Node *d) {
  if (d->id < cx->nids || d->name || !param->name) return;
  size_t len = strlen(param->name) + 3;
  char *name = arena_alloc(&cx->g->arena, len);
  snprintf(name, len, "d.%s", param->name);
  d->name = name;
}

/* Records a gradient for every param, in graph order. A param the loss does
 * not depend on (or depends on only through pow(x, 0)) gets a zero of its
 * type, so every param has one, as PyTorch's zeroed .grad would. */
static void ad_record(GradCtx *cx) {
  for (int i = 0; i < cx->g->nnodes; i++) {
    Node *p = cx->g->nodes[i];
    if (p->op != OP_PARAM) continue;
    Node *d = cx->grad[p->id];
    if (!d) {
      cx->loc = p->loc;
      d = ad_const(cx, 0.0, &p->type);
    }
    ad_name_grad(cx, p, d);
    ir_add_grad(cx->g, p, d);
  }
}

/* Removes the new nodes no gradient uses (a contribution to a value whose
 * own gradient went nowhere): nothing is left computed in vain. */
static void ad_sweep(GradCtx *cx) {
  Graph *g = cx->g;
  bool *live = calloc((size_t)g->next_id, sizeof *live);
  bool *dead = calloc((size_t)g->next_id, sizeof *dead);
  IR_ASSERT(live && dead, "autodiff: out of memory");
  for (int k = 0; k < g->ngrads; k++) live[g->grads[k].grad->id] = true;
  bool any = false;
  for (int i = g->nnodes - 1; i >= 0; i--) {
    Node *n = g->nodes[i];
    if (n->id < cx->nids) break; /* new nodes come after every forward node */
    if (!live[n->id]) {
      dead[n->id] = any = true;
      continue;
    }
    for (int k = 0; k < n->nin; k++) live[n->in[k]->id] = true;
  }
  if (any) ir_remove_nodes(g, dead);
  free(live);
  free(dead);
}

bool pass_autodiff(Graph *g, PassCtx *pcx) {
  /* A graph read back from a grad dump already has its gradients. */
  if (!g->loss || pcx->inference || g->ngrads > 0) return false;
  GradCtx cx = {.g = g, .nids = g->next_id};
  cx.grad = calloc((size_t)(cx.nids ? cx.nids : 1), sizeof *cx.grad);
  cx.active = calloc((size_t)(cx.nids ? cx.nids : 1), sizeof *cx.active);
  IR_ASSERT(cx.grad && cx.active, "autodiff: out of memory");
  ad_mark_active(&cx);
  int nforward = g->nnodes;
  if (cx.active[g->loss->id]) {
    cx.loc = g->loss->loc;
    cx.grad[g->loss->id] = ad_const(&cx, 1.0, &g->loss->type); /* d loss / d loss */
    for (int i = nforward - 1; i >= 0; i--) ad_visit(&cx, g->nodes[i]);
  }
  ad_record(&cx);
  ad_sweep(&cx);
  free(cx.grad);
  free(cx.active);
  return true;
}
