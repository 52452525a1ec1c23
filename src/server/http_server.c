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
#include <time.h>
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

/* Retry-After, in seconds, of the 503 that requests get once the drain has started. */
#define DRAIN_RETRY_AFTER_S 1

/* Set by a handler call just before it returns MHD_NO on purpose: its client left, or the drain
 * already sent a 503 on the request's socket. MHD then logs "Application reported internal
 * error" from the same thread, and log_mhd_message writes that line at debug level, not as a
 * warning. Every handler call clears the flag first, so it never outlives the call that set
 * it. Thread-local because MHD's logger receives no connection to tell the cases apart. */
static _Thread_local bool is_closing_on_purpose;

/* Returns MHD_NO, which closes the connection, and marks the closing as intended. */
static enum MHD_Result close_on_purpose(void) {
    is_closing_on_purpose = true;
    return MHD_NO;
}

/* Fills error with the 503 that requests get once the drain has started. */
static void set_shutting_down(quill_http_error *error) {
    quill__http_error_set(error, 503, NULL, "shutting_down",
                          "the server is shutting down; retry on another server");
    error->retry_after_s = DRAIN_RETRY_AFTER_S;
}

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
    /* Once the drain has started, a kept-alive connection takes no further request. */
    if (atomic_load(&exchange->server->is_quiesced)) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
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

    /* Client errors are the client's to fix and are logged only at debug level, and so are 501
     * (a transfer coding the client chose) and 503 (loading or shutting down). Other 5xx are
     * failures an operator must see. */
    char message[600];
    quill__log_quote(error->message, message, (int)sizeof(message));
    const char *endpoint = quill__router_endpoint_name(exchange->endpoint);
    bool is_server_failure = error->http_status >= 500 && error->http_status != 501 &&
                             error->http_status != 503;
    if (is_server_failure) {
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
    if (atomic_load(&exchange->server->is_quiesced)) {
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
    }
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
        return close_on_purpose();
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

/* The headers that frame a request body, as libmicrohttpd received them. */
typedef struct body_framing {
    const char *malformed_name;    /* first field name with whitespace or a folded line, or NULL */
    int n_content_length;          /* Content-Length fields */
    const char *content_length;    /* the first one's value (MHD uses only it), or NULL */
    bool has_length_mismatch;      /* a later Content-Length differs from the first */
    int n_transfer_encoding;       /* Transfer-Encoding fields */
    const char *transfer_encoding; /* the first one's value (MHD uses only it), or NULL */
} body_framing;

static enum MHD_Result collect_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value) {
    body_framing *framing = cls;
    (void)kind;
    const char *text = value != NULL ? value : "";
    /* libmicrohttpd 0.9.75 keeps whitespace before the colon in the name, and appends a folded
     * continuation line to the name: "Transfer-Encoding: identity\r\n chunked" becomes the
     * name "Transfer-Encodingchunked" with the value "identity". A proxy may read either as a
     * framing field, so both are rejected (RFC 9112 sections 5.1 and 5.2). */
    size_t n_content_length = strlen(MHD_HTTP_HEADER_CONTENT_LENGTH);
    size_t n_transfer_encoding = strlen(MHD_HTTP_HEADER_TRANSFER_ENCODING);
    bool is_malformed =
        strpbrk(key, " \t") != NULL ||
        (strncasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH, n_content_length) == 0 &&
         key[n_content_length] != '\0') ||
        (strncasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING, n_transfer_encoding) == 0 &&
         key[n_transfer_encoding] != '\0');
    if (is_malformed && framing->malformed_name == NULL) {
        framing->malformed_name = key;
    }
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (framing->n_content_length == 0) {
            framing->content_length = text;
        } else if (strcmp(text, framing->content_length) != 0) {
            framing->has_length_mismatch = true;
        }
        framing->n_content_length++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        if (framing->n_transfer_encoding == 0) {
            framing->transfer_encoding = text;
        }
        framing->n_transfer_encoding++;
    }
    return MHD_YES;
}

/* Checks that the body's length is unambiguous, as RFC 9112 section 6 requires, and sets a 400
 * or 501 otherwise. libmicrohttpd 0.9.75 honours only the first Content-Length, lets a
 * Transfer-Encoding override any Content-Length, and reads a body whose transfer coding is not
 * exactly "chunked" until the client closes the connection. A proxy in front that frames the
 * body differently could then parse a second request where Quill reads a body (request
 * smuggling), and a client waiting for a response would hang. Sets *has_body when a body
 * follows the headers. Returns true when an error was set. */
