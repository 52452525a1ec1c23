/*
 * SSE framing; see sse.h.
 */
#include "server/sse.h"

quill_status quill__sse_append_event(quill_strbuf *out, const char *json, size_t n_json_bytes) {
    quill__strbuf_append(out, "data: ", 6);
    quill__strbuf_append(out, json, n_json_bytes);
    return quill__strbuf_append(out, "\n\n", 2);
}

quill_status quill__sse_append_done(quill_strbuf *out) {
    return quill__strbuf_append_cstr(out, "data: [DONE]\n\n");
}
