/*
 * Renders the registry as the JSON summary served at GET /v1/stats, with json-c. Latencies are
 * in milliseconds with three decimals (exact from the microsecond samples, then subject to the
 * percentile buckets' 1/32 relative error), money in USD printed exactly from picodollars, and
 * rates as fractions from 0 to 1 (0 when the denominator is 0). The objects are built while
 * the registry's mutex is held and serialized after it is released.
 */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/strbuf.h"
#include "metrics/metrics_registry.h"
#include "metrics/prometheus.h"

typedef struct latency_key {
    quill__metrics_latency latency;
    const char *key;
} latency_key;

static const latency_key latency_keys[] = {
    {QUILL__METRICS_LATENCY_TTFT, "ttft_ms"},
    {QUILL__METRICS_LATENCY_ITL, "inter_token_latency_ms"},
    {QUILL__METRICS_LATENCY_GENERATION, "generation_ms"},
    {QUILL__METRICS_LATENCY_E2E, "e2e_ms"},
    {QUILL__METRICS_LATENCY_QUEUE, "queue_ms"},
};

#define ARRAY_COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* A JSON number printed as value / 10^n_decimals, exactly. */
static json_object *new_scaled(int64_t value, int n_decimals) {
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill__prometheus_append_scaled(&buffer, value, n_decimals);
    json_object *number = NULL;
    if (!buffer.is_failed && buffer.data != NULL) {
        double approximate = 0.0;
        sscanf(buffer.data, "%lf", &approximate);
        number = json_object_new_double_s(approximate, buffer.data);
    }
    quill__strbuf_release(&buffer);
    return number;
}

static json_object *new_ratio(double numerator, double denominator) {
    double ratio = denominator > 0.0 ? numerator / denominator : 0.0;
    char text[32];
    snprintf(text, sizeof(text), "%.6g", ratio);
    return json_object_new_double_s(ratio, text);
}

static json_object *new_percentiles(const quill__quantile_summary *summary) {
    json_object *object = json_object_new_object();
    json_object_object_add(object, "count", json_object_new_int64((int64_t)summary->count));
    json_object_object_add(object, "p50", new_scaled(summary->p50, 3));
    json_object_object_add(object, "p95", new_scaled(summary->p95, 3));
    json_object_object_add(object, "p99", new_scaled(summary->p99, 3));
    json_object_object_add(object, "max", new_scaled(summary->max, 3));
    return object;
}

/* Adds request and token figures shared by models, windows, features and users. */
static void add_tokens(json_object *object, const quill__metrics_tokens *tokens) {
    double n_requests = (double)tokens->n_requests;
    json_object_object_add(object, "prompt_tokens", json_object_new_int64(tokens->n_prompt_tokens));
    json_object_object_add(object, "cached_prompt_tokens",
                           json_object_new_int64(tokens->n_cached_tokens));
    json_object_object_add(object, "completion_tokens",
                           json_object_new_int64(tokens->n_completion_tokens));
    json_object_object_add(object, "prompt_tokens_per_request",
                           new_ratio((double)tokens->n_prompt_tokens, n_requests));
    json_object_object_add(object, "completion_tokens_per_request",
                           new_ratio((double)tokens->n_completion_tokens, n_requests));
    json_object_object_add(object, "cost_usd", new_scaled(tokens->cost_picousd, 12));
}

/* Returns one period of a model: since start, or with is_windowed the window ending at now_us. */
static json_object *new_period(const quill__metrics_model *model, int64_t now_us,
                               bool is_windowed) {
    quill__metrics_slice sum;
    memset(&sum, 0, sizeof(sum));
    if (is_windowed) {
        quill__metrics_slices_sum(model->slices, now_us, &sum);
    } else {
        sum.n_records = model->n_records;
        sum.outcomes = model->outcomes;
        sum.tokens = model->tokens;
    }

    json_object *period = json_object_new_object();
    json_object_object_add(period, "requests", json_object_new_int64((int64_t)sum.n_records));
    /* errors and error_rate are server-side failures, the figure an operator alerts on;
     * requests the client got wrong, requests turned away for capacity and clients that left
     * are counted apart, so that a misbehaving client does not page anyone but still shows. */
    const struct {
        const char *count_key;
        const char *rate_key;
        uint64_t count;
    } outcomes[] = {
        {"errors", "error_rate", sum.outcomes.n_errors},
        {"client_errors", "client_error_rate", sum.outcomes.n_client_errors},
        {"rejections", "rejection_rate", sum.outcomes.n_rejections},
        {"client_disconnects", "client_disconnect_rate", sum.outcomes.n_disconnects},
    };
    for (size_t i = 0; i < ARRAY_COUNT(outcomes); i++) {
        json_object_object_add(period, outcomes[i].count_key,
                               json_object_new_int64((int64_t)outcomes[i].count));
        json_object_object_add(period, outcomes[i].rate_key,
                               new_ratio((double)outcomes[i].count, (double)sum.n_records));
    }
    json_object_object_add(period, "finished_requests",
                           json_object_new_int64((int64_t)sum.tokens.n_requests));
    add_tokens(period, &sum.tokens);
    json_object_object_add(
        period, "cache_hit_rate",
        new_ratio((double)sum.tokens.n_cached_tokens, (double)sum.tokens.n_prompt_tokens));
    /* Counted per request from the records, so that the window has it too. The engine's
     * lookup counters are cumulative and carry no time. */
    json_object_object_add(period, "cache_hit_requests",
                           json_object_new_int64((int64_t)sum.tokens.n_cache_hits));
    json_object_object_add(
        period, "request_cache_hit_rate",
        new_ratio((double)sum.tokens.n_cache_hits, (double)sum.tokens.n_requests));
    for (size_t i = 0; i < ARRAY_COUNT(latency_keys); i++) {
        quill__quantile_summary summary;
        quill__quantile_window_summarize(&model->percentiles[latency_keys[i].latency], now_us,
                                         is_windowed, &summary);
        json_object_object_add(period, latency_keys[i].key, new_percentiles(&summary));
    }
    return period;
}

