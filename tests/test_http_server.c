/*
 * Tests of the HTTP transport (http_server.c) at the byte level. They cover request framing
 * (Transfer-Encoding and Content-Length), errors sent before "100 Continue", the drain's
 * handling of uploads in progress and of kept-alive connections, and the log level of
 * libmicrohttpd's line for a client that left. A tiny random model is written to the scratch
 * folder and served on 127.0.0.1 port 0. Raw sockets send what curl cannot; libcurl checks the
 * normal "Expect: 100-continue" path. Where a request must still be waiting in the engine, a
 * gate request blocks the engine thread in its event callback until the test opens it.
 */
#include "test_support.h"
#include "test_http.h"
#include "engine_gate.h"
#include "tiny_model.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "base/log.h"
#include "quill/engine.h"
#include "quill/model.h"
#include "quill/server.h"
#include "server/server_internal.h"

#define API_KEY "test-key"
#define MAX_BODY_BYTES 65536

/* Upper bound on any one wait for the server, in seconds. Tests never assert on durations. A
 * server that does not respond fails the test after this long instead of hanging it. */
#define RECEIVE_TIMEOUT_S 10

/* A completion request small enough for the tiny model's context. */
#define SMALL_BODY "{\"prompt\":\"hi\",\"max_tokens\":2}"

typedef struct fixture {
    char *model_path;
    quill_model *model;
    quill_engine *engine;
    quill_server *server;
} fixture;

static fixture the_fixture;

static quill_server_params server_params(void) {
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 2;
    params.api_key = API_KEY;
    params.max_body_bytes = MAX_BODY_BYTES;
    return params;
}

/* A second server on the fixture's engine, for tests that drain it. */
static quill_server *create_server(void) {
    quill_server_params params = server_params();
    quill_server *server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);
    return server;
}

/* The gates of hold_engine, released in the teardown after the engine. */
enum { MAX_ENGINE_HOLDS = 4 };
static quill_test_gate engine_gates[MAX_ENGINE_HOLDS];
static int n_engine_holds;

static int group_setup(void **state) {
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    quill_test_tiny_model_params model_params = quill_test_tiny_model_params_default();
    if (quill_test_load_tiny_model("http-server-tiny.gguf", &model_params, &the_fixture.model_path,
                                   &the_fixture.model) != 0) {
        return -1;
    }
    quill_engine_params engine_params = quill_engine_params_default();
    engine_params.n_threads = 1;
    engine_params.n_parallel = 4;
    engine_params.queue_limit = 16;
    if (quill_engine_create(the_fixture.model, &engine_params, &the_fixture.engine) != QUILL_OK) {
        return -1;
    }
    quill_server_params params = server_params();
    if (quill_server_create(&params, &the_fixture.server) != QUILL_OK) {
        return -1;
    }
    return quill_server_set_engine(the_fixture.server, the_fixture.engine) == QUILL_OK ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    quill_server_destroy(the_fixture.server);
    quill_engine_destroy(the_fixture.engine);
    for (int i = 0; i < n_engine_holds; i++) {
        quill_test_gate_release(&engine_gates[i]);
    }
    quill_model_destroy(the_fixture.model);
    if (the_fixture.model_path != NULL) {
        remove(the_fixture.model_path);
    }
    free(the_fixture.model_path);
    curl_global_cleanup();
    return 0;
}

static uint16_t fixture_port(void) {
    return quill_server_port(the_fixture.server);
}

static void pause_briefly(void) {
    struct timespec pause = {0, 5 * 1000 * 1000};
    nanosleep(&pause, NULL);
}

/* Raw sockets. */

