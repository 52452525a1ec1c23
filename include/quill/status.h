/*
 * Status codes and the thread-local error message. Every fallible Quill function returns a
 * quill_status; on failure it has stored a one-line message that names the module, the object,
 * the bad value, the limit and the next step. Safe from any thread: each thread has its own
 * message.
 */
#ifndef QUILL_STATUS_H
#define QUILL_STATUS_H

#include <stdarg.h>

#include "quill/api.h"

QUILL_EXTERN_C_BEGIN

typedef enum quill_status {
    QUILL_OK = 0,
    QUILL_ERR_INVALID_ARG = -1, /* a caller-supplied value is out of range or malformed */
    QUILL_ERR_NOT_FOUND = -2,   /* a file, key, model or id does not exist */
    QUILL_ERR_IO = -3,          /* a system call on a file or socket failed */
    QUILL_ERR_FORMAT = -4,      /* a file or message is corrupt or violates its format */
    QUILL_ERR_NOMEM = -5,       /* an allocation failed or a memory budget is exhausted */
    QUILL_ERR_UNSUPPORTED = -6, /* valid input that Quill does not implement */
    QUILL_ERR_BUSY = -7,        /* capacity is exhausted; retry later */
    QUILL_ERR_TIMEOUT = -8,     /* a deadline passed */
    QUILL_ERR_CANCELLED = -9,   /* the caller or the client stopped the operation */
    QUILL_ERR_UPSTREAM = -10,   /* a remote provider failed */
} quill_status;

/* Stores a printf-style message for this thread and returns status unchanged, so that callers
 * can write `return quill_error_set(QUILL_ERR_FORMAT, "gguf: ...")`. */
QUILL_API quill_status quill_error_set(quill_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Same as quill_error_set with a va_list. */
QUILL_API quill_status quill_error_setv(quill_status status, const char *fmt, va_list args);

/* Returns this thread's last message. Borrowed: valid until the next Quill call on this thread,
 * so a caller that keeps it copies it at once. Returns "" when no message was set. */
QUILL_API const char *quill_error_message(void);

/* Clears this thread's message. */
QUILL_API void quill_error_clear(void);

/* Returns the constant name of a status, e.g. "QUILL_ERR_FORMAT". */
QUILL_API const char *quill_status_name(quill_status status);

QUILL_EXTERN_C_END

#endif
