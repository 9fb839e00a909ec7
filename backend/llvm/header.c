/* header.c - the C header of a compiled model (SPEC §3) and the glue of `kiln build` executables.
 */
#include <stdio.h>
#include <string.h>

#include "llvm_priv.h"
#include "passes.h"

/* Both are written from the same Program as the code (llvm_program_build),
 * so the argument lists they declare are the entry points' own. */

/* C keywords and the names the prototypes use themselves: a tensor with such
 * a name gets a trailing underscore in the prototype. */
static bool c_reserved(const char *s) {
  static const char *const words[] = {
      "auto",     "break",  "case",   "char",     "const",    "continue", "default",  "do",
      "double",   "else",   "enum",   "extern",   "float",    "for",      "goto",     "if",
      "inline",   "int",    "long",   "register", "restrict", "return",   "short",    "signed",
      "sizeof",   "static", "struct", "switch",   "typedef",  "union",    "unsigned", "void",
      "volatile", "while",  "bool",   "self",     "loss",     "int32_t",  "uint64_t"};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (strcmp(s, words[i]) == 0) return true;
  return s[0] == '_';
}

static const char *c_type(DType dt, bool in) {
  switch (dt) {
  case DT_F32:
    return in ? "const float *" : "float *";
  case DT_I32:
    return in ? "const int32_t *" : "int32_t *";
  case DT_F64:
    return in ? "const double *" : "double *";
  case DT_COUNT:
    break;
  }
  return "void *";
}

/* One pointer parameter after a comma, its type (f32[128, 784]) in a comment before it. */
static void param_line(FILE *out, const Node *n, const char *name, bool in) {
  char ts[IR_TYPE_STR_MAX];
  fprintf(out, ",\n    /* %s */ %s%s%s", ir_type_str(&n->type, ts, sizeof ts),
          c_type(n->type.dtype, in), name, c_reserved(name) ? "_" : "");
}

static void entry_inputs(FILE *out, const Program *p, EntryKind e) {
  for (int i = 0; i < p->nentry_inputs[e]; i++) {
    const Node *n = p->inputs[p->entry_inputs[e][i]];
    param_line(out, n, n->name, true);
  }
}

static void header_infer(FILE *out, const Program *p, const char *m) {
  const Graph *g = p->g;
  fprintf(out, "/* Inference: the inputs the outputs depend on, then the outputs, each a C-order\n"
               " * array of the shape shown. */\n");
  fprintf(out, "int %s_infer(%s *self", m, m);
  entry_inputs(out, p, ENTRY_INFER);
  for (int i = 0; i < g->noutputs; i++)
    param_line(out, g->outputs[i].node, g->outputs[i].name, false);
  fprintf(out, ");\n");
}

static void header_train(FILE *out, const Program *p, const char *m) {
  fprintf(out, "\n/* One training step: forward, backward and the optimizer update, with the\n"
               " * inputs the loss depends on; writes the loss (before the update). */\n");
  fprintf(out, "int %s_train_step(%s *self", m, m);
  entry_inputs(out, p, ENTRY_TRAIN);
  fprintf(out, ",\n    float *loss);\n");
  fprintf(out,
          "/* The loss and every param's gradient (read them with %s_param_grad), no update. "
          "*/\n",
          m);
  fprintf(out, "int %s_grad(%s *self", m, m);
  entry_inputs(out, p, ENTRY_GRAD);
  fprintf(out, ",\n    float *loss);\n");
}

static void header_params(FILE *out, const Program *p) {
  char ts[IR_TYPE_STR_MAX];
  fprintf(out, "/* Params (names for _param and _param_grad; f64 params are double arrays):\n");
  for (int i = 0; i < p->nparams; i++)
    fprintf(out, " *   %-24s %s\n", p->params[i]->name,
            ir_type_str(&p->params[i]->type, ts, sizeof ts));
  fprintf(out, " */\n");
}

