/*
 * Stop-string matching with hold-back. Invariant between feeds: `held` is at least the longest
 * suffix of the text seen so far that is a proper prefix of some stop string, so any stop string
 * that completes later starts inside `held` or after it, and searching `held` plus the new bytes
 * finds it. Owned by one thread at a time.
 */
#include "engine/stop_matcher.h"

#include <string.h>

#include "base/alloc.h"

quill_status quill__stop_matcher_init(quill_stop_matcher *matcher, const char *const *stops,
                                      int32_t n_stops) {
    memset(matcher, 0, sizeof(*matcher));
    quill__strbuf_init(&matcher->held);
    if (n_stops <= 0) {
        return QUILL_OK;
    }
    matcher->stops = quill__calloc((size_t)n_stops, sizeof(char *));
    matcher->stop_bytes = quill__calloc((size_t)n_stops, sizeof(size_t));
    if (matcher->stops == NULL || matcher->stop_bytes == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for %d stop strings",
                               n_stops);
    }
    for (int32_t i = 0; i < n_stops; i++) {
        const char *stop = stops[i] != NULL ? stops[i] : "";
        matcher->stops[i] = quill__strdup(stop);
        if (matcher->stops[i] == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for stop string %d", i);
        }
        matcher->stop_bytes[i] = strlen(stop);
        matcher->n_stops = i + 1;
    }
    return QUILL_OK;
}

void quill__stop_matcher_release(quill_stop_matcher *matcher) {
    if (matcher == NULL) {
        return;
    }
    if (matcher->stops != NULL) {
        for (int32_t i = 0; i < matcher->n_stops; i++) {
            quill__free(matcher->stops[i]);
        }
    }
    quill__free(matcher->stops);
    quill__free(matcher->stop_bytes);
    quill__strbuf_release(&matcher->held);
    memset(matcher, 0, sizeof(*matcher));
}

/* Finds the stop string occurrence in text that ends first (the longest one among those ending
 * at the same byte), which is the one a byte-by-byte stream would complete first. Returns true
 * and its start offset. */
static bool find_first_stop(const quill_stop_matcher *matcher, const char *text, size_t n_bytes,
                            size_t *start) {
    bool is_found = false;
    size_t best_end = 0;
    size_t best_start = 0;
    for (int32_t i = 0; i < matcher->n_stops; i++) {
        size_t length = matcher->stop_bytes[i];
        if (length == 0 || length > n_bytes) {
            continue;
        }
        const char *hit = memmem(text, n_bytes, matcher->stops[i], length);
        if (hit == NULL) {
            continue;
        }
        size_t hit_start = (size_t)(hit - text);
        size_t hit_end = hit_start + length;
        if (!is_found || hit_end < best_end || (hit_end == best_end && hit_start < best_start)) {
            is_found = true;
            best_end = hit_end;
            best_start = hit_start;
        }
    }
    *start = best_start;
    return is_found;
}

/* Returns the length of the longest suffix of text that is a proper prefix of a stop string. */
static size_t longest_partial_suffix(const quill_stop_matcher *matcher, const char *text,
                                     size_t n_bytes) {
    size_t best = 0;
    for (int32_t i = 0; i < matcher->n_stops; i++) {
        size_t length = matcher->stop_bytes[i];
        size_t max_suffix = length > 0 ? length - 1 : 0;
        if (max_suffix > n_bytes) {
            max_suffix = n_bytes;
        }
        for (size_t suffix = max_suffix; suffix > best; suffix--) {
            if (memcmp(text + n_bytes - suffix, matcher->stops[i], suffix) == 0) {
                best = suffix;
                break;
            }
        }
    }
    return best;
}

static bool is_utf8_continuation(char byte) {
    return ((unsigned char)byte & 0xC0u) == 0x80u;
}

quill_status quill__stop_matcher_feed(quill_stop_matcher *matcher, const char *bytes,
                                      size_t n_bytes, quill_strbuf *out, bool *is_stopped) {
    *is_stopped = matcher->is_stopped;
    if (matcher->is_stopped || n_bytes == 0) {
        return QUILL_OK;
    }
    if (matcher->n_stops == 0) {
        return quill__strbuf_append(out, bytes, n_bytes);
    }
    quill_status status = quill__strbuf_append(&matcher->held, bytes, n_bytes);
    if (status != QUILL_OK) {
        return status;
    }
    const char *text = matcher->held.data;
    size_t length = matcher->held.length;

    /* A complete stop string: release what precedes it and drop the rest. */
    size_t stop_start = 0;
    if (find_first_stop(matcher, text, length, &stop_start)) {
        status = quill__strbuf_append(out, text, stop_start);
        quill__strbuf_clear(&matcher->held);
        matcher->is_stopped = true;
        *is_stopped = true;
        return status;
    }

    /* Keep the longest suffix that may still grow into a stop string, widened to the start of a
     * UTF-8 character so the released part ends on a character boundary. */
    size_t n_keep = longest_partial_suffix(matcher, text, length);
    while (n_keep < length && is_utf8_continuation(text[length - n_keep])) {
        n_keep++;
    }
    size_t n_release = length - n_keep;
    if (n_release == 0) {
        return QUILL_OK;
    }
    status = quill__strbuf_append(out, text, n_release);
    if (status != QUILL_OK) {
        return status;
    }
    memmove(matcher->held.data, text + n_release, n_keep);
    matcher->held.length = n_keep;
    matcher->held.data[n_keep] = '\0';
    return QUILL_OK;
}

quill_status quill__stop_matcher_flush(quill_stop_matcher *matcher, quill_strbuf *out) {
    if (matcher->is_stopped || matcher->held.length == 0) {
        return QUILL_OK;
    }
    quill_status status = quill__strbuf_append(out, matcher->held.data, matcher->held.length);
    quill__strbuf_clear(&matcher->held);
    return status;
}
