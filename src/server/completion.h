/*
 * One OpenAI completion (chat or legacy) from the validated request to the last byte. It covers
 * prompt preparation (chat template rendering, and tokenization with special tokens matched only in
 * the template's own text), the context-length and admission checks, one engine request per choice,
 * and the conversion of engine events into SSE chunks or one final JSON body with usage, cost and
 * timings. Used by one thread at a time: the MHD thread serving its connection.
 */
#ifndef QUILL_SERVER_COMPLETION_H
#define QUILL_SERVER_COMPLETION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "quill/metrics.h"
#include "server/errors.h"
#include "server/openai_request.h"
#include "server/server_internal.h"

/* Prepares the prompt, checks it and submits one engine request per choice, each waking waker.
 * Takes ownership of request (moved into the completion), also on failure. On failure fills
 * error (400 with the parameter named, 429, 500) and returns its status. Returns a new
 * completion in *out, which the caller destroys. */
quill_status quill__completion_start(quill_server *server, quill_openai_request *request,
                                     int64_t arrival_us, quill_waker *waker,
                                     quill_completion **out, quill_http_error *error);

/* Renders the chat template for messages (and tools, tool_choice, parallel_tool_calls) and
 * tokenizes the result, matching special tokens only in the template's text. Returns new
 * tokens (free with quill_tokens_free) and, when rendered_text is not NULL, the rendered
 * prompt (free with quill__free). Fills error on failure. */
quill_status quill__completion_render_chat(quill_server *server,
                                           const quill_openai_request *request,
                                           int32_t **tokens, int64_t *n_tokens,
                                           char **rendered_text, quill_http_error *error);

bool quill__completion_is_stream(const quill_completion *completion);

/* Reads every pending event without blocking. A streamed completion appends SSE events to
 * stream, and after its last choice finishes the usage event (when asked for) and [DONE].
 * Sets *is_finished when every choice has finished. */
quill_status quill__completion_poll(quill_completion *completion, quill_strbuf *stream,
                                    bool *is_finished);

/* For streams: the offset in stream of the first content chunk written by poll and not yet
 * reported through quill__completion_mark_content_sent, or SIZE_MAX. */
size_t quill__completion_pending_content_offset(const quill_completion *completion);

/* Records that the first content byte was written to the client at now_us (monotonic). */
void quill__completion_mark_content_sent(quill_completion *completion, int64_t now_us);

/* For streams: records that every byte in the stream so far was handed to the socket at now_us
 * (monotonic). When that write carried new text, the time since the previous such write counts
 * as one inter-token gap per token generated in between, split evenly, so the gaps' sum is the
 * time between the first and the last content write. The first content write adds no gap. */
void quill__completion_mark_stream_written(quill_completion *completion, int64_t now_us);

/* For non-streamed completions after poll reported is_finished: writes the response body and
 * its HTTP status (200, or 500 when the engine failed a choice). */
void quill__completion_write_response(quill_completion *completion, int *http_status,
                                      quill_strbuf *body);

/* Cancels the choices still running and waits for their final events, so that usage contains the
 * tokens each really used. Accepts NULL. */
void quill__completion_stop(quill_completion *completion);

/* Fills the finish reason, user, feature, tokens, cost (the total the response shows) and
 * times of a stopped completion into record. With n > 1 it is one record for the request:
 * tokens and cost are summed over the choices, the finish reason is the worst one (error,
 * cancelled, length, stop) and the times are the first choice's, as in the response's timings.
 * Strings and the gaps are borrowed until the completion is destroyed. */
void quill__completion_fill_record(quill_completion *completion, quill_request_record *record);

/* Cancels choices still running, logs the request's accounting line and frees. is_disconnect
 * is true when the client went away. Accepts NULL. */
void quill__completion_destroy(quill_completion *completion, bool is_disconnect);

#endif
