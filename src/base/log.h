/*
 * Structured logging: one logfmt line per event on stderr, because stdout belongs to CLI output.
 *   QUILL_LOG_INFO("server", "listening", "address=%s port=%d", host, port);
 * writes `ts=2026-12-04T21:30:00.123Z level=info component=server msg="listening" address=...`.
 * Safe from any thread: each line is written with one fputs under the stdio stream lock.
 */
#ifndef QUILL_LOG_H
#define QUILL_LOG_H

#include <stdbool.h>

typedef enum quill_log_level {
    QUILL_LOG_LEVEL_ERROR = 0,
    QUILL_LOG_LEVEL_WARN = 1,
    QUILL_LOG_LEVEL_INFO = 2,
    QUILL_LOG_LEVEL_DEBUG = 3,
} quill_log_level;

/* Sets the most verbose level that is written; INFO by default, or QUILL_LOG_LEVEL from the
 * environment (error, warn, info, debug, any case) on first use. Another QUILL_LOG_LEVEL value
 * writes one warning line naming it and keeps INFO. */
void quill__log_set_level(quill_log_level level);

/* Returns true when a line at this level would be written. */
bool quill__log_enabled(quill_log_level level);

/* Writes one line. fields is a printf format for `key=value` pairs and may be NULL. */
void quill__log_write(quill_log_level level, const char *component, const char *message,
                      const char *fields, ...) __attribute__((format(printf, 4, 5)));

/* Returns a JSON-like quoted copy of value suitable for a logfmt field, e.g. for a file path
 * with spaces; written into buffer of buffer_bytes bytes and returned. */
const char *quill__log_quote(const char *value, char *buffer, int buffer_bytes);

#define QUILL_LOG_ERROR(component, message, ...)                                                   \
    quill__log_write(QUILL_LOG_LEVEL_ERROR, component, message, __VA_ARGS__)
#define QUILL_LOG_WARN(component, message, ...)                                                    \
    quill__log_write(QUILL_LOG_LEVEL_WARN, component, message, __VA_ARGS__)
#define QUILL_LOG_INFO(component, message, ...)                                                    \
    quill__log_write(QUILL_LOG_LEVEL_INFO, component, message, __VA_ARGS__)
#define QUILL_LOG_DEBUG(component, message, ...)                                                   \
    quill__log_write(QUILL_LOG_LEVEL_DEBUG, component, message, __VA_ARGS__)

#endif
