/* llvm_gemm.c - the GEMM kernel template: packed operands, cache blocking, a
 * register-blocked micro-kernel of explicit vector FMAs.
 *
 * One outer iteration computes a block of C: batch t, rows [i0, i0+MC),
 * columns [j0, j0+NC). For every KC slice of the contraction A's block is
 * packed into MR-row micro-panels (apack: [g][r][p] when A's rows are
 * contiguous, so packing is vector copies; else [g][p][r]) and B's into
 * NR-column micro-panels (bpack[g][p][c]; transposed in registers when B's
 * columns are contiguous), both on the stack, then the micro-kernel runs on
 * every (MR x NR) tile: MR x NV accumulators of VL lanes (NR = NV*VL), one
 * vector load of B per lane group and one broadcast of A per row each step
 * of p. Consecutive iterations of a thread that share a row block (or a
 * column block) pack that operand once for all of them. The first slice
 * stores acc (+ bias), later ones add to C; with a fused epilogue, the last
 * slice hands C's final value to it in registers instead of storing it. Rows
 * past m and columns past n are packed from clamped (valid) indices and never
 * stored: row stores are guarded, column stores masked. A stride-1
 * convolution's B (im2col rows: shifted input planes) can instead be read in
 * place by the micro-kernel, tap by tap under constant masks (b_taps).
 *
 * AVX-512: VL = 16, NR = 32 (two zmm), MR = 12: 24 accumulators + 2 B
 * vectors + a broadcast of 32 zmm. Narrow n (<= VL): NV = 1, MR = 16.
 * KC <= 256: a micro-panel of A (12 KiB) or B (32 KiB) stays in a 48 KiB L1
 * while the tile loop streams the other; MC <= 192 rows and NC <= 512
 * columns keep A's block (192 KiB) and B's (512 KiB) in a 2 MiB L2. */
#include "llvm_gemm.h"

#include <math.h>
#include <string.h>

#define GEMM_KC            256
#define GEMM_MC_PANELS     16
#define GEMM_NC_PANELS     16
#define GEMM_MIN_ITERS     8
#define GEMM_ASHARED_BYTES (256 * 1024)
#define GEMM_NV_MAX        8 /* vectors per tile row (transposed skinny tiles) */
/* Epilogues costing more per element (llvm_lower_fused.c's estimate) run in
 * a loop over the tile's rows instead of unrolled for each of them. */
#define GEMM_EPI_UNROLL_COST 8

bool lw_gemm_one_slice(int64_t k) { return k <= GEMM_KC; }

bool lw_gemm_ok(DType dt, int64_t batch, int64_t m, int64_t n, int64_t k) {
  return dt == DT_F32 && batch > 0 && m > 0 && n > 0 && k > 0;
}

static LLVMValueRef call_intrinsic(Lower *L, const char *name, LLVMTypeRef *over, int nover,
                                   LLVMValueRef *args, int nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  IR_ASSERT(id != 0, "llvm: no intrinsic %s", name);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(L->mod, id, over, (size_t)nover);
  LLVMTypeRef ft = LLVMIntrinsicGetType(L->ctx, id, over, (size_t)nover);
  return LLVMBuildCall2(L->b, ft, f, args, (unsigned)nargs, "");
}

LLVMValueRef lw_gemm_splat(Lower *L, LLVMTypeRef vt, LLVMValueRef x) {
  unsigned n = LLVMGetVectorSize(vt);
  LLVMValueRef v = LLVMBuildInsertElement(L->b, LLVMGetPoison(vt), x, lw_i32(L, 0), "");
  LLVMValueRef mask = LLVMConstNull(LLVMVectorType(L->i32, n));
  return LLVMBuildShuffleVector(L->b, v, LLVMGetPoison(vt), mask, "");
}

/* Lanes l < left (an i64): icmp sgt splat(left), <0, 1, ...>. */
LLVMValueRef lw_gemm_lanes_below(Lower *L, int vl, LLVMValueRef left) {
  LLVMValueRef lanes[64];
  IR_ASSERT(vl <= 64, "llvm: %d lanes", vl);
  for (int l = 0; l < vl; l++) lanes[l] = lw_i32(L, l);
  LLVMTypeRef it = LLVMVectorType(L->i32, (unsigned)vl);
  return LLVMBuildICmp(L->b, LLVMIntSGT,
                       lw_gemm_splat(L, it, LLVMBuildTrunc(L->b, left, L->i32, "")),
                       LLVMConstVector(lanes, (unsigned)vl), "");
}

/* Lanes l with col + l < n. */
static LLVMValueRef col_mask(Lower *L, int vl, LLVMValueRef col, int64_t n) {
  return lw_gemm_lanes_below(L, vl, LLVMBuildSub(L->b, lw_i64(L, n), col, ""));
}

static LLVMValueRef masked_load(Lower *L, LLVMTypeRef vt, LLVMValueRef p, LLVMValueRef mask) {
  LLVMTypeRef over[2] = {vt, L->ptr};
  LLVMValueRef args[4] = {p, lw_i32(L, 4), mask, LLVMConstNull(vt)};
  return call_intrinsic(L, "llvm.masked.load", over, 2, args, 4);
}

LLVMValueRef lw_gemm_lanes(Lower *L, LLVMValueRef j0, int vl) {
  LLVMValueRef lanes[16];
  for (int l = 0; l < vl; l++) lanes[l] = lw_i32(L, l);
  LLVMTypeRef it = LLVMVectorType(L->i32, (unsigned)vl);
  LLVMValueRef j = LLVMBuildTrunc(L->b, j0, L->i32, "");
  return LLVMBuildAdd(L->b, lw_gemm_splat(L, it, j), LLVMConstVector(lanes, (unsigned)vl), "");
}

LLVMValueRef lw_gemm_load_masked(Lower *L, int vl, LLVMValueRef base, LLVMValueRef mask) {
  return masked_load(L, LLVMVectorType(L->f32, (unsigned)vl), base, mask);
}

LLVMValueRef lw_gemm_gather(Lower *L, int vl, LLVMValueRef base, LLVMValueRef idx,
                            LLVMValueRef mask) {
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)vl), pt = LLVMVectorType(L->ptr, (unsigned)vl);
  LLVMValueRef wide = LLVMBuildSExt(L->b, idx, LLVMVectorType(L->i64, (unsigned)vl), "");
  LLVMValueRef ptrs = LLVMBuildGEP2(L->b, L->f32, base, &wide, 1, "");
  LLVMTypeRef over[2] = {vt, pt};
  LLVMValueRef args[4] = {ptrs, lw_i32(L, 4), mask, LLVMConstNull(vt)};
  return call_intrinsic(L, "llvm.masked.gather", over, 2, args, 4);
}

static void masked_store(Lower *L, LLVMTypeRef vt, LLVMValueRef v, LLVMValueRef p,
                         LLVMValueRef mask) {
  LLVMTypeRef over[2] = {vt, L->ptr};
  LLVMValueRef args[4] = {v, p, lw_i32(L, 4), mask};
  call_intrinsic(L, "llvm.masked.store", over, 2, args, 4);
}

LLVMValueRef lw_gemm_interleave(Lower *L, LLVMValueRef a, LLVMValueRef b) {
  unsigned vl = LLVMGetVectorSize(LLVMTypeOf(a));
  LLVMValueRef idx[64];
  IR_ASSERT(vl <= 32, "llvm: %u lanes", vl);
  for (unsigned l = 0; l < 2 * vl; l++) idx[l] = lw_i32(L, (int32_t)(l / 2 + (l % 2) * vl));
  return LLVMBuildShuffleVector(L->b, a, b, LLVMConstVector(idx, 2 * vl), "");
}

void lw_gemm_store_masked(Lower *L, LLVMValueRef v, LLVMValueRef base, LLVMValueRef mask) {
  masked_store(L, LLVMTypeOf(v), v, base, mask);
}

static LLVMValueRef vload(Lower *L, LLVMTypeRef vt, LLVMValueRef base, LLVMValueRef idx,
                          unsigned align) {
  LLVMValueRef v = LLVMBuildLoad2(L->b, vt, lw_gep(L, L->f32, base, idx), "");
  LLVMSetAlignment(v, align);
  return v;
}

