/* llvm_lower_lstm.c - the LSTM and its gradient: the whole batch per time step as register-blocked
 * vector products, the gate nonlinearities and the cell update fused into their epilogues.
 *
 * nn.LSTM(batch_first), h0 = c0 = 0, gates i, f, g, o; x [B,T,I], w_ih [4H,I], w_hh [4H,H],
 * b_ih, b_hh [4H]. Vectors run along the hidden axis, VL lanes (16 f32 on AVX-512, 8 on AVX2;
 * f64 is scalar, VL = 1, since its tanh and exp are libm calls). Hp, Ip: H, I rounded up to VL.
 * The weights are packed in scratch with the gate axis reordered as g' = (jb, q, l), hidden unit
 * j = jb VL + l of gate q, so one tile's four column vectors are the four gates of VL hidden
 * units and the cell update runs in registers. Padding is zero, and padded lanes stay zero.
 *
 * Forward, step t, a tile of batch rows:
 *   z = [x_t | h_{t-1}] Wf + b,   Wf [Ip+Hp, 4Hp] = [W_ih^T; W_hh^T] packed
 *   c = sigmoid(f) c + sigmoid(i) tanh(g);   h = sigmoid(o) tanh(c)
 * Backward (lstm_grad): the forward again over the whole batch, recording a tape (the activated
 * gates, c, and [x_t | h_{t-1}]) -- or, when the lstm over the same x and weights is in the
 * graph (llvm_lstm_pair), that lstm records the tape as it runs -- then for t = T-1 .. 0
 *   dh = dy_t + dZ_{t+1} W_hh;   tc = tanh(c_t);   dc = dc' + dh o (1 - tc^2)
 *   dZ_t = (dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dh tc o(1-o));   dc' = dc f
 * (dZ_t overwrites the gates of step t), then three products over all steps:
 *   [dW_ih | dW_hh] = dZ^T [X | H_prev],   dX = dZ W_ih,   db = sum dZ.
 *
 * Every product is one template (product): tiles of mr rows x nv vectors of accumulators (24 of
 * the 32 zmm registers), A broadcast, B rows in scratch at strides that spread over the L1 sets,
 * the depth in blocks whose slice of B stays in L1 while every tile passes over it.
 *
 * Threads: the forward splits the batch in blocks of rows, each block packing its own copy of
 * the weights. lstm_grad is one launch in four phases with a barrier between them
 * (kiln_job_barrier; each chunk splits every phase's iterations itself, kiln_job_shape): the
 * packed weights; the recurrence forward and back per block of batch rows (rows are independent
 * through time); the weight gradients per block of their rows (each sums over the batch itself);
 * dX per block of (b, t) rows. Every value is computed by one thread in a fixed order, so the
 * results do not depend on the thread count. */
#include <string.h>

#include "llvm_gemm.h"

#define LSTM_MAX_MR      12 /* rows of a register tile */
#define LSTM_MAX_NV      4  /* column vectors of a register tile */
#define LSTM_BLOCK_ROWS  8  /* batch rows of one outer iteration of the forward */
#define LSTM_MAX_BLOCKS  16 /* outer iterations of the forward: packed weight copies in scratch */
#define LSTM_KB          64 /* steps of p per block of a product: a block of B stays in L1 */
#define LSTM_SCRATCH_PAD 16 /* the widest VL: scratch is sized for it */

/* ---- Shapes and scratch ------------------------------------------------- */

typedef struct Lstm {
  int64_t b, t, in, h;    /* batch, steps, input size, hidden size */
  int vl;                 /* lanes of a vector; 1: scalar code */
  int64_t hp, ip;         /* h, in rounded up to vl */
  int64_t g4;             /* 4 hp: a packed gate row */
  int64_t kx;             /* ip + hp: a row of Wf, a row [x_t | h_{t-1}] of the tape */
  int64_t sg, sx, sh, si; /* row strides in scratch of rows of g4, kx, hp, ip elements */
  int64_t rows;           /* batch rows per outer iteration of the forward */
  int64_t blocks;         /* outer iterations of the forward */
  LLVMTypeRef ft, vt;     /* element, vector (ft when vl is 1) */
} Lstm;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

/* A row stride for n elements: 64-byte aligned, and not a multiple of 512 bytes (for f32), so
 * that a block of rows read down a column spreads over the L1 sets instead of thrashing a few
 * of them. */
static int64_t row_stride(int64_t n) {
  int64_t s = round_up(n, LSTM_SCRATCH_PAD);
  return s % (8 * LSTM_SCRATCH_PAD) == 0 ? s + LSTM_SCRATCH_PAD : s;
}

static Lstm lstm_shape(const Node *n, int vl) {
  const Type *xt = &n->in[0]->type;
  Lstm s = {.b = xt->dims[0], .t = xt->dims[1], .in = xt->dims[2], .h = n->in[2]->type.dims[1]};
  s.vl = vl;
  s.hp = round_up(s.h, vl);
  s.ip = round_up(s.in, vl);
  s.g4 = 4 * s.hp;
  s.kx = s.ip + s.hp;
  s.sg = row_stride(s.g4);
  s.sx = row_stride(s.kx);
  s.sh = row_stride(s.hp);
  s.si = row_stride(s.ip);
  s.rows = round_up(ceil_div(s.b, LSTM_MAX_BLOCKS), LSTM_BLOCK_ROWS);
  s.blocks = ceil_div(s.b, s.rows);
  return s;
}

/* Where each array lives in scratch, in elements, each 64-byte aligned. */
typedef struct LstmScratch {
  /* Both: the packed forward weights and bias, per block for the forward, once for lstm_grad. */
  int64_t wf, bias, slot;
  int64_t c;        /* forward: the cell state [B][Hp] */
  int64_t z;        /* both: the partial sums of a product (Product.z) */
  int64_t wbh, wbi; /* lstm_grad: W_hh [4Hp][Hp] and W_ih [4Hp][Ip], rows in packed order */
  int64_t xh;       /* lstm_grad: [B][T][Ip+Hp], rows [x_t | h_{t-1}] */
  int64_t gates;    /* lstm_grad: [B][T][4Hp], the activated gates, then dZ */
  int64_t ct;       /* lstm_grad: [B][T+1][Hp], c_t at t+1, zero at 0 */
  int64_t dc;       /* lstm_grad: [B][Hp], the cell gradient carried to step t-1 */
  int64_t dw, db;   /* lstm_grad: [Ip+Hp][4Hp] and [4Hp], the weight gradients transposed */
  int64_t total;
} LstmScratch;

static int64_t take(int64_t *at, int64_t n) {
  int64_t here = *at;
  *at += round_up(n, LSTM_SCRATCH_PAD);
  return here;
}

static LstmScratch lstm_scratch(const Lstm *s, bool grad) {
  LstmScratch r = {0};
  int64_t at = 0;
  r.slot = round_up(s->kx * s->sg, LSTM_SCRATCH_PAD) + round_up(s->g4, LSTM_SCRATCH_PAD);
  r.wf = take(&at, (grad ? 1 : s->blocks) * r.slot);
  r.bias = r.wf + r.slot - round_up(s->g4, LSTM_SCRATCH_PAD);
  if (!grad) {
    r.c = take(&at, s->b * s->hp);
    r.z = take(&at, s->b * s->sg);
  } else {
    r.wbh = take(&at, s->g4 * s->sh);
    r.wbi = take(&at, s->g4 * s->si);
    r.xh = take(&at, s->b * s->t * s->sx);
    r.gates = take(&at, s->b * s->t * s->sg);
    r.ct = take(&at, s->b * (s->t + 1) * s->hp);
    r.dc = take(&at, s->b * s->hp);
    r.z = take(&at, s->b * s->sg > s->b * s->t * s->si ? s->b * s->sg : s->b * s->t * s->si);
    r.dw = take(&at, s->kx * s->sg);
    r.db = take(&at, s->g4);
  }
  r.total = at;
  return r;
}

/* The scratch either kernel needs on any host: laid out for the widest vector. */
int64_t llvm_lstm_scratch_bytes(const Node *n, bool tape) {
  Lstm s = lstm_shape(n, LSTM_SCRATCH_PAD);
  return lstm_scratch(&s, tape || n->op == OP_LSTM_GRAD).total *
         (int64_t)ir_dtype_size(n->type.dtype);
}

/* The one node of kind want over n's five operands, or NULL (none, or several). */
static const Node *lstm_partner(const Graph *g, const Node *n, OpKind want) {
  const Node *found = NULL;
  for (int i = 0; i < g->nnodes; i++) {
    const Node *m = g->nodes[i];
    bool same = m->op == want && m->in[0]->type.dtype == n->in[0]->type.dtype;
    for (int j = 0; same && j < 5; j++) same = m->in[j] == n->in[j];
    if (!same) continue;
    if (found) return NULL;
    found = m;
  }
  return found;
}

