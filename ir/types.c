/* types.c - tensor types, the op table built from ops.def, and node attributes. */
#include "ir.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* One write, so the line stays whole even when stderr is shared. */
_Noreturn void ir_fatal(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "kiln: internal error: %s\n", buf);
  exit(70);
}

/* ---- Types -------------------------------------------------------------- */

static const struct {
  const char *name;
  size_t size;
  bool is_float;
} dtypes[DT_COUNT] = {
    [DT_F32] = {"f32", 4, true},
    [DT_I32] = {"i32", 4, false},
    [DT_F64] = {"f64", 8, true},
};

static void check_dtype(DType dt) {
  IR_ASSERT((unsigned)dt < DT_COUNT, "invalid dtype %d", (int)dt);
}

Type ir_type(DType dt, int rank, const int64_t *dims) {
  check_dtype(dt);
  IR_ASSERT(rank >= 0 && rank <= IR_MAX_RANK, "ir_type: rank %d out of range", rank);
  /* Unused dims stay zero, so equal types are equal bytes. */
  Type t = {.dtype = dt, .rank = rank};
  for (int i = 0; i < rank; i++) t.dims[i] = dims[i];
  return t;
}

const char *ir_dtype_name(DType dt) {
  check_dtype(dt);
  return dtypes[dt].name;
}

bool ir_dtype_lookup(const char *name, DType *out) {
  for (int i = 0; i < DT_COUNT; i++) {
    if (strcmp(dtypes[i].name, name) == 0) {
      *out = (DType)i;
      return true;
    }
  }
  return false;
}

size_t ir_dtype_size(DType dt) {
  check_dtype(dt);
  return dtypes[dt].size;
}

bool ir_dtype_is_float(DType dt) {
  check_dtype(dt);
  return dtypes[dt].is_float;
}

double ir_value_at(DType dt, const void *data, int64_t i) {
  switch (dt) {
  case DT_F32:
    return ((const float *)data)[i];
  case DT_F64:
    return ((const double *)data)[i];
  case DT_I32:
    return ((const int32_t *)data)[i];
  case DT_COUNT:
    break;
  }
  ir_fatal("invalid dtype %d", (int)dt);
}

/* Saturates at INT64_MAX rather than overflowing; shape rules reject any
 * type above IR_MAX_NUMEL long before that matters. */
int64_t ir_type_numel(const Type *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) {
    if (t->dims[i] <= 0) return 0;
    if (n > INT64_MAX / t->dims[i]) return INT64_MAX;
    n *= t->dims[i];
  }
  return n;
}

bool ir_type_eq(const Type *a, const Type *b) {
  if (a->dtype != b->dtype || a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i]) return false;
  return true;
}

/* Built whole in a buffer that always suffices (8 dims of 20 digits), then
 * copied, so a short buf just truncates. */
char *ir_type_str(const Type *t, char *buf, size_t len) {
  char tmp[IR_TYPE_STR_MAX];
  const char *dt = (unsigned)t->dtype < DT_COUNT ? dtypes[t->dtype].name : "?";
  int rank = t->rank < 0 ? 0 : t->rank > IR_MAX_RANK ? IR_MAX_RANK : t->rank;
  int used = snprintf(tmp, sizeof tmp, "%s[", dt);
  for (int i = 0; i < rank; i++)
    used += snprintf(tmp + used, sizeof tmp - (size_t)used, "%s%lld", i ? "," : "",
                     (long long)t->dims[i]);
  snprintf(tmp + used, sizeof tmp - (size_t)used, "]");
  if (len) snprintf(buf, len, "%s", tmp);
  return buf;
}

/* ---- The op table ------------------------------------------------------- */