static void vstore(Lower *L, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx, unsigned align) {
  LLVMValueRef s = LLVMBuildStore(L->b, v, lw_gep(L, L->f32, base, idx));
  LLVMSetAlignment(s, align);
}

/* acc (a variable of vector type vt) += a * b, fused. */
static void fma_into(Lower *L, LLVMTypeRef vt, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b) {
  LLVMTypeRef over = vt;
  LLVMValueRef args[3] = {a, b, lw_get(L, vt, acc)};
  lw_set(L, acc, call_intrinsic(L, "llvm.fma", &over, 1, args, 3));
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

typedef struct Tiles {
  int vl, nv, nr, mr;
  int64_t kc, mc, nc, nkb, nib, njb;
  int64_t kcp;     /* rows of a packed B micro-panel: kc rounded up to whole vectors */
  bool direct;     /* B read in place (rows contiguous), not packed: one row tile in all */
  bool taps;       /* B read in place as taps (b_taps), not packed: slices of whole tap groups */
  bool ct;         /* C^T = B^T A^T is computed (skinny n: vectors along m; see swap_ops) */
  bool split_cols; /* blocks of one column panel: a big product's only way to the threads */
  /* Packed A's element (r, p) of micro-panel g is at g*a_gs + r*a_rs + p*a_ps: rows of
   * contiguous p (a_rs = padded depth, a_ps = 1) when A's rows are contiguous, so
   * packing is vector copies; else MR-float groups per p (a_rs = 1, a_ps = MR). */
  bool arow;
  bool a_inplace; /* A's micro-panels read where A is (a_rs or a_ps = a_ld), not packed */
  int64_t a_gs, a_rs, a_ps;
} Tiles;

/* B read where it is (rows, or taps), never packed: no B buffer, and blocks pass the slice's
 * first row index to the micro-kernel instead of a packed panel. */
static bool b_in_place(const Tiles *t) { return t->direct || t->taps; }

/* Packed elements of a blocking with nib row blocks and njb column blocks:
 * the operand shared across a run of blocks once, the other once per block
 * of the shared one (run_blocks picks the smaller). A read in place counts
 * too: each column block reads it again, from L2 at best. */
static double pack_volume(const GemmOps *g, const Tiles *t, int64_t nib, int64_t njb) {
  double a = (double)g->m * (double)g->k, b = (double)g->k * (double)g->n;
  if (t->direct) return 0;
  if (t->taps) return a;
  return fmin(a + b * (double)nib, a * (double)njb + b);
}

/* MC and NC: of the halvings of the largest blocks (A's MC x KC in L2, B's
 * KC x NC streamed from L2), those with enough iterations to share among
 * threads when the product is big, then the fewest packed elements, then the
 * largest blocks; failing that, the most iterations. */
static void choose_blocks(const GemmOps *g, Tiles *t) {
  double flops = 2.0 * (double)g->batch * (double)g->m * (double)g->n * (double)g->k;
  int64_t mc_max = round_up(g->m, t->mr), nc_max = round_up(g->n, t->nr);
  if (mc_max > t->mr * GEMM_MC_PANELS) mc_max = t->mr * GEMM_MC_PANELS;
  if (nc_max > t->nr * GEMM_NC_PANELS) nc_max = t->nr * GEMM_NC_PANELS;
  int64_t mc_min = mc_max < 4 * t->mr ? mc_max : 4 * t->mr;
  int64_t nc_min = nc_max < 2 * t->nr ? nc_max : 2 * t->nr;
  if (t->split_cols) nc_min = t->nr;
  bool have = false, best_ok = false;
  double best_vol = 0;
  int64_t best_iters = 0, best_area = 0;
  for (int64_t mc = mc_max;; mc = round_up(mc / 2, t->mr)) {
    for (int64_t nc = nc_max;; nc = round_up(nc / 2, t->nr)) {
      int64_t nib = ceil_div(g->m, mc), njb = ceil_div(g->n, nc);
      int64_t iters = g->batch * nib * njb;
      /* B read in place (a few rows: batch-1 inference) costs no packing per block, so even
       * a small product is split for the threads: each reads its part of the weights. */
      bool ok = (flops < 4e6 && !t->direct) || iters >= GEMM_MIN_ITERS;
      double vol = pack_volume(g, t, nib, njb);
      bool better = !have || (ok && !best_ok);
      if (have && ok == best_ok)
        better =
            ok ? vol < best_vol || (vol == best_vol && mc * nc > best_area) : iters > best_iters;
      if (better) {
        have = true, best_ok = ok, best_vol = vol, best_iters = iters, best_area = mc * nc;
        t->mc = mc, t->nc = nc, t->nib = nib, t->njb = njb;
      }
      if (nc <= nc_min) break;
    }
    if (mc <= mc_min) break;
  }
}

static Tiles choose_tiles(Lower *L, const GemmOps *g, bool ct) {
  Tiles t;
  t.ct = ct, t.split_cols = false;
  t.vl = L->avx512 ? 16 : 8;
  t.nv = g->n <= t.vl ? 1 : 2;
  t.nr = t.nv * t.vl;
  t.mr = L->avx512 ? (t.nv == 2 ? 12 : 16) : (t.nv == 2 ? 6 : 8);
  /* 8 rows when 12 would waste over 2% of the FMAs on padding rows (m = 64: 72). */
  if (L->avx512 && t.nv == 2 && (double)round_up(g->m, 12) > 1.02 * (double)g->m &&
      round_up(g->m, 8) < round_up(g->m, 12))
    t.mr = 8;
  /* Few rows (batch-1 inference): tiles of exactly m rows, no FMAs on
   * padding rows, and B streamed from memory once instead of packed. */
  if (g->m < t.mr) t.mr = (int)g->m;
  /* Transposed skinny tiles have few rows: more vectors per row keep 24
   * accumulators (n = 2: 2 x 128). */
  if (ct) {
    int64_t nv = 24 / t.mr, most = ceil_div(g->n, t.vl);
    nv = nv > GEMM_NV_MAX ? GEMM_NV_MAX : nv > most ? most : nv;
    t.nv = nv < 2 ? 2 : (int)nv;
    /* A big product that would be one tile row and one column panel (conv1's weight
     * gradient: 9 x 32 over a depth of 50176) splits its columns, so that the threads
     * share it. */
    double flops = 2.0 * (double)g->batch * (double)g->m * (double)g->n * (double)g->k;
    t.split_cols = g->batch == 1 && g->m <= t.mr && most > 1 && most <= t.nv && flops >= 4e6;
    if (t.split_cols) t.nv = (int)(most / 2);
    t.nr = t.nv * t.vl;
  }
  t.direct = g->b_row && g->m <= t.mr && !g->map_b;
  /* A read in place: by rows (a_row) unless they are 4 KiB apart (the MR rows
   * of a tile would then fall in one L1 set; 1024^3: 3-5% slower than
   * packed); by columns (a_col, p-major groups of MR a stride apart) when one
   * column panel reads it once (n <= NR; with more panels packing pays). */
  bool ld = g->a_ld > 0 && !g->a_shared && !g->map_a;
  t.a_inplace = ld && (g->a_col ? g->n <= t.nr : g->a_row && g->a_ld % 1024 != 0);
  t.taps = g->b_taps != NULL;
  t.nkb = ceil_div(g->k, GEMM_KC);
  t.kc = ceil_div(g->k, t.nkb);
  if (t.taps) { /* whole groups of taps per slice */
    t.kc = round_up(t.kc, g->b_taps->taps);
    t.nkb = ceil_div(g->k, t.kc);
  }
  t.kcp = round_up(t.kc, t.vl);
  choose_blocks(g, &t);
  return t;
}

/* A's packed micro-panel gi, at p = poff. */
static LLVMValueRef a_panel(Lower *L, const Tiles *tl, LLVMValueRef apack, LLVMValueRef poff,
                            LLVMValueRef gi) {
  return lw_gep(L, L->f32, apack, lw_add(L, lw_mulc(L, gi, tl->a_gs), lw_mulc(L, poff, tl->a_ps)));
}

/* v through the operand's map; lanes off in mask (not loaded) stay 0. */
static LLVMValueRef mapped(Lower *L, const GemmOps *g, GemmMap *map, LLVMValueRef v,
                           LLVMValueRef mask) {
  if (!map) return v;
  LLVMValueRef m = map(L, g, v);
  return mask ? LLVMBuildSelect(L->b, mask, m, LLVMConstNull(LLVMTypeOf(v)), "") : m;
}

/* A's p contiguous (a_row) or loaded by vectors along p (a_vec): each row's kc floats by
 * vector copies into [r][p]. */
static void pack_a_rows(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef apack,
                        LLVMValueRef poff, LLVMValueRef t, LLVMValueRef i0, LLVMValueRef ngi,
                        LLVMValueRef pc, LLVMValueRef kc) {
  LwLoop lg, lr, lv;
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef gi = lw_for(L, &lg, lw_i64(L, 0), ngi);
  LLVMValueRef dst = a_panel(L, tl, apack, poff, gi);
  LLVMValueRef row0 = lw_add(L, i0, lw_mulc(L, gi, tl->mr));
  LLVMValueRef r = lw_for(L, &lr, lw_i64(L, 0), lw_i64(L, tl->mr));
  LLVMValueRef row = lw_smin(L, lw_add(L, row0, r), lw_i64(L, g->m - 1));
  LLVMValueRef src = g->a_row ? g->a_row(L, g, t, row, pc) : NULL;
  LLVMValueRef to = lw_gep(L, L->f32, dst, lw_mulc(L, r, tl->a_rs));
  LLVMValueRef nvec = lw_divc(L, lw_addc(L, kc, tl->vl - 1), tl->vl);
  LLVMValueRef at = lw_mulc(L, lw_for(L, &lv, lw_i64(L, 0), nvec), tl->vl);
  LLVMValueRef in = lw_gemm_lanes_below(L, tl->vl, LLVMBuildSub(L->b, kc, at, ""));
  LLVMValueRef x = src ? masked_load(L, vt, lw_gep(L, L->f32, src, at), in)
                       : g->a_vec(L, g, t, row, lw_add(L, pc, at), tl->vl, in);
  x = mapped(L, g, g->map_a, x, in);
  vstore(L, x, to, at, 4);
  lw_next(L, &lv);
  lw_next(L, &lr);
  lw_next(L, &lg);
}

/* A's rows adjacent (A read transposed): each p's MR rows are one masked vector load. */
static void pack_a_cols(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef apack,
                        LLVMValueRef poff, LLVMValueRef t, LLVMValueRef i0, LLVMValueRef ngi,
                        LLVMValueRef pc, LLVMValueRef kc) {
  LwLoop lg, lp;
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef panel = lw_gemm_lanes_below(L, tl->vl, lw_i64(L, tl->mr));
  LLVMValueRef gi = lw_for(L, &lg, lw_i64(L, 0), ngi);
  LLVMValueRef row0 = lw_add(L, i0, lw_mulc(L, gi, tl->mr));
  LLVMValueRef in = lw_gemm_lanes_below(L, tl->vl, LLVMBuildSub(L->b, lw_i64(L, g->m), row0, ""));
  LLVMValueRef dst = a_panel(L, tl, apack, poff, gi);
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), kc);
  LLVMValueRef v = masked_load(L, vt, g->a_col(L, g, t, row0, lw_add(L, pc, p)), in);
  v = mapped(L, g, g->map_a, v, in);
  masked_store(L, vt, v, lw_gep(L, L->f32, dst, lw_mulc(L, p, tl->mr)), panel);
  lw_next(L, &lp);
  lw_next(L, &lg);
}

