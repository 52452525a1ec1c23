/*
 * Renders the registry in the Prometheus text exposition format 0.0.4: one HELP and TYPE pair
 * per family, then a series per model (and per feature for token and cost counters). Times are
 * kept in integer microseconds and money in picodollars, and both are printed as exact
 * decimals of seconds and USD. Rendering holds the registry's mutex while it formats into
 * memory and releases it before returning.
 */
#include "metrics/prometheus.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/strbuf.h"
#include "metrics/metrics_registry.h"

enum { MICROS_DECIMALS = 6, PICO_DECIMALS = 12 };

typedef struct latency_family {
    quill__metrics_latency latency;
    const char *name;
    const char *help;
} latency_family;

static const latency_family latency_families[] = {
    {QUILL__METRICS_LATENCY_TTFT, "quill_time_to_first_token_seconds",
     "Time from arrival to the first content (written for streams, released by the engine "
     "otherwise), successful requests that produced a token."},
    {QUILL__METRICS_LATENCY_ITL, "quill_inter_token_latency_seconds",
     "Gap between successive content writes of successful streamed requests, shared among the "
     "tokens each write carried."},
    {QUILL__METRICS_LATENCY_GENERATION, "quill_generation_seconds",
     "Time from the first to the last generated token of requests finished by stop or length."},
    {QUILL__METRICS_LATENCY_E2E, "quill_e2e_request_latency_seconds",
     "Time from arrival to the last byte written, requests finished by stop or length."},
    {QUILL__METRICS_LATENCY_QUEUE, "quill_queue_seconds",
     "Time from arrival until the first prefill chunk was scheduled, successful requests."},
};

typedef enum token_field {
    TOKEN_FIELD_PROMPT,
    TOKEN_FIELD_CACHED,
    TOKEN_FIELD_COMPLETION,
    TOKEN_FIELD_COST,
} token_field;

typedef struct token_family {
    token_field field;
    const char *name;
    const char *help;
} token_family;

static const token_family token_families[] = {
    {TOKEN_FIELD_PROMPT, "quill_prompt_tokens_total",
     "Prompt tokens processed, cached ones included, by model and feature."},
    {TOKEN_FIELD_CACHED, "quill_cached_prompt_tokens_total",
     "Prompt tokens whose K/V came from the prefix cache, by model and feature."},
    {TOKEN_FIELD_COMPLETION, "quill_completion_tokens_total",
     "Generated tokens, by model and feature."},
    {TOKEN_FIELD_COST, "quill_cost_usd_total", "Cost of requests in USD, by model and feature."},
};

typedef enum gauge_field {
    GAUGE_FIELD_RUNNING,
    GAUGE_FIELD_WAITING,
    GAUGE_FIELD_KV_RATIO,
    GAUGE_FIELD_KV_USED,
    GAUGE_FIELD_KV_CACHED,
    GAUGE_FIELD_KV_TOTAL,
    GAUGE_FIELD_PREFIX_QUERIES,
    GAUGE_FIELD_PREFIX_HITS,
    GAUGE_FIELD_PREEMPTIONS,
} gauge_field;

typedef struct gauge_family {
    gauge_field field;
    const char *name;
    const char *type;
    const char *help;
} gauge_family;

static const gauge_family gauge_families[] = {
    {GAUGE_FIELD_RUNNING, "quill_requests_running", "gauge",
     "Requests decoding or prefilling in the engine."},
    {GAUGE_FIELD_WAITING, "quill_requests_waiting", "gauge",
     "Requests queued for admission to the engine."},
    {GAUGE_FIELD_KV_RATIO, "quill_kv_cache_usage_ratio", "gauge",
     "Fraction of KV cache blocks in use or cached, 0 to 1."},
    {GAUGE_FIELD_KV_USED, "quill_kv_cache_blocks_used", "gauge",
     "KV cache blocks in use or cached."},
    {GAUGE_FIELD_KV_CACHED, "quill_kv_cache_blocks_cached", "gauge",
     "KV cache blocks that only the prefix cache holds, evicted when running requests need them."},
    {GAUGE_FIELD_KV_TOTAL, "quill_kv_cache_blocks_capacity", "gauge",
     "KV cache blocks in all, used or free."},
    {GAUGE_FIELD_PREFIX_QUERIES, "quill_prefix_cache_queries_total", "counter",
     "Prefix cache lookups."},
    {GAUGE_FIELD_PREFIX_HITS, "quill_prefix_cache_hits_total", "counter",
     "Prefix cache lookups that reused at least one block."},
    {GAUGE_FIELD_PREEMPTIONS, "quill_preemptions_total", "counter",
     "Running requests sent back to wait for KV cache blocks, to be recomputed."},
};

#define ARRAY_COUNT(array) (sizeof(array) / sizeof((array)[0]))

