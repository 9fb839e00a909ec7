/* test_lex.c - the .kl lexer: token streams, newlines, numbers, comments, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lex.h"

/* The tokens of src[0..len) as one line of text: names and punctuation as
 * spelled, INT as i128, FLOAT as f0.5 (%.17g), NL, EOF; a lexical error ends
 * the line with ERROR and leaves the diagnostic text in *err (malloc'd). */
static char *lex_dump(const char *src, size_t len, char **err) {
  char *out = NULL, *msg = NULL;
  size_t outlen = 0, msglen = 0;
  FILE *f = open_memstream(&out, &outlen);
  Diag d;
  diag_init(&d, "t.kl", src, len);
  d.out = open_memstream(&msg, &msglen);
  Lexer lx;
  lex_init(&lx, &d, src, len);
  Token t;
  for (int i = 0; i < 10000; i++) {
    bool ok = lex_next(&lx, &t);
    if (i > 0) fputc(' ', f);
    if (!ok) {
      assert_int_equal(t.kind, TK_ERROR);
      fputs("ERROR", f);
      break;
    }
    if (t.kind == TK_IDENT)
      fprintf(f, "%.*s", (int)t.len, t.text);
    else if (t.kind == TK_INT)
      fprintf(f, "i%lld", (long long)t.ival);
    else if (t.kind == TK_FLOAT)
      fprintf(f, "f%.17g", t.fval);
    else if (t.kind == TK_NEWLINE)
      fputs("NL", f);
    else if (t.kind == TK_EOF)
      fputs("EOF", f);
    else
      fputs(lex_kind_spelling(t.kind), f);
    if (t.kind == TK_EOF) break;
  }
  fclose(f);
  fclose(d.out);
  assert_int_equal(d.nerrors, strstr(out, "ERROR") ? 1 : 0);
  if (err)
    *err = msg;
  else
    free(msg);
  return out;
}

static void check_tokens(const char *src, const char *expected) {
  char *got = lex_dump(src, strlen(src), NULL);
  assert_string_equal(got, expected);
  free(got);
}

/* The first line of the diagnostic for src[0..len), which must fail. */
static void check_error_n(const char *src, size_t len, const char *expected) {
  char *err = NULL;
  char *got = lex_dump(src, len, &err);
  assert_non_null(strstr(got, "ERROR"));
  char *nl = strchr(err, '\n');
  if (nl) *nl = '\0';
  assert_string_equal(err, expected);
  free(err);
  free(got);
}

static void check_error(const char *src, const char *expected) {
  check_error_n(src, strlen(src), expected);
}

static void test_header(void **state) {
  (void)state;
  check_tokens("model mlp(batch = 128, hidden = 512) {\n}",
               "model mlp ( batch = i128 , hidden = i512 ) { NL } EOF");
}

static void test_keywords(void **state) {
  (void)state;
  check_tokens("model fn input param output train with return true false",
               "model fn input param output train with return true false EOF");
  /* Only the exact spellings are keywords. */
  check_tokens("models fn_ _x x1 Model f32 glorot", "models fn_ _x x1 Model f32 glorot EOF");
}

static void test_punctuation(void **state) {
  (void)state;
  check_tokens("()[]{},:=+-*/@", "( ) [ ] { } , : = + - * / @ EOF");
  check_tokens("x@w+b", "x @ w + b EOF");
}

static void test_newlines_in_parens(void **state) {
  (void)state;
  check_tokens("f(a,\n  b)\nc", "f ( a , b ) NL c EOF");
  check_tokens("[1,\n2\n]\nx", "[ i1 , i2 ] NL x EOF");
  check_tokens("(\n[\n(\n)\n]\n)\nx", "( [ ( ) ] ) NL x EOF");
  /* Braces do not suppress newlines. */
  check_tokens("{\nx\n}", "{ NL x NL } EOF");
  /* Blank lines are tokens too; the parser skips them. */
  check_tokens("a\n\n\nb", "a NL NL NL b EOF");
  /* A stray closer does not drive the depth negative. */
  check_tokens(")\n]\n(\n)\nx", ") NL ] NL ( ) NL x EOF");
}