/* Packs A[t][i0 + gi*MR + r][pc + p] (rows past m clamped to m-1, or zero) for
 * every micro-panel gi < ngi, r < MR, p < kc at the packed position of (r, poff + p). */
static void pack_a(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef apack,
                   LLVMValueRef poff, LLVMValueRef t, LLVMValueRef i0, LLVMValueRef ngi,
                   LLVMValueRef pc, LLVMValueRef kc) {
  if (tl->arow) {
    pack_a_rows(L, g, tl, apack, poff, t, i0, ngi, pc, kc);
    return;
  }
  if (g->a_col) {
    pack_a_cols(L, g, tl, apack, poff, t, i0, ngi, pc, kc);
    return;
  }
  LwLoop lg, lp;
  LLVMValueRef gi = lw_for(L, &lg, lw_i64(L, 0), ngi);
  LLVMValueRef dst = a_panel(L, tl, apack, poff, gi);
  LLVMValueRef row0 = lw_add(L, i0, lw_mulc(L, gi, tl->mr));
  LLVMValueRef rows[32];
  for (int r = 0; r < tl->mr; r++) rows[r] = lw_smin(L, lw_addc(L, row0, r), lw_i64(L, g->m - 1));
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), kc);
  LLVMValueRef pp = lw_add(L, pc, p), at = lw_mulc(L, p, tl->mr);
  for (int r = 0; r < tl->mr; r++)
    lw_store(L, L->f32, dst, lw_addc(L, at, r),
             mapped(L, g, g->map_a, g->load_a(L, g, t, rows[r], pp), NULL));
  lw_next(L, &lp);
  lw_next(L, &lg);
}

/* x[c] <- lane c of every x[l] (a vl x vl transpose in registers): log2(vl)
 * rounds of interleaving x[i] with x[i + vl/2], each moving the top bit of
 * (vector, lane) to the bottom, so vl rounds' worth of bits swap halves. */
static void transpose(Lower *L, int vl, LLVMValueRef *x) {
  LLVMValueRef lo[16], hi[16], y[16];
  for (int k = 0; k < vl / 2; k++) {
    lo[2 * k] = lw_i32(L, k), lo[2 * k + 1] = lw_i32(L, vl + k);
    hi[2 * k] = lw_i32(L, vl / 2 + k), hi[2 * k + 1] = lw_i32(L, vl + vl / 2 + k);
  }
  LLVMValueRef mlo = LLVMConstVector(lo, (unsigned)vl), mhi = LLVMConstVector(hi, (unsigned)vl);
  for (int round = 1; round < vl; round *= 2) {
    for (int i = 0; i < vl / 2; i++) {
      y[2 * i] = LLVMBuildShuffleVector(L->b, x[i], x[i + vl / 2], mlo, "");
      y[2 * i + 1] = LLVMBuildShuffleVector(L->b, x[i], x[i + vl / 2], mhi, "");
    }
    memcpy(x, y, sizeof(LLVMValueRef) * (size_t)vl);
  }
}

/* B's columns contiguous in p (B read transposed) or loaded by vectors along p
 * (b_cvec): per VL x VL block, VL column loads of VL p each, transposed in
 * registers into VL row vectors. */
static void pack_b_cols(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef dst,
                        LLVMValueRef t, LLVMValueRef col0, LLVMValueRef pc, LLVMValueRef kc) {
  LwLoop lp;
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef nvec = lw_divc(L, lw_addc(L, kc, tl->vl - 1), tl->vl);
  LLVMValueRef p0 = lw_mulc(L, lw_for(L, &lp, lw_i64(L, 0), nvec), tl->vl);
  LLVMValueRef in = lw_gemm_lanes_below(L, tl->vl, LLVMBuildSub(L->b, kc, p0, ""));
  for (int v = 0; v < tl->nv; v++) {
    LLVMValueRef x[16];
    for (int c = 0; c < tl->vl; c++) {
      LLVMValueRef j = lw_smin(L, lw_addc(L, col0, v * tl->vl + c), lw_i64(L, g->n - 1));
      LLVMValueRef at = lw_add(L, pc, p0);
      x[c] = g->b_col ? masked_load(L, vt, g->b_col(L, g, t, at, j), in)
                      : g->b_cvec(L, g, t, j, at, tl->vl, in);
      x[c] = mapped(L, g, g->map_b, x[c], in);
    }
    transpose(L, tl->vl, x);
    for (int p = 0; p < tl->vl; p++)
      vstore(L, x[p], dst, lw_addc(L, lw_mulc(L, lw_addc(L, p0, p), tl->nr), v * tl->vl), 64);
  }
  lw_next(L, &lp);
}

