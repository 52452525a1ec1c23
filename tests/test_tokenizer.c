/*
 * Unit tests of the tokenizers on tiny vocabularies built with the GGUF writer, so no data folder
 * is needed. They cover SentencePiece merges and byte fallback, special-token matching (flags
 * and byte ranges), end-of-generation ids, byte-level BPE, WordPiece normalization, decoding
 * (whole and streaming), load errors, and the tokenize/detokenize commands.
 */
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gguf/gguf_writer.h"
#include "quill/gguf.h"
#include "quill/status.h"
#include "quill/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"

/* Extra tokens of the tiny SPM vocabulary, after <unk>, <s>, </s> and the 256 byte tokens. */
static const char *const spm_words[] = {
    "\xe2\x96\x81", "h", "e", "l", "o", "\xe2\x96\x81h", "ll", "\xe2\x96\x81he",
    "llo", "\xe2\x96\x81hello", "w", "\xe2\x96\x81w", "<|im_end|>", "<tool>", "ab", "bc",
    "a", "b", "c",
};
/* Scores of spm_words: higher merges first. "ab" and "bc" tie so the leftmost pair wins. */
static const float spm_scores[] = {
    -1.0f, -2.0f, -2.0f, -2.0f, -2.0f, -0.5f, -0.6f, -0.4f,
    -0.3f, -0.1f, -2.0f, -0.7f, 0.0f, 0.0f, -0.2f, -0.2f,
    -3.0f, -3.0f, -3.0f,
};
enum { SPM_FIRST_WORD = 259, SPM_N_TOKENS = 259 + 19 };

static int32_t spm_id(const char *text) {
    for (int i = 0; i < (int)(sizeof(spm_words) / sizeof(spm_words[0])); i++) {
        if (strcmp(spm_words[i], text) == 0) {
            return SPM_FIRST_WORD + i;
        }
    }
    return -1;
}

/* Writes the tiny SPM vocabulary into a writer; the caller adds keys and writes it. */
static quill_gguf_writer *spm_writer(void) {
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    const char *texts[SPM_N_TOKENS];
    float scores[SPM_N_TOKENS];
    int32_t kinds[SPM_N_TOKENS];
    static char byte_texts[256][8];
    texts[0] = "<unk>";
    texts[1] = "<s>";
    texts[2] = "</s>";
    kinds[0] = QUILL_TOKEN_UNKNOWN;
    kinds[1] = QUILL_TOKEN_CONTROL;
    kinds[2] = QUILL_TOKEN_CONTROL;
    scores[0] = scores[1] = scores[2] = 0.0f;
    for (int b = 0; b < 256; b++) {
        snprintf(byte_texts[b], sizeof(byte_texts[b]), "<0x%02X>", b);
        texts[3 + b] = byte_texts[b];
        kinds[3 + b] = QUILL_TOKEN_BYTE;
        scores[3 + b] = 0.0f;
    }
    for (int i = 0; i < SPM_N_TOKENS - SPM_FIRST_WORD; i++) {
        texts[SPM_FIRST_WORD + i] = spm_words[i];
        scores[SPM_FIRST_WORD + i] = spm_scores[i];
        kinds[SPM_FIRST_WORD + i] = QUILL_TOKEN_NORMAL;
    }
    kinds[spm_id("<|im_end|>")] = QUILL_TOKEN_CONTROL;
    kinds[spm_id("<tool>")] = QUILL_TOKEN_USER_DEFINED;
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "llama"),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts,
                                                         SPM_N_TOKENS),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_f32_array(writer, "tokenizer.ggml.scores", scores,
                                                      SPM_N_TOKENS),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds,
                                                      SPM_N_TOKENS),
                     QUILL_OK);
    return writer;
}

/* Loads a tokenizer from a writer's in-memory file; returns the status, *out on success. */
static quill_status load_from_writer(quill_gguf_writer *writer, quill_tokenizer **out) {
    void *data = NULL;
    size_t n_bytes = 0;
    quill_gguf *file = NULL;
    assert_int_equal(quill__gguf_writer_write_memory(writer, &data, &n_bytes), QUILL_OK);
    assert_int_equal(quill_gguf_open_memory(data, n_bytes, "tiny.gguf", &file), QUILL_OK);
    quill_status status = quill_tokenizer_load(file, out);
    quill_gguf_close(file);
    quill__free(data);
    quill__gguf_writer_destroy(writer);
    return status;
}

static quill_tokenizer *spm_tokenizer(void) {
    quill_tokenizer *tokenizer = NULL;
    assert_int_equal(load_from_writer(spm_writer(), &tokenizer), QUILL_OK);
    return tokenizer;
}

/* Encodes text and checks the ids. */
static void expect_tokens(const quill_tokenizer *tokenizer, const char *text, uint32_t flags,
                          const int32_t *expected, int64_t n_expected) {
    int32_t *tokens = NULL;
    int64_t n_tokens = -1;
    assert_int_equal(quill_tokenizer_encode(tokenizer, text, strlen(text), flags, &tokens,
                                            &n_tokens),
                     QUILL_OK);
    assert_int_equal(n_tokens, n_expected);
    for (int64_t i = 0; i < n_expected; i++) {
        assert_int_equal(tokens[i], expected[i]);
    }
    quill_tokens_free(tokens);
}

