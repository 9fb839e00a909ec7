/* test_npy.c - .npy round trips, numpy's exact header layout, hand-built bad files. */
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
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln_npy_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

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

/* Magic, version, 2-byte header length, the header text as given, then datalen bytes. */
static unsigned char *build(int major, int minor, const char *header, size_t datalen, size_t *len) {
  size_t h = strlen(header);
  *len = 10 + h + datalen;
  unsigned char *b = malloc(*len);
  assert_non_null(b);
  memcpy(b, "\x93NUMPY", 6);
  b[6] = (unsigned char)major, b[7] = (unsigned char)minor;
  b[8] = (unsigned char)(h & 0xff), b[9] = (unsigned char)(h >> 8);
  memcpy(b + 10, header, h);
  for (size_t i = 0; i < datalen; i++) b[10 + h + i] = (unsigned char)(i + 1);
  return b;
}

static void expect_error_buf(const unsigned char *b, size_t len, const char *want) {
  KilnTensor t;
  char err[512] = "";
  int rc = kiln_npy_parse(b, len, "x.npy", &t, err, sizeof err);
  if (rc == 0 || !strstr(err, want) || strncmp(err, "x.npy: ", 7) != 0)
    fail_msg("rc %d, message \"%s\", wanted \"%s\"", rc, err, want);
  assert_null(t.data);
}

static void expect_error(const char *header, size_t datalen, const char *want) {
  size_t len;
  unsigned char *b = build(1, 0, header, datalen, &len);
  expect_error_buf(b, len, want);
  free(b);
}

static KilnTensor parse_ok(const char *header, size_t datalen) {
  size_t len;
  unsigned char *b = build(1, 0, header, datalen, &len);
  KilnTensor t;
  char err[512];
  if (kiln_npy_parse(b, len, NULL, &t, err, sizeof err) != 0) fail_msg("%s", err);
  free(b);
  return t;
}

static void test_round_trip(void **state) {
  (void)state;
  static const int64_t dims[4] = {3, 1, 2, 5};
  const KilnDType dts[3] = {KILN_F32, KILN_I32, KILN_F64};
  char path[128], err[512];
  for (int d = 0; d < 3; d++) {
    for (int r = 0; r <= 4; r++) {
      KilnTensor t = {.dtype = dts[d], .rank = r}, u;
      memcpy(t.shape, dims, sizeof dims);
      t.nbytes = (size_t)kiln_tensor_numel(&t) * kiln_dtype_size(dts[d]);
      unsigned char *p = malloc(t.nbytes);
      for (size_t i = 0; i < t.nbytes; i++) p[i] = (unsigned char)(i * 13 + (size_t)d + 1);
      t.data = p;
      snprintf(path, sizeof path, "%s/%s_%d.npy", tmpdir, kiln_dtype_lower_name(dts[d]), r);
      if (kiln_npy_write(path, &t, err, sizeof err) != 0) fail_msg("%s", err);
      if (kiln_npy_read(path, &u, err, sizeof err) != 0) fail_msg("%s", err);
      assert_null(u.name);
      assert_int_equal(u.dtype, t.dtype);
      assert_int_equal(u.rank, t.rank);
      assert_memory_equal(u.shape, t.shape, sizeof(int64_t) * (size_t)r);
      assert_int_equal(u.nbytes, t.nbytes);
      assert_memory_equal(u.data, t.data, t.nbytes);
      kiln_tensor_free(&u);
      free(p);
    }
  }
  assert_int_equal(count_files(), 15); /* no temp files left */
}

/* Byte for byte what numpy.save writes for float32 (2, 3), (5,) and (). */
static void test_numpy_layout(void **state) {
  (void)state;
  struct {
    int rank;
    int64_t shape[2];
    const char *dict;
  } cases[3] = {
      {2, {2, 3}, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"},
      {1, {5, 0}, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"},
      {0, {0, 0}, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }"},
  };
  char path[128], err[512];
  snprintf(path, sizeof path, "%s/layout.npy", tmpdir);
  for (int c = 0; c < 3; c++) {
    float v[6] = {1, 2, 3, 4, 5, 6};
    KilnTensor t = {.dtype = KILN_F32, .rank = cases[c].rank, .data = v};
    memcpy(t.shape, cases[c].shape, sizeof cases[c].shape);
    t.nbytes = (size_t)kiln_tensor_numel(&t) * 4;
    assert_int_equal(kiln_npy_write(path, &t, err, sizeof err), 0);
    unsigned char b[256];
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    size_t got = fread(b, 1, sizeof b, fp);
    fclose(fp);
    assert_int_equal(got, 128 + t.nbytes); /* these dicts all pad to 128 */
    assert_memory_equal(b, "\x93NUMPY\x01\x00\x76\x00", 10);
    size_t dl = strlen(cases[c].dict);
    assert_memory_equal(b + 10, cases[c].dict, dl);
    for (size_t i = 10 + dl; i < 127; i++) assert_int_equal(b[i], ' ');
    assert_int_equal(b[127], '\n');
    assert_memory_equal(b + 128, v, t.nbytes);
  }
}

/* Keys in any order, either quote, extra spaces, no trailing commas, Python 2's 3L. */
static void test_header_variants(void **state) {
  (void)state;
  KilnTensor t = parse_ok("{\"shape\":(3L,2 ,),'fortran_order' : False,\"descr\":'<i4'}\n", 24);
  assert_int_equal(t.dtype, KILN_I32);
  assert_int_equal(t.rank, 2);
  assert_true(t.shape[0] == 3 && t.shape[1] == 2);
  kiln_tensor_free(&t);
  t = parse_ok("  { 'descr' : '<f8' , 'shape' : ( ) , 'fortran_order' : False , }   \n", 8);
  assert_int_equal(t.dtype, KILN_F64);
  assert_int_equal(t.rank, 0);
  assert_int_equal(t.nbytes, 8);
  kiln_tensor_free(&t);
  t = parse_ok("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", 0);
  assert_int_equal(t.nbytes, 0);
  assert_non_null(t.data);
  kiln_tensor_free(&t);
}

static void test_bad_prefix(void **state) {
  (void)state;
  const char *ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
  size_t len;
  unsigned char *b = build(1, 0, ok, 4, &len);
  expect_error_buf(b, 3, "not a .npy file (bad magic");
  expect_error_buf(b, 8, "file is 8 bytes, too short for the 10-byte .npy prefix");
  b[1] = 'n';
  expect_error_buf(b, len, "not a .npy file (bad magic; expected \\x93NUMPY)");
  free(b);
  b = build(2, 0, ok, 4, &len);
  expect_error_buf(b, len, "unsupported .npy version 2.0");
  b[6] = 3;
  expect_error_buf(b, len, "unsupported .npy version 3.0");
  b[6] = 1, b[7] = 1;
  expect_error_buf(b, len, "unsupported .npy version 1.1");
  b[7] = 0, b[8] = 0xff, b[9] = 0xff;
  expect_error_buf(b, len, "header length 65535 runs past the end of the file");
  free(b);
}

static void test_bad_meaning(void **state) {
  (void)state;
  expect_error("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", 4,
               "big-endian data is not supported (descr '>f4')");
  expect_error("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", 8,
               "unsupported dtype '<i8' (expected '<f4', '<f8' or '<i4')");
  expect_error("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", 1, "unsupported dtype");
  expect_error("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16,
               "Fortran-order arrays are not supported");
  expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20,
               "data is truncated: shape [2, 3] of '<f4' needs 24 bytes, found 20");
  expect_error("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 12,
               "trailing bytes: shape [] of '<f8' needs 8 bytes, found 12");
  expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 0,
               "shape [4294967296, 4294967296] is too large");
}

