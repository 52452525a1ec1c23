/*
 * A growable byte buffer that always keeps a terminating NUL after its data, for building
 * messages, JSON and rendered templates. One thread at a time.
 */
#ifndef QUILL_STRBUF_H
#define QUILL_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "quill/status.h"

typedef struct quill_strbuf {
    char *data;          /* NUL-terminated; NULL until the first append */
    size_t length;       /* bytes of data, without the NUL */
    size_t capacity;     /* bytes allocated for data */
    size_t limit_bytes;  /* appends past this many bytes fail; 0 means no limit */
    bool is_failed;      /* an append failed; later appends are ignored */
} quill_strbuf;

/* Initializes an empty buffer; release it with quill__strbuf_release. */
void quill__strbuf_init(quill_strbuf *buffer);
void quill__strbuf_release(quill_strbuf *buffer);

/* Appends bytes. Returns QUILL_ERR_NOMEM on allocation failure or past limit_bytes; the buffer
 * then stays failed. */
quill_status quill__strbuf_append(quill_strbuf *buffer, const char *bytes, size_t n_bytes);
quill_status quill__strbuf_append_cstr(quill_strbuf *buffer, const char *text);
quill_status quill__strbuf_append_char(quill_strbuf *buffer, char c);
quill_status quill__strbuf_appendf(quill_strbuf *buffer, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends text as a JSON string literal with quotes; invalid UTF-8 is kept as is. */
quill_status quill__strbuf_append_json_string(quill_strbuf *buffer, const char *text,
                                              size_t n_bytes);

/* Empties the buffer, keeping its allocation. */
void quill__strbuf_clear(quill_strbuf *buffer);

/* Takes the data out; the caller frees it with quill__free. The buffer becomes empty. Returns
 * an empty string (allocated) when nothing was appended, or NULL on allocation failure. */
char *quill__strbuf_take(quill_strbuf *buffer);

#endif