static void test_spm_merges_by_score(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    int32_t expected[] = {spm_id("\xe2\x96\x81hello")};
    expect_tokens(tokenizer, "hello", 0, expected, 1);
    int32_t expected_two[] = {spm_id("\xe2\x96\x81hello"), spm_id("\xe2\x96\x81w"), spm_id("o")};
    expect_tokens(tokenizer, "hello wo", 0, expected_two, 3);
    quill_tokenizer_destroy(tokenizer);
}

static void test_spm_tie_takes_leftmost(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    /* "▁abc": ab and bc score the same; the leftmost pair merges, leaving "c". */
    int32_t expected[] = {spm_id("\xe2\x96\x81"), spm_id("ab"), spm_id("c")};
    expect_tokens(tokenizer, "abc", 0, expected, 3);
    quill_tokenizer_destroy(tokenizer);
}

static void test_spm_byte_fallback(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    /* "é" (C3 A9) has no token: two byte tokens <0xC3> <0xA9> (ids 3 + byte). */
    int32_t expected[] = {spm_id("\xe2\x96\x81"), 3 + 0xC3, 3 + 0xA9};
    expect_tokens(tokenizer, "\xc3\xa9", 0, expected, 3);
    quill_tokenizer_destroy(tokenizer);
}

static void test_spm_adds_bos_by_default(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    assert_true(quill_tokenizer_adds_bos(tokenizer));
    assert_false(quill_tokenizer_adds_eos(tokenizer));
    assert_int_equal(quill_tokenizer_bos(tokenizer), 1);
    assert_int_equal(quill_tokenizer_eos(tokenizer), 2);
    int32_t expected[] = {1, spm_id("\xe2\x96\x81hello")};
    expect_tokens(tokenizer, "hello", QUILL_TOKENIZE_ADD_SPECIAL, expected, 2);
    int32_t only_bos[] = {1};
    expect_tokens(tokenizer, "", QUILL_TOKENIZE_ADD_SPECIAL, only_bos, 1);
    expect_tokens(tokenizer, "", 0, NULL, 0);
    quill_tokenizer_destroy(tokenizer);
}

static void test_spm_flags_from_file(void **state) {
    (void)state;
    quill_gguf_writer *writer = spm_writer();
    assert_int_equal(quill__gguf_writer_set_bool(writer, "tokenizer.ggml.add_bos_token", false),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_bool(writer, "tokenizer.ggml.add_eos_token", true),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_bool(writer, "tokenizer.ggml.add_space_prefix",
                                                 false),
                     QUILL_OK);
    quill_tokenizer *tokenizer = NULL;
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_OK);
    int32_t expected[] = {spm_id("h"), spm_id("e"), spm_id("llo"), 2};
    expect_tokens(tokenizer, "hello", QUILL_TOKENIZE_ADD_SPECIAL, expected, 4);
    quill_tokenizer_destroy(tokenizer);
}

static void test_special_needs_parse_flag(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    int32_t end = spm_id("<|im_end|>");
    int32_t parsed[] = {spm_id("\xe2\x96\x81hello"), end, spm_id("\xe2\x96\x81hello")};
    expect_tokens(tokenizer, "hello<|im_end|>hello", QUILL_TOKENIZE_PARSE_SPECIAL, parsed, 3);

    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    const char *text = "hello<|im_end|>";
    assert_int_equal(quill_tokenizer_encode(tokenizer, text, strlen(text), 0, &tokens, &n_tokens),
                     QUILL_OK);
    for (int64_t i = 0; i < n_tokens; i++) {
        assert_int_not_equal(tokens[i], end);
    }
    quill_tokens_free(tokens);
    quill_tokenizer_destroy(tokenizer);
}

static void test_special_user_defined_always(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    int32_t expected[] = {spm_id("\xe2\x96\x81hello"), spm_id("<tool>")};
    expect_tokens(tokenizer, "hello<tool>", 0, expected, 2);
    quill_tokenizer_destroy(tokenizer);
}

static void test_special_ranges_limit_matches(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    int32_t end = spm_id("<|im_end|>");
    /* Two occurrences; only the second (bytes 20..30) lies in a range. */
    const char *text = "<|im_end|>hellohello<|im_end|>";
    quill_special_range ranges[] = {{20, 10}};
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    assert_int_equal(quill_tokenizer_encode_ranges(tokenizer, text, strlen(text), 0, ranges, 1,
                                                   &tokens, &n_tokens),
                     QUILL_OK);
    int64_t n_end = 0;
    for (int64_t i = 0; i < n_tokens; i++) {
        n_end += tokens[i] == end;
    }
    assert_int_equal(n_end, 1);
    assert_int_equal(tokens[n_tokens - 1], end);
    quill_tokens_free(tokens);

    quill_special_range bad[] = {{25, 10}};
    assert_int_equal(quill_tokenizer_encode_ranges(tokenizer, text, strlen(text), 0, bad, 1,
                                                   &tokens, &n_tokens),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "special range 0"));
    assert_null(tokens);
    quill_tokenizer_destroy(tokenizer);
}

