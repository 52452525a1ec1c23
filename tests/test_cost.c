/*
 * Tests of the server's money arithmetic: exact price parsing from decimal text, cost sums in
 * int64 picodollars with overflow checks, and exact USD formatting.
 */
#include "test_support.h"

#include <string.h>

#include "server/cost.h"

static void test_price_parse_exact_decimals(void **state) {
    (void)state;
    static const struct {
        const char *text;
        int64_t picousd;
    } cases[] = {
        {"0.15", 150000},   {"0", 0},          {"2", 2000000},    {"0.000001", 1},
        {"0.000125", 125},  {"1.5", 1500000},  {"10.", 10000000}, {".5", 500000},
        {"0.1500000", 150000}, {"1000000", 1000000000000LL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t price = -1;
        assert_int_equal(quill__cost_parse_price(cases[i].text, &price), QUILL_OK);
        assert_int_equal(price, cases[i].picousd);
    }
}

static void test_price_parse_rejects_bad_text(void **state) {
    (void)state;
    static const char *const cases[] = {"", ".", "-1", "+1", "1e3", "0.15usd", "1.2.3", " 1"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t price = -1;
        assert_int_equal(quill__cost_parse_price(cases[i], &price), QUILL_ERR_INVALID_ARG);
        assert_int_equal(price, 0);
        assert_non_null(strstr(quill_error_message(), "cost: price"));
    }
}

static void test_price_parse_rejects_sub_picodollar(void **state) {
    (void)state;
    int64_t price = -1;
    assert_int_equal(quill__cost_parse_price("0.0000001", &price), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "more than 6 decimal places"));
}

static void test_price_parse_rejects_too_large(void **state) {
    (void)state;
    int64_t price = -1;
    assert_int_equal(quill__cost_parse_price("1000000.000001", &price), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "above the maximum"));
    assert_int_equal(quill__cost_parse_price("99999999999999999999999", &price),
                     QUILL_ERR_INVALID_ARG);
}

static void test_cost_compute_sums_parts(void **state) {
    (void)state;
    quill_prices prices = {.input_picousd = 150000, .cached_input_picousd = 75000,
                           .output_picousd = 600000};
    quill_cost cost;
    assert_int_equal(quill__cost_compute(&prices, 1000, 400, 50, &cost), QUILL_OK);
    assert_int_equal(cost.input_picousd, 600 * 150000LL);
    assert_int_equal(cost.cached_input_picousd, 400 * 75000LL);
    assert_int_equal(cost.output_picousd, 50 * 600000LL);
    assert_int_equal(cost.total_picousd,
                     cost.input_picousd + cost.cached_input_picousd + cost.output_picousd);
}

static void test_cost_compute_rejects_bad_counts(void **state) {
    (void)state;
    quill_prices prices = {1, 1, 1};
    quill_cost cost;
    assert_int_equal(quill__cost_compute(&prices, 10, 11, 0, &cost), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "cached <= prompt"));
    assert_int_equal(quill__cost_compute(&prices, -1, 0, 0, &cost), QUILL_ERR_INVALID_ARG);
}

static void test_cost_compute_detects_overflow(void **state) {
    (void)state;
    quill_prices prices = {.input_picousd = QUILL_COST_MAX_PRICE_PICOUSD,
                           .cached_input_picousd = 0,
                           .output_picousd = QUILL_COST_MAX_PRICE_PICOUSD};
    quill_cost cost;
    assert_int_equal(quill__cost_compute(&prices, INT64_MAX / 2, 0, INT64_MAX / 2, &cost),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "overflows"));
    assert_int_equal(cost.total_picousd, 0);
}

static void test_cost_format_usd_exact(void **state) {
    (void)state;
    static const struct {
        int64_t picousd;
        const char *text;
    } cases[] = {
        {0, "0"},
        {150000, "0.00000015"},
        {1000000000000LL, "1"},
        {1500000000000LL, "1.5"},
        {12000000000001LL, "12.000000000001"},
        {-2500000000000LL, "-2.5"},
        {INT64_MIN, "-9223372.036854775808"},
        {INT64_MAX, "9223372.036854775807"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[QUILL_COST_USD_TEXT_BYTES];
        assert_string_equal(quill__cost_format_usd(cases[i].picousd, text, sizeof(text)),
                            cases[i].text);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_price_parse_exact_decimals),
        cmocka_unit_test(test_price_parse_rejects_bad_text),
        cmocka_unit_test(test_price_parse_rejects_sub_picodollar),
        cmocka_unit_test(test_price_parse_rejects_too_large),
        cmocka_unit_test(test_cost_compute_sums_parts),
        cmocka_unit_test(test_cost_compute_rejects_bad_counts),
        cmocka_unit_test(test_cost_compute_detects_overflow),
        cmocka_unit_test(test_cost_format_usd_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