quill_status quill__prometheus_append_label_value(quill_strbuf *buffer, const char *value) {
    quill__strbuf_append_char(buffer, '"');
    for (const char *c = value; *c != '\0'; c++) {
        if (*c == '\\') {
            quill__strbuf_append(buffer, "\\\\", 2);
        } else if (*c == '"') {
            quill__strbuf_append(buffer, "\\\"", 2);
        } else if (*c == '\n') {
            quill__strbuf_append(buffer, "\\n", 2);
        } else {
            quill__strbuf_append_char(buffer, *c);
        }
    }
    return quill__strbuf_append_char(buffer, '"');
}

quill_status quill__prometheus_append_scaled(quill_strbuf *buffer, int64_t value, int n_decimals) {
    /* Work on the magnitude as unsigned, so INT64_MIN has a representable absolute value. */
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    if (n_decimals < 0) {
        n_decimals = 0;
    } else if (n_decimals > 18) {
        n_decimals = 18;
    }
    uint64_t scale = 1;
    for (int i = 0; i < n_decimals; i++) {
        scale *= 10;
    }
    uint64_t whole = magnitude / scale;
    uint64_t fraction = magnitude % scale;
    quill__strbuf_appendf(buffer, "%s%" PRIu64, value < 0 ? "-" : "", whole);
    if (fraction == 0) {
        return buffer->is_failed ? QUILL_ERR_NOMEM : QUILL_OK;
    }
    char digits[24];
    snprintf(digits, sizeof(digits), "%0*" PRIu64, n_decimals, fraction);
    size_t n_digits = strlen(digits);
    while (n_digits > 0 && digits[n_digits - 1] == '0') {
        n_digits -= 1;
    }
    quill__strbuf_append_char(buffer, '.');
    return quill__strbuf_append(buffer, digits, n_digits);
}

static void append_header(quill_strbuf *buffer, const char *name, const char *type,
                          const char *help) {
    quill__strbuf_appendf(buffer, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void append_model_label(quill_strbuf *buffer, const char *model) {
    quill__strbuf_append_cstr(buffer, "model=");
    quill__prometheus_append_label_value(buffer, model);
}

/* Appends one histogram's _bucket, _sum and _count series; n_decimals scales the integer
 * values into the exposed unit (6 for microseconds to seconds, 0 for tokens). */
static void append_histogram(quill_strbuf *buffer, const char *name, const char *model,
                             const quill__histogram *histogram, int n_decimals) {
    for (size_t i = 0; i <= histogram->n_bounds; i++) {
        quill__strbuf_appendf(buffer, "%s_bucket{", name);
        append_model_label(buffer, model);
        quill__strbuf_append_cstr(buffer, ",le=\"");
        if (i < histogram->n_bounds) {
            quill__prometheus_append_scaled(buffer, histogram->bounds[i], n_decimals);
        } else {
            quill__strbuf_append_cstr(buffer, "+Inf");
        }
        quill__strbuf_appendf(buffer, "\"} %" PRIu64 "\n",
                              quill__histogram_cumulative(histogram, i));
    }
    quill__strbuf_appendf(buffer, "%s_sum{", name);
    append_model_label(buffer, model);
    quill__strbuf_append_cstr(buffer, "} ");
    quill__prometheus_append_scaled(buffer, histogram->sum, n_decimals);
    quill__strbuf_appendf(buffer, "\n%s_count{", name);
    append_model_label(buffer, model);
    quill__strbuf_appendf(buffer, "} %" PRIu64 "\n", histogram->count);
}

static void append_histograms(quill_strbuf *buffer, const quill_metrics *metrics) {
    for (size_t f = 0; f < ARRAY_COUNT(latency_families); f++) {
        const latency_family *family = &latency_families[f];
        append_header(buffer, family->name, "histogram", family->help);
        for (size_t m = 0; m < metrics->n_models; m++) {
            const quill__metrics_model *model = metrics->models[m];
            append_histogram(buffer, family->name, model->name, &model->latency[family->latency],
                             MICROS_DECIMALS);
        }
    }

    append_header(buffer, "quill_prompt_tokens", "histogram",
                  "Prompt tokens per successful request, cached ones included.");
    for (size_t m = 0; m < metrics->n_models; m++) {
        append_histogram(buffer, "quill_prompt_tokens", metrics->models[m]->name,
                         &metrics->models[m]->prompt_tokens, 0);
    }
    append_header(buffer, "quill_completion_tokens", "histogram",
                  "Generated tokens per successful request.");
    for (size_t m = 0; m < metrics->n_models; m++) {
        append_histogram(buffer, "quill_completion_tokens", metrics->models[m]->name,
                         &metrics->models[m]->completion_tokens, 0);
    }
}

static void append_request_counters(quill_strbuf *buffer, const quill_metrics *metrics) {
    append_header(buffer, "quill_requests_total", "counter",
                  "Requests by HTTP status and finish reason; none means rejected before the "
                  "engine.");
    for (size_t m = 0; m < metrics->n_models; m++) {
        const quill__metrics_model *model = metrics->models[m];
        for (size_t i = 0; i < model->n_request_counts; i++) {
            const quill__metrics_request_count *count = &model->request_counts[i];
            quill__strbuf_append_cstr(buffer, "quill_requests_total{");
            append_model_label(buffer, model->name);
            quill__strbuf_appendf(
                buffer, ",status=\"%d\",finish_reason=\"%s\"} %" PRIu64 "\n", count->http_status,
                quill__metrics_finish_reason_names[count->finish_index], count->n_requests);
        }
    }
}

static int64_t token_value(const quill__metrics_tokens *tokens, token_field field) {
    switch (field) {
    case TOKEN_FIELD_PROMPT:
        return tokens->n_prompt_tokens;
    case TOKEN_FIELD_CACHED:
        return tokens->n_cached_tokens;
    case TOKEN_FIELD_COMPLETION:
        return tokens->n_completion_tokens;
    case TOKEN_FIELD_COST:
        return tokens->cost_picousd;
    }
    return 0;
}

static void append_token_counters(quill_strbuf *buffer, const quill_metrics *metrics) {
    for (size_t f = 0; f < ARRAY_COUNT(token_families); f++) {
        const token_family *family = &token_families[f];
        int n_decimals = family->field == TOKEN_FIELD_COST ? PICO_DECIMALS : 0;
        append_header(buffer, family->name, "counter", family->help);
        for (size_t m = 0; m < metrics->n_models; m++) {
            const quill__metrics_model *model = metrics->models[m];
            for (size_t i = 0; i < model->n_features; i++) {
                quill__strbuf_appendf(buffer, "%s{", family->name);
                append_model_label(buffer, model->name);
                quill__strbuf_append_cstr(buffer, ",feature=");
                quill__prometheus_append_label_value(buffer, model->features[i].name);
                quill__strbuf_append_cstr(buffer, "} ");
                quill__prometheus_append_scaled(
                    buffer, token_value(&model->features[i].tokens, family->field), n_decimals);
                quill__strbuf_append_char(buffer, '\n');
            }
        }
    }
}

static void append_gauge_value(quill_strbuf *buffer, const quill_metrics_gauges *gauges,
                               gauge_field field) {
    switch (field) {
    case GAUGE_FIELD_RUNNING:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_running);
        break;
    case GAUGE_FIELD_WAITING:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_waiting);
        break;
    case GAUGE_FIELD_KV_RATIO: {
        double ratio = gauges->n_kv_blocks_total > 0
                           ? (double)gauges->n_kv_blocks_used / (double)gauges->n_kv_blocks_total
                           : 0.0;
        quill__strbuf_appendf(buffer, "%.6g", ratio);
        break;
    }
    case GAUGE_FIELD_KV_USED:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_kv_blocks_used);
        break;
    case GAUGE_FIELD_KV_CACHED:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_kv_blocks_cached);
        break;
    case GAUGE_FIELD_KV_TOTAL:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_kv_blocks_total);
        break;
    case GAUGE_FIELD_PREFIX_QUERIES:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_prefix_queries);
        break;
    case GAUGE_FIELD_PREFIX_HITS:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_prefix_hits);
        break;
    case GAUGE_FIELD_PREEMPTIONS:
        quill__strbuf_appendf(buffer, "%lld", (long long)gauges->n_preemptions);
        break;
    }
}