static void test_crlf(void **state) {
  (void)state;
  check_tokens("a\r\nb\r\n", "a NL b NL EOF");
  check_tokens("f(a,\r\nb)\r\nc", "f ( a , b ) NL c EOF");
  check_tokens("a # note\r\nb", "a NL b EOF");
  /* A lone carriage return would split lines differently for editors. */
  check_error("a\rb", "t.kl:1:2: error: unexpected character '\\r' (a carriage return must be "
                      "followed by a newline)");
  check_error("a # note\rb\n", "t.kl:1:9: error: unexpected character '\\r' (a carriage return "
                               "must be followed by a newline)");
  check_error("f(a,\r b)", "t.kl:1:5: error: unexpected character '\\r' (a carriage return must be "
                           "followed by a newline)");
}

/* Every token's file, line and byte column. */
static void test_locations(void **state) {
  (void)state;
  const char *src = "  x = 1\n\tyy(\n   z)\r\nw";
  Diag d;
  diag_init(&d, "t.kl", src, strlen(src));
  Lexer lx;
  lex_init(&lx, &d, src, strlen(src));
  static const int expect[][3] = {{TK_IDENT, 1, 3},   {TK_ASSIGN, 1, 5}, {TK_INT, 1, 7},
                                  {TK_NEWLINE, 1, 8}, {TK_IDENT, 2, 2},  {TK_LPAREN, 2, 4},
                                  {TK_IDENT, 3, 4},   {TK_RPAREN, 3, 5}, {TK_NEWLINE, 3, 6},
                                  {TK_IDENT, 4, 1},   {TK_EOF, 4, 2}};
  for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
    Token t;
    assert_true(lex_next(&lx, &t));
    assert_int_equal(t.kind, expect[i][0]);
    assert_int_equal(t.loc.line, expect[i][1]);
    assert_int_equal(t.loc.col, expect[i][2]);
    assert_string_equal(t.loc.file, "t.kl");
  }
}

static void test_numbers(void **state) {
  (void)state;
  check_tokens("128 0 007", "i128 i0 i7 EOF");
  check_tokens("0.5 1e-3 3. 2.5e+4 .5 1E3 4e2", "f0.5 f0.001 f3 f25000 f0.5 f1000 f400 EOF");
  check_tokens("9223372036854775807", "i9223372036854775807 EOF");
  check_tokens("1e308 1e-400", "f1e+308 f0 EOF");
  /* A leading '-' is the operator; a trailing '.' belongs to the float. */
  check_tokens("-1 x[2:5] 3.+1", "- i1 x [ i2 : i5 ] f3 + i1 EOF");
}