static void test_eog_includes_known_texts(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    assert_true(quill_tokenizer_is_eog(tokenizer, 2));
    assert_true(quill_tokenizer_is_eog(tokenizer, spm_id("<|im_end|>")));
    assert_false(quill_tokenizer_is_eog(tokenizer, 1));
    assert_false(quill_tokenizer_is_eog(tokenizer, spm_id("h")));
    assert_false(quill_tokenizer_is_eog(tokenizer, -1));
    assert_false(quill_tokenizer_is_eog(tokenizer, SPM_N_TOKENS));
    quill_tokenizer_destroy(tokenizer);
}

static void test_eos_key_overrides_default(void **state) {
    (void)state;
    quill_gguf_writer *writer = spm_writer();
    int32_t tool = spm_id("<tool>");
    assert_int_equal(quill__gguf_writer_set_u32(writer, "tokenizer.ggml.eos_token_id",
                                                (uint32_t)tool),
                     QUILL_OK);
    quill_tokenizer *tokenizer = NULL;
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_OK);
    assert_int_equal(quill_tokenizer_eos(tokenizer), tool);
    assert_true(quill_tokenizer_is_eog(tokenizer, tool));
    quill_tokenizer_destroy(tokenizer);
}

static void test_accessors_report_vocab(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    assert_int_equal(quill_tokenizer_type(tokenizer), QUILL_VOCAB_SPM);
    assert_string_equal(quill_tokenizer_type_name(tokenizer), "llama");
    assert_string_equal(quill_tokenizer_pre_name(tokenizer), "default");
    assert_int_equal(quill_tokenizer_n_vocab(tokenizer), SPM_N_TOKENS);
    assert_string_equal(quill_tokenizer_token_text(tokenizer, 3 + 0x0A), "<0x0A>");
    assert_null(quill_tokenizer_token_text(tokenizer, SPM_N_TOKENS));
    assert_int_equal(quill_tokenizer_find_token(tokenizer, "ll"), spm_id("ll"));
    assert_int_equal(quill_tokenizer_find_token(tokenizer, "zz"), -1);
    assert_int_equal(quill_tokenizer_token_kind(tokenizer, 3), QUILL_TOKEN_BYTE);
    assert_int_equal(quill_tokenizer_token_kind(tokenizer, 0), QUILL_TOKEN_UNKNOWN);
    quill_tokenizer_destroy(tokenizer);
}

static void test_token_bytes_pieces(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    char buffer[16];
    assert_int_equal(quill_tokenizer_token_bytes(tokenizer, spm_id("\xe2\x96\x81hello"), false,
                                                 buffer, sizeof(buffer)),
                     6);
    assert_memory_equal(buffer, " hello", 6);
    assert_int_equal(quill_tokenizer_token_bytes(tokenizer, 3 + 0x41, false, buffer, 16), 1);
    assert_int_equal(buffer[0], 'A');
    assert_int_equal(quill_tokenizer_token_bytes(tokenizer, 1, false, buffer, 16), 0);
    assert_int_equal(quill_tokenizer_token_bytes(tokenizer, 1, true, buffer, 16), 3);
    assert_memory_equal(buffer, "<s>", 3);
    /* A short buffer gets a truncated copy, and the full length is returned. */
    assert_int_equal(quill_tokenizer_token_bytes(tokenizer, spm_id("\xe2\x96\x81hello"), false,
                                                 buffer, 3),
                     6);
    assert_memory_equal(buffer, " he", 3);
    assert_true(quill_tokenizer_token_bytes(tokenizer, SPM_N_TOKENS, false, buffer, 16) < 0);
    assert_non_null(strstr(quill_error_message(), "out of range"));
    quill_tokenizer_destroy(tokenizer);
}

static void test_decode_strips_dummy_prefix(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    int32_t tokens[] = {1, spm_id("\xe2\x96\x81hello"), spm_id("\xe2\x96\x81w"), spm_id("o")};
    char *text = NULL;
    size_t n_bytes = 0;
    assert_int_equal(quill_tokenizer_decode(tokenizer, tokens, 4, false, &text, &n_bytes),
                     QUILL_OK);
    assert_string_equal(text, "hello wo");
    assert_int_equal(n_bytes, 8);
    quill_text_free(text);
    assert_int_equal(quill_tokenizer_decode(tokenizer, tokens, 4, true, &text, &n_bytes),
                     QUILL_OK);
    assert_string_equal(text, "<s>hello wo");
    quill_text_free(text);
    int32_t bad[] = {spm_id("h"), -5};
    assert_int_equal(quill_tokenizer_decode(tokenizer, bad, 2, false, &text, &n_bytes),
                     QUILL_ERR_INVALID_ARG);
    assert_null(text);
    quill_tokenizer_destroy(tokenizer);
}

