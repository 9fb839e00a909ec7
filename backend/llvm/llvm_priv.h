/* llvm_priv.h - what the LLVM backend's files share: the program (kernels, layout), the lowering
 * context, IR helpers. */
#ifndef KILN_LLVM_PRIV_H
#define KILN_LLVM_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "llvm_backend.h"

/* ---- Layout: where every value lives ------------------------------------
 * One instance block (kiln_instance.mem), 64-byte aligned throughout:
 *   params (declaration order) | their gradients | optimizer state |
 *   arena: every computed value, then kernel scratch, then update snapshots.
 * Inputs live in caller memory (entry arguments); so do the outputs of
 * m_infer, which kernels write directly. The planner replaces
 * llvm_layout_compute to reuse arena space. */
typedef struct Layout {
  uint64_t mem_bytes;
  uint64_t arena_offset, arena_bytes;
  int64_t *offset;      /* by node id: byte offset of its value in mem; -1: none (inputs) */
  int64_t *grad_offset; /* by node id: a param's gradient; -1 */
  int64_t *snap_offset; /* by update: where a source value is copied before updates; -1 */
} Layout;

/* A kernel: a list of nodes run by one outlined function
 * kiln_k<N>_<op>(ctx, begin, end) over iterations [begin, end) of its outer
 * loop. One node per kernel for now; the fusion pass will group several.
 * ctx is an array of pointers: args..., out, &instance.status, scratch. */
typedef struct Kernel {
  int index;
  Node **nodes; /* in execution order */
  int nnodes;
  Node *out;   /* the value the kernel writes */
  Node **args; /* the values it reads, one ctx slot each */
  int nargs;
  /* Planned graphs (llvm_layout.c, "Planned programs"): one fusion group
   * becomes one or more of these launches, run in order. */
  Node **group; /* the fusion group's nodes: the entry points run the launch if they need one */
  int ngroup;
  int64_t *at; /* NULL, or by buffer (args..., out): a byte offset in mem (kernel scratch)
                  overriding the node's home; -1: its home */
  Node **view; /* NULL, or by arg: the top of an inline view chain the GEMM reads in
                  place (args[i] is the chain's source; matmul only, llvm_view.c) */
  Node **via;  /* NULL, or by arg: the source whose place args[i], a contiguous inline
                  view of it, is read at (shift[i] bytes further) */
  int64_t *shift;
  bool fused; /* an elementwise chain in one loop (lower_fused): nodes = the chain;
                 args = the nreads values read from memory, then outputs after the first */
  int nreads;
  int nepi; /* an anchor (nodes[0], the GEMM of a matmul or conv2d) with a fused
               epilogue: nodes[1..nnodes) evaluated on its output in registers before
               anything is stored; args = the anchor's operands, then nreads values
               the chain reads (from epi_args), then outputs after out (the anchor) */
  int epi_args;
  int npro;     /* an anchor (nodes[0]: a row kernel, or a sum / mean / max over runs of whole
                   rows: llvm_prologue_anchor) with a fused prologue: nodes[1..1+npro)
                   compute its input x (args[0]) row by row into x's home, or into a row on the
                   stack when nothing else reads x (pro_stack); args = the anchor's operands,
                   then nreads values the prologue reads (from epi_args), then its other
                   stored nodes */
  int pro_outs; /* with a prologue: its stored nodes, the first of the outputs (an anchor with
                   both, a reduction's output-space epilogue after them: llvm_reduce_out_epi) */
  bool pro_stack;
  bool x_embed;       /* lstm, lstm_grad: x is an inline embedding read row by row from its table:
                         args[0] is its ids, args[nargs - 1] the table (llvm_lower_lstm.c) */
  bool dy_pad;        /* lstm_grad: dy is an inline pad along time, read through it from its source
                         (args[5]) */
  bool anchor_store;  /* with an epilogue: the anchor's own value is needed later */
  bool writes_update; /* writes an update target in place: m_train_step skips it after an error */
  char name[80];
  int64_t range;     /* iterations of the outer loop */
  int64_t min_chunk; /* fewest iterations worth a thread */
  int64_t scratch_offset, scratch_bytes;
  LLVMValueRef fn;     /* the outlined function */
  struct Kernel *twin; /* NULL, or an earlier kernel whose function is identical to this
                          one's: the entry points call that one instead (llvm_emit.c) */
} Kernel;

