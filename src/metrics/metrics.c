/*
 * The metrics registry: finds or adds the series of a model, feature and user, and adds each
 * request record to the histograms, percentile windows, counters and window slices. One mutex
 * guards all of it; recording only touches memory, so callers on HTTP or engine threads wait
 * at most for one other record or one render.
 */
#include "metrics/metrics_registry.h"

#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"

static const char *const unknown_model_name = "unknown";
static const char *const overflow_name = "_other";
static const char *const no_feature_name = "none";

const char *const quill__metrics_finish_reason_names[QUILL__METRICS_N_FINISH_REASONS] = {
    "none", "stop", "length", "cancelled", "error",
};
enum {
    FINISH_NONE = 0,
    FINISH_STOP = 1,
    FINISH_LENGTH = 2,
    FINISH_CANCELLED = 3,
    FINISH_ERROR = 4
};

/* Histogram upper bounds in microseconds, sized for CPU inference: prefill of long prompts can
 * take tens of seconds and decode runs at roughly 5 to 100 ms per token. */
static const int64_t queue_bounds_us[] = {
    1000,   5000,    10000,   25000,   50000,    100000,   250000,
    500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};
static const int64_t ttft_bounds_us[] = {
    10000,   25000,   50000,    100000,   250000,   500000,   1000000,
    2500000, 5000000, 10000000, 20000000, 40000000, 80000000,
};
static const int64_t itl_bounds_us[] = {
    5000,   10000,  20000,  40000,  60000,   80000,   100000,
    150000, 200000, 300000, 500000, 1000000, 2500000,
};
static const int64_t request_bounds_us[] = {
    100000,   250000,   500000,   1000000,   2500000,   5000000,   10000000,
    20000000, 40000000, 80000000, 160000000, 320000000, 640000000,
};
static const int64_t prompt_bounds_tokens[] = {
    1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072,
};
static const int64_t completion_bounds_tokens[] = {
    1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
};

#define ARRAY_COUNT(array) (sizeof(array) / sizeof((array)[0]))

static int64_t default_clock_us(void *clock_user_data) {
    (void)clock_user_data;
    return quill__clock_monotonic_us();
}

quill_metrics_params quill_metrics_params_default(void) {
    quill_metrics_params params;
    memset(&params, 0, sizeof(params));
    params.clock_us = NULL;
    params.clock_user_data = NULL;
    params.max_models = 16;
    params.max_features = 64;
    params.max_users = 1000;
    return params;
}

quill_request_record quill_request_record_default(void) {
    quill_request_record record;
    memset(&record, 0, sizeof(record));
    record.queue_us = -1;
    record.ttft_us = -1;
    record.generation_us = -1;
    record.e2e_us = -1;
    return record;
}

int64_t quill__metrics_now_us(const quill_metrics *metrics) {
    int64_t now_us = metrics->params.clock_us(metrics->params.clock_user_data) - metrics->start_us;
    return now_us < 0 ? 0 : now_us;
}

void quill__metrics_lock(quill_metrics *metrics) {
    pthread_mutex_lock(&metrics->mutex);
}

void quill__metrics_unlock(quill_metrics *metrics) {
    pthread_mutex_unlock(&metrics->mutex);
}

static void tokens_add(quill__metrics_tokens *into, const quill__metrics_tokens *from) {
    into->n_requests += from->n_requests;
    into->n_cache_hits += from->n_cache_hits;
    into->n_prompt_tokens += from->n_prompt_tokens;
    into->n_cached_tokens += from->n_cached_tokens;
    into->n_completion_tokens += from->n_completion_tokens;
    into->cost_picousd += from->cost_picousd;
}

static void outcomes_add(quill__metrics_outcomes *into, const quill__metrics_outcomes *from) {
    into->n_errors += from->n_errors;
    into->n_client_errors += from->n_client_errors;
    into->n_rejections += from->n_rejections;
    into->n_disconnects += from->n_disconnects;
}

