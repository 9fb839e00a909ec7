/* graph.c - building and editing graphs: nodes, use lists, outputs, order. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

Graph *ir_graph_new(const char *name) {
  Graph *g = calloc(1, sizeof *g);
  if (!g) ir_fatal("out of memory allocating a graph");
  g->name = name ? arena_strdup(&g->arena, name) : NULL;
  return g;
}

void ir_graph_free(Graph *g) {
  if (!g) return;
  arena_free(&g->arena);
  free(g);
}

/* Use lists double in the arena; the old copy is abandoned there. */
static void add_user(Graph *g, Node *v, Node *user) {
  if (v->nusers == v->capusers) {
    int cap = v->capusers ? v->capusers * 2 : 4;
    v->users = arena_grow(&g->arena, v->users, (size_t)v->nusers, (size_t)cap, sizeof(Node *));
    v->capusers = cap;
  }
  v->users[v->nusers++] = user;
}

/* Removes one entry (one use) of user, keeping the others in order. */
static void remove_user(Node *v, const Node *user) {
  for (int i = 0; i < v->nusers; i++) {
    if (v->users[i] == user) {
      memmove(&v->users[i], &v->users[i + 1], (size_t)(v->nusers - i - 1) * sizeof(Node *));
      v->nusers--;
      return;
    }
  }
  ir_fatal("node %d is not in the users list of node %d", user->id, v->id);
}

static void append_node(Graph *g, Node *n) {
  if (g->nnodes == g->capnodes) {
    int cap = g->capnodes ? g->capnodes * 2 : 64;
    g->nodes = arena_grow(&g->arena, g->nodes, (size_t)g->nnodes, (size_t)cap, sizeof(Node *));
    g->capnodes = cap;
  }
  g->nodes[g->nnodes++] = n;
}

/* The graph a node belongs to is not stored in the node, so ir_set_input
 * finds the arena through this pointer, kept beside each node. */
typedef struct NodeBox {
  Node node; /* first: a Node * is a NodeBox * */
  Graph *graph;
} NodeBox;

static Graph *node_graph(Node *n) { return ((NodeBox *)n)->graph; }

Node *ir_node_new(Graph *g, OpKind op, Node *const *in, int nin, Loc loc) {
  const OpInfo *info = ir_op_info(op);
  IR_ASSERT(nin >= 0 && (nin == 0 || in), "ir_node_new(%s): bad inputs", info->name);
  NodeBox *box = arena_alloc(&g->arena, sizeof *box);
  box->graph = g;
  Node *n = &box->node;
  n->op = op;
  n->id = g->next_id++;
  n->loc = loc;
  n->kernel = IR_KERNEL_NONE;
  n->offset = IR_BUF_NONE;
  n->nin = nin;
  n->in = nin ? arena_array(&g->arena, (size_t)nin, sizeof(Node *)) : NULL;
  for (int i = 0; i < nin; i++) {
    IR_ASSERT(in[i], "ir_node_new(%s): input %d is NULL", info->name, i);
    n->in[i] = in[i];
    add_user(g, in[i], n);
  }
  append_node(g, n);
  return n;
}

void ir_set_input(Node *n, int i, Node *v) {
  IR_ASSERT(i >= 0 && i < n->nin, "ir_set_input: node %d has no input %d", n->id, i);
  IR_ASSERT(v, "ir_set_input: node %d input %d set to NULL", n->id, i);
  if (n->in[i] == v) return;
  remove_user(n->in[i], n);
  n->in[i] = v;
  add_user(node_graph(n), v, n);
}

void ir_replace_uses(Graph *g, Node *old, Node *new_node) {
  if (old == new_node) return;
  /* Each entry is one use; rewiring it removes it from old's list. */
  while (old->nusers > 0) {
    Node *u = old->users[0];
    int i = 0;
    while (i < u->nin && u->in[i] != old) i++;
    IR_ASSERT(i < u->nin, "node %d is listed as a user of node %d but does not use it", u->id,
              old->id);
    ir_set_input(u, i, new_node);
  }
  for (int k = 0; k < g->noutputs; k++)
    if (g->outputs[k].node == old) g->outputs[k].node = new_node;
  if (g->loss == old) g->loss = new_node;
  for (int k = 0; k < g->ngrads; k++)
    if (g->grads[k].grad == old) g->grads[k].grad = new_node;
  for (int k = 0; k < g->nupdates; k++)
    if (g->updates[k].value == old) g->updates[k].value = new_node;
}

static void check_removable(const Graph *g, const Node *n, const bool *dead) {
  for (int k = 0; k < n->nusers; k++)
    IR_ASSERT(dead[n->users[k]->id], "ir_remove_nodes: %s node %d is still used by live node %d",
              ir_op_name(n->op), n->id, n->users[k]->id);
  for (int k = 0; k < g->noutputs; k++)
    IR_ASSERT(g->outputs[k].node != n, "ir_remove_nodes: %s node %d is output '%s'",
              ir_op_name(n->op), n->id, g->outputs[k].name);
  IR_ASSERT(g->loss != n, "ir_remove_nodes: %s node %d is the loss", ir_op_name(n->op), n->id);
  for (int k = 0; k < g->ngrads; k++)
    IR_ASSERT(g->grads[k].grad != n && g->grads[k].param != n,
              "ir_remove_nodes: %s node %d is a gradient", ir_op_name(n->op), n->id);
  for (int k = 0; k < g->nupdates; k++)
    IR_ASSERT(g->updates[k].value != n && g->updates[k].target != n,
              "ir_remove_nodes: %s node %d takes part in an update", ir_op_name(n->op), n->id);
}