/* Paired only both ways: an lstm with two lstm_grads over its operands (two gradients of one
 * forward that CSE merged) writes no tape, so neither of them may read one. */
const Node *llvm_lstm_pair(const Graph *g, const Node *n) {
  if (n->op != OP_LSTM && n->op != OP_LSTM_GRAD) return NULL;
  OpKind want = n->op == OP_LSTM ? OP_LSTM_GRAD : OP_LSTM;
  const Node *m = lstm_partner(g, n, want);
  return m && lstm_partner(g, m, n->op) == n ? m : NULL;
}

/* ---- Vectors ------------------------------------------------------------ */

static LLVMValueRef intrinsic(Lower *L, const char *name, LLVMTypeRef *over, int nover,
                              LLVMValueRef *args, int nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  IR_ASSERT(id != 0, "llvm: no intrinsic %s", name);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(L->mod, id, over, (size_t)nover);
  LLVMTypeRef ty = LLVMIntrinsicGetType(L->ctx, id, over, (size_t)nover);
  return LLVMBuildCall2(L->b, ty, f, args, (unsigned)nargs, "");
}

static LLVMValueRef vsplat(Lower *L, const Lstm *s, LLVMValueRef x) {
  if (s->vl == 1) return x;
  LLVMValueRef v = LLVMBuildInsertElement(L->b, LLVMGetPoison(s->vt), x, lw_i32(L, 0), "");
  LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(L->i32, (unsigned)s->vl));
  return LLVMBuildShuffleVector(L->b, v, LLVMGetPoison(s->vt), zeros, "");
}

static LLVMValueRef vconst(Lower *L, const Lstm *s, double c) {
  return vsplat(L, s, lw_fc(L, s->ft, c));
}

static LLVMValueRef vfma(Lower *L, const Lstm *s, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef over = s->vt;
  LLVMValueRef args[3] = {a, b, c};
  return intrinsic(L, "llvm.fma", &over, 1, args, 3);
}

/* base[idx .. idx+VL) */
static LLVMValueRef vload(Lower *L, const Lstm *s, LLVMValueRef base, LLVMValueRef idx) {
  LLVMValueRef v = LLVMBuildLoad2(L->b, s->vt, lw_gep(L, s->ft, base, idx), "");
  LLVMSetAlignment(v, (unsigned)LLVMABISizeOfType(LLVMGetModuleDataLayout(L->mod), s->ft));
  return v;
}

static void vstore(Lower *L, const Lstm *s, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v) {
  LLVMValueRef st = LLVMBuildStore(L->b, v, lw_gep(L, s->ft, base, idx));
  LLVMSetAlignment(st, (unsigned)LLVMABISizeOfType(LLVMGetModuleDataLayout(L->mod), s->ft));
}

/* Lanes l < left. */
static LLVMValueRef lane_mask(Lower *L, const Lstm *s, LLVMValueRef left) {
  LLVMValueRef lanes[LSTM_SCRATCH_PAD];
  for (int l = 0; l < s->vl; l++) lanes[l] = lw_i32(L, l);
  LLVMTypeRef it = LLVMVectorType(L->i32, (unsigned)s->vl);
  LLVMValueRef n = LLVMBuildTrunc(L->b, lw_smin(L, left, lw_i64(L, s->vl)), L->i32, "");
  LLVMValueRef v = LLVMBuildInsertElement(L->b, LLVMGetPoison(it), n, lw_i32(L, 0), "");
  v = LLVMBuildShuffleVector(L->b, v, LLVMGetPoison(it), LLVMConstNull(it), "");
  return LLVMBuildICmp(L->b, LLVMIntSGT, v, LLVMConstVector(lanes, (unsigned)s->vl), "");
}

/* base[idx + l] for lanes l < left (0 past it) of a row of a tensor whose length, n, need not be
 * a multiple of VL. */
static LLVMValueRef vload_part(Lower *L, const Lstm *s, LLVMValueRef base, LLVMValueRef idx,
                               LLVMValueRef left, int64_t n) {
  if (n % s->vl == 0) return vload(L, s, base, idx);
  LLVMTypeRef over[2] = {s->vt, L->ptr};
  LLVMValueRef args[4] = {lw_gep(L, s->ft, base, idx), lw_i32(L, 4), lane_mask(L, s, left),
                          LLVMConstNull(s->vt)};
  return intrinsic(L, "llvm.masked.load", over, 2, args, 4);
}

static void vstore_part(Lower *L, const Lstm *s, LLVMValueRef base, LLVMValueRef idx,
                        LLVMValueRef left, int64_t n, LLVMValueRef v) {
  if (n % s->vl == 0) {
    vstore(L, s, base, idx, v);
    return;
  }
  LLVMTypeRef over[2] = {s->vt, L->ptr};
  LLVMValueRef args[4] = {v, lw_gep(L, s->ft, base, idx), lw_i32(L, 4), lane_mask(L, s, left)};
  intrinsic(L, "llvm.masked.store", over, 2, args, 4);
}

/* ---- Gate nonlinearities ------------------------------------------------ */

/* 1/y: on AVX-512 f32, vrcp14ps and one Newton step (relative error about 1e-7; a division
 * costs 5-10 cycles a vector, and each step of the LSTM has five per vector). */
static LLVMValueRef recip(Lower *L, const Lstm *s, LLVMValueRef y) {
  if (!L->avx512 || s->vl != 16 || s->ft != L->f32) return lw_fdiv(L, vconst(L, s, 1.0), y);
  const char *name = "llvm.x86.avx512.rcp14.ps.512";
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  IR_ASSERT(id != 0, "llvm: no intrinsic %s", name);
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(L->mod, id, NULL, 0);
  LLVMValueRef args[3] = {y, LLVMConstNull(s->vt),
                          LLVMConstInt(LLVMInt16TypeInContext(L->ctx), 0xffff, 0)};
  LLVMValueRef r = LLVMBuildCall2(L->b, LLVMIntrinsicGetType(L->ctx, id, NULL, 0), f, args, 3, "");
  return lw_fmul(L, r, lw_fsub(L, vconst(L, s, 2.0), lw_fmul(L, y, r)));
}

/* e^x for x in [-80, 80] (NaN stays NaN): Cody-Waite reduction x = n ln2 + r, n found by the
 * 1.5 2^23 rounding trick, Cephes' degree-7 polynomial for e^r (lw_exp's), 2^n a normal float.
 * Leaner than lw_exp, which must also reach the subnormals; f64 goes to lw_exp. */
static LLVMValueRef gate_exp(Lower *L, const Lstm *s, LLVMValueRef x) {
  if (s->ft != L->f32) return lw_exp(L, x);
  static const double p[] = {1.9875691500E-4,
                             1.3981999507E-3,
                             8.3334519073E-3,
                             4.1665795894E-2,
                             1.6666665459E-1,
                             5.0000001201E-1,
                             1.0,
                             1.0};
  LLVMValueRef magic = vconst(L, s, 12582912.0); /* 1.5 2^23 */
  LLVMValueRef t = lw_fadd(L, lw_fmul(L, x, vconst(L, s, 1.44269504088896341)), magic);
  LLVMValueRef n = lw_fsub(L, t, magic);
  LLVMValueRef r = lw_fsub(L, x, lw_fmul(L, n, vconst(L, s, 0.693359375)));
  r = lw_fsub(L, r, lw_fmul(L, n, vconst(L, s, -2.12194440e-4)));
  LLVMValueRef y = vconst(L, s, p[0]);
  for (int i = 1; i < 8; i++) y = lw_fadd(L, lw_fmul(L, y, r), vconst(L, s, p[i]));
  /* bits(t) = bits(1.5 2^23) + n, so 2^n has the bits (n + 127) << 23. */
  LLVMTypeRef it = s->vl == 1 ? L->i32 : LLVMVectorType(L->i32, (unsigned)s->vl);
  LLVMValueRef ni = LLVMBuildSub(L->b, LLVMBuildBitCast(L->b, t, it, ""),
                                 LLVMBuildBitCast(L->b, magic, it, ""), "");
  LLVMValueRef c127[LSTM_SCRATCH_PAD], c23[LSTM_SCRATCH_PAD];
  for (int l = 0; l < s->vl; l++) c127[l] = lw_i32(L, 127), c23[l] = lw_i32(L, 23);
  LLVMValueRef pow2 = LLVMBuildShl(
      L->b,
      LLVMBuildAdd(L->b, ni, s->vl == 1 ? c127[0] : LLVMConstVector(c127, (unsigned)s->vl), ""),
      s->vl == 1 ? c23[0] : LLVMConstVector(c23, (unsigned)s->vl), "");
  return lw_fmul(L, y, LLVMBuildBitCast(L->b, pow2, s->vt, ""));
}

/* 1 / (1 + e^-x), x clamped to [-80, 80] (past it the result is 0 or 1 anyway, and 1/y never
 * meets an infinity); NaN stays NaN. */
