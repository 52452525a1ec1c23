/*
 * The OpenAI-compatible HTTP server behind `quill serve`: /v1/chat/completions,
 * /v1/completions (both streamed as server-sent events or not), /v1/models, /v1/models/{id},
 * /health, /tokenize, /detokenize and /apply-template. GET endpoints also respond to HEAD.
 * GET /metrics (Prometheus text) and GET /v1/stats (JSON) serve the server's quill_metrics,
 * which records every chat and completions request. HTTP worker threads parse, validate,
 * render the chat template, tokenize and submit to the engine. The engine thread's event callback
 * only wakes the connection, and a watchdog thread cancels the requests of clients that close their
 * connection while it waits. Every reply with generated text carries usage, cost in USD and
 * timings. With an API key, every endpoint except /health needs it, /metrics included.
 *
 * The server listens from quill_server_create on and returns 503 from /health until
 * quill_server_set_engine attaches a loaded model's engine. quill_server functions are safe
 * from any thread.
 */
#ifndef QUILL_SERVER_H
#define QUILL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/engine.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

typedef struct quill_server quill_server;

typedef struct quill_server_params {
    const char *host;                   /* IPv4 address to bind; "127.0.0.1" by default */
    uint16_t port;                      /* TCP port; 0 picks a free one (see quill_server_port) */
    int32_t n_http_threads;             /* HTTP worker threads; 4 by default */
    const char *api_key;                /* required as "Authorization: Bearer KEY"; NULL: none */
    const char *model_alias;            /* model id in the API; NULL: the model's name */
    const char *chat_template;          /* template source replacing the model's; NULL: the
                                           model's own, or ChatML when it has none */
    int64_t price_input_picousd;        /* per uncached prompt token */
    int64_t price_cached_input_picousd; /* per prompt token served from the prefix cache */
    int64_t price_output_picousd;       /* per completion token */
    int32_t max_requests_in_flight;     /* engine requests (one per choice) admitted and not
                                           yet fully responded to: queued, running, or with output
                                           still being written to a slow client; beyond it the
                                           server returns 429 with Retry-After; 0: no
                                           server-side limit, only the engine's queue limit */
    size_t max_body_bytes;              /* larger request bodies get 413; 8 MiB by default */
} quill_server_params;

QUILL_API quill_server_params quill_server_params_default(void);

/* Binds host:port and starts serving. Until an engine is attached, /health returns 503 and the
 * generation endpoints 503 with code model_loading. Copies params' strings. Returns a new server in
 * *out, which the caller destroys. Fails with QUILL_ERR_IO naming the address when the port cannot
 * be bound, and QUILL_ERR_INVALID_ARG for a bad host or chat template. */
QUILL_API quill_status quill_server_create(const quill_server_params *params, quill_server **out);

/* Attaches the engine (borrowed: it must outlive the server) and its model, renders nothing
 * yet but parses the chat template, and marks the server ready. Call once. */
QUILL_API quill_status quill_server_set_engine(quill_server *server, quill_engine *engine);

/* Also accepts the base name of path without ".gguf" as a model id in requests and in
 * GET /v1/models/{id}, beside the served id (the alias or general.name). Copies what it needs.
 * Optional, and called before quill_server_set_engine. */
QUILL_API quill_status quill_server_set_model_path(quill_server *server, const char *path);

/* The bound TCP port, useful after binding port 0. */
QUILL_API uint16_t quill_server_port(const quill_server *server);

/* Stops accepting new connections and waits until every request in flight has its full response,
 * or until timeout_ms passes (negative: no limit). Returns QUILL_ERR_TIMEOUT in that case. */
QUILL_API quill_status quill_server_drain(quill_server *server, int64_t timeout_ms);

/* Cancels what is still running, closes every connection and frees. Accepts NULL. */
QUILL_API void quill_server_destroy(quill_server *server);

/* Counters for tests and metrics. */
typedef struct quill_server_stats {
    int64_t n_requests;               /* HTTP requests responded to or in progress */
    int64_t n_generations_started;    /* engine requests submitted */
    int64_t n_generations_in_flight;  /* submitted and not yet fully responded to */
    int64_t n_client_disconnects;     /* requests whose client went away before the response was
                                         complete; their generations were cancelled */
} quill_server_stats;

QUILL_API void quill_server_get_stats(quill_server *server, quill_server_stats *stats);

QUILL_EXTERN_C_END

#endif