/* Feeds byte tokens and returns what was released, NUL-terminated, in out. */
static size_t stream_bytes(quill_detokenizer *decoder, const uint8_t *bytes, size_t n_bytes,
                           bool flush, char *out, size_t *n_after_each) {
    size_t capacity = quill_detokenizer_max_bytes(decoder->tokenizer);
    char *chunk = malloc(capacity);
    size_t length = 0;
    for (size_t i = 0; i < n_bytes; i++) {
        size_t n_chunk = 0;
        assert_int_equal(quill_detokenizer_feed(decoder, 3 + bytes[i], chunk, capacity, &n_chunk),
                         QUILL_OK);
        memcpy(out + length, chunk, n_chunk);
        length += n_chunk;
        if (n_after_each != NULL) {
            n_after_each[i] = length;
        }
    }
    if (flush) {
        size_t n_chunk = 0;
        assert_int_equal(quill_detokenizer_flush(decoder, chunk, capacity, &n_chunk), QUILL_OK);
        memcpy(out + length, chunk, n_chunk);
        length += n_chunk;
    }
    out[length] = '\0';
    free(chunk);
    return length;
}

static void test_stream_emoji_split_bytes(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    quill_detokenizer decoder;
    quill_detokenizer_init(&decoder, tokenizer);
    const uint8_t llama[] = {0xF0, 0x9F, 0xA6, 0x99}; /* U+1F999 */
    char out[64];
    size_t n_after[4];
    size_t n_out = stream_bytes(&decoder, llama, 4, true, out, n_after);
    assert_int_equal(n_after[0], 0);
    assert_int_equal(n_after[1], 0);
    assert_int_equal(n_after[2], 0);
    assert_int_equal(n_after[3], 4);
    assert_int_equal(n_out, 4);
    assert_memory_equal(out, llama, 4);
    quill_tokenizer_destroy(tokenizer);
}

static void test_stream_cjk_split_bytes(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    quill_detokenizer decoder;
    quill_detokenizer_init(&decoder, tokenizer);
    const uint8_t text[] = {0xE4, 0xB8, 0xAD, 0xE6, 0x96, 0x87}; /* 中文 */
    char out[64];
    size_t n_after[6];
    size_t n_out = stream_bytes(&decoder, text, 6, true, out, n_after);
    assert_int_equal(n_after[1], 0);
    assert_int_equal(n_after[2], 3);
    assert_int_equal(n_after[4], 3);
    assert_int_equal(n_after[5], 6);
    assert_int_equal(n_out, 6);
    assert_memory_equal(out, text, 6);
    quill_tokenizer_destroy(tokenizer);
}

static void test_stream_invalid_replaced(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    quill_detokenizer decoder;
    quill_detokenizer_init(&decoder, tokenizer);
    decoder.replace_invalid = true;
    /* A stray continuation byte, then a lead byte cut short by 'h'. */
    const uint8_t bytes[] = {0x80, 0xE4, 0xB8, 'h'};
    char out[64];
    size_t n_out = stream_bytes(&decoder, bytes, 4, true, out, NULL);
    assert_int_equal(n_out, 7);
    assert_memory_equal(out, "\xef\xbf\xbd\xef\xbf\xbdh", 7);
    quill_tokenizer_destroy(tokenizer);
}

static void test_stream_invalid_raw(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    quill_detokenizer decoder;
    quill_detokenizer_init(&decoder, tokenizer);
    const uint8_t bytes[] = {0xFF, 'a', 0xC3, 'b'};
    char out[64];
    size_t n_out = stream_bytes(&decoder, bytes, 4, true, out, NULL);
    assert_int_equal(n_out, 4);
    assert_memory_equal(out, bytes, 4);
    quill_tokenizer_destroy(tokenizer);
}

static void test_stream_flush_releases_tail(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    quill_detokenizer decoder;
    quill_detokenizer_init(&decoder, tokenizer);
    const uint8_t tail[] = {'o', 0xE4, 0xB8}; /* ends inside a 3-byte character */
    char out[64];
    size_t n_after[3];
    size_t n_out = stream_bytes(&decoder, tail, 3, false, out, n_after);
    assert_int_equal(n_out, 1);
    size_t capacity = quill_detokenizer_max_bytes(tokenizer);
    char *chunk = malloc(capacity);
    size_t n_chunk = 0;
    assert_int_equal(quill_detokenizer_flush(&decoder, chunk, capacity, &n_chunk), QUILL_OK);
    assert_int_equal(n_chunk, 2);
    assert_memory_equal(chunk, "\xe4\xb8", 2);
    assert_int_equal(quill_detokenizer_flush(&decoder, chunk, capacity, &n_chunk), QUILL_OK);
    assert_int_equal(n_chunk, 0);

    quill_detokenizer_init(&decoder, tokenizer);
    decoder.replace_invalid = true;
    stream_bytes(&decoder, tail, 3, false, out, NULL);
    assert_int_equal(quill_detokenizer_flush(&decoder, chunk, capacity, &n_chunk), QUILL_OK);
    assert_int_equal(n_chunk, 3);
    assert_memory_equal(chunk, "\xef\xbf\xbd", 3);
    free(chunk);
    quill_tokenizer_destroy(tokenizer);
}

