/*
 * Tests of the metrics module: histogram bucket math, percentile accuracy against a sorted
 * reference, the 5-minute window with an injected clock, which requests enter which figures,
 * the Prometheus text (checked by promtool when installed and by a parser here), label
 * escaping, the /v1/stats JSON, limits, allocation failures and concurrent recording.
 */
#include "test_support.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/strbuf.h"
#include "metrics/histogram.h"
#include "metrics/prometheus.h"
#include "metrics/quantile_window.h"
#include "metrics/metrics_registry.h"
#include "quill/metrics.h"

/* ---- helpers ---- */

typedef struct fake_clock {
    int64_t now_us;
} fake_clock;

static int64_t fake_clock_now(void *clock_user_data) {
    return ((fake_clock *)clock_user_data)->now_us;
}

static quill_metrics *create_with_clock(fake_clock *clock) {
    quill_metrics_params params = quill_metrics_params_default();
    params.clock_us = fake_clock_now;
    params.clock_user_data = clock;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(&params, &metrics), QUILL_OK);
    return metrics;
}

/* A successful streamed request with known times in microseconds. */
static quill_request_record ok_record(const char *model, int64_t ttft_us) {
    quill_request_record record = quill_request_record_default();
    record.model = model;
    record.http_status = 200;
    record.finish_reason = "stop";
    record.n_prompt_tokens = 40;
    record.n_cached_tokens = 10;
    record.n_completion_tokens = 3;
    record.cost_picousd = 1234567;
    record.queue_us = 1000;
    record.ttft_us = ttft_us;
    record.generation_us = 60000;
    record.e2e_us = ttft_us + 60000;
    return record;
}

static char *render_prometheus(quill_metrics *metrics) {
    char *text = NULL;
    size_t n_bytes = 0;
    assert_int_equal(quill_metrics_render_prometheus(metrics, &text, &n_bytes), QUILL_OK);
    assert_non_null(text);
    assert_int_equal(strlen(text), n_bytes);
    return text;
}

static json_object *render_stats(quill_metrics *metrics) {
    char *text = NULL;
    size_t n_bytes = 0;
    assert_int_equal(quill_metrics_render_stats_json(metrics, &text, &n_bytes), QUILL_OK);
    json_object *root = json_tokener_parse(text);
    free(text);
    assert_non_null(root);
    return root;
}

/* Returns the member at a path of keys, failing the test when one is missing. */
static json_object *json_path(json_object *object, const char *const *keys, size_t n_keys) {
    for (size_t i = 0; i < n_keys; i++) {
        json_object *child = NULL;
        if (!json_object_object_get_ex(object, keys[i], &child)) {
            fail_msg("missing JSON member '%s'", keys[i]);
        }
        object = child;
    }
    return object;
}

