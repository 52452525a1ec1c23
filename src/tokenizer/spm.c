/*
 * SentencePiece-style encoder (tokenizer.ggml.model = llama), as llama.cpp's llm_tokenizer_spm:
 * spaces become U+2581, the text is split into UTF-8 characters, and adjacent symbols whose
 * concatenation is a vocabulary entry are merged, highest score first (ties: leftmost first),
 * until no pair is left. Symbols that are not tokens fall back to <0xNN> byte tokens.
 *
 * The pending pairs sit in a binary heap (merge_queue.c), so a fragment of n characters costs
 * O(n log n).
 */
#include "tokenizer/tokenizer_internal.h"

#include <string.h>

#include "base/alloc.h"
#include "quill/status.h"
#include "tokenizer/merge_queue.h"

/* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space. */
static const char space_marker[] = "\xe2\x96\x81";

typedef struct symbol {
    int32_t prev;      /* index of the previous live symbol, -1 at the start */
    int32_t next;      /* index of the next live symbol, -1 at the end */
    const char *text;  /* first byte in the escaped text */
    size_t n_bytes;    /* 0 once merged into its left neighbour */
} symbol;

static quill_status try_add_bigram(const quill_tokenizer *tokenizer, const symbol *symbols,
                                   int32_t left, int32_t right, quill__merge_queue *queue) {
    if (left < 0 || right < 0) {
        return QUILL_OK;
    }
    size_t n_bytes = symbols[left].n_bytes + symbols[right].n_bytes;
    int32_t id = quill__tokenizer_lookup(tokenizer, symbols[left].text, n_bytes);
    if (id < 0) {
        return QUILL_OK;
    }
    /* Higher scores merge first, so the queue's priority is the negated score. */
    quill__merge_candidate item = {.left = left, .right = right,
                                   .priority = -(double)tokenizer->scores[id],
                                   .n_bytes = n_bytes};
    return quill__merge_queue_push(queue, item);
}

/* Escapes spaces as U+2581, with one prepended when add_prefix_space is set. */
static char *escape_spaces(const char *text, size_t n_bytes, bool add_prefix_space,
                           size_t *n_escaped) {
    size_t n_spaces = add_prefix_space ? 1 : 0;
    for (size_t i = 0; i < n_bytes; i++) {
        n_spaces += text[i] == ' ';
    }
    size_t n_total = 0;
    if (!quill__size_add(n_bytes, n_spaces * 2, &n_total)) {
        return NULL;
    }
    char *escaped = quill__malloc(n_total + 1);
    if (escaped == NULL) {
        return NULL;
    }
    size_t length = 0;
    if (add_prefix_space) {
        memcpy(escaped, space_marker, 3);
        length = 3;
    }
    for (size_t i = 0; i < n_bytes; i++) {
        if (text[i] == ' ') {
            memcpy(escaped + length, space_marker, 3);
            length += 3;
        } else {
            escaped[length++] = text[i];
        }
    }
    *n_escaped = length;
    return escaped;
}

/* Emits one final symbol: its token, or its bytes as <0xNN> tokens (the unknown token when the
 * vocabulary lacks the byte token). */
static quill_status emit_symbol(const quill_tokenizer *tokenizer, const symbol *item,
                                quill__token_list *out) {
    int32_t id = quill__tokenizer_lookup(tokenizer, item->text, item->n_bytes);
    if (id >= 0) {
        return quill__token_list_push(out, id);
    }
    for (size_t i = 0; i < item->n_bytes; i++) {
        uint8_t byte = (uint8_t)item->text[i];
        id = tokenizer->byte_tokens[byte];
        if (id < 0) {
            id = quill__tokenizer_lookup(tokenizer, &item->text[i], 1);
        }
        if (id < 0) {
            id = tokenizer->unk;
        }
        if (id < 0) {
            return quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: byte 0x%02X has no token "
                                   "and the vocabulary has no unknown token", byte);
        }
        quill_status status = quill__token_list_push(out, id);
        if (status != QUILL_OK) {
            return status;
        }
    }
    return QUILL_OK;
}

static quill_status merge_symbols(const quill_tokenizer *tokenizer, symbol *symbols,
                                  int32_t n_symbols, quill__merge_queue *queue) {
    quill_status status = QUILL_OK;

    /* Seed the queue with every adjacent pair. */
    for (int32_t i = 1; status == QUILL_OK && i < n_symbols; i++) {
        status = try_add_bigram(tokenizer, symbols, i - 1, i, queue);
    }

    /* Merge the best pair until none is left; entries whose symbols changed are stale. */
    while (status == QUILL_OK && queue->n_items > 0) {
        quill__merge_candidate item = quill__merge_queue_pop(queue);
        symbol *left = &symbols[item.left];
        symbol *right = &symbols[item.right];
        if (left->n_bytes == 0 || right->n_bytes == 0 ||
            left->n_bytes + right->n_bytes != item.n_bytes) {
            continue;
        }
        left->n_bytes += right->n_bytes;
        right->n_bytes = 0;
        left->next = right->next;
        if (right->next >= 0) {
            symbols[right->next].prev = item.left;
        }
        status = try_add_bigram(tokenizer, symbols, left->prev, item.left, queue);
        if (status == QUILL_OK) {
            status = try_add_bigram(tokenizer, symbols, item.left, left->next, queue);
        }
    }
    return status;
}

quill_status quill__spm_encode(const quill_tokenizer *tokenizer, const char *text,
                               size_t n_bytes, bool add_prefix_space, quill__token_list *out) {
    quill_status status = QUILL_OK;
    symbol *symbols = NULL;
    quill__merge_queue queue = {0};
    size_t n_escaped = 0;
    char *escaped = escape_spaces(text, n_bytes, add_prefix_space, &n_escaped);
    if (escaped == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu bytes of text",
                               n_bytes);
    }
    if (n_escaped == 0) {
        goto cleanup;
    }
    if (n_escaped > INT32_MAX) {
        status = quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: text of %zu bytes is over "
                                 "the limit of %d bytes per fragment", n_escaped, INT32_MAX);
        goto cleanup;
    }

    /* Split into UTF-8 characters (a stray byte is a character of its own). */
    symbols = quill__malloc_array(n_escaped, sizeof(*symbols));
    if (symbols == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu symbols",
                                 n_escaped);
        goto cleanup;
    }
    int32_t n_symbols = 0;
    for (size_t offset = 0; offset < n_escaped;) {
        size_t length = quill__utf8_sequence_length((uint8_t)escaped[offset]);
        if (length > n_escaped - offset) {
            length = n_escaped - offset;
        }
        symbols[n_symbols] = (symbol){.prev = n_symbols - 1, .next = n_symbols + 1,
                                      .text = escaped + offset, .n_bytes = length};
        n_symbols++;
        offset += length;
    }
    symbols[n_symbols - 1].next = -1;

    status = merge_symbols(tokenizer, symbols, n_symbols, &queue);
    for (int32_t i = 0; status == QUILL_OK && i != -1; i = symbols[i].next) {
        status = emit_symbol(tokenizer, &symbols[i], out);
    }

cleanup:
    quill__merge_queue_release(&queue);
    quill__free(symbols);
    quill__free(escaped);
    return status;
}
