/*
 * HTTP errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the HTTP
 * status that goes with them. A quill_http_error is filled where a request fails (parsing,
 * validation, admission) and serialized once by the connection that responds to it. Plain data:
 * one thread at a time.
 */
#ifndef QUILL_SERVER_ERRORS_H
#define QUILL_SERVER_ERRORS_H

#include <stdbool.h>

#include "base/strbuf.h"
#include "quill/status.h"

typedef struct quill_http_error {
    int http_status;       /* 400, 401, 404, 413, 429, 500, 503; 0 while no error is set */
    const char *type;      /* OpenAI error type, e.g. "invalid_request_error" (static text) */
    char param[64];        /* request field at fault, "" for none (JSON null) */
    char code[48];         /* machine-readable code, "" for none (JSON null) */
    char message[512];     /* one line for the client */
    int retry_after_s;     /* Retry-After header in seconds for 429 and 503; 0 omits it */
} quill_http_error;

/* Fills error: http_status, param (NULL for none), code (NULL for none) and a printf-style
 * message. The type follows from the status: 400, 404 and 413 are invalid_request_error, 401
 * authentication_error, 429 rate_limit_error, 500 and 503 server_error. */
void quill__http_error_set(quill_http_error *error, int http_status, const char *param,
                           const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Maps a failed status and this thread's Quill message to an error: INVALID_ARG becomes 400,
 * NOT_FOUND 404, BUSY 429, everything else 500. param may be NULL. */
void quill__http_error_from_status(quill_http_error *error, quill_status status,
                                   const char *param);

/* Appends the error's JSON body to buffer. */
quill_status quill__http_error_write_json(const quill_http_error *error, quill_strbuf *buffer);

#endif
