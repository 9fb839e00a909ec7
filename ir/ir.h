/* ir.h - Kiln's graph IR: types, nodes, graphs and the op table.
 *
 * A Graph is a list of Nodes in topological order. Every Node is one
 * operation of ir/ops.def with typed inputs, a static output Type, attributes
 * laid out by the op's schema, and the source location it came from:
 *
 *   Graph *g = ir_graph_new("tiny");
 *   Node *x = ir_node_new(g, OP_INPUT, NULL, 0, loc);
 *   x->name = "x";
 *   x->type = ir_type(DT_F32, 2, (int64_t[]){4, 8});
 *   Node *r = ir_node_new(g, OP_RELU, &x, 1, loc);
 *   if (!ir_infer_type(r, msg, sizeof msg)) ... shape error in msg ...
 *   ir_add_output(g, "y", r);
 *   ir_print(stdout, g);
 *
 * All memory belongs to the graph's arena; ir_graph_free releases it.
 */
#ifndef KILN_IR_H
#define KILN_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "diag.h"

/* ---- Types -------------------------------------------------------------- */

#define IR_MAX_RANK 8
/* Largest element count of any one tensor: keeps byte sizes far from
 * overflowing int64 everywhere downstream. */
#define IR_MAX_NUMEL ((int64_t)1 << 40)

typedef enum DType { DT_F32, DT_I32, DT_F64, DT_COUNT } DType;

typedef struct Type {
  DType dtype;
  int rank; /* 0: a scalar */
  int64_t dims[IR_MAX_RANK];
} Type;

Type ir_type(DType dt, int rank, const int64_t *dims);
const char *ir_dtype_name(DType dt); /* "f32", "i32", "f64" */
bool ir_dtype_lookup(const char *name, DType *out);
size_t ir_dtype_size(DType dt);
bool ir_dtype_is_float(DType dt);
/* Element i of data of dtype dt, as a double. */
double ir_value_at(DType dt, const void *data, int64_t i);
int64_t ir_type_numel(const Type *t); /* 1 for a scalar */
bool ir_type_eq(const Type *a, const Type *b);
/* "f32[128,784]", "f32[]"; returns buf. IR_TYPE_STR_MAX bytes always
 * suffice. */
#define IR_TYPE_STR_MAX 256
char *ir_type_str(const Type *t, char *buf, size_t len);

/* ---- The op table ------------------------------------------------------- */

typedef enum OpKind {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower) OP_##NAME,
#include "ops.def"
#undef OP
  OP_COUNT
} OpKind;

/* Classification, as TVM's fusion sees ops. */
enum {
  IR_F_SOURCE = 1 << 0,      /* no inputs: input, param, constant */
  IR_F_ELEMWISE = 1 << 1,    /* out[i] depends on in[i] only */
  IR_F_BROADCAST = 1 << 2,   /* elementwise after NumPy broadcasting */
  IR_F_INJECTIVE = 1 << 3,   /* each output element copies one input element */
  IR_F_REDUCTION = 1 << 4,   /* reduces over one or more axes */
  IR_F_ANCHOR = 1 << 5,      /* matmul, conv, lstm, pool grads: out-elementwise-fusable */
  IR_F_COMMUTATIVE = 1 << 6, /* f(a, b) == f(b, a) */
  IR_F_BACKWARD = 1 << 7,    /* made by autodiff for a gradient; never differentiated */
};

typedef enum AttrKind { ATTR_INT, ATTR_INTS, ATTR_FLOAT, ATTR_FLOATS, ATTR_NAME } AttrKind;

#define IR_MAX_ATTRS    4
#define IR_MAX_ATTR_LEN IR_MAX_RANK

typedef struct AttrSpec {
  const char *name;
  AttrKind kind;
} AttrSpec;

typedef struct OpInfo {
  const char *name; /* text IR spelling */
  int min_in, max_in;
  unsigned flags;
  int nattrs;
  AttrSpec attrs[IR_MAX_ATTRS];
} OpInfo;

const OpInfo *ir_op_info(OpKind op);
const char *ir_op_name(OpKind op);
/* OP_COUNT when the name is no op. */
OpKind ir_op_lookup(const char *name);
/* input, param and state: sources bound by name at run time. */
bool ir_op_is_named_source(OpKind op);