/* bpack[gj][p][c] = B[t][pc + p][min(j0 + gj*NR + c, n-1)] (zero past n on the fast path). */
static void pack_b(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef bpack, LLVMValueRef t,
                   LLVMValueRef j0, LLVMValueRef ngj, LLVMValueRef pc, LLVMValueRef kc) {
  LwLoop lg, lp, lc;
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  if ((g->b_col || g->b_cvec) && !g->b_vec && !g->b_row) {
    LLVMValueRef gj = lw_for(L, &lg, lw_i64(L, 0), ngj);
    LLVMValueRef dst = lw_gep(L, L->f32, bpack, lw_mulc(L, gj, tl->kcp * tl->nr));
    pack_b_cols(L, g, tl, dst, t, lw_add(L, j0, lw_mulc(L, gj, tl->nr)), pc, kc);
    lw_next(L, &lg);
    return;
  }
  if (g->b_vec) { /* rows outer: a row's index arithmetic (im2col taps) once for all panels */
    IR_ASSERT(!g->map_b, "llvm: a mapped B has no vector loader");
    LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), kc);
    LLVMValueRef pp = lw_add(L, pc, p), at = lw_mulc(L, p, tl->nr);
    LLVMValueRef gj = lw_for(L, &lg, lw_i64(L, 0), ngj);
    LLVMValueRef dst = lw_gep(L, L->f32, bpack, lw_mulc(L, gj, tl->kcp * tl->nr));
    LLVMValueRef col0 = lw_add(L, j0, lw_mulc(L, gj, tl->nr));
    for (int v = 0; v < tl->nv; v++)
      vstore(L, g->b_vec(L, g, t, pp, lw_addc(L, col0, v * tl->vl), tl->vl), dst,
             lw_addc(L, at, v * tl->vl), 64);
    lw_next(L, &lg);
    lw_next(L, &lp);
    return;
  }
  LLVMValueRef gj = lw_for(L, &lg, lw_i64(L, 0), ngj);
  LLVMValueRef dst = lw_gep(L, L->f32, bpack, lw_mulc(L, gj, tl->kcp * tl->nr));
  LLVMValueRef col0 = lw_add(L, j0, lw_mulc(L, gj, tl->nr));
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), kc);
  LLVMValueRef pp = lw_add(L, pc, p), at = lw_mulc(L, p, tl->nr);
  if (g->b_row) {
    LLVMValueRef row = g->b_row(L, g, t, pp);
    for (int v = 0; v < tl->nv; v++) {
      LLVMValueRef col = lw_addc(L, col0, v * tl->vl);
      LLVMValueRef in = col_mask(L, tl->vl, col, g->n);
      LLVMValueRef x =
          mapped(L, g, g->map_b, masked_load(L, vt, lw_gep(L, L->f32, row, col), in), in);
      vstore(L, x, dst, lw_addc(L, at, v * tl->vl), 64);
    }
  } else {
    LLVMValueRef c = lw_for(L, &lc, lw_i64(L, 0), lw_i64(L, tl->nr));
    LLVMValueRef j = lw_smin(L, lw_add(L, col0, c), lw_i64(L, g->n - 1));
    lw_store(L, L->f32, dst, lw_add(L, at, c),
             mapped(L, g, g->map_b, g->load_b(L, g, t, pp, j), NULL));
    lw_next(L, &lc);
  }
  lw_next(L, &lp);
  lw_next(L, &lg);
}

/* Row i of C[t]: its flat row index t*m + i, its address, and its first
 * slice's starting value (the bias, or zero). */
typedef struct CRow {
  LLVMValueRef flat, row, init;
} CRow;

static CRow c_row(Lower *L, const GemmOps *g, LLVMTypeRef vt, LLVMValueRef t, LLVMValueRef i) {
  CRow c;
  c.flat = lw_add(L, lw_mulc(L, t, g->m), i);
  c.row = lw_gep(L, L->f32, lw_out(L), lw_mulc(L, c.flat, g->n));
  c.init = g->bias ? lw_gemm_splat(L, vt, lw_load(L, L->f32, g->bias, i)) : LLVMConstNull(vt);
  return c;
}

/* The lanes of each vector of a tile's row that are columns of C. */
static void tile_masks(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef col0,
                       LLVMValueRef *masks) {
  for (int v = 0; v < tl->nv; v++)
    masks[v] = col_mask(L, tl->vl, lw_addc(L, col0, v * tl->vl), g->n);
}

/* The tile's stores: C (+)= acc, row by row (rows past m skipped, columns
 * past n masked). With epi, C's final value goes to the epilogue instead,
 * which stores it and what the fused chain computes from it. */
static void store_tile(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef acc[][GEMM_NV_MAX],
                       LLVMValueRef t, LLVMValueRef row0, LLVMValueRef lo, LLVMValueRef col0,
                       LLVMValueRef first, bool epi) {
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef masks[GEMM_NV_MAX];
  tile_masks(L, g, tl, col0, masks);
  for (int r = 0; r < tl->mr; r++) {
    LLVMValueRef i = lw_addc(L, row0, r);
    LwIf in;
    LLVMValueRef ok = LLVMBuildICmp(L->b, LLVMIntSLT, i, lw_i64(L, g->m), "");
    if (lo != row0) ok = LLVMBuildAnd(L->b, ok, LLVMBuildICmp(L->b, LLVMIntSGE, i, lo, ""), "");
    lw_if(L, &in, ok);
    CRow c = c_row(L, g, vt, t, i);
    for (int v = 0; v < tl->nv; v++) {
      LLVMValueRef col = lw_addc(L, col0, v * tl->vl);
      LLVMValueRef cp = lw_gep(L, L->f32, c.row, col);
      LLVMValueRef base = c.init;
      if (!epi || tl->nkb > 1) { /* with epi only the last slice, never the first of several */
        LLVMValueRef old = masked_load(L, vt, cp, masks[v]);
        base = epi ? old : LLVMBuildSelect(L->b, first, c.init, old, "");
      }
      LLVMValueRef val = LLVMBuildFAdd(L->b, base, lw_get(L, vt, acc[r][v]), "");
      if (epi)
        lw_epilogue_store(g->epi, c.flat, col, masks[v], val);
      else
        masked_store(L, vt, val, cp, masks[v]);
    }
    lw_endif(L, &in);
  }
}

/* The tile's final values through an epilogue too costly to repeat for
 * every row in the code: acc goes to a tile buffer on the stack (L1), then
 * one loop over its rows runs the epilogue once per vector of a row. */
static void store_tile_looped(Lower *L, const GemmOps *g, const Tiles *tl,
                              LLVMValueRef acc[][GEMM_NV_MAX], LLVMValueRef t, LLVMValueRef row0,
                              LLVMValueRef lo, LLVMValueRef col0) {
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef tile = lw_stack(L, L->f32, (int64_t)tl->mr * tl->nr);
  for (int r = 0; r < tl->mr; r++)
    for (int v = 0; v < tl->nv; v++)
      vstore(L, lw_get(L, vt, acc[r][v]), tile, lw_i64(L, r * tl->nr + v * tl->vl), 64);
  LLVMValueRef masks[GEMM_NV_MAX];
  tile_masks(L, g, tl, col0, masks);
  LwLoop lr;
  LLVMValueRef rows = lw_smin(L, lw_i64(L, tl->mr), LLVMBuildSub(L->b, lw_i64(L, g->m), row0, ""));
  LLVMValueRef r = lw_for(L, &lr, LLVMBuildSub(L->b, lo, row0, ""), rows);
  CRow c = c_row(L, g, vt, t, lw_add(L, row0, r));
  for (int v = 0; v < tl->nv; v++) {
    LLVMValueRef col = lw_addc(L, col0, v * tl->vl);
    LLVMValueRef base =
        tl->nkb > 1 ? masked_load(L, vt, lw_gep(L, L->f32, c.row, col), masks[v]) : c.init;
    LLVMValueRef x =
        vload(L, vt, tile, lw_add(L, lw_mulc(L, r, tl->nr), lw_i64(L, v * tl->vl)), 64);
    lw_epilogue_store(g->epi, c.flat, col, masks[v], LLVMBuildFAdd(L->b, base, x, ""));
  }
  lw_next(L, &lr);
}

