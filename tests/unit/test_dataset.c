/* test_dataset.c - IDX training data from memory (kiln_idx_parse): plain and gzip, every bad
 * header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dataset.h"

/* labels: magic 0x801, N = 4, then 4 bytes; images: magic 0x803, [2, 1, 2], then 4 bytes. */
static const unsigned char labels[] = {0, 0, 8, 1, 0, 0, 0, 4, 0, 1, 9, 255};
static const unsigned char images[] = {0, 0, 8, 3, 0, 0, 0, 2,  0,   0,
                                       0, 1, 0, 0, 0, 2, 0, 51, 102, 255};

/* A gzip member of n bytes at p, into out (returns its length). */
static size_t gzip_member(const unsigned char *p, size_t n, unsigned char *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)p;
  z.avail_in = (uInt)n;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t len = z.total_out;
  deflateEnd(&z);
  return len;
}

/* Parses and expects failure with `want` in the message. */
static void expect_error(const unsigned char *p, size_t n, int ndims, const char *want) {
  KilnTensor t;
  char err[512] = "";
  assert_int_equal(kiln_idx_parse(p, n, "x", ndims, &t, err, sizeof err), -1);
  if (!strstr(err, want)) fail_msg("message '%s' lacks '%s'", err, want);
  assert_null(t.data);
}

static void test_plain(void **state) {
  (void)state;
  KilnTensor t;
  char err[512];
  assert_int_equal(kiln_idx_parse(labels, sizeof labels, "l", 1, &t, err, sizeof err), 0);
  assert_string_equal(t.name, "labels");
  assert_int_equal(t.dtype, KILN_I32);
  assert_int_equal(t.rank, 1);
  assert_int_equal(t.shape[0], 4);
  assert_int_equal(((int32_t *)t.data)[3], 255);
  kiln_tensor_free(&t);
  assert_int_equal(kiln_idx_parse(images, sizeof images, "i", 3, &t, err, sizeof err), 0);
  assert_string_equal(t.name, "images");
  assert_int_equal(t.dtype, KILN_F32);
  assert_int_equal(t.rank, 3);
  assert_int_equal(t.shape[2], 2);
  assert_true(((float *)t.data)[1] == 51.0f / 255.0f);
  assert_true(((float *)t.data)[3] == 1.0f);
  kiln_tensor_free(&t);
}

static void test_gzip(void **state) {
  (void)state;
  unsigned char gz[512];
  size_t n = gzip_member(images, sizeof images, gz, sizeof gz);
  KilnTensor t;
  char err[512];
  assert_int_equal(kiln_idx_parse(gz, n, "i.gz", 3, &t, err, sizeof err), 0);
  assert_int_equal(t.nbytes, 4 * sizeof(float));
  kiln_tensor_free(&t);
  /* Two members (as `cat a.gz b.gz`), then trailing garbage gzread ignores. */
  n = gzip_member(labels, 5, gz, sizeof gz);
  n += gzip_member(labels + 5, sizeof labels - 5, gz + n, sizeof gz - n);
  memcpy(gz + n, "junk", 4);
  assert_int_equal(kiln_idx_parse(gz, n + 4, "l.gz", 1, &t, err, sizeof err), 0);
  assert_int_equal(t.shape[0], 4);
  kiln_tensor_free(&t);
  /* Truncated and corrupt streams. */
  n = gzip_member(images, sizeof images, gz, sizeof gz);
  expect_error(gz, n - 6, 3, "truncated compressed data");
  gz[12] ^= 0xff;
  expect_error(gz, n, 3, "corrupt compressed data");
}

static void test_bad_headers(void **state) {
  (void)state;
  unsigned char b[64];
  expect_error(labels, 0, 1, "truncated header");
  expect_error(labels, 6, 1, "truncated header");
  expect_error(images, sizeof images, 1, "bad magic 0x00000803");
  expect_error(labels, sizeof labels - 1, 1, "truncated data: expected 4 bytes, got 3");
  memcpy(b, labels, sizeof labels);
  b[sizeof labels] = 0;
  expect_error(b, sizeof labels + 1, 1, "unexpected bytes after the 4 bytes");
  memcpy(b, images, sizeof images);
  memset(b + 4, 0, 4);
  expect_error(b, sizeof images, 3, "every dim must be >= 1");
  memset(b + 4, 0xff, 8);
  expect_error(b, sizeof images, 3, "larger than 2 GiB");
  expect_error(images, sizeof images, 2, "2 dims are not training data");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain),
      cmocka_unit_test(test_gzip),
      cmocka_unit_test(test_bad_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