#define JSON_AT(root, ...)                                                                         \
    json_path((root), (const char *const[]){__VA_ARGS__},                                          \
              sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* Returns the value of the sample line that starts with series + " " in Prometheus text, or
 * -1 when absent. */
static double prometheus_sample(const char *text, const char *series) {
    size_t n_series = strlen(series);
    const char *line = text;
    while (line != NULL && *line != '\0') {
        if (strncmp(line, series, n_series) == 0 && line[n_series] == ' ') {
            return strtod(line + n_series + 1, NULL);
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return -1.0;
}

/* ---- fixed-bucket histograms ---- */

static void test_histogram_bucket_index_boundaries(void **state) {
    (void)state;
    static const int64_t bounds[] = {10, 20, 30};
    assert_int_equal(quill__histogram_bucket_index(bounds, 3, -5), 0);
    assert_int_equal(quill__histogram_bucket_index(bounds, 3, 10), 0);
    assert_int_equal(quill__histogram_bucket_index(bounds, 3, 11), 1);
    assert_int_equal(quill__histogram_bucket_index(bounds, 3, 20), 1);
    assert_int_equal(quill__histogram_bucket_index(bounds, 3, 30), 2);
    assert_int_equal(quill__histogram_bucket_index(bounds, 3, 31), 3);
}

static void test_histogram_cumulative_counts(void **state) {
    (void)state;
    static const int64_t bounds[] = {10, 20, 30};
    quill__histogram histogram;
    quill__histogram_init(&histogram, bounds, 3);
    const int64_t values[] = {1, 10, 15, 25, 99, 100};
    for (size_t i = 0; i < 6; i++) {
        quill__histogram_observe(&histogram, values[i]);
    }
    assert_int_equal(quill__histogram_cumulative(&histogram, 0), 2);
    assert_int_equal(quill__histogram_cumulative(&histogram, 1), 3);
    assert_int_equal(quill__histogram_cumulative(&histogram, 2), 4);
    assert_int_equal(quill__histogram_cumulative(&histogram, 3), 6);
    assert_int_equal(histogram.count, 6);
    assert_int_equal(histogram.sum, 250);
}

/* ---- log-linear percentile buckets ---- */

static void test_quantile_bucket_exact_below_sixteen(void **state) {
    (void)state;
    for (int64_t value = 0; value < 16; value++) {
        size_t bucket = quill__quantile_bucket_index(value);
        assert_int_equal(bucket, value);
        assert_int_equal(quill__quantile_bucket_midpoint(bucket), value);
    }
}

static void test_quantile_bucket_relative_error_bound(void **state) {
    (void)state;
    size_t previous = 0;
    for (int64_t value = 16; value < ((int64_t)1 << 36); value += value / 7 + 1) {
        size_t bucket = quill__quantile_bucket_index(value);
        assert_true(bucket >= previous);
        assert_true(bucket < QUILL__QUANTILE_N_BUCKETS);
        int64_t midpoint = quill__quantile_bucket_midpoint(bucket);
        int64_t error = midpoint > value ? midpoint - value : value - midpoint;
        /* Half a bucket is at most 1/32 of the bucket's lower bound. */
        assert_true(error * 32 <= value);
        previous = bucket;
    }
    assert_int_equal(quill__quantile_bucket_index(INT64_MAX), QUILL__QUANTILE_N_BUCKETS - 1);
}

static int compare_int64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t nearest_rank(const int64_t *sorted, size_t n, int permille) {
    size_t rank = ((size_t)permille * n + 999) / 1000;
    return sorted[rank == 0 ? 0 : rank - 1];
}

static void assert_within_bucket_error(int64_t estimate, int64_t reference) {
    int64_t error = estimate > reference ? estimate - reference : reference - estimate;
    if (error * 32 > reference) {
        fail_msg("estimate %lld differs from reference %lld by more than 1/32", (long long)estimate,
                 (long long)reference);
    }
}

static void test_quantile_percentiles_match_sorted_reference(void **state) {
    (void)state;
    enum { N_SAMPLES = 5000 };
    quill__quantile_window *window = malloc(sizeof(*window));
    int64_t *samples = malloc(sizeof(int64_t) * N_SAMPLES);
    assert_non_null(window);
    assert_non_null(samples);
    quill__quantile_window_init(window, 10000000);

    /* Heavy-tailed samples from 5 us to about 60 s, fixed seed. */
    uint64_t seed = 12345;
    for (size_t i = 0; i < N_SAMPLES; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        int shift = (int)((seed >> 33) % 24);
        int64_t value = 5 + (int64_t)((seed >> 40) % 1024) * ((int64_t)1 << shift) / 256;
        samples[i] = value;
        quill__quantile_window_observe(window, (int64_t)i * 1000, value);
    }
    qsort(samples, N_SAMPLES, sizeof(int64_t), compare_int64);

    quill__quantile_summary summary;
    quill__quantile_window_summarize(window, N_SAMPLES * 1000, false, &summary);
    assert_int_equal(summary.count, N_SAMPLES);
    assert_int_equal(summary.max, samples[N_SAMPLES - 1]);
    assert_within_bucket_error(summary.p50, nearest_rank(samples, N_SAMPLES, 500));
    assert_within_bucket_error(summary.p95, nearest_rank(samples, N_SAMPLES, 950));
    assert_within_bucket_error(summary.p99, nearest_rank(samples, N_SAMPLES, 990));
    free(samples);
    free(window);
}

static void test_quantile_percentile_clamped_to_samples(void **state) {
    (void)state;
    quill__quantile_window *window = malloc(sizeof(*window));
    assert_non_null(window);
    quill__quantile_window_init(window, 10000000);
    quill__quantile_window_observe(window, 0, 1000);
    quill__quantile_summary summary;
    quill__quantile_window_summarize(window, 0, true, &summary);
    assert_int_equal(summary.count, 1);
    assert_int_equal(summary.p50, 1000);
    assert_int_equal(summary.p99, 1000);
    assert_int_equal(summary.max, 1000);
    free(window);
}

/* ---- which requests enter which figures ---- */

static void test_metrics_window_expires_with_clock(void **state) {
    (void)state;
    fake_clock clock = {.now_us = 5000000000};
    quill_metrics *metrics = create_with_clock(&clock);

    quill_request_record record = ok_record("m", 100000);
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    clock.now_us += 200 * 1000000LL;
    record.ttft_us = 300000;
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);

    json_object *root = render_stats(metrics);
    assert_int_equal(
        json_object_get_int64(JSON_AT(root, "models", "m", "last_5_minutes", "ttft_ms", "count")),
        2);
    assert_int_equal(
        json_object_get_int64(JSON_AT(root, "models", "m", "last_5_minutes", "requests")), 2);
    json_object_put(root);

    /* 301 s after the first request only the second one is inside the window. */
    clock.now_us += 101 * 1000000LL;
    root = render_stats(metrics);
    json_object *window = JSON_AT(root, "models", "m", "last_5_minutes");
    assert_int_equal(json_object_get_int64(JSON_AT(window, "ttft_ms", "count")), 1);
    assert_int_equal(json_object_get_int64(JSON_AT(window, "requests")), 1);
    double p50_ms = json_object_get_double(JSON_AT(window, "ttft_ms", "p50"));
    assert_true(p50_ms > 290.0 && p50_ms < 310.0);
    assert_int_equal(
        json_object_get_int64(JSON_AT(root, "models", "m", "since_start", "ttft_ms", "count")), 2);
    json_object_put(root);

    /* Ten minutes later the window is empty and since-start still counts both. */
    clock.now_us += 600 * 1000000LL;
    root = render_stats(metrics);
    assert_int_equal(
        json_object_get_int64(JSON_AT(root, "models", "m", "last_5_minutes", "ttft_ms", "count")),
        0);
    assert_int_equal(json_object_get_int64(JSON_AT(root, "models", "m", "since_start", "requests")),
                     2);
    json_object_put(root);
    quill_metrics_destroy(metrics);
}

static void test_metrics_rejected_request_skips_latency(void **state) {
    (void)state;
    fake_clock clock = {.now_us = 0};
    quill_metrics *metrics = create_with_clock(&clock);

    quill_request_record rejected = quill_request_record_default();
    rejected.model = "m";
    rejected.http_status = 429;
    rejected.e2e_us = 500;
    rejected.ttft_us = 0;
    assert_int_equal(quill_metrics_record_request(metrics, &rejected), QUILL_OK);

    quill_request_record failed = ok_record("m", 0);
    failed.http_status = 500;
    failed.finish_reason = "error";
    int64_t gaps_us[2] = {0, 0};
    failed.inter_token_us = gaps_us;
    failed.n_inter_token = 2;
    assert_int_equal(quill_metrics_record_request(metrics, &failed), QUILL_OK);

    char *text = render_prometheus(metrics);
    assert_true(prometheus_sample(text, "quill_time_to_first_token_seconds_count{model=\"m\"}") ==
                0.0);
    assert_true(prometheus_sample(text, "quill_inter_token_latency_seconds_count{model=\"m\"}") ==
                0.0);
    assert_true(prometheus_sample(text, "quill_e2e_request_latency_seconds_count{model=\"m\"}") ==
                0.0);
    assert_true(prometheus_sample(text, "quill_queue_seconds_count{model=\"m\"}") == 0.0);
    assert_true(prometheus_sample(text, "quill_prompt_tokens_count{model=\"m\"}") == 0.0);
    assert_true(
        prometheus_sample(
            text, "quill_requests_total{model=\"m\",status=\"429\",finish_reason=\"none\"}") ==
        1.0);
    assert_true(
        prometheus_sample(
            text, "quill_requests_total{model=\"m\",status=\"500\",finish_reason=\"error\"}") ==
        1.0);
    /* The failed request's processed tokens are still counted. */
    assert_true(
        prometheus_sample(text, "quill_prompt_tokens_total{model=\"m\",feature=\"none\"}") == 40.0);
    free(text);

    json_object *root = render_stats(metrics);
    json_object *since = JSON_AT(root, "models", "m", "since_start");
    assert_int_equal(json_object_get_int64(JSON_AT(since, "requests")), 2);
    assert_int_equal(json_object_get_int64(JSON_AT(since, "errors")), 1);
    assert_true(json_object_get_double(JSON_AT(since, "error_rate")) == 0.5);
    assert_int_equal(json_object_get_int64(JSON_AT(since, "e2e_ms", "count")), 0);
    json_object_put(root);
    quill_metrics_destroy(metrics);
}

static void test_metrics_ttft_needs_a_token(void **state) {
    (void)state;
    fake_clock clock = {.now_us = 0};
    quill_metrics *metrics = create_with_clock(&clock);

    quill_request_record record = ok_record("m", 5000);
    record.n_completion_tokens = 0;
    record.finish_reason = "length";
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    record = ok_record("m", 5000);
    record.finish_reason = "cancelled";
    int64_t gaps_us[3] = {20000, 30000, 40000};
    record.inter_token_us = gaps_us;
    record.n_inter_token = 3;
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);

    char *text = render_prometheus(metrics);
    /* Only the cancelled request produced a token; cancelled requests skip e2e and generation. */
    assert_true(prometheus_sample(text, "quill_time_to_first_token_seconds_count{model=\"m\"}") ==
                1.0);
    assert_true(prometheus_sample(text, "quill_inter_token_latency_seconds_count{model=\"m\"}") ==
                3.0);
    assert_true(prometheus_sample(text, "quill_inter_token_latency_seconds_sum{model=\"m\"}") ==
                0.09);
    assert_true(prometheus_sample(text, "quill_e2e_request_latency_seconds_count{model=\"m\"}") ==
                1.0);
    assert_true(prometheus_sample(text, "quill_generation_seconds_count{model=\"m\"}") == 1.0);
    assert_true(prometheus_sample(text, "quill_queue_seconds_count{model=\"m\"}") == 2.0);
    free(text);
    quill_metrics_destroy(metrics);
}

static void test_metrics_record_rejects_invalid(void **state) {
    (void)state;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);

    quill_request_record record = ok_record("m", 1000);
    record.http_status = 42;
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "http_status 42"));

    record = ok_record("m", 1000);
    record.finish_reason = "done";
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "unknown finish_reason 'done'"));

    record = ok_record("m", 1000);
    record.n_cached_tokens = 41;
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "n_cached_tokens 41 exceeds"));

    record = ok_record("m", 1000);
    record.finish_reason = NULL;
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "rejected request"));

    record = ok_record("m", 1000);
    int64_t gaps_us[1] = {-3};
    record.inter_token_us = gaps_us;
    record.n_inter_token = 1;
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "inter_token_us[0] is -3"));

    /* Nothing was recorded by the rejected calls. */
    char *text = render_prometheus(metrics);
    assert_null(strstr(text, "quill_requests_total{"));
    free(text);
    quill_metrics_destroy(metrics);
}