static void test_stream_skips_leading_space(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = spm_tokenizer();
    quill_detokenizer decoder;
    quill_detokenizer_init(&decoder, tokenizer);
    decoder.skip_leading_space = true;
    size_t capacity = quill_detokenizer_max_bytes(tokenizer);
    char *chunk = malloc(capacity);
    size_t n_chunk = 0;
    assert_int_equal(quill_detokenizer_feed(&decoder, 1, chunk, capacity, &n_chunk), QUILL_OK);
    assert_int_equal(n_chunk, 0);
    assert_int_equal(quill_detokenizer_feed(&decoder, spm_id("\xe2\x96\x81hello"), chunk,
                                            capacity, &n_chunk),
                     QUILL_OK);
    assert_int_equal(n_chunk, 5);
    assert_memory_equal(chunk, "hello", 5);
    assert_int_equal(quill_detokenizer_feed(&decoder, spm_id("\xe2\x96\x81w"), chunk, capacity,
                                            &n_chunk),
                     QUILL_OK);
    assert_int_equal(n_chunk, 2);
    assert_memory_equal(chunk, " w", 2);
    assert_int_equal(quill_detokenizer_feed(&decoder, 2, chunk, 1, &n_chunk), QUILL_OK);
    assert_int_equal(quill_detokenizer_feed(&decoder, spm_id("\xe2\x96\x81hello"), chunk, 2,
                                            &n_chunk),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "too small"));
    free(chunk);
    quill_tokenizer_destroy(tokenizer);
}

/* GPT-2 byte-level texts of the tiny BPE vocabulary ("Ġ" is the space). */
static const char *const bpe_texts[] = {
    "a", "b", "c", "\xc4\xa0", "ab", "\xc4\xa0" "a", "\xc4\xa0" "ab", "1", "2", "!",
    "<|endoftext|>", "abc",
};
enum { BPE_N_TOKENS = 12 };

static quill_gguf_writer *bpe_writer(const char *pre) {
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    int32_t kinds[BPE_N_TOKENS];
    for (int i = 0; i < BPE_N_TOKENS; i++) {
        kinds[i] = QUILL_TOKEN_NORMAL;
    }
    kinds[10] = QUILL_TOKEN_CONTROL;
    const char *merges[] = {"\xc4\xa0 a", "a b", "\xc4\xa0" "a b"};
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "gpt2"),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.pre", pre), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens",
                                                         bpe_texts, BPE_N_TOKENS),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds,
                                                      BPE_N_TOKENS),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.merges", merges,
                                                         3),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "tokenizer.ggml.eos_token_id", 10),
                     QUILL_OK);
    return writer;
}

static void test_bpe_merges_by_rank(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = NULL;
    assert_int_equal(load_from_writer(bpe_writer("gpt-2"), &tokenizer), QUILL_OK);
    /* "ab ab": pre-tokens "ab" and " ab"; "Ġ a" ranks before "a b", so " ab" becomes "Ġa" and
     * then "Ġab" (6). */
    int32_t expected[] = {4, 6};
    expect_tokens(tokenizer, "ab ab", 0, expected, 2);
    /* gpt-2 splits digits as one run: "12" is no token, so its byte tokens follow. */
    int32_t digits[] = {7, 8, 9};
    expect_tokens(tokenizer, "12!", 0, digits, 3);
    assert_false(quill_tokenizer_adds_bos(tokenizer));
    assert_true(quill_tokenizer_is_eog(tokenizer, 10));
    char *text = NULL;
    size_t n_bytes = 0;
    assert_int_equal(quill_tokenizer_decode(tokenizer, expected, 2, false, &text, &n_bytes),
                     QUILL_OK);
    assert_string_equal(text, "ab ab");
    quill_text_free(text);
    quill_tokenizer_destroy(tokenizer);
}

static void test_bpe_ignore_merges_llama3(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = NULL;
    /* "abc" is a token but no merge builds it: Llama 3 emits it whole, GPT-2 does not. */
    assert_int_equal(load_from_writer(bpe_writer("llama-bpe"), &tokenizer), QUILL_OK);
    int32_t whole[] = {11};
    expect_tokens(tokenizer, "abc", 0, whole, 1);
    assert_true(quill_tokenizer_adds_bos(tokenizer));
    quill_tokenizer_destroy(tokenizer);

    assert_int_equal(load_from_writer(bpe_writer("gpt-2"), &tokenizer), QUILL_OK);
    int32_t merged[] = {4, 2};
    expect_tokens(tokenizer, "abc", 0, merged, 2);
    quill_tokenizer_destroy(tokenizer);
}