/* Which entry point runs what. */
typedef enum EntryKind { ENTRY_INFER, ENTRY_GRAD, ENTRY_TRAIN, ENTRY_COUNT } EntryKind;

typedef struct Program {
  const Graph *g;
  LlvmOptions opts;
  Kernel *kernels;
  int nkernels, capkernels;
  bool planned;          /* built from the fusion groups and the plan */
  int64_t tape_bytes;    /* planned: the scratch of lstm/lstm_grad pairs, after the arena */
  int64_t scratch_bytes; /* planned: kernel scratch after those (the largest group's) */
  void **owned;          /* blocks freed with the program */
  int nowned, capowned;
  Layout layout;
  Node **inputs, **params, **states; /* declaration order */
  int ninputs, nparams, nstates;
  bool has_train;                 /* a loss with gradients: m_grad and m_train_step exist */
  bool *runs[ENTRY_COUNT];        /* by kernel index: the entry runs it */
  int *entry_inputs[ENTRY_COUNT]; /* indices into inputs, declaration order */
  int nentry_inputs[ENTRY_COUNT];
} Program;

/* Builds the kernels, layout and entry subsets; false only when out of memory. */
bool llvm_program_build(Program *p, const Graph *g, const LlvmOptions *o);
void llvm_program_free(Program *p);
/* Scratch bytes a kernel of this op needs (lstm, lstm_grad), given its node. */
int64_t llvm_scratch_bytes(const Graph *g, const Node *n);
/* lstm and lstm_grad (llvm_lower_lstm.c): scratch bytes (tape: an lstm writing the tape its
 * lstm_grad reads, in lstm_grad's layout); the lstm_grad over the same x and weights as lstm
 * n, or the lstm of lstm_grad n, when there is exactly one: the two share one scratch area
 * that lives from the forward to the backward. */
int64_t llvm_lstm_scratch_bytes(const Node *n, bool tape);
const Node *llvm_lstm_pair(const Graph *g, const Node *n);

/* ---- Lowering ----------------------------------------------------------- */

typedef struct Lower {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef i1, i8, i32, i64, f32, f64, ptr, voidt;
  Program *p;
  bool avx512;
  bool no_unroll; /* loops closed by lw_next carry llvm.loop.unroll.disable (GEMM kernels: their
                     micro-kernels are unrolled already; LLVM's unrolling only adds code) */
  /* The kernel being lowered: its inner function's pointer arguments
   * (args..., out, status, scratch; noalias) and iteration bounds. */
  Kernel *k;
  LLVMValueRef fn, *bufs, begin, end;
  LLVMBasicBlockRef entry_bb;
} Lower;

typedef void LowerFn(Lower *L, Kernel *k);

/* The op table's LLVM column (llvm_lower.c). */
LowerFn *llvm_lowering(OpKind op);

/* Lowering functions, by family. */
LowerFn lower_source, lower_const, lower_causal_mask, lower_map, lower_reduce, lower_softmax,
    lower_layer_norm, lower_pool2d, lower_matmul, lower_conv2d, lower_lstm, lower_copy,
    lower_gather, lower_pad, lower_concat, lower_embedding, lower_mse_loss, lower_cross_entropy,
    lower_bce, lower_layer_norm_grad, lower_conv2d_grad_input, lower_conv2d_grad_weight,
    lower_max_pool2d_grad, lower_avg_pool2d_grad, lower_embedding_grad, lower_lstm_grad,
    lower_cross_entropy_grad, lower_fused;
