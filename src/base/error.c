/*
 * Thread-local error messages. Each thread owns its buffer, so no lock is needed; a message
 * longer than the buffer is truncated with "..." so that it still ends cleanly.
 */
#include "quill/status.h"

#include <stdio.h>
#include <string.h>

enum { ERROR_MESSAGE_BYTES = 1024 };

static _Thread_local char error_message[ERROR_MESSAGE_BYTES];

quill_status quill_error_setv(quill_status status, const char *fmt, va_list args) {
    int n_written = vsnprintf(error_message, sizeof(error_message), fmt, args);
    if (n_written >= (int)sizeof(error_message)) {
        memcpy(error_message + sizeof(error_message) - 4, "...", 4);
    }
    if (n_written < 0) {
        error_message[0] = '\0';
    }
    return status;
}

quill_status quill_error_set(quill_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    quill_error_setv(status, fmt, args);
    va_end(args);
    return status;
}

const char *quill_error_message(void) {
    return error_message;
}

void quill_error_clear(void) {
    error_message[0] = '\0';
}

const char *quill_status_name(quill_status status) {
    switch (status) {
    case QUILL_OK:
        return "QUILL_OK";
    case QUILL_ERR_INVALID_ARG:
        return "QUILL_ERR_INVALID_ARG";
    case QUILL_ERR_NOT_FOUND:
        return "QUILL_ERR_NOT_FOUND";
    case QUILL_ERR_IO:
        return "QUILL_ERR_IO";
    case QUILL_ERR_FORMAT:
        return "QUILL_ERR_FORMAT";
    case QUILL_ERR_NOMEM:
        return "QUILL_ERR_NOMEM";
    case QUILL_ERR_UNSUPPORTED:
        return "QUILL_ERR_UNSUPPORTED";
    case QUILL_ERR_BUSY:
        return "QUILL_ERR_BUSY";
    case QUILL_ERR_TIMEOUT:
        return "QUILL_ERR_TIMEOUT";
    case QUILL_ERR_CANCELLED:
        return "QUILL_ERR_CANCELLED";
    case QUILL_ERR_UPSTREAM:
        return "QUILL_ERR_UPSTREAM";
    }
    return "QUILL_ERR_UNKNOWN";
}
