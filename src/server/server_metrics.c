/*
 * The server's side of quill/metrics.h: one quill_request_record per finished chat or
 * completions request, taken in on_completed, and the GET /metrics and GET /v1/stats responses.
 * Requests to other endpoints (/health, /v1/models, /tokenize, unknown paths, the metrics
 * endpoints themselves) are not recorded, so quill_requests_total counts inference requests.
 *
 * Which status a record carries:
 * - the status of the response the server queued, for successful responses and rejections
 *   (400, 401, 404, 413, 429, 500, 503);
 * - 499 when the client left before its response was complete, the code nginx logs for a
 *   client that closed the connection. That holds for streams too, whose 200 header may
 *   already have gone out, so that cut-short requests stay out of the latency figures, which
 *   metrics.h keeps for status below 400.
 * Runs on MHD worker threads. The registry takes its own lock.
 */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "quill/engine.h"
#include "quill/metrics.h"
#include "server/completion.h"
#include "server/server_internal.h"

/* Status recorded for a request whose client closed the connection first (nginx's code). */
#define HTTP_STATUS_CLIENT_CLOSED 499

void quill__server_metrics_record(quill_exchange *exchange, bool is_disconnect) {
    quill_server *server = exchange->server;
    bool is_generation = exchange->endpoint == QUILL_ENDPOINT_CHAT ||
                         exchange->endpoint == QUILL_ENDPOINT_COMPLETIONS;
    if (!is_generation || server->metrics == NULL) {
        return;
    }

    /* Every accepted request uses the served id, so the served id is the label for all. */
    quill_request_record record = quill_request_record_default();
    record.model = atomic_load(&server->is_ready) ? server->model_id : NULL;
    record.user = exchange->user;
    record.feature = exchange->feature;
    if (is_disconnect) {
        record.http_status = HTTP_STATUS_CLIENT_CLOSED;
    } else if (exchange->http_status != 0) {
        record.http_status = exchange->http_status;
    } else {
        record.http_status = 500; /* no response could be queued, e.g. out of memory */
    }

    /* Rejected before the engine: no finish reason, tokens or times. */
    if (exchange->completion != NULL) {
        quill__completion_fill_record(exchange->completion, &record);
        if (!is_disconnect && exchange->http_status != 0) {
            record.e2e_us = quill__clock_monotonic_us() - exchange->arrival_us;
        }
    }

    if (quill_metrics_record_request(server->metrics, &record) != QUILL_OK) {
        QUILL_LOG_WARN("server", "request not recorded in metrics", "http_status=%d error=\"%s\"",
                       record.http_status, quill_error_message());
    }
}

/* Copies the engine's state into the registry's gauges. */
static void refresh_gauges(quill_server *server) {
    if (!atomic_load(&server->is_ready)) {
        return;
    }
    quill_engine_stats stats;
    quill_engine_get_stats(server->engine, &stats);
    quill_metrics_gauges gauges;
    memset(&gauges, 0, sizeof(gauges));
    gauges.n_running = stats.n_running;
    gauges.n_waiting = stats.n_waiting;
    /* metrics.h counts blocks held only by the prefix index as used, as they are not free. */
    gauges.n_kv_blocks_used = (int64_t)stats.n_blocks_used + stats.n_blocks_cached;
    gauges.n_kv_blocks_cached = stats.n_blocks_cached;
    gauges.n_kv_blocks_total = stats.n_blocks_total;
    gauges.n_prefix_queries = stats.n_prefix_queries;
    gauges.n_prefix_hits = stats.n_prefix_hits;
    gauges.n_preemptions = stats.n_preemptions;
    if (quill_metrics_set_gauges(server->metrics, server->model_id, &gauges) != QUILL_OK) {
        QUILL_LOG_WARN("server", "engine gauges not recorded", "error=\"%s\"",
                       quill_error_message());
    }
}

void quill__server_metrics_answer(quill_exchange *exchange, int *http_status, quill_strbuf *body) {
    quill_server *server = exchange->server;
    refresh_gauges(server);

    char *text = NULL;
    size_t n_bytes = 0;
    bool is_prometheus = exchange->endpoint == QUILL_ENDPOINT_METRICS;
    quill_status status = is_prometheus
                              ? quill_metrics_render_prometheus(server->metrics, &text, &n_bytes)
                              : quill_metrics_render_stats_json(server->metrics, &text, &n_bytes);
    if (status != QUILL_OK) {
        quill__http_error_set(&exchange->error, 500, NULL, NULL, "cannot render metrics: %s",
                              quill_error_message());
        return;
    }
    status = quill__strbuf_append(body, text, n_bytes);
    free(text);
    if (status != QUILL_OK) {
        quill__http_error_set(&exchange->error, 500, NULL, NULL,
                              "out of memory for %zu bytes of metrics", n_bytes);
        return;
    }
    if (is_prometheus) {
        exchange->content_type = "text/plain; version=0.0.4; charset=utf-8";
    }
    *http_status = 200;
}
