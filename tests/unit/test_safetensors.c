/* test_safetensors.c - safetensors round trips, hand-built bad headers, truncation, atomic writes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor_io.h"

static char tmpdir[64];

static int make_tmpdir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln_st_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

/* Counts the files in the temp dir, so a test can see that no temp file was left behind. */
static int count_files(void) {
  DIR *d = opendir(tmpdir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

static int remove_tmpdir(void **state) {
  (void)state;
  DIR *d = opendir(tmpdir);
  char p[512];
  for (struct dirent *e; d && (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
    unlink(p);
  }
  if (d) closedir(d);
  return rmdir(tmpdir);
}

/* 8-byte little-endian length, the header text, then the data. */
static unsigned char *build(const char *json, size_t datalen, size_t *len) {
  size_t h = strlen(json);
  *len = 8 + h + datalen;
  unsigned char *b = malloc(*len);
  assert_non_null(b);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(b + 8, json, h);
  for (size_t i = 0; i < datalen; i++) b[8 + h + i] = (unsigned char)i;
  return b;
}

/* Parsing must fail with a message holding want (and "what:" first); shows the message if not. */
static void expect_error_buf(const unsigned char *b, size_t len, const char *want) {
  KilnTensorFile f;
  char err[512] = "";
  int rc = kiln_safetensors_parse(b, len, "t.safetensors", &f, err, sizeof err);
  if (rc == 0 || !strstr(err, want) || strncmp(err, "t.safetensors: ", 15) != 0)
    fail_msg("rc %d, message \"%s\", wanted \"%s\"", rc, err, want);
  assert_null(f.tensors);
  assert_int_equal(f.n, 0);
}

static void expect_error(const char *json, size_t datalen, const char *want) {
  size_t len;
  unsigned char *b = build(json, datalen, &len);
  expect_error_buf(b, len, want);
  free(b);
}

static void fill_pattern(KilnTensor *t, int seed) {
  unsigned char *p = t->data;
  for (size_t i = 0; i < t->nbytes; i++) p[i] = (unsigned char)(i * 31 + (size_t)seed * 7 + 1);
}

/* Every dtype at every rank 0..4, plus an empty tensor, through write and read. */
static void test_round_trip(void **state) {
  (void)state;
  static const int64_t dims[4] = {2, 3, 1, 4};
  const KilnDType dts[3] = {KILN_F32, KILN_I32, KILN_F64};
  KilnTensor ts[16];
  char names[16][16];
  int n = 0;
  for (int d = 0; d < 3; d++) {
    for (int r = 0; r <= 4; r++, n++) {
      snprintf(names[n], sizeof names[n], "%s.r%d", kiln_dtype_name(dts[d]), r);
      ts[n] = (KilnTensor){.name = names[n], .dtype = dts[d], .rank = r};
      memcpy(ts[n].shape, dims, sizeof dims);
      ts[n].nbytes = (size_t)kiln_tensor_numel(&ts[n]) * kiln_dtype_size(dts[d]);
      ts[n].data = malloc(ts[n].nbytes);
      fill_pattern(&ts[n], n);
    }
  }
  ts[n] = (KilnTensor){.name = "empty", .dtype = KILN_F32, .rank = 2, .shape = {0, 3}};
  ts[n++].data = NULL;

  char path[128], err[512] = "";
  snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
  int before = count_files();
  assert_int_equal(kiln_safetensors_write(path, ts, n, err, sizeof err), 0);
  assert_int_equal(count_files(), before + 1);
  KilnTensorFile f;
  if (kiln_safetensors_read(path, &f, err, sizeof err) != 0) fail_msg("%s", err);
  assert_int_equal(f.n, n);
  for (int i = 0; i < n; i++) {
    const KilnTensor *t = kiln_tensor_find(&f, ts[i].name);
    assert_non_null(t);
    assert_int_equal(t->dtype, ts[i].dtype);
    assert_int_equal(t->rank, ts[i].rank);
    assert_memory_equal(t->shape, ts[i].shape, sizeof(int64_t) * (size_t)t->rank);
    assert_int_equal(t->nbytes, ts[i].nbytes);
    assert_non_null(t->data);
    if (t->nbytes) assert_memory_equal(t->data, ts[i].data, t->nbytes);
  }
  /* Read back in data order: the F64 tensors first (8-byte aligned), then the others. */
  int k = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n; i++)
      if ((ts[i].dtype == KILN_F64) == (pass == 0))
        assert_string_equal(f.tensors[k++].name, ts[i].name);
  assert_null(kiln_tensor_find(&f, "nope"));
  kiln_tensor_file_free(&f);
  for (int i = 0; i < n; i++) free(ts[i].data);
}

/* The header is padded with spaces to a multiple of 8; an empty file list is still a file. */
static void test_header_layout(void **state) {
  (void)state;
  char path[128], err[512];
  snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir);
  assert_int_equal(kiln_safetensors_write(path, NULL, 0, err, sizeof err), 0);
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  unsigned char b[64];
  size_t got = fread(b, 1, sizeof b, fp);
  fclose(fp);
  assert_int_equal(got, 16);
  assert_int_equal(b[0], 8);
  assert_memory_equal(b + 8, "{}      ", 8);
  KilnTensorFile f;
  assert_int_equal(kiln_safetensors_read(path, &f, err, sizeof err), 0);
  assert_int_equal(f.n, 0);
  kiln_tensor_file_free(&f);
}

/* A file as Python's safetensors writes it: metadata, reversed key order, padding. */
static void test_reads_reference_layout(void **state) {
  (void)state;
  const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                     "\"b\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[8,12]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ";
  size_t len;
  unsigned char *b = build(json, 12, &len);
  KilnTensorFile f;
  char err[512];
  if (kiln_safetensors_parse(b, len, NULL, &f, err, sizeof err) != 0) fail_msg("%s", err);
  assert_int_equal(f.n, 2);
  assert_string_equal(f.tensors[0].name, "a");
  assert_string_equal(f.tensors[1].name, "b");
  assert_int_equal(f.tensors[1].rank, 0);
  assert_int_equal(kiln_tensor_numel(&f.tensors[1]), 1);
  assert_memory_equal(f.tensors[1].data, b + len - 4, 4);
  kiln_tensor_file_free(&f);
  free(b);
}

static void test_bad_lengths(void **state) {
  (void)state;
  unsigned char b[16] = {0};
  expect_error_buf(b, 5, "file is 5 bytes, too short for the 8-byte header length");
  b[0] = 0x00, b[1] = 0xe2, b[2] = 0xf5, b[3] = 0x05; /* 100 MB + 0x100 */
  expect_error_buf(b, 16, "header length 100000256 exceeds the limit of 100000000 bytes");
  memset(b, 0xff, 8); /* 2^64 - 1: must not wrap */
  expect_error_buf(b, 16, "exceeds the limit");
  memset(b, 0, 8);
  b[0] = 9;
  expect_error_buf(b, 16, "header length 9 runs past the end of the file (16 bytes)");
}

static void test_bad_json(void **state) {
  (void)state;
  expect_error("{\"a\": ", 0, "header is not valid JSON");
  expect_error("", 0, "header is not valid JSON");
  expect_error("[1, 2]", 0, "header is not a JSON object");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, "duplicate object key");
  expect_error(
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
      "header is not valid JSON");
  expect_error("{\"__metadata__\":{\"format\":1}}", 0,
               "'__metadata__' must be an object of strings");
  expect_error("{\"__metadata__\":[]}", 0, "'__metadata__' must be an object of strings");
  expect_error("{\"a\":7}", 0, "tensor 'a': entry is not a JSON object");
}

