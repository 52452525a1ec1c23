/*
 * Byte-level BPE encoder (tokenizer.ggml.model = gpt2), as llama.cpp's llm_tokenizer_bpe: the
 * pre-tokenizer cuts the text into pieces, each piece's bytes are mapped to GPT-2's printable
 * code points, and adjacent symbols are merged by merge rank (lowest first, ties leftmost)
 * until no listed pair is left. With ignore_merges (Llama 3) a piece that is itself a token is
 * emitted whole.
 *
 * Merge ranks live in a hash map keyed by the pair's concatenated text plus the length of its
 * left part, so a candidate pair is looked up straight from the contiguous symbol bytes.
 */
#include "tokenizer/tokenizer_internal.h"

#include <string.h>

#include "base/alloc.h"
#include "quill/status.h"
#include "tokenizer/merge_queue.h"

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * take code points 256.. in byte order. */
static bool is_printable_byte(uint32_t byte) {
    return (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) ||
           (byte >= 174 && byte <= 255);
}

uint32_t quill__bpe_byte_to_codepoint(uint8_t byte) {
    if (is_printable_byte(byte)) {
        return byte;
    }
    uint32_t n_before = 0;
    for (uint32_t b = 0; b < byte; b++) {
        n_before += !is_printable_byte(b);
    }
    return 256 + n_before;
}

int quill__bpe_codepoint_to_byte(uint32_t codepoint) {
    if (codepoint < 256) {
        return is_printable_byte(codepoint) ? (int)codepoint : -1;
    }
    uint32_t index = codepoint - 256;
    for (uint32_t b = 0; b < 256; b++) {
        if (!is_printable_byte(b)) {
            if (index == 0) {
                return (int)b;
            }
            index--;
        }
    }
    return -1;
}

quill_status quill__bpe_init(quill_tokenizer *tokenizer, const quill__vocab_spec *spec) {
    quill_status status = quill__pretokenizer_create(tokenizer->pre_name,
                                                     &tokenizer->pretokenizer);
    if (status != QUILL_OK) {
        return status;
    }

    size_t n_total = 1;
    for (int64_t i = 0; i < spec->n_merges; i++) {
        if (!quill__size_add(n_total, spec->merge_bytes[i], &n_total)) {
            return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: merges overflow size_t");
        }
    }
    tokenizer->merge_storage = quill__malloc(n_total);
    if (tokenizer->merge_storage == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %lld merges",
                               (long long)spec->n_merges);
    }
    status = quill__string_map_init(&tokenizer->merge_ranks, (size_t)spec->n_merges);

    char *cursor = tokenizer->merge_storage;
    for (int64_t i = 0; status == QUILL_OK && i < spec->n_merges; i++) {
        const char *merge = spec->merges[i];
        uint32_t n_bytes = spec->merge_bytes[i];
        /* "left right": the separator is the first space after the first byte. */
        const char *space = n_bytes > 1 ? memchr(merge + 1, ' ', n_bytes - 1) : NULL;
        if (space == NULL) {
            return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: merge %lld ('%.*s') has no "
                                   "space between its two parts; the vocabulary is corrupt",
                                   (long long)i, (int)n_bytes, merge);
        }
        uint32_t n_left = (uint32_t)(space - merge);
        uint32_t n_right = n_bytes - n_left - 1;
        memcpy(cursor, merge, n_left);
        memcpy(cursor + n_left, space + 1, n_right);
        /* The first listing of a pair keeps its rank, as in llama.cpp. */
        if (quill__string_map_get(&tokenizer->merge_ranks, cursor, n_left + n_right, n_left) <
            0) {
            status = quill__string_map_put(&tokenizer->merge_ranks, cursor, n_left + n_right,
                                           n_left, (int32_t)i);
        }
        cursor += n_left + n_right;
    }
    return status;
}

void quill__bpe_release(quill_tokenizer *tokenizer) {
    quill__pretokenizer_destroy(tokenizer->pretokenizer);
    tokenizer->pretokenizer = NULL;
    quill__string_map_release(&tokenizer->merge_ranks);
    quill__free(tokenizer->merge_storage);
    tokenizer->merge_storage = NULL;
}

typedef struct symbol {
    int32_t prev;      /* previous live symbol, -1 at the start */
    int32_t next;      /* next live symbol, -1 at the end */
    uint32_t offset;   /* first byte in the encoded word */
    uint32_t n_bytes;  /* 0 once merged into its left neighbour */
} symbol;

/* Scratch space reused across the pieces of one encode call. */
typedef struct bpe_session {
    const quill_tokenizer *tokenizer;
    quill__token_list *out;    /* where tokens go */
    char *word;                /* byte-level encoded piece */
    size_t word_capacity;      /* bytes allocated for word */
    symbol *symbols;           /* symbols of the piece */
    size_t symbol_capacity;    /* symbols allocated */
    quill__merge_queue queue;  /* candidate pairs, priority = merge rank */
} bpe_session;

static quill_status try_add_bigram(bpe_session *session, int32_t left, int32_t right) {
    if (left < 0 || right < 0) {
        return QUILL_OK;
    }
    const symbol *a = &session->symbols[left];
    const symbol *b = &session->symbols[right];
    int32_t rank = quill__string_map_get(&session->tokenizer->merge_ranks,
                                         session->word + a->offset, a->n_bytes + b->n_bytes,
                                         a->n_bytes);
    if (rank < 0) {
        return QUILL_OK;
    }
    quill__merge_candidate item = {.left = left, .right = right, .priority = rank,
                                   .n_bytes = a->n_bytes + b->n_bytes};
    return quill__merge_queue_push(&session->queue, item);
}