static void test_metrics_create_rejects_zero_limit(void **state) {
    (void)state;
    quill_metrics_params params = quill_metrics_params_default();
    params.max_users = 0;
    quill_metrics *metrics = (quill_metrics *)&params;
    assert_int_equal(quill_metrics_create(&params, &metrics), QUILL_ERR_INVALID_ARG);
    assert_null(metrics);
    assert_non_null(strstr(quill_error_message(), "max_users=0"));
}

static void test_metrics_create_out_of_memory(void **state) {
    (void)state;
    for (int64_t n_successes = 0; n_successes < 3; n_successes++) {
        quill_metrics *metrics = NULL;
        quill__alloc_fail_after(n_successes);
        quill_status status = quill_metrics_create(NULL, &metrics);
        quill__alloc_fail_after(-1);
        assert_int_equal(status, QUILL_ERR_NOMEM);
        assert_null(metrics);
        assert_non_null(strstr(quill_error_message(), "out of memory"));
    }
}

static void test_metrics_record_out_of_memory_records_nothing(void **state) {
    (void)state;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);
    quill_request_record record = ok_record("m", 1000);
    quill__alloc_fail_after(0);
    quill_status status = quill_metrics_record_request(metrics, &record);
    quill__alloc_fail_after(-1);
    assert_int_equal(status, QUILL_ERR_NOMEM);
    assert_non_null(strstr(quill_error_message(), "model 'm'"));
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);

    char *text = render_prometheus(metrics);
    assert_true(
        prometheus_sample(
            text, "quill_requests_total{model=\"m\",status=\"200\",finish_reason=\"stop\"}") ==
        1.0);
    free(text);
    quill_metrics_destroy(metrics);
}

