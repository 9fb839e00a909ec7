/* llvm_lower.c - the op table's LLVM column: every OpKind to the function that lowers its kernel.
 */
#include "llvm_priv.h"

/* The op table's lower column, indexed by op. */
static LowerFn *const lowerings[OP_COUNT] = {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  [OP_##NAME] = lower,
#include "ops.def"
#undef OP
};

LowerFn *llvm_lowering(OpKind op) { return (unsigned)op < OP_COUNT ? lowerings[op] : NULL; }

bool llvm_ops_complete(OpKind *missing) {
  for (int op = 0; op < OP_COUNT; op++)
    if (!lowerings[op]) {
      if (missing) *missing = (OpKind)op;
      return false;
    }
  return true;
}
