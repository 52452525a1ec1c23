/*
 * libmicrohttpd glue: connections, bodies, responses, SSE and suspension. See http_server.h for
 * the library's rules this file follows. Every callback here runs on one of MHD's worker
 * threads, except quill__waker_on_event, which runs on the engine thread.
 */
#include "server/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "server/completion.h"

/* Connection timeouts, in seconds of inactivity. A connection that has not yet sent a whole
 * request header, or that idles between keep-alive requests, is closed after
 * IDLE_TIMEOUT_S. Clients which open sockets and send nothing (or half a header) therefore do
 * not hold connection slots for long. Once the header is complete, the request gets
 * REQUEST_TIMEOUT_S for its body and its response (slow uploads, long streams to slow
 * readers). It drops back to the idle timeout when the response is complete. Suspended
 * connections (waiting for the engine) are exempt, as MHD removes them from its timeout
 * lists. */
#define IDLE_TIMEOUT_S 15
#define REQUEST_TIMEOUT_S 300

/* Connections MHD accepts at once: the process's open-file limit less FD_RESERVE (model file,
 * wake-up pipes, log and listening sockets), capped at MAX_CONNECTIONS. MHD's default
 * (MHD_MAX_CONNECTIONS_DEFAULT in its daemon.c: FD_SETSIZE less 4 to 6, about 1020) applies
 * with epoll too, and a thousand idle sockets exhausted it. No per-IP limit is set, because
 * clients behind one proxy or load balancer share an address. */
#define FD_RESERVE 64
#define MIN_CONNECTIONS 16
#define MAX_CONNECTIONS 65536

/* Maximum bytes MHD requests from the SSE reader per call. */
#define STREAM_BLOCK_BYTES 16384

quill_waker *quill__waker_acquire(quill_server *server, struct MHD_Connection *connection) {
    pthread_mutex_lock(&server->mutex);
    quill_waker *waker = server->wakers_free;
    if (waker != NULL) {
        server->wakers_free = waker->next_free;
    } else {
        waker = quill__calloc(1, sizeof(*waker));
        if (waker != NULL) {
            pthread_mutex_init(&waker->mutex, NULL);
            waker->next_all = server->wakers_all;
            server->wakers_all = waker;
        }
    }
    pthread_mutex_unlock(&server->mutex);
    if (waker == NULL) {
        return NULL;
    }

    pthread_mutex_lock(&waker->mutex);
    waker->connection = connection;
    waker->is_suspended = false;
    waker->has_pending = false;
    waker->binding++;
    atomic_store(&waker->is_peer_gone, false);
    pthread_mutex_unlock(&waker->mutex);
    return waker;
}

void quill__waker_release(quill_server *server, quill_waker *waker) {
    if (waker == NULL) {
        return;
    }
    pthread_mutex_lock(&waker->mutex);
    waker->connection = NULL;
    waker->is_suspended = false;
    waker->has_pending = false;
    waker->binding++;
    pthread_mutex_unlock(&waker->mutex);

    pthread_mutex_lock(&server->mutex);
    waker->next_free = server->wakers_free;
    server->wakers_free = waker;
    pthread_mutex_unlock(&server->mutex);
}

void quill__waker_on_event(void *user_data) {
    quill_waker *waker = user_data;
    pthread_mutex_lock(&waker->mutex);
    if (waker->connection != NULL && waker->is_suspended) {
        waker->is_suspended = false;
        MHD_resume_connection(waker->connection);
    } else if (waker->connection != NULL) {
        waker->has_pending = true;
    }
    pthread_mutex_unlock(&waker->mutex);
}

bool quill__waker_suspend(quill_server *server, quill_waker *waker) {
    pthread_mutex_lock(&waker->mutex);
    if (waker->has_pending || atomic_load(&server->is_stopping)) {
        waker->has_pending = false;
        pthread_mutex_unlock(&waker->mutex);
        return false;
    }
    waker->is_suspended = true;
    MHD_suspend_connection(waker->connection);
    pthread_mutex_unlock(&waker->mutex);
    return true;
}