static void test_bpe_unknown_pre_rejected(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = NULL;
    assert_int_equal(load_from_writer(bpe_writer("mystery-pre"), &tokenizer),
                     QUILL_ERR_UNSUPPORTED);
    assert_null(tokenizer);
    assert_non_null(strstr(quill_error_message(), "'mystery-pre'"));
    assert_non_null(strstr(quill_error_message(), "llama-bpe"));
    assert_non_null(strstr(quill_error_message(), "qwen2"));
}

static void test_bpe_invalid_utf8_input(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = NULL;
    assert_int_equal(load_from_writer(bpe_writer("qwen2"), &tokenizer), QUILL_OK);
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    const char text[] = "ab\xff\xc3";
    assert_int_equal(quill_tokenizer_encode(tokenizer, text, 4, 0, &tokens, &n_tokens), QUILL_OK);
    assert_int_equal(tokens[0], 4);
    quill_tokens_free(tokens);
    quill_tokenizer_destroy(tokenizer);
}

static void test_pretokenizer_every_name_compiles(void **state) {
    (void)state;
    const char *names[] = {
        "default",      "llama3",     "llama-bpe",   "falcon3",      "dbrx",       "smaug-bpe",
        "chatglm-bpe",  "deepseek-llm", "deepseek-v3", "deepseek-coder", "falcon",   "starcoder",
        "refact",       "command-r",  "smollm",      "codeshell",    "exaone",     "minerva-7b",
        "gpt-2",        "phi-2",      "roberta-bpe", "mpt",          "olmo",       "jais",
        "qwen2",        "deepseek-r1-qwen", "megrez", "stablelm2",   "poro-chat",  "bloom",
        "gpt3-finnish", "viking",     "tekken",      "chameleon",    "jina-v2-code",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        quill__pretokenizer *pretokenizer = NULL;
        quill_status status = quill__pretokenizer_create(names[i], &pretokenizer);
        if (status != QUILL_OK) {
            fail_msg("pre-tokenizer %s: %s", names[i], quill_error_message());
        }
        quill__pretokenizer_destroy(pretokenizer);
    }
}

static quill_tokenizer *wordpiece_tokenizer(void) {
    const char *texts[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "\xe2\x96\x81hello",
                           "\xe2\x96\x81" "cafe", "\xe2\x96\x81,", "ing", "\xe2\x96\x81sing",
                           "\xe2\x96\x81\xe4\xb8\xad"};
    int32_t kinds[] = {QUILL_TOKEN_CONTROL, QUILL_TOKEN_CONTROL, QUILL_TOKEN_CONTROL,
                       QUILL_TOKEN_CONTROL, QUILL_TOKEN_NORMAL,  QUILL_TOKEN_NORMAL,
                       QUILL_TOKEN_NORMAL,  QUILL_TOKEN_NORMAL,  QUILL_TOKEN_NORMAL,
                       QUILL_TOKEN_NORMAL};
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "bert"),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts,
                                                         10),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds,
                                                      10),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "tokenizer.ggml.bos_token_id", 2),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "tokenizer.ggml.seperator_token_id", 3),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "tokenizer.ggml.unknown_token_id", 1),
                     QUILL_OK);
    quill_tokenizer *tokenizer = NULL;
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_OK);
    return tokenizer;
}

static void test_wordpiece_normalizes_and_splits(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = wordpiece_tokenizer();
    /* Expected: lowercase, accents stripped, punctuation and CJK split off, and "##ing" as a
     * continuation. A word no token covers becomes [UNK], and [CLS]/[SEP] surround it all. */
    int32_t expected[] = {2, 4, 6, 5, 8, 7, 9, 1, 3};
    expect_tokens(tokenizer, "HeLLo, Caf\xc3\xa9 singing\xe4\xb8\xad xyz",
                  QUILL_TOKENIZE_ADD_SPECIAL, expected, 9);
    quill_tokenizer_destroy(tokenizer);
}

static void test_load_rejects_bad_vocab(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = NULL;
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_ERR_FORMAT);
    assert_non_null(strstr(quill_error_message(), "tokenizer.ggml.model"));

    writer = spm_writer();
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "rwkv"),
                     QUILL_OK);
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_ERR_UNSUPPORTED);
    assert_non_null(strstr(quill_error_message(), "'rwkv'"));

    writer = spm_writer();
    float scores[3] = {0};
    assert_int_equal(quill__gguf_writer_set_f32_array(writer, "tokenizer.ggml.scores", scores, 3),
                     QUILL_OK);
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_ERR_FORMAT);
    assert_non_null(strstr(quill_error_message(), "tokenizer.ggml.scores"));

}

