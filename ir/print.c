/* print.c - the text IR printer: one node per line, SSA names, types, locations. */
#include "ir.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The location comment's '#' goes at this byte offset of its line, so the
 * comments of a listing line up. */
#define IR_LOC_COLUMN 56

typedef struct Printer {
  FILE *f;
  const Graph *g;
  const char **names; /* by node index: the printed name, or NULL for %INDEX */
  int *index;         /* node index by id, -1 when no node has that id */
  int nindex;
  size_t col; /* bytes written on the current line */
} Printer;

/* An optimizer hyper-parameter, in print order. */
typedef struct Hyper {
  const char *name;
  size_t offset;
} Hyper;

static const Hyper ir_sgd_hyper[] = {
    {"lr", offsetof(Optim, lr)},
    {"momentum", offsetof(Optim, momentum)},
    {"weight_decay", offsetof(Optim, weight_decay)},
};
static const Hyper ir_adam_hyper[] = {
    {"lr", offsetof(Optim, lr)},
    {"beta1", offsetof(Optim, beta1)},
    {"beta2", offsetof(Optim, beta2)},
    {"eps", offsetof(Optim, eps)},
    {"weight_decay", offsetof(Optim, weight_decay)},
};

/* [A-Za-z_][A-Za-z0-9_.]*: only such names print as themselves. */
static bool ir_is_ident(const char *s) {
  if (!s || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return false;
  for (s++; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || *s == '.'))
      return false;
  return true;
}

typedef struct NameRef {
  const char *name;
  int rank; /* 0: an input or param, 1: any other node */
  int index;
} NameRef;

static int ir_cmp_nameref(const void *a, const void *b) {
  const NameRef *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  if (c) return c;
  if (x->rank != y->rank) return x->rank - y->rank;
  return (x->index > y->index) - (x->index < y->index);
}

/* Sorting by (name, rank, index) gives each name to its first user in
 * O(n log n). Inputs and params come first: they are bound by name, so an
 * earlier computed value of the same name must not take it from them. */
const char **ir_print_names(const Graph *g) {
  size_t n = (size_t)(g->nnodes > 0 ? g->nnodes : 0);
  const char **names = calloc(n ? n : 1, sizeof *names);
  NameRef *refs = malloc((n ? n : 1) * sizeof *refs);
  if (!names || !refs) ir_fatal("out of memory naming %zu nodes", n);
  size_t nrefs = 0;
  for (size_t i = 0; i < n; i++)
    if (g->nodes[i] && ir_is_ident(g->nodes[i]->name))
      refs[nrefs++] = (NameRef){g->nodes[i]->name, !ir_op_is_named_source(g->nodes[i]->op), (int)i};
  qsort(refs, nrefs, sizeof *refs, ir_cmp_nameref);
  for (size_t k = 0; k < nrefs; k++)
    if (k == 0 || strcmp(refs[k].name, refs[k - 1].name) != 0) names[refs[k].index] = refs[k].name;
  free(refs);
  return names;
}

/* Inputs are pointers; the printer needs their position in g->nodes. */
static void ir_print_index(Printer *p) {
  int maxid = -1;
  for (int i = 0; i < p->g->nnodes; i++)
    if (p->g->nodes[i] && p->g->nodes[i]->id > maxid) maxid = p->g->nodes[i]->id;
  p->nindex = maxid + 1;
  p->index = malloc((size_t)(p->nindex ? p->nindex : 1) * sizeof *p->index);
  if (!p->index) ir_fatal("out of memory indexing %d nodes", p->nindex);
  for (int i = 0; i < p->nindex; i++) p->index[i] = -1;
  for (int i = 0; i < p->g->nnodes; i++)
    if (p->g->nodes[i] && p->g->nodes[i]->id >= 0) p->index[p->g->nodes[i]->id] = i;
}