static void test_metrics_extra_models_become_other(void **state) {
    (void)state;
    quill_metrics_params params = quill_metrics_params_default();
    params.max_models = 2;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(&params, &metrics), QUILL_OK);
    const char *names[] = {"a", "b", "c", "d", NULL};
    for (size_t i = 0; i < 5; i++) {
        quill_request_record record = ok_record(names[i], 1000);
        assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    }
    char *text = render_prometheus(metrics);
    assert_true(prometheus_sample(text, "quill_queue_seconds_count{model=\"_other\"}") == 3.0);
    assert_null(strstr(text, "model=\"c\""));
    assert_null(strstr(text, "model=\"unknown\""));
    free(text);
    quill_metrics_destroy(metrics);
}

/* ---- Prometheus text ---- */

static void test_prometheus_scaled_decimals(void **state) {
    (void)state;
    struct {
        int64_t value;
        int n_decimals;
        const char *expected;
    } cases[] = {
        {5000, 6, "0.005"},
        {1000000, 6, "1"},
        {2500000, 6, "2.5"},
        {0, 12, "0"},
        {3703701, 12, "0.000003703701"},
        {-1500, 3, "-1.5"},
        {INT64_MIN, 0, "-9223372036854775808"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        quill_strbuf buffer;
        quill__strbuf_init(&buffer);
        assert_int_equal(
            quill__prometheus_append_scaled(&buffer, cases[i].value, cases[i].n_decimals),
            QUILL_OK);
        assert_string_equal(buffer.data, cases[i].expected);
        quill__strbuf_release(&buffer);
    }
}

static void test_prometheus_escapes_label_values(void **state) {
    (void)state;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);
    quill_request_record record = ok_record("a\"b\\c\nd", 1000);
    record.feature = "x\\\"y";
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    char *text = render_prometheus(metrics);
    assert_non_null(strstr(text, "quill_queue_seconds_count{model=\"a\\\"b\\\\c\\nd\"} 1\n"));
    assert_non_null(strstr(text, "feature=\"x\\\\\\\"y\"}"));
    free(text);
    quill_metrics_destroy(metrics);
}

