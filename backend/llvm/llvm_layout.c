/* llvm_layout.c - the program the backend lowers: kernels, the instance layout, what each entry point runs. */
#include <stdlib.h>
#include <string.h>

#include "llvm_priv.h"

#define LAYOUT_ALIGN 64

static uint64_t align_up(uint64_t v) { return (v + LAYOUT_ALIGN - 1) / LAYOUT_ALIGN * LAYOUT_ALIGN; }

static uint64_t value_bytes(const Node *n) {
  return (uint64_t)ir_type_numel(&n->type) * ir_dtype_size(n->type.dtype);
}

/* lstm keeps per sequence z[4H], h[H], c[H]; lstm_grad a tape per sequence:
 * gates [T][4H], c and h [T+1][H], dz [4H], dh, dc [H]. Both in the value's
 * float type. */
int64_t llvm_scratch_bytes(const Node *n) {
  if (n->op != OP_LSTM && n->op != OP_LSTM_GRAD) return 0;
  const Type *xt = &n->in[0]->type;
  int64_t b = xt->dims[0], t = xt->dims[1], h = n->in[2]->type.dims[1];
  int64_t per = n->op == OP_LSTM ? 6 * h : t * 4 * h + 2 * (t + 1) * h + 6 * h;
  return b * per * (int64_t)ir_dtype_size(n->type.dtype);
}

/* ---- Kernels ------------------------------------------------------------ */

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
    k->scratch_bytes = llvm_scratch_bytes(n);
    snprintf(k->name, sizeof k->name, "kiln_k%d_%s", k->index, ir_op_name(n->op));
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

static bool program_layout(Program *p) {
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
  for (int i = 0; i < p->nkernels; i++, at = align_up(at))
    l->offset[p->kernels[i].out->id] = (int64_t)at, at += value_bytes(p->kernels[i].out);
  for (int i = 0; i < p->nkernels; i++, at = align_up(at))
    p->kernels[i].scratch_offset = (int64_t)at, at += (uint64_t)p->kernels[i].scratch_bytes;
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
  for (int i = 0; i < p->nkernels; i++) p->runs[e][i] = need[p->kernels[i].out->id];
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
  bool ok = program_sources(p) && program_kernels(p) && program_layout(p);
  for (int e = 0; ok && e < ENTRY_COUNT; e++) ok = program_entry(p, (EntryKind)e);
  return ok;
}

void llvm_program_free(Program *p) {
  free(p->kernels);
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