static int connect_raw(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval timeout = {RECEIVE_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    quill_test_loopback_connect(fd, port);
    return fd;
}

/* Sends all bytes in one call, so that the server reads the request in one piece. */
static void send_text(int fd, const char *text) {
    assert_int_equal(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* Reads until the server closes the connection. Returns true when it did, and false when
 * RECEIVE_TIMEOUT_S passed first or the buffer filled up. */
static bool read_until_close(int fd, char *response, size_t response_bytes) {
    size_t n_received = strlen(response);
    bool is_closed = false;
    while (n_received < response_bytes - 1) {
        ssize_t n_read = recv(fd, response + n_received, response_bytes - 1 - n_received, 0);
        if (n_read <= 0) {
            is_closed = n_read == 0;
            break;
        }
        n_received += (size_t)n_read;
    }
    response[n_received] = '\0';
    return is_closed;
}

/* Reads until response holds a whole header block ending in an empty line. */
static void read_headers(int fd, char *response, size_t response_bytes) {
    size_t n_received = strlen(response);
    while (strstr(response, "\r\n\r\n") == NULL) {
        assert_true(n_received < response_bytes - 1);
        ssize_t n_read = recv(fd, response + n_received, response_bytes - 1 - n_received, 0);
        assert_true(n_read > 0);
        n_received += (size_t)n_read;
        response[n_received] = '\0';
    }
}

/* Reads one response whose length its Content-Length gives, leaving the connection open. */
static void read_sized_response(int fd, char *response, size_t response_bytes) {
    response[0] = '\0';
    read_headers(fd, response, response_bytes);
    const char *length_field = strstr(response, "Content-Length: ");
    assert_non_null(length_field);
    size_t n_body_bytes = (size_t)strtoul(length_field + strlen("Content-Length: "), NULL, 10);
    size_t n_header_bytes = (size_t)(strstr(response, "\r\n\r\n") + 4 - response);
    assert_true(n_header_bytes + n_body_bytes < response_bytes);
    size_t n_received = strlen(response);
    while (n_received < n_header_bytes + n_body_bytes) {
        ssize_t n_read =
            recv(fd, response + n_received, n_header_bytes + n_body_bytes - n_received, 0);
        assert_true(n_read > 0);
        n_received += (size_t)n_read;
    }
    response[n_received] = '\0';
}

/* Sends a whole request on a new connection and reads the response until the server closes
 * the connection. Returns false when it did not close it within RECEIVE_TIMEOUT_S. */
static bool raw_exchange(uint16_t port, const char *request, char *response,
                         size_t response_bytes) {
    int fd = connect_raw(port);
    send_text(fd, request);
    response[0] = '\0';
    bool is_closed = read_until_close(fd, response, response_bytes);
    close(fd);
    return is_closed;
}

static bool starts_with(const char *text, const char *prefix) {
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

/* Checks that response is one HTTP response with this status line start and an OpenAI error
 * body with this code. Returns the parsed body, which the caller puts. */
static struct json_object *assert_error_response(const char *response, const char *status_line,
                                                 const char *code) {
    assert_true(starts_with(response, status_line));
    const char *body = strstr(response, "\r\n\r\n");
    assert_non_null(body);
    assert_null(strstr(body, "HTTP/1.1 "));
    struct json_object *root = json_tokener_parse(body + 4);
    assert_non_null(root);
    struct json_object *error = NULL;
    assert_true(json_object_object_get_ex(root, "error", &error));
    struct json_object *error_code = NULL;
    assert_true(json_object_object_get_ex(error, "code", &error_code));
    assert_string_equal(json_object_get_string(error_code), code);
    return root;
}

static const char *error_message(struct json_object *root) {
    struct json_object *error = NULL;
    struct json_object *message = NULL;
    assert_true(json_object_object_get_ex(root, "error", &error));
    assert_true(json_object_object_get_ex(error, "message", &message));
    return json_object_get_string(message);
}

/* Request framing. */

static void test_framing_unknown_transfer_coding_gets_501(void **state) {
    (void)state;
    /* libmicrohttpd would read such a body until the client closes the connection. */
    const char *requests[] = {
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " API_KEY "\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n"
        "Connection: close\r\n\r\n5\r\n{\"pro\r\n0\r\n\r\n",
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " API_KEY "\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
        "5\r\n{\"pro\r\n0\r\n\r\n",
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " API_KEY "\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: gzip\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pro\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
        char response[4096];
        assert_true(raw_exchange(fixture_port(), requests[i], response, sizeof(response)));
        struct json_object *root =
            assert_error_response(response, "HTTP/1.1 501", "unsupported_transfer_encoding");
        assert_non_null(strstr(error_message(root), "Content-Length or plain chunked"));
        json_object_put(root);
    }

    /* The message names the coding the client sent. */
    char response[4096];
    assert_true(raw_exchange(fixture_port(), requests[0], response, sizeof(response)));
    struct json_object *root =
        assert_error_response(response, "HTTP/1.1 501", "unsupported_transfer_encoding");
    assert_non_null(strstr(error_message(root), "'gzip, chunked'"));
    json_object_put(root);
}

static void test_framing_plain_chunked_accepted(void **state) {
    (void)state;
    char response[8192];
    assert_true(raw_exchange(fixture_port(),
                             "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                             "Authorization: Bearer " API_KEY "\r\n"
                             "Content-Type: application/json\r\nTransfer-Encoding: Chunked\r\n"
                             "Connection: close\r\n\r\n1e\r\n" SMALL_BODY "\r\n0\r\n\r\n",
                             response, sizeof(response)));
    assert_true(starts_with(response, "HTTP/1.1 200"));
}

static void test_framing_conflicting_lengths_get_400(void **state) {
    (void)state;
    quill_server_stats before;
    quill_server_get_stats(the_fixture.server, &before);

    /* libmicrohttpd would use the first length, 30, and run the request. */
    char response[4096];
    assert_true(raw_exchange(fixture_port(),
                             "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                             "Authorization: Bearer " API_KEY "\r\n"
                             "Content-Type: application/json\r\nContent-Length: 30\r\n"
                             "Content-Length: 5\r\n\r\n" SMALL_BODY,
                             response, sizeof(response)));
    struct json_object *root = assert_error_response(response, "HTTP/1.1 400", "invalid_framing");
    assert_non_null(strstr(error_message(root), "2 Content-Length headers"));
    json_object_put(root);

    /* Content-Length beside Transfer-Encoding: the server must use neither. */
    assert_true(raw_exchange(fixture_port(),
                             "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                             "Authorization: Bearer " API_KEY "\r\n"
                             "Content-Type: application/json\r\nContent-Length: 5\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n1e\r\n" SMALL_BODY "\r\n0\r\n\r\n",
                             response, sizeof(response)));
    root = assert_error_response(response, "HTTP/1.1 400", "invalid_framing");
    assert_non_null(strstr(error_message(root), "both Content-Length and Transfer-Encoding"));
    json_object_put(root);

    quill_server_stats after;
    quill_server_get_stats(the_fixture.server, &after);
    assert_int_equal(after.n_generations_started, before.n_generations_started);
}

/* Header names that libmicrohttpd garbles, whitespace before the colon or a folded second line,
 * could hide a framing field from the checks while a proxy reads it. Each gets one 400. */
static void test_framing_malformed_names_get_400(void **state) {
    (void)state;
    static const char *const framings[] = {
        "Content-Length: 4\r\nTransfer-Encoding: identity\r\n chunked\r\n",
        "Transfer-Encoding : chunked\r\nContent-Length: 4\r\n",
        "Content-Length\t: 4\r\n",
        "Content-Length:\r\n 4\r\n",
    };
    quill_server_stats before;
    quill_server_get_stats(the_fixture.server, &before);
    for (size_t i = 0; i < sizeof(framings) / sizeof(framings[0]); i++) {
        char request[512];
        snprintf(request, sizeof(request),
                 "POST /tokenize HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " API_KEY "\r\n"
                 "Content-Type: application/json\r\n%s\r\n4\r\nGET / HTTP/1.1\r\n\r\n",
                 framings[i]);
        char response[4096];
        assert_true(raw_exchange(fixture_port(), request, response, sizeof(response)));
        struct json_object *root =
            assert_error_response(response, "HTTP/1.1 400", "invalid_framing");
        assert_non_null(strstr(error_message(root), "malformed header name"));
        json_object_put(root);
        /* Nothing after the 400: the bytes that follow were not read as a request. */
        assert_null(strstr(response + 1, "HTTP/1.1 "));
    }
    quill_server_stats after;
    quill_server_get_stats(the_fixture.server, &after);
    assert_int_equal(after.n_generations_started, before.n_generations_started);
}

static void test_framing_repeated_equal_length_accepted(void **state) {
    (void)state;
    char response[8192];
    assert_true(raw_exchange(fixture_port(),
                             "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                             "Authorization: Bearer " API_KEY "\r\n"
                             "Content-Type: application/json\r\nContent-Length: 30\r\n"
                             "Content-Length: 30\r\nConnection: close\r\n\r\n" SMALL_BODY,
                             response, sizeof(response)));
    assert_true(starts_with(response, "HTTP/1.1 200"));
}

/* libmicrohttpd rejects a Content-Length above 2^64 - 1 itself, while it parses the headers, so
 * no Quill handler runs. Its 0.9.75 error path writes the status line and headers twice (see
 * http_server.c), so only the first status line and the closed connection are checked. */
static void test_framing_overflowing_length_rejected_by_library(void **state) {
    (void)state;
    quill_server_stats before;
    quill_server_get_stats(the_fixture.server, &before);
    char response[8192];
    assert_true(raw_exchange(fixture_port(),
                             "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                             "Authorization: Bearer " API_KEY "\r\n"
                             "Content-Type: application/json\r\n"
                             "Content-Length: 18446744073709551616\r\n\r\n{}",
                             response, sizeof(response)));
    assert_true(starts_with(response, "HTTP/1.1 413"));
    quill_server_stats after;
    quill_server_get_stats(the_fixture.server, &after);
    assert_int_equal(after.n_requests, before.n_requests);
}

/* Expect: 100-continue. */

/* Sends headers announcing a 30-byte body with Expect and returns the connection after the
 * first header block arrived in response. */
static int send_expecting(const char *method, const char *path, const char *content_type,
                          const char *api_key, char *response, size_t response_bytes) {
    char request[1024];
    int n_request = snprintf(request, sizeof(request),
                             "%s %s HTTP/1.1\r\nHost: x\r\n%s%s%sContent-Type: %s\r\n"
                             "Content-Length: %zu\r\nExpect: 100-continue\r\n\r\n",
                             method, path, api_key != NULL ? "Authorization: Bearer " : "",
                             api_key != NULL ? api_key : "", api_key != NULL ? "\r\n" : "",
                             content_type, strlen(SMALL_BODY));
    assert_true(n_request > 0 && (size_t)n_request < sizeof(request));
    int fd = connect_raw(fixture_port());
    send_text(fd, request);
    response[0] = '\0';
    read_headers(fd, response, response_bytes);
    return fd;
}

static void test_expect_errors_precede_continue(void **state) {
    (void)state;
    typedef struct error_case {
        const char *method;
        const char *path;
        const char *content_type;
        const char *api_key;
        const char *status_line;
        const char *code;
    } error_case;
    const error_case error_cases[] = {
        {"POST", "/v1/completions", "application/json", NULL, "HTTP/1.1 401", "invalid_api_key"},
        {"POST", "/v1/completions", "application/json", "wrong", "HTTP/1.1 401", "invalid_api_key"},
        {"POST", "/v1/completions", "text/plain", API_KEY, "HTTP/1.1 415", "invalid_content_type"},
        {"POST", "/v1/no-such-path", "application/json", API_KEY, "HTTP/1.1 404", "not_found"},
        {"POST", "/v1/models", "application/json", API_KEY, "HTTP/1.1 405", "method_not_allowed"},
    };
    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        const error_case *expected = &error_cases[i];
        char response[4096];
        int fd = send_expecting(expected->method, expected->path, expected->content_type,
                                expected->api_key, response, sizeof(response));
        /* The error is the first response: the client never sends its body. */
        assert_false(starts_with(response, "HTTP/1.1 100"));
        assert_true(read_until_close(fd, response, sizeof(response)));
        close(fd);
        struct json_object *root =
            assert_error_response(response, expected->status_line, expected->code);
        json_object_put(root);
    }
}

static void test_expect_valid_request_gets_continue(void **state) {
    (void)state;
    char response[8192];
    int fd = send_expecting("POST", "/v1/completions", "application/json", API_KEY, response,
                            sizeof(response));
    assert_true(starts_with(response, "HTTP/1.1 100 Continue\r\n\r\n"));
    send_text(fd, SMALL_BODY);
    read_sized_response(fd, response, sizeof(response));
    close(fd);
    assert_true(starts_with(response, "HTTP/1.1 200"));
    assert_non_null(strstr(response, "\"choices\""));
}

/* libcurl's reply to a POST that sends "Expect: 100-continue". */
typedef struct curl_reply {
    long status;
    curl_off_t n_uploaded_bytes;
    char body[8192];
    size_t n_body_bytes;
} curl_reply;

static size_t collect_curl_body(char *data, size_t size, size_t count, void *user_data) {
    curl_reply *reply = user_data;
    size_t n_bytes = size * count;
    size_t n_room = sizeof(reply->body) - 1 - reply->n_body_bytes;
    size_t n_copied = n_bytes < n_room ? n_bytes : n_room;
    memcpy(reply->body + reply->n_body_bytes, data, n_copied);
    reply->n_body_bytes += n_copied;
    reply->body[reply->n_body_bytes] = '\0';
    return n_bytes;
}

static void post_expecting_with_curl(const char *api_key, const char *body, curl_reply *reply) {
    memset(reply, 0, sizeof(*reply));
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/completions", (unsigned)fixture_port());
    char authorization[128];
    snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", api_key);
    struct curl_slist *headers = NULL;
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, authorization);
    headers = curl_slist_append(headers, "Expect: 100-continue");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    /* Wait for the server's response to Expect instead of sending the body after curl's
     * default second, so that the test checks what the server sends. */
    curl_easy_setopt(curl, CURLOPT_EXPECT_100_TIMEOUT_MS, (long)RECEIVE_TIMEOUT_S * 1000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 3L * RECEIVE_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_curl_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, reply);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
    curl_easy_getinfo(curl, CURLINFO_SIZE_UPLOAD_T, &reply->n_uploaded_bytes);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
}

static void test_expect_with_libcurl(void **state) {
    (void)state;
    /* A 2 KiB body, padded with JSON whitespace. */
    char body[2048];
    memset(body, ' ', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    memcpy(body, SMALL_BODY, strlen(SMALL_BODY));

    curl_reply reply;
    post_expecting_with_curl(API_KEY, body, &reply);
    assert_int_equal(reply.status, 200);
    assert_int_equal(reply.n_uploaded_bytes, (curl_off_t)strlen(body));
    assert_non_null(strstr(reply.body, "\"choices\""));

    post_expecting_with_curl("wrong", body, &reply);
    assert_int_equal(reply.status, 401);
    assert_int_equal(reply.n_uploaded_bytes, 0);
    assert_non_null(strstr(reply.body, "invalid_api_key"));
}

/* Holds of the fixture's engine: a request whose first event callback blocks the engine thread
 * at a gate until the test opens it, so that requests sent meanwhile wait in the engine's queue.
 * Each hold has its own gate, released in the teardown after the engine, because the holding
 * request's later callbacks still pass through its gate after the test opens it. */
typedef struct engine_hold {
    quill_test_gate *gate;
    quill_request *request;
} engine_hold;

static void hold_engine(engine_hold *hold) {
    assert_true(n_engine_holds < MAX_ENGINE_HOLDS);
    hold->gate = &engine_gates[n_engine_holds++];
    quill_test_gate_init(hold->gate);
    int32_t prompt[] = {1, QUILL_TEST_TINY_FIRST_PIECE};
    quill_request_params params = quill_request_params_default();
    params.prompt_tokens = prompt;
    params.n_prompt_tokens = 2;
    params.max_tokens = 2;
    hold->request = quill_test_submit_holding(the_fixture.engine, &params, hold->gate);
}

static void release_engine(engine_hold *hold) {
    quill_test_gate_open(hold->gate);
    quill_request_destroy(hold->request);
}

/* Sends a non-streamed completion on a new connection and returns once the server has
 * submitted it to the engine. */
static int send_generation(quill_server *server) {
    quill_server_stats before;
    quill_server_get_stats(server, &before);
    int fd = connect_raw(quill_server_port(server));
    send_text(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                  "Authorization: Bearer " API_KEY "\r\nContent-Type: application/json\r\n"
                  "Content-Length: 30\r\n\r\n" SMALL_BODY);
    for (int i = 0; i < RECEIVE_TIMEOUT_S * 200; i++) {
        quill_server_stats stats;
        quill_server_get_stats(server, &stats);
        if (stats.n_generations_started > before.n_generations_started) {
            return fd;
        }
        pause_briefly();
    }
    fail_msg("the server did not submit the request within %d s", RECEIVE_TIMEOUT_S);
    return -1;
}

/* Drain. */

typedef struct drain_call {
    quill_server *server;
    quill_status status;
} drain_call;

static void *run_drain(void *argument) {
    drain_call *call = argument;
    call->status = quill_server_drain(call->server, 1000L * RECEIVE_TIMEOUT_S);
    return NULL;
}

static void wait_for_requests(quill_server *server, int64_t n_requests) {
    for (int i = 0; i < RECEIVE_TIMEOUT_S * 200; i++) {
        quill_server_stats stats;
        quill_server_get_stats(server, &stats);
        if (stats.n_requests >= n_requests) {
            return;
        }
        pause_briefly();
    }
    fail_msg("the server did not see %lld requests within %d s", (long long)n_requests,
             RECEIVE_TIMEOUT_S);
}

/* Sends the request head and the start of its body to a new server, which then waits for the
 * rest, drains the server, and reads what the client gets until the connection closes. */
static void drain_during_upload(const char *framing_and_start, char *response,
                                size_t response_bytes) {
    quill_server *server = create_server();
    int fd = connect_raw(quill_server_port(server));
    char request[512];
    snprintf(request, sizeof(request),
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " API_KEY
             "\r\nContent-Type: application/json\r\n%s",
             framing_and_start);
    send_text(fd, request);
    wait_for_requests(server, 1);

    drain_call call = {server, QUILL_ERR_IO};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, run_drain, &call), 0);
    response[0] = '\0';
    assert_true(read_until_close(fd, response, response_bytes));
    close(fd);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(call.status, QUILL_OK);
    quill_server_destroy(server);
}

/* The client announces 40 bytes, sends 10 and stalls: the drain sends it a 503. */
static void test_drain_answers_stalled_upload(void **state) {
    (void)state;
    char response[4096];
    drain_during_upload("Content-Length: 40\r\n\r\n{\"prompt\":", response, sizeof(response));
    struct json_object *root = assert_error_response(response, "HTTP/1.1 503", "shutting_down");
    json_object_put(root);
    assert_non_null(strstr(response, "\r\nRetry-After: 1\r\n"));
    assert_non_null(strstr(response, "\r\nConnection: close\r\n"));
}

/* A chunked upload that stalls is shut down without a 503, because libmicrohttpd may be writing
 * its own error for a bad chunk on the same connection. The client sees the connection close. */
static void test_drain_closes_stalled_chunked_upload(void **state) {
    (void)state;
    char response[4096];
    drain_during_upload("Transfer-Encoding: chunked\r\n\r\na\r\n{\"prompt\":", response,
                        sizeof(response));
    assert_string_equal(response, "");
}

static void test_drain_refuses_new_request_on_open_connection(void **state) {
    (void)state;
    quill_server *server = create_server();
    const char *request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                          "Authorization: Bearer " API_KEY "\r\n"
                          "Content-Type: application/json\r\nContent-Length: 30\r\n\r\n" SMALL_BODY;

    /* The first request is served and the connection stays open. */
    int fd = connect_raw(quill_server_port(server));
    send_text(fd, request);
    char response[8192];
    read_sized_response(fd, response, sizeof(response));
    assert_true(starts_with(response, "HTTP/1.1 200"));
    assert_null(strstr(response, "Connection: close"));

    assert_int_equal(quill_server_drain(server, 1000L * RECEIVE_TIMEOUT_S), QUILL_OK);

    /* The next request on it gets a 503, and the server closes the connection. */
    send_text(fd, request);
    response[0] = '\0';
    assert_true(read_until_close(fd, response, sizeof(response)));
    close(fd);
    struct json_object *root = assert_error_response(response, "HTTP/1.1 503", "shutting_down");
    json_object_put(root);
    assert_non_null(strstr(response, "\r\nRetry-After: 1\r\n"));
    assert_non_null(strstr(response, "\r\nConnection: close\r\n"));
    quill_server_destroy(server);
}

static void test_drain_finishes_accepted_request(void **state) {
    (void)state;
    quill_server *server = create_server();
    engine_hold hold;
    hold_engine(&hold);
    int fd = send_generation(server);

    /* The drain starts while the request waits in the engine, and waits for it. */
    drain_call call = {server, QUILL_ERR_IO};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, run_drain, &call), 0);
    for (int i = 0; i < RECEIVE_TIMEOUT_S * 200 && !atomic_load(&server->is_quiesced); i++) {
        pause_briefly();
    }
    assert_true(atomic_load(&server->is_quiesced));
    release_engine(&hold);

    char response[8192] = "";
    assert_true(read_until_close(fd, response, sizeof(response)));
    close(fd);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(call.status, QUILL_OK);
    assert_true(starts_with(response, "HTTP/1.1 200"));
    assert_non_null(strstr(response, "\"choices\""));
    assert_non_null(strstr(response, "\r\nConnection: close\r\n"));
    quill_server_destroy(server);
}

