/* dot.c - a Graph as Graphviz dot: one box per node, edges from inputs to users. */
#include "ir.h"

#include <stdlib.h>

/* Inside a dot "..." string: quotes and backslashes escaped, control bytes
 * (a newline in a name) shown as spaces so the label stays on its lines. */
static void dot_escape(FILE *f, const char *s) {
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc((unsigned char)*s < ' ' ? ' ' : *s, f);
  }
}

/* Sources get shapes of their own, so a model's interface stands out. */
static const char *dot_style(const Node *n) {
  if (n->op == OP_INPUT) return "shape=invhouse, style=filled, fillcolor=\"#dbeafe\"";
  if (n->op == OP_PARAM) return "shape=cylinder, style=filled, fillcolor=\"#fef3c7\"";
  if (n->op == OP_CONST) return "shape=ellipse";
  return "shape=box";
}

/* n<ID> [label="%name\nop\ntype", ...]; the loss gets a thick red border. */
static void dot_node(FILE *f, const Graph *g, const char **names, int i) {
  const Node *n = g->nodes[i];
  char ty[IR_TYPE_STR_MAX];
  fprintf(f, "  n%d [label=\"%%", n->id);
  if (names[i])
    dot_escape(f, names[i]);
  else
    fprintf(f, "%d", i);
  fprintf(f, "\\n%s\\n%s\", %s%s];\n", ir_op_name(n->op), ir_type_str(&n->type, ty, sizeof ty),
          dot_style(n), n == g->loss ? ", color=\"#dc2626\", penwidth=3" : "");
}

/* Operand order matters (sub, matmul): edges of multi-input nodes say it. */
static void dot_edges(FILE *f, const Node *n) {
  for (int k = 0; k < n->nin; k++) {
    if (!n->in[k]) continue;
    fprintf(f, "  n%d -> n%d", n->in[k]->id, n->id);
    if (n->nin > 1) fprintf(f, " [label=\"%d\", fontsize=9]", k);
    fputs(";\n", f);
  }
}

/* Outputs and the train statement as marker nodes pointing at their values. */
static void dot_markers(FILE *f, const Graph *g) {
  for (int k = 0; k < g->noutputs; k++) {
    if (!g->outputs[k].node) continue;
    fprintf(f, "  out%d [label=\"output ", k);
    dot_escape(f, g->outputs[k].name);
    fprintf(f, "\", shape=house, style=filled, fillcolor=\"#dcfce7\"];\n");
    fprintf(f, "  n%d -> out%d [style=dashed];\n", g->outputs[k].node->id, k);
  }
  if (!g->loss) return;
  const char *opt = g->optim.kind == OPTIM_SGD    ? "sgd"
                    : g->optim.kind == OPTIM_ADAM ? "adam"
                                                  : "none";
  fprintf(f, "  train [label=\"train (%s)\", shape=octagon, color=\"#dc2626\"];\n", opt);
  fprintf(f, "  n%d -> train [style=dashed, color=\"#dc2626\"];\n", g->loss->id);
}

void ir_print_dot(FILE *f, const Graph *g) {
  const char **names = ir_print_names(g);
  fputs("digraph \"", f);
  dot_escape(f, g->name ? g->name : "kiln");
  fputs("\" {\n  node [fontname=\"monospace\"];\n", f);
  for (int i = 0; i < g->nnodes; i++) dot_node(f, g, names, i);
  for (int i = 0; i < g->nnodes; i++) dot_edges(f, g->nodes[i]);
  dot_markers(f, g);
  fputs("}\n", f);
  free(names);
}