static LLVMValueRef gate_sigmoid(Lower *L, const Lstm *s, LLVMValueRef x) {
  LLVMValueRef lo = vconst(L, s, -80.0), hi = vconst(L, s, 80.0);
  x = lw_select(L, lw_fcmp(L, LLVMRealOLT, x, lo), lo, x);
  x = lw_select(L, lw_fcmp(L, LLVMRealOGT, x, hi), hi, x);
  return recip(L, s, lw_fadd(L, vconst(L, s, 1.0), gate_exp(L, s, lw_fneg(L, x))));
}

/* tanh x = 2 sigmoid(2x) - 1: absolute error a few 1e-7, which is what the gates need (they
 * meet c and h only in sums and products with values of order 1). */
static LLVMValueRef gate_tanh(Lower *L, const Lstm *s, LLVMValueRef x) {
  LLVMValueRef two = vconst(L, s, 2.0);
  return lw_fsub(L, lw_fmul(L, two, gate_sigmoid(L, s, lw_fmul(L, two, x))), vconst(L, s, 1.0));
}

static LLVMValueRef vsub1(Lower *L, const Lstm *s, LLVMValueRef x) {
  return lw_fsub(L, vconst(L, s, 1.0), x);
}

/* ---- Inputs ------------------------------------------------------------- */

/* Row r (b T + t) of x: x's own, or the table row of an inline embedding's id r (Kernel.x_embed:
 * args[0] the ids, the table last); an id out of range reports KILN_ERR_RANGE and reads row 0. */
static LLVMValueRef x_row(Lower *L, const Lstm *s, LLVMValueRef r) {
  if (!L->k->x_embed) return lw_gep(L, s->ft, lw_in(L, 0), lw_mulc(L, r, s->in));
  int64_t vocab = L->k->out->in[0]->in[1]->type.dims[0];
  LLVMValueRef bad, id = lw_load_index(L, 0, r, vocab, &bad);
  LwIf c;
  lw_if(L, &c, bad);
  lw_range_error(L);
  lw_endif(L, &c);
  LLVMValueRef row = lw_select(L, bad, lw_i64(L, 0), id);
  return lw_gep(L, s->ft, lw_in(L, L->k->nargs - 1), lw_mulc(L, row, s->in));
}

/* dy[b, t][j0 ..] (lanes below H - j0): dy's own, or through an inline pad along time
 * (Kernel.dy_pad: args[5] the pad's source): the source's row (b, t - before) inside it, zero
 * outside. */
static LLVMValueRef dy_load(Lower *L, const Lstm *s, LLVMValueRef b, LLVMValueRef t,
                            LLVMValueRef j0) {
  LLVMValueRef left = LLVMBuildSub(L->b, lw_i64(L, s->h), j0, "");
  if (!L->k->dy_pad) {
    LLVMValueRef at = lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, b, s->t), t), s->h), j0);
    return vload_part(L, s, lw_in(L, 5), at, left, s->h);
  }
  const Node *pad = L->k->out->in[5];
  int64_t before = ir_attr_c(pad, "before")->i[1], ts = pad->in[0]->type.dims[1];
  LLVMValueRef ti = lw_addc(L, t, -before);
  LLVMValueRef in = LLVMBuildICmp(L->b, LLVMIntULT, ti, lw_i64(L, ts), "");
  LLVMValueRef tc = lw_smin(L, lw_smax(L, ti, lw_i64(L, 0)), lw_i64(L, ts - 1));
  LLVMValueRef at = lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, b, ts), tc), s->h), j0);
  return lw_select(L, in, vload_part(L, s, lw_in(L, 5), at, left, s->h), LLVMConstNull(s->vt));
}

/* ---- Register-blocked products ------------------------------------------ */

/* One operand pair of a product: A[row][p] = a[row arow + p astep], B[p][v] = b[p bstep + v VL],
 * p < k; with xt, A's rows are x's rows (row T + xt) (x_row: an inline embedding's gathered from
 * its table, once per tile and block; a and arow unused). */
typedef struct Seg {
  LLVMValueRef a, b, k;
  int64_t arow, astep, bstep;
  LLVMValueRef xt;
} Seg;

typedef struct Product Product;

/* Consumes row `row` of a tile: acc[v] = C[row][cv + v], v < nv. */
typedef void ProductEpi(Lower *L, const Lstm *s, const Product *p, LLVMValueRef row,
                        LLVMValueRef cv, LLVMValueRef *acc, int nv);

/* C[row][v] = sum over segments of sum_p A[row][p] B[p][v], for the rows of [r0, r1) and the
 * ncv column vectors, in tiles of mr rows x nv vectors, each row handed to epi. With kb, each
 * segment runs in blocks of kb steps of p, so a block of B (kb x nv vectors) stays in L1 while
 * every tile uses it; the partial sums wait in z (C[row][v] at z[row zrow + v VL]) between blocks
 * and between segments. */
struct Product {
  Seg seg[2];
  int nseg;
  int64_t ncv;
  int mr, nv;
  int64_t kb;     /* 0: each segment in one block */
  LLVMValueRef z; /* partial sums, when more than one block */
  int64_t zrow;
  ProductEpi *epi;
  bool costly; /* epi is long (the gates): one copy in a loop over a tile's rows */
  const void *user;
  LLVMValueRef t; /* the time step, for the gate epilogues */
};

/* Rows of a tile of nv vectors: the accumulators fill at most 24 of AVX-512's 32 registers,
 * 12 of AVX2's 16. */
static int tile_rows(Lower *L, int nv) {
  int mr = (L->avx512 ? 24 : 12) / nv;
  return mr > LSTM_MAX_MR ? LSTM_MAX_MR : mr;
}

/* Rows of a tile of nv vectors for a product over `rows` rows: the fewest tiles times (mr + 1),
 * the one standing for a tile's fixed cost, so with four vectors 4 (no padding) beats 6 on 32
 * rows but not on 12. */
static int fit_tile_rows(Lower *L, int nv, int64_t rows) {
  int best = 1;
  for (int mr = 1; mr <= tile_rows(L, nv); mr++)
    if (ceil_div(rows, mr) * (mr + 1) <= ceil_div(rows, best) * (best + 1)) best = mr;
  return best;
}

/* acc[r][v] += A[row0 + r][p] B[p][cv + v], p < k, a tile's rows at arow[r], B's rows at b. */
static void tile_madd(Lower *L, const Lstm *s, LLVMValueRef *arow, int64_t astep, int mr,
                      LLVMValueRef b, int64_t bstep, LLVMValueRef k, int nv,
                      LLVMValueRef acc[][LSTM_MAX_NV]) {
  LwLoop lp;
  LLVMValueRef p = lw_for(L, &lp, lw_i64(L, 0), k);
  LLVMValueRef brow = lw_mulc(L, p, bstep), bv[LSTM_MAX_NV];
  for (int v = 0; v < nv; v++) bv[v] = vload(L, s, b, lw_addc(L, brow, v * s->vl));
  LLVMValueRef ap = lw_mulc(L, p, astep);
  for (int r = 0; r < mr; r++) {
    LLVMValueRef a = vsplat(L, s, lw_load(L, s->ft, arow[r], ap));
    for (int v = 0; v < nv; v++)
      lw_set(L, acc[r][v], vfma(L, s, a, bv[v], lw_get(L, s->vt, acc[r][v])));
  }
  lw_next(L, &lp);
}

/* Where one block of a segment runs: steps [k0, k0 + k), whether it is the first block of the
 * product (start from zero) and the last (hand the rows on); NULL: known false. */
typedef struct Block {
  const Seg *g;
  LLVMValueRef k0, k, first, last;
} Block;

static bool always(Lower *L, LLVMValueRef cond) { return cond == LLVMConstInt(L->i1, 1, 0); }

/* Hands the tile's rows below r1 to the epilogue: unrolled, or, for a costly one, through a
 * buffer and a loop over the rows (one copy of its code instead of mr). */
static void tile_hand_on(Lower *L, const Lstm *s, const Product *p, LLVMValueRef acc[][LSTM_MAX_NV],
                         LLVMValueRef cv, int nv, LLVMValueRef row0, LLVMValueRef r1) {
  LLVMValueRef vals[LSTM_MAX_NV];
  if (!p->costly) {
    for (int r = 0; r < p->mr; r++) {
      LLVMValueRef row = lw_addc(L, row0, r);
      LwIf in;
      lw_if(L, &in, LLVMBuildICmp(L->b, LLVMIntSLT, row, r1, ""));
      for (int v = 0; v < nv; v++) vals[v] = lw_get(L, s->vt, acc[r][v]);
      p->epi(L, s, p, row, cv, vals, nv);
      lw_endif(L, &in);
    }
    return;
  }
  LLVMValueRef buf = lw_stack(L, s->vt, LSTM_MAX_MR * LSTM_MAX_NV);
  for (int r = 0; r < p->mr; r++)
    for (int v = 0; v < nv; v++)
      lw_store(L, s->vt, buf, lw_i64(L, r * LSTM_MAX_NV + v), lw_get(L, s->vt, acc[r][v]));
  LwLoop lr;
  LLVMValueRef n = lw_smin(L, lw_i64(L, p->mr), LLVMBuildSub(L->b, r1, row0, ""));
  LLVMValueRef r = lw_for(L, &lr, lw_i64(L, 0), n);
  for (int v = 0; v < nv; v++)
    vals[v] = lw_load(L, s->vt, buf, lw_addc(L, lw_mulc(L, r, LSTM_MAX_NV), v));
  p->epi(L, s, p, lw_add(L, row0, r), cv, vals, nv);
  lw_next(L, &lr);
}

