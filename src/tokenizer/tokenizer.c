/*
 * Tokenizer entry points: loading the vocabulary from GGUF metadata, and encoding, which first
 * cuts special-token text out of the input (as llama.cpp's tokenizer_st_partition) and then runs
 * the vocabulary's encoder on each remaining text fragment. Encoding only reads the tokenizer, so
 * it is safe from any thread.
 */
#include "quill/tokenizer.h"

#include <string.h>

#include "base/alloc.h"
#include "quill/status.h"
#include "tokenizer/tokenizer_internal.h"

/* One piece of the input: a text span, or a special token matched in it. */
typedef struct fragment {
    size_t offset;   /* into the text */
    size_t n_bytes;  /* span length; 0 for a token */
    int32_t token;   /* matched special token, or -1 for text */
} fragment;

typedef struct fragment_list {
    fragment *items;  /* in text order */
    size_t n_items;   /* used */
    size_t capacity;  /* allocated */
} fragment_list;

static quill_status fragment_push(fragment_list *list, size_t offset, size_t n_bytes,
                                  int32_t token) {
    if (list->n_items == list->capacity) {
        size_t capacity = list->capacity > 0 ? list->capacity * 2 : 16;
        fragment *items = quill__realloc_array(list->items, capacity, sizeof(*items));
        if (items == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu text "
                                   "fragments", capacity);
        }
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->n_items++] = (fragment){.offset = offset, .n_bytes = n_bytes,
                                              .token = token};
    return QUILL_OK;
}

/* Settings of one encode call. */
typedef struct encode_request {
    const char *text;                    /* input */
    size_t n_bytes;                      /* input length */
    bool parse_special;                  /* control and unknown token text may match */
    bool use_ranges;                     /* restrict them to ranges */
    const quill_special_range *ranges;   /* where they may match */
    size_t n_ranges;                     /* entries in ranges */
} encode_request;

static bool inside_ranges(const encode_request *request, size_t offset, size_t n_bytes) {
    if (!request->use_ranges) {
        return true;
    }
    for (size_t i = 0; i < request->n_ranges; i++) {
        const quill_special_range *range = &request->ranges[i];
        if (offset >= range->offset && offset - range->offset <= range->n_bytes &&
            n_bytes <= range->n_bytes - (offset - range->offset)) {
            return true;
        }
    }
    return false;
}

/* Splits every text fragment of `in` at the occurrences of one special token, leftmost first,
 * and writes the result to `out`. User-defined tokens always match (llama.cpp pre-tokenizes them
 * like words); control and unknown tokens only with parse_special and inside the ranges. */
static quill_status split_at_token(const quill_tokenizer *tokenizer,
                                   const encode_request *request, int32_t token,
                                   const fragment_list *in, fragment_list *out) {
    const char *needle = tokenizer->texts[token];
    size_t n_needle = tokenizer->text_bytes[token];
    bool is_user_defined = tokenizer->kinds[token] == QUILL_TOKEN_USER_DEFINED;
    quill_status status = QUILL_OK;

    out->n_items = 0;
    for (size_t i = 0; status == QUILL_OK && i < in->n_items; i++) {
        fragment item = in->items[i];
        if (item.token >= 0 || item.n_bytes < n_needle) {
            status = fragment_push(out, item.offset, item.n_bytes, item.token);
            continue;
        }
        size_t start = item.offset;
        size_t end = item.offset + item.n_bytes;
        size_t search = start;
        while (status == QUILL_OK && end - search >= n_needle) {
            const char *found = memmem(request->text + search, end - search, needle, n_needle);
            if (found == NULL) {
                break;
            }
            size_t match = (size_t)(found - request->text);
            if (!is_user_defined && !inside_ranges(request, match, n_needle)) {
                search = match + 1;
                continue;
            }
            if (match > start) {
                status = fragment_push(out, start, match - start, -1);
            }
            if (status == QUILL_OK) {
                status = fragment_push(out, 0, 0, token);
            }
            start = match + n_needle;
            search = start;
        }
        if (status == QUILL_OK && start < end) {
            status = fragment_push(out, start, end - start, -1);
        }
    }
    return status;
}

/* NOTE: llama.cpp's per-token lstrip/rstrip attributes (set by model name, e.g. for Phi-3) are
 * not applied, so whitespace next to a matched special token stays in the text fragments. */
static quill_status partition(const quill_tokenizer *tokenizer, const encode_request *request,
                              fragment_list *result) {
    fragment_list spare = {0};
    quill_status status = QUILL_OK;

    result->n_items = 0;
    if (request->n_bytes == 0) {
        return QUILL_OK;
    }
    status = fragment_push(result, 0, request->n_bytes, -1);
    for (int32_t i = 0; status == QUILL_OK && i < tokenizer->n_special; i++) {
        int32_t token = tokenizer->special_ids[i];
        if (tokenizer->kinds[token] != QUILL_TOKEN_USER_DEFINED && !request->parse_special) {
            continue;
        }
        status = split_at_token(tokenizer, request, token, result, &spare);
        if (status == QUILL_OK) {
            fragment_list swap = *result;
            *result = spare;
            spare = swap;
        }
    }
    quill__free(spare.items);
    return status;
}

