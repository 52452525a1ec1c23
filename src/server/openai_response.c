/*
 * Hand-written JSON for response bodies, as described in openai_response.h.
 */
#include "server/openai_response.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* OpenAI reports -9999.0 for tokens whose probability underflows; JSON has no -Infinity. */
#define LOGPROB_FLOOR (-9999.0)

/* Max bytes reported of one token's piece. Longer pieces are cut (no real vocabulary has them). */
#define TOKEN_PIECE_MAX_BYTES 256

/* Returns the length of the valid UTF-8 sequence starting at text[0], or 0 if it is invalid
 * or incomplete within n_bytes. */
static size_t utf8_sequence_length(const unsigned char *text, size_t n_bytes) {
    unsigned char lead = text[0];
    size_t length = 0;
    uint32_t min_code = 0;
    if (lead < 0x80) {
        return 1;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
        length = 2;
        min_code = 0x80;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        length = 3;
        min_code = 0x800;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        length = 4;
        min_code = 0x10000;
    } else {
        return 0;
    }
    if (length > n_bytes) {
        return 0;
    }
    uint32_t code = lead & (0x7f >> length);
    for (size_t i = 1; i < length; i++) {
        if ((text[i] & 0xc0) != 0x80) {
            return 0;
        }
        code = (code << 6) | (text[i] & 0x3f);
    }
    bool is_surrogate = code >= 0xd800 && code <= 0xdfff;
    if (code < min_code || code > 0x10ffff || is_surrogate) {
        return 0;
    }
    return length;
}

quill_status quill__openai_append_text(quill_strbuf *out, const char *bytes, size_t n_bytes) {
    /* Fast path: valid text goes through the plain escaper. */
    const unsigned char *text = (const unsigned char *)bytes;
    size_t offset = 0;
    while (offset < n_bytes) {
        size_t length = utf8_sequence_length(text + offset, n_bytes - offset);
        if (length == 0) {
            break;
        }
        offset += length;
    }
    if (offset == n_bytes) {
        return quill__strbuf_append_json_string(out, bytes, n_bytes);
    }

    /* Slow path: copy with each invalid byte replaced by U+FFFD, then escape. */
    quill_strbuf clean;
    quill__strbuf_init(&clean);
    offset = 0;
    while (offset < n_bytes) {
        size_t length = utf8_sequence_length(text + offset, n_bytes - offset);
        if (length == 0) {
            quill__strbuf_append(&clean, "\xef\xbf\xbd", 3);
            offset++;
            continue;
        }
        quill__strbuf_append(&clean, bytes + offset, length);
        offset += length;
    }
    quill_status status = clean.is_failed ? QUILL_ERR_NOMEM : QUILL_OK;
    if (status == QUILL_OK) {
        status = quill__strbuf_append_json_string(out, clean.data, clean.length);
    }
    quill__strbuf_release(&clean);
    return status;
}

static int64_t clamp_non_negative(int64_t value) {
    return value > 0 ? value : 0;
}

void quill__openai_timings_compute(const quill_usage *usage, int64_t arrival_us,
                                   int64_t first_content_us, quill_timings *out) {
    memset(out, 0, sizeof(*out));
    out->queue_us = clamp_non_negative(usage->queue_us);
    out->prefill_us = clamp_non_negative(usage->prefill_us);
    out->generation_us = clamp_non_negative(usage->generation_us);
    out->ttft_us = first_content_us > 0 ? clamp_non_negative(first_content_us - arrival_us) : 0;

    int64_t n_prefilled = usage->n_prompt_tokens - usage->n_cached_tokens;
    if (out->prefill_us > 0 && n_prefilled > 0) {
        out->prefill_tokens_per_second = (double)n_prefilled * 1e6 / (double)out->prefill_us;
    }

    /* The first token comes out of the prefill pass, so decoding produced the rest. */
    int64_t n_decoded = usage->n_completion_tokens - 1;
    if (out->generation_us > 0 && n_decoded > 0) {
        out->decode_tokens_per_second = (double)n_decoded * 1e6 / (double)out->generation_us;
    }
}

static quill_status append_usd(quill_strbuf *out, const char *key, int64_t amount_picousd) {
    char usd[QUILL_COST_USD_TEXT_BYTES];
    return quill__strbuf_appendf(out, "\"%s\":%s", key,
                                 quill__cost_format_usd(amount_picousd, usd, sizeof(usd)));
}

static double us_to_ms(int64_t duration_us) {
    return (double)duration_us / 1000.0;
}

quill_status quill__openai_append_usage(quill_strbuf *out, int64_t n_prompt_tokens,
                                        int64_t n_cached_tokens, int64_t n_completion_tokens,
                                        const quill_cost *cost, const quill_timings *timings) {
    quill__strbuf_appendf(out,
                          "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                          "\"total_tokens\":%lld,\"prompt_tokens_details\":{\"cached_tokens\":"
                          "%lld},\"cost\":{",
                          (long long)n_prompt_tokens, (long long)n_completion_tokens,
                          (long long)(n_prompt_tokens + n_completion_tokens),
                          (long long)n_cached_tokens);
    append_usd(out, "input", cost->input_picousd);
    quill__strbuf_append_char(out, ',');
    append_usd(out, "cached_input", cost->cached_input_picousd);
    quill__strbuf_append_char(out, ',');
    append_usd(out, "output", cost->output_picousd);
    quill__strbuf_append_char(out, ',');
    append_usd(out, "total", cost->total_picousd);
    return quill__strbuf_appendf(
        out,
        ",\"currency\":\"USD\"},\"timings\":{\"queue_ms\":%.3f,\"ttft_ms\":%.3f,"
        "\"prefill_ms\":%.3f,\"generation_ms\":%.3f,\"prefill_tokens_per_second\":%.2f,"
        "\"decode_tokens_per_second\":%.2f}}",
        us_to_ms(timings->queue_us), us_to_ms(timings->ttft_us), us_to_ms(timings->prefill_us),
        us_to_ms(timings->generation_us), timings->prefill_tokens_per_second,
        timings->decode_tokens_per_second);
}

