/* optimizer.c - the optimizer step as IR: SGD / Adam update nodes and their state.
 * Needs: the loss, its optimizer (g->optim) and a gradient per param (autodiff).
 * Guarantees: an update for every param with a gradient and for every state
 * the rule keeps, built from elementwise ops and scalar constants, so later
 * passes fold, fuse and plan them like the rest of the step.
 *
 * The rules are torch.optim's (PyTorch 1.13, SGD without dampening or
 * nesterov, Adam without amsgrad), each scalar constant rounded to the
 * param's dtype as PyTorch rounds a Python scalar, in PyTorch's order:
 *
 *   SGD   g' = g + wd*p                      (only if wd != 0)
 *         buf = buf*momentum + g'; s = buf  (if momentum != 0, else s = g')
 *         p  = p - lr*s
 *   Adam  t  = step + 1
 *         g' = g + wd*p                      (only if wd != 0)
 *         m  = m*b1 + (1-b1)*g'
 *         v  = v*b2 + ((1-b2)*g')*g'
 *         bc1 = 1 - b1^t, bc2 = 1 - b2^t
 *         p  = p - ((lr/bc1)*m) / (sqrt(v)/sqrt(bc2) + eps)
 *
 * PyTorch computes the bias corrections in double. In the param's dtype,
 * 1 - exp(t ln b) would cancel (for b2 = 0.999 at t = 1 it keeps 4 of f32's
 * 7 digits), so bc = -expm1(t ln b) comes from the exact identity
 * expm1(x) = 2 tanh(x/2) / (1 - tanh(x/2)): no subtraction of near equals.
 *
 * State starts at zero: SGD's first step then gives buf = g' exactly as
 * PyTorch's buf = clone(g'). Names are PyTorch's state names under "optim.":
 * optim.<param>.momentum_buffer, optim.<param>.exp_avg,
 * optim.<param>.exp_avg_sq, and one shared step counter optim.step (a
 * scalar of the params' dtype: f32[], exact to 2^24 steps; in a model that mixes f32 and f64
 * params, the params of the second dtype count in optim.step_<dtype>). */
#include "passes.h"

#include <math.h>

typedef struct Opt {
  Graph *g;
  Loc loc;
  /* Adam's per-dtype scalars, built on first use. */
  Node *step_size[DT_COUNT]; /* lr / bc1 */
  Node *sqrt_bc2[DT_COUNT];
  bool have_step;
} Opt;

static Node *opt_op(Opt *o, OpKind op, Node *a, Node *b) {
  Node *in[2] = {a, b};
  Node *n = ir_node_new(o->g, op, in, b ? 2 : 1, o->loc);
  char msg[256];
  IR_ASSERT(ir_infer_type(n, msg, sizeof msg), "optimizer: %s node: %s", ir_op_name(op), msg);
  return n;
}

/* A scalar constant of dtype dt: the interpreter and backends round it to dt. */
static Node *opt_const(Opt *o, DType dt, double v) {
  Node *n = ir_node_new(o->g, OP_CONST, NULL, 0, o->loc);
  n->type = ir_type(dt, 0, NULL);
  ir_set_attr_float(n, "value", v);
  char msg[256];
  IR_ASSERT(ir_infer_type(n, msg, sizeof msg), "optimizer: const: %s", msg);
  return n;
}

/* A zero-initialized state named optim.<owner>.<what> (optim.<what> without owner). */
static Node *opt_state(Opt *o, const Type *t, const char *owner, const char *what) {
  Node *n = ir_node_new(o->g, OP_STATE, NULL, 0, o->loc);
  n->type = *t;
  n->name = owner ? arena_printf(&o->g->arena, "optim.%s.%s", owner, what)
                  : arena_printf(&o->g->arena, "optim.%s", what);
  char msg[256];
  IR_ASSERT(ir_infer_type(n, msg, sizeof msg), "optimizer: state %s: %s", n->name, msg);
  return n;
}

/* a*c for a scalar constant c. */
static Node *opt_scale(Opt *o, Node *a, double c) {
  return opt_op(o, OP_MUL, opt_const(o, a->type.dtype, c), a);
}

/* g + wd*p, PyTorch's grad.add(param, alpha=wd); g itself when wd is 0. */
static Node *opt_decayed_grad(Opt *o, Node *p, Node *grad, double wd) {
  if (wd == 0) return grad;
  return opt_op(o, OP_ADD, grad, opt_scale(o, p, wd));
}

