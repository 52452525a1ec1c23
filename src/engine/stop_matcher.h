/*
 * Stop strings over a stream of text pieces. Text that could still be the start of a stop string
 * is held back, so a stop string is never partly released, even when it spans several tokens.
 * When a stop string completes, the text before it is released and the stop string and anything
 * after it are dropped. One thread at a time (the engine thread).
 */
#ifndef QUILL_ENGINE_STOP_MATCHER_H
#define QUILL_ENGINE_STOP_MATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "quill/status.h"

typedef struct quill_stop_matcher {
    char **stops;       /* [n_stops] owned NUL-terminated copies; empty strings are skipped */
    size_t *stop_bytes; /* [n_stops] byte length of each stop string */
    int32_t n_stops;    /* entries in stops */
    quill_strbuf held;  /* bytes held back: a suffix that may start a stop string */
    bool is_stopped;    /* a stop string completed; later feeds release nothing */
} quill_stop_matcher;

/* Copies n_stops stop strings (UTF-8). Release with quill__stop_matcher_release, also after a
 * failed init. */
quill_status quill__stop_matcher_init(quill_stop_matcher *matcher, const char *const *stops,
                                      int32_t n_stops);
void quill__stop_matcher_release(quill_stop_matcher *matcher);

/* Feeds n_bytes of text and appends the bytes that can no longer be part of a stop string to
 * out. Sets *is_stopped when a stop string completed. The cut never falls inside a UTF-8
 * character, so whole characters come out when the input is whole characters. */
quill_status quill__stop_matcher_feed(quill_stop_matcher *matcher, const char *bytes,
                                      size_t n_bytes, quill_strbuf *out, bool *is_stopped);

/* Appends everything still held to out, for the end of a stream that did not stop. */
quill_status quill__stop_matcher_flush(quill_stop_matcher *matcher, quill_strbuf *out);

#endif