/* Epilogues (llvm_lower_fused.c): nodes after an anchor (a GEMM, a row
 * kernel, a pooling gradient) evaluated on vectors of its output. The
 * anchor's output [..., n] is seen as rows of n columns, n the product of its
 * last ntrail dims (1: matmul, layer_norm; 2: conv2d's and a pooling
 * gradient's H*W). llvm_epilogue_ok: the chain seg (elementwise, f32, the
 * anchor's dims or reshapes of them, which are stored at the same flat index
 * but never read in the loop) can be, its reads (values not evaluated in the
 * loop: loop_node false) broadcasting along whole rows or with one stride
 * along a row. */
typedef struct Epilogue Epilogue;
int llvm_epilogue_trail(const Node *anchor); /* 0: not an anchor with an epilogue */
/* The chain's iteration space: the anchor's type; for a sum of the last axis
 * with keepdim, its input's (the chain sees the row's sum in every lane; the
 * sum itself is stored by its kernel, not by lw_epilogue_store). */
const Type *llvm_epilogue_space(const Node *anchor);
bool llvm_epilogue_loop_node(const Node *anchor, const Node *n);
bool llvm_epilogue_ok(const Node *anchor, Node *const *seg, int nseg);
Epilogue *lw_epilogue_new(Lower *L, Kernel *k, int vl);
/* Evaluates the chain at row rowflat, columns [j0, j0+VL) (lanes off in mask
 * skipped) given the anchor's vector v there, and stores every output. */
void lw_epilogue_store(Epilogue *e, LLVMValueRef rowflat, LLVMValueRef j0, LLVMValueRef mask,
                       LLVMValueRef v);
void lw_epilogue_free(Epilogue *e);
/* A rough cost per element of the chain (1 per arithmetic op, more for exp, gelu, ...). */
int64_t lw_epilogue_cost(const Epilogue *e);
/* Prologues (llvm_lower_fused.c): an elementwise chain seg computing a row kernel's input x
 * (anchor->in[0], f32, rows of its last dim), evaluated row by row in the kernel with the
 * epilogues' vector evaluator: inline elementwise nodes and embeddings of x's dims are
 * evaluated, other values read (any broadcast). llvm_prologue_anchor: the anchor takes one
 * (layer_norm, softmax and log_softmax over the last axis, cross_entropy's logits; a sum, mean or
 * max over runs of whole rows: llvm_reduce_runs). */
bool llvm_prologue_anchor(const Node *anchor);
bool llvm_reduce_runs(const Node *n); /* llvm_lower_reduce.c */
/* A sum, mean or max over the innermost dims (f32) other than a row sum: it takes an epilogue
 * over its output's space, evaluated per output element right after the element is reduced,
 * also beside a prologue (llvm_lower_reduce.c). */
bool llvm_reduce_out_epi(const Node *n);
bool llvm_prologue_loop_node(const Node *x, const Node *n);
bool llvm_prologue_ok(const Node *anchor, Node *const *seg, int nseg);
Epilogue *lw_prologue_new(Lower *L, Kernel *k, int vl);
/* Evaluates the prologue over row rowflat (d columns) of x's space: x into dst (the row's
 * first element), the other stored nodes into their homes. */
void lw_prologue_row(Epilogue *e, LLVMValueRef rowflat, int64_t d, LLVMValueRef dst);
/* A max_pool2d_grad or avg_pool2d_grad that hands its dx planes to an epilogue (f32, a plane
 * small enough to accumulate on the stack; llvm_lower_reduce.c). */
bool llvm_pool_grad_epilogue(const Node *n);
/* Matmul node n lowers to the GEMM template (so it can read operands through permutes). */
bool llvm_matmul_gemm(const Node *n);
/* The GEMM of matmul n can read its operand i, an inline view, in place (llvm_view.c). */
bool llvm_matmul_view_ok(const Node *n, int i);
bool llvm_conv2d_gemm(const Node *n);
bool llvm_conv2d_grad_input_gemm(const Node *n);
/* The contraction depth K of a GEMM anchor (matmul, conv2d, conv2d_grad_input). */
int64_t llvm_gemm_depth(const Node *n);
/* permute, slice, broadcast: element idx of n reads n->in[0] at base + sum_d idx_d st[d];
 * returns base (llvm_lower_data.c). */
