/* dce.c - dead code elimination.
 * Needs: a verified graph. Guarantees: every node left is an input, a param,
 * a state, or something an output, the loss, a gradient or an update depends
 * on; the order is unchanged. With cx->inference, the loss goes and so do the
 * inputs no output needs. */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

/* Marks n and everything it depends on. An explicit stack: graphs can be
 * deeper than the C stack allows recursion. */
static void dce_mark(Node *root, bool *live, Node **stack) {
  int top = 0;
  if (live[root->id]) return;
  live[root->id] = true;
  stack[top++] = root;
  while (top > 0) {
    Node *n = stack[--top];
    for (int i = 0; i < n->nin; i++) {
      Node *v = n->in[i];
      if (live[v->id]) continue;
      live[v->id] = true;
      stack[top++] = v;
    }
  }
}

bool pass_dce(Graph *g, PassCtx *cx) {
  size_t n = (size_t)g->next_id;
  bool *live = calloc(n ? n : 1, sizeof *live);
  Node **stack = malloc((n ? n : 1) * sizeof *stack);
  IR_ASSERT(live && stack, "dce: out of memory");
  /* Inputs, params and state are the model's interface: they stay, but an
   * inference graph keeps only the inputs its outputs need. */
  if (cx->inference) {
    g->loss = NULL;
    g->optim = (Optim){0};
  }
  for (int i = 0; i < g->nnodes; i++) {
    const Node *v = g->nodes[i];
    if (ir_op_is_named_source(v->op) && !(cx->inference && v->op == OP_INPUT))
      dce_mark(g->nodes[i], live, stack);
  }
  for (int i = 0; i < g->noutputs; i++) dce_mark(g->outputs[i].node, live, stack);
  if (g->loss) dce_mark(g->loss, live, stack);
  for (int i = 0; i < g->ngrads; i++) dce_mark(g->grads[i].grad, live, stack);
  for (int i = 0; i < g->nupdates; i++) dce_mark(g->updates[i].value, live, stack);

  bool *dead = calloc(n ? n : 1, sizeof *dead);
  IR_ASSERT(dead, "dce: out of memory");
  bool changed = false;
  for (int i = 0; i < g->nnodes; i++) {
    Node *v = g->nodes[i];
    if (!live[v->id]) dead[v->id] = changed = true;
  }
  if (changed) ir_remove_nodes(g, dead);
  free(live);
  free(stack);
  free(dead);
  return changed;
}