/* ---- Nodes -------------------------------------------------------------- */

/* One attribute value. Scalars use n == 1 and i[0] / f[0]; lists use n
 * elements (0..IR_MAX_ATTR_LEN); names use s. */
typedef struct AttrVal {
  int n;
  int64_t i[IR_MAX_ATTR_LEN];
  double f[IR_MAX_ATTR_LEN];
  const char *s;
} AttrVal;

typedef struct Node Node;
struct Node {
  OpKind op;
  int id;    /* unique in its graph, in creation order */
  Type type; /* the output */
  Node **in;
  int nin;
  Node **users; /* one entry per use: a node using this twice is here twice */
  int nusers, capusers;
  AttrVal attr[IR_MAX_ATTRS]; /* in the order of the op's schema */
  const char *name;           /* inputs and params: their name; others: the
                                 name the source bound them to, or NULL */
  Loc loc;
  void *aux; /* scratch for the pass that is running; NULL between passes */
  /* Fusion and planning (passes/fuse.c, passes/plan.c; docs/IR.md, "Kernels
   * and buffers"), meaningful once g->annot says so. */
  int kernel;     /* 0..nkernels-1, in execution order; IR_KERNEL_NONE: a named
                     source; IR_KERNEL_INLINE: recomputed by every kernel reading it */
  int64_t offset; /* planned: arena byte offset of the value's buffer (64-aligned);
                     IR_BUF_NONE: none (kept in registers, inline, a source);
                     IR_BUF_GRAD / IR_BUF_UPDATE: stored outside the arena */
};

#define IR_KERNEL_NONE   (-1)
#define IR_KERNEL_INLINE (-2)
#define IR_BUF_NONE      (-1) /* no buffer */
#define IR_BUF_GRAD      (-2) /* a gradient: written to its param's gradient block */
#define IR_BUF_UPDATE    (-3) /* an update value: written in place into its target */
#define IR_BUF_ALIGN     64   /* every arena offset and buffer size */

/* ---- Graphs ------------------------------------------------------------- */

typedef struct SizeParam {
  const char *name;
  int64_t value;
} SizeParam;

typedef struct GraphOutput {
  const char *name;
  Node *node;
} GraphOutput;

/* d loss / d param, recorded by autodiff (text IR: `grad %w = %37`). */
typedef struct GraphGrad {
  Node *param;
  Node *grad;
} GraphGrad;

/* After a train step, target (a param or a state) takes value (text IR:
 * `update %w = %52`). Every update reads the old values: all updates of a
 * step happen at once, after everything else. */
typedef struct GraphUpdate {
  Node *target;
  Node *value;
} GraphUpdate;

typedef enum OptimKind { OPTIM_NONE, OPTIM_SGD, OPTIM_ADAM } OptimKind;

/* torch.optim.SGD / torch.optim.Adam hyper-parameters. */
typedef struct Optim {
  OptimKind kind;
  double lr, momentum, weight_decay; /* sgd; adam uses lr and weight_decay */
  double beta1, beta2, eps;          /* adam */
} Optim;

typedef struct Graph {
  Arena arena;
  const char *name; /* the model's name */
  SizeParam *sizes; /* the model header's size parameters, as fixed */
  int nsizes;
  Node **nodes; /* topological order */
  int nnodes, capnodes;
  GraphOutput *outputs;
  int noutputs;
  Node *loss; /* the train statement's loss, or NULL */
  Optim optim;
  Loc train_loc;
  GraphGrad *grads; /* from passes/autodiff, in param order */
  int ngrads;
  GraphUpdate *updates; /* from passes/optimizer */
  int nupdates;
  int next_id;
  /* Which annotations the nodes carry: none, kernels (passes/fuse), or
   * kernels and buffers (passes/plan). */
  enum { IR_ANNOT_NONE, IR_ANNOT_FUSED, IR_ANNOT_PLANNED } annot;
  int nkernels;        /* fused: kernels 0..nkernels-1 */
  int64_t arena_bytes; /* planned: the arena's size, a multiple of IR_BUF_ALIGN */
} Graph;

