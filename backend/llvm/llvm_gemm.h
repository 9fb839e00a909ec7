/* llvm_gemm.h - the packed, register-blocked GEMM kernel template (llvm_gemm.c). */
#ifndef KILN_LLVM_GEMM_H
#define KILN_LLVM_GEMM_H

#include "llvm_priv.h"

typedef struct GemmOps GemmOps;

/* B read in place as taps (a stride-1 convolution's im2col, never packed): row p = c*taps + q
 * of B[t] is the plane at src + t*image + c*stride shifted by off[q] floats, its columns j0 ..
 * j0+VL (j0 a multiple of VL) masked by mask(q, j0): 0 outside the image and past n. */
#define GEMM_TAPS_MAX 25
typedef struct GemmTaps {
  int taps;
  LLVMValueRef src;
  int64_t image, stride;
  int64_t off[GEMM_TAPS_MAX];
  LLVMValueRef (*mask)(Lower *L, const GemmOps *g, int q, LLVMValueRef j0, int vl);
} GemmTaps;

/* A scalar operand element (f32), indices in range: A[t][i][p] or B[t][p][j]. */
typedef LLVMValueRef GemmLoad(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef x,
                              LLVMValueRef y);
/* &A[t][i][p] (indices in range). */
typedef LLVMValueRef GemmAddr(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                              LLVMValueRef p);
/* &B[t][p][0] when B's rows are contiguous in j. */
typedef LLVMValueRef GemmRow(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p);
/* B[t][p][j0 .. j0+VL) as a <VL x float> (any value for columns past n). */
typedef LLVMValueRef GemmVec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                             LLVMValueRef j0, int vl);

/* Column j of B, B[t][p0 .. p0+VL)[j], or row i of A, A[t][i][p0 .. p0+VL), as a
 * <VL x float>: lanes off in mask (past the slice's depth) 0 and not read. */
typedef LLVMValueRef GemmLanes(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef ij,
                               LLVMValueRef p0, int vl, LLVMValueRef mask);

/* v (a loaded scalar or vector of the operand) through elementwise maps the operand is read
 * through (gelu(u) recomputed instead of stored: llvm_view.c). */
typedef LLVMValueRef GemmMap(Lower *L, const GemmOps *g, LLVMValueRef v);

/* C[t] = A[t] B[t] (+ bias[i] on every row i), t < batch, A [m,k], B [k,n],
 * C the kernel's output, C[t][i][j] at (t*m + i)*n + j. The operands are
 * read only through the loaders, so any layout (transposed, broadcast,
 * im2col) is a matter of the loader; they are called while packing. */
struct GemmOps {
  int64_t batch, m, n, k;
  GemmLoad *load_a, *load_b;
  GemmAddr *a_col;  /* optional: &A[t][i][p] when A[t][i+1][p] is the next float */
  GemmAddr *a_row;  /* optional: &A[t][i][p] when A[t][i][p+1] is the next float */
  GemmLanes *a_vec; /* optional: A's rows by vectors along p (when no a_row describes them) */
  int64_t a_ld;    /* floats from A[t][i][p] to A[t][i+1][p] (a_row) or to A[t][i][p+1] (a_col) when
                    * that is one stride, else 0 */
  GemmAddr *b_col; /* optional: &B[t][p][j] (as (t, p, j)) when B[t][p+1][j] is the next float */
  GemmLanes *b_cvec; /* optional: B's columns by vectors along p (when no b_col describes them) */
  int64_t b_ld;      /* floats from B[t][p][j] to B[t][p+1][j] when b_row's rows are one stride
                        apart, else 0 */
  GemmRow *b_row;    /* optional fast paths for packing B: rows, */
  GemmVec *b_vec;    /* or vectors of a row */
  const GemmTaps *b_taps; /* optional: B's rows as taps, read in place by the micro-kernel */
  LLVMValueRef bias;      /* f32 [m] or NULL */
  bool a_shared;          /* A does not depend on t (load_a ignores it) */
  Epilogue *epi;          /* NULL, or the kernel's fused epilogue: gets C's final values */
  GemmMap *map_a, *map_b; /* NULL, or applied to every element packed (such an operand is
                             always packed, never read in place) */
  const void *user;
};

/* A contraction of depth k takes a single K slice: C is written once, never accumulated. */
bool lw_gemm_one_slice(int64_t k);
/* True when lw_gemm handles this element type and shape. */
bool lw_gemm_ok(DType dt, int64_t batch, int64_t m, int64_t n, int64_t k);
/* Emits the whole kernel body: sets k->range and k->min_chunk, opens and
 * closes the outer loop. */
void lw_gemm(Lower *L, Kernel *k, const GemmOps *g);

/* Vector helpers for GemmVec loaders (and other f32 kernels). */
LLVMValueRef lw_gemm_splat(Lower *L, LLVMTypeRef vt, LLVMValueRef x);
/* <j0, j0+1, ..., j0+vl-1> as i32 lanes. */
LLVMValueRef lw_gemm_lanes(Lower *L, LLVMValueRef j0, int vl);
/* Lanes l < left (an i64) of vl <= 64, as <vl x i1>. */
LLVMValueRef lw_gemm_lanes_below(Lower *L, int vl, LLVMValueRef left);
/* Lanes of mask loaded from base + lane (masked load) or from base[idx] (gather); 0 elsewhere. */
LLVMValueRef lw_gemm_load_masked(Lower *L, int vl, LLVMValueRef base, LLVMValueRef mask);
LLVMValueRef lw_gemm_gather(Lower *L, int vl, LLVMValueRef base, LLVMValueRef idx,
                            LLVMValueRef mask);
/* a0, b0, a1, b1, ...: two vectors of vl <= 32 lanes interleaved into 2 vl. */
LLVMValueRef lw_gemm_interleave(Lower *L, LLVMValueRef a, LLVMValueRef b);
/* The lanes of v in mask stored at base + lane. */
void lw_gemm_store_masked(Lower *L, LLVMValueRef v, LLVMValueRef base, LLVMValueRef mask);

#endif