static bool check_framing(quill_exchange *exchange, bool *has_body) {
    body_framing framing;
    memset(&framing, 0, sizeof(framing));
    *has_body = false;
    MHD_get_connection_values(exchange->connection, MHD_HEADER_KIND, collect_framing, &framing);

    if (framing.malformed_name != NULL) {
        quill__http_error_set(&exchange->error, 400, NULL, "invalid_framing",
                              "the request has the malformed header name '%.64s' (whitespace "
                              "before the colon, or a header folded onto a second line); send "
                              "each header on one line as 'Name: value'",
                              framing.malformed_name);
        return true;
    }

    if (framing.n_transfer_encoding > 0 && framing.n_content_length > 0) {
        quill__http_error_set(&exchange->error, 400, NULL, "invalid_framing",
                              "the request has both Content-Length and Transfer-Encoding, so "
                              "its body length is ambiguous; send only one of them");
        return true;
    }
    if (framing.has_length_mismatch) {
        quill__http_error_set(&exchange->error, 400, NULL, "invalid_framing",
                              "the request has %d Content-Length headers with different "
                              "values, so its body length is ambiguous; send one",
                              framing.n_content_length);
        return true;
    }
    if (framing.n_transfer_encoding > 0) {
        bool is_chunked = framing.n_transfer_encoding == 1 &&
                          strcasecmp(framing.transfer_encoding, "chunked") == 0;
        if (!is_chunked) {
            quill__http_error_set(&exchange->error, 501, NULL, "unsupported_transfer_encoding",
                                  "the request's Transfer-Encoding is '%.64s'%s, which this "
                                  "server does not support; send the body with Content-Length "
                                  "or plain chunked encoding",
                                  framing.transfer_encoding,
                                  framing.n_transfer_encoding > 1 ? " (and more headers)" : "");
            return true;
        }
        *has_body = true;
        exchange->is_chunked_upload = true;
        return false;
    }
    /* MHD has already rejected a Content-Length that is not a decimal number. */
    *has_body = framing.content_length != NULL &&
                strspn(framing.content_length, "0") != strlen(framing.content_length);
    return false;
}

/* Marks a body over the limit with 413 when the client announced its length. */
static void check_declared_length(quill_exchange *exchange) {
    const char *length_text = MHD_lookup_connection_value(
        exchange->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length_text == NULL) {
        return;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long declared = strtoull(length_text, &end, 10);
    if (errno != 0 || end == length_text || declared <= exchange->server->max_body_bytes) {
        return;
    }
    quill__http_error_set(&exchange->error, 413, NULL, "request_too_large",
                          "the request body has %llu bytes, more than the limit of %zu; send a "
                          "smaller request or raise --max-body-bytes",
                          declared, exchange->server->max_body_bytes);
}

/* Returns true when the client waits for "100 Continue" before it sends the body. */
static bool expects_continue(struct MHD_Connection *connection) {
    const char *expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_EXPECT);
    return expect != NULL && strcasecmp(expect, "100-continue") == 0;
}

/* Links exchange into server->uploads. Caller holds server->mutex. */
static void link_upload(quill_server *server, quill_exchange *exchange) {
    exchange->prev_upload = NULL;
    exchange->next_upload = server->uploads;
    if (server->uploads != NULL) {
        server->uploads->prev_upload = exchange;
    }
    server->uploads = exchange;
    exchange->is_upload_listed = true;
}

/* Unlinks exchange from server->uploads. Caller holds server->mutex. */
static void unlink_upload(quill_server *server, quill_exchange *exchange) {
    if (exchange->prev_upload != NULL) {
        exchange->prev_upload->next_upload = exchange->next_upload;
    } else {
        server->uploads = exchange->next_upload;
    }
    if (exchange->next_upload != NULL) {
        exchange->next_upload->prev_upload = exchange->prev_upload;
    }
    exchange->next_upload = NULL;
    exchange->prev_upload = NULL;
    exchange->is_upload_listed = false;
}

/* Admits the request unless the drain has started, and lists it in server->uploads while its
 * body arrives, so that a drain starting meanwhile can respond to it. The check and the link
 * share one hold of server->mutex, so either the drain finds the link or the request finds the
 * drain started. Returns false when the drain has started. */
static bool admit_request(quill_exchange *exchange, bool has_body) {
    quill_server *server = exchange->server;
    bool is_admitted = false;
    pthread_mutex_lock(&server->mutex);
    if (!atomic_load(&server->is_quiesced)) {
        is_admitted = true;
        if (has_body) {
            link_upload(server, exchange);
        }
    }
    pthread_mutex_unlock(&server->mutex);
    return is_admitted;
}