static enum MHD_Result queue_body(quill_exchange *exchange, int http_status,
                                  quill_strbuf *body, const char *content_type,
                                  int retry_after_s) {
    exchange->http_status = http_status;
    size_t n_bytes = body->length;
    char *data = quill__strbuf_take(body);
    if (data == NULL) {
        return MHD_NO;
    }
    struct MHD_Response *response = MHD_create_response_from_buffer_with_free_callback(
        n_bytes, data, quill__free);
    if (response == NULL) {
        quill__free(data);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (retry_after_s > 0) {
        char seconds[16];
        snprintf(seconds, sizeof(seconds), "%d", retry_after_s);
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    if (http_status == 401) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    }
    if (http_status == 405 && exchange->allowed_methods != NULL) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, exchange->allowed_methods);
    }
    enum MHD_Result result = MHD_queue_response(exchange->connection, (unsigned int)http_status,
                                                response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result queue_error(quill_exchange *exchange, const quill_http_error *error) {
    quill_strbuf body;
    quill__strbuf_init(&body);
    quill__http_error_write_json(error, &body);
    exchange->state = QUILL_EXCHANGE_ANSWERED;

    /* Client errors are the client's to fix and are logged only at debug level; 500s are
     * failures an operator must see. */
    char message[600];
    quill__log_quote(error->message, message, (int)sizeof(message));
    const char *endpoint = quill__router_endpoint_name(exchange->endpoint);
    if (error->http_status >= 500 && error->http_status != 503) {
        QUILL_LOG_ERROR("server", "request failed", "endpoint=%s http_status=%d error=%s",
                        endpoint, error->http_status, message);
    } else {
        QUILL_LOG_DEBUG("server", "request rejected",
                        "endpoint=%s http_status=%d code=%s param=%s error=%s", endpoint,
                        error->http_status, error->code, error->param, message);
    }
    return queue_body(exchange, error->http_status, &body, "application/json",
                      error->retry_after_s);
}

/* Copies pending SSE bytes to MHD, pulling engine events when none are pending. */
static ssize_t read_stream(void *cls, uint64_t position, char *buffer, size_t max_bytes) {
    quill_exchange *exchange = cls;
    quill_server *server = exchange->server;
    (void)position;
    for (;;) {
        if (exchange->stream_offset < exchange->stream.length) {
            size_t n_bytes = exchange->stream.length - exchange->stream_offset;
            n_bytes = n_bytes < max_bytes ? n_bytes : max_bytes;
            memcpy(buffer, exchange->stream.data + exchange->stream_offset, n_bytes);
            exchange->stream_offset += n_bytes;

            /* TTFT ends when the chunk carrying the first content is handed to the socket. */
            size_t content_offset =
                quill__completion_pending_content_offset(exchange->completion);
            if (content_offset != SIZE_MAX && content_offset < exchange->stream_offset) {
                quill__completion_mark_content_sent(exchange->completion,
                                                    quill__clock_monotonic_us());
            }
            if (exchange->stream_offset == exchange->stream.length) {
                quill__completion_mark_stream_written(exchange->completion,
                                                      quill__clock_monotonic_us());
                quill__strbuf_clear(&exchange->stream);
                exchange->stream_offset = 0;
            }
            return (ssize_t)n_bytes;
        }
        if (exchange->is_stream_finished) {
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (atomic_load(&server->is_stopping) ||
            atomic_load(&exchange->waker->is_peer_gone)) {
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }

        bool is_finished = false;
        quill_status status = quill__completion_poll(exchange->completion, &exchange->stream,
                                                     &is_finished);
        if (status != QUILL_OK) {
            QUILL_LOG_ERROR("server", "stream failed", "error=\"%s\"", quill_error_message());
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        exchange->is_stream_finished = is_finished;
        if (exchange->stream.length > 0 || is_finished) {
            continue;
        }
        /* While suspended, the watchdog (watchdog.c) notices a client that leaves. */
        if (quill__waker_suspend(server, exchange->waker)) {
            return 0; /* suspended: MHD calls again after the engine resumes us */
        }
    }
}

static enum MHD_Result queue_stream(quill_exchange *exchange) {
    struct MHD_Response *response = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, STREAM_BLOCK_BYTES, read_stream, exchange, NULL);
    if (response == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(response, "X-Accel-Buffering", "no");
    exchange->state = QUILL_EXCHANGE_STREAMING;
    exchange->http_status = MHD_HTTP_OK;
    enum MHD_Result result = MHD_queue_response(exchange->connection, MHD_HTTP_OK, response);
    MHD_destroy_response(response);
    return result;
}

/* Non-streamed generation: reads events until done, suspending between them. No byte goes out
 * before the response, so only the watchdog (watchdog.c) detects a client that leaves meanwhile.
 * The watchdog resumes the connection with is_peer_gone set, and returning MHD_NO here closes
 * it, after which on_completed cancels the generation. */
static enum MHD_Result continue_waiting(quill_exchange *exchange) {
    quill_server *server = exchange->server;
    if (atomic_load(&exchange->waker->is_peer_gone)) {
        return MHD_NO;
    }
    for (;;) {
        bool is_finished = false;
        quill_status status = quill__completion_poll(exchange->completion, &exchange->stream,
                                                     &is_finished);
        if (status != QUILL_OK) {
            quill_http_error error;
            quill__http_error_from_status(&error, status, NULL);
            return queue_error(exchange, &error);
        }
        if (is_finished) {
            int http_status = 0;
            quill_strbuf body;
            quill__strbuf_init(&body);
            quill__completion_write_response(exchange->completion, &http_status, &body);
            exchange->state = QUILL_EXCHANGE_ANSWERED;
            return queue_body(exchange, http_status, &body, "application/json",
                              http_status == 503 ? 1 : 0);
        }
        if (atomic_load(&server->is_stopping)) {
            quill_http_error error;
            quill__http_error_set(&error, 503, NULL, "shutting_down",
                                  "the server is shutting down; retry on another server");
            return queue_error(exchange, &error);
        }
        if (quill__waker_suspend(server, exchange->waker)) {
            return MHD_YES;
        }
    }
}

static enum MHD_Result answer(quill_exchange *exchange) {
    if (exchange->error.http_status != 0) {
        return queue_error(exchange, &exchange->error);
    }
    int http_status = 0;
    quill_strbuf body;
    quill__strbuf_init(&body);
    quill__server_handle(exchange, &http_status, &body);
    if (http_status != 0) {
        exchange->state = QUILL_EXCHANGE_ANSWERED;
        const char *content_type = exchange->content_type != NULL ? exchange->content_type
                                                                  : "application/json";
        return queue_body(exchange, http_status, &body, content_type,
                          http_status == 503 ? 1 : 0);
    }
    quill__strbuf_release(&body);
    if (exchange->error.http_status == 0 && exchange->completion == NULL) {
        quill__http_error_set(&exchange->error, 500, NULL, NULL,
                              "the request produced neither a response nor a generation");
    }
    if (exchange->error.http_status != 0) {
        return queue_error(exchange, &exchange->error);
    }
    if (quill__completion_is_stream(exchange->completion)) {
        return queue_stream(exchange);
    }
    exchange->state = QUILL_EXCHANGE_WAITING;
    return continue_waiting(exchange);
}

static quill_exchange *exchange_create(quill_server *server, struct MHD_Connection *connection,
                                       const char *method, const char *url) {
    quill_exchange *exchange = quill__calloc(1, sizeof(*exchange));
    if (exchange == NULL) {
        return NULL;
    }
    exchange->server = server;
    exchange->connection = connection;
    exchange->arrival_us = quill__clock_monotonic_us();
    exchange->endpoint = quill__router_route(method, url);
    exchange->allowed_methods = quill__router_allowed_methods(url);
    if (exchange->endpoint == QUILL_ENDPOINT_MODEL) {
        exchange->path_model_id = quill__strdup(quill__router_model_id(url));
        if (exchange->path_model_id == NULL) {
            quill__free(exchange);
            return NULL;
        }
    }
    quill__strbuf_init(&exchange->body);
    quill__strbuf_init(&exchange->stream);

    pthread_mutex_lock(&server->mutex);
    server->n_exchanges++;
    server->stats.n_requests++;
    pthread_mutex_unlock(&server->mutex);
    return exchange;
}

/* Marks a body over the limit with 413. Returns true when the client announced a body over
 * the limit and waits for "100 Continue", so the 413 can go out before it sends the body. */
static bool check_declared_length(quill_exchange *exchange) {
    const char *length_text = MHD_lookup_connection_value(
        exchange->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length_text == NULL) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long declared = strtoull(length_text, &end, 10);
    if (errno != 0 || end == length_text || declared <= exchange->server->max_body_bytes) {
        return false;
    }
    quill__http_error_set(&exchange->error, 413, NULL, "request_too_large",
                          "the request body has %llu bytes, more than the limit of %zu; send a "
                          "smaller request or raise --max-body-bytes",
                          declared, exchange->server->max_body_bytes);
    const char *expect = MHD_lookup_connection_value(exchange->connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_EXPECT);
    return expect != NULL && strcasecmp(expect, "100-continue") == 0;
}

static void receive_body(quill_exchange *exchange, const char *data, size_t n_bytes) {
    if (exchange->error.http_status != 0) {
        return; /* NOTE: a body over the limit is read and dropped so that the 413 reaches the
                   client before the connection closes; only the connection timeout bounds it. */
    }
    size_t limit = exchange->server->max_body_bytes;
    if (exchange->body.length + n_bytes > limit) {
        quill__http_error_set(&exchange->error, 413, NULL, "request_too_large",
                              "the request body is more than the limit of %zu bytes; send a "
                              "smaller request or raise --max-body-bytes",
                              limit);
        quill__strbuf_release(&exchange->body);
        quill__strbuf_init(&exchange->body);
        return;
    }
    if (quill__strbuf_append(&exchange->body, data, n_bytes) != QUILL_OK) {
        quill__http_error_set(&exchange->error, 500, NULL, NULL,
                              "out of memory for a request body of %zu bytes",
                              exchange->body.length + n_bytes);
    }
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **request_context) {
    quill_server *server = cls;
    (void)version;

    /* First call: only headers are known. Queueing now would force "Connection: close". */
    if (*request_context == NULL) {
        quill_exchange *exchange = exchange_create(server, connection, method, url);
        if (exchange == NULL) {
            return MHD_NO;
        }
        *request_context = exchange;
        MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned int)REQUEST_TIMEOUT_S);
        if (check_declared_length(exchange)) {
            return queue_error(exchange, &exchange->error);
        }
        return MHD_YES;
    }

    quill_exchange *exchange = *request_context;
    if (*upload_data_size > 0) {
        receive_body(exchange, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }

    switch (exchange->state) {
    case QUILL_EXCHANGE_READING:
        return answer(exchange);
    case QUILL_EXCHANGE_WAITING:
        return continue_waiting(exchange);
    default:
        return MHD_YES;
    }
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **request_context,
                         enum MHD_RequestTerminationCode termination) {
    quill_server *server = cls;
    quill_exchange *exchange = *request_context;
    if (exchange == NULL) {
        return;
    }
    *request_context = NULL;
    if (termination == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        /* A kept-alive connection waits for its next request under the idle timeout. */
        MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned int)IDLE_TIMEOUT_S);
    }

    /* Unbind the waker first, so that engine events stop touching this connection. */
    quill__waker_release(server, exchange->waker);
    bool is_disconnect = termination != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
                         termination != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN;
    if (exchange->completion != NULL && is_disconnect) {
        QUILL_LOG_DEBUG("server", "client gone; cancelling its generation", "termination=%d",
                        (int)termination);
    }

    /* The record needs the tokens that cancelled choices really used, so stop them first. */
    quill__completion_stop(exchange->completion);
    quill__server_metrics_record(exchange, is_disconnect);
    quill__completion_destroy(exchange->completion, is_disconnect);
    quill__strbuf_release(&exchange->body);
    quill__strbuf_release(&exchange->stream);
    quill__free(exchange->user);
    quill__free(exchange->feature);
    quill__free(exchange->path_model_id);
    quill__free(exchange);

    pthread_mutex_lock(&server->mutex);
    server->n_exchanges--;
    if (server->n_exchanges == 0) {
        pthread_cond_broadcast(&server->idle_cond);
    }
    pthread_mutex_unlock(&server->mutex);
}

