/* llvm_twin.h - kernels whose functions are identical (Kernel.twin), found from the lowered IR. */
#ifndef KILN_LLVM_TWIN_H
#define KILN_LLVM_TWIN_H

#include "llvm_priv.h"

/* Sets Kernel.twin throughout p: every kernel that some entry point runs is
 * lowered alone into a throwaway module, and a kernel whose module is the
 * same as an earlier kernel's (their functions' names aside) becomes its
 * twin; no module then lowers the twin, its launches call the earlier one's
 * function. Also sets every kernel's range and min_chunk, which a twin keeps,
 * and size[k] (when size is not NULL): the instructions of kernel k's
 * functions as lowered, 0 for a twin or a kernel nothing runs. The count of
 * twins, or -1 with a message. */
int llvm_twins_find(const Graph *g, const LlvmOptions *o, Program *p, int64_t *size, char *err,
                    size_t len);

#endif
