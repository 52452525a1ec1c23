/*
 * logfmt writer. The level is read once from QUILL_LOG_LEVEL and kept in an atomic, the only
 * global mutable state here.
 */
#include "base/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum { LOG_LINE_BYTES = 2048 };

static atomic_int log_level = QUILL_LOG_LEVEL_INFO;
static pthread_once_t log_level_once = PTHREAD_ONCE_INIT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static void write_line(quill_log_level level, const char *component, const char *message,
                       const char *fields, va_list args) __attribute__((format(printf, 4, 0)));

/* Writes a line without checking the level, so that the level reader can warn. */
static void write_line_unchecked(quill_log_level level, const char *component,
                                 const char *message, const char *fields, ...)
    __attribute__((format(printf, 4, 5)));

static void write_line_unchecked(quill_log_level level, const char *component,
                                 const char *message, const char *fields, ...) {
    va_list args;
    va_start(args, fields);
    write_line(level, component, message, fields, args);
    va_end(args);
}

/* Runs once. An unknown value keeps the default and is reported, as a typo would otherwise
 * silently hide the debug lines the operator asked for. */
static void read_level_from_environment(void) {
    const char *value = getenv("QUILL_LOG_LEVEL");
    if (value == NULL) {
        return;
    }
    for (int level = 0; level <= QUILL_LOG_LEVEL_DEBUG; level++) {
        if (strcasecmp(value, level_names[level]) == 0) {
            atomic_store(&log_level, level);
            return;
        }
    }
    char quoted[256];
    write_line_unchecked(QUILL_LOG_LEVEL_WARN, "log",
                         "invalid QUILL_LOG_LEVEL; expected error, warn, info or debug, using info",
                         "value=%s", quill__log_quote(value, quoted, (int)sizeof(quoted)));
}

void quill__log_set_level(quill_log_level level) {
    pthread_once(&log_level_once, read_level_from_environment);
    atomic_store(&log_level, (int)level);
}

bool quill__log_enabled(quill_log_level level) {
    pthread_once(&log_level_once, read_level_from_environment);
    return (int)level <= atomic_load(&log_level);
}

const char *quill__log_quote(const char *value, char *buffer, int buffer_bytes) {
    int at = 0;
    if (buffer_bytes < 3) {
        return "\"\"";
    }
    buffer[at++] = '"';
    for (const char *c = value ? value : ""; *c != '\0' && at < buffer_bytes - 3; c++) {
        if (*c == '"' || *c == '\\') {
            buffer[at++] = '\\';
        }
        buffer[at++] = (*c == '\n' || *c == '\r') ? ' ' : *c;
    }
    buffer[at++] = '"';
    buffer[at] = '\0';
    return buffer;
}

void quill__log_write(quill_log_level level, const char *component, const char *message,
                      const char *fields, ...) {
    if (!quill__log_enabled(level)) {
        return;
    }
    va_list args;
    va_start(args, fields);
    write_line(level, component, message, fields, args);
    va_end(args);
}

static void write_line(quill_log_level level, const char *component, const char *message,
                       const char *fields, va_list args) {
    char line[LOG_LINE_BYTES];
    char quoted[512];
    struct timespec now;
    struct tm utc;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &utc);

    int at = snprintf(line, sizeof(line),
                      "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s component=%s msg=%s",
                      utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                      utc.tm_sec, now.tv_nsec / 1000000L, level_names[level], component,
                      quill__log_quote(message, quoted, (int)sizeof(quoted)));
    if (fields != NULL && at > 0 && at < (int)sizeof(line) - 2) {
        line[at++] = ' ';
        int n_fields = vsnprintf(line + at, sizeof(line) - (size_t)at, fields, args);
        if (n_fields > 0) {
            at += n_fields;
        }
    }
    if (at > (int)sizeof(line) - 2) {
        at = (int)sizeof(line) - 2;
    }
    line[at++] = '\n';
    line[at] = '\0';
    fputs(line, stderr);
}