/* Logs what libmicrohttpd reports. A client that closes a connection before it sent a whole
 * request is the client's business and is logged at debug level, so that many idle or
 * abandoned connections do not flood the log. Everything else is logged as a warning.
 *
 * Requests that MHD rejects while parsing headers (a malformed Content-Length such as -5, a
 * bad request line) never reach on_access, because MHD responds to them with its own HTML page
 * and closes the connection. libmicrohttpd 0.9.75 (Debian 0.9.75-6) writes that response's
 * status line and headers twice for a negative Content-Length. The duplicate comes from its
 * error path, not from Quill, and Quill has no hook to replace that response. */
static void log_mhd_message(void *cls, const char *fmt, va_list args) {
    (void)cls;
    char message[512];
    vsnprintf(message, sizeof(message), fmt, args);
    size_t length = strlen(message);
    while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == '\r')) {
        message[--length] = '\0';
    }
    char quoted[600];
    quill__log_quote(message, quoted, (int)sizeof(quoted));
    /* A client that leaves mid-response causes one of these. The request's own log line
     * records the disconnect, so they are debug lines, not warnings. */
    bool is_client_gone = strncmp(message, "Connection was closed by remote side", 36) == 0 ||
                          strstr(message, "forcibly closed by remote peer") != NULL ||
                          strstr(message, "application error generating response") != NULL;
    if (is_client_gone) {
        QUILL_LOG_DEBUG("server", "libmicrohttpd reported a client that left", "detail=%s",
                        quoted);
    } else {
        QUILL_LOG_WARN("server", "libmicrohttpd reported a problem", "detail=%s", quoted);
    }
}

