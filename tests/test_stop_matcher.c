/*
 * Tests of the stop-string matcher: hold-back across pieces, release of text that turned out not
 * to be a stop string, overlapping stop strings, UTF-8 boundaries and the flush at the end.
 */
#include "test_support.h"

#include <string.h>

#include "base/alloc.h"
#include "base/strbuf.h"
#include "engine/stop_matcher.h"

typedef struct fixture {
    quill_stop_matcher matcher;
    quill_strbuf out;
    bool is_stopped;
} fixture;

static void fixture_init(fixture *f, const char *const *stops, int32_t n_stops) {
    assert_int_equal(quill__stop_matcher_init(&f->matcher, stops, n_stops), QUILL_OK);
    quill__strbuf_init(&f->out);
    f->is_stopped = false;
}

static void fixture_release(fixture *f) {
    quill__stop_matcher_release(&f->matcher);
    quill__strbuf_release(&f->out);
}

/* Feeds one piece and returns the text output so far ("" when none). */
static const char *feed(fixture *f, const char *piece) {
    assert_int_equal(
        quill__stop_matcher_feed(&f->matcher, piece, strlen(piece), &f->out, &f->is_stopped),
        QUILL_OK);
    return f->out.data != NULL ? f->out.data : "";
}

static void test_stop_none_passes_through(void **state) {
    (void)state;
    fixture f;
    fixture_init(&f, NULL, 0);
    assert_string_equal(feed(&f, "Hello"), "Hello");
    assert_string_equal(feed(&f, " world"), "Hello world");
    assert_false(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_inside_one_piece(void **state) {
    (void)state;
    const char *stops[] = {"END"};
    fixture f;
    fixture_init(&f, stops, 1);
    assert_string_equal(feed(&f, "Hello END world"), "Hello ");
    assert_true(f.is_stopped);
    assert_string_equal(feed(&f, "more"), "Hello ");
    fixture_release(&f);
}

static void test_stop_spans_pieces(void **state) {
    (void)state;
    const char *stops[] = {"END"};
    fixture f;
    fixture_init(&f, stops, 1);
    assert_string_equal(feed(&f, "Hel"), "Hel");
    assert_string_equal(feed(&f, "lo E"), "Hello ");
    assert_string_equal(feed(&f, "N"), "Hello ");
    assert_false(f.is_stopped);
    assert_string_equal(feed(&f, "D and more"), "Hello ");
    assert_true(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_false_start_released(void **state) {
    (void)state;
    const char *stops[] = {"END"};
    fixture f;
    fixture_init(&f, stops, 1);
    assert_string_equal(feed(&f, "EN"), "");
    assert_string_equal(feed(&f, "x"), "ENx");
    assert_false(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_restarts_inside_held(void **state) {
    (void)state;
    const char *stops[] = {"aab"};
    fixture f;
    fixture_init(&f, stops, 1);
    assert_string_equal(feed(&f, "aa"), "");
    /* "aaa" cannot be "aab" from its first byte, but its last two bytes can still start it. */
    assert_string_equal(feed(&f, "a"), "a");
    assert_string_equal(feed(&f, "b"), "a");
    assert_true(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_first_to_complete_wins(void **state) {
    (void)state;
    const char *stops[] = {"bcd", "xabc", "c"};
    fixture f;
    fixture_init(&f, stops, 3);
    /* "c" completes at the third byte, before "bcd"; "xabc" never starts. */
    assert_string_equal(feed(&f, "abcd"), "ab");
    assert_true(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_longest_on_same_end(void **state) {
    (void)state;
    const char *stops[] = {"b", "ab"};
    fixture f;
    fixture_init(&f, stops, 2);
    assert_string_equal(feed(&f, "xa"), "x");
    assert_string_equal(feed(&f, "b"), "x");
    assert_true(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_utf8_boundary_kept(void **state) {
    (void)state;
    /* "é!" is C3 A9 21; the held part starts at the C3 byte, never between C3 and A9. */
    const char *stops[] = {"\xC3\xA9!"};
    fixture f;
    fixture_init(&f, stops, 1);
    assert_string_equal(feed(&f, "caf\xC3\xA9"), "caf");
    assert_string_equal(feed(&f, "?"), "caf\xC3\xA9?");
    assert_false(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_flush_releases_held(void **state) {
    (void)state;
    const char *stops[] = {"###"};
    fixture f;
    fixture_init(&f, stops, 1);
    assert_string_equal(feed(&f, "end ##"), "end ");
    assert_int_equal(quill__stop_matcher_flush(&f.matcher, &f.out), QUILL_OK);
    assert_string_equal(f.out.data, "end ##");
    fixture_release(&f);
}

static void test_stop_empty_string_ignored(void **state) {
    (void)state;
    const char *stops[] = {"", "zz"};
    fixture f;
    fixture_init(&f, stops, 2);
    assert_string_equal(feed(&f, "abc"), "abc");
    assert_false(f.is_stopped);
    fixture_release(&f);
}

static void test_stop_init_out_of_memory(void **state) {
    (void)state;
    const char *stops[] = {"a", "b"};
    for (int64_t fail_at = 0; fail_at < 4; fail_at++) {
        quill_stop_matcher matcher;
        quill__alloc_fail_after(fail_at);
        quill_status status = quill__stop_matcher_init(&matcher, stops, 2);
        quill__alloc_fail_after(-1);
        assert_int_equal(status, QUILL_ERR_NOMEM);
        assert_non_null(strstr(quill_error_message(), "stop string"));
        quill__stop_matcher_release(&matcher);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_none_passes_through),
        cmocka_unit_test(test_stop_inside_one_piece),
        cmocka_unit_test(test_stop_spans_pieces),
        cmocka_unit_test(test_stop_false_start_released),
        cmocka_unit_test(test_stop_restarts_inside_held),
        cmocka_unit_test(test_stop_first_to_complete_wins),
        cmocka_unit_test(test_stop_longest_on_same_end),
        cmocka_unit_test(test_stop_utf8_boundary_kept),
        cmocka_unit_test(test_stop_flush_releases_held),
        cmocka_unit_test(test_stop_empty_string_ignored),
        cmocka_unit_test(test_stop_init_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