/* Sorts one record into at most one outcome (see quill/metrics.h). */
static quill__metrics_outcomes outcome_of(const quill_request_record *record,
                                          int32_t finish_index) {
    quill__metrics_outcomes outcome;
    memset(&outcome, 0, sizeof(outcome));
    int32_t http_status = record->http_status;
    /* A request the engine fails while generating is a server error unless its status shows
     * that the client was at fault (a 400 for a logit_bias that bans every token). */
    if (http_status >= 500 || (finish_index == FINISH_ERROR && http_status < 400)) {
        outcome.n_errors = 1;
    } else if (http_status == 429) {
        outcome.n_rejections = 1;
    } else if (http_status == 499) {
        outcome.n_disconnects = 1;
    } else if (http_status >= 400) {
        outcome.n_client_errors = 1;
    }
    return outcome;
}

static void slices_reset(quill__metrics_slice *slices) {
    memset(slices, 0, sizeof(*slices) * QUILL__QUANTILE_N_SLICES);
    for (size_t i = 0; i < QUILL__QUANTILE_N_SLICES; i++) {
        slices[i].epoch = -1;
    }
}

/* Returns the slice for now_us, emptied first when it still holds an expired epoch. */
static quill__metrics_slice *slices_current(quill__metrics_slice *slices, int64_t now_us) {
    int64_t epoch = now_us / QUILL__METRICS_SLICE_US;
    quill__metrics_slice *slice = &slices[epoch % QUILL__QUANTILE_N_SLICES];
    if (slice->epoch != epoch) {
        memset(slice, 0, sizeof(*slice));
        slice->epoch = epoch;
    }
    return slice;
}

void quill__metrics_slices_sum(const quill__metrics_slice *slices, int64_t now_us,
                               quill__metrics_slice *sum) {
    memset(sum, 0, sizeof(*sum));
    int64_t current_epoch = now_us / QUILL__METRICS_SLICE_US;
    for (size_t i = 0; i < QUILL__QUANTILE_N_SLICES; i++) {
        if (!quill__quantile_epoch_is_live(slices[i].epoch, current_epoch)) {
            continue;
        }
        sum->n_records += slices[i].n_records;
        outcomes_add(&sum->outcomes, &slices[i].outcomes);
        tokens_add(&sum->tokens, &slices[i].tokens);
    }
}

static void model_destroy(quill__metrics_model *model) {
    if (model == NULL) {
        return;
    }
    for (size_t i = 0; i < model->n_features; i++) {
        quill__free(model->features[i].name);
    }
    quill__free(model->features);
    quill__free(model->request_counts);
    quill__free(model->name);
    quill__free(model);
}

static quill__metrics_model *model_create(const char *name, int32_t max_features) {
    quill__metrics_model *model = quill__calloc(1, sizeof(*model));
    if (model == NULL) {
        goto fail;
    }
    model->name = quill__strdup(name);
    model->features = quill__calloc((size_t)max_features + 1, sizeof(*model->features));
    if (model->name == NULL || model->features == NULL) {
        goto fail;
    }
    quill__histogram_init(&model->latency[QUILL__METRICS_LATENCY_QUEUE], queue_bounds_us,
                          ARRAY_COUNT(queue_bounds_us));
    quill__histogram_init(&model->latency[QUILL__METRICS_LATENCY_TTFT], ttft_bounds_us,
                          ARRAY_COUNT(ttft_bounds_us));
    quill__histogram_init(&model->latency[QUILL__METRICS_LATENCY_ITL], itl_bounds_us,
                          ARRAY_COUNT(itl_bounds_us));
    quill__histogram_init(&model->latency[QUILL__METRICS_LATENCY_GENERATION], request_bounds_us,
                          ARRAY_COUNT(request_bounds_us));
    quill__histogram_init(&model->latency[QUILL__METRICS_LATENCY_E2E], request_bounds_us,
                          ARRAY_COUNT(request_bounds_us));
    quill__histogram_init(&model->prompt_tokens, prompt_bounds_tokens,
                          ARRAY_COUNT(prompt_bounds_tokens));
    quill__histogram_init(&model->completion_tokens, completion_bounds_tokens,
                          ARRAY_COUNT(completion_bounds_tokens));
    for (size_t i = 0; i < QUILL__METRICS_N_LATENCIES; i++) {
        quill__quantile_window_init(&model->percentiles[i], QUILL__METRICS_SLICE_US);
    }
    slices_reset(model->slices);
    return model;

fail:
    model_destroy(model);
    return NULL;
}

