/*
 * Tests of the sampler: parameter validation, greedy ties, logit bias, the three penalties and
 * their window, top-k, top-p, min-p, seeded determinism and log-probabilities.
 */
#include "test_support.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "quill/sampler.h"

enum { DRAWS = 2000 };

/* Creates a sampler or fails the test. */
static quill_sampler *sampler_new(const quill_sampling_params *params, int32_t n_vocab) {
    quill_sampler *sampler = NULL;
    assert_int_equal(quill_sampler_create(params, n_vocab, &sampler), QUILL_OK);
    assert_non_null(sampler);
    return sampler;
}

static quill_sampling_params greedy_params(void) {
    quill_sampling_params params = quill_sampling_params_default();
    params.temperature = 0.0f;
    params.has_seed = true;
    params.seed = 1;
    return params;
}

static quill_sampling_params random_params(uint64_t seed) {
    quill_sampling_params params = quill_sampling_params_default();
    params.temperature = 1.0f;
    params.top_k = 0;
    params.top_p = 1.0f;
    params.min_p = 0.0f;
    params.has_seed = true;
    params.seed = seed;
    return params;
}

/* Checks that validation fails with INVALID_ARG and a message naming field. */
static void expect_invalid(const quill_sampling_params *params, const char *field) {
    assert_int_equal(quill_sampling_params_validate(params, 100), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), field));
}

static void test_params_default_valid(void **state) {
    (void)state;
    quill_sampling_params params = quill_sampling_params_default();
    assert_int_equal(quill_sampling_params_validate(&params, 100), QUILL_OK);
    assert_true(params.temperature > 0.0f);
    assert_int_equal(params.repetition_penalty, 1.0f);
}

static void test_params_invalid_fields_named(void **state) {
    (void)state;
    quill_sampling_params params = quill_sampling_params_default();
    params.temperature = -0.5f;
    expect_invalid(&params, "temperature");

    params = quill_sampling_params_default();
    params.temperature = NAN;
    expect_invalid(&params, "temperature");

    params = quill_sampling_params_default();
    params.top_k = -1;
    expect_invalid(&params, "top_k");

    params = quill_sampling_params_default();
    params.top_p = 0.0f;
    expect_invalid(&params, "top_p");

    params = quill_sampling_params_default();
    params.top_p = 1.5f;
    expect_invalid(&params, "top_p");

    params = quill_sampling_params_default();
    params.min_p = 1.5f;
    expect_invalid(&params, "min_p");

    params = quill_sampling_params_default();
    params.repetition_penalty = 0.0f;
    expect_invalid(&params, "repetition_penalty");

    params = quill_sampling_params_default();
    params.presence_penalty = INFINITY;
    expect_invalid(&params, "presence_penalty");

    params = quill_sampling_params_default();
    params.frequency_penalty = NAN;
    expect_invalid(&params, "frequency_penalty");

    params = quill_sampling_params_default();
    params.penalty_last_n = -2;
    expect_invalid(&params, "penalty_last_n");
}

static void test_params_invalid_bias(void **state) {
    (void)state;
    quill_logit_bias bias = {.token = 100, .bias = 1.0f};
    quill_sampling_params params = quill_sampling_params_default();
    params.logit_biases = &bias;
    params.n_logit_biases = 1;
    expect_invalid(&params, "logit_bias token 100");

    bias.token = 5;
    bias.bias = INFINITY;
    expect_invalid(&params, "logit_bias");

    params.logit_biases = NULL;
    expect_invalid(&params, "logit_biases is NULL");
}

static void test_create_invalid_clears_out(void **state) {
    (void)state;
    quill_sampling_params params = quill_sampling_params_default();
    params.min_p = -1.0f;
    quill_sampler *sampler = (quill_sampler *)&params;
    assert_int_equal(quill_sampler_create(&params, 10, &sampler), QUILL_ERR_INVALID_ARG);
    assert_null(sampler);
    assert_non_null(strstr(quill_error_message(), "min_p"));
}

static void test_create_out_of_memory(void **state) {
    (void)state;
    quill_sampling_params params = quill_sampling_params_default();
    for (int64_t fail_at = 0; fail_at < 4; fail_at++) {
        quill_sampler *sampler = NULL;
        quill__alloc_fail_after(fail_at);
        quill_status status = quill_sampler_create(&params, 10, &sampler);
        quill__alloc_fail_after(-1);
        assert_int_equal(status, QUILL_ERR_NOMEM);
        assert_null(sampler);
        assert_non_null(strstr(quill_error_message(), "out of memory"));
    }
}