/* A skinny product computed transposed (swap_ops): its GemmOps, and the original's. */
typedef struct SwapOps {
  GemmOps g; /* C^T = B^T A^T: m and n swapped; the loaders call the original's */
  const GemmOps *orig;
} SwapOps;

static const GemmOps *orig_of(const GemmOps *g) { return ((const SwapOps *)g)->orig; }

/* A transposed tile: lane c of acc[r][v] is C[t][col0 + v*VL + c][row0 + r].
 * Each VL x VL block is transposed in registers into rows of C, kept in a
 * tile buffer; one loop over C's rows then stores them (C (+)= row, lanes
 * past n masked) or hands them to the epilogue. */
static void store_tile_ct(Lower *L, const GemmOps *g, const Tiles *tl,
                          LLVMValueRef acc[][GEMM_NV_MAX], LLVMValueRef t, LLVMValueRef row0,
                          LLVMValueRef col0, LLVMValueRef first, bool epi) {
  const GemmOps *o = orig_of(g);
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef tile = lw_stack(L, L->f32, (int64_t)tl->nr * tl->vl);
  for (int v = 0; v < tl->nv; v++) {
    LLVMValueRef x[16];
    for (int l = 0; l < tl->vl; l++)
      x[l] = l < tl->mr ? lw_get(L, vt, acc[l][v]) : LLVMConstNull(vt);
    transpose(L, tl->vl, x);
    for (int c = 0; c < tl->vl; c++)
      vstore(L, x[c], tile, lw_i64(L, (v * tl->vl + c) * tl->vl), 64);
  }
  /* The tile's mr columns of C (a row of VL lanes past them is the next tile's). */
  LLVMValueRef mask = lw_gemm_lanes_below(
      L, tl->vl, lw_smin(L, lw_i64(L, tl->mr), LLVMBuildSub(L->b, lw_i64(L, o->n), row0, "")));
  LwLoop lr;
  LLVMValueRef rows = lw_smin(L, lw_i64(L, tl->nr), LLVMBuildSub(L->b, lw_i64(L, o->m), col0, ""));
  LLVMValueRef r = lw_for(L, &lr, lw_i64(L, 0), rows);
  CRow c = c_row(L, o, vt, t, lw_add(L, col0, r));
  LLVMValueRef cp = lw_gep(L, L->f32, c.row, row0), base = c.init;
  if (!epi || tl->nkb > 1) {
    LLVMValueRef old = masked_load(L, vt, cp, mask);
    base = epi ? old : LLVMBuildSelect(L->b, first, c.init, old, "");
  }
  LLVMValueRef val = LLVMBuildFAdd(L->b, base, vload(L, vt, tile, lw_mulc(L, r, tl->vl), 64), "");
  if (epi)
    lw_epilogue_store(o->epi, c.flat, row0, mask, val);
  else
    masked_store(L, vt, val, cp, mask);
  lw_next(L, &lr);
}

/* The tile's final stores: C (+)= acc, through the epilogue after the last slice. */
static void store_any(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef acc[][GEMM_NV_MAX],
                      LLVMValueRef t, LLVMValueRef row0, LLVMValueRef lo, LLVMValueRef col0,
                      LLVMValueRef first, bool epi) {
  if (tl->ct)
    store_tile_ct(L, g, tl, acc, t, row0, col0, first, epi);
  else if (epi && lw_epilogue_cost(g->epi) > GEMM_EPI_UNROLL_COST)
    store_tile_looped(L, g, tl, acc, t, row0, lo, col0);
  else
    store_tile(L, g, tl, acc, t, row0, lo, col0, first, epi);
}

static void finish_tile(Lower *L, const GemmOps *g, const Tiles *tl,
                        LLVMValueRef acc[][GEMM_NV_MAX], LLVMValueRef t, LLVMValueRef row0,
                        LLVMValueRef lo, LLVMValueRef col0, LLVMValueRef first, LLVMValueRef last) {
  if (!g->epi || tl->nkb == 1) {
    store_any(L, g, tl, acc, t, row0, lo, col0, first, g->epi != NULL);
    return;
  }
  LwIf fin;
  lw_if(L, &fin, last);
  store_any(L, g, tl, acc, t, row0, lo, col0, first, true);
  lw_else(L, &fin);
  store_any(L, g, tl, acc, t, row0, lo, col0, first, false);
  lw_endif(L, &fin);
}

/* The micro-kernel over taps (b_taps): for each plane c of the slice, every tap q unrolled,
 * its VL-column vectors loaded from the plane in place under the tap's masks (loaded once
 * per tile), A's packed p = c*taps + q. */
static void taps_steps(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef ap,
                       LLVMValueRef pc, LLVMValueRef kc, LLVMValueRef t, LLVMValueRef col0,
                       LLVMValueRef acc[][GEMM_NV_MAX]) {
  const GemmTaps *tp = g->b_taps;
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef mask[GEMM_TAPS_MAX][GEMM_NV_MAX];
  for (int q = 0; q < tp->taps; q++)
    for (int v = 0; v < tl->nv; v++)
      mask[q][v] = tp->mask(L, g, q, lw_addc(L, col0, v * tl->vl), tl->vl);
  LLVMValueRef base = lw_gep(L, L->f32, tp->src, lw_mulc(L, t, tp->image));
  LwLoop lc;
  LLVMValueRef c0 = lw_divc(L, pc, tp->taps), ng = lw_divc(L, kc, tp->taps);
  LLVMValueRef c = lw_for(L, &lc, lw_i64(L, 0), ng);
  LLVMValueRef at = lw_add(L, lw_mulc(L, lw_add(L, c0, c), tp->stride), col0);
  for (int q = 0; q < tp->taps; q++) {
    LLVMValueRef bv[GEMM_NV_MAX];
    for (int v = 0; v < tl->nv; v++) {
      LLVMValueRef idx = lw_addc(L, at, tp->off[q] + v * tl->vl);
      LLVMValueRef ptr = LLVMBuildGEP2(L->b, L->f32, base, &idx, 1, ""); /* may start before */
      bv[v] = masked_load(L, vt, ptr, mask[q][v]);
    }
    LLVMValueRef abase = lw_mulc(L, lw_addc(L, lw_mulc(L, c, tp->taps), q), tl->a_ps);
    for (int r = 0; r < tl->mr; r++) {
      LLVMValueRef a =
          lw_gemm_splat(L, vt, lw_load(L, L->f32, ap, lw_addc(L, abase, r * tl->a_rs)));
      for (int v = 0; v < tl->nv; v++) fma_into(L, vt, acc[r][v], a, bv[v]);
    }
  }
  lw_next(L, &lc);
}

/* One MR x NR tile: acc = apanel . bpanel over kc, then C (+)= acc; at the
 * last slice (last) through the epilogue when there is one. */