static void test_prometheus_cost_printed_exactly(void **state) {
    (void)state;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);
    for (int i = 0; i < 3; i++) {
        quill_request_record record = ok_record("m", 1000);
        record.feature = "chat";
        assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    }
    char *text = render_prometheus(metrics);
    assert_non_null(
        strstr(text, "quill_cost_usd_total{model=\"m\",feature=\"chat\"} 0.000003703701\n"));
    assert_non_null(
        strstr(text, "quill_cached_prompt_tokens_total{model=\"m\",feature=\"chat\"} 30\n"));
    free(text);
    quill_metrics_destroy(metrics);
}

static void record_sample_traffic(quill_metrics *metrics) {
    int64_t gaps_us[4] = {15000, 45000, 90000, 2600000};
    for (int i = 0; i < 20; i++) {
        quill_request_record record = ok_record(i % 2 == 0 ? "qwen" : "llama", 20000 * (i + 1));
        record.feature = i % 3 == 0 ? "search" : "chat";
        record.user = i % 4 == 0 ? "alice" : "bob";
        /* Requests 0, 5, 10 and 15 miss the cache: 0 and 10 are qwen's. */
        if (i % 5 == 0) {
            record.n_cached_tokens = 0;
        }
        record.inter_token_us = gaps_us;
        record.n_inter_token = 4;
        assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    }
    quill_request_record rejected = quill_request_record_default();
    rejected.model = "qwen";
    rejected.http_status = 400;
    assert_int_equal(quill_metrics_record_request(metrics, &rejected), QUILL_OK);
    quill_metrics_gauges gauges = {
        .n_running = 2,
        .n_waiting = 1,
        .n_kv_blocks_used = 30,
        .n_kv_blocks_cached = 12,
        .n_kv_blocks_total = 120,
        .n_prefix_queries = 10,
        .n_prefix_hits = 4,
        .n_preemptions = 3,
    };
    assert_int_equal(quill_metrics_set_gauges(metrics, "qwen", &gauges), QUILL_OK);
}

static void test_prometheus_passes_promtool(void **state) {
    (void)state;
    if (access("/usr/bin/promtool", X_OK) != 0) {
        skip();
    }
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);
    record_sample_traffic(metrics);
    char *text = render_prometheus(metrics);
    char *path = quill_test_tmp_path("metrics.prom");
    assert_int_equal(quill_test_write_file(path, text, strlen(text)), 0);

    char command[1024];
    snprintf(command, sizeof(command), "timeout 60 /usr/bin/promtool check metrics < '%s' 2>&1",
             path);
    int exit_status = -1;
    char *output = quill_test_run_capture(command, &exit_status);
    if (exit_status != 0) {
        fail_msg("promtool check metrics failed with %d: %s", exit_status,
                 output != NULL ? output : "");
    }
    free(output);
    unlink(path);
    free(path);
    free(text);
    quill_metrics_destroy(metrics);
}

/* Checks every histogram in the text: buckets are cumulative and non-decreasing, and _count
 * equals the +Inf bucket. Returns the number of histogram series checked. */
static int check_histogram_series(const char *text) {
    int n_series = 0;
    double previous = -1.0;
    char current[512] = "";
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t length = end != NULL ? (size_t)(end - line) : strlen(line);
        char row[1024];
        assert_true(length < sizeof(row));
        memcpy(row, line, length);
        row[length] = '\0';
        line = end != NULL ? end + 1 : NULL;
        if (row[0] == '#') {
            continue;
        }
        char *bucket = strstr(row, "_bucket{");
        if (bucket != NULL) {
            /* The series key is the name and labels without le. */
            char *le = strstr(row, ",le=\"");
            assert_non_null(le);
            size_t key_length = (size_t)(le - row);
            if (strncmp(current, row, key_length) != 0 || current[key_length] != '\0') {
                memcpy(current, row, key_length);
                current[key_length] = '\0';
                previous = -1.0;
            }
            double value = strtod(strrchr(row, ' ') + 1, NULL);
            assert_true(value >= previous);
            previous = value;
            if (strstr(le, "le=\"+Inf\"") != NULL) {
                n_series += 1;
            }
            continue;
        }
        char *count = strstr(row, "_count{");
        if (count != NULL && current[0] != '\0') {
            double value = strtod(strrchr(row, ' ') + 1, NULL);
            assert_true(value == previous);
        }
    }
    return n_series;
}