/* Returns true when the drain has already sent a 503 on the request's socket. */
static bool is_drained(quill_exchange *exchange) {
    quill_server *server = exchange->server;
    pthread_mutex_lock(&server->mutex);
    bool drained = exchange->is_drained;
    pthread_mutex_unlock(&server->mutex);
    return drained;
}

/* Ends the upload phase once the whole body is in: unlinks the exchange from server->uploads,
 * so that the drain leaves it to finish. Returns false when the drain responded first. */
static bool finish_upload(quill_exchange *exchange) {
    quill_server *server = exchange->server;
    pthread_mutex_lock(&server->mutex);
    bool drained = exchange->is_drained;
    if (exchange->is_upload_listed) {
        unlink_upload(server, exchange);
    }
    pthread_mutex_unlock(&server->mutex);
    return !drained;
}

/* The first handler call, when only the request line and headers are known. A response queued
 * now goes out before "100 Continue" and makes MHD close the connection after it, without
 * reading the body. That is right for errors, but a successful response queued now would force
 * "Connection: close", so requests that pass get their response after their body. */
static enum MHD_Result start_exchange(quill_server *server, struct MHD_Connection *connection,
                                      const char *method, const char *url,
                                      void **request_context) {
    quill_exchange *exchange = exchange_create(server, connection, method, url);
    if (exchange == NULL) {
        return MHD_NO;
    }
    *request_context = exchange;
    MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned int)REQUEST_TIMEOUT_S);

    /* An ambiguous body is never read: after the error the connection closes, so none of its
     * bytes can be taken for a next request. */
    bool has_body = false;
    if (check_framing(exchange, &has_body)) {
        return queue_error(exchange, &exchange->error);
    }

    /* Errors that do not depend on the body go out before "100 Continue", so the client does
     * not upload a body only to get an error. Without Expect, the body is read and dropped
     * (see receive_body) and the error goes out after it, on a connection that stays open. */
    check_declared_length(exchange);
    if (exchange->error.http_status == 0) {
        (void)quill__server_check_headers(exchange);
    }
    if (exchange->error.http_status != 0 && expects_continue(connection)) {
        return queue_error(exchange, &exchange->error);
    }

    if (!admit_request(exchange, has_body)) {
        set_shutting_down(&exchange->error);
        return queue_error(exchange, &exchange->error);
    }
    return MHD_YES;
}