static OpInfo op_table[OP_COUNT] = {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  [OP_##NAME] = {text, min_in, max_in, flags, 0, {{0}}},
#include "ops.def"
#undef OP
};

static const char *const op_schemas[OP_COUNT] = {
#define OP(NAME, text, min_in, max_in, flags, attrs, shape, grad, interp, lower)                   \
  [OP_##NAME] = attrs,
#include "ops.def"
#undef OP
};

/* Attribute names point into this copy of each schema, cut at ':' and ' '. */
#define SCHEMA_MAX 128
static char schema_text[OP_COUNT][SCHEMA_MAX];
static bool op_table_ready;

static AttrKind parse_attr_kind(const char *op, const char *kind) {
  static const struct {
    const char *name;
    AttrKind kind;
  } kinds[] = {{"int", ATTR_INT},
               {"ints", ATTR_INTS},
               {"float", ATTR_FLOAT},
               {"floats", ATTR_FLOATS},
               {"name", ATTR_NAME}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (strcmp(kinds[i].name, kind) == 0) return kinds[i].kind;
  ir_fatal("ops.def: op %s: unknown attribute kind '%s'", op, kind);
}

/* "axes:ints keepdim:int" -> info->attrs. */
static void parse_schema(OpInfo *info, const char *schema, char *text) {
  IR_ASSERT(strlen(schema) < SCHEMA_MAX, "ops.def: op %s: schema too long", info->name);
  strcpy(text, schema);
  char *save = NULL;
  for (char *tok = strtok_r(text, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    char *colon = strchr(tok, ':');
    IR_ASSERT(colon, "ops.def: op %s: attribute '%s' lacks ':kind'", info->name, tok);
    IR_ASSERT(info->nattrs < IR_MAX_ATTRS, "ops.def: op %s: too many attributes", info->name);
    *colon = '\0';
    for (int i = 0; i < info->nattrs; i++)
      IR_ASSERT(strcmp(info->attrs[i].name, tok) != 0, "ops.def: op %s: attribute '%s' twice",
                info->name, tok);
    info->attrs[info->nattrs].name = tok;
    info->attrs[info->nattrs].kind = parse_attr_kind(info->name, colon + 1);
    info->nattrs++;
  }
}

/* The compiler is single-threaded: the table is parsed on first use. */
static void op_table_init(void) {
  if (op_table_ready) return;
  for (int op = 0; op < OP_COUNT; op++)
    parse_schema(&op_table[op], op_schemas[op], schema_text[op]);
  op_table_ready = true;
}

const OpInfo *ir_op_info(OpKind op) {
  IR_ASSERT((unsigned)op < OP_COUNT, "invalid op %d", (int)op);
  op_table_init();
  return &op_table[op];
}

const char *ir_op_name(OpKind op) { return ir_op_info(op)->name; }

OpKind ir_op_lookup(const char *name) {
  for (int op = 0; op < OP_COUNT; op++)
    if (strcmp(op_table[op].name, name) == 0) return (OpKind)op;
  return OP_COUNT;
}

/* ---- Attributes --------------------------------------------------------- */

static int attr_index(const Node *n, const char *name) {
  const OpInfo *info = ir_op_info(n->op);
  for (int i = 0; i < info->nattrs; i++)
    if (strcmp(info->attrs[i].name, name) == 0) return i;
  ir_fatal("op %s has no attribute '%s'", info->name, name);
}

static int attr_index_kind(const Node *n, const char *name, AttrKind kind) {
  int i = attr_index(n, name);
  static const char *const kind_names[] = {"int", "ints", "float", "floats", "name"};
  const OpInfo *info = ir_op_info(n->op);
  IR_ASSERT(info->attrs[i].kind == kind, "op %s: attribute '%s' is %s, not %s", info->name, name,
            kind_names[info->attrs[i].kind], kind_names[kind]);
  return i;
}

AttrVal *ir_attr(Node *n, const char *name) { return &n->attr[attr_index(n, name)]; }

const AttrVal *ir_attr_c(const Node *n, const char *name) { return &n->attr[attr_index(n, name)]; }

int64_t ir_attr_int(const Node *n, const char *name) {
  return n->attr[attr_index_kind(n, name, ATTR_INT)].i[0];
}

double ir_attr_float(const Node *n, const char *name) {
  return n->attr[attr_index_kind(n, name, ATTR_FLOAT)].f[0];
}

bool ir_is_row_sum(const Node *n) {
  if (n->op != OP_SUM || n->nin != 1) return false;
  const AttrVal *axes = ir_attr_c(n, "axes");
  int r = n->in[0]->type.rank;
  return r >= 1 && n->in[0]->type.dims[r - 1] > 1 && axes->n == 1 && axes->i[0] == r - 1 &&
         ir_attr_int(n, "keepdim") == 1;
}

static void check_count(const Node *n, const char *name, int count) {
  IR_ASSERT(count >= 0 && count <= IR_MAX_ATTR_LEN, "op %s: attribute '%s': %d values",
            ir_op_name(n->op), name, count);
}

/* Lists clear their unused tail, so equal attributes are equal bytes. */
static void set_ints(Node *n, int i, const int64_t *v, int count) {
  check_count(n, ir_op_info(n->op)->attrs[i].name, count);
  AttrVal *a = &n->attr[i];
  memset(a->i, 0, sizeof a->i);
  for (int k = 0; k < count; k++) a->i[k] = v[k];
  a->n = count;
}

static void set_floats(Node *n, int i, const double *v, int count) {
  check_count(n, ir_op_info(n->op)->attrs[i].name, count);
  AttrVal *a = &n->attr[i];
  memset(a->f, 0, sizeof a->f);
  for (int k = 0; k < count; k++) a->f[k] = v[k];
  a->n = count;
}

void ir_set_attr_int(Node *n, const char *name, int64_t v) {
  set_ints(n, attr_index_kind(n, name, ATTR_INT), &v, 1);
}

void ir_set_attr_ints(Node *n, const char *name, const int64_t *v, int count) {
  set_ints(n, attr_index_kind(n, name, ATTR_INTS), v, count);
}

void ir_set_attr_float(Node *n, const char *name, double v) {
  set_floats(n, attr_index_kind(n, name, ATTR_FLOAT), &v, 1);
}

void ir_set_attr_floats(Node *n, const char *name, const double *v, int count) {
  set_floats(n, attr_index_kind(n, name, ATTR_FLOATS), v, count);
}

void ir_set_attr_name(Graph *g, Node *n, const char *name, const char *s) {
  AttrVal *a = &n->attr[attr_index_kind(n, name, ATTR_NAME)];
  a->s = s ? arena_strdup(&g->arena, s) : NULL;
  a->n = 1;
}

bool ir_op_is_named_source(OpKind op) { return op == OP_INPUT || op == OP_PARAM || op == OP_STATE; }