/* Returns the engine's state. Its prefix cache figures count lookups since start, and the
 * periods have the per-request rate for the window. */
static json_object *new_engine(const quill__metrics_model *model) {
    const quill_metrics_gauges *gauges = &model->gauges;
    json_object *engine = json_object_new_object();
    json_object_object_add(engine, "reported", json_object_new_boolean(model->has_gauges));
    json_object_object_add(engine, "requests_running", json_object_new_int64(gauges->n_running));
    json_object_object_add(engine, "requests_waiting", json_object_new_int64(gauges->n_waiting));
    json_object_object_add(
        engine, "kv_cache_usage_ratio",
        new_ratio((double)gauges->n_kv_blocks_used, (double)gauges->n_kv_blocks_total));
    json_object_object_add(engine, "prefix_cache_queries",
                           json_object_new_int64(gauges->n_prefix_queries));
    json_object_object_add(engine, "prefix_cache_hits",
                           json_object_new_int64(gauges->n_prefix_hits));
    json_object_object_add(
        engine, "prefix_cache_hit_rate",
        new_ratio((double)gauges->n_prefix_hits, (double)gauges->n_prefix_queries));
    json_object_object_add(engine, "kv_cache_blocks_cached",
                           json_object_new_int64(gauges->n_kv_blocks_cached));
    json_object_object_add(engine, "preemptions", json_object_new_int64(gauges->n_preemptions));
    return engine;
}

static json_object *new_named(const quill__metrics_named_tokens *entries, size_t n_entries) {
    json_object *object = json_object_new_object();
    for (size_t i = 0; i < n_entries; i++) {
        json_object *entry = json_object_new_object();
        json_object_object_add(entry, "requests",
                               json_object_new_int64((int64_t)entries[i].tokens.n_requests));
        add_tokens(entry, &entries[i].tokens);
        json_object_object_add(entry, "tokens_per_request",
                               new_ratio((double)(entries[i].tokens.n_prompt_tokens +
                                                  entries[i].tokens.n_completion_tokens),
                                         (double)entries[i].tokens.n_requests));
        json_object_object_add(object, entries[i].name, entry);
    }
    return object;
}

static json_object *new_model(const quill__metrics_model *model, int64_t now_us) {
    json_object *object = json_object_new_object();
    json_object_object_add(object, "since_start", new_period(model, now_us, false));
    json_object_object_add(object, "last_5_minutes", new_period(model, now_us, true));
    json_object_object_add(object, "engine", new_engine(model));
    json_object_object_add(object, "features", new_named(model->features, model->n_features));
    return object;
}

/* Cost per active user: the window's cost of requests with a user tag over the users seen in
 * the window, including those past max_users that share the "_other" entry. */
static json_object *new_user_window(const quill_metrics *metrics, int64_t now_us) {
    quill__metrics_slice sum;
    quill__metrics_slices_sum(metrics->user_slices, now_us, &sum);
    int64_t n_active = quill__metrics_count_active_users(metrics, now_us);

    json_object *window = json_object_new_object();
    json_object_object_add(window, "active_users", json_object_new_int64(n_active));
    json_object_object_add(window, "requests", json_object_new_int64((int64_t)sum.n_records));
    json_object_object_add(window, "cost_usd", new_scaled(sum.tokens.cost_picousd, 12));
    int64_t cost_per_user_picousd = n_active > 0 ? sum.tokens.cost_picousd / n_active : 0;
    json_object_object_add(window, "cost_usd_per_active_user",
                           new_scaled(cost_per_user_picousd, 12));
    return window;
}

quill_status quill_metrics_render_stats_json(quill_metrics *metrics, char **text, size_t *n_bytes) {
    *text = NULL;
    *n_bytes = 0;
    int64_t now_us = quill__metrics_now_us(metrics);
    json_object *root = json_object_new_object();
    if (root == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "metrics: out of memory rendering /v1/stats");
    }

    quill__metrics_lock(metrics);
    json_object_object_add(root, "uptime_seconds", new_scaled(now_us, 6));
    json_object_object_add(root, "window_seconds",
                           json_object_new_int64(QUILL__METRICS_WINDOW_US / 1000000));
    json_object *models = json_object_new_object();
    for (size_t i = 0; i < metrics->n_models; i++) {
        json_object_object_add(models, metrics->models[i]->name,
                               new_model(metrics->models[i], now_us));
    }
    json_object_object_add(root, "models", models);
    json_object_object_add(root, "users", new_named(metrics->users, metrics->n_users));
    json_object_object_add(root, "users_last_5_minutes", new_user_window(metrics, now_us));
    quill__metrics_unlock(metrics);

    /* NOTE: a json-c allocation failure inside the tree becomes a null member, not an error.
     * Only a failure of the root or of serialization returns QUILL_ERR_NOMEM. */
    size_t length = 0;
    const char *serialized =
        json_object_to_json_string_length(root, JSON_C_TO_STRING_PLAIN, &length);
    char *copy = serialized != NULL ? quill__strndup(serialized, length) : NULL;
    json_object_put(root);
    if (copy == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "metrics: out of memory rendering /v1/stats");
    }
    *text = copy;
    *n_bytes = length;
    return QUILL_OK;
}
