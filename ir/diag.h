/* diag.h - the one way Kiln reports a user's mistake: file:line:col, line, caret. */
#ifndef KILN_DIAG_H
#define KILN_DIAG_H

#include <stdarg.h>
#include <stdio.h>

/* A position in a source file. line and col count from 1 (col in bytes);
 * line 0 means "no position" (the diagnostic then names only the file). */
typedef struct Loc {
  const char *file;
  int line, col;
} Loc;

/* One source text being compiled. The diagnostic prints the offending line
 * from src, with a caret under col, like clang. */
typedef struct Diag {
  const char *file; /* name printed in diagnostics */
  const char *src;  /* the text (need not be NUL-terminated), or NULL */
  size_t len;
  FILE *out; /* where diagnostics go; stderr when NULL */
  int nerrors;
} Diag;

void diag_init(Diag *d, const char *file, const char *src, size_t len);

/* FILE:LINE:COL: error: MESSAGE, then the source line and a caret. */
void diag_error(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_verror(Diag *d, Loc loc, const char *fmt, va_list ap);
/* FILE:LINE:COL: note: MESSAGE (with source line and caret), after an error. */
void diag_note(Diag *d, Loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