/* Every tile of rows [r0, r1) against column vectors [cv, cv + nv) over one block. A tile past
 * r1 reads row r1 - 1 again (this chunk's: another thread may be writing the rows after it). */
static void product_tiles(Lower *L, const Lstm *s, const Product *p, const Block *bk,
                          LLVMValueRef cv, int nv, LLVMValueRef r0, LLVMValueRef r1) {
  LwLoop lt;
  LLVMValueRef span = LLVMBuildSub(L->b, r1, r0, "");
  LLVMValueRef tile = lw_for(L, &lt, lw_i64(L, 0), lw_divc(L, lw_addc(L, span, p->mr - 1), p->mr));
  LLVMValueRef row0 = lw_add(L, r0, lw_mulc(L, tile, p->mr)), last_row = lw_addc(L, r1, -1);
  LLVMValueRef acc[LSTM_MAX_MR][LSTM_MAX_NV], arow[LSTM_MAX_MR], zat[LSTM_MAX_MR];
  LLVMValueRef zero = LLVMConstNull(s->vt), col = lw_mulc(L, cv, s->vl);
  for (int r = 0; r < p->mr; r++) {
    LLVMValueRef row = lw_smin(L, lw_addc(L, row0, r), last_row);
    if (bk->g->xt)
      arow[r] = lw_gep(L, s->ft, x_row(L, s, lw_add(L, lw_mulc(L, row, s->t), bk->g->xt)),
                       lw_mulc(L, bk->k0, bk->g->astep));
    else
      arow[r] = lw_gep(L, s->ft, bk->g->a,
                       lw_add(L, lw_mulc(L, row, bk->g->arow), lw_mulc(L, bk->k0, bk->g->astep)));
    zat[r] = p->z ? lw_add(L, lw_mulc(L, row, p->zrow), col) : NULL;
    for (int v = 0; v < nv; v++) {
      LLVMValueRef init = zero;
      if (!bk->first || !always(L, bk->first)) {
        init = vload(L, s, p->z, lw_addc(L, zat[r], v * s->vl));
        if (bk->first) init = LLVMBuildSelect(L->b, bk->first, zero, init, "");
      }
      acc[r][v] = lw_var(L, s->vt, init);
    }
  }
  LLVMValueRef b = lw_gep(L, s->ft, bk->g->b, lw_add(L, lw_mulc(L, bk->k0, bk->g->bstep), col));
  tile_madd(L, s, arow, bk->g->astep, p->mr, b, bk->g->bstep, bk->k, nv, acc);
  bool maybe_last = bk->last != NULL, maybe_not = !bk->last || !always(L, bk->last);
  LwIf last;
  if (maybe_last && maybe_not) lw_if(L, &last, bk->last);
  if (maybe_last) tile_hand_on(L, s, p, acc, cv, nv, row0, r1);
  if (maybe_last && maybe_not) lw_else(L, &last);
  for (int r = 0; maybe_not && r < p->mr; r++) {
    LwIf in;
    lw_if(L, &in, LLVMBuildICmp(L->b, LLVMIntSLT, lw_addc(L, row0, r), r1, ""));
    for (int v = 0; v < nv; v++)
      vstore(L, s, p->z, lw_addc(L, zat[r], v * s->vl), lw_get(L, s->vt, acc[r][v]));
    lw_endif(L, &in);
  }
  if (maybe_last && maybe_not) lw_endif(L, &last);
  lw_next(L, &lt);
}

/* Column vectors [cv, cv + nv) over every segment, block by block. */
static void product_cols(Lower *L, const Lstm *s, const Product *p, LLVMValueRef cv, int nv,
                         LLVMValueRef r0, LLVMValueRef r1) {
  LLVMValueRef yes = LLVMConstInt(L->i1, 1, 0);
  for (int i = 0; i < p->nseg; i++) {
    const Seg *g = &p->seg[i];
    Block bk = {g, lw_i64(L, 0), g->k, i == 0 ? yes : NULL, i == p->nseg - 1 ? yes : NULL};
    if (!p->kb) {
      product_tiles(L, s, p, &bk, cv, nv, r0, r1);
      continue;
    }
    LwLoop lb;
    LLVMValueRef nb = lw_smax(L, lw_divc(L, lw_addc(L, g->k, p->kb - 1), p->kb), lw_i64(L, 1));
    LLVMValueRef blk = lw_for(L, &lb, lw_i64(L, 0), nb);
    bk.k0 = lw_mulc(L, blk, p->kb);
    bk.k = lw_smin(L, lw_i64(L, p->kb), LLVMBuildSub(L->b, g->k, bk.k0, ""));
    LLVMValueRef at0 = LLVMBuildICmp(L->b, LLVMIntEQ, blk, lw_i64(L, 0), "");
    LLVMValueRef atn = LLVMBuildICmp(L->b, LLVMIntEQ, blk, lw_addc(L, nb, -1), "");
    bk.first = i == 0 ? at0 : NULL;
    bk.last = i == p->nseg - 1 ? atn : NULL;
    product_tiles(L, s, p, &bk, cv, nv, r0, r1);
    lw_next(L, &lb);
  }
}

/* The product over rows [r0, r1): column groups of nv vectors, each against every tile. */
static void product(Lower *L, const Lstm *s, const Product *p, LLVMValueRef r0, LLVMValueRef r1) {
  IR_ASSERT(p->z || (!p->kb && p->nseg == 1), "llvm: an LSTM product in blocks needs partial sums");
  int64_t groups = p->ncv / p->nv, rest = p->ncv % p->nv;
  if (groups > 0) {
    LwLoop lc;
    LLVMValueRef cg = lw_for(L, &lc, lw_i64(L, 0), lw_i64(L, groups));
    product_cols(L, s, p, lw_mulc(L, cg, p->nv), p->nv, r0, r1);
    lw_next(L, &lc);
  }
  if (rest > 0) product_cols(L, s, p, lw_i64(L, groups * p->nv), (int)rest, r0, r1);
}

/* ---- Packing ------------------------------------------------------------ */

/* The weight row (q H + j) of packed gate column g', and whether j < H. */
static LLVMValueRef packed_row(Lower *L, const Lstm *s, LLVMValueRef g, LLVMValueRef *valid) {
  LLVMValueRef jb = lw_divc(L, g, 4 * s->vl), q = lw_remc(L, lw_divc(L, g, s->vl), 4);
  LLVMValueRef j = lw_add(L, lw_mulc(L, jb, s->vl), lw_remc(L, g, s->vl));
  *valid = LLVMBuildICmp(L->b, LLVMIntSLT, j, lw_i64(L, s->h), "");
  return lw_smin(L, lw_add(L, lw_mulc(L, q, s->h), j), lw_i64(L, 4 * s->h - 1));
}

/* dst[g' stride + k] = w[row(g')][k] for k < ncol (w's columns), 0 up to npad and for padded g'. */
static void pack_rows(Lower *L, const Lstm *s, LLVMValueRef dst, int64_t stride, LLVMValueRef w,
                      int64_t ncol, int64_t npad) {
  LwLoop lg, lk;
  LLVMValueRef zero = lw_fc(L, s->ft, 0.0), valid;
  LLVMValueRef g = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, s->g4));
  LLVMValueRef src = lw_gep(L, s->ft, w, lw_mulc(L, packed_row(L, s, g, &valid), ncol));
  LLVMValueRef d = lw_gep(L, s->ft, dst, lw_mulc(L, g, stride));
  LLVMValueRef k = lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, npad));
  LLVMValueRef in =
      LLVMBuildAnd(L->b, valid, LLVMBuildICmp(L->b, LLVMIntSLT, k, lw_i64(L, ncol), ""), "");
  LLVMValueRef x = lw_load(L, s->ft, src, lw_smin(L, k, lw_i64(L, ncol - 1)));
  lw_store(L, s->ft, d, k, lw_select(L, in, x, zero));
  lw_next(L, &lk);
  lw_next(L, &lg);
}