/* Gauges exist only for models whose gauges the server has set. */
static void append_gauges(quill_strbuf *buffer, const quill_metrics *metrics) {
    for (size_t f = 0; f < ARRAY_COUNT(gauge_families); f++) {
        const gauge_family *family = &gauge_families[f];
        append_header(buffer, family->name, family->type, family->help);
        for (size_t m = 0; m < metrics->n_models; m++) {
            const quill__metrics_model *model = metrics->models[m];
            if (!model->has_gauges) {
                continue;
            }
            quill__strbuf_appendf(buffer, "%s{", family->name);
            append_model_label(buffer, model->name);
            quill__strbuf_append_cstr(buffer, "} ");
            append_gauge_value(buffer, &model->gauges, family->field);
            quill__strbuf_append_char(buffer, '\n');
        }
    }
}

quill_status quill_metrics_render_prometheus(quill_metrics *metrics, char **text, size_t *n_bytes) {
    *text = NULL;
    *n_bytes = 0;
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);

    quill__metrics_lock(metrics);
    append_histograms(&buffer, metrics);
    append_request_counters(&buffer, metrics);
    append_token_counters(&buffer, metrics);
    append_gauges(&buffer, metrics);
    quill__metrics_unlock(metrics);

    if (buffer.is_failed) {
        quill__strbuf_release(&buffer);
        return quill_error_set(QUILL_ERR_NOMEM, "metrics: out of memory rendering Prometheus text");
    }
    size_t length = buffer.length;
    char *data = quill__strbuf_take(&buffer);
    if (data == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "metrics: out of memory rendering Prometheus text");
    }
    *text = data;
    *n_bytes = length;
    return QUILL_OK;
}