static void test_prometheus_parsed_counts(void **state) {
    (void)state;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);
    record_sample_traffic(metrics);
    char *text = render_prometheus(metrics);

    /* 7 histogram families for each of 2 models. */
    assert_int_equal(check_histogram_series(text), 14);
    assert_true(
        prometheus_sample(text, "quill_inter_token_latency_seconds_count{model=\"qwen\"}") == 40.0);
    assert_true(prometheus_sample(
                    text, "quill_inter_token_latency_seconds_bucket{model=\"qwen\",le=\"0.02\"}") ==
                10.0);
    assert_true(prometheus_sample(
                    text, "quill_inter_token_latency_seconds_bucket{model=\"qwen\",le=\"2.5\"}") ==
                30.0);
    assert_true(prometheus_sample(
                    text, "quill_inter_token_latency_seconds_bucket{model=\"qwen\",le=\"+Inf\"}") ==
                40.0);
    assert_true(prometheus_sample(
                    text, "quill_time_to_first_token_seconds_bucket{model=\"qwen\",le=\"0.1\"}") ==
                3.0);
    assert_true(prometheus_sample(text, "quill_completion_tokens_sum{model=\"llama\"}") == 30.0);
    assert_true(
        prometheus_sample(
            text, "quill_requests_total{model=\"qwen\",status=\"400\",finish_reason=\"none\"}") ==
        1.0);
    assert_true(prometheus_sample(text, "quill_requests_running{model=\"qwen\"}") == 2.0);
    assert_true(prometheus_sample(text, "quill_kv_cache_usage_ratio{model=\"qwen\"}") == 0.25);
    assert_true(prometheus_sample(text, "quill_prefix_cache_hits_total{model=\"qwen\"}") == 4.0);
    assert_true(prometheus_sample(text, "quill_preemptions_total{model=\"qwen\"}") == 3.0);
    assert_true(prometheus_sample(text, "quill_kv_cache_blocks_cached{model=\"qwen\"}") == 12.0);
    assert_true(prometheus_sample(text, "quill_kv_cache_blocks_used{model=\"qwen\"}") == 30.0);
    assert_true(prometheus_sample(text, "quill_requests_running{model=\"llama\"}") == -1.0);
    assert_null(strstr(text, "alice"));
    free(text);
    quill_metrics_destroy(metrics);
}

static void test_metrics_set_gauges_rejects_invalid(void **state) {
    (void)state;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);
    quill_metrics_gauges gauges = {.n_kv_blocks_used = 5, .n_kv_blocks_total = 4};
    assert_int_equal(quill_metrics_set_gauges(metrics, "m", &gauges), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "kv_blocks=5/4"));
    quill_metrics_gauges cached_over_used = {
        .n_kv_blocks_used = 3, .n_kv_blocks_cached = 4, .n_kv_blocks_total = 8};
    assert_int_equal(quill_metrics_set_gauges(metrics, "m", &cached_over_used),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "kv_blocks_cached=4"));
    quill_metrics_destroy(metrics);
}

/* ---- /v1/stats ---- */

/* Users past max_users share the "_other" entry, yet each still counts as an active user, also
 * when enough of them arrive to grow the table that tracks them. Users leave the count with the
 * window. */
static void test_stats_json_counts_users_past_cap(void **state) {
    (void)state;
    fake_clock clock = {.now_us = 0};
    quill_metrics_params params = quill_metrics_params_default();
    params.clock_us = fake_clock_now;
    params.clock_user_data = &clock;
    params.max_users = 2;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(&params, &metrics), QUILL_OK);

    enum { N_USERS = 3000 };
    for (int i = 0; i < N_USERS; i++) {
        char user[32];
        snprintf(user, sizeof(user), "user-%d", i);
        quill_request_record record = ok_record("qwen", 100000);
        record.user = user;
        assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
        if (i % 7 == 0) { /* a repeated user counts once */
            assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
        }
    }
    json_object *root = render_stats(metrics);
    json_object *window = JSON_AT(root, "users_last_5_minutes");
    assert_int_equal(json_object_get_int64(JSON_AT(window, "active_users")), N_USERS);
    assert_int_equal(json_object_object_length(JSON_AT(root, "users")), 3);
    json_object_put(root);

    /* After the window, only a new user is active. */
    clock.now_us += 400 * 1000000LL;
    quill_request_record record = ok_record("qwen", 100000);
    record.user = "late";
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    root = render_stats(metrics);
    assert_int_equal(json_object_get_int64(JSON_AT(root, "users_last_5_minutes", "active_users")),
                     1);
    json_object_put(root);
    quill_metrics_destroy(metrics);
}

/* Past the table's largest size the count stops at 65,536 users past the cap, a lower bound,
 * and once the window moves on the table takes new users again. */
static void test_stats_json_user_table_saturates(void **state) {
    (void)state;
    fake_clock clock = {.now_us = 0};
    quill_metrics_params params = quill_metrics_params_default();
    params.clock_us = fake_clock_now;
    params.clock_user_data = &clock;
    params.max_users = 1;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(&params, &metrics), QUILL_OK);

    enum { N_USERS = 70000, N_TRACKED_PAST_CAP = QUILL__METRICS_MAX_OVERFLOW_SLOTS / 2 };
    quill_request_record record = ok_record("qwen", 100000);
    for (int i = 0; i < N_USERS; i++) {
        char user[32];
        snprintf(user, sizeof(user), "user-%d", i);
        record.user = user;
        assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    }
    json_object *root = render_stats(metrics);
    assert_int_equal(json_object_get_int64(JSON_AT(root, "users_last_5_minutes", "active_users")),
                     1 + N_TRACKED_PAST_CAP);
    json_object_put(root);

    clock.now_us += 400 * 1000000LL;
    record.user = "late";
    assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    root = render_stats(metrics);
    assert_int_equal(json_object_get_int64(JSON_AT(root, "users_last_5_minutes", "active_users")),
                     1);
    json_object_put(root);
    quill_metrics_destroy(metrics);
}