static quill_status encode_fragments(const quill_tokenizer *tokenizer,
                                     const encode_request *request, const fragment_list *parts,
                                     quill__token_list *out) {
    quill_status status = QUILL_OK;
    bool is_prev_special = true; /* SPM: the first fragment gets the prefix space */

    for (size_t i = 0; status == QUILL_OK && i < parts->n_items; i++) {
        const fragment *item = &parts->items[i];
        if (item->token >= 0) {
            status = quill__token_list_push(out, item->token);
            is_prev_special = true;
            continue;
        }
        const char *text = request->text + item->offset;
        switch (tokenizer->type) {
        case QUILL_VOCAB_SPM:
            status = quill__spm_encode(tokenizer, text, item->n_bytes,
                                       tokenizer->add_space_prefix && is_prev_special, out);
            break;
        case QUILL_VOCAB_BPE:
            status = quill__bpe_encode(tokenizer, text, item->n_bytes, out);
            break;
        case QUILL_VOCAB_WORDPIECE:
            status = quill__wordpiece_encode(tokenizer, text, item->n_bytes, out);
            break;
        }
        is_prev_special = false;
    }
    return status;
}

static quill_status encode(const quill_tokenizer *tokenizer, const encode_request *request,
                           uint32_t flags, int32_t **tokens, int64_t *n_tokens) {
    fragment_list parts = {0};
    quill__token_list list = {0};
    quill_status status = QUILL_OK;
    bool add_special = (flags & QUILL_TOKENIZE_ADD_SPECIAL) != 0;

    *tokens = NULL;
    *n_tokens = 0;
    if (request->text == NULL && request->n_bytes > 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: text is NULL but n_bytes is "
                               "%zu", request->n_bytes);
    }

    status = partition(tokenizer, request, &parts);
    if (status == QUILL_OK && add_special && tokenizer->add_bos && tokenizer->bos >= 0) {
        status = quill__token_list_push(&list, tokenizer->bos);
    }
    if (status == QUILL_OK) {
        status = encode_fragments(tokenizer, request, &parts, &list);
    }
    if (status == QUILL_OK && add_special && tokenizer->add_eos) {
        int32_t end = tokenizer->type == QUILL_VOCAB_WORDPIECE && tokenizer->sep >= 0
                          ? tokenizer->sep
                          : tokenizer->eos;
        if (end >= 0) {
            status = quill__token_list_push(&list, end);
        }
    }
    /* Always hand out an allocation, also for an empty result. */
    if (status == QUILL_OK && list.ids == NULL) {
        list.ids = quill__malloc(sizeof(int32_t));
        if (list.ids == NULL) {
            status = quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory");
        }
    }
    if (status != QUILL_OK) {
        goto cleanup;
    }

    *tokens = list.ids;
    *n_tokens = list.n_ids;
    list.ids = NULL;

cleanup:
    quill__free(list.ids);
    quill__free(parts.items);
    return status;
}

quill_status quill_tokenizer_encode(const quill_tokenizer *tokenizer, const char *text,
                                    size_t n_bytes, uint32_t flags, int32_t **tokens,
                                    int64_t *n_tokens) {
    encode_request request = {.text = text, .n_bytes = n_bytes,
                              .parse_special = (flags & QUILL_TOKENIZE_PARSE_SPECIAL) != 0};
    return encode(tokenizer, &request, flags, tokens, n_tokens);
}

quill_status quill_tokenizer_encode_ranges(const quill_tokenizer *tokenizer, const char *text,
                                           size_t n_bytes, uint32_t flags,
                                           const quill_special_range *ranges, size_t n_ranges,
                                           int32_t **tokens, int64_t *n_tokens) {
    *tokens = NULL;
    *n_tokens = 0;
    for (size_t i = 0; i < n_ranges; i++) {
        if (ranges[i].offset > n_bytes || ranges[i].n_bytes > n_bytes - ranges[i].offset) {
            return quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: special range %zu "
                                   "(offset %zu, %zu bytes) ends past the text of %zu bytes",
                                   i, ranges[i].offset, ranges[i].n_bytes, n_bytes);
        }
    }
    encode_request request = {.text = text, .n_bytes = n_bytes, .parse_special = true,
                              .use_ranges = true, .ranges = ranges, .n_ranges = n_ranges};
    return encode(tokenizer, &request, flags, tokens, n_tokens);
}
