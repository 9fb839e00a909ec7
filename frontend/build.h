/* build.h - turn a parsed .kl file into a Graph: inline fns, fix dims, infer shapes. */
#ifndef KILN_BUILD_H
#define KILN_BUILD_H

#include "../ir/ir.h"
#include "ast.h"

/* A -D NAME=VALUE override of a model size parameter. */
typedef struct Define {
  const char *name;
  int64_t value;
} Define;

/* Builds the model's forward graph (plus its loss and optimizer when it has
 * a train statement). Every user mistake is reported through d with a source
 * location and NULL is returned. The graph passes ir_verify. */
Graph *build_graph(const Ast *ast, const Define *defs, int ndefs, Diag *d);

#endif