/* See MAX_CONNECTIONS. */
static unsigned int connection_limit(void) {
    struct rlimit files;
    rlim_t limit = MIN_CONNECTIONS;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY) {
        limit = files.rlim_cur > FD_RESERVE + MIN_CONNECTIONS ? files.rlim_cur - FD_RESERVE
                                                              : MIN_CONNECTIONS;
    } else if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
        limit = MAX_CONNECTIONS;
    }
    return (unsigned int)(limit < MAX_CONNECTIONS ? limit : MAX_CONNECTIONS);
}

quill_status quill__http_server_start(quill_server *server, int n_threads) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = htons(server->port);
    if (inet_pton(AF_INET, server->host, &address.sin_addr) != 1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "server: host '%s' is not an IPv4 address; use e.g. 127.0.0.1 or "
                               "0.0.0.0",
                               server->host);
    }

    /* The logger comes first so that MHD reports option problems through it. With one thread,
     * MHD's own polling thread serves everything; MHD warns about a pool of one. */
    unsigned int max_connections = connection_limit();
    struct MHD_OptionItem options[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)log_mhd_message, server},
        {MHD_OPTION_SOCK_ADDR, 0, &address},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, server},
        {MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)max_connections, NULL},
        {n_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, n_threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    server->daemon = MHD_start_daemon(flags, server->port, NULL, NULL, on_access, server,
                                      MHD_OPTION_ARRAY, options, MHD_OPTION_END);
    if (server->daemon == NULL) {
        return quill_error_set(QUILL_ERR_IO,
                               "server: cannot listen on %s:%u (the port may be in use or need "
                               "privileges); choose another --port",
                               server->host, (unsigned)server->port);
    }

    QUILL_LOG_DEBUG("server", "connection limits", "max_connections=%u idle_timeout_s=%d "
                    "request_timeout_s=%d",
                    max_connections, IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->daemon,
                                                           MHD_DAEMON_INFO_BIND_PORT);
    if (info != NULL && info->port != 0) {
        server->port = info->port;
    }
    return QUILL_OK;
}

void quill__http_server_quiesce(quill_server *server) {
    if (server->daemon != NULL && !atomic_exchange(&server->is_quiesced, true)) {
        MHD_socket listen_socket = MHD_quiesce_daemon(server->daemon);
        if (listen_socket != MHD_INVALID_SOCKET) {
            close(listen_socket);
        }
    }
}

void quill__http_server_stop(quill_server *server) {
    if (server->daemon == NULL) {
        return;
    }
    atomic_store(&server->is_stopping, true);

    /* MHD cannot stop while connections are suspended. */
    pthread_mutex_lock(&server->mutex);
    for (quill_waker *waker = server->wakers_all; waker != NULL; waker = waker->next_all) {
        pthread_mutex_lock(&waker->mutex);
        if (waker->connection != NULL && waker->is_suspended) {
            waker->is_suspended = false;
            MHD_resume_connection(waker->connection);
        }
        pthread_mutex_unlock(&waker->mutex);
    }
    pthread_mutex_unlock(&server->mutex);

    MHD_stop_daemon(server->daemon);
    server->daemon = NULL;
}