static void test_bad_syntax(void **state) {
  (void)state;
  static const struct {
    const char *header, *want;
  } cases[] = {
      {"{'descr': '<f4', 'shape': (1,), }", "missing key"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", "unknown key"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "duplicate key"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "shape (n) is not a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "expected '(' starting the shape"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
       "expected a non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}",
       "shape has more than 8 dims"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
       "integer too large"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "expected True or False"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", "expected ':' after a key"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "unexpected text after"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", "expected ',' or ')'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 5: 1}", "expected a string"},
      {"{'descr': '<f\\4', 'fortran_order': False, 'shape': (1,)}", "escapes"},
      {"{'descr': '<f4", "unterminated string"},
      {"", "expected '{'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char want[128];
    snprintf(want, sizeof want, "malformed .npy header: %s", cases[i].want);
    expect_error(cases[i].header, 4, want);
  }
}

/* Every prefix of a valid file fails; single-bit flips parse or fail, never crash. */
static void test_truncations_and_flips(void **state) {
  (void)state;
  size_t len;
  unsigned char *b =
      build(1, 0, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }\n", 16, &len);
  KilnTensor t;
  char err[512];
  for (size_t n = 0; n < len; n++) {
    unsigned char *cut = malloc(n ? n : 1);
    memcpy(cut, b, n);
    assert_int_equal(kiln_npy_parse(cut, n, "cut", &t, err, sizeof err), -1);
    free(cut);
  }
  for (size_t i = 0; i < len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      b[i] ^= (unsigned char)(1u << bit);
      if (kiln_npy_parse(b, len, "flip", &t, err, sizeof err) == 0) kiln_tensor_free(&t);
      b[i] ^= (unsigned char)(1u << bit);
    }
  }
  free(b);
}

static void test_file_errors(void **state) {
  (void)state;
  KilnTensor t = {.dtype = KILN_F32, .rank = 1, .shape = {3}, .nbytes = 8}, u;
  float v[3] = {0};
  t.data = v;
  char path[128], err[512];
  snprintf(path, sizeof path, "%s/bad.npy", tmpdir);
  int before = count_files();
  assert_int_equal(kiln_npy_write(path, &t, err, sizeof err), -1);
  assert_non_null(strstr(err, "shape [3] of F32 needs 12 bytes, but nbytes is 8"));
  t.nbytes = 12;
  t.rank = 9;
  assert_int_equal(kiln_npy_write(path, &t, err, sizeof err), -1);
  assert_non_null(strstr(err, "rank 9 is outside 0..8"));
  assert_int_equal(count_files(), before);
  t.rank = 1;
  assert_int_equal(kiln_npy_write("/nonexistent-kiln/x.npy", &t, err, sizeof err), -1);
  assert_non_null(strstr(err, "/nonexistent-kiln/x.npy: cannot create"));
  assert_int_equal(kiln_npy_read("/nonexistent-kiln.npy", &u, err, sizeof err), -1);
  assert_non_null(strstr(err, "/nonexistent-kiln.npy: cannot open"));
  /* The committed bad file: a .npy version 2.0 header. */
  assert_int_equal(kiln_npy_read(KILN_SOURCE_DIR "/tests/data/v2-npy.bin", &u, err, sizeof err),
                   -1);
  assert_non_null(strstr(err, "v2-npy.bin: unsupported .npy version 2.0"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_numpy_layout),
      cmocka_unit_test(test_header_variants),
      cmocka_unit_test(test_bad_prefix),
      cmocka_unit_test(test_bad_meaning),
      cmocka_unit_test(test_bad_syntax),
      cmocka_unit_test(test_truncations_and_flips),
      cmocka_unit_test(test_file_errors),
  };
  return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
