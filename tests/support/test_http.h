/*
 * HTTP client helpers for the server tests: one libcurl request to 127.0.0.1 with the reply's
 * status, body and the headers the tests check, and a raw loopback connect for tests that
 * must write partial requests or stop reading. Failures of the client itself fail the test
 * through cmocka. Single-threaded use from test programs.
 */
#ifndef QUILL_TEST_HTTP_H
#define QUILL_TEST_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* Reply to one request. Release it with quill_test_http_reply_release. */
typedef struct quill_test_http_reply {
    long status;            /* HTTP status code */
    char *body;             /* NUL-terminated, "" when the reply has none */
    size_t n_body_bytes;    /* body length without the NUL */
    char retry_after[32];   /* Retry-After header value, "" when absent */
    char content_type[96];  /* Content-Type header value, "" when absent */
    char allow[64];         /* Allow header value, "" when absent */
} quill_test_http_reply;

/* Sends one request to http://127.0.0.1:<port><path> and waits for the whole reply (60 s at
 * most). Method "HEAD" requests no body. content_type NULL sends an empty Content-Type header,
 * api_key NULL sends no Authorization, and body NULL sends no body. */
void quill_test_http_send(uint16_t port, const char *method, const char *path,
                          const char *content_type, const char *api_key, const char *body,
                          size_t n_body_bytes, quill_test_http_reply *reply);

/* Frees the body and clears the reply. */
void quill_test_http_reply_release(quill_test_http_reply *reply);

/* Connects the TCP socket fd to 127.0.0.1:<port>. Options that must precede the connection
 * (receive buffer, segment size) are the caller's to set first. */
void quill_test_loopback_connect(int fd, uint16_t port);

#endif
