/*
 * Pieces of OpenAI response bodies written straight into a buffer: JSON strings made safe from
 * invalid UTF-8, the usage object with Quill's cost and timings, and log-probabilities in the
 * chat and the legacy completions shapes. Written by hand rather than through a JSON DOM because
 * they run once per streamed token and because cost amounts must print exactly. Stateless.
 */
#ifndef QUILL_SERVER_OPENAI_RESPONSE_H
#define QUILL_SERVER_OPENAI_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "quill/engine.h"
#include "quill/tokenizer.h"
#include "server/cost.h"

/* Latency and speed of one request as reported in usage.timings. */
typedef struct quill_timings {
    int64_t queue_us;           /* arrival until the first prefill chunk was scheduled */
    int64_t ttft_us;            /* arrival until the first content: written to the socket for
                                   streams, released by the engine for other replies */
    int64_t prefill_us;         /* scheduling until the first token was sampled */
    int64_t generation_us;      /* first token until the request finished */
    double prefill_tokens_per_second; /* uncached prompt tokens / prefill time; 0 if unmeasured */
    double decode_tokens_per_second;  /* tokens after the first / generation time; 0 if none */
} quill_timings;

/* Fills timings from the engine's usage record and the server's own TTFT stamps (monotonic
 * microseconds; first_content_us <= 0 when there was no content). */
void quill__openai_timings_compute(const quill_usage *usage, int64_t arrival_us,
                                   int64_t first_content_us, quill_timings *out);

/* Appends bytes as a JSON string literal; invalid UTF-8 becomes U+FFFD. */
quill_status quill__openai_append_text(quill_strbuf *out, const char *bytes, size_t n_bytes);

/* Appends "usage": {prompt_tokens, completion_tokens, total_tokens,
 * prompt_tokens_details.cached_tokens, cost {input, cached_input, output, total in USD},
 * timings {...}} without a leading comma. */
quill_status quill__openai_append_usage(quill_strbuf *out, int64_t n_prompt_tokens,
                                        int64_t n_cached_tokens, int64_t n_completion_tokens,
                                        const quill_cost *cost, const quill_timings *timings);

/* Appends the entries (comma-separated, no brackets) of a chat logprobs.content array for
 * tokens. n_written is the number of entries already in the array (to place commas). */
quill_status quill__openai_append_chat_logprobs(quill_strbuf *out,
                                                const quill_tokenizer *tokenizer,
                                                const quill_generated_token *tokens,
                                                int32_t n_tokens, int64_t n_written);

/* Appends a legacy completions logprobs object {tokens, token_logprobs, top_logprobs,
 * text_offset} for tokens; text_offset starts at *text_offset_bytes, which advances by the
 * bytes of each token. */
quill_status quill__openai_append_completion_logprobs(quill_strbuf *out,
                                                      const quill_tokenizer *tokenizer,
                                                      const quill_generated_token *tokens,
                                                      int32_t n_tokens,
                                                      int64_t *text_offset_bytes);

#endif