static double logprob_for_json(float logprob) {
    return isfinite(logprob) && logprob > LOGPROB_FLOOR ? (double)logprob : LOGPROB_FLOOR;
}

/* Writes a token's piece into piece and returns its length (cut at TOKEN_PIECE_MAX_BYTES). */
static size_t token_piece(const quill_tokenizer *tokenizer, int32_t token,
                          char piece[TOKEN_PIECE_MAX_BYTES]) {
    int64_t n_bytes = quill_tokenizer_token_bytes(tokenizer, token, false, piece,
                                                  TOKEN_PIECE_MAX_BYTES);
    if (n_bytes < 0) {
        return 0;
    }
    return n_bytes > TOKEN_PIECE_MAX_BYTES ? TOKEN_PIECE_MAX_BYTES : (size_t)n_bytes;
}

/* Appends {"token": ..., "logprob": ..., "bytes": [...]} without the closing brace. */
static void append_chat_token(quill_strbuf *out, const quill_tokenizer *tokenizer, int32_t token,
                              float logprob) {
    char piece[TOKEN_PIECE_MAX_BYTES];
    size_t n_bytes = token_piece(tokenizer, token, piece);
    quill__strbuf_append_cstr(out, "{\"token\":");
    quill__openai_append_text(out, piece, n_bytes);
    quill__strbuf_appendf(out, ",\"logprob\":%.6g,\"bytes\":[", logprob_for_json(logprob));
    for (size_t i = 0; i < n_bytes; i++) {
        quill__strbuf_appendf(out, "%s%u", i > 0 ? "," : "", (unsigned)(unsigned char)piece[i]);
    }
    quill__strbuf_append_char(out, ']');
}

quill_status quill__openai_append_chat_logprobs(quill_strbuf *out,
                                                const quill_tokenizer *tokenizer,
                                                const quill_generated_token *tokens,
                                                int32_t n_tokens, int64_t n_written) {
    for (int32_t i = 0; i < n_tokens; i++) {
        if (n_written + i > 0) {
            quill__strbuf_append_char(out, ',');
        }
        append_chat_token(out, tokenizer, tokens[i].token, tokens[i].logprob);
        quill__strbuf_append_cstr(out, ",\"top_logprobs\":[");
        for (int32_t k = 0; k < tokens[i].n_top; k++) {
            if (k > 0) {
                quill__strbuf_append_char(out, ',');
            }
            append_chat_token(out, tokenizer, tokens[i].top[k].token, tokens[i].top[k].logprob);
            quill__strbuf_append_char(out, '}');
        }
        quill__strbuf_append_cstr(out, "]}");
    }
    return out->is_failed ? QUILL_ERR_NOMEM : QUILL_OK;
}

quill_status quill__openai_append_completion_logprobs(quill_strbuf *out,
                                                      const quill_tokenizer *tokenizer,
                                                      const quill_generated_token *tokens,
                                                      int32_t n_tokens,
                                                      int64_t *text_offset_bytes) {
    char piece[TOKEN_PIECE_MAX_BYTES];
    quill__strbuf_append_cstr(out, "{\"tokens\":[");
    for (int32_t i = 0; i < n_tokens; i++) {
        size_t n_bytes = token_piece(tokenizer, tokens[i].token, piece);
        quill__strbuf_append_cstr(out, i > 0 ? "," : "");
        quill__openai_append_text(out, piece, n_bytes);
    }
    quill__strbuf_append_cstr(out, "],\"token_logprobs\":[");
    for (int32_t i = 0; i < n_tokens; i++) {
        quill__strbuf_appendf(out, "%s%.6g", i > 0 ? "," : "",
                              logprob_for_json(tokens[i].logprob));
    }

    /* top_logprobs: one object per token, mapping each alternative's text to its logprob. */
    quill__strbuf_append_cstr(out, "],\"top_logprobs\":[");
    for (int32_t i = 0; i < n_tokens; i++) {
        quill__strbuf_append_cstr(out, i > 0 ? ",{" : "{");
        for (int32_t k = 0; k < tokens[i].n_top; k++) {
            size_t n_bytes = token_piece(tokenizer, tokens[i].top[k].token, piece);
            quill__strbuf_append_cstr(out, k > 0 ? "," : "");
            quill__openai_append_text(out, piece, n_bytes);
            quill__strbuf_appendf(out, ":%.6g", logprob_for_json(tokens[i].top[k].logprob));
        }
        quill__strbuf_append_char(out, '}');
    }

    quill__strbuf_append_cstr(out, "],\"text_offset\":[");
    for (int32_t i = 0; i < n_tokens; i++) {
        size_t n_bytes = token_piece(tokenizer, tokens[i].token, piece);
        quill__strbuf_appendf(out, "%s%lld", i > 0 ? "," : "", (long long)*text_offset_bytes);
        *text_offset_bytes += (int64_t)n_bytes;
    }
    quill__strbuf_append_cstr(out, "]}");
    return out->is_failed ? QUILL_ERR_NOMEM : QUILL_OK;
}