quill_status quill_metrics_create(const quill_metrics_params *params, quill_metrics **out) {
    quill_status status = QUILL_OK;
    quill_metrics *metrics = NULL;
    *out = NULL;

    quill_metrics_params settings = params != NULL ? *params : quill_metrics_params_default();
    if (settings.max_models < 1 || settings.max_features < 1 || settings.max_users < 1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "metrics: limits must be at least 1 but max_models=%d "
                               "max_features=%d max_users=%d; raise them",
                               settings.max_models, settings.max_features, settings.max_users);
    }
    if (settings.clock_us == NULL) {
        settings.clock_us = default_clock_us;
        settings.clock_user_data = NULL;
    }

    metrics = quill__calloc(1, sizeof(*metrics));
    if (metrics == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "metrics: out of memory creating the registry");
        goto cleanup;
    }
    metrics->params = settings;
    metrics->models = quill__calloc((size_t)settings.max_models + 1, sizeof(*metrics->models));
    metrics->users = quill__calloc((size_t)settings.max_users + 1, sizeof(*metrics->users));
    if (metrics->models == NULL || metrics->users == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "metrics: out of memory creating the registry");
        goto cleanup;
    }
    if (pthread_mutex_init(&metrics->mutex, NULL) != 0) {
        status = quill_error_set(QUILL_ERR_NOMEM, "metrics: pthread_mutex_init failed");
        goto cleanup;
    }
    slices_reset(metrics->user_slices);
    metrics->start_us = settings.clock_us(settings.clock_user_data);
    *out = metrics;
    metrics = NULL;

cleanup:
    if (metrics != NULL) {
        quill__free(metrics->users);
        quill__free(metrics->models);
        quill__free(metrics);
    }
    return status;
}

void quill_metrics_destroy(quill_metrics *metrics) {
    if (metrics == NULL) {
        return;
    }
    for (size_t i = 0; i < metrics->n_models; i++) {
        model_destroy(metrics->models[i]);
    }
    for (size_t i = 0; i < metrics->n_users; i++) {
        quill__free(metrics->users[i].name);
    }
    quill__free(metrics->users);
    quill__free(metrics->overflow_users);
    quill__free(metrics->models);
    pthread_mutex_destroy(&metrics->mutex);
    quill__free(metrics);
}

/* Returns the model's series, adding it (or "_other" once max_models are taken). NULL when
 * allocation fails. Called with the mutex held. */
static quill__metrics_model *find_or_add_model(quill_metrics *metrics, const char *name) {
    if (name == NULL || name[0] == '\0') {
        name = unknown_model_name;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < metrics->n_models; i++) {
            if (strcmp(metrics->models[i]->name, name) == 0) {
                return metrics->models[i];
            }
        }
        if (metrics->n_models < (size_t)metrics->params.max_models ||
            (strcmp(name, overflow_name) == 0 &&
             metrics->n_models == (size_t)metrics->params.max_models)) {
            quill__metrics_model *model = model_create(name, metrics->params.max_features);
            if (model != NULL) {
                metrics->models[metrics->n_models] = model;
                metrics->n_models += 1;
            }
            return model;
        }
        name = overflow_name;
    }
    return NULL;
}

/* Returns the entry named name in entries (n_entries of at most max + 1), adding it or, once
 * max names are taken, "_other". NULL when allocation fails. Called with the mutex held. */