static void test_load_ignores_out_of_range_special_ids(void **state) {
    (void)state;
    quill_tokenizer *tokenizer = NULL;
    quill_gguf_writer *writer = spm_writer();
    int32_t default_bos = -1;
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_OK);
    default_bos = quill_tokenizer_bos(tokenizer);
    quill_tokenizer_destroy(tokenizer);
    tokenizer = NULL;

    writer = spm_writer();
    assert_int_equal(quill__gguf_writer_set_u32(writer, "tokenizer.ggml.bos_token_id", 99999),
                     QUILL_OK);
    assert_int_equal(
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.seperator_token_id", 0xFFFFFFFFu),
        QUILL_OK);
    assert_int_equal(load_from_writer(writer, &tokenizer), QUILL_OK);
    assert_int_equal(quill_tokenizer_bos(tokenizer), default_bos);
    quill_tokenizer_destroy(tokenizer);
}

static void test_load_survives_alloc_failures(void **state) {
    (void)state;
    void *data = NULL;
    size_t n_bytes = 0;
    quill_gguf_writer *writer = spm_writer();
    assert_int_equal(quill__gguf_writer_write_memory(writer, &data, &n_bytes), QUILL_OK);
    quill__gguf_writer_destroy(writer);
    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open_memory(data, n_bytes, "tiny.gguf", &file), QUILL_OK);
    for (int64_t n = 0; n < 40; n++) {
        quill_tokenizer *tokenizer = NULL;
        quill__alloc_fail_after(n);
        quill_status status = quill_tokenizer_load(file, &tokenizer);
        quill__alloc_fail_after(-1);
        if (status == QUILL_OK) {
            quill_tokenizer_destroy(tokenizer);
            continue;
        }
        assert_int_equal(status, QUILL_ERR_NOMEM);
        assert_null(tokenizer);
    }
    quill_gguf_close(file);
    quill__free(data);
}

/* Writes the tiny SPM vocabulary to a scratch file for the CLI tests. */
static char *write_spm_file(void) {
    char *path = quill_test_tmp_path("tokenizer-cli.gguf");
    quill_gguf_writer *writer = spm_writer();
    assert_int_equal(quill__gguf_writer_write_file(writer, path), QUILL_OK);
    quill__gguf_writer_destroy(writer);
    return path;
}

static char *run_cli(const char *arguments, int *exit_status) {
    char command[1024];
    snprintf(command, sizeof(command), "%s %s 2>&1", quill_test_binary(), arguments);
    return quill_test_run_capture(command, exit_status);
}

static void test_cli_tokenize_prints_ids(void **state) {
    (void)state;
    if (quill_test_binary() == NULL) {
        skip();
    }
    char *path = write_spm_file();
    char arguments[512];
    int exit_status = -1;
    snprintf(arguments, sizeof(arguments), "tokenize -m %s --ids 'hello wo'", path);
    char *output = run_cli(arguments, &exit_status);
    assert_int_equal(exit_status, 0);
    char expected[64];
    snprintf(expected, sizeof(expected), "1 %d %d %d\n", spm_id("\xe2\x96\x81hello"),
             spm_id("\xe2\x96\x81w"), spm_id("o"));
    assert_string_equal(output, expected);
    free(output);

    snprintf(arguments, sizeof(arguments), "tokenize -m %s --no-bos hello", path);
    output = run_cli(arguments, &exit_status);
    assert_int_equal(exit_status, 0);
    snprintf(expected, sizeof(expected), "%d\t\" hello\"\n", spm_id("\xe2\x96\x81hello"));
    assert_string_equal(output, expected);
    free(output);

    snprintf(arguments, sizeof(arguments), "tokenize -m %s --frobnicate x", path);
    output = run_cli(arguments, &exit_status);
    assert_int_equal(exit_status, 2);
    assert_non_null(strstr(output, "--frobnicate"));
    free(output);
    remove(path);
    free(path);
}

static void test_cli_detokenize_checks_ids(void **state) {
    (void)state;
    if (quill_test_binary() == NULL) {
        skip();
    }
    char *path = write_spm_file();
    char arguments[512];
    int exit_status = -1;
    snprintf(arguments, sizeof(arguments), "detokenize -m %s 1 %d,%d", path,
             spm_id("\xe2\x96\x81hello"), spm_id("\xe2\x96\x81w"));
    char *output = run_cli(arguments, &exit_status);
    assert_int_equal(exit_status, 0);
    assert_string_equal(output, "hello w\n");
    free(output);

    snprintf(arguments, sizeof(arguments), "detokenize -m %s 1 5000", path);
    output = run_cli(arguments, &exit_status);
    assert_int_equal(exit_status, 2);
    assert_non_null(strstr(output, "token id 5000 is out of range"));
    free(output);

    snprintf(arguments, sizeof(arguments), "detokenize -m %s 1 x7", path);
    output = run_cli(arguments, &exit_status);
    assert_int_equal(exit_status, 2);
    assert_non_null(strstr(output, "'x7' is not a token id"));
    free(output);

    output = run_cli("detokenize --help", &exit_status);
    assert_int_equal(exit_status, 0);
    assert_non_null(strstr(output, "usage: quill detokenize"));
    free(output);
    remove(path);
    free(path);
}

/* Copies path into a fresh hub cache as owner/repo:vocab.gguf and returns the cache folder,
 * so that -hf resolves to it without any request. */
