/*
 * Growable buffer. Capacity doubles, so appends are amortized O(1).
 */
#include "base/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"

void quill__strbuf_init(quill_strbuf *buffer) {
    memset(buffer, 0, sizeof(*buffer));
}

void quill__strbuf_release(quill_strbuf *buffer) {
    if (buffer == NULL) {
        return;
    }
    quill__free(buffer->data);
    memset(buffer, 0, sizeof(*buffer));
}

static quill_status reserve(quill_strbuf *buffer, size_t n_more) {
    size_t needed = 0;
    if (buffer->is_failed) {
        return QUILL_ERR_NOMEM;
    }
    if (!quill__size_add(buffer->length, n_more, &needed) || !quill__size_add(needed, 1, &needed)) {
        buffer->is_failed = true;
        return quill_error_set(QUILL_ERR_NOMEM, "strbuf: size overflow");
    }
    if (buffer->limit_bytes != 0 && needed - 1 > buffer->limit_bytes) {
        buffer->is_failed = true;
        return quill_error_set(QUILL_ERR_NOMEM, "strbuf: output would exceed the limit of %zu bytes",
                               buffer->limit_bytes);
    }
    if (needed <= buffer->capacity) {
        return QUILL_OK;
    }
    size_t capacity = buffer->capacity < 64 ? 64 : buffer->capacity;
    while (capacity < needed) {
        capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
    }
    char *data = quill__realloc(buffer->data, capacity);
    if (data == NULL) {
        buffer->is_failed = true;
        return quill_error_set(QUILL_ERR_NOMEM, "strbuf: cannot grow to %zu bytes", capacity);
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return QUILL_OK;
}

quill_status quill__strbuf_append(quill_strbuf *buffer, const char *bytes, size_t n_bytes) {
    quill_status status = reserve(buffer, n_bytes);
    if (status != QUILL_OK) {
        return status;
    }
    if (n_bytes > 0) {
        memcpy(buffer->data + buffer->length, bytes, n_bytes);
    }
    buffer->length += n_bytes;
    buffer->data[buffer->length] = '\0';
    return QUILL_OK;
}

quill_status quill__strbuf_append_cstr(quill_strbuf *buffer, const char *text) {
    return quill__strbuf_append(buffer, text, strlen(text));
}

quill_status quill__strbuf_append_char(quill_strbuf *buffer, char c) {
    return quill__strbuf_append(buffer, &c, 1);
}

quill_status quill__strbuf_appendf(quill_strbuf *buffer, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    va_list args_copy;
    va_copy(args_copy, args);
    int n_needed = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    quill_status status = QUILL_OK;
    if (n_needed < 0) {
        status = quill_error_set(QUILL_ERR_INVALID_ARG, "strbuf: invalid format '%s'", fmt);
    } else {
        status = reserve(buffer, (size_t)n_needed);
    }
    if (status == QUILL_OK) {
        vsnprintf(buffer->data + buffer->length, (size_t)n_needed + 1, fmt, args_copy);
        buffer->length += (size_t)n_needed;
    }
    va_end(args_copy);
    return status;
}

quill_status quill__strbuf_append_json_string(quill_strbuf *buffer, const char *text,
                                              size_t n_bytes) {
    static const char hex[] = "0123456789abcdef";
    quill_status status = quill__strbuf_append_char(buffer, '"');
    size_t run_start = 0;
    for (size_t i = 0; i < n_bytes && status == QUILL_OK; i++) {
        unsigned char c = (unsigned char)text[i];
        char escape[7] = {0};
        if (c == '"' || c == '\\') {
            escape[0] = '\\';
            escape[1] = (char)c;
        } else if (c == '\n') {
            memcpy(escape, "\\n", 3);
        } else if (c == '\r') {
            memcpy(escape, "\\r", 3);
        } else if (c == '\t') {
            memcpy(escape, "\\t", 3);
        } else if (c < 0x20) {
            memcpy(escape, "\\u00", 4);
            escape[4] = hex[c >> 4];
            escape[5] = hex[c & 15];
        } else {
            continue;
        }
        status = quill__strbuf_append(buffer, text + run_start, i - run_start);
        if (status == QUILL_OK) {
            status = quill__strbuf_append_cstr(buffer, escape);
        }
        run_start = i + 1;
    }
    if (status == QUILL_OK) {
        status = quill__strbuf_append(buffer, text + run_start, n_bytes - run_start);
    }
    if (status == QUILL_OK) {
        status = quill__strbuf_append_char(buffer, '"');
    }
    return status;
}

void quill__strbuf_clear(quill_strbuf *buffer) {
    buffer->length = 0;
    buffer->is_failed = false;
    if (buffer->data != NULL) {
        buffer->data[0] = '\0';
    }
}

char *quill__strbuf_take(quill_strbuf *buffer) {
    char *data = buffer->data;
    if (buffer->is_failed) {
        quill__strbuf_release(buffer);
        return NULL;
    }
    if (data == NULL) {
        data = quill__strdup("");
    }
    buffer->data = NULL;
    buffer->length = 0;
    buffer->capacity = 0;
    return data;
}