static quill__metrics_named_tokens *find_or_add_named(quill__metrics_named_tokens *entries,
                                                      size_t *n_entries, int32_t max,
                                                      const char *name) {
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < *n_entries; i++) {
            if (strcmp(entries[i].name, name) == 0) {
                return &entries[i];
            }
        }
        if (*n_entries < (size_t)max ||
            (strcmp(name, overflow_name) == 0 && *n_entries == (size_t)max)) {
            char *copy = quill__strdup(name);
            if (copy == NULL) {
                return NULL;
            }
            quill__metrics_named_tokens *entry = &entries[*n_entries];
            memset(entry, 0, sizeof(*entry));
            entry->name = copy;
            *n_entries += 1;
            return entry;
        }
        name = overflow_name;
    }
    return NULL;
}

/* Returns the 64-bit FNV-1a hash of name, never 0 (0 marks a free slot). Two users whose
 * hashes collide count as one, which at 64 bits is negligible. */
static uint64_t name_hash(const char *name) {
    uint64_t hash = 14695981039346656037ull;
    for (const unsigned char *c = (const unsigned char *)name; *c != '\0'; c++) {
        hash = (hash ^ *c) * 1099511628211ull;
    }
    return hash != 0 ? hash : 1;
}

static bool is_seen_in_window(int64_t last_seen_us, int64_t now_us) {
    return quill__quantile_epoch_is_live(last_seen_us / QUILL__METRICS_SLICE_US,
                                         now_us / QUILL__METRICS_SLICE_US);
}

/* Returns the slot of hash in slots, a table of n_slots (a power of two) with a free slot, or
 * the free slot where it belongs. */
static quill__metrics_recent_user *find_recent_user(quill__metrics_recent_user *slots,
                                                    size_t n_slots, uint64_t hash) {
    size_t at = (size_t)hash & (n_slots - 1);
    while (slots[at].name_hash != 0 && slots[at].name_hash != hash) {
        at = (at + 1) & (n_slots - 1);
    }
    return &slots[at];
}

/* Moves the users seen in the window into a new table of n_slots, dropping the others. Returns
 * false, keeping the old table, when allocation fails. */
static bool rebuild_overflow_users(quill_metrics *metrics, size_t n_slots, int64_t now_us) {
    quill__metrics_recent_user *slots = quill__calloc(n_slots, sizeof(*slots));
    if (slots == NULL) {
        return false;
    }
    size_t n_users = 0;
    for (size_t i = 0; i < metrics->n_overflow_slots; i++) {
        const quill__metrics_recent_user *user = &metrics->overflow_users[i];
        if (user->name_hash != 0 && is_seen_in_window(user->last_seen_us, now_us)) {
            *find_recent_user(slots, n_slots, user->name_hash) = *user;
            n_users++;
        }
    }
    quill__free(metrics->overflow_users);
    metrics->overflow_users = slots;
    metrics->n_overflow_slots = n_slots;
    metrics->n_overflow_users = n_users;
    return true;
}

/* Notes a request from a user counted under "_other", for the active-user count. A known user
 * only moves its time. A new one may first make the table, kept at most half full, drop the
 * users outside the window and double. At its largest size that rebuild runs at most once per
 * window slice, so a full table does not cost a rebuild per request. When the table stays full
 * or memory runs out, the new user is not noted. Called with the mutex held. */
static void note_overflow_user(quill_metrics *metrics, const char *name, int64_t now_us) {
    uint64_t hash = name_hash(name);
    if (metrics->n_overflow_slots > 0) {
        quill__metrics_recent_user *user =
            find_recent_user(metrics->overflow_users, metrics->n_overflow_slots, hash);
        if (user->name_hash == hash) {
            user->last_seen_us = now_us;
            return;
        }
    }
    if (2 * (metrics->n_overflow_users + 1) > metrics->n_overflow_slots) {
        bool can_grow = metrics->n_overflow_slots < QUILL__METRICS_MAX_OVERFLOW_SLOTS;
        int64_t slice = now_us / QUILL__METRICS_SLICE_US + 1;
        if (!can_grow && slice == metrics->overflow_rebuilt_slice) {
            return;
        }
        size_t n_slots = metrics->n_overflow_slots == 0 ? 1024
                         : can_grow                     ? 2 * metrics->n_overflow_slots
                                                        : metrics->n_overflow_slots;
        metrics->overflow_rebuilt_slice = slice;
        if (!rebuild_overflow_users(metrics, n_slots, now_us) ||
            2 * (metrics->n_overflow_users + 1) > metrics->n_overflow_slots) {
            return;
        }
    }
    quill__metrics_recent_user *user =
        find_recent_user(metrics->overflow_users, metrics->n_overflow_slots, hash);
    user->name_hash = hash;
    user->last_seen_us = now_us;
    metrics->n_overflow_users++;
}