static void receive_body(quill_exchange *exchange, const char *data, size_t n_bytes) {
    if (exchange->error.http_status != 0) {
        return; /* NOTE: a refused body is read and dropped so that the error reaches the client
                   before the connection closes; only the connection timeout bounds it. */
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
    is_closing_on_purpose = false;

    if (*request_context == NULL) {
        return start_exchange(server, connection, method, url, request_context);
    }

    /* Once the drain has sent a 503 on the request's socket, MHD must send nothing more, so the
     * connection closes. */
    quill_exchange *exchange = *request_context;
    if (*upload_data_size > 0) {
        if (is_drained(exchange)) {
            return close_on_purpose();
        }
        receive_body(exchange, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }

    switch (exchange->state) {
    case QUILL_EXCHANGE_READING:
        if (!finish_upload(exchange)) {
            return close_on_purpose();
        }
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

    /* Unbind the waker first, so that engine events stop touching this connection. Unlink an
     * upload that ends early (client gone, timeout) before MHD closes its socket, which the
     * drain may otherwise still write to. */
    quill__waker_release(server, exchange->waker);
    pthread_mutex_lock(&server->mutex);
    if (exchange->is_upload_listed) {
        unlink_upload(server, exchange);
    }
    bool was_drained = exchange->is_drained;
    pthread_mutex_unlock(&server->mutex);

    /* A drained request ends on MHD's side as a client abort, because the drain shut its
     * socket down. It is recorded as a 503, the shutdown's refusal, also for a chunked upload,
     * which the drain closes without sending one. */
    bool is_disconnect = termination != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
                         termination != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN && !was_drained;
    if (was_drained) {
        exchange->http_status = 503;
    }
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
 * abandoned connections do not flood the log. So is the closing that a handler call requests
 * on purpose (see is_closing_on_purpose). Everything else is logged as a warning.
 *
 * Some requests never reach on_access: a bad request line, a Content-Length that is not a
 * decimal number (such as -5), or one above 2^64 - 1. MHD responds to them while it parses the
 * headers, with its own HTML page (400, or 413 for the overflow), and closes the connection.
 * libmicrohttpd 0.9.75 (Debian 0.9.75-6) writes that response's status line and headers twice
 * for both Content-Length cases. The duplicate comes from its error path, not
 * from Quill, and Quill has no hook that runs between header parsing and that response. */
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
    const char *closing_message = "Application reported internal error";
    bool is_closing_intended = is_closing_on_purpose &&
                               strncmp(message, closing_message, strlen(closing_message)) == 0;
    is_closing_on_purpose = false;
    bool is_client_gone = strncmp(message, "Connection was closed by remote side", 36) == 0 ||
                          strstr(message, "forcibly closed by remote peer") != NULL ||
                          strstr(message, "application error generating response") != NULL ||
                          is_closing_intended;
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

/* Writes the whole 503 response that the drain sends on sockets itself into response. */
static quill_status write_drain_response(quill_strbuf *response) {
    quill_http_error error;
    set_shutting_down(&error);
    quill_strbuf body;
    quill__strbuf_init(&body);
    quill_status status = quill__http_error_write_json(&error, &body);

    /* Date is required from servers with a clock (RFC 9110 section 6.6.1). */
    char date[64] = "";
    time_t now = time(NULL);
    struct tm utc;
    if (gmtime_r(&now, &utc) != NULL) {
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &utc);
    }
    if (status == QUILL_OK) {
        status = quill__strbuf_appendf(response,
                                       "HTTP/1.1 503 Service Unavailable\r\nDate: %s\r\n"
                                       "Connection: close\r\nContent-Type: application/json\r\n"
                                       "Retry-After: %d\r\nContent-Length: %zu\r\n\r\n",
                                       date, DRAIN_RETRY_AFTER_S, body.length);
    }
    if (status == QUILL_OK) {
        status = quill__strbuf_append(response, body.data, body.length);
    }
    quill__strbuf_release(&body);
    return status;
}

/* Sends a 503 to every request whose body is still arriving with a Content-Length and shuts
 * its socket down. Chunked uploads are only shut down.
 *
 * libmicrohttpd 0.9.75 queues a response only before a request's body or after all of it, and
 * calls the handler during the body only when bytes arrive. A client that stalls mid-body would
 * otherwise hold the drain until REQUEST_TIMEOUT_S. So the drain writes the response on the
 * socket itself. During a Content-Length body MHD writes nothing but "100 Continue" right after
 * the headers. In the short window before MHD sends it, the 503 can go out first, and the client
 * then finds the 100 after a response that closes the connection, which it ignores. During a
 * chunked body MHD writes its own 400 or 413 when the chunk framing is invalid, which could
 * land next to the 503, so those clients see the connection close without a response.
 *
 * Shutting down the reading side makes MHD read end-of-file, so it closes the connection (with
 * FIN, after any 503) and calls on_completed. server->mutex is held across the non-blocking send
 * and the shutdown, so on_completed cannot unlink the exchange, and MHD cannot close the socket,
 * in between. */
static void drain_uploads(quill_server *server) {
    quill_strbuf response;
    quill__strbuf_init(&response);
    if (write_drain_response(&response) != QUILL_OK) {
        quill__strbuf_release(&response);
        quill__strbuf_init(&response); /* out of memory: shut the sockets down without a 503 */
    }

    int64_t n_drained = 0;
    pthread_mutex_lock(&server->mutex);
    while (server->uploads != NULL) {
        quill_exchange *exchange = server->uploads;
        unlink_upload(server, exchange);
        exchange->is_drained = true;
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(
            exchange->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info != NULL) {
            /* NOTE: a client whose receive window is full gets only part of the 503, or none,
               and one still sending its body may get a reset before it reads the 503. */
            if (response.length > 0 && !exchange->is_chunked_upload) {
                (void)send(info->connect_fd, response.data, response.length,
                           MSG_DONTWAIT | MSG_NOSIGNAL);
            }
            shutdown(info->connect_fd, SHUT_RD);
        }
        n_drained++;
    }
    pthread_mutex_unlock(&server->mutex);
    quill__strbuf_release(&response);
    if (n_drained > 0) {
        QUILL_LOG_INFO("server", "drain sent 503 to requests still uploading",
                       "n_requests=%lld", (long long)n_drained);
    }
}

void quill__http_server_quiesce(quill_server *server) {
    if (server->daemon != NULL && !atomic_exchange(&server->is_quiesced, true)) {
        MHD_socket listen_socket = MHD_quiesce_daemon(server->daemon);
        if (listen_socket != MHD_INVALID_SOCKET) {
            close(listen_socket);
        }
        drain_uploads(server);
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