static void test_bad_entries(void **state) {
  (void)state;
  expect_error("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               "tensor 'w': 'dtype' is missing");
  expect_error("{\"w\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2,
               "tensor 'w': unsupported dtype 'BF16' (expected F32, F64 or I32)");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,12]}}", 12,
               "tensor 'w': 'shape' is not an array");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}", 0,
               "tensor 'w': shape[1] is not a non-negative integer");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,0]}}", 0,
               "tensor 'w': shape[0] is not a non-negative integer");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4, "tensor 'w': rank 9 exceeds the maximum of 8");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
               "\"data_offsets\":[0,0]}}",
               0, "tensor 'w': shape [4294967296, 4294967296, 4] is too large");
  /* A zero dim must not hide an overflowing product of the others. */
  expect_error("{\"w\":{\"dtype\":\"F64\",\"shape\":[0,9223372036854775807,9223372036854775807],"
               "\"data_offsets\":[0,0]}}",
               0, "is too large");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
               "tensor 'w': shape [2, 3] of F32 needs 24 bytes, but data range [0, 20) holds 20");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
               "tensor 'w': 'data_offsets' is not an array of two integers");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
               "tensor 'w': data_offsets [8, 4] are not 0 <= begin <= end");
  expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8,
               "data_offsets [-4, 0] are not");
}