/* Logging. */

/* Redirects file descriptor 2, where the log writes, into a scratch file. */
typedef struct stderr_capture {
    char *path;
    int saved_fd;
} stderr_capture;

static void capture_stderr(stderr_capture *capture) {
    capture->path = quill_test_tmp_path("http-server-stderr.log");
    fflush(stderr);
    int fd = open(capture->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    capture->saved_fd = dup(STDERR_FILENO);
    assert_true(capture->saved_fd >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* Returns the text captured so far; the caller frees it. */
static char *captured_text(const stderr_capture *capture) {
    fflush(stderr);
    size_t n_bytes = 0;
    char *text = quill_test_read_file(capture->path, &n_bytes);
    assert_non_null(text);
    return text;
}

static void restore_stderr(stderr_capture *capture) {
    fflush(stderr);
    dup2(capture->saved_fd, STDERR_FILENO);
    close(capture->saved_fd);
    remove(capture->path);
    free(capture->path);
}

/* Returns the captured text once it contains part; fails after RECEIVE_TIMEOUT_S. */
static char *wait_for_capture(const stderr_capture *capture, const char *part) {
    for (int i = 0; i < RECEIVE_TIMEOUT_S * 200; i++) {
        char *text = captured_text(capture);
        if (strstr(text, part) != NULL) {
            return text;
        }
        free(text);
        pause_briefly();
    }
    fail_msg("the log did not show '%s' within %d s", part, RECEIVE_TIMEOUT_S);
    return NULL;
}

/* Returns the finest log level written now. */
static quill_log_level current_log_level(void) {
    for (int level = QUILL_LOG_LEVEL_DEBUG; level > QUILL_LOG_LEVEL_ERROR; level--) {
        if (quill__log_enabled((quill_log_level)level)) {
            return (quill_log_level)level;
        }
    }
    return QUILL_LOG_LEVEL_ERROR;
}

static void test_log_client_gone_while_waiting_is_debug(void **state) {
    (void)state;
    quill_server_stats before;
    quill_server_get_stats(the_fixture.server, &before);
    quill_log_level saved_level = current_log_level();
    quill__log_set_level(QUILL_LOG_LEVEL_DEBUG);
    stderr_capture capture;
    capture_stderr(&capture);

    /* The client leaves while its non-streamed request waits in the engine. */
    engine_hold hold;
    hold_engine(&hold);
    int fd = send_generation(the_fixture.server);
    close(fd);
    char *text = wait_for_capture(&capture, "Application reported internal error");
    release_engine(&hold);
    for (int i = 0; i < RECEIVE_TIMEOUT_S * 200; i++) {
        quill_server_stats stats;
        quill_server_get_stats(the_fixture.server, &stats);
        if (stats.n_client_disconnects > before.n_client_disconnects) {
            break;
        }
        pause_briefly();
    }
    restore_stderr(&capture);
    quill__log_set_level(saved_level);

    assert_non_null(strstr(text, "level=debug component=server "
                                 "msg=\"libmicrohttpd reported a client that left\""));
    assert_null(strstr(text, "libmicrohttpd reported a problem"));
    free(text);
    quill_server_stats after;
    quill_server_get_stats(the_fixture.server, &after);
    assert_int_equal(after.n_client_disconnects, before.n_client_disconnects + 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing_unknown_transfer_coding_gets_501),
        cmocka_unit_test(test_framing_plain_chunked_accepted),
        cmocka_unit_test(test_framing_conflicting_lengths_get_400),
        cmocka_unit_test(test_framing_malformed_names_get_400),
        cmocka_unit_test(test_framing_repeated_equal_length_accepted),
        cmocka_unit_test(test_framing_overflowing_length_rejected_by_library),
        cmocka_unit_test(test_expect_errors_precede_continue),
        cmocka_unit_test(test_expect_valid_request_gets_continue),
        cmocka_unit_test(test_expect_with_libcurl),
        cmocka_unit_test(test_drain_answers_stalled_upload),
        cmocka_unit_test(test_drain_closes_stalled_chunked_upload),
        cmocka_unit_test(test_drain_refuses_new_request_on_open_connection),
        cmocka_unit_test(test_drain_finishes_accepted_request),
        cmocka_unit_test(test_log_client_gone_while_waiting_is_debug),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