int64_t llvm_gather_strides(const Node *n, int64_t *st);
/* Inline data movement a fused loop evaluates by index (permute, slice, broadcast, pad). */
bool llvm_fused_gather(const Node *n);
/* Elementwise ops lower_fused evaluates in registers (lw_map_value's, and reshape). */
bool llvm_fusable_op(OpKind op);

/* ---- IR helpers (llvm_ir.c) --------------------------------------------- */

LLVMTypeRef lw_elt(Lower *L, DType dt);
LLVMValueRef lw_i64(Lower *L, int64_t v);
LLVMValueRef lw_i32(Lower *L, int32_t v);
LLVMValueRef lw_fc(Lower *L, LLVMTypeRef ty, double v);
LLVMValueRef lw_gep(Lower *L, LLVMTypeRef ty, LLVMValueRef base, LLVMValueRef idx);
LLVMValueRef lw_load(Lower *L, LLVMTypeRef ty, LLVMValueRef base, LLVMValueRef idx);
void lw_store(Lower *L, LLVMTypeRef ty, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v);
/* Kernel buffers: input i, the output, the scratch block. */
LLVMValueRef lw_in(Lower *L, int i);
LLVMValueRef lw_out(Lower *L);
LLVMValueRef lw_scratch(Lower *L);
/* Stores KILN_ERR_RANGE into the instance's status (atomically: threads may race). */
void lw_range_error(Lower *L);
/* Buffer arg's i32 element p (an id or a label) as i64, and whether it lies outside [0, limit). */
LLVMValueRef lw_load_index(Lower *L, int arg, LLVMValueRef p, int64_t limit, LLVMValueRef *bad);

/* for (i = from; i < to; i++): lw_for returns i and leaves the builder in
 * the body; lw_next closes the loop and leaves it after. */
typedef struct LwLoop {
  LLVMBasicBlockRef head, exit;
  LLVMValueRef i;
} LwLoop;
LLVMValueRef lw_for(Lower *L, LwLoop *lp, LLVMValueRef from, LLVMValueRef to);
void lw_next(Lower *L, LwLoop *lp);
/* The kernel's own outer loop over [begin, end). */
LLVMValueRef lw_outer(Lower *L, LwLoop *lp);

/* if (cond) { ... } [else { ... }] */
typedef struct LwIf {
  LLVMBasicBlockRef then_bb, else_bb, done;
} LwIf;
void lw_if(Lower *L, LwIf *c, LLVMValueRef cond);
void lw_else(Lower *L, LwIf *c);
void lw_endif(Lower *L, LwIf *c);

/* An array of count elements of type elt on the stack, 64-byte aligned, allocated in the
 * kernel's entry block (packing buffers, tiles). */
LLVMValueRef lw_stack(Lower *L, LLVMTypeRef elt, int64_t count);
/* A new private constant global of the module holding init (unnamed_addr). */
LLVMValueRef lw_private_constant(Lower *L, LLVMValueRef init, const char *name);
/* A mutable local (an alloca in the entry block; SROA makes it a register). */
LLVMValueRef lw_var(Lower *L, LLVMTypeRef ty, LLVMValueRef init);
LLVMValueRef lw_get(Lower *L, LLVMTypeRef ty, LLVMValueRef var);
void lw_set(Lower *L, LLVMValueRef var, LLVMValueRef v);