static char *make_hub_cache(const char *path) {
    char *cache_path = quill_test_tmp_path("tokenizer-hub-cache");
    char command[1024];
    snprintf(command, sizeof(command),
             "rm -rf '%s' && mkdir -p '%s/hub/owner/repo' && cp '%s' '%s/hub/owner/repo/vocab.gguf'",
             cache_path, cache_path, path, cache_path);
    assert_int_equal(system(command), 0);
    return cache_path;
}

static void test_cli_hub_reference_accepted(void **state) {
    (void)state;
    if (quill_test_binary() == NULL) {
        skip();
    }
    char *path = write_spm_file();
    char *cache_path = make_hub_cache(path);
    /* Port 1 on 127.0.0.1 refuses connections, so a request would fail the test. */
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "env QUILL_CACHE_DIR='%s' QUILL_HF_BASE_URL=http://127.0.0.1:1",
             cache_path);
    char arguments[1024];
    int exit_status = -1;
    snprintf(arguments, sizeof(arguments), "tokenize -hf owner/repo:vocab.gguf --ids 'hello wo'");
    char command[2048];
    snprintf(command, sizeof(command), "%s %s %s 2>&1", prefix, quill_test_binary(), arguments);
    char *output = quill_test_run_capture(command, &exit_status);
    assert_int_equal(exit_status, 0);
    char expected[64];
    snprintf(expected, sizeof(expected), "1 %d %d %d\n", spm_id("\xe2\x96\x81hello"),
             spm_id("\xe2\x96\x81w"), spm_id("o"));
    assert_string_equal(output, expected);
    free(output);

    snprintf(command, sizeof(command), "%s %s detokenize --hf-repo owner/repo:vocab.gguf 1 %d 2>&1",
             prefix, quill_test_binary(), spm_id("\xe2\x96\x81hello"));
    output = quill_test_run_capture(command, &exit_status);
    assert_int_equal(exit_status, 0);
    assert_string_equal(output, "hello\n");
    free(output);

    snprintf(command, sizeof(command), "rm -rf '%s'", cache_path);
    assert_int_equal(system(command), 0);
    free(cache_path);
    remove(path);
    free(path);
}

static void test_cli_hub_reference_errors(void **state) {
    (void)state;
    if (quill_test_binary() == NULL) {
        skip();
    }
    int exit_status = -1;
    char *output = run_cli("tokenize -hf badref hello", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_non_null(strstr(output, "hub: invalid reference 'badref'"));
    free(output);

    output = run_cli("detokenize -hf badref 1", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_non_null(strstr(output, "hub: invalid reference 'badref'"));
    free(output);

    output = run_cli("tokenize -m a.gguf -hf owner/repo hello", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_non_null(strstr(output, "exactly one of -m MODEL or -hf"));
    free(output);

    output = run_cli("detokenize 1", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_non_null(strstr(output, "exactly one of -m MODEL or -hf"));
    free(output);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_merges_by_score),
        cmocka_unit_test(test_spm_tie_takes_leftmost),
        cmocka_unit_test(test_spm_byte_fallback),
        cmocka_unit_test(test_spm_adds_bos_by_default),
        cmocka_unit_test(test_spm_flags_from_file),
        cmocka_unit_test(test_special_needs_parse_flag),
        cmocka_unit_test(test_special_user_defined_always),
        cmocka_unit_test(test_special_ranges_limit_matches),
        cmocka_unit_test(test_eog_includes_known_texts),
        cmocka_unit_test(test_eos_key_overrides_default),
        cmocka_unit_test(test_accessors_report_vocab),
        cmocka_unit_test(test_token_bytes_pieces),
        cmocka_unit_test(test_decode_strips_dummy_prefix),
        cmocka_unit_test(test_stream_emoji_split_bytes),
        cmocka_unit_test(test_stream_cjk_split_bytes),
        cmocka_unit_test(test_stream_invalid_replaced),
        cmocka_unit_test(test_stream_invalid_raw),
        cmocka_unit_test(test_stream_flush_releases_tail),
        cmocka_unit_test(test_stream_skips_leading_space),
        cmocka_unit_test(test_bpe_merges_by_rank),
        cmocka_unit_test(test_bpe_ignore_merges_llama3),
        cmocka_unit_test(test_bpe_unknown_pre_rejected),
        cmocka_unit_test(test_bpe_invalid_utf8_input),
        cmocka_unit_test(test_pretokenizer_every_name_compiles),
        cmocka_unit_test(test_wordpiece_normalizes_and_splits),
        cmocka_unit_test(test_load_rejects_bad_vocab),
        cmocka_unit_test(test_load_ignores_out_of_range_special_ids),
        cmocka_unit_test(test_load_survives_alloc_failures),
        cmocka_unit_test(test_cli_tokenize_prints_ids),
        cmocka_unit_test(test_cli_detokenize_checks_ids),
        cmocka_unit_test(test_cli_hub_reference_accepted),
        cmocka_unit_test(test_cli_hub_reference_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