static void micro_tile(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef ap,
                       LLVMValueRef bp, LLVMValueRef kc, LLVMValueRef t, LLVMValueRef row0,
                       LLVMValueRef lo, LLVMValueRef col0, LLVMValueRef first, LLVMValueRef last) {
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)tl->vl);
  LLVMValueRef acc[32][GEMM_NV_MAX], bmask[GEMM_NV_MAX];
  for (int r = 0; r < tl->mr; r++)
    for (int v = 0; v < tl->nv; v++) acc[r][v] = lw_var(L, vt, LLVMConstNull(vt));
  if (tl->taps) { /* bp: the slice's first row index pc (an i64) */
    taps_steps(L, g, tl, ap, bp, kc, t, col0, acc);
    finish_tile(L, g, tl, acc, t, row0, lo, col0, first, last);
    return;
  }
  if (tl->direct) tile_masks(L, g, tl, col0, bmask);
  LwLoop lp;
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), kc);
  LLVMValueRef bv[GEMM_NV_MAX];
  if (tl->direct) { /* bp: the slice's first row index pc (an i64), B read in place */
    LLVMValueRef row = lw_gep(L, L->f32, g->b_row(L, g, t, lw_add(L, bp, p)), col0);
    for (int v = 0; v < tl->nv; v++)
      bv[v] = masked_load(L, vt, lw_gep(L, L->f32, row, lw_i64(L, v * tl->vl)), bmask[v]);
  } else {
    for (int v = 0; v < tl->nv; v++)
      bv[v] = vload(L, vt, bp, lw_addc(L, lw_mulc(L, p, tl->nr), v * tl->vl), 64);
  }
  LLVMValueRef abase = lw_mulc(L, p, tl->a_ps);
  for (int r = 0; r < tl->mr; r++) {
    LLVMValueRef a = lw_gemm_splat(L, vt, lw_load(L, L->f32, ap, lw_addc(L, abase, r * tl->a_rs)));
    for (int v = 0; v < tl->nv; v++) fma_into(L, vt, acc[r][v], a, bv[v]);
  }
  lw_next(L, &lp);
  finish_tile(L, g, tl, acc, t, row0, lo, col0, first, last);
}

/* A block's rows and columns: i0, j0 and the micro-panel counts. */
typedef struct Block {
  LLVMValueRef i0, j0, ngi, ngj;
} Block;

/* Row block ib: its first row and micro-panel count. */
static void rows_of(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef ib, Block *b) {
  b->i0 = lw_mulc(L, ib, tl->mc);
  LLVMValueRef mc = lw_smin(L, lw_i64(L, tl->mc), LLVMBuildSub(L->b, lw_i64(L, g->m), b->i0, ""));
  b->ngi = lw_divc(L, lw_addc(L, mc, tl->mr - 1), tl->mr);
}

/* Column block jb: its first column and micro-panel count. */
static void cols_of(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef jb, Block *b) {
  b->j0 = lw_mulc(L, jb, tl->nc);
  LLVMValueRef nc = lw_smin(L, lw_i64(L, tl->nc), LLVMBuildSub(L->b, lw_i64(L, g->n), b->j0, ""));
  b->ngj = lw_divc(L, lw_addc(L, nc, tl->nr - 1), tl->nr);
}

/* One K slice of a block: C[t] block (+)= apack . bpack over [pc, pc + kc), A's
 * slice at offset poff of its packed rows. The micro-panel kept in L1 across
 * the inner tile loop is A's when its rows are packed row by row (a tile
 * then reads 12 lines of it per step, which streaming from L2 does not
 * sustain), else B's, whose reuse saves the larger panel's traffic. */
static void block_tiles(Lower *L, const GemmOps *g, const Tiles *tl, const Block *b,
                        LLVMValueRef apack, LLVMValueRef bpack, LLVMValueRef t, LLVMValueRef poff,
                        LLVMValueRef pc, LLVMValueRef kc, LLVMValueRef first, LLVMValueRef last) {
  LwLoop lout, lin;
  LLVMValueRef gi = NULL, gj = NULL;
  if (tl->arow) {
    gi = lw_for(L, &lout, lw_i64(L, 0), b->ngi);
    gj = lw_for(L, &lin, lw_i64(L, 0), b->ngj);
  } else {
    gj = lw_for(L, &lout, lw_i64(L, 0), b->ngj);
    gi = lw_for(L, &lin, lw_i64(L, 0), b->ngi);
  }
  LLVMValueRef lo = lw_add(L, b->i0, lw_mulc(L, gi, tl->mr)), row0 = lo, ap;
  if (tl->a_inplace) { /* a last panel past m moves up to end at m; it stores only from lo */
    row0 = lw_smin(L, lo, lw_i64(L, g->m - tl->mr));
    ap = g->a_col ? g->a_col(L, g, t, row0, pc) : g->a_row(L, g, t, row0, pc);
  } else {
    ap = a_panel(L, tl, apack, poff, gi);
  }
  LLVMValueRef col0 = lw_add(L, b->j0, lw_mulc(L, gj, tl->nr));
  LLVMValueRef bp =
      b_in_place(tl) ? pc : lw_gep(L, L->f32, bpack, lw_mulc(L, gj, tl->kcp * tl->nr));
  micro_tile(L, g, tl, ap, bp, kc, t, row0, lo, col0, first, last);
  lw_next(L, &lin);
  lw_next(L, &lout);
}

/* The K slice kb: its first p, depth, and whether it is the first or last. */
typedef struct Slice {
  LLVMValueRef pc, kc, first, last;
} Slice;

static Slice slice_of(Lower *L, const GemmOps *g, const Tiles *tl, LLVMValueRef kb) {
  Slice s;
  s.pc = lw_mulc(L, kb, tl->kc);
  s.kc = lw_smin(L, lw_i64(L, tl->kc), LLVMBuildSub(L->b, lw_i64(L, g->k), s.pc, ""));
  s.first = LLVMBuildICmp(L->b, LLVMIntEQ, kb, lw_i64(L, 0), "");
  s.last = LLVMBuildICmp(L->b, LLVMIntEQ, kb, lw_i64(L, tl->nkb - 1), "");
  return s;
}

/* Iterations [begin, end) of the blocks (t, outer, inner), inner fastest: a
 * run of consecutive iterations with the same (t, outer) packs the outer
 * operand's block once per K slice (A's row block when share_a, else B's
 * column block) and reuses it for every inner block of the run. */
static void run_blocks(Lower *L, const GemmOps *g, const Tiles *tl, bool share_a,
                       LLVMValueRef apack, LLVMValueRef bpack) {
  int64_t nin = share_a ? tl->njb : tl->nib, nout = share_a ? tl->nib : tl->njb;
  LwLoop lu, lk, lq;
  LLVMValueRef u0 = lw_divc(L, L->begin, nin);
  LLVMValueRef u1 = lw_divc(L, lw_addc(L, L->end, nin - 1), nin);
  LLVMValueRef u = lw_for(L, &lu, u0, u1);
  LLVMValueRef t = lw_divc(L, u, nout), o = lw_remc(L, u, nout);
  LLVMValueRef base = lw_mulc(L, u, nin);
  LLVMValueRef lo = lw_smax(L, LLVMBuildSub(L->b, L->begin, base, ""), lw_i64(L, 0));
  LLVMValueRef hi = lw_smin(L, LLVMBuildSub(L->b, L->end, base, ""), lw_i64(L, nin));
  Block b;
  if (share_a)
    rows_of(L, g, tl, o, &b);
  else
    cols_of(L, g, tl, o, &b);
  Slice s = slice_of(L, g, tl, lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, tl->nkb)));
  LLVMValueRef zero = lw_i64(L, 0);
  if (!share_a)
    pack_b(L, g, tl, bpack, t, b.j0, b.ngj, s.pc, s.kc);
  else if (!tl->a_inplace)
    pack_a(L, g, tl, apack, zero, t, b.i0, b.ngi, s.pc, s.kc);
  LLVMValueRef q = lw_for(L, &lq, lo, hi);
  if (share_a) {
    cols_of(L, g, tl, q, &b);
    if (!b_in_place(tl)) pack_b(L, g, tl, bpack, t, b.j0, b.ngj, s.pc, s.kc);
  } else {
    rows_of(L, g, tl, q, &b);
    if (!tl->a_inplace) pack_a(L, g, tl, apack, zero, t, b.i0, b.ngi, s.pc, s.kc);
  }
  block_tiles(L, g, tl, &b, apack, bpack, t, zero, s.pc, s.kc, s.first, s.last);
  lw_next(L, &lq);
  lw_next(L, &lk);
  lw_next(L, &lu);
}

/* A shared by the batch (a convolution's weights): iteration (tc, block)
 * packs all of A's row block once, then runs batch entries [tc*tb, tc*tb + tb). */
