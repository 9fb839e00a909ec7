/* llvm_backend.h - the LLVM code generator: a Graph to one LLVM module, emitted or JIT-compiled.
 *
 *   LlvmOptions o = {.opt_level = 2, .train = true};
 *   char err[512];
 *   LlvmJit *j = llvm_jit_compile(g, &o, err, sizeof err);    // g after the pipeline
 *   const kiln_model_desc *d = llvm_jit_desc(j);
 *   void *self;
 *   d->entry.create(&self, 42);
 *   int rc = ((int (*)(void *, const float *, float *))d->entry.infer)(self, x, logits);
 *   d->entry.destroy(self);
 *   llvm_jit_free(j);
 *
 * The module holds, for a model m (SPEC §3): one function per kernel
 * `void kiln_k<N>_<op>(ptr ctx, i64 begin, i64 end)`, the entry points
 * m_infer, m_train_step and m_grad, the constant descriptor m_desc and the
 * wrappers m_create, m_destroy, m_set_threads, m_load, m_save, m_param,
 * m_param_grad, m_strerror and m_describe over the runtime's kiln_rt_*.
 * The layout of the instance memory and the calling convention are in
 * docs/LLVM.md and llvm_priv.h.
 */
#ifndef KILN_LLVM_BACKEND_H
#define KILN_LLVM_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "ir.h"
#include "kiln.h"
#include "passes.h"

/* Wall-clock milliseconds of the back end's phases (kiln --time-passes). */
typedef struct LlvmTimes {
  double lower_ms;    /* kernels, entry points and descriptor to LLVM IR, verified */
  double optimize_ms; /* LLVM's default<On> pipeline */
  double codegen_ms;  /* instruction selection to an object (or assembly, or IR text) */
} LlvmTimes;

typedef struct LlvmOptions {
  int opt_level;    /* 0..3: LLVM's default<O0..O3> pipeline */
  bool train;       /* emit m_train_step and m_grad (when the graph has a loss) */
  LlvmTimes *times; /* NULL, or where the phases' times are added */
} LlvmOptions;

/* The fuse pass's view of this backend (PassCtx.target): which launches it makes of a fused
 * graph's kernels, so that the pass makes each launch a kernel of its own. */
const FuseTarget *llvm_fuse_target(void);
/* The launches of a graph's train step and other entries (each kernel of a graph fused with
 * llvm_fuse_target is one); -1 if out of memory. */
int llvm_launch_count(const Graph *g);

/* Prints the phases as rows of pass_print_times's table. */
void llvm_print_times(FILE *f, const LlvmTimes *t);

typedef enum LlvmEmitKind { LLVM_EMIT_OBJ, LLVM_EMIT_ASM, LLVM_EMIT_IR } LlvmEmitKind;

/* Writes an object file (position independent), assembly or LLVM IR text to
 * path. False with a message on an error. */
bool llvm_emit(const Graph *g, const LlvmOptions *o, LlvmEmitKind kind, const char *path, char *err,
               size_t len);
/* Object files built in parallel: the kernels split among nparts modules
 * (at most LLVM_MAX_PARTS), each optimized and compiled on a thread of its
 * own, written to paths[0..nparts); link them all. nparts: see
 * llvm_emit_parts_default (one per core). */
#define LLVM_MAX_PARTS 8
bool llvm_emit_objects(const Graph *g, const LlvmOptions *o, const char *const *paths, int nparts,
                       char *err, size_t len);
int llvm_emit_parts_default(void);
/* The same to a stream (kiln dump --stage=llvm|asm); LLVM_EMIT_OBJ is refused. */
bool llvm_print(const Graph *g, const LlvmOptions *o, LlvmEmitKind kind, FILE *out, char *err,
                size_t len);

/* A model compiled in memory by ORC LLJIT, its runtime calls bound to the
 * kiln process's own runtime. */
typedef struct LlvmJit LlvmJit;
LlvmJit *llvm_jit_compile(const Graph *g, const LlvmOptions *o, char *err, size_t len);
const kiln_model_desc *llvm_jit_desc(LlvmJit *j);
/* The address of any symbol of the compiled module, or NULL. */
void *llvm_jit_lookup(LlvmJit *j, const char *symbol);
void llvm_jit_free(LlvmJit *j);

/* header.c (the runtime engineer's): the C header of SPEC §3 for the model
 * (what `kiln compile` writes next to the .so), and the C glue that binds a
 * `kiln build` executable's generic main (runtime/kiln_main.c) to the model's
 * m_describe and m_infer. Both from the same Program as the code. */
bool llvm_write_header(const Graph *g, const LlvmOptions *o, FILE *out);
bool llvm_write_main_glue(const Graph *g, FILE *out);

/* Whether every op of ops.def has a lowering (the op table's LLVM column);
 * the first one missing in *missing. */
bool llvm_ops_complete(OpKind *missing);

#endif
