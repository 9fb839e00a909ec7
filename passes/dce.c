/* dce.c - dead code elimination.
 * Needs: a verified graph. Guarantees: every node left is an input, a param,
 * or something an output or the loss depends on; the order is unchanged. */
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
  (void)cx;
  size_t n = (size_t)g->next_id;
  bool *live = calloc(n ? n : 1, sizeof *live);
  Node **stack = malloc((n ? n : 1) * sizeof *stack);
  IR_ASSERT(live && stack, "dce: out of memory");
  /* Inputs and params are the model's interface: they stay. */
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == OP_INPUT || g->nodes[i]->op == OP_PARAM)
      dce_mark(g->nodes[i], live, stack);
  for (int i = 0; i < g->noutputs; i++) dce_mark(g->outputs[i].node, live, stack);
  if (g->loss) dce_mark(g->loss, live, stack);

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