/* Maps the piece's bytes to GPT-2 code points (UTF-8) in session->word. */
static quill_status encode_bytes(bpe_session *session, const char *text, size_t n_bytes,
                                 size_t *n_word) {
    size_t needed = 0;
    if (!quill__size_mul(n_bytes, 2, &needed) || needed > UINT32_MAX) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: pre-token of %zu bytes is "
                               "too long", n_bytes);
    }
    if (needed > session->word_capacity) {
        char *word = quill__realloc(session->word, needed);
        if (word == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for a pre-token "
                                   "of %zu bytes", n_bytes);
        }
        session->word = word;
        session->word_capacity = needed;
    }
    size_t length = 0;
    for (size_t i = 0; i < n_bytes; i++) {
        length += quill__utf8_encode(quill__bpe_byte_to_codepoint((uint8_t)text[i]),
                                     session->word + length);
    }
    *n_word = length;
    return QUILL_OK;
}

static quill_status make_symbols(bpe_session *session, size_t n_word, int32_t *n_symbols) {
    if (n_word > session->symbol_capacity) {
        symbol *symbols = quill__realloc_array(session->symbols, n_word, sizeof(*symbols));
        if (symbols == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu symbols",
                                   n_word);
        }
        session->symbols = symbols;
        session->symbol_capacity = n_word;
    }
    int32_t count = 0;
    for (size_t offset = 0; offset < n_word;) {
        size_t length = quill__utf8_sequence_length((uint8_t)session->word[offset]);
        if (length > n_word - offset) {
            length = n_word - offset;
        }
        session->symbols[count] = (symbol){.prev = count - 1, .next = count + 1,
                                           .offset = (uint32_t)offset,
                                           .n_bytes = (uint32_t)length};
        count++;
        offset += length;
    }
    session->symbols[count - 1].next = -1;
    *n_symbols = count;
    return QUILL_OK;
}

static quill_status merge_symbols(bpe_session *session, int32_t n_symbols) {
    quill_status status = QUILL_OK;
    quill__merge_queue_clear(&session->queue);
    for (int32_t i = 1; status == QUILL_OK && i < n_symbols; i++) {
        status = try_add_bigram(session, i - 1, i);
    }
    while (status == QUILL_OK && session->queue.n_items > 0) {
        quill__merge_candidate item = quill__merge_queue_pop(&session->queue);
        symbol *left = &session->symbols[item.left];
        symbol *right = &session->symbols[item.right];
        if (left->n_bytes == 0 || right->n_bytes == 0 ||
            left->n_bytes + right->n_bytes != item.n_bytes) {
            continue;
        }
        left->n_bytes += right->n_bytes;
        right->n_bytes = 0;
        left->next = right->next;
        if (right->next >= 0) {
            session->symbols[right->next].prev = item.left;
        }
        status = try_add_bigram(session, left->prev, item.left);
        if (status == QUILL_OK) {
            status = try_add_bigram(session, item.left, left->next);
        }
    }
    return status;
}

/* Emits a final symbol's token. A symbol that is no token falls back to the single-byte
 * tokens of its encoded bytes where they exist, as llama.cpp does. */
static quill_status emit_symbol(bpe_session *session, const symbol *item) {
    const char *text = session->word + item->offset;
    int32_t id = quill__tokenizer_lookup(session->tokenizer, text, item->n_bytes);
    if (id >= 0) {
        return quill__token_list_push(session->out, id);
    }
    quill_status status = QUILL_OK;
    for (uint32_t i = 0; status == QUILL_OK && i < item->n_bytes; i++) {
        id = quill__tokenizer_lookup(session->tokenizer, text + i, 1);
        if (id >= 0) {
            status = quill__token_list_push(session->out, id);
        }
    }
    return status;
}

static quill_status encode_piece(void *context, const char *text, size_t n_bytes) {
    bpe_session *session = context;
    size_t n_word = 0;
    if (n_bytes == 0) {
        return QUILL_OK;
    }
    quill_status status = encode_bytes(session, text, n_bytes, &n_word);
    if (status != QUILL_OK) {
        return status;
    }

    if (session->tokenizer->ignore_merges) {
        int32_t id = quill__tokenizer_lookup(session->tokenizer, session->word, n_word);
        if (id >= 0) {
            return quill__token_list_push(session->out, id);
        }
    }

    int32_t n_symbols = 0;
    status = make_symbols(session, n_word, &n_symbols);
    if (status == QUILL_OK) {
        status = merge_symbols(session, n_symbols);
    }
    for (int32_t i = 0; status == QUILL_OK && i != -1; i = session->symbols[i].next) {
        status = emit_symbol(session, &session->symbols[i]);
    }
    return status;
}

quill_status quill__bpe_encode(const quill_tokenizer *tokenizer, const char *text,
                               size_t n_bytes, quill__token_list *out) {
    bpe_session session = {.tokenizer = tokenizer, .out = out};
    quill_status status = quill__pretokenizer_split(tokenizer->pretokenizer, text, n_bytes,
                                                    encode_piece, &session);
    quill__merge_queue_release(&session.queue);
    quill__free(session.symbols);
    quill__free(session.word);
    return status;
}