static void ir_out(Printer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ir_out(Printer *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vfprintf(p->f, fmt, ap);
  va_end(ap);
  if (k > 0) p->col += (size_t)k;
}

/* A broken graph still prints: a value outside it shows as %?ID. */
static void ir_print_ref(Printer *p, const Node *v) {
  int i = v && v->id >= 0 && v->id < p->nindex ? p->index[v->id] : -1;
  if (i < 0 || p->g->nodes[i] != v)
    ir_out(p, "%%?%d", v ? v->id : -1);
  else if (p->names[i])
    ir_out(p, "%%%s", p->names[i]);
  else
    ir_out(p, "%%%d", i);
}

/* The shortest %g form strtod reads back to the same double. */
static void ir_fmt_double(char *buf, size_t len, double v) {
  if (isnan(v)) {
    snprintf(buf, len, "nan");
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

static void ir_print_double(Printer *p, double v) {
  char buf[40];
  ir_fmt_double(buf, sizeof buf, v);
  ir_out(p, "%s", buf);
}

static int ir_clamp_len(int n) { return n < 0 ? 0 : n > IR_MAX_ATTR_LEN ? IR_MAX_ATTR_LEN : n; }

static void ir_print_attr(Printer *p, AttrKind kind, const AttrVal *a) {
  int n = ir_clamp_len(a->n);
  switch (kind) {
  case ATTR_INT:
    ir_out(p, "%lld", (long long)a->i[0]);
    break;
  case ATTR_FLOAT:
    ir_print_double(p, a->f[0]);
    break;
  case ATTR_NAME:
    ir_out(p, "%s", a->s ? a->s : "");
    break;
  case ATTR_INTS:
    ir_out(p, "[");
    for (int i = 0; i < n; i++) ir_out(p, "%s%lld", i ? ", " : "", (long long)a->i[i]);
    ir_out(p, "]");
    break;
  case ATTR_FLOATS:
    ir_out(p, "[");
    for (int i = 0; i < n; i++) {
      if (i) ir_out(p, ", ");
      ir_print_double(p, a->f[i]);
    }
    ir_out(p, "]");
    break;
  }
}

/* " {name=value, ...}" with every attribute of the schema, in its order. */
static void ir_print_attrs(Printer *p, const Node *n) {
  const OpInfo *info = ir_op_info(n->op);
  if (info->nattrs == 0) return;
  ir_out(p, " {");
  for (int i = 0; i < info->nattrs && i < IR_MAX_ATTRS; i++) {
    ir_out(p, "%s%s=", i ? ", " : "", info->attrs[i].name);
    ir_print_attr(p, info->attrs[i].kind, &n->attr[i]);
  }
  ir_out(p, "}");
}

/* The trailing "# FILE:LINE:COL", then the end of the line. */
static void ir_print_loc_eol(Printer *p, Loc loc) {
  if (loc.line > 0) {
    size_t pad = p->col + 2 <= IR_LOC_COLUMN ? IR_LOC_COLUMN - p->col : 2;
    fprintf(p->f, "%*s# %s:%d:%d", (int)pad, "", loc.file ? loc.file : "", loc.line, loc.col);
  }
  fputc('\n', p->f);
  p->col = 0;
}

/* annot = "[" ("k" INT | "inline") ["@" (INT "+" INT | "grad" | "update")] "]", on every node
 * but a named source once the graph is fused (docs/IR.md, "Kernels and buffers"). */
static void ir_print_annot(Printer *p, const Node *n) {
  if (p->g->annot == IR_ANNOT_NONE || ir_op_is_named_source(n->op)) return;
  if (n->kernel >= 0)
    ir_out(p, " [k%d", n->kernel);
  else
    ir_out(p, " [%s", n->kernel == IR_KERNEL_INLINE ? "inline" : "k?");
  if (p->g->annot == IR_ANNOT_PLANNED && n->offset >= 0)
    ir_out(p, " @%lld+%lld", (long long)n->offset,
           (long long)(ir_type_numel(&n->type) * (int64_t)ir_dtype_size(n->type.dtype)));
  else if (p->g->annot == IR_ANNOT_PLANNED && n->offset == IR_BUF_GRAD)
    ir_out(p, " @grad");
  else if (p->g->annot == IR_ANNOT_PLANNED && n->offset == IR_BUF_UPDATE)
    ir_out(p, " @update");
  ir_out(p, "]");
}

/* node = "%" name "=" op [value ("," value)*] ["{" attrs "}"] ":" type [annot] */
static void ir_print_node(Printer *p, int i) {
  const Node *n = p->g->nodes[i];
  char ty[IR_TYPE_STR_MAX];
  ir_out(p, "  ");
  ir_print_ref(p, n);
  ir_out(p, " = %s", ir_op_name(n->op));
  for (int k = 0; k < n->nin; k++) {
    ir_out(p, k ? ", " : " ");
    ir_print_ref(p, n->in[k]);
  }
  ir_print_attrs(p, n);
  ir_out(p, " : %s", ir_type_str(&n->type, ty, sizeof ty));
  ir_print_annot(p, n);
  ir_print_loc_eol(p, n->loc);
}

/* header = "graph" name ["(" size "=" int ("," size "=" int)* ")"] "{" */
static void ir_print_header(Printer *p) {
  const Graph *g = p->g;
  ir_out(p, "graph %s", g->name ? g->name : "_");
  for (int i = 0; i < g->nsizes; i++)
    ir_out(p, "%s%s=%lld", i ? ", " : "(", g->sizes[i].name ? g->sizes[i].name : "",
           (long long)g->sizes[i].value);
  ir_out(p, "%s {\n", g->nsizes > 0 ? ")" : "");
  p->col = 0;
}

/* train = "train" "%" name [optimizer "{" hyper "}"] */
static void ir_print_train(Printer *p) {
  const Optim *o = &p->g->optim;
  const Hyper *hy = o->kind == OPTIM_SGD ? ir_sgd_hyper : ir_adam_hyper;
  size_t nhy = o->kind == OPTIM_SGD    ? sizeof ir_sgd_hyper / sizeof *hy
               : o->kind == OPTIM_ADAM ? sizeof ir_adam_hyper / sizeof *hy
                                       : 0;
  ir_out(p, "  train ");
  ir_print_ref(p, p->g->loss);
  if (o->kind != OPTIM_NONE) ir_out(p, " %s {", o->kind == OPTIM_SGD ? "sgd" : "adam");
  for (size_t i = 0; i < nhy; i++) {
    double v;
    memcpy(&v, (const char *)o + hy[i].offset, sizeof v);
    ir_out(p, "%s%s=", i ? ", " : "", hy[i].name);
    ir_print_double(p, v);
  }
  if (o->kind != OPTIM_NONE) ir_out(p, "}");
  ir_print_loc_eol(p, p->g->train_loc);
}

void ir_print(FILE *f, const Graph *g) {
  Printer p = {.f = f, .g = g};
  p.names = ir_print_names(g);
  ir_print_index(&p);
  ir_print_header(&p);
  /* kernels = ("fused" | "planned") "{" "kernels" "=" INT ["," "arena" "=" INT] "}" */
  if (g->annot == IR_ANNOT_FUSED) fprintf(f, "  fused {kernels=%d}\n", g->nkernels);
  if (g->annot == IR_ANNOT_PLANNED)
    fprintf(f, "  planned {kernels=%d, arena=%lld}\n", g->nkernels, (long long)g->arena_bytes);
  for (int i = 0; i < g->nnodes; i++) ir_print_node(&p, i);
  for (int i = 0; i < g->noutputs; i++) {
    ir_out(&p, "  output %s = ", g->outputs[i].name ? g->outputs[i].name : "");
    ir_print_ref(&p, g->outputs[i].node);
    ir_print_loc_eol(&p, (Loc){0});
  }
  if (g->loss) ir_print_train(&p);
  for (int i = 0; i < g->ngrads; i++) {
    ir_out(&p, "  grad ");
    ir_print_ref(&p, g->grads[i].param);
    ir_out(&p, " = ");
    ir_print_ref(&p, g->grads[i].grad);
    ir_print_loc_eol(&p, (Loc){0});
  }
  for (int i = 0; i < g->nupdates; i++) {
    ir_out(&p, "  update ");
    ir_print_ref(&p, g->updates[i].target);
    ir_out(&p, " = ");
    ir_print_ref(&p, g->updates[i].value);
    ir_print_loc_eol(&p, (Loc){0});
  }
  fputs("}\n", f);
  free(p.names);
  free(p.index);
}