/* The transpose: dst[k stride + g'] = w[row(g')][k], the same zeros. The VL packed columns
 * g' = (jb, q, l) of one (jb, q) are VL consecutive rows of w: tiles of VL rows x VL columns
 * are loaded along w's rows (masked past ncol; zero for rows past H), transposed in registers
 * and stored along dst's rows. Scalar code (VL = 1) takes one element at a time. */
static void pack_cols(Lower *L, const Lstm *s, LLVMValueRef dst, int64_t stride, LLVMValueRef w,
                      int64_t ncol, int64_t npad) {
  LwLoop lg, lk;
  if (s->vl > 1) {
    unsigned vl = (unsigned)s->vl;
    LLVMValueRef gb = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, s->g4 / s->vl));
    LLVMValueRef jb = lw_divc(L, gb, 4), q = lw_remc(L, gb, 4);
    LLVMValueRef j0 = lw_mulc(L, jb, s->vl), r0 = lw_add(L, lw_mulc(L, q, s->h), j0);
    LLVMValueRef k0 = lw_mulc(L, lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, npad / s->vl)), s->vl);
    LLVMTypeRef it = LLVMVectorType(L->i32, vl);
    LLVMValueRef kin = LLVMBuildICmp(L->b, LLVMIntSLT, lw_gemm_lanes(L, k0, s->vl),
                                     lw_gemm_splat(L, it, lw_i32(L, (int32_t)ncol)), "");
    LLVMValueRef v[LSTM_SCRATCH_PAD];
    for (unsigned l = 0; l < vl; l++) {
      LLVMValueRef valid = LLVMBuildICmp(L->b, LLVMIntSLT, lw_addc(L, j0, l), lw_i64(L, s->h), "");
      LLVMValueRef row = lw_smin(L, lw_addc(L, r0, l), lw_i64(L, 4 * s->h - 1));
      LLVMValueRef at = lw_gep(L, s->ft, w, lw_add(L, lw_mulc(L, row, ncol), k0));
      v[l] = lw_select(L, valid, lw_gemm_load_masked(L, s->vl, at, kin), LLVMConstNull(s->vt));
    }
    lw_transpose_tile(L, v, vl);
    LLVMValueRef g0 = lw_mulc(L, gb, s->vl);
    for (unsigned c = 0; c < vl; c++)
      vstore(L, s, dst, lw_add(L, lw_mulc(L, lw_addc(L, k0, c), stride), g0), v[c]);
    lw_next(L, &lk);
    lw_next(L, &lg);
    return;
  }
  LLVMValueRef zero = lw_fc(L, s->ft, 0.0), valid;
  LLVMValueRef k = lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, npad));
  LLVMValueRef kin = LLVMBuildICmp(L->b, LLVMIntSLT, k, lw_i64(L, ncol), "");
  LLVMValueRef src = lw_gep(L, s->ft, w, lw_smin(L, k, lw_i64(L, ncol - 1)));
  LLVMValueRef d = lw_gep(L, s->ft, dst, lw_mulc(L, k, stride));
  LLVMValueRef g = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, s->g4));
  LLVMValueRef x = lw_load(L, s->ft, src, lw_mulc(L, packed_row(L, s, g, &valid), ncol));
  lw_store(L, s->ft, d, g, lw_select(L, LLVMBuildAnd(L->b, kin, valid, ""), x, zero));
  lw_next(L, &lg);
  lw_next(L, &lk);
}

/* Wf = [W_ih^T (Ip rows); W_hh^T (Hp rows)] in packed gate order, and the summed biases. */
static void pack_forward(Lower *L, const Lstm *s, LLVMValueRef wf, LLVMValueRef bias) {
  pack_cols(L, s, wf, s->sg, lw_in(L, 1), s->in, s->ip);
  pack_cols(L, s, lw_gep(L, s->ft, wf, lw_i64(L, s->ip * s->sg)), s->sg, lw_in(L, 2), s->h, s->hp);
  LwLoop lg;
  LLVMValueRef valid, g = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, s->g4));
  LLVMValueRef row = packed_row(L, s, g, &valid);
  LLVMValueRef b =
      lw_fadd(L, lw_load(L, s->ft, lw_in(L, 3), row), lw_load(L, s->ft, lw_in(L, 4), row));
  lw_store(L, s->ft, bias, g, lw_select(L, valid, b, lw_fc(L, s->ft, 0.0)));
  lw_next(L, &lg);
}

static void fill_zero(Lower *L, const Lstm *s, LLVMValueRef p, LLVMValueRef from, LLVMValueRef n) {
  lw_zero(L, lw_gep(L, s->ft, p, from),
          lw_mulc(L, n, (int64_t)LLVMABISizeOfType(LLVMGetModuleDataLayout(L->mod), s->ft)));
}

/* ---- Gates -------------------------------------------------------------- */

typedef struct Gates {
  LLVMValueRef i, f, g, o;
} Gates;

/* The activated gates of pre-activations acc + bias (gate q at bias[cv VL + q VL]). */
static Gates activate(Lower *L, const Lstm *s, LLVMValueRef bias, LLVMValueRef cv,
                      LLVMValueRef *acc) {
  LLVMValueRef z[4];
  for (int q = 0; q < 4; q++)
    z[q] = lw_fadd(L, acc[q], vload(L, s, bias, lw_mulc(L, lw_addc(L, cv, q), s->vl)));
  Gates g = {gate_sigmoid(L, s, z[0]), gate_sigmoid(L, s, z[1]), gate_tanh(L, s, z[2]),
             gate_sigmoid(L, s, z[3])};
  return g;
}

/* The forward's buffers. */
typedef struct Fwd {
  LLVMValueRef bias, c; /* c: the cell state [B][Hp] */
} Fwd;

/* lstm: c = f c + i g, h = o tanh(c); h is the output's row (b, t). */
static void epi_forward(Lower *L, const Lstm *s, const Product *p, LLVMValueRef row,
                        LLVMValueRef cv, LLVMValueRef *acc, int nv) {
  (void)nv;
  const Fwd *f = p->user;
  Gates g = activate(L, s, f->bias, cv, acc);
  LLVMValueRef j0 = lw_mulc(L, lw_divc(L, cv, 4), s->vl);
  LLVMValueRef at = lw_add(L, lw_mulc(L, row, s->hp), j0);
  LLVMValueRef c = lw_fadd(L, lw_fmul(L, g.f, vload(L, s, f->c, at)), lw_fmul(L, g.i, g.g));
  vstore(L, s, f->c, at, c);
  LLVMValueRef y = lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, row, s->t), p->t), s->h), j0);
  vstore_part(L, s, lw_out(L), y, LLVMBuildSub(L->b, lw_i64(L, s->h), j0, ""), s->h,
              lw_fmul(L, g.o, gate_tanh(L, s, c)));
}

/* The vector width for a value of this type. */
static int lstm_lanes(Lower *L, LLVMTypeRef ft) {
  if (ft != L->f32) return 1;
  return L->avx512 ? 16 : 8;
}

static Lstm lstm_for(Lower *L, const Node *n, bool tape) {
  LLVMTypeRef ft = lw_elt(L, n->type.dtype);
  Lstm s = lstm_shape(n, lstm_lanes(L, ft));
  s.ft = ft;
  s.vt = s.vl == 1 ? ft : LLVMVectorType(ft, (unsigned)s.vl);
  LstmScratch r = lstm_scratch(&s, tape || n->op == OP_LSTM_GRAD);
  IR_ASSERT(r.total * (int64_t)ir_dtype_size(n->type.dtype) <= L->k->scratch_bytes,
            "llvm: kernel %s needs more scratch than llvm_scratch_bytes gave it", L->k->name);
  return s;
}

/* nn.LSTM(batch_first), h0 = c0 = 0: blocks of batch rows per outer iteration; a chunk of
 * blocks packs the weights into its own slot (the first block's), then steps through time. */
static void lower_lstm_tape(Lower *L, Kernel *k);

