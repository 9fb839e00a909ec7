/* rt_json.h - a strict parser of the safetensors header's JSON, for libkilnrt (libc only). */
#ifndef KILN_RT_JSON_H
#define KILN_RT_JSON_H

/*
 * Why not jansson (which the host-side runtime/safetensors.c uses): libkilnrt
 * is linked into every .so that `kiln compile` writes, and those may depend
 * on libc, libm and pthreads only (SPEC §3). So jansson would have to be
 * linked statically, and Debian's libjansson.a is built as position-dependent
 * code: linking it into a shared object fails with
 *   libjansson.a(value.o): relocation R_X86_64_PC32 against symbol
 *   `hashtable_seed' can not be used when making a shared object; recompile
 *   with -fPIC
 * (checked on Debian 12, jansson 2.14: `readelf -r libjansson.a` shows 653
 * R_X86_64_PC32 relocations, many against global data, and `cc -shared` of
 * an object calling json_loads with libjansson.a fails as above). A
 * safetensors header needs only a small, fixed subset of JSON, parsed here.
 *
 * The accepted grammar (RFC 8259 restricted to what safetensors writes):
 *
 *   header   = ws "{" ws [ member { ws "," ws member } ] ws "}" ws
 *   member   = string ws ":" ws ( meta | entry )    (meta iff the key is "__metadata__")
 *   meta     = "{" ws [ string ws ":" ws string { ws "," ws string ws ":" ws string } ] ws "}"
 *   entry    = "{" ws field ws "," ws field ws "," ws field ws "}"  (each field once, any order)
 *   field    = "\"dtype\"" ws ":" ws string
 *            | "\"shape\"" ws ":" ws ints
 *            | "\"data_offsets\"" ws ":" ws ints    (exactly two)
 *   ints     = "[" ws [ int { ws "," ws int } ] ws "]"
 *   int      = "0" | [1-9] [0-9]*                     (below 2^63)
 *   string   = '"' { char | escape } '"'              (well-formed UTF-8, no raw control chars)
 *   escape   = '\' ( '"' | '\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' | 'u' hex4 [ '\u' hex4 ] )
 *   ws       = { ' ' | '\t' | '\n' | '\r' }
 *
 * Anything else (floats, negative numbers, true/false/null, nested values,
 * unknown fields, duplicate keys, lone surrogates, \u0000) is rejected with a
 * message giving the byte offset. Every read is bounds-checked against len:
 * the parser never looks at byte len or beyond, and needs no terminating NUL.
 */

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#define RT_JSON_MAX_RANK 8

typedef struct RtStEntry {
  char *name; /* decoded, NUL-terminated, malloc'd */
  kiln_dtype dtype;
  int rank;
  int64_t shape[RT_JSON_MAX_RANK];
  uint64_t begin, end; /* data_offsets, relative to the data region */
} RtStEntry;

typedef struct RtStHeader {
  RtStEntry *entries; /* in the header's order */
  int n;
} RtStHeader;

/* Parses len bytes of header JSON into out (empty on failure). Returns 0, or
 * -1 with a message in err ("expected ':' after a key (at byte 17 of the
 * header)"). Checks syntax, dtype names (F32, I32, F64), rank <= 8 and
 * begin <= end; not the sizes against the data (the caller knows the data). */
int rt_json_parse_header(const char *json, size_t len, RtStHeader *out, char *err, size_t errlen);
void rt_json_header_free(RtStHeader *h);

#endif