/* Integer arithmetic on i64. */
LLVMValueRef lw_add(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_mul(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_addc(Lower *L, LLVMValueRef a, int64_t c);
LLVMValueRef lw_mulc(Lower *L, LLVMValueRef a, int64_t c);
LLVMValueRef lw_divc(Lower *L, LLVMValueRef a, int64_t c); /* a >= 0 */
LLVMValueRef lw_remc(Lower *L, LLVMValueRef a, int64_t c); /* a >= 0 */
LLVMValueRef lw_smax(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_smin(Lower *L, LLVMValueRef a, LLVMValueRef b);
/* sum_d idx_d * stride[d], idx the C-order multi-index of flat over dims. */
LLVMValueRef lw_offset(Lower *L, LLVMValueRef flat, int rank, const int64_t *dims,
                       const int64_t *stride);

/* Float arithmetic, contraction (FMA) allowed; the _r forms also allow
 * reassociation, for reductions the vectorizer may reorder. */
LLVMValueRef lw_fadd(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_fsub(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_fmul(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_fdiv(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_fadd_r(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_fneg(Lower *L, LLVMValueRef a);
LLVMValueRef lw_select(Lower *L, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_fcmp(Lower *L, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_isnan(Lower *L, LLVMValueRef x);
/* max/min propagating NaN as torch.maximum: a > b ? a : b, NaN if either is. */
LLVMValueRef lw_fmax_nan(Lower *L, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef lw_fmin_nan(Lower *L, LLVMValueRef a, LLVMValueRef b);
/* acc' = x > acc || isnan(x) ? x : acc (the interpreter's running max). */
LLVMValueRef lw_max_step(Lower *L, LLVMValueRef acc, LLVMValueRef x);
LLVMValueRef lw_fconv(Lower *L, LLVMValueRef x, LLVMTypeRef to);
/* A call to an overloaded intrinsic such as "llvm.sqrt" on x's type. */
LLVMValueRef lw_intrinsic1(Lower *L, const char *name, LLVMValueRef x);
LLVMValueRef lw_intrinsic2(Lower *L, const char *name, LLVMValueRef x, LLVMValueRef y);
/* v[r][c] becomes v[c][r] for w vectors of w lanes (w a power of 2; llvm_lower_data.c). */
void lw_transpose_tile(Lower *L, LLVMValueRef *v, unsigned w);
/* memset(dst, 0, bytes); memcpy(dst, src, bytes). */
void lw_zero(Lower *L, LLVMValueRef dst, LLVMValueRef bytes);
void lw_copy(Lower *L, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef bytes);

/* ---- Views and constants (llvm_view.c) ------------------------------------ */

#define VIEW_MAX_ATOMS 24
/* An inline chain of reshapes, permutes and slices over src: top element
 * (x_0, ..., x_rank-1) is src's element offset + sum_d digits of x_d, dim d
 * owning atoms [first[d], first[d+1]) (sizes and strides in elements,
 * innermost last). */
#define VIEW_MAX_MAPS 4
typedef struct View {
  const Node *src;
  int64_t offset;
  int rank, natoms;
  int64_t size[VIEW_MAX_ATOMS], stride[VIEW_MAX_ATOMS];
  int first[IR_MAX_RANK + 1];
  /* Unary elementwise ops in the chain (gelu(u) that fuse.c leaves to the GEMM reading it),
   * applied to every element loaded, maps[0] first; they commute with the moves. */
  const Node *maps[VIEW_MAX_MAPS];
  int nmaps;
} View;
/* n is an inline reshape, permute or slice (of the same element type), or an inline unary
 * elementwise op a GEMM applies while packing (llvm_view_map_op). */
bool llvm_view_map_op(OpKind op);
/* v through the chain's maps, source first. */
LLVMValueRef lw_view_maps(Lower *L, const View *v, LLVMValueRef x);
bool llvm_view_node(const Node *n);
/* The chain from top down to the first node that is not one; false when top
 * is not a view node or no atoms describe the chain. */
bool llvm_view_of(const Node *top, View *v);
/* A value read as it is: one atom per dim, C order. */
void llvm_view_plain(const Type *t, View *v);
/* The top's elements are src's elements offset, offset+1, ... in order. */
bool llvm_view_contiguous(const View *v);
/* Dim d is one stride (0 when it has size 1): *stride; false when split. */
bool llvm_view_single(const View *v, int d, int64_t *stride);
/* The offset (elements) of digit x of dim d. */
LLVMValueRef lw_view_digit(Lower *L, const View *v, int d, LLVMValueRef x);
/* An inline const or causal_mask small enough to be a constant array of the
 * module: kernels read it there, no launch computes it. */
bool llvm_const_global(const Node *n);
LLVMValueRef lw_const_global(Lower *L, const Node *n);

/* ---- Vector math (llvm_math.c): f32 inline polynomials, f64 libm ---------- */

LLVMValueRef lw_exp(Lower *L, LLVMValueRef x);
LLVMValueRef lw_log(Lower *L, LLVMValueRef x);
LLVMValueRef lw_tanh(Lower *L, LLVMValueRef x);
LLVMValueRef lw_sigmoid(Lower *L, LLVMValueRef x);
LLVMValueRef lw_erf(Lower *L, LLVMValueRef x);
LLVMValueRef lw_gelu(Lower *L, LLVMValueRef x);
LLVMValueRef lw_sqrt(Lower *L, LLVMValueRef x);
LLVMValueRef lw_pow(Lower *L, LLVMValueRef x, double c);
/* Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal CDF, without cancellation for x < 0. */
LLVMValueRef lw_normal_cdf(Lower *L, LLVMValueRef x);
LLVMValueRef lw_gelu_grad(Lower *L, LLVMValueRef x, LLVMValueRef dy); /* dy (Phi(x) + x phi(x)) */

/* ---- Elementwise op bodies (llvm_lower_map.c) ---------------------------- */

/* The value of elementwise op n on operand values x[] (in n's float type). */
LLVMValueRef lw_map_value(Lower *L, const Node *n, LLVMValueRef *x);
/* Rough cost of one element of an elementwise op (1 per arithmetic op, more for exp, gelu),
 * for chunk sizes and for how GEMM epilogues are laid out. */
int64_t llvm_map_cost(OpKind op);

/* ---- Modules (llvm_codegen.c) ------------------------------------------- */

/* Every LLVM reference the backend creates, created and disposed in one pair
 * of functions. */
typedef struct LlvmModule {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMTargetMachineRef tm;
  Program prog;
  bool owns_ctx;    /* false when the JIT's thread-safe context made it */
  bool owns_module; /* false once handed to the JIT */
  bool avx512;      /* the host has AVX-512: prefer 512-bit vectors */
} LlvmModule;

/* Lowers g into m->mod (in m->ctx if set, else a fresh context), verified and optimized at
 * o->opt_level; false with a message on an error. pic: position independent (objects for .so). */
bool llvm_module_build(LlvmModule *m, const Graph *g, const LlvmOptions *o, bool pic, char *err,
                       size_t len);
/* llvm_module_build in steps, for code generation split across modules
 * (llvm_emit.c): begin (a context, module and target machine; the program
 * built unless shared, another module's), lower kernels (those with mine[k],
 * or all; external: hidden symbols other modules call), lower entries (the
 * entry points and descriptor, declaring the kernels not mine), finish
 * (verify, optimize; lower_t0 the lowering's start for o->times). */
bool llvm_module_begin(LlvmModule *m, const Graph *g, const LlvmOptions *o, Program *shared,
                       bool pic, char *err, size_t len);
void llvm_module_lower_kernels(LlvmModule *m, Program *p, const bool *mine, bool external);
void llvm_module_lower_entries(LlvmModule *m, const bool *mine);
bool llvm_module_finish(LlvmModule *m, const LlvmOptions *o, double lower_t0, char *err,
                        size_t len);
/* Position-independent objects of g in nparts modules built in parallel
 * (llvm_emit.c): objs[0..n) (data freed by the caller), n the count used
 * (nparts clamped to [1, LLVM_MAX_PARTS]); 0 with a message on an error. */
typedef struct LlvmObject {
  char *data;
  size_t size;
} LlvmObject;
int llvm_build_objects(const Graph *g, const LlvmOptions *o, int nparts, LlvmObject *objs,
                       char *err, size_t len);
void llvm_module_dispose(LlvmModule *m);
/* A monotonic clock in milliseconds (phase times). */
double llvm_now_ms(void);

#endif
