/*
 * The registry's private layout, shared by metrics.c (recording), prometheus.c and
 * stats_json.c (rendering). Every field of quill_metrics below the mutex is guarded by it; the
 * renderers take it through quill__metrics_lock and release it before returning their text.
 */
#ifndef QUILL_METRICS_REGISTRY_H
#define QUILL_METRICS_REGISTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/histogram.h"
#include "metrics/quantile_window.h"
#include "quill/metrics.h"

enum {
    QUILL__METRICS_SLICE_US = 10 * 1000 * 1000, /* window slice: 10 s, so 30 slices = 5 min */
    QUILL__METRICS_WINDOW_US = QUILL__METRICS_SLICE_US * QUILL__QUANTILE_N_SLICES,
};

/* Latency distributions, in the order of quill__metrics_latency_names. */
typedef enum quill__metrics_latency {
    QUILL__METRICS_LATENCY_QUEUE = 0,
    QUILL__METRICS_LATENCY_TTFT = 1,
    QUILL__METRICS_LATENCY_ITL = 2,
    QUILL__METRICS_LATENCY_GENERATION = 3,
    QUILL__METRICS_LATENCY_E2E = 4,
    QUILL__METRICS_N_LATENCIES = 5,
} quill__metrics_latency;

/* Finish reasons in label order; index 0 is a rejected request. */
enum { QUILL__METRICS_N_FINISH_REASONS = 5 };
extern const char *const quill__metrics_finish_reason_names[QUILL__METRICS_N_FINISH_REASONS];

/* Tokens and cost of a group of requests (a model, a feature, a user or a time slice). */
typedef struct quill__metrics_tokens {
    uint64_t n_requests;         /* requests with a finish reason */
    uint64_t n_cache_hits;       /* those of them with at least one cached prompt token */
    int64_t n_prompt_tokens;     /* includes cached ones */
    int64_t n_cached_tokens;
    int64_t n_completion_tokens;
    int64_t cost_picousd;
} quill__metrics_tokens;

typedef struct quill__metrics_request_count {
    int32_t http_status;
    int32_t finish_index;        /* into quill__metrics_finish_reason_names */
    uint64_t n_requests;
} quill__metrics_request_count;

typedef struct quill__metrics_named_tokens {
    char *name;                  /* feature or user tag, owned */
    quill__metrics_tokens tokens;
    int64_t last_seen_us;        /* registry time of the latest request */
} quill__metrics_named_tokens;

/* Requests that did not succeed, by whose side failed; see quill/metrics.h. The four counts
 * are disjoint. */
typedef struct quill__metrics_outcomes {
    uint64_t n_errors;           /* server side: status >= 500 or finish reason "error" */
    uint64_t n_client_errors;    /* status 400..499 except 429 and 499 */
    uint64_t n_rejections;       /* status 429: no slot or queue place */
    uint64_t n_disconnects;      /* status 499: the client closed the connection first */
} quill__metrics_outcomes;

/* Counts of one window slice, reused once its epoch leaves the window. */
typedef struct quill__metrics_slice {
    int64_t epoch;               /* registry time / slice duration; -1 unused */
    uint64_t n_records;          /* every record, rejected ones included */
    quill__metrics_outcomes outcomes;
    quill__metrics_tokens tokens;
} quill__metrics_slice;

typedef struct quill__metrics_model {
    char *name;                                           /* owned */
    quill__histogram latency[QUILL__METRICS_N_LATENCIES]; /* microseconds */
    quill__histogram prompt_tokens;                       /* tokens per successful request */
    quill__histogram completion_tokens;
    quill__quantile_window percentiles[QUILL__METRICS_N_LATENCIES]; /* microseconds */
    quill__metrics_request_count *request_counts;         /* by status and finish reason */
    size_t n_request_counts;
    size_t request_counts_capacity;
    uint64_t n_records;                                   /* every record */
    quill__metrics_outcomes outcomes;
    quill__metrics_tokens tokens;                         /* records with a finish reason */
    quill__metrics_named_tokens *features;                /* at most max_features + 1 */
    size_t n_features;
    quill__metrics_slice slices[QUILL__QUANTILE_N_SLICES];
    bool has_gauges;                                      /* set_gauges was called */
    quill_metrics_gauges gauges;
} quill__metrics_model;

/* A user counted under "_other": the hash of its name (0 marks a free slot) and the registry
 * time of its latest request. */
typedef struct quill__metrics_recent_user {
    uint64_t name_hash;
    int64_t last_seen_us;
} quill__metrics_recent_user;

/* Maximum slots of the table of users past max_users: 2 MiB, at most half of them in use, so
 * 65,536 such users in the window. Past that, active_users is a lower bound. */
enum { QUILL__METRICS_MAX_OVERFLOW_SLOTS = 1 << 17 };

struct quill_metrics {
    quill_metrics_params params;
    int64_t start_us;                    /* clock at creation; registry time counts from it */
    pthread_mutex_t mutex;               /* the only lock; guards every field below */
    quill__metrics_model **models;       /* at most max_models + 1 (the "_other" series) */
    size_t n_models;
    quill__metrics_named_tokens *users;  /* at most max_users + 1 */
    size_t n_users;
    quill__metrics_slice user_slices[QUILL__QUANTILE_N_SLICES]; /* requests with a user tag */
    quill__metrics_recent_user *overflow_users; /* open addressing by name hash, so that users
                                                   past max_users still count as active users */
    size_t n_overflow_slots;                    /* 0 or a power of two */
    size_t n_overflow_users;                    /* slots in use */
    int64_t overflow_rebuilt_slice;             /* window slice of the last rebuild at the
                                                   largest size, plus 1; 0 before one */
};

/* Returns the number of users tagged in the window ending at now_us, those past max_users
 * included. */
int64_t quill__metrics_count_active_users(const quill_metrics *metrics, int64_t now_us);

/* Returns the registry time in microseconds since creation. Needs no lock. */
int64_t quill__metrics_now_us(const quill_metrics *metrics);

void quill__metrics_lock(quill_metrics *metrics);
void quill__metrics_unlock(quill_metrics *metrics);

/* Sums the slices inside the window ending at now_us into *sum (epoch is left 0). */
void quill__metrics_slices_sum(const quill__metrics_slice *slices, int64_t now_us,
                               quill__metrics_slice *sum);

#endif