static void test_stats_json_rates_and_users(void **state) {
    (void)state;
    fake_clock clock = {.now_us = 0};
    quill_metrics *metrics = create_with_clock(&clock);
    record_sample_traffic(metrics);
    json_object *root = render_stats(metrics);

    json_object *qwen = JSON_AT(root, "models", "qwen");
    json_object *since = JSON_AT(qwen, "since_start");
    assert_int_equal(json_object_get_int64(JSON_AT(since, "requests")), 11);
    assert_int_equal(json_object_get_int64(JSON_AT(since, "finished_requests")), 10);
    /* qwen: 10 finished requests of 40 prompt tokens, 8 of them with 10 cached. */
    assert_true(json_object_get_double(JSON_AT(since, "cache_hit_rate")) == 0.2);
    json_object *window_period = JSON_AT(qwen, "last_5_minutes");
    assert_int_equal(json_object_get_int64(JSON_AT(since, "cache_hit_requests")), 8);
    assert_int_equal(json_object_get_int64(JSON_AT(window_period, "cache_hit_requests")), 8);
    assert_true(json_object_get_double(JSON_AT(since, "request_cache_hit_rate")) == 0.8);
    assert_true(json_object_get_double(JSON_AT(window_period, "request_cache_hit_rate")) == 0.8);
    assert_true(json_object_get_double(JSON_AT(since, "completion_tokens_per_request")) == 3.0);
    assert_string_equal(json_object_to_json_string(JSON_AT(since, "cost_usd")), "0.00001234567");
    assert_int_equal(json_object_get_int64(JSON_AT(since, "ttft_ms", "count")), 10);
    assert_true(json_object_get_double(JSON_AT(since, "ttft_ms", "max")) == 380.0);
    assert_true(json_object_get_double(JSON_AT(qwen, "engine", "prefix_cache_hit_rate")) == 0.4);
    assert_int_equal(json_object_get_int64(JSON_AT(qwen, "engine", "preemptions")), 3);
    assert_int_equal(json_object_get_int64(JSON_AT(qwen, "engine", "kv_cache_blocks_cached")), 12);
    assert_int_equal(json_object_get_int64(JSON_AT(qwen, "features", "search", "requests")), 4);

    /* alice sent requests 0, 4, 8, 12 and 16. */
    json_object *alice = JSON_AT(root, "users", "alice");
    assert_int_equal(json_object_get_int64(JSON_AT(alice, "requests")), 5);
    assert_int_equal(json_object_get_int64(JSON_AT(alice, "completion_tokens")), 15);
    assert_true(json_object_get_double(JSON_AT(alice, "tokens_per_request")) == 43.0);
    json_object *window = JSON_AT(root, "users_last_5_minutes");
    assert_int_equal(json_object_get_int64(JSON_AT(window, "active_users")), 2);
    /* 20 requests of 1234567 picodollars over 2 users. */
    assert_string_equal(json_object_to_json_string(JSON_AT(window, "cost_usd_per_active_user")),
                        "0.00001234567");
    json_object_put(root);

    clock.now_us += 400 * 1000000LL;
    root = render_stats(metrics);
    assert_int_equal(json_object_get_int64(JSON_AT(root, "users_last_5_minutes", "active_users")),
                     0);
    /* The hits have left the window but still count since start. */
    qwen = JSON_AT(root, "models", "qwen");
    assert_int_equal(json_object_get_int64(JSON_AT(qwen, "last_5_minutes", "cache_hit_requests")),
                     0);
    assert_int_equal(json_object_get_int64(JSON_AT(qwen, "since_start", "cache_hit_requests")), 8);
    json_object_put(root);
    quill_metrics_destroy(metrics);
}

/* ---- threads ---- */

enum { N_THREADS = 4, N_RECORDS_PER_THREAD = 2000 };

static void *record_from_thread(void *argument) {
    quill_metrics *metrics = argument;
    int64_t gaps_us[2] = {10000, 20000};
    for (int i = 0; i < N_RECORDS_PER_THREAD; i++) {
        quill_request_record record = ok_record(i % 2 == 0 ? "a" : "b", 1000 + i);
        record.user = i % 3 == 0 ? "u1" : "u2";
        record.inter_token_us = gaps_us;
        record.n_inter_token = 2;
        if (quill_metrics_record_request(metrics, &record) != QUILL_OK) {
            return argument;
        }
        if (i % 500 == 0) {
            char *text = NULL;
            size_t n_bytes = 0;
            if (quill_metrics_render_prometheus(metrics, &text, &n_bytes) != QUILL_OK) {
                return argument;
            }
            free(text);
        }
    }
    return NULL;
}

