/*
 * WordPiece encoder (tokenizer.ggml.model = bert), as llama.cpp's llm_tokenizer_wpm. The text
 * is normalized per code point (canonical decomposition reduced to its first code point, which
 * strips accents, then lowercase), split at whitespace, and punctuation, ASCII symbols and CJK
 * ideographs become words of their own. Each word, with U+2581 prepended, is covered greedily
 * by the longest vocabulary entries; a word that cannot be covered becomes [UNK].
 *
 * GGUF BERT vocabularies mark word starts with U+2581 and store "##" continuations without the
 * prefix, which is why the greedy match needs no "##" handling here.
 */
#include "tokenizer/tokenizer_internal.h"

#include <string.h>
#include <utf8proc.h>

#include "base/alloc.h"
#include "base/strbuf.h"
#include "quill/status.h"

/* Unicode White_Space code points. */
static bool is_whitespace(uint32_t codepoint) {
    return (codepoint >= 0x09 && codepoint <= 0x0D) || codepoint == 0x20 || codepoint == 0x85 ||
           codepoint == 0xA0 || codepoint == 0x1680 ||
           (codepoint >= 0x2000 && codepoint <= 0x200A) || codepoint == 0x2028 ||
           codepoint == 0x2029 || codepoint == 0x202F || codepoint == 0x205F ||
           codepoint == 0x3000;
}

/* CJK ideograph blocks as in BERT's _is_chinese_char (with the HF Rust code's 0x2B920 start,
 * which llama.cpp follows). */
static bool is_chinese(uint32_t codepoint) {
    return (codepoint >= 0x4E00 && codepoint <= 0x9FFF) ||
           (codepoint >= 0x3400 && codepoint <= 0x4DBF) ||
           (codepoint >= 0x20000 && codepoint <= 0x2A6DF) ||
           (codepoint >= 0x2A700 && codepoint <= 0x2B73F) ||
           (codepoint >= 0x2B740 && codepoint <= 0x2B81F) ||
           (codepoint >= 0x2B920 && codepoint <= 0x2CEAF) ||
           (codepoint >= 0xF900 && codepoint <= 0xFAFF) ||
           (codepoint >= 0x2F800 && codepoint <= 0x2FA1F);
}

/* The first code point of the canonical decomposition (llama.cpp's one-to-one NFD table). */
static uint32_t decompose_first(uint32_t codepoint) {
    utf8proc_int32_t decomposed[8];
    int last_boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)codepoint, decomposed, 8,
                                                 UTF8PROC_DECOMPOSE, &last_boundclass);
    return n >= 1 ? (uint32_t)decomposed[0] : codepoint;
}

typedef enum char_class {
    CHAR_SKIP,      /* dropped: NUL, U+FFFD, control and format characters */
    CHAR_SPACE,     /* ends the current word */
    CHAR_ALONE,     /* a word by itself: punctuation, ASCII symbols, CJK ideographs */
    CHAR_WORD,      /* part of the current word */
} char_class;

static char_class classify(uint32_t codepoint) {
    if (is_whitespace(codepoint)) {
        return CHAR_SPACE;
    }
    utf8proc_category_t category = utf8proc_category((utf8proc_int32_t)codepoint);
    if (codepoint == 0 || codepoint == 0xFFFD || category == UTF8PROC_CATEGORY_CC ||
        category == UTF8PROC_CATEGORY_CF || category == UTF8PROC_CATEGORY_CO ||
        category == UTF8PROC_CATEGORY_CS) {
        return CHAR_SKIP;
    }
    bool is_punctuation = category >= UTF8PROC_CATEGORY_PC && category <= UTF8PROC_CATEGORY_PO;
    bool is_symbol = category >= UTF8PROC_CATEGORY_SM && category <= UTF8PROC_CATEGORY_SO;
    if (is_punctuation || (codepoint < 0x7F && is_symbol) || is_chinese(codepoint)) {
        return CHAR_ALONE;
    }
    return CHAR_WORD;
}

/* Covers one word ("\u2581" + word in `word`) with the longest matching tokens. */
static quill_status encode_word(const quill_tokenizer *tokenizer, const char *word,
                                size_t n_bytes, quill__token_list *out) {
    int64_t n_before = out->n_ids;
    quill_status status = QUILL_OK;
    for (size_t i = 0; status == QUILL_OK && i < n_bytes;) {
        size_t limit = n_bytes - i;
        if (limit > tokenizer->max_token_bytes) {
            limit = tokenizer->max_token_bytes;
        }
        size_t length = limit;
        int32_t id = -1;
        for (; length > 0; length--) {
            id = quill__tokenizer_lookup(tokenizer, word + i, length);
            if (id >= 0) {
                break;
            }
        }
        if (id < 0) {
            out->n_ids = n_before; /* discard the partial cover */
            break;
        }
        status = quill__token_list_push(out, id);
        i += length;
    }
    if (status == QUILL_OK && out->n_ids == n_before && tokenizer->unk >= 0) {
        status = quill__token_list_push(out, tokenizer->unk);
    }
    return status;
}

static quill_status finish_word(const quill_tokenizer *tokenizer, quill_strbuf *word,
                                quill__token_list *out) {
    quill_status status = QUILL_OK;
    if (word->length > 3) {
        status = encode_word(tokenizer, word->data, word->length, out);
    }
    quill__strbuf_clear(word);
    if (status == QUILL_OK) {
        status = quill__strbuf_append(word, "\xe2\x96\x81", 3);
    }
    return status;
}

quill_status quill__wordpiece_encode(const quill_tokenizer *tokenizer, const char *text,
                                     size_t n_bytes, quill__token_list *out) {
    quill_strbuf word;
    quill__strbuf_init(&word);
    quill_status status = quill__strbuf_append(&word, "\xe2\x96\x81", 3);

    for (size_t offset = 0; status == QUILL_OK && offset < n_bytes;) {
        size_t n_used = 0;
        uint32_t codepoint = quill__utf8_decode(text + offset, n_bytes - offset, &n_used);
        offset += n_used;
        codepoint = decompose_first(codepoint);

        char_class kind = classify(codepoint);
        if (kind == CHAR_SKIP) {
            continue;
        }
        if (kind == CHAR_SPACE) {
            status = finish_word(tokenizer, &word, out);
            continue;
        }
        char encoded[4];
        uint32_t lower = (uint32_t)utf8proc_tolower((utf8proc_int32_t)codepoint);
        size_t n_encoded = quill__utf8_encode(lower, encoded);
        if (kind == CHAR_ALONE) {
            status = finish_word(tokenizer, &word, out);
            if (status == QUILL_OK) {
                status = quill__strbuf_append(&word, encoded, n_encoded);
            }
            if (status == QUILL_OK) {
                status = finish_word(tokenizer, &word, out);
            }
        } else {
            status = quill__strbuf_append(&word, encoded, n_encoded);
        }
    }
    if (status == QUILL_OK) {
        status = finish_word(tokenizer, &word, out);
    }
    quill__strbuf_release(&word);
    return status;
}