int64_t quill__metrics_count_active_users(const quill_metrics *metrics, int64_t now_us) {
    int64_t n_active = 0;
    bool is_other_active = false;
    for (size_t i = 0; i < metrics->n_users; i++) {
        if (!is_seen_in_window(metrics->users[i].last_seen_us, now_us)) {
            continue;
        }
        if (strcmp(metrics->users[i].name, overflow_name) == 0) {
            is_other_active = true;
        } else {
            n_active++;
        }
    }
    int64_t n_overflow_active = 0;
    for (size_t i = 0; i < metrics->n_overflow_slots; i++) {
        const quill__metrics_recent_user *user = &metrics->overflow_users[i];
        if (user->name_hash != 0 && is_seen_in_window(user->last_seen_us, now_us)) {
            n_overflow_active++;
        }
    }
    /* Without a noted user (memory ran out), "_other" counts as at least one. */
    if (is_other_active && n_overflow_active == 0) {
        n_overflow_active = 1;
    }
    return n_active + n_overflow_active;
}

/* Returns the request counter for (status, finish reason), adding it. NULL when allocation
 * fails. Called with the mutex held. */
static quill__metrics_request_count *
find_or_add_request_count(quill__metrics_model *model, int32_t http_status, int32_t finish_index) {
    for (size_t i = 0; i < model->n_request_counts; i++) {
        quill__metrics_request_count *count = &model->request_counts[i];
        if (count->http_status == http_status && count->finish_index == finish_index) {
            return count;
        }
    }
    if (model->n_request_counts == model->request_counts_capacity) {
        size_t capacity = model->request_counts_capacity * 2 + 8;
        quill__metrics_request_count *grown =
            quill__realloc_array(model->request_counts, capacity, sizeof(*grown));
        if (grown == NULL) {
            return NULL;
        }
        model->request_counts = grown;
        model->request_counts_capacity = capacity;
    }
    quill__metrics_request_count *count = &model->request_counts[model->n_request_counts];
    model->n_request_counts += 1;
    count->http_status = http_status;
    count->finish_index = finish_index;
    count->n_requests = 0;
    return count;
}

static int32_t finish_reason_index(const char *finish_reason) {
    if (finish_reason == NULL) {
        return FINISH_NONE;
    }
    for (int32_t i = 1; i < QUILL__METRICS_N_FINISH_REASONS; i++) {
        if (strcmp(finish_reason, quill__metrics_finish_reason_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static quill_status validate_record(const quill_request_record *record, int32_t finish_index) {
    if (record->http_status < 100 || record->http_status > 599) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "metrics: http_status %d is outside 100..599; pass the status "
                               "code sent to the client",
                               record->http_status);
    }
    if (finish_index < 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "metrics: unknown finish_reason '%s'; expected stop, length, "
                               "cancelled, error or NULL for a rejected request",
                               record->finish_reason);
    }
    if (record->n_prompt_tokens < 0 || record->n_cached_tokens < 0 ||
        record->n_completion_tokens < 0 || record->cost_picousd < 0) {
        return quill_error_set(
            QUILL_ERR_INVALID_ARG,
            "metrics: negative count: n_prompt_tokens=%lld "
            "n_cached_tokens=%lld n_completion_tokens=%lld cost_picousd=%lld",
            (long long)record->n_prompt_tokens, (long long)record->n_cached_tokens,
            (long long)record->n_completion_tokens, (long long)record->cost_picousd);
    }
    if (record->n_cached_tokens > record->n_prompt_tokens) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "metrics: n_cached_tokens %lld exceeds n_prompt_tokens %lld; "
                               "cached tokens are part of the prompt",
                               (long long)record->n_cached_tokens,
                               (long long)record->n_prompt_tokens);
    }
    if (finish_index == FINISH_NONE &&
        (record->n_prompt_tokens != 0 || record->n_completion_tokens != 0 ||
         record->cost_picousd != 0)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "metrics: a rejected request (finish_reason NULL) carries "
                               "n_prompt_tokens=%lld n_completion_tokens=%lld; pass its finish "
                               "reason or zero counts",
                               (long long)record->n_prompt_tokens,
                               (long long)record->n_completion_tokens);
    }
    if (record->n_inter_token > 0 && record->inter_token_us == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "metrics: n_inter_token is %zu but inter_token_us is NULL",
                               record->n_inter_token);
    }
    for (size_t i = 0; i < record->n_inter_token; i++) {
        if (record->inter_token_us[i] < 0) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "metrics: inter_token_us[%zu] is %lld; gaps must be >= 0", i,
                                   (long long)record->inter_token_us[i]);
        }
    }
    return QUILL_OK;
}