static void test_bad_ranges(void **state) {
  (void)state;
  expect_error("{\"fc1.w\":{\"dtype\":\"F32\",\"shape\":[25],\"data_offsets\":[100,200]}}", 150,
               "tensor 'fc1.w': data range [100, 200) ends past the end of the file (150 bytes of "
               "data)");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               12, "hole in the data: bytes [4, 8) before tensor 'b' belong to no tensor");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
               "bytes [0, 4) before tensor 'a'");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6,
               "hole in the data: bytes [4, 6) at the end belong to no tensor");
  expect_error("{}", 3, "bytes [0, 3) at the end");
  /* Identical ranges overlap too. */
  expect_error("{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               4, "overlap");
}

/* Every prefix of a valid file fails cleanly; so does every single-byte change or parses. */
static void test_truncations_and_flips(void **state) {
  (void)state;
  const char *json = "{\"a\":{\"dtype\":\"F64\",\"shape\":[2,1],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[16,28]}}";
  size_t len;
  unsigned char *b = build(json, 28, &len);
  KilnTensorFile f;
  char err[512];
  for (size_t n = 0; n < len; n++) {
    unsigned char *cut = malloc(n ? n : 1); /* an exact-size copy lets ASan see overreads */
    memcpy(cut, b, n);
    assert_int_equal(kiln_safetensors_parse(cut, n, "cut", &f, err, sizeof err), -1);
    free(cut);
  }
  for (size_t i = 0; i < len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      b[i] ^= (unsigned char)(1u << bit);
      if (kiln_safetensors_parse(b, len, "flip", &f, err, sizeof err) == 0)
        kiln_tensor_file_free(&f);
      b[i] ^= (unsigned char)(1u << bit);
    }
  }
  free(b);
}

static void test_write_errors(void **state) {
  (void)state;
  float v[2] = {1, 2};
  char path[128], err[512];
  snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
  int before = count_files();
  KilnTensor t[2] = {
      {.name = "x", .dtype = KILN_F32, .rank = 1, .shape = {2}, .data = v, .nbytes = 8},
      {.name = "x", .dtype = KILN_F32, .rank = 1, .shape = {2}, .data = v, .nbytes = 8}};
  assert_int_equal(kiln_safetensors_write(path, t, 2, err, sizeof err), -1);
  assert_non_null(strstr(err, "tensor 'x' appears twice"));
  t[1].name = "__metadata__";
  assert_int_equal(kiln_safetensors_write(path, t, 2, err, sizeof err), -1);
  assert_non_null(strstr(err, "name '__metadata__' is not allowed"));
  t[1].name = "y";
  t[1].nbytes = 4;
  assert_int_equal(kiln_safetensors_write(path, t, 2, err, sizeof err), -1);
  assert_non_null(strstr(err, "tensor 'y': shape [2] of F32 needs 8 bytes, but nbytes is 4"));
  t[1].nbytes = 8;
  t[1].name = "\xff\xfe";
  assert_int_equal(kiln_safetensors_write(path, t, 2, err, sizeof err), -1);
  assert_non_null(strstr(err, "UTF-8"));
  assert_int_equal(count_files(), before);
  /* A missing folder: nothing written, a message naming the path. */
  assert_int_equal(kiln_safetensors_write("/nonexistent-kiln/w.safetensors", t, 1, err, sizeof err),
                   -1);
  assert_non_null(strstr(err, "/nonexistent-kiln/w.safetensors: cannot create"));
}

static void test_read_errors(void **state) {
  (void)state;
  KilnTensorFile f;
  char err[512];
  assert_int_equal(kiln_safetensors_read("/nonexistent-kiln.safetensors", &f, err, sizeof err), -1);
  assert_non_null(strstr(err, "/nonexistent-kiln.safetensors: cannot open"));
  assert_int_equal(kiln_safetensors_read(tmpdir, &f, err, sizeof err), -1);
  assert_non_null(strstr(err, "not a regular file"));
  /* The committed bad file: two tensors' data overlap. */
  const char *bad = KILN_SOURCE_DIR "/tests/data/overlap-safetensors.bin";
  assert_int_equal(kiln_safetensors_read(bad, &f, err, sizeof err), -1);
  assert_non_null(
      strstr(err, "overlap-safetensors.bin: tensors 'a' [0, 8) and 'b' [4, 12) overlap"));
  assert_null(f.tensors);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_header_layout),
      cmocka_unit_test(test_reads_reference_layout),
      cmocka_unit_test(test_bad_lengths),
      cmocka_unit_test(test_bad_json),
      cmocka_unit_test(test_bad_entries),
      cmocka_unit_test(test_bad_ranges),
      cmocka_unit_test(test_truncations_and_flips),
      cmocka_unit_test(test_write_errors),
      cmocka_unit_test(test_read_errors),
  };
  return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
