/* cases.h - the test cases of a MANIFEST (NAME.kl + NAME.safetensors) for test_ops, test_opt and
 * test_llvm_diff: loading, building through the pipeline, tolerances.
 *
 *   CaseArgs a;                                          // PROG [--dir CASES] [NAME...]
 *   if (!case_args(&a, argc, argv, "test_x")) return 2;
 *   Manifest m;
 *   if (!manifest_open(&m, a.dir, "test_x")) return 1;   // CASES/MANIFEST: `NAME CLASS` lines
 *   while (manifest_next(&m)) {
 *     const Tol *tol = tol_lookup(m.cls);                // NULL: no such class
 *     if (!tol || !manifest_wanted(m.name, a.only, a.nonly, NULL)) continue;
 *     TestCase c = {.name = m.name, .tol = *tol};
 *     if (case_load(&c, a.dir)) {                        // the source, the fixture, the syntax
 *       Graph *g = case_graph(&c, STAGE_GRAD, NULL);     // built, verified after every pass
 *       Interp *it = g ? case_run(&c, g) : NULL;         // every input and param bound, run
 *       ...
 *     }
 *     case_free(&c);
 *   }
 *   manifest_close(&m);
 *   free(a.only);
 *
 * A failure prints `  NAME: MESSAGE` on stdout (case_fail); each test keeps its own tally.
 */
#ifndef KILN_TESTS_CASES_H
#define KILN_TESTS_CASES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ast.h"
#include "interp.h"
#include "passes.h"
#include "tensor_io.h"

#define CASE_PATH_MAX 512
#define CASE_NAME_MAX 64 /* a MANIFEST word, without its NUL */

/* A tolerance class: |got - want| <= atol + rtol * |want| (tests/ops/README.md). */
typedef struct Tol {
  const char *cls;
  double rtol, atol;
} Tol;

extern const Tol tol_elementwise, tol_reduction;

/* The class of that name; NULL if there is none. */
const Tol *tol_lookup(const char *cls);
/* How far got is from want in units of tol: <= 1 agrees. NaN agrees with NaN, an infinity only
 * with itself. */
double tol_ratio(double got, double want, Tol tol);

/* One case: its source text, fixture and syntax tree. */
typedef struct TestCase {
  const char *name; /* heads every failure line */
  const char *note; /* printed after the name in failure lines when set, e.g. " (planned)" */
  Tol tol;
  bool failed; /* case_fail was called */
  char kl_path[CASE_PATH_MAX];
  char *src; /* the text case_load read (case_parse's text stays the caller's) */
  Arena arena;
  Ast ast;
  Diag diag;
  KilnTensorFile fix;
} TestCase;

/* Prints `  NAME: MESSAGE`, marks the case failed and returns false. */
bool case_fail(TestCase *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads DIR/NAME.kl and DIR/NAME.safetensors and parses the model; false (reported) if any
 * step fails. */
bool case_load(TestCase *c, const char *dir);
/* Parses src (len bytes, named path in diagnostics, kept by the caller) into the case's
 * syntax tree; false (errors on stderr, nothing on stdout) if it does not parse. */
bool case_parse(TestCase *c, const char *path, const char *src, size_t len);
/* Frees what case_load or case_parse made; a zeroed or half-loaded case too. */
void case_free(TestCase *c);

/* How case_graph runs the pipeline. */
typedef struct CaseBuild {
  const char *stop_after;   /* a pass name: stop after it (NULL or no such pass: the whole stage) */
  bool inference;           /* PassCtx.inference */
  const FuseTarget *target; /* PassCtx.target */
} CaseBuild;

/* A fresh graph from the case's syntax tree through the pipeline to upto (b NULL: a training
 * build), verified after every pass; NULL (reported) on an error. */
Graph *case_graph(TestCase *c, Stage upto, const CaseBuild *b);
/* An interpreter for g with every input and param bound from the fixture, after one run; NULL
 * (reported) on an error. */
Interp *case_run(TestCase *c, const Graph *g);

/* The command line `PROG [--dir CASES] [NAME...]` (test_ops, test_opt). */
typedef struct CaseArgs {
  const char *dir; /* CASES; "." when not given */
  char **only;     /* the NAMEs (malloc'd: free it) */
  int nonly;
} CaseArgs;

/* False, after the usage on stderr, at an option it does not know. */
bool case_args(CaseArgs *a, int argc, char **argv, const char *prog);

/* One `NAME CLASS` line of DIR/MANIFEST after another. */
typedef struct Manifest {
  char path[CASE_PATH_MAX];
  FILE *f;
  char name[CASE_NAME_MAX + 1], cls[CASE_NAME_MAX + 1];
  bool malformed; /* manifest_next stopped at a line that is not `NAME CLASS` */
} Manifest;

/* Opens DIR/MANIFEST; if it cannot, prints `PROG: cannot read PATH` on stderr, returns false. */
bool manifest_open(Manifest *m, const char *dir, const char *prog);
/* The next line into m->name and m->cls; false at the end or at a malformed line. */
bool manifest_next(Manifest *m);
void manifest_close(Manifest *m);
/* Whether NAME is among the nonly names of the command line (all are when nonly is 0); marks
 * seen[i] for each one it matches when seen is not NULL. */
bool manifest_wanted(const char *name, char **only, int nonly, bool *seen);

/* The whole file, NUL-terminated (malloc'd; its length in *len); NULL if it cannot be read. */
char *read_file(const char *path, size_t *len);
DType from_kiln_dtype(KilnDType dt);

#endif