void lower_lstm(Lower *L, Kernel *k) {
  const Node *n = k->out;
  if (llvm_lstm_pair(L->p->g, n)) {
    lower_lstm_tape(L, k);
    return;
  }
  Lstm s = lstm_for(L, n, false);
  LstmScratch sc = lstm_scratch(&s, false);
  k->range = s.blocks;
  k->min_chunk = 1;
  LLVMValueRef slot = lw_gep(L, s.ft, lw_scratch(L), lw_mulc(L, L->begin, sc.slot));
  LLVMValueRef wf = lw_gep(L, s.ft, slot, lw_i64(L, sc.wf));
  Fwd f = {lw_gep(L, s.ft, slot, lw_i64(L, sc.bias - sc.wf)),
           lw_gep(L, s.ft, lw_scratch(L), lw_i64(L, sc.c))};
  LLVMValueRef z = lw_gep(L, s.ft, lw_scratch(L), lw_i64(L, sc.z));
  pack_forward(L, &s, wf, f.bias);
  LLVMValueRef r0 = lw_mulc(L, L->begin, s.rows);
  LLVMValueRef r1 = lw_smin(L, lw_mulc(L, L->end, s.rows), lw_i64(L, s.b));
  fill_zero(L, &s, f.c, lw_mulc(L, r0, s.hp), lw_mulc(L, LLVMBuildSub(L->b, r1, r0, ""), s.hp));
  LwLoop lt;
  LLVMValueRef t = lw_for(L, &lt, lw_i64(L, 0), lw_i64(L, s.t));
  LLVMValueRef prev = lw_smax(L, lw_addc(L, t, -1), lw_i64(L, 0));
  LLVMValueRef has_h = LLVMBuildICmp(L->b, LLVMIntSGT, t, lw_i64(L, 0), "");
  Product p = {.seg = {{k->x_embed ? NULL : lw_gep(L, s.ft, lw_in(L, 0), lw_mulc(L, t, s.in)), wf,
                        lw_i64(L, s.in), s.t * s.in, 1, s.sg, k->x_embed ? t : NULL},
                       {lw_gep(L, s.ft, lw_out(L), lw_mulc(L, prev, s.h)),
                        lw_gep(L, s.ft, wf, lw_i64(L, s.ip * s.sg)),
                        LLVMBuildSelect(L->b, has_h, lw_i64(L, s.h), lw_i64(L, 0), ""), s.t * s.h,
                        1, s.sg, NULL}},
               .nseg = 2,
               .ncv = s.g4 / s.vl,
               .nv = 4,
               .mr = fit_tile_rows(L, 4, s.rows),
               .kb = LSTM_KB,
               .z = z,
               .zrow = s.sg,
               .epi = epi_forward,
               .costly = true,
               .user = &f,
               .t = t};
  product(L, &s, &p, r0, r1);
  lw_next(L, &lt);
}

/* ---- lstm_grad ---------------------------------------------------------- */

/* lstm_grad's scratch arrays (LstmScratch) and its inputs. */
typedef struct Bwd {
  LLVMValueRef wf, bias, wbh, wbi, xh, gates, ct, dc, z, dw, db;
  LLVMValueRef out; /* the forward lstm's h [B, T, H] when it writes the tape; else NULL */
} Bwd;

/* The forward again: the activated gates, c_t, and h_t into row t+1 of the tape. */
static void epi_tape(Lower *L, const Lstm *s, const Product *p, LLVMValueRef row, LLVMValueRef cv,
                     LLVMValueRef *acc, int nv) {
  (void)nv;
  const Bwd *w = p->user;
  Gates g = activate(L, s, w->bias, cv, acc);
  LLVMValueRef bt = lw_add(L, lw_mulc(L, row, s->t), p->t);
  LLVMValueRef ga = lw_add(L, lw_mulc(L, bt, s->sg), lw_mulc(L, cv, s->vl));
  LLVMValueRef act[4] = {g.i, g.f, g.g, g.o};
  for (int q = 0; q < 4; q++) vstore(L, s, w->gates, lw_addc(L, ga, q * s->vl), act[q]);
  LLVMValueRef j0 = lw_mulc(L, lw_divc(L, cv, 4), s->vl);
  LLVMValueRef cp = lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, row, s->t + 1), p->t), s->hp), j0);
  LLVMValueRef c = lw_fadd(L, lw_fmul(L, g.f, vload(L, s, w->ct, cp)), lw_fmul(L, g.i, g.g));
  vstore(L, s, w->ct, lw_addc(L, cp, s->hp), c);
  LLVMValueRef h = lw_fmul(L, g.o, gate_tanh(L, s, c));
  if (w->out) /* the forward lstm itself: h is its output's row (b, t) */
    vstore_part(L, s, w->out, lw_add(L, lw_mulc(L, bt, s->h), j0),
                LLVMBuildSub(L->b, lw_i64(L, s->h), j0, ""), s->h, h);
  LwIf more;
  lw_if(L, &more, LLVMBuildICmp(L->b, LLVMIntSLT, p->t, lw_i64(L, s->t - 1), ""));
  vstore(L, s, w->xh, lw_add(L, lw_mulc(L, lw_addc(L, bt, 1), s->sx), lw_addc(L, j0, s->ip)), h);
  lw_endif(L, &more);
}

/* Step t backward for hidden vectors cv ..: dh = dy_t + acc, then dZ_t over the gates and the
 * cell gradient carried to step t-1. */
static void epi_backward(Lower *L, const Lstm *s, const Product *p, LLVMValueRef row,
                         LLVMValueRef cv, LLVMValueRef *acc, int nv) {
  const Bwd *w = p->user;
  LLVMValueRef bt = lw_add(L, lw_mulc(L, row, s->t), p->t);
  for (int v = 0; v < nv; v++) {
    LLVMValueRef jb = lw_addc(L, cv, v), j0 = lw_mulc(L, jb, s->vl);
    LLVMValueRef dh = lw_fadd(L, acc[v], dy_load(L, s, row, p->t, j0));
    LLVMValueRef ga = lw_add(L, lw_mulc(L, bt, s->sg), lw_mulc(L, jb, 4 * s->vl));
    LLVMValueRef i = vload(L, s, w->gates, ga), f = vload(L, s, w->gates, lw_addc(L, ga, s->vl));
    LLVMValueRef g = vload(L, s, w->gates, lw_addc(L, ga, 2 * s->vl));
    LLVMValueRef o = vload(L, s, w->gates, lw_addc(L, ga, 3 * s->vl));
    LLVMValueRef cp = lw_add(L, lw_mulc(L, lw_add(L, lw_mulc(L, row, s->t + 1), p->t), s->hp), j0);
    LLVMValueRef cprev = vload(L, s, w->ct, cp),
                 tc = gate_tanh(L, s, vload(L, s, w->ct, lw_addc(L, cp, s->hp)));
    LLVMValueRef at = lw_add(L, lw_mulc(L, row, s->hp), j0);
    LLVMValueRef dc = lw_fadd(L, vload(L, s, w->dc, at),
                              lw_fmul(L, lw_fmul(L, dh, o), vsub1(L, s, lw_fmul(L, tc, tc))));
    LLVMValueRef dz[4] = {
        lw_fmul(L, lw_fmul(L, lw_fmul(L, dc, g), i), vsub1(L, s, i)),
        lw_fmul(L, lw_fmul(L, lw_fmul(L, dc, cprev), f), vsub1(L, s, f)),
        lw_fmul(L, lw_fmul(L, dc, i), vsub1(L, s, lw_fmul(L, g, g))),
        lw_fmul(L, lw_fmul(L, lw_fmul(L, dh, tc), o), vsub1(L, s, o)),
    };
    for (int q = 0; q < 4; q++) vstore(L, s, w->gates, lw_addc(L, ga, q * s->vl), dz[q]);
    vstore(L, s, w->dc, at, lw_fmul(L, dc, f));
  }
}

/* dW^T[col][cv ..] = acc */
static void epi_dw(Lower *L, const Lstm *s, const Product *p, LLVMValueRef row, LLVMValueRef cv,
                   LLVMValueRef *acc, int nv) {
  const Bwd *w = p->user;
  LLVMValueRef at = lw_add(L, lw_mulc(L, row, s->sg), lw_mulc(L, cv, s->vl));
  for (int v = 0; v < nv; v++) vstore(L, s, w->dw, lw_addc(L, at, v * s->vl), acc[v]);
}

/* dx[b, t][cv ..] = acc */
static void epi_dx(Lower *L, const Lstm *s, const Product *p, LLVMValueRef row, LLVMValueRef cv,
                   LLVMValueRef *acc, int nv) {
  (void)p;
  for (int v = 0; v < nv; v++) {
    LLVMValueRef k0 = lw_mulc(L, lw_addc(L, cv, v), s->vl);
    vstore_part(L, s, lw_out(L), lw_add(L, lw_mulc(L, row, s->in), k0),
                LLVMBuildSub(L->b, lw_i64(L, s->in), k0, ""), s->in, acc[v]);
  }
}

/* Packed weights and zero db (phase 0). */
static void grad_pack(Lower *L, const Lstm *s, const Bwd *w) {
  pack_forward(L, s, w->wf, w->bias);
  pack_rows(L, s, w->wbh, s->sh, lw_in(L, 2), s->h, s->hp);
  pack_rows(L, s, w->wbi, s->si, lw_in(L, 1), s->in, s->ip);
  fill_zero(L, s, w->db, lw_i64(L, 0), lw_i64(L, s->g4));
}

/* Batch rows [r0, r1): the tape's x columns (zero padded), its zero initial h and c, zero
 * carried dc. */