static void run_ashared(Lower *L, const GemmOps *g, const Tiles *tl, int64_t tb, LLVMValueRef apack,
                        LLVMValueRef bpack) {
  LwLoop outer, lt, lk;
  int64_t blocks = tl->nib * tl->njb;
  LLVMValueRef r = lw_outer(L, &outer);
  LLVMValueRef tc = lw_divc(L, r, blocks), rem = lw_remc(L, r, blocks);
  Block b;
  rows_of(L, g, tl, lw_divc(L, rem, tl->njb), &b);
  cols_of(L, g, tl, lw_remc(L, rem, tl->njb), &b);
  pack_a(L, g, tl, apack, lw_i64(L, 0), lw_i64(L, 0), b.i0, b.ngi, lw_i64(L, 0), lw_i64(L, g->k));
  LLVMValueRef t0 = lw_mulc(L, tc, tb);
  LLVMValueRef t1 = lw_smin(L, lw_addc(L, t0, tb), lw_i64(L, g->batch));
  LLVMValueRef t = lw_for(L, &lt, t0, t1);
  Slice s = slice_of(L, g, tl, lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, tl->nkb)));
  if (!b_in_place(tl)) pack_b(L, g, tl, bpack, t, b.j0, b.ngj, s.pc, s.kc);
  block_tiles(L, g, tl, &b, apack, bpack, t, s.pc, s.pc, s.kc, s.first, s.last);
  lw_next(L, &lk);
  lw_next(L, &lt);
  lw_next(L, &outer);
}

/* The swapped product's operands: A' = B^T, B' = A^T. */
static LLVMValueRef swap_load_a(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                                LLVMValueRef p) {
  const GemmOps *o = orig_of(g);
  return o->load_b(L, o, t, p, i);
}

static LLVMValueRef swap_load_b(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p,
                                LLVMValueRef j) {
  const GemmOps *o = orig_of(g);
  return o->load_a(L, o, t, j, p);
}

/* &A'[t][i][p] = &B[t][p][i], B's rows contiguous. */
static LLVMValueRef swap_a_col(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                               LLVMValueRef p) {
  const GemmOps *o = orig_of(g);
  return lw_gep(L, L->f32, o->b_row(L, o, t, p), i);
}

/* &B'[t][p][0] = &A[t][0][p], A's rows adjacent. */
static LLVMValueRef swap_b_row(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef p) {
  const GemmOps *o = orig_of(g);
  return o->a_col(L, o, t, lw_i64(L, 0), p);
}

/* A'[t][i][p0..] = B[t][p0..][i] and B'[t][p0..][j] = A[t][j][p0..]: vector loaders along p. */
static LLVMValueRef swap_a_vec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef i,
                               LLVMValueRef p0, int vl, LLVMValueRef mask) {
  const GemmOps *o = orig_of(g);
  return o->b_cvec(L, o, t, i, p0, vl, mask);
}

static LLVMValueRef swap_b_cvec(Lower *L, const GemmOps *g, LLVMValueRef t, LLVMValueRef j,
                                LLVMValueRef p0, int vl, LLVMValueRef mask) {
  const GemmOps *o = orig_of(g);
  return o->a_vec(L, o, t, j, p0, vl, mask);
}

/* Skinny n (<= 12) over many rows: C = A B computed as C^T = B^T A^T, whose
 * vectors run along m instead of n (n = 10 fills 10 of 16 lanes, n = 2 only
 * 2; at 13-16 the plain tiles are faster), C stored through register transposes. When B's rows are
 * contiguous (B^T packs as A') and A's rows are adjacent (A^T's rows are read in place as B'); no
 * bias. With A's p contiguous instead (NN), A^T would be a full transpose of A for few FMAs per
 * element: slower than the plain tiles. Operands loaded by vectors along p both ways (a_vec,
 * b_cvec: a convolution's weight gradient) swap the same way, at any n: B^T's rows are B's
 * columns, copied as vectors, and A^T's columns A's rows, transposed in registers as B' is
 * packed. For the weight gradient that moves the transposes to the smaller operand (dy's
 * c_out rows instead of the c_in * 9 tap columns) and runs 12-row tiles where c_out = 64
 * took 8 (cnn conv2: 16% faster). */
static bool swap_ops(Lower *L, const GemmOps *g, SwapOps *sw) {
  bool strided = g->b_row && g->a_col && !g->b_vec;
  bool vectors = g->a_vec && g->b_cvec; /* a convolution's weight gradient */
  if (!L->avx512 || (g->n > 12 && !vectors) || g->m < 32 || g->bias || g->a_shared || g->map_a ||
      g->map_b || !(strided || vectors))
    return false;
  memset(sw, 0, sizeof *sw);
  sw->orig = g;
  GemmOps *s = &sw->g;
  s->batch = g->batch, s->m = g->n, s->n = g->m, s->k = g->k;
  s->load_a = swap_load_a, s->load_b = swap_load_b;
  if (strided)
    s->a_col = swap_a_col, s->b_row = swap_b_row;
  else
    s->a_vec = swap_a_vec, s->b_cvec = swap_b_cvec;
  s->epi = g->epi, s->user = g->user;
  return true;
}

/* ---- Tiny skinny products ---------------------------------------------------
 * A matmul of at most 4 columns and a few thousand multiply-adds (a classifier head and its
 * weight gradient): the register tiles would run mostly on padding lanes (32x128x2: a quarter
 * of them useful) and packing would cost more than the product. Dots along the depth when A's
 * rows are contiguous (B's columns copied to the stack first), else axpys along the rows, a
 * vector of rows at a time (A's columns contiguous: the TN weight gradient); each row of C
 * stored, or handed to the epilogue, as a vector of its n values. */
static bool small_ok(const Kernel *k, const GemmOps *g) {
  return k->out->op == OP_MATMUL && g->batch == 1 && g->n <= 4 && g->m * g->k * g->n <= 65536 &&
         g->b_row && (g->a_row || g->a_col) && !g->map_a && !g->map_b && !g->bias;
}

/* Row i of C: lanes 0..n-1 of v. */
static void small_row(Lower *L, const GemmOps *g, LLVMValueRef i, LLVMValueRef v, int vl) {
  LLVMValueRef mask = lw_gemm_lanes_below(L, vl, lw_i64(L, g->n));
  if (g->epi)
    lw_epilogue_store(g->epi, i, lw_i64(L, 0), mask, v);
  else
    masked_store(L, LLVMTypeOf(v), v, lw_gep(L, L->f32, lw_out(L), lw_mulc(L, i, g->n)), mask);
}

/* The sum of v's lanes (a tree of shuffles and adds). */
static LLVMValueRef small_hsum(Lower *L, LLVMValueRef v, int vl) {
  for (int w = vl / 2; w >= 1; w /= 2) {
    LLVMValueRef lanes[16];
    for (int l = 0; l < vl; l++) lanes[l] = lw_i32(L, l < w ? l + w : l);
    v = LLVMBuildFAdd(
        L->b, v, LLVMBuildShuffleVector(L->b, v, v, LLVMConstVector(lanes, (unsigned)vl), ""), "");
  }
  return LLVMBuildExtractElement(L->b, v, lw_i32(L, 0), "");
}

