/*
 * The server's shared state and the pieces its files pass between them: the server struct, the
 * wakers that let the engine thread resume a suspended connection, and the exchange (one HTTP
 * request and its response).
 *
 * Locks, in the order they may be taken: server->mutex, then a waker's mutex. Neither is held
 * across I/O, model work or a callback into the engine, with one deliberate exception. A
 * waker's mutex is held across MHD_suspend_connection and MHD_resume_connection, which only
 * flip flags under MHD's own mutex and write to its wake-up pipe, so that a suspension and a
 * resumption of the same connection can never cross. The disconnect watchdog (watchdog.c)
 * follows the same order and polls sockets with no lock held. The metrics registry has its own
 * lock, taken inside quill_metrics calls only, and the server never calls them while holding
 * server->mutex or a waker's mutex.
 */
#ifndef QUILL_SERVER_INTERNAL_H
#define QUILL_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "quill/chat.h"
#include "quill/engine.h"
#include "quill/metrics.h"
#include "quill/server.h"
#include "server/cost.h"
#include "server/errors.h"
#include "server/router.h"
#include "server/tool_calls.h"

struct MHD_Daemon;
struct MHD_Connection;
typedef struct quill_completion quill_completion;

/* Wakes one connection from the engine thread. Wakers are pooled by the server and freed only
 * when it is destroyed, so an event that arrives after its connection closed finds a valid
 * waker with no connection and does nothing. A reused waker may see one stray wake-up, which
 * costs its new connection an empty poll. */
typedef struct quill_waker {
    pthread_mutex_t mutex;              /* guards the fields below */
    struct MHD_Connection *connection;  /* NULL while the waker is unused or closed */
    bool is_suspended;                  /* the connection is suspended and waits for an event */
    bool has_pending;                   /* an event arrived while not suspended */
    uint64_t binding;                   /* incremented at every acquire and release, so the
                                           watchdog can tell that a connection it observed suspended
                                           is still the same one and still open */
    atomic_bool is_peer_gone;           /* the watchdog detected the client closing its socket while
                                           the connection was suspended; set before the resume */
    struct quill_waker *next_free;      /* free list; guarded by server->mutex */
    struct quill_waker *next_all;       /* every waker; guarded by server->mutex */
} quill_waker;

struct quill_server {
    /* Settings, fixed after create. */
    char *host;
    uint16_t port;
    char *api_key;                 /* NULL: no authentication */
    char *model_alias;             /* NULL: the model's name */
    char *model_file_id;           /* the model file's base name without .gguf, accepted as a
                                      model id in requests; NULL: none. Set before is_ready */
    char *chat_template_source;    /* NULL: the model's own or ChatML */
    quill_prices prices;
    int32_t max_requests_in_flight;
    size_t max_body_bytes;

    struct MHD_Daemon *daemon;

    /* Set once by quill_server_set_engine before is_ready is stored, and read-only afterwards. */
    quill_engine *engine;
    const quill_model *model;
    quill_chat_template *chat_template;
    quill_tool_call_format tool_call_format; /* how chat_template writes tool calls */
    char *model_id;                /* id in /v1/models and responses */
    int64_t model_created_unix;    /* "created" in /v1/models: when the model was served */
    atomic_bool is_ready;
    atomic_bool is_stopping;       /* destroy started: nothing suspends any more */
    atomic_bool is_quiesced;       /* the listening socket is closed (drain started) */

    pthread_mutex_t mutex;         /* guards what follows */
    pthread_cond_t idle_cond;      /* signalled when n_exchanges drops to zero */
    int64_t n_exchanges;           /* HTTP requests between first call and completion */
    quill_server_stats stats;
    quill_waker *wakers_all;
    quill_waker *wakers_free;
    struct quill_exchange *uploads; /* exchanges still receiving their body, linked through
                                       next_upload; the drain responds to them (http_server.c) */
    atomic_uint_fast64_t next_id;  /* response id counter */

    quill_metrics *metrics;        /* request figures for /metrics and /v1/stats; its own lock */

    /* The disconnect watchdog; see watchdog.c. */
    pthread_t watchdog_thread;
    bool has_watchdog;             /* watchdog_thread was started; set before any request */
    bool is_watchdog_stopping;     /* guarded by server->mutex */
    pthread_cond_t watchdog_cond;  /* CLOCK_MONOTONIC; signalled to stop the watchdog */
};

/* One HTTP request from its first byte to its completion. Owned by its MHD connection: only the
 * thread MHD calls for that connection touches it, except the fields marked as guarded by
 * server->mutex, which the drain also reads and writes. */