static void observe_latency(quill__metrics_model *model, quill__metrics_latency latency,
                            int64_t now_us, int64_t value_us) {
    quill__histogram_observe(&model->latency[latency], value_us);
    quill__quantile_window_observe(&model->percentiles[latency], now_us, value_us);
}

/* Adds a successful request's latencies and token counts; see quill/metrics.h for which. */
static void record_latencies(quill__metrics_model *model, const quill_request_record *record,
                             int32_t finish_index, int64_t now_us) {
    if (record->queue_us >= 0) {
        observe_latency(model, QUILL__METRICS_LATENCY_QUEUE, now_us, record->queue_us);
    }
    if (record->n_completion_tokens > 0 && record->ttft_us >= 0) {
        observe_latency(model, QUILL__METRICS_LATENCY_TTFT, now_us, record->ttft_us);
    }
    for (size_t i = 0; i < record->n_inter_token; i++) {
        observe_latency(model, QUILL__METRICS_LATENCY_ITL, now_us, record->inter_token_us[i]);
    }
    bool is_complete = finish_index == FINISH_STOP || finish_index == FINISH_LENGTH;
    if (is_complete && record->generation_us >= 0) {
        observe_latency(model, QUILL__METRICS_LATENCY_GENERATION, now_us, record->generation_us);
    }
    if (is_complete && record->e2e_us >= 0) {
        observe_latency(model, QUILL__METRICS_LATENCY_E2E, now_us, record->e2e_us);
    }
    quill__histogram_observe(&model->prompt_tokens, record->n_prompt_tokens);
    quill__histogram_observe(&model->completion_tokens, record->n_completion_tokens);
}