static void test_greedy_lowest_id_on_tie(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    quill_sampler *sampler = sampler_new(&params, 5);
    const float logits[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    assert_int_equal(quill_sampler_sample(sampler, logits), 1);
    quill_sampler_destroy(sampler);
}

static void test_greedy_ignores_nan(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    quill_sampler *sampler = sampler_new(&params, 3);
    const float logits[3] = {NAN, 0.5f, 1.0f};
    assert_int_equal(quill_sampler_sample(sampler, logits), 2);
    quill_sampler_destroy(sampler);
}

static void test_bias_bans_and_boosts(void **state) {
    (void)state;
    const quill_logit_bias biases[2] = {{.token = 0, .bias = -INFINITY},
                                        {.token = 2, .bias = 0.6f}};
    quill_sampling_params params = greedy_params();
    params.logit_biases = biases;
    params.n_logit_biases = 2;
    quill_sampler *sampler = sampler_new(&params, 3);
    const float logits[3] = {5.0f, 1.0f, 0.5f};
    assert_int_equal(quill_sampler_sample(sampler, logits), 2);
    quill_sampler_destroy(sampler);
}

static void test_bias_ban_holds_when_sampling(void **state) {
    (void)state;
    const quill_logit_bias ban = {.token = 1, .bias = -INFINITY};
    quill_sampling_params params = random_params(7);
    params.logit_biases = &ban;
    params.n_logit_biases = 1;
    quill_sampler *sampler = sampler_new(&params, 3);
    const float logits[3] = {0.0f, 3.0f, 0.0f};
    for (int i = 0; i < 200; i++) {
        assert_int_not_equal(quill_sampler_sample(sampler, logits), 1);
    }
    quill_sampler_destroy(sampler);
}

static void test_bias_ban_all_draws_nothing(void **state) {
    (void)state;
    const quill_logit_bias biases[3] = {{.token = 0, .bias = -INFINITY},
                                        {.token = 1, .bias = -INFINITY},
                                        {.token = 2, .bias = -INFINITY}};
    const float logits[3] = {5.0f, 1.0f, 0.5f};
    quill_sampling_params greedy = greedy_params();
    greedy.logit_biases = biases;
    greedy.n_logit_biases = 3;
    quill_sampler *sampler = sampler_new(&greedy, 3);
    assert_int_equal(quill_sampler_sample(sampler, logits), QUILL_SAMPLER_NO_TOKEN);
    quill_sampler_destroy(sampler);

    quill_sampling_params random = random_params(7);
    random.logit_biases = biases;
    random.n_logit_biases = 3;
    sampler = sampler_new(&random, 3);
    assert_int_equal(quill_sampler_sample(sampler, logits), QUILL_SAMPLER_NO_TOKEN);
    quill_sampler_destroy(sampler);
}

static void test_nan_logits_draw_nothing(void **state) {
    (void)state;
    const float logits[3] = {NAN, NAN, NAN};
    quill_sampling_params greedy = greedy_params();
    quill_sampler *sampler = sampler_new(&greedy, 3);
    assert_int_equal(quill_sampler_sample(sampler, logits), QUILL_SAMPLER_NO_TOKEN);
    quill_sampler_destroy(sampler);

    quill_sampling_params random = random_params(3);
    sampler = sampler_new(&random, 3);
    assert_int_equal(quill_sampler_sample(sampler, logits), QUILL_SAMPLER_NO_TOKEN);
    quill_sampler_destroy(sampler);
}

static void test_repetition_divides_positive(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    params.repetition_penalty = 2.0f;
    quill_sampler *sampler = sampler_new(&params, 2);
    const float logits[2] = {3.0f, 2.0f};
    assert_int_equal(quill_sampler_sample(sampler, logits), 0);
    quill_sampler_accept(sampler, 0);
    /* 3.0 / 2 = 1.5 falls below 2.0. */
    assert_int_equal(quill_sampler_sample(sampler, logits), 1);
    quill_sampler_destroy(sampler);
}

static void test_repetition_multiplies_negative(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    params.repetition_penalty = 2.0f;
    quill_sampler *sampler = sampler_new(&params, 2);
    const float logits[2] = {-1.0f, -1.5f};
    quill_sampler_accept(sampler, 0);
    quill_sampler_accept(sampler, 0);
    /* -1.0 * 2 = -2.0 falls below -1.5; a repeated token is penalized once. */
    assert_int_equal(quill_sampler_sample(sampler, logits), 1);
    quill_sampler_destroy(sampler);
}

static void test_presence_once_per_token(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    params.presence_penalty = 0.5f;
    quill_sampler *sampler = sampler_new(&params, 2);
    const float logits[2] = {1.0f, 0.45f};
    quill_sampler_accept(sampler, 0);
    quill_sampler_accept(sampler, 0);
    quill_sampler_accept(sampler, 0);
    /* 1.0 - 0.5 = 0.5 stays above 0.45 whatever the count. */
    assert_int_equal(quill_sampler_sample(sampler, logits), 0);
    quill_sampler_destroy(sampler);
}

static void test_frequency_per_occurrence(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    params.frequency_penalty = 0.3f;
    quill_sampler *sampler = sampler_new(&params, 2);
    const float logits[2] = {1.0f, 0.2f};
    quill_sampler_accept(sampler, 0);
    quill_sampler_accept(sampler, 0);
    /* 1.0 - 2 * 0.3 = 0.4 */
    assert_int_equal(quill_sampler_sample(sampler, logits), 0);
    quill_sampler_accept(sampler, 0);
    /* 1.0 - 3 * 0.3 = 0.1 */
    assert_int_equal(quill_sampler_sample(sampler, logits), 1);
    quill_sampler_destroy(sampler);
}

static void test_penalty_window_forgets(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    params.presence_penalty = 1.0f;
    params.penalty_last_n = 2;
    quill_sampler *sampler = sampler_new(&params, 3);
    const float logits[3] = {1.0f, 0.5f, 0.0f};
    quill_sampler_accept(sampler, 0);
    assert_int_equal(quill_sampler_sample(sampler, logits), 1);
    quill_sampler_accept(sampler, 2);
    quill_sampler_accept(sampler, 2);
    /* Token 0 left the two-token window, so it is no longer penalized. */
    assert_int_equal(quill_sampler_sample(sampler, logits), 0);
    quill_sampler_destroy(sampler);
}

static void test_penalty_unbounded_window(void **state) {
    (void)state;
    quill_sampling_params params = greedy_params();
    params.frequency_penalty = 0.001f;
    params.penalty_last_n = -1;
    quill_sampler *sampler = sampler_new(&params, 2);
    const float logits[2] = {1.0f, 0.5f};
    for (int i = 0; i < 600; i++) {
        quill_sampler_accept(sampler, 0);
    }
    /* 1.0 - 600 * 0.001 = 0.4: all 600 occurrences count, past the ring's first growth. */
    assert_int_equal(quill_sampler_sample(sampler, logits), 1);
    quill_sampler_destroy(sampler);
}

static void test_top_k_one_is_argmax(void **state) {
    (void)state;
    quill_sampling_params params = random_params(3);
    params.top_k = 1;
    quill_sampler *sampler = sampler_new(&params, 4);
    const float logits[4] = {1.0f, 1.2f, 1.1f, 0.9f};
    for (int i = 0; i < 100; i++) {
        assert_int_equal(quill_sampler_sample(sampler, logits), 1);
    }
    quill_sampler_destroy(sampler);
}

/* Fills counts[n] with how often each token was drawn. */
static void draw_counts(quill_sampler *sampler, const float *logits, int n, int *counts) {
    memset(counts, 0, (size_t)n * sizeof(int));
    for (int i = 0; i < DRAWS; i++) {
        int32_t token = quill_sampler_sample(sampler, logits);
        assert_true(token >= 0 && token < n);
        counts[token] += 1;
    }
}

static void test_top_p_cuts_tail(void **state) {
    (void)state;
    quill_sampling_params params = random_params(11);
    params.top_p = 0.6f;
    quill_sampler *sampler = sampler_new(&params, 3);
    /* Probabilities 0.5, 0.3, 0.2: the first two reach 0.8 >= 0.6. */
    const float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    int counts[3];
    draw_counts(sampler, logits, 3, counts);
    assert_int_equal(counts[2], 0);
    assert_true(counts[0] > 0);
    assert_true(counts[1] > 0);
    quill_sampler_destroy(sampler);
}

static void test_min_p_cuts_tail(void **state) {
    (void)state;
    quill_sampling_params params = random_params(12);
    params.min_p = 0.5f;
    quill_sampler *sampler = sampler_new(&params, 3);
    /* Keeps p >= 0.5 * 0.5 = 0.25. */
    const float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    int counts[3];
    draw_counts(sampler, logits, 3, counts);
    assert_int_equal(counts[2], 0);
    assert_true(counts[1] > 0);
    quill_sampler_destroy(sampler);
}

static void test_temperature_follows_softmax(void **state) {
    (void)state;
    quill_sampling_params params = random_params(5);
    quill_sampler *sampler = sampler_new(&params, 2);
    const float logits[2] = {logf(0.75f), logf(0.25f)};
    int counts[2];
    draw_counts(sampler, logits, 2, counts);
    /* Expected 1500 of 2000; the bound is over 6 standard deviations (sd ~ 19). */
    assert_in_range(counts[0], 1380, 1620);
    quill_sampler_destroy(sampler);
}

/* Without filters the draw takes the softmax relative to the largest logit, wherever it sits:
 * exp(800) overflows a double, exp(800 - 800) does not. */
static void test_temperature_large_logits_stable(void **state) {
    (void)state;
    quill_sampling_params params = random_params(6);
    quill_sampler *sampler = sampler_new(&params, 3);
    const float logits[3] = {0.0f, 800.0f, 799.0f};
    int counts[3];
    draw_counts(sampler, logits, 3, counts);
    /* p = 1 / (1 + e^-1) = 0.731 for token 1: expected 1462 of 2000 (sd ~ 20). */
    assert_int_equal(counts[0], 0);
    assert_in_range(counts[1], 1340, 1580);
    quill_sampler_destroy(sampler);
}

static int compare_desc(const void *a, const void *b) {
    float x = *(const float *)a;
    float y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Large vocabulary with top-p only: every draw must lie in the nucleus computed by a full sort,
 * which checks the incremental sorted prefix. */
static void test_top_p_large_vocab_nucleus(void **state) {
    (void)state;
    enum { N_VOCAB = 5000 };
    float *logits = malloc(N_VOCAB * sizeof(float));
    float *sorted = malloc(N_VOCAB * sizeof(float));
    assert_non_null(logits);
    assert_non_null(sorted);
    uint32_t x = 12345;
    for (int i = 0; i < N_VOCAB; i++) {
        x = x * 1664525u + 1013904223u;
        logits[i] = (float)(x >> 8) / (float)(1u << 24) * 8.0f;
    }
    memcpy(sorted, logits, N_VOCAB * sizeof(float));
    qsort(sorted, N_VOCAB, sizeof(float), compare_desc);
    double total = 0.0;
    for (int i = 0; i < N_VOCAB; i++) {
        total += exp((double)(sorted[i] - sorted[0]));
    }
    double cumulative = 0.0;
    float threshold = sorted[0];
    for (int i = 0; i < N_VOCAB; i++) {
        cumulative += exp((double)(sorted[i] - sorted[0]));
        threshold = sorted[i];
        if (cumulative >= 0.9 * total) {
            break;
        }
    }

    quill_sampling_params params = random_params(21);
    params.top_p = 0.9f;
    quill_sampler *sampler = sampler_new(&params, N_VOCAB);
    for (int i = 0; i < 500; i++) {
        int32_t token = quill_sampler_sample(sampler, logits);
        assert_true(logits[token] >= threshold);
    }
    quill_sampler_destroy(sampler);
    free(sorted);
    free(logits);
}

/* Large vocabulary with min-p only: the kept set is selected, not sorted, past the first
 * prefix, and every draw must clear the min-p threshold. */
static void test_min_p_large_vocab_threshold(void **state) {
    (void)state;
    enum { N_VOCAB = 5000 };
    float *logits = malloc(N_VOCAB * sizeof(float));
    assert_non_null(logits);
    uint32_t x = 777;
    float max_logit = -INFINITY;
    for (int i = 0; i < N_VOCAB; i++) {
        x = x * 1664525u + 1013904223u;
        logits[i] = (float)(x >> 8) / (float)(1u << 24) * 3.0f;
        max_logit = logits[i] > max_logit ? logits[i] : max_logit;
    }
    quill_sampling_params params = random_params(31);
    params.min_p = 0.2f;
    quill_sampler *sampler = sampler_new(&params, N_VOCAB);
    float threshold = max_logit + logf(0.2f);
    int n_low = 0;
    for (int i = 0; i < 500; i++) {
        int32_t token = quill_sampler_sample(sampler, logits);
        assert_true(logits[token] >= threshold);
        n_low += logits[token] < max_logit - 1.0f;
    }
    /* About a fifth of the kept probability mass lies more than 1 below the best logit. */
    assert_true(n_low > 0);
    quill_sampler_destroy(sampler);
    free(logits);
}

static void test_same_seed_same_tokens(void **state) {
    (void)state;
    float logits[50];
    for (int i = 0; i < 50; i++) {
        logits[i] = (float)(i % 7) * 0.3f;
    }
    quill_sampling_params params = quill_sampling_params_default();
    params.has_seed = true;
    params.seed = 42;
    quill_sampler *first = sampler_new(&params, 50);
    quill_sampler *second = sampler_new(&params, 50);
    params.seed = 43;
    quill_sampler *other = sampler_new(&params, 50);
    int n_different = 0;
    for (int i = 0; i < 100; i++) {
        int32_t a = quill_sampler_sample(first, logits);
        int32_t b = quill_sampler_sample(second, logits);
        int32_t c = quill_sampler_sample(other, logits);
        assert_int_equal(a, b);
        n_different += a != c;
    }
    assert_true(n_different > 0);
    quill_sampler_destroy(first);
    quill_sampler_destroy(second);
    quill_sampler_destroy(other);
}

static void test_logprobs_values_and_order(void **state) {
    (void)state;
    const float logits[4] = {0.0f, logf(3.0f), 0.0f, -INFINITY};
    /* Probabilities 1/5, 3/5, 1/5, 0. */
    float chosen = 0.0f;
    quill_token_logprob top[3];
    quill_logprobs_compute(logits, 4, 2, 3, &chosen, top);
    assert_float_equal(chosen, logf(0.2f), 1e-5);
    assert_int_equal(top[0].token, 1);
    assert_float_equal(top[0].logprob, logf(0.6f), 1e-5);
    assert_int_equal(top[1].token, 0);
    assert_int_equal(top[2].token, 2);
    assert_float_equal(top[2].logprob, logf(0.2f), 1e-5);
}

static void test_logprobs_chosen_out_of_range(void **state) {
    (void)state;
    const float logits[2] = {1.0f, 2.0f};
    float chosen = 0.0f;
    quill_logprobs_compute(logits, 2, 7, 0, &chosen, NULL);
    assert_true(isinf(chosen));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_default_valid),
        cmocka_unit_test(test_params_invalid_fields_named),
        cmocka_unit_test(test_params_invalid_bias),
        cmocka_unit_test(test_create_invalid_clears_out),
        cmocka_unit_test(test_create_out_of_memory),
        cmocka_unit_test(test_greedy_lowest_id_on_tie),
        cmocka_unit_test(test_greedy_ignores_nan),
        cmocka_unit_test(test_bias_bans_and_boosts),
        cmocka_unit_test(test_bias_ban_holds_when_sampling),
        cmocka_unit_test(test_bias_ban_all_draws_nothing),
        cmocka_unit_test(test_nan_logits_draw_nothing),
        cmocka_unit_test(test_repetition_divides_positive),
        cmocka_unit_test(test_repetition_multiplies_negative),
        cmocka_unit_test(test_presence_once_per_token),
        cmocka_unit_test(test_frequency_per_occurrence),
        cmocka_unit_test(test_penalty_window_forgets),
        cmocka_unit_test(test_penalty_unbounded_window),
        cmocka_unit_test(test_top_k_one_is_argmax),
        cmocka_unit_test(test_top_p_cuts_tail),
        cmocka_unit_test(test_min_p_cuts_tail),
        cmocka_unit_test(test_temperature_follows_softmax),
        cmocka_unit_test(test_temperature_large_logits_stable),
        cmocka_unit_test(test_top_p_large_vocab_nucleus),
        cmocka_unit_test(test_min_p_large_vocab_threshold),
        cmocka_unit_test(test_same_seed_same_tokens),
        cmocka_unit_test(test_logprobs_values_and_order),
        cmocka_unit_test(test_logprobs_chosen_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