/* p - lr*s for SGD: PyTorch's p.add_(s, alpha=-lr). */
static void opt_sgd(Opt *o, Node *p, Node *grad) {
  const Optim *op = &o->g->optim;
  Node *s = opt_decayed_grad(o, p, grad, op->weight_decay);
  if (op->momentum != 0) {
    Node *buf = opt_state(o, &p->type, p->name, "momentum_buffer");
    Node *mom = opt_const(o, p->type.dtype, op->momentum);
    s = opt_op(o, OP_ADD, opt_op(o, OP_MUL, buf, mom), s);
    ir_add_update(o->g, buf, s);
  }
  ir_add_update(o->g, p, opt_op(o, OP_SUB, p, opt_scale(o, s, op->lr)));
}

/* 1 - b^t = -expm1(t ln b) = -2 tanh(h) / (1 - tanh(h)) with h = t ln(b) / 2,
 * ln(b) / 2 folded in double. */
static Node *opt_bias_correction(Opt *o, Node *t, double beta) {
  DType dt = t->type.dtype;
  Node *th = opt_op(o, OP_TANH, opt_op(o, OP_MUL, t, opt_const(o, dt, log(beta) / 2)), NULL);
  return opt_op(o, OP_DIV, opt_scale(o, th, -2.0), opt_op(o, OP_SUB, opt_const(o, dt, 1.0), th));
}

/* The step counter and the scalars of Adam's bias correction for dtype dt. */
static void opt_adam_scalars(Opt *o, DType dt) {
  if (o->step_size[dt]) return;
  const Optim *op = &o->g->optim;
  Type scalar = ir_type(dt, 0, NULL);
  char what[32] = "step";
  if (o->have_step) snprintf(what, sizeof what, "step_%s", ir_dtype_name(dt));
  o->have_step = true;
  Node *step = opt_state(o, &scalar, NULL, what);
  Node *t = opt_op(o, OP_ADD, step, opt_const(o, dt, 1.0));
  ir_add_update(o->g, step, t);
  Node *bc1 = opt_bias_correction(o, t, op->beta1);
  Node *bc2 = opt_bias_correction(o, t, op->beta2);
  o->step_size[dt] = opt_op(o, OP_DIV, opt_const(o, dt, op->lr), bc1);
  o->sqrt_bc2[dt] = opt_op(o, OP_SQRT, bc2, NULL);
}

/* PyTorch's _single_tensor_adam, one param. */
static void opt_adam(Opt *o, Node *p, Node *grad) {
  const Optim *op = &o->g->optim;
  DType dt = p->type.dtype;
  opt_adam_scalars(o, dt);
  Node *gd = opt_decayed_grad(o, p, grad, op->weight_decay);
  Node *m = opt_state(o, &p->type, p->name, "exp_avg");
  Node *v = opt_state(o, &p->type, p->name, "exp_avg_sq");
  /* exp_avg.mul_(b1).add_(g, alpha=1-b1) */
  Node *m_new = opt_op(o, OP_ADD, opt_scale(o, m, op->beta1), opt_scale(o, gd, 1.0 - op->beta1));
  /* exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2) */
  Node *v_new = opt_op(o, OP_ADD, opt_scale(o, v, op->beta2),
                       opt_op(o, OP_MUL, opt_scale(o, gd, 1.0 - op->beta2), gd));
  /* denom = (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps) */
  Node *denom =
      opt_op(o, OP_ADD, opt_op(o, OP_DIV, opt_op(o, OP_SQRT, v_new, NULL), o->sqrt_bc2[dt]),
             opt_const(o, dt, op->eps));
  /* param.addcdiv_(exp_avg, denom, value=-lr/bc1) */
  Node *delta = opt_op(o, OP_DIV, opt_op(o, OP_MUL, o->step_size[dt], m_new), denom);
  ir_add_update(o->g, m, m_new);
  ir_add_update(o->g, v, v_new);
  ir_add_update(o->g, p, opt_op(o, OP_SUB, p, delta));
}

bool pass_optimizer(Graph *g, PassCtx *cx) {
  /* A graph read back from text at the grad stage already has its updates. */
  if (cx->inference || !g->loss || g->ngrads == 0 || g->nupdates > 0) return false;
  if (g->optim.kind == OPTIM_NONE) return false;
  Opt o = {.g = g, .loc = g->train_loc};
  for (int k = 0; k < g->ngrads; k++) {
    Node *p = g->grads[k].param, *grad = g->grads[k].grad;
    switch (g->optim.kind) {
    case OPTIM_SGD:
      opt_sgd(&o, p, grad);
      break;
    case OPTIM_ADAM:
      opt_adam(&o, p, grad);
      break;
    case OPTIM_NONE:
      break;
    }
  }
  return g->nupdates > 0;
}