static void test_stats_json_outcomes_by_side(void **state) {
    (void)state;
    fake_clock clock = {.now_us = 0};
    quill_metrics *metrics = create_with_clock(&clock);

    /* One success, three client errors, a rejection, a disconnect and three server errors. A
     * 400 with finish reason "error" is a request the engine rejected while generating. A 200
     * with it is a stream that failed after its headers went out. */
    static const struct {
        int32_t http_status;
        const char *finish_reason;
    } cases[] = {
        {200, "stop"},      {400, NULL},    {404, NULL}, {400, "error"}, {429, NULL},
        {499, "cancelled"}, {500, "error"}, {503, NULL}, {200, "error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        quill_request_record record = quill_request_record_default();
        record.model = "m";
        record.http_status = cases[i].http_status;
        record.finish_reason = cases[i].finish_reason;
        assert_int_equal(quill_metrics_record_request(metrics, &record), QUILL_OK);
    }

    json_object *root = render_stats(metrics);
    static const char *const periods[] = {"since_start", "last_5_minutes"};
    for (size_t p = 0; p < 2; p++) {
        json_object *period = JSON_AT(root, "models", "m", periods[p]);
        assert_int_equal(json_object_get_int64(JSON_AT(period, "requests")), 9);
        assert_int_equal(json_object_get_int64(JSON_AT(period, "errors")), 3);
        assert_int_equal(json_object_get_int64(JSON_AT(period, "client_errors")), 3);
        assert_int_equal(json_object_get_int64(JSON_AT(period, "rejections")), 1);
        assert_int_equal(json_object_get_int64(JSON_AT(period, "client_disconnects")), 1);
        /* Rates are printed rounded, so they are compared to a tolerance. */
        double client_error_rate = json_object_get_double(JSON_AT(period, "client_error_rate"));
        double rejection_rate = json_object_get_double(JSON_AT(period, "rejection_rate"));
        assert_true(fabs(client_error_rate - 3.0 / 9.0) < 1e-3);
        assert_true(fabs(rejection_rate - 1.0 / 9.0) < 1e-3);
    }
    json_object_put(root);
    quill_metrics_destroy(metrics);
}

static void test_metrics_threads_record_concurrently(void **state) {
    (void)state;
    quill_metrics *metrics = NULL;
    assert_int_equal(quill_metrics_create(NULL, &metrics), QUILL_OK);
    pthread_t threads[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, record_from_thread, metrics), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        void *result = NULL;
        pthread_join(threads[i], &result);
        assert_null(result);
    }
    char *text = render_prometheus(metrics);
    double n_per_model = N_THREADS * N_RECORDS_PER_THREAD / 2;
    assert_true(
        prometheus_sample(
            text, "quill_requests_total{model=\"a\",status=\"200\",finish_reason=\"stop\"}") ==
        n_per_model);
    assert_true(prometheus_sample(text, "quill_inter_token_latency_seconds_count{model=\"b\"}") ==
                2 * n_per_model);
    free(text);
    quill_metrics_destroy(metrics);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_histogram_bucket_index_boundaries),
        cmocka_unit_test(test_histogram_cumulative_counts),
        cmocka_unit_test(test_quantile_bucket_exact_below_sixteen),
        cmocka_unit_test(test_quantile_bucket_relative_error_bound),
        cmocka_unit_test(test_quantile_percentiles_match_sorted_reference),
        cmocka_unit_test(test_quantile_percentile_clamped_to_samples),
        cmocka_unit_test(test_metrics_window_expires_with_clock),
        cmocka_unit_test(test_metrics_rejected_request_skips_latency),
        cmocka_unit_test(test_metrics_ttft_needs_a_token),
        cmocka_unit_test(test_metrics_record_rejects_invalid),
        cmocka_unit_test(test_metrics_create_rejects_zero_limit),
        cmocka_unit_test(test_metrics_create_out_of_memory),
        cmocka_unit_test(test_metrics_record_out_of_memory_records_nothing),
        cmocka_unit_test(test_metrics_extra_models_become_other),
        cmocka_unit_test(test_prometheus_scaled_decimals),
        cmocka_unit_test(test_prometheus_escapes_label_values),
        cmocka_unit_test(test_prometheus_cost_printed_exactly),
        cmocka_unit_test(test_prometheus_passes_promtool),
        cmocka_unit_test(test_prometheus_parsed_counts),
        cmocka_unit_test(test_metrics_set_gauges_rejects_invalid),
        cmocka_unit_test(test_stats_json_rates_and_users),
        cmocka_unit_test(test_stats_json_counts_users_past_cap),
        cmocka_unit_test(test_stats_json_user_table_saturates),
        cmocka_unit_test(test_stats_json_outcomes_by_side),
        cmocka_unit_test(test_metrics_threads_record_concurrently),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