static void test_number_errors(void **state) {
  (void)state;
  check_error("x = 9223372036854775808",
              "t.kl:1:5: error: integer literal '9223372036854775808' is too large (the maximum is "
              "9223372036854775807)");
  check_error("1e999", "t.kl:1:1: error: float literal '1e999' is too large for a double");
  check_error("y = 1e", "t.kl:1:6: error: expected digits in the exponent of '1e'");
  check_error("2.5e+", "t.kl:1:4: error: expected digits in the exponent of '2.5e+'");
  check_error("128x", "t.kl:1:4: error: invalid character 'x' after the number '128'");
  check_error("3._", "t.kl:1:3: error: invalid character '_' after the number '3.'");
  /* Long literals are cut in the message. */
  char big[200];
  memset(big, '9', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  check_error(big,
              "t.kl:1:1: error: integer literal '9999999999999999999999999999999999999999...' is "
              "too large (the maximum is 9223372036854775807)");
}

static void test_comments(void **state) {
  (void)state;
  check_tokens("x # a comment ( [ \n y", "x NL y EOF");
  check_tokens("# only a comment", "EOF");
  check_tokens("#\n#\n", "NL NL EOF");
  check_tokens("f(a, # inside parens\n b)", "f ( a , b ) EOF");
  /* Any valid UTF-8 is fine in a comment. */
  check_tokens("x # caf\xc3\xa9 \xe2\x86\x92 \xf0\x9f\x94\xa5\ny", "x NL y EOF");
}

static void test_comment_utf8_errors(void **state) {
  (void)state;
  check_error("x # \xff\n", "t.kl:1:5: error: invalid UTF-8 in comment");
  check_error("# ok\n# \xc0\xaf overlong", "t.kl:2:3: error: invalid UTF-8 in comment");
  check_error("# \xed\xa0\x80 surrogate", "t.kl:1:3: error: invalid UTF-8 in comment");
  check_error("# \xf4\x90\x80\x80 too high", "t.kl:1:3: error: invalid UTF-8 in comment");
  check_error("# cut \xe2\x82", "t.kl:1:7: error: invalid UTF-8 in comment");
  check_error("# lone \x80 continuation", "t.kl:1:8: error: invalid UTF-8 in comment");
}

static void test_bad_characters(void **state) {
  (void)state;
  check_error("x \x01", "t.kl:1:3: error: unexpected character '\\x01'");
  check_error_n("a\0b", 3, "t.kl:1:2: error: unexpected character '\\x00'");
  check_error("\n  \xff", "t.kl:2:3: error: unexpected byte 0xff (not valid UTF-8)");
  check_error("x = caf\xc3\xa9",
              "t.kl:1:8: error: unexpected character '\xc3\xa9' (U+00E9); non-ASCII text is "
              "allowed only in comments");
  check_error("a $ b", "t.kl:1:3: error: unexpected character '$'");
  check_error("a;", "t.kl:1:2: error: unexpected character ';' (a newline ends a statement)");
  check_error("x.y", "t.kl:1:2: error: unexpected character '.'");
  check_error("\x7f", "t.kl:1:1: error: unexpected character '\\x7f'");
}

/* The whole diagnostic: location, message, the line and a caret. */
static void test_error_caret(void **state) {
  (void)state;
  char *err = NULL;
  char *got = lex_dump("model m {\n  x = a $ b\n}\n", 24, &err);
  assert_string_equal(got, "model m { NL x = a ERROR");
  assert_string_equal(err, "t.kl:2:9: error: unexpected character '$'\n"
                           "  x = a $ b\n"
                           "        ^\n");
  free(err);
  free(got);
}

static void test_empty(void **state) {
  (void)state;
  check_tokens("", "EOF");
  check_tokens("   \t  ", "EOF");
  Diag d;
  diag_init(&d, "t.kl", NULL, 0);
  Lexer lx;
  lex_init(&lx, &d, NULL, 0);
  Token t;
  assert_true(lex_next(&lx, &t));
  assert_int_equal(t.kind, TK_EOF);
  assert_int_equal(t.loc.line, 1);
  assert_int_equal(t.loc.col, 1);
}

static void test_bom(void **state) {
  (void)state;
  check_tokens("\xef\xbb\xbfmodel m", "model m EOF");
  /* A BOM anywhere else is an error. */
  check_error("x \xef\xbb\xbf",
              "t.kl:1:3: error: unexpected character '\xef\xbb\xbf' (U+FEFF); non-ASCII text is "
              "allowed only in comments");
}

/* Text that is not bounded by a NUL: the lexer reads only len bytes. */
static void test_not_nul_terminated(void **state) {
  (void)state;
  char buf[] = {'a', 'b', '1', '2'};
  char *got = lex_dump(buf, 2, NULL);
  assert_string_equal(got, "ab EOF");
  free(got);
  got = lex_dump("12.5e3xyz", 6, NULL);
  assert_string_equal(got, "f12500 EOF");
  free(got);
}

static void test_spellings(void **state) {
  (void)state;
  assert_string_equal(lex_kind_spelling(TK_LPAREN), "(");
  assert_string_equal(lex_kind_spelling(TK_MODEL), "model");
  assert_string_equal(lex_kind_spelling(TK_EOF), "end of file");
  assert_true(lex_is_keyword(TK_FN));
  assert_true(lex_is_keyword(TK_FALSE));
  assert_false(lex_is_keyword(TK_IDENT));
  assert_false(lex_is_keyword(TK_LPAREN));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header),
      cmocka_unit_test(test_keywords),
      cmocka_unit_test(test_punctuation),
      cmocka_unit_test(test_newlines_in_parens),
      cmocka_unit_test(test_crlf),
      cmocka_unit_test(test_locations),
      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_number_errors),
      cmocka_unit_test(test_comments),
      cmocka_unit_test(test_comment_utf8_errors),
      cmocka_unit_test(test_bad_characters),
      cmocka_unit_test(test_error_caret),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_bom),
      cmocka_unit_test(test_not_nul_terminated),
      cmocka_unit_test(test_spellings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