Graph *ir_graph_new(const char *name);
void ir_graph_free(Graph *g);

/* Appends a node with the given inputs (users updated), zero attributes and
 * an unset type. */
Node *ir_node_new(Graph *g, OpKind op, Node *const *in, int nin, Loc loc);
void ir_set_input(Node *n, int i, Node *v);
/* Every use of old (including outputs and the loss) becomes a use of new. */
void ir_replace_uses(Graph *g, Node *old, Node *new_node);
/* Removes the nodes for which dead[n->id] is true; they must be unused by
 * live nodes. */
void ir_remove_nodes(Graph *g, const bool *dead);
/* Reorders g->nodes topologically, keeping the current order where legal. */
void ir_topo_sort(Graph *g);
void ir_add_output(Graph *g, const char *name, Node *n);
void ir_add_grad(Graph *g, Node *param, Node *grad);
void ir_add_update(Graph *g, Node *target, Node *value);
/* The gradient recorded for param, or NULL. */
Node *ir_find_grad(const Graph *g, const Node *param);
Node *ir_find_param(const Graph *g, const char *name);
Node *ir_find_input(const Graph *g, const char *name);
/* The input, param or state of that name, or NULL. */
Node *ir_find_named_source(const Graph *g, const char *name);

/* Attribute access by schema name; the name must be in the op's schema. */
AttrVal *ir_attr(Node *n, const char *name);
const AttrVal *ir_attr_c(const Node *n, const char *name);
int64_t ir_attr_int(const Node *n, const char *name);
double ir_attr_float(const Node *n, const char *name);
/* A sum over the last axis (of more than one element) with keepdim: its rows' sums, which
 * the fusion pass lets an epilogue over the input's rows read as a broadcast. */
bool ir_is_row_sum(const Node *n);
void ir_set_attr_int(Node *n, const char *name, int64_t v);
void ir_set_attr_ints(Node *n, const char *name, const int64_t *v, int count);
void ir_set_attr_float(Node *n, const char *name, double v);
void ir_set_attr_floats(Node *n, const char *name, const double *v, int count);
void ir_set_attr_name(Graph *g, Node *n, const char *name, const char *s);

/* ---- Shapes (ir/shape.c) ----------------------------------------------- */

/* Runs the op's shape rule: sets n->type from its inputs and attributes (for
 * sources and reshape, checks the type the builder set). On a user error,
 * returns false with a message naming the shapes involved, e.g.
 * "cannot broadcast f32[128,784] with f32[512]". */
bool ir_infer_type(Node *n, char *msg, size_t len);
/* NumPy broadcasting of two shapes; false if incompatible. */
bool ir_broadcast(const Type *a, const Type *b, Type *out);

/* ---- Text, graphs and checks ------------------------------------------- */

/* The text IR (see docs/IR.md). ir_parse(ir_print(g)) prints identically. */
void ir_print(FILE *f, const Graph *g);
/* The SSA names ir_print gives g->nodes: names[i] is node i's own name, or
 * NULL where it prints as %i. A malloc'd array of g->nnodes; free() it. */
const char **ir_print_names(const Graph *g);
/* Parses text IR; on error, reports through d and returns NULL. */
Graph *ir_parse(Diag *d, const char *text, size_t len);
/* Graphviz dot. */
void ir_print_dot(FILE *f, const Graph *g);
/* Checks every invariant (inputs precede users, users lists match inputs,
 * arities, attributes, types match the shape rules, outputs and loss belong
 * to the graph). Returns false with the first broken invariant in msg. */
bool ir_verify(const Graph *g, char *msg, size_t len);
/* XXH3-64 structural hashes: op, type, attributes and the hashes of inputs
 * (not ids, names or locations). Stable across runs and machines. */
uint64_t ir_hash_node(const Node *n, const uint64_t *input_hashes);
uint64_t ir_hash_graph(const Graph *g);

/* An internal invariant: prints "kiln: internal error: ..." and exits 70. */
_Noreturn void ir_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define IR_ASSERT(cond, ...)                                                                       \
  do {                                                                                             \
    if (!(cond)) ir_fatal(__VA_ARGS__);                                                            \
  } while (0)

#endif