static void grad_rows_prepare(Lower *L, const Lstm *s, const Bwd *w, LLVMValueRef r0,
                              LLVMValueRef r1) {
  LwLoop lr, lk;
  LLVMValueRef r = lw_for(L, &lr, lw_mulc(L, r0, s->t), lw_mulc(L, r1, s->t)), xr = x_row(L, s, r);
  LLVMValueRef k = lw_for(L, &lk, lw_i64(L, 0), lw_i64(L, s->ip));
  LLVMValueRef x = lw_load(L, s->ft, xr, lw_smin(L, k, lw_i64(L, s->in - 1)));
  lw_store(L, s->ft, w->xh, lw_add(L, lw_mulc(L, r, s->sx), k),
           lw_select(L, LLVMBuildICmp(L->b, LLVMIntSLT, k, lw_i64(L, s->in), ""), x,
                     lw_fc(L, s->ft, 0.0)));
  lw_next(L, &lk);
  lw_next(L, &lr);
  LLVMValueRef b = lw_for(L, &lr, r0, r1);
  fill_zero(L, s, w->xh, lw_addc(L, lw_mulc(L, b, s->t * s->sx), s->ip), lw_i64(L, s->hp));
  fill_zero(L, s, w->ct, lw_mulc(L, b, (s->t + 1) * s->hp), lw_i64(L, s->hp));
  lw_next(L, &lr);
  fill_zero(L, s, w->dc, lw_mulc(L, r0, s->hp), lw_mulc(L, LLVMBuildSub(L->b, r1, r0, ""), s->hp));
}

/* The forward over batch rows [r0, r1), recording the tape. */
static void grad_forward(Lower *L, const Lstm *s, Bwd *w, LLVMValueRef r0, LLVMValueRef r1) {
  LwLoop lt;
  LLVMValueRef t = lw_for(L, &lt, lw_i64(L, 0), lw_i64(L, s->t));
  LLVMValueRef k = LLVMBuildSelect(L->b, LLVMBuildICmp(L->b, LLVMIntSGT, t, lw_i64(L, 0), ""),
                                   lw_i64(L, s->kx), lw_i64(L, s->ip), "");
  Product p = {.seg = {{lw_gep(L, s->ft, w->xh, lw_mulc(L, t, s->sx)), w->wf, k, s->t * s->sx, 1,
                        s->sg, NULL}},
               .nseg = 1,
               .ncv = s->g4 / s->vl,
               .nv = 4,
               .mr = fit_tile_rows(L, 4, s->b),
               .kb = LSTM_KB,
               .z = w->z,
               .zrow = s->sg,
               .epi = epi_tape,
               .costly = true,
               .user = w,
               .t = t};
  product(L, s, &p, r0, r1);
  lw_next(L, &lt);
}

/* Backward through time over batch rows [r0, r1): dZ_t over the gates from dZ_{t+1} W_hh,
 * t = T-1 .. 0. */
static void grad_through_time(Lower *L, const Lstm *s, Bwd *w, LLVMValueRef r0, LLVMValueRef r1) {
  LwLoop lt;
  LLVMValueRef tt = lw_for(L, &lt, lw_i64(L, 0), lw_i64(L, s->t));
  LLVMValueRef t = LLVMBuildSub(L->b, lw_i64(L, s->t - 1), tt, "");
  LLVMValueRef next = lw_smin(L, lw_addc(L, t, 1), lw_i64(L, s->t - 1));
  LLVMValueRef k = LLVMBuildSelect(L->b, LLVMBuildICmp(L->b, LLVMIntSGT, tt, lw_i64(L, 0), ""),
                                   lw_i64(L, s->g4), lw_i64(L, 0), "");
  int64_t ncv = s->hp / s->vl;
  int nv = ncv < 2 ? (int)ncv : 2;
  Product p = {.seg = {{lw_gep(L, s->ft, w->gates, lw_mulc(L, next, s->sg)), w->wbh, k,
                        s->t * s->sg, 1, s->sh, NULL}},
               .nseg = 1,
               .ncv = ncv,
               .nv = nv,
               .mr = fit_tile_rows(L, nv, s->b),
               .kb = LSTM_KB,
               .z = w->z,
               .zrow = s->sg, /* the forward's rows: a block of rows owns the same z */
               .epi = epi_backward,
               .costly = true,
               .user = w,
               .t = t};
  product(L, s, &p, r0, r1);
  lw_next(L, &lt);
}

/* Rows [k0, k1) of [dW_ih | dW_hh]^T = [X | H_prev]^T dZ (rows the tape's columns, vectors
 * along the gates), unpacked into the output. */
static void grad_weights(Lower *L, const Lstm *s, Bwd *w, LLVMValueRef k0, LLVMValueRef k1) {
  int64_t n = s->b * s->t, ncv = s->g4 / s->vl;
  int nv = ncv < LSTM_MAX_NV ? (int)ncv : LSTM_MAX_NV;
  LwLoop lg, lk;
  Product p = {.seg = {{w->xh, w->gates, lw_i64(L, n), 1, s->sx, s->sg, NULL}},
               .nseg = 1,
               .ncv = ncv,
               .nv = nv,
               .mr = fit_tile_rows(L, nv, s->kx),
               .kb = LSTM_KB,
               .z = w->dw,
               .zrow = s->sg,
               .epi = epi_dw,
               .user = w};
  product(L, s, &p, k0, k1);
  LLVMValueRef dwih = lw_gep(L, s->ft, lw_out(L), lw_i64(L, s->b * s->t * s->in));
  LLVMValueRef dwhh = lw_gep(L, s->ft, dwih, lw_i64(L, 4 * s->h * s->in));
  LLVMValueRef valid, g = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, s->g4));
  LLVMValueRef row = packed_row(L, s, g, &valid);
  LwIf in;
  lw_if(L, &in, valid);
  LLVMValueRef src = lw_gep(L, s->ft, w->dw, g);
  LLVMValueRef k = lw_for(L, &lk, k0, lw_smin(L, k1, lw_i64(L, s->in)));
  lw_store(L, s->ft, dwih, lw_add(L, lw_mulc(L, row, s->in), k),
           lw_load(L, s->ft, src, lw_mulc(L, k, s->sg)));
  lw_next(L, &lk);
  k = lw_for(L, &lk, lw_smax(L, k0, lw_i64(L, s->ip)), lw_smin(L, k1, lw_i64(L, s->ip + s->h)));
  lw_store(L, s->ft, dwhh, lw_add(L, lw_mulc(L, row, s->h), lw_addc(L, k, -s->ip)),
           lw_load(L, s->ft, src, lw_mulc(L, k, s->sg)));
  lw_next(L, &lk);
  lw_endif(L, &in);
  lw_next(L, &lg);
}

/* db = sum dZ over all steps, unpacked into the output. */
static void grad_bias(Lower *L, const Lstm *s, Bwd *w) {
  int64_t n = s->b * s->t;
  LwLoop lr, lg;
  LLVMValueRef r = lw_for(L, &lr, lw_i64(L, 0), lw_i64(L, n));
  LLVMValueRef gv = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, s->g4 / s->vl));
  LLVMValueRef at = lw_mulc(L, gv, s->vl);
  vstore(L, s, w->db, at,
         lw_fadd(L, vload(L, s, w->db, at),
                 vload(L, s, w->gates, lw_add(L, lw_mulc(L, r, s->sg), at))));
  lw_next(L, &lg);
  lw_next(L, &lr);
  LLVMValueRef db = lw_gep(L, s->ft, lw_out(L),
                           lw_i64(L, s->b * s->t * s->in + 4 * s->h * s->in + 4 * s->h * s->h));
  LLVMValueRef valid, g = lw_for(L, &lg, lw_i64(L, 0), lw_i64(L, s->g4));
  LLVMValueRef row = packed_row(L, s, g, &valid);
  LwIf in;
  lw_if(L, &in, valid);
  lw_store(L, s->ft, db, row, lw_load(L, s->ft, w->db, g));
  lw_endif(L, &in);
  lw_next(L, &lg);
}

/* Rows [r0, r1) (of B T) of dX = dZ W_ih. */
static void grad_input(Lower *L, const Lstm *s, Bwd *w, LLVMValueRef r0, LLVMValueRef r1) {
  int64_t ncv = s->ip / s->vl;
  int nv = ncv < LSTM_MAX_NV ? (int)ncv : LSTM_MAX_NV;
  Product p = {.seg = {{w->gates, w->wbi, lw_i64(L, s->g4), s->sg, 1, s->si, NULL}},
               .nseg = 1,
               .ncv = ncv,
               .nv = nv,
               .mr = fit_tile_rows(L, nv, s->b * s->t),
               .kb = LSTM_KB,
               .z = w->z,
               .zrow = s->si,
               .epi = epi_dx,
               .user = w};
  product(L, s, &p, r0, r1);
}

/* Rows of one outer iteration of lstm_grad's weight (phase 2) and input (phase 3) products. */
#define LSTM_GRAD_WROWS 24
#define LSTM_GRAD_XROWS 96