typedef enum quill_exchange_state {
    QUILL_EXCHANGE_READING = 0,   /* receiving the body */
    QUILL_EXCHANGE_WAITING = 1,   /* non-streamed generation running; suspended between events */
    QUILL_EXCHANGE_STREAMING = 2, /* SSE response queued; the reader pulls events */
    QUILL_EXCHANGE_ANSWERED = 3,  /* a response is queued */
} quill_exchange_state;

typedef struct quill_exchange {
    quill_server *server;
    struct MHD_Connection *connection;
    quill_endpoint endpoint;
    quill_exchange_state state;
    int64_t arrival_us;            /* monotonic stamp of the first handler call */
    quill_strbuf body;             /* request body (limit: server->max_body_bytes) */
    quill_http_error error;        /* set when the request fails before generation */
    quill_completion *completion;  /* generation state, or NULL */
    quill_waker *waker;            /* while a generation runs */
    quill_strbuf stream;           /* SSE bytes produced but not yet handed to MHD */
    size_t stream_offset;          /* bytes of stream already handed to MHD */
    bool is_stream_finished;       /* [DONE] is in stream; end after it drains */
    int http_status;               /* status of the queued response; 0 before one is queued */
    const char *content_type;      /* of a body from quill__server_handle; NULL: JSON */
    char *user;                    /* copy of the request's user for metrics, or NULL */
    char *feature;                 /* copy of the request's metadata.feature, or NULL */
    const char *allowed_methods;   /* Allow header of a 405 for this path (static), or NULL */
    char *path_model_id;           /* GET /v1/models/{id}: copy of the id; NULL otherwise */
    struct quill_exchange *next_upload; /* in server->uploads; guarded by server->mutex */
    struct quill_exchange *prev_upload; /* in server->uploads; guarded by server->mutex */
    bool is_upload_listed;              /* in server->uploads; guarded by server->mutex */
    bool is_chunked_upload;             /* the body arrives with chunked transfer coding */
    bool is_drained;                    /* the drain sent a 503 on the socket itself and shut
                                           it down, so MHD must send nothing; guarded by
                                           server->mutex */
} quill_exchange;

/* Takes a waker from the pool (or allocates one) bound to connection; NULL on NOMEM. */
quill_waker *quill__waker_acquire(quill_server *server, struct MHD_Connection *connection);

/* Unbinds the waker from its connection and returns it to the pool. Accepts NULL. */
void quill__waker_release(quill_server *server, quill_waker *waker);

/* The engine's on_event callback: resumes the connection if it is suspended, else remembers
 * that an event is pending. user_data is a quill_waker. */
void quill__waker_on_event(void *user_data);

/* Suspends the waker's connection unless an event is pending (which it then consumes) or the
 * server is stopping. Returns true when the connection was suspended. Call only from an MHD
 * callback of that connection. */
bool quill__waker_suspend(quill_server *server, quill_waker *waker);

/* Runs the checks that need only the request line and headers: path (404), method (405), API
 * key (401), readiness (503 model_loading) and Content-Type (415). Returns true when the request
 * passes them; otherwise sets exchange->error and returns false. Runs on an MHD worker thread,
 * from the first handler call on, so that an error can go out before "100 Continue". */
bool quill__server_check_headers(quill_exchange *exchange);

/* Handles a complete request body: serves simple endpoints and errors by returning an HTTP
 * status and a body in *http_status and body, or starts a generation (exchange->completion set,
 * *http_status 0). Runs on an MHD worker thread. */
void quill__server_handle(quill_exchange *exchange, int *http_status, quill_strbuf *body);

/* Records one finished generation request (chat or completions) in server->metrics: its
 * status, finish reason, tokens, cost and times. Call from on_completed after
 * quill__completion_stop, with is_disconnect true when the client left early. */
void quill__server_metrics_record(quill_exchange *exchange, bool is_disconnect);

/* Responds to GET /metrics (Prometheus text) and GET /v1/stats (JSON), refreshing the engine gauges
 * first. Sets exchange->content_type for the Prometheus text. */
void quill__server_metrics_answer(quill_exchange *exchange, int *http_status,
                                  quill_strbuf *body);

/* Starts the thread that watches suspended connections for clients that closed their socket.
 * Call once, after the daemon started. */
quill_status quill__watchdog_start(quill_server *server);

/* Stops and joins the watchdog. Accepts a server whose watchdog never started. */
void quill__watchdog_stop(quill_server *server);

/* Releases n_generations slots of one finished request from the in-flight count, and counts a
 * client disconnect when is_disconnect. */
void quill__server_count_generation_end(quill_server *server, int64_t n_generations,
                                        bool is_disconnect);

#endif