bool llvm_write_header(const Graph *g, const LlvmOptions *o, FILE *out) {
  Program p;
  if (!llvm_program_build(&p, g, o)) {
    llvm_program_free(&p);
    return false;
  }
  const char *m = g->name;
  fprintf(out,
          "/* The C interface of model %s, written by `kiln compile` (Kiln's SPEC §3).\n"
          " *\n"
          " * kiln.h (kiln_model_desc, status codes) is in Kiln's runtime/ folder: compile with\n"
          " *   cc -I KILN/runtime app.c ./%s.so   (the .so `kiln compile` wrote)\n"
          " * Every function returns 0 on success or a status that %s_strerror names.\n"
          " *\n",
          m, m, m);
  fprintf(out,
          " * Instance memory: %llu bytes, of which the arena (intermediate values,\n"
          " * kernel scratch) %llu bytes.\n",
          (unsigned long long)p.layout.mem_bytes, (unsigned long long)p.layout.arena_bytes);
  if (g->annot == IR_ANNOT_PLANNED) {
    PlanStats st;
    plan_stats(g, &st);
    fprintf(out,
            " * Planned: %d kernels; arena %lld bytes for %lld bytes of buffers, lower bound\n"
            " * %lld bytes (most live at once), efficiency %.1f%%.\n",
            st.nkernels, (long long)st.arena_bytes, (long long)st.sum_bytes,
            (long long)st.lower_bound, 100.0 * st.efficiency);
  }
  fprintf(out,
          " */\n#ifndef KILN_MODEL_%s_H\n#define KILN_MODEL_%s_H\n\n"
          "#include <stdint.h>\n\n#include \"kiln.h\"\n\n"
          "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
          m, m);
  fprintf(out,
          "typedef struct %s %s; /* one instance: params, state, arena */\n\n"
          "int %s_create(%s **out, uint64_t seed); /* params as `kiln init --seed` writes them */\n"
          "void %s_destroy(%s *self);\n"
          "int %s_set_threads(%s *self, int n); /* default: all cores */\n"
          "int %s_load(%s *self, const char *safetensors_path); /* all params, checked */\n"
          "int %s_save(const %s *self, const char *safetensors_path);\n\n",
          m, m, m, m, m, m, m, m, m, m, m, m);
  header_infer(out, &p, m);
  if (p.has_train) header_train(out, &p, m);
  fprintf(out, "\n");
  header_params(out, &p);
  fprintf(out,
          "const float *%s_param(const %s *self, const char *name); /* NULL if no such param */\n"
          "const float *%s_param_grad(const %s *self, const char *name);\n"
          "const kiln_model_desc *%s_describe(void);\n"
          "const char *%s_strerror(int status);\n\n"
          "#ifdef __cplusplus\n}\n#endif\n\n#endif\n",
          m, m, m, m, m, m);
  llvm_program_free(&p);
  return !ferror(out);
}

bool llvm_write_main_glue(const Graph *g, FILE *out) {
  LlvmOptions o = {.opt_level = 0, .train = false};
  Program p;
  if (!llvm_program_build(&p, g, &o)) {
    llvm_program_free(&p);
    return false;
  }
  const char *m = g->name;
  int nargs = p.nentry_inputs[ENTRY_INFER] + g->noutputs;
  fprintf(
      out,
      "/* Written by `kiln build`: binds the generic main (runtime/kiln_main.c) to model %s. */\n"
      "struct kiln_model_desc;\n"
      "const struct kiln_model_desc *%s_describe(void);\n"
      "const struct kiln_model_desc *kiln_main_describe(void) { return %s_describe(); }\n"
      "const int kiln_main_infer_nargs = %d;\n"
      "int %s_infer(void *self",
      m, m, m, nargs, m);
  for (int i = 0; i < nargs; i++) fprintf(out, ", void *a%d", i);
  fprintf(out, ");\nint kiln_main_infer(void *self, void *const *a) {\n  return %s_infer(self", m);
  for (int i = 0; i < nargs; i++) fprintf(out, ", a[%d]", i);
  fprintf(out, ");\n}\n");
  llvm_program_free(&p);
  return !ferror(out);
}
