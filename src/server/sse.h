/*
 * Server-sent events framing for streamed completions: each event is "data: <json>\n\n" and the
 * stream ends with "data: [DONE]\n\n", as OpenAI's API does. The JSON never contains a raw
 * newline (json strings escape it), so one data line per event is enough. Stateless.
 */
#ifndef QUILL_SERVER_SSE_H
#define QUILL_SERVER_SSE_H

#include <stddef.h>

#include "base/strbuf.h"
#include "quill/status.h"

/* Appends "data: " + json + "\n\n". */
quill_status quill__sse_append_event(quill_strbuf *out, const char *json, size_t n_json_bytes);

/* Appends the end-of-stream marker "data: [DONE]\n\n". */
quill_status quill__sse_append_done(quill_strbuf *out);

#endif
