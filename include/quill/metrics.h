/*
 * Request metrics: latency histograms, token and cost counters, engine gauges, and latency
 * percentiles since start and over the last 5 minutes. The server records one
 * quill_request_record per finished or rejected request, sets the engine gauges before it
 * renders, and serves the Prometheus text (GET /metrics) and the JSON summary (GET /v1/stats).
 *
 * Which requests enter which figures:
 * - Every record counts in quill_requests_total by status and finish reason, and in at most one
 *   outcome of the JSON summary: errors (server side: status >= 500, or finish reason "error"
 *   below status 400, the figure to alert on), client_errors (status 400..499 except 429 and
 *   499: bad requests, auth, unknown model or path, too large), rejections (429: no slot or
 *   queue place) and client_disconnects (499: the client closed the connection first). Each
 *   has a rate over all requests (error_rate, client_error_rate, rejection_rate,
 *   client_disconnect_rate).
 * - Token and cost counters take every record with a finish reason, because those tokens were
 *   processed and billed. Rejected requests (finish reason NULL) carry no tokens or cost.
 * - Latency and per-request token histograms and percentiles take only successful requests:
 *   status below 400 and a finish reason of "stop", "length" or "cancelled". Within those,
 *   queue time needs queue_us >= 0, TTFT needs a completion token and ttft_us >= 0, each
 *   inter-token gap enters as given, and generation and end-to-end times need "stop" or
 *   "length" (a cancelled request's times are cut short). A failed request never enters a
 *   latency figure, not even as zero.
 *
 * Prometheus labels: every series has model; token and cost counters also have feature. User
 * ids never become labels, because their number is unbounded; per-user figures appear only in
 * the JSON summary, which caps how many users it tracks.
 *
 * Safe from any thread: one mutex guards the whole registry and is held only for in-memory
 * updates and rendering, never across I/O.
 */
#ifndef QUILL_METRICS_H
#define QUILL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

typedef struct quill_metrics quill_metrics;

typedef struct quill_metrics_params {
    /* Monotonic clock in microseconds; NULL uses CLOCK_MONOTONIC. Tests inject a fake one to
     * move the 5-minute window without sleeping. */
    int64_t (*clock_us)(void *clock_user_data);
    void *clock_user_data; /* passed to clock_us */
    int32_t max_models;    /* distinct model labels; later ones are counted as "_other" */
    int32_t max_features;  /* distinct feature labels per model; later ones become "_other" */
    int32_t max_users;     /* distinct users tracked in the JSON summary; later ones become
                              "_other" */
} quill_metrics_params;

/* Returns the defaults: the monotonic clock, 16 models, 64 features per model, 1000 users. */
QUILL_API quill_metrics_params quill_metrics_params_default(void);

/* Creates an empty registry. params may be NULL for the defaults. Returns a new registry in
 * *out; the caller destroys it. QUILL_ERR_INVALID_ARG when a limit is below 1. */
QUILL_API quill_status quill_metrics_create(const quill_metrics_params *params,
                                            quill_metrics **out);

/* Frees the registry. Accepts NULL. No other thread may use it during or after the call. */
QUILL_API void quill_metrics_destroy(quill_metrics *metrics);

/* One finished or rejected request as the server saw it. Strings are borrowed for the call;
 * times are microseconds on the monotonic clock, and a negative time means "not measured". */
typedef struct quill_request_record {
    const char *model;             /* model name as served; NULL or "" counts as "unknown" */
    int32_t http_status;           /* status code sent to the client, 100..599 */
    const char *finish_reason;     /* "stop", "length", "cancelled", "error", or NULL when the
                                      request was rejected before it reached the engine */
    const char *user;              /* user tag; NULL or "" for none. Never a Prometheus label */
    const char *feature;           /* feature tag; NULL or "" counts as "none" */
    int64_t n_prompt_tokens;       /* includes the cached ones */
    int64_t n_cached_tokens;       /* prompt tokens whose K/V came from the prefix cache */
    int64_t n_completion_tokens;   /* generated tokens */
    int64_t cost_picousd;          /* price of the request in 1e-12 USD, >= 0 */
    int64_t queue_us;              /* arrival until the first prefill chunk was scheduled */
    int64_t ttft_us;               /* arrival until the first content: written to the socket for
                                      streams, released by the engine for non-streamed replies */
    int64_t generation_us;         /* first generated token until the last */
    int64_t e2e_us;                /* arrival until the last byte was written */
    const int64_t *inter_token_us; /* gaps between successive generated tokens, microseconds;
                                      borrowed for the call; may be NULL when n is 0. The server
                                      measures them for streamed requests only */
    size_t n_inter_token;          /* entries in inter_token_us */
} quill_request_record;

/* Returns a record with every time set to -1 (not measured) and everything else zero or NULL. */
QUILL_API quill_request_record quill_request_record_default(void);

/* Adds one request to every figure it belongs to (see the top of this file). Returns
 * QUILL_ERR_INVALID_ARG, and records nothing, for a status outside 100..599, an unknown finish
 * reason, a negative token count or cost, cached tokens above prompt tokens, a rejected
 * request that carries tokens, or a negative inter-token gap. QUILL_ERR_NOMEM when a new
 * series cannot be allocated. */
QUILL_API quill_status quill_metrics_record_request(quill_metrics *metrics,
                                                    const quill_request_record *record);

/* Engine state of one model at the time of the call. */
typedef struct quill_metrics_gauges {
    int64_t n_running;          /* sequences decoding or prefilling */
    int64_t n_waiting;          /* requests queued for admission */
    int64_t n_kv_blocks_used;   /* KV blocks referenced by running sequences or cached */
    int64_t n_kv_blocks_cached; /* of those, blocks only the prefix cache holds (evictable) */
    int64_t n_kv_blocks_total;  /* KV blocks in the cache; usage ratio = used / total */
    int64_t n_prefix_queries;   /* prefix cache lookups since start (cumulative) */
    int64_t n_prefix_hits;      /* lookups that reused at least one block (cumulative) */
    int64_t n_preemptions;      /* running requests sent back to wait for KV blocks
                                   (cumulative) */
} quill_metrics_gauges;

/* Replaces the gauges of model (NULL or "" means "unknown"). The server calls it before each
 * render. The prefix and preemption counters are cumulative engine counts, so they are stored
 * as given. QUILL_ERR_INVALID_ARG for a negative value, used above total, or hits above
 * queries. */
QUILL_API quill_status quill_metrics_set_gauges(quill_metrics *metrics, const char *model,
                                                const quill_metrics_gauges *gauges);

/* Renders every series in the Prometheus text exposition format 0.0.4 (Content-Type
 * "text/plain; version=0.0.4; charset=utf-8"). Returns a new NUL-terminated text in *text
 * (free it with free()) and its length without the NUL in *n_bytes. */
QUILL_API quill_status quill_metrics_render_prometheus(quill_metrics *metrics, char **text,
                                                       size_t *n_bytes);

/* Renders the JSON summary for GET /v1/stats: per model, latency percentiles since start and
 * over the last 5 minutes, request counts, error rate, cache hit rates, tokens per request
 * and per feature; per user, tokens and cost; and cost per active user over the window.
 * Returns a new NUL-terminated text in *text (free it with free()) and its length in
 * *n_bytes. */
QUILL_API quill_status quill_metrics_render_stats_json(quill_metrics *metrics, char **text,
                                                       size_t *n_bytes);

QUILL_EXTERN_C_END

#endif