static void small_dot(Lower *L, Kernel *k, const GemmOps *g, int vl) {
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)vl);
  int64_t kp = round_up(g->k, vl), n = g->n;
  LLVMValueRef t0 = lw_i64(L, 0), acc[4] = {0};
  k->range = g->m;
  k->min_chunk = 65536 / (g->k * n) + 1;
  /* B's columns as rows of kp, zero past k: gathered a vector at a time when B's rows are one
   * stride apart, else element by element. */
  LLVMValueRef bt = lw_stack(L, L->f32, n * kp);
  LwLoop lp, outer, lq;
  if (g->b_ld > 0) {
    LLVMValueRef q0 = lw_mulc(L, lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, kp / vl)), vl);
    LLVMTypeRef it = LLVMVectorType(L->i32, (unsigned)vl);
    LLVMValueRef idx = LLVMBuildMul(L->b, lw_gemm_lanes(L, lw_i64(L, 0), vl),
                                    lw_gemm_splat(L, it, lw_i32(L, (int32_t)g->b_ld)), "");
    LLVMValueRef mask = col_mask(L, vl, q0, g->k), brow = g->b_row(L, g, t0, q0);
    for (int j = 0; j < n; j++)
      vstore(L, lw_gemm_gather(L, vl, lw_gep(L, L->f32, brow, lw_i64(L, j)), idx, mask), bt,
             lw_addc(L, q0, j * kp), 4);
  } else {
    LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, kp));
    LLVMValueRef in = LLVMBuildICmp(L->b, LLVMIntSLT, p, lw_i64(L, g->k), "");
    LLVMValueRef brow = g->b_row(L, g, t0, lw_select(L, in, p, lw_i64(L, 0)));
    for (int j = 0; j < n; j++) {
      LLVMValueRef b = lw_load(L, L->f32, brow, lw_i64(L, j));
      lw_store(L, L->f32, bt, lw_add(L, lw_i64(L, j * kp), p),
               lw_select(L, in, b, lw_fc(L, L->f32, 0.0)));
    }
  }
  lw_next(L, &lp);
  LLVMValueRef i = lw_outer(L, &outer);
  for (int j = 0; j < n; j++) acc[j] = lw_var(L, vt, LLVMConstNull(vt));
  LLVMValueRef q = lw_mulc(L, lw_for(L, &lq, lw_i64(L, 0), lw_i64(L, kp / vl)), vl);
  LLVMValueRef a = masked_load(L, vt, g->a_row(L, g, t0, i, q), col_mask(L, vl, q, g->k));
  for (int j = 0; j < n; j++)
    fma_into(L, vt, acc[j], a, vload(L, vt, bt, lw_addc(L, q, j * kp), 4));
  lw_next(L, &lq);
  LLVMValueRef v = LLVMGetPoison(vt);
  for (int j = 0; j < n; j++)
    v = LLVMBuildInsertElement(L->b, v, small_hsum(L, lw_get(L, vt, acc[j]), vl), lw_i32(L, j), "");
  small_row(L, g, i, v, vl);
  lw_next(L, &outer);
}

static void small_axpy(Lower *L, Kernel *k, const GemmOps *g, int vl) {
  LLVMTypeRef vt = LLVMVectorType(L->f32, (unsigned)vl);
  int64_t n = g->n;
  LLVMValueRef t0 = lw_i64(L, 0), acc[4] = {0};
  k->range = ceil_div(g->m, vl);
  k->min_chunk = 65536 / (vl * g->k * n) + 1;
  LLVMValueRef tile = lw_stack(L, L->f32, n * vl);
  LwLoop outer, lp, lr;
  LLVMValueRef i0 = lw_mulc(L, lw_outer(L, &outer), vl);
  LLVMValueRef left = LLVMBuildSub(L->b, lw_i64(L, g->m), i0, ""); /* rows from i0 on */
  LLVMValueRef rows = lw_gemm_lanes_below(L, vl, left);
  for (int j = 0; j < n; j++) acc[j] = lw_var(L, vt, LLVMConstNull(vt));
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), lw_i64(L, g->k));
  LLVMValueRef a = masked_load(L, vt, g->a_col(L, g, t0, i0, p), rows);
  LLVMValueRef brow = g->b_row(L, g, t0, p);
  for (int j = 0; j < n; j++)
    fma_into(L, vt, acc[j], a, lw_gemm_splat(L, vt, lw_load(L, L->f32, brow, lw_i64(L, j))));
  lw_next(L, &lp);
  if (!g->epi && n <= 2) { /* C's rows [i0, i0 + vl): the columns interleaved, stored whole */
    LLVMValueRef at = lw_gep(L, L->f32, lw_out(L), lw_mulc(L, i0, n));
    if (n == 1) {
      masked_store(L, vt, lw_get(L, vt, acc[0]), at, rows);
    } else {
      LLVMValueRef v = lw_gemm_interleave(L, lw_get(L, vt, acc[0]), lw_get(L, vt, acc[1]));
      masked_store(L, LLVMTypeOf(v), v, at, lw_gemm_lanes_below(L, 2 * vl, lw_mulc(L, left, 2)));
    }
    lw_next(L, &outer);
    return;
  }
  for (int j = 0; j < n; j++) vstore(L, lw_get(L, vt, acc[j]), tile, lw_i64(L, j * vl), 4);
  LLVMValueRef r = lw_for(L, &lr, lw_i64(L, 0), lw_smin(L, lw_i64(L, vl), left));
  LLVMValueRef v = LLVMGetPoison(vt);
  for (int j = 0; j < n; j++)
    v = LLVMBuildInsertElement(L->b, v, lw_load(L, L->f32, tile, lw_addc(L, r, j * vl)),
                               lw_i32(L, j), "");
  small_row(L, g, lw_add(L, i0, r), v, vl);
  lw_next(L, &lr);
  lw_next(L, &outer);
}

void lw_gemm(Lower *L, Kernel *k, const GemmOps *g) {
  if (small_ok(k, g)) { /* a few short loops: let LLVM unroll them */
    bool keep = L->no_unroll;
    L->no_unroll = false;
    (g->a_row ? small_dot : small_axpy)(L, k, g, L->avx512 ? 16 : 8);
    L->no_unroll = keep;
    return;
  }
  SwapOps sw;
  bool ct = swap_ops(L, g, &sw);
  if (ct) g = &sw.g;
  Tiles tl = choose_tiles(L, g, ct);
  double work = (double)tl.mc * (double)tl.nc * (double)g->k;
  int64_t blocks = tl.nib * tl.njb;
  /* A shared by the batch (a convolution's weights): pack all of A's block
   * once and run several batch entries per iteration. */
  bool ashared = g->a_shared && g->batch > 1 && tl.mc * g->k * 4 <= GEMM_ASHARED_BYTES;
  int64_t tb = 1;
  if (ashared) {
    tb = g->batch * blocks / GEMM_MIN_ITERS;
    if (tb < 1) tb = 1;
    if (tb > g->batch) tb = g->batch;
    ashared = tb > 1;
    if (!ashared) tb = 1;
  }
  int64_t nt = ceil_div(g->batch, tb);
  k->range = nt * blocks;
  work *= (double)tb;
  k->min_chunk = work >= 65536.0 ? 1 : (int64_t)(65536.0 / (work > 1 ? work : 1)) + 1;
  int64_t depth = ashared ? g->k : tl.kc;
  /* Rows of A packed row by row, with vector copies, unless A's columns are
   * contiguous (p-major groups of MR are then one load each) or A is packed
   * once for many batch entries (its packing cost is then negligible). */
  tl.arow = (g->a_row || g->a_vec) && !g->a_col && !ashared;
  tl.a_rs = tl.a_inplace && tl.arow ? g->a_ld : tl.arow ? round_up(depth, tl.vl) : 1;
  tl.a_ps = tl.a_inplace && !tl.arow ? g->a_ld : tl.arow ? 1 : tl.mr;
  tl.a_gs = tl.arow ? tl.a_rs * tl.mr : depth * tl.mr;
  LLVMValueRef apack = tl.a_inplace ? NULL : lw_stack(L, L->f32, tl.mc / tl.mr * tl.a_gs);
  LLVMValueRef bpack = b_in_place(&tl) ? NULL : lw_stack(L, L->f32, tl.kcp * tl.nc);
  if (ashared) {
    run_ashared(L, g, &tl, tb, apack, bpack);
    return;
  }
  /* Share the operand whose sharing packs fewer elements in all: A's block
   * with every column block, or B's with every row block. */
  double a_elems = (double)g->m * (double)g->k, b_elems = (double)g->k * (double)g->n;
  bool share_a = b_in_place(&tl) || (!tl.a_inplace && a_elems + b_elems * (double)tl.nib <=
                                                          a_elems * (double)tl.njb + b_elems);
  run_blocks(L, g, &tl, share_a, apack, bpack);
}