/* Drops dead nodes from a live node's use list, keeping the order. */
static void drop_dead_users(Node *v, const bool *dead) {
  int k = 0;
  for (int i = 0; i < v->nusers; i++)
    if (!dead[v->users[i]->id]) v->users[k++] = v->users[i];
  v->nusers = k;
}

void ir_remove_nodes(Graph *g, const bool *dead) {
  for (int i = 0; i < g->nnodes; i++)
    if (dead[g->nodes[i]->id]) check_removable(g, g->nodes[i], dead);
  int k = 0;
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (dead[n->id]) continue;
    drop_dead_users(n, dead);
    g->nodes[k++] = n;
  }
  g->nnodes = k;
}

/* ---- Topological order -------------------------------------------------- */

/* A binary min-heap of positions in the current node order: Kahn's algorithm
 * that always takes the earliest ready node keeps the order where legal. */
typedef struct Heap {
  int *a;
  int n;
} Heap;

static void heap_push(Heap *h, int v) {
  int i = h->n++;
  while (i > 0 && h->a[(i - 1) / 2] > v) {
    h->a[i] = h->a[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->a[i] = v;
}

static int heap_pop(Heap *h) {
  int top = h->a[0], last = h->a[--h->n], i = 0;
  for (;;) {
    int c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->a[c + 1] < h->a[c]) c++;
    if (h->a[c] >= last) break;
    h->a[i] = h->a[c];
    i = c;
  }
  if (h->n > 0) h->a[i] = last;
  return top;
}

static void *scratch(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz);
  if (!p) ir_fatal("out of memory in ir_topo_sort");
  return p;
}

void ir_topo_sort(Graph *g) {
  int nn = g->nnodes;
  int *pos = scratch((size_t)g->next_id, sizeof *pos); /* id -> position */
  int *indeg = scratch((size_t)nn, sizeof *indeg);     /* by position */
  Node **order = scratch((size_t)nn, sizeof *order);
  Heap h = {scratch((size_t)nn, sizeof(int)), 0};
  for (int i = 0; i < nn; i++) pos[g->nodes[i]->id] = i;
  for (int i = 0; i < nn; i++) indeg[i] = g->nodes[i]->nin;
  for (int i = 0; i < nn; i++)
    if (indeg[i] == 0) heap_push(&h, i);
  int done = 0;
  while (h.n > 0) {
    Node *n = g->nodes[heap_pop(&h)];
    order[done++] = n;
    /* One users entry per use matches one indegree count per input. */
    for (int k = 0; k < n->nusers; k++)
      if (--indeg[pos[n->users[k]->id]] == 0) heap_push(&h, pos[n->users[k]->id]);
  }
  IR_ASSERT(done == nn, "ir_topo_sort: graph '%s' has a cycle (%d of %d nodes ordered)",
            g->name ? g->name : "?", done, nn);
  memcpy(g->nodes, order, (size_t)nn * sizeof *order);
  free(pos);
  free(indeg);
  free(order);
  free(h.a);
}

/* ---- Outputs and lookup ------------------------------------------------- */

void ir_add_output(Graph *g, const char *name, Node *n) {
  g->outputs = arena_grow(&g->arena, g->outputs, (size_t)g->noutputs, (size_t)g->noutputs + 1,
                          sizeof *g->outputs);
  g->outputs[g->noutputs].name = name ? arena_strdup(&g->arena, name) : NULL;
  g->outputs[g->noutputs].node = n;
  g->noutputs++;
}

void ir_add_grad(Graph *g, Node *param, Node *grad) {
  g->grads =
      arena_grow(&g->arena, g->grads, (size_t)g->ngrads, (size_t)g->ngrads + 1, sizeof *g->grads);
  g->grads[g->ngrads++] = (GraphGrad){param, grad};
}

void ir_add_update(Graph *g, Node *target, Node *value) {
  g->updates = arena_grow(&g->arena, g->updates, (size_t)g->nupdates, (size_t)g->nupdates + 1,
                          sizeof *g->updates);
  g->updates[g->nupdates++] = (GraphUpdate){target, value};
}

Node *ir_find_grad(const Graph *g, const Node *param) {
  for (int k = 0; k < g->ngrads; k++)
    if (g->grads[k].param == param) return g->grads[k].grad;
  return NULL;
}

static Node *find_source(const Graph *g, OpKind op, const char *name) {
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (n->op == op && n->name && strcmp(n->name, name) == 0) return n;
  }
  return NULL;
}

Node *ir_find_param(const Graph *g, const char *name) { return find_source(g, OP_PARAM, name); }

Node *ir_find_input(const Graph *g, const char *name) { return find_source(g, OP_INPUT, name); }

Node *ir_find_named_source(const Graph *g, const char *name) {
  for (int i = 0; i < g->nnodes; i++) {
    Node *n = g->nodes[i];
    if (ir_op_is_named_source(n->op) && n->name && strcmp(n->name, name) == 0) return n;
  }
  return NULL;
}
