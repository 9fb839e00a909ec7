/* diag.c - located diagnostics: FILE:LINE:COL: error: MESSAGE, line, caret. */
#include "diag.h"

#include <string.h>

void diag_init(Diag *d, const char *file, const char *src, size_t len) {
  memset(d, 0, sizeof *d);
  d->file = file;
  d->src = src;
  d->len = len;
}

/* Prints source line `line` (1-based) and a caret under byte column col.
 * Tabs are kept so the caret lines up; other control bytes become spaces. */
static void diag_show_line(const Diag *d, FILE *out, int line, int col) {
  if (!d->src || line < 1) return;
  size_t i = 0;
  for (int l = 1; l < line && i < d->len; i++)
    if (d->src[i] == '\n') l++;
  if (i >= d->len && line > 1) return;
  size_t end = i;
  while (end < d->len && d->src[end] != '\n' && d->src[end] != '\r') end++;
  if (end == i) return; /* an empty line (or file): a caret under nothing helps no one */
  /* Overlong lines are cut around the column. */
  size_t start = i, max = 200;
  if (col > 0 && (size_t)col > max) start = i + (size_t)col - max / 2;
  if (start > end) start = end; /* a column past the end of its line */
  if (end - start > max) end = start + max;
  for (size_t k = start; k < end; k++) {
    unsigned char c = (unsigned char)d->src[k];
    fputc(c == '\t' || c >= 0x20 ? c : ' ', out);
  }
  fputc('\n', out);
  for (size_t k = start; k < i + (size_t)(col > 0 ? col - 1 : 0) && k < end; k++)
    fputc(d->src[k] == '\t' ? '\t' : ' ', out);
  fputs("^\n", out);
}

static void diag_emit(Diag *d, Loc loc, const char *kind, const char *fmt, va_list ap) {
  FILE *out = d->out ? d->out : stderr;
  const char *file = loc.file ? loc.file : d->file ? d->file : "<input>";
  if (loc.line > 0)
    fprintf(out, "%s:%d:%d: %s: ", file, loc.line, loc.col, kind);
  else
    fprintf(out, "%s: %s: ", file, kind);
  vfprintf(out, fmt, ap);
  fputc('\n', out);
  if (loc.line > 0 && (!loc.file || !d->file || strcmp(loc.file, d->file) == 0))
    diag_show_line(d, out, loc.line, loc.col);
}

void diag_verror(Diag *d, Loc loc, const char *fmt, va_list ap) {
  d->nerrors++;
  diag_emit(d, loc, "error", fmt, ap);
}

void diag_error(Diag *d, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_verror(d, loc, fmt, ap);
  va_end(ap);
}

void diag_note(Diag *d, Loc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_emit(d, loc, "note", fmt, ap);
  va_end(ap);
}