quill_status quill_metrics_record_request(quill_metrics *metrics,
                                          const quill_request_record *record) {
    int32_t finish_index = finish_reason_index(record->finish_reason);
    quill_status status = validate_record(record, finish_index);
    if (status != QUILL_OK) {
        return status;
    }
    quill__metrics_outcomes outcome = outcome_of(record, finish_index);
    bool is_success =
        record->http_status < 400 && finish_index != FINISH_NONE && finish_index != FINISH_ERROR;
    quill__metrics_tokens tokens = {
        .n_requests = finish_index != FINISH_NONE ? 1 : 0,
        .n_cache_hits = finish_index != FINISH_NONE && record->n_cached_tokens > 0 ? 1 : 0,
        .n_prompt_tokens = record->n_prompt_tokens,
        .n_cached_tokens = record->n_cached_tokens,
        .n_completion_tokens = record->n_completion_tokens,
        .cost_picousd = record->cost_picousd,
    };
    const char *feature =
        record->feature != NULL && record->feature[0] != '\0' ? record->feature : no_feature_name;
    bool has_user = record->user != NULL && record->user[0] != '\0';
    int64_t now_us = quill__metrics_now_us(metrics);

    quill__metrics_lock(metrics);

    /* Find every series first, so that an allocation failure records nothing. */
    quill__metrics_model *model = find_or_add_model(metrics, record->model);
    quill__metrics_request_count *count =
        model != NULL ? find_or_add_request_count(model, record->http_status, finish_index) : NULL;
    quill__metrics_named_tokens *feature_entry =
        count != NULL ? find_or_add_named(model->features, &model->n_features,
                                          metrics->params.max_features, feature)
                      : NULL;
    quill__metrics_named_tokens *user_entry = NULL;
    if (feature_entry != NULL && has_user) {
        user_entry = find_or_add_named(metrics->users, &metrics->n_users, metrics->params.max_users,
                                       record->user);
    }
    if (feature_entry == NULL || (has_user && user_entry == NULL)) {
        status = quill_error_set(QUILL_ERR_NOMEM,
                                 "metrics: out of memory adding a series for model '%s'",
                                 record->model != NULL ? record->model : unknown_model_name);
        goto unlock;
    }

    /* Counters, window slices and tags. */
    count->n_requests += 1;
    model->n_records += 1;
    outcomes_add(&model->outcomes, &outcome);
    tokens_add(&model->tokens, &tokens);
    quill__metrics_slice *slice = slices_current(model->slices, now_us);
    slice->n_records += 1;
    outcomes_add(&slice->outcomes, &outcome);
    tokens_add(&slice->tokens, &tokens);
    tokens_add(&feature_entry->tokens, &tokens);
    feature_entry->last_seen_us = now_us;
    if (user_entry != NULL) {
        tokens_add(&user_entry->tokens, &tokens);
        user_entry->last_seen_us = now_us;
        if (strcmp(user_entry->name, overflow_name) == 0) {
            note_overflow_user(metrics, record->user, now_us);
        }
        quill__metrics_slice *user_slice = slices_current(metrics->user_slices, now_us);
        user_slice->n_records += 1;
        outcomes_add(&user_slice->outcomes, &outcome);
        tokens_add(&user_slice->tokens, &tokens);
    }

    if (is_success) {
        record_latencies(model, record, finish_index, now_us);
    }

unlock:
    quill__metrics_unlock(metrics);
    return status;
}

quill_status quill_metrics_set_gauges(quill_metrics *metrics, const char *model_name,
                                      const quill_metrics_gauges *gauges) {
    if (gauges->n_running < 0 || gauges->n_waiting < 0 || gauges->n_kv_blocks_used < 0 ||
        gauges->n_kv_blocks_total < 0 || gauges->n_prefix_queries < 0 ||
        gauges->n_prefix_hits < 0 || gauges->n_preemptions < 0 || gauges->n_kv_blocks_cached < 0 ||
        gauges->n_kv_blocks_cached > gauges->n_kv_blocks_used ||
        gauges->n_kv_blocks_used > gauges->n_kv_blocks_total ||
        gauges->n_prefix_hits > gauges->n_prefix_queries) {
        return quill_error_set(
            QUILL_ERR_INVALID_ARG,
            "metrics: invalid gauges for model '%s': running=%lld "
            "waiting=%lld kv_blocks=%lld/%lld kv_blocks_cached=%lld "
            "prefix_hits=%lld/%lld preemptions=%lld; values must be >= 0, "
            "cached <= used <= total and hits <= queries",
            model_name != NULL ? model_name : unknown_model_name, (long long)gauges->n_running,
            (long long)gauges->n_waiting, (long long)gauges->n_kv_blocks_used,
            (long long)gauges->n_kv_blocks_total, (long long)gauges->n_kv_blocks_cached,
            (long long)gauges->n_prefix_hits, (long long)gauges->n_prefix_queries,
            (long long)gauges->n_preemptions);
    }

    quill_status status = QUILL_OK;
    quill__metrics_lock(metrics);
    quill__metrics_model *model = find_or_add_model(metrics, model_name);
    if (model == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM,
                                 "metrics: out of memory adding a series for model '%s'",
                                 model_name != NULL ? model_name : unknown_model_name);
    } else {
        model->gauges = *gauges;
        model->has_gauges = true;
    }
    quill__metrics_unlock(metrics);
    return status;
}
