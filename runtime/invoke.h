/* invoke.h - calls a compiled model's entry point with a run-time argument list, through libffi. */
#ifndef KILN_INVOKE_H
#define KILN_INVOKE_H

/* Calls int fn(void *self, void *args[0], ..., void *args[nargs - 1]) — the
 * shape of every m_infer, m_train_step and m_grad (kiln.h) — and returns its
 * status. kiln_model_desc says how many pointers an entry point takes; the
 * caller passes exactly that many. Returns -1 without calling fn when nargs
 * is negative or above KILN_INVOKE_MAX_ARGS, or libffi refuses the signature.
 * The only user of libffi in Kiln (host side: never linked into generated code). */
#define KILN_INVOKE_MAX_ARGS 1024

int kiln_invoke(void (*fn)(void), void *self, void *const *args, int nargs);

#endif