/* The phases run as one launch: chunks of kiln_parallel_for (one per thread: LSTM_JOB_RANGE
 * covers every thread count the runtime allows) split each phase's own iterations, with
 * kiln_job_barrier between phases. */
#define LSTM_JOB_RANGE 4096

/* This thread's chunk index and the job's chunk count (kiln_job_shape). */
static void job_shape(Lower *L, LLVMValueRef *index, LLVMValueRef *count) {
  LLVMTypeRef ps[2] = {L->ptr, L->ptr};
  LLVMTypeRef ft = LLVMFunctionType(L->voidt, ps, 2, 0);
  LLVMValueRef f = LLVMGetNamedFunction(L->mod, "kiln_job_shape");
  if (!f) f = LLVMAddFunction(L->mod, "kiln_job_shape", ft);
  LLVMValueRef slots = lw_stack(L, L->i64, 2);
  LLVMValueRef args[2] = {slots, lw_gep(L, L->i64, slots, lw_i64(L, 1))};
  LLVMBuildCall2(L->b, ft, f, args, 2, "");
  *index = lw_load(L, L->i64, slots, lw_i64(L, 0));
  *count = lw_load(L, L->i64, slots, lw_i64(L, 1));
}

/* Waits for every chunk of the job (kiln_job_barrier). */
static void job_barrier(Lower *L) {
  LLVMTypeRef ft = LLVMFunctionType(L->voidt, NULL, 0, 0);
  LLVMValueRef f = LLVMGetNamedFunction(L->mod, "kiln_job_barrier");
  if (!f) f = LLVMAddFunction(L->mod, "kiln_job_barrier", ft);
  LLVMBuildCall2(L->b, ft, f, NULL, 0, "");
}

/* Sets L->begin and L->end to this chunk's share of a phase of n iterations (as the runtime
 * splits a job: the first n % count chunks get one more). */
static void phase_share(Lower *L, int64_t n, LLVMValueRef index, LLVMValueRef count) {
  LLVMValueRef nn = lw_i64(L, n);
  LLVMValueRef base = LLVMBuildSDiv(L->b, nn, count, ""), rem = LLVMBuildSRem(L->b, nn, count, "");
  LLVMValueRef extra = LLVMBuildICmp(L->b, LLVMIntSLT, index, rem, "");
  L->begin = lw_add(L, lw_mul(L, index, base), lw_smin(L, index, rem));
  L->end = lw_add(L, lw_add(L, L->begin, base), LLVMBuildZExt(L->b, extra, L->i64, ""));
}

/* lstm_grad's scratch arrays in the kernel's scratch. */
static Bwd bwd_arrays(Lower *L, const Lstm *s, const LstmScratch *sc) {
  LLVMValueRef base = lw_scratch(L);
#define AT(f) lw_gep(L, s->ft, base, lw_i64(L, sc->f))
  Bwd w = {AT(wf), AT(bias), AT(wbh), AT(wbi), AT(xh), AT(gates),
           AT(ct), AT(dc),   AT(z),   AT(dw),  AT(db), NULL};
#undef AT
  return w;
}

/* A thread's rows [r0, r1) of the chunk [begin, end) of iterations of `rows` rows each. */
static void chunk_rows(Lower *L, int64_t rows, int64_t total, LLVMValueRef *r0, LLVMValueRef *r1) {
  *r0 = lw_smin(L, lw_mulc(L, L->begin, rows), lw_i64(L, total));
  *r1 = lw_smin(L, lw_mulc(L, L->end, rows), lw_i64(L, total));
}

/* A phased LSTM kernel's start: its shape and scratch arrays, launched over one chunk per
 * thread, this chunk's index and the job's count, and the launch's own begin and end (restored
 * after the phases, which set their own). */
typedef struct Phased {
  Lstm s;
  Bwd w;
  LLVMValueRef index, count, begin, end;
} Phased;

static Phased phased_begin(Lower *L, Kernel *k) {
  Phased ph = {.s = lstm_for(L, k->out, true), .begin = L->begin, .end = L->end};
  LstmScratch sc = lstm_scratch(&ph.s, true);
  ph.w = bwd_arrays(L, &ph.s, &sc);
  k->min_chunk = 1;
  k->range = LSTM_JOB_RANGE;
  job_shape(L, &ph.index, &ph.count);
  return ph;
}

/* The first chunk packs the weights (grad_pack); every chunk then waits for it. */
static void pack_then_wait(Lower *L, const Lstm *s, const Bwd *w, LLVMValueRef index) {
  LwIf first;
  lw_if(L, &first, LLVMBuildICmp(L->b, LLVMIntEQ, index, lw_i64(L, 0), ""));
  grad_pack(L, s, w);
  lw_endif(L, &first);
  job_barrier(L);
}

/* An lstm whose lstm_grad reads its tape (llvm_lstm_pair): both use lstm_grad's scratch, which
 * the layout keeps from the forward to the backward. Phase 0 packs every weight the two need and
 * zeroes db; phase 1, per block of batch rows, runs the forward recording the tape (the
 * activated gates, c_t, [x_t | h_{t-1}]) and writing h, so lstm_grad never recomputes it. */
static void lower_lstm_tape(Lower *L, Kernel *k) {
  Phased ph = phased_begin(L, k);
  Lstm s = ph.s;
  Bwd w = ph.w;
  pack_then_wait(L, &s, &w, ph.index);
  phase_share(L, s.blocks, ph.index, ph.count);
  w.out = lw_out(L);
  LLVMValueRef r0, r1;
  chunk_rows(L, s.rows, s.b, &r0, &r1);
  LwIf some;
  lw_if(L, &some, LLVMBuildICmp(L->b, LLVMIntSLT, r0, r1, ""));
  grad_rows_prepare(L, &s, &w, r0, r1);
  grad_forward(L, &s, &w, r0, r1);
  lw_endif(L, &some);
  L->begin = ph.begin, L->end = ph.end;
}

/* lstm_grad(x, w_ih, w_hh, b_ih, b_hh, dy) -> [dx | dw_ih | dw_hh | db]: the forward recomputed
 * with a tape, backward through time, then the weight and input gradients as products over all
 * steps, in four phases sharing the scratch, one launch with a barrier between phases:
 *   0: the packed weights (the first chunk);
 *   1: per block of batch rows, the forward with its tape and the backward through time (rows
 *      are independent through time);
 *   2: per block of rows of dW^T (tape columns), their product over all steps; one more
 *      iteration sums db;
 *   3: per block of rows (b, t), dX.
 * Paired with its forward lstm (llvm_lstm_pair), phase 0 and the forward are the lstm's: the
 * launch starts at the backward through time. Each chunk splits every phase's iterations as
 * the runtime splits a job, and runs its share as one product over its rows. */
static void grad_phase(Lower *L, const Lstm *s, Bwd *w, int phase, bool paired, const Phased *ph) {
  int64_t rows = 1, total = 1, nw = ceil_div(s->kx, LSTM_GRAD_WROWS);
  switch (phase) {
  case 1:
    rows = s->rows, total = s->b;
    break;
  case 2:
    rows = LSTM_GRAD_WROWS, total = s->kx;
    break;
  default:
    rows = LSTM_GRAD_XROWS, total = s->b * s->t;
    break;
  }
  /* This chunk's share of the phase's iterations (the weight gradients' one more: db). */
  phase_share(L, ceil_div(total, rows) + (phase == 2), ph->index, ph->count);
  LLVMValueRef r0, r1;
  chunk_rows(L, rows, total, &r0, &r1);
  LwIf some;
  lw_if(L, &some, LLVMBuildICmp(L->b, LLVMIntSLT, r0, r1, ""));
  if (phase == 1) {
    if (!paired) {
      grad_rows_prepare(L, s, w, r0, r1);
      grad_forward(L, s, w, r0, r1);
    }
    grad_through_time(L, s, w, r0, r1);
  } else if (phase == 2) {
    grad_weights(L, s, w, r0, r1);
  } else {
    grad_input(L, s, w, r0, r1);
  }
  lw_endif(L, &some);
  if (phase == 2) {
    LwIf last;
    lw_if(L, &last, LLVMBuildICmp(L->b, LLVMIntSGT, L->end, lw_i64(L, nw), ""));
    grad_bias(L, s, w);
    lw_endif(L, &last);
  }
}

void lower_lstm_grad(Lower *L, Kernel *k) {
  bool paired = llvm_lstm_pair(L->p->g, k->out) != NULL;
  Phased ph = phased_begin(L, k);
  Lstm s = ph.s;
  Bwd w = ph.w;
  if (!paired) pack_then_wait(L, &s, &w, ph.index);
  for (int phase = 1; phase < 4; phase++) {
    if (phase > 1) job_barrier(L);
    grad_phase(L, &s, &w, phase, paired, &ph);
  }
  L->begin = ph.begin, L->end = ph.end;
}
