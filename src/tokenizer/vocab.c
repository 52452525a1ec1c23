/*
 * The token table of a tokenizer: texts, scores and kinds by id, a hash map from text to id, the
 * special ids and the flags that select which ones encoding adds. quill__tokenizer_create builds
 * it from a quill__vocab_spec and applies llama.cpp's defaults for each vocabulary type. The
 * result is immutable, so lookups are safe from any thread.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "quill/status.h"

/* Texts that mark a token as end of generation even when no key names it (llama.cpp's list of
 * end-of-turn tokens). */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>",    "<|end_of_text|>", "<|endoftext|>",
    "<end_of_turn>", "<|end|>",    "<|eom_id|>",      "<EOT>",
    /* DeepSeek's "<｜end▁of▁sentence｜>", written with octal escapes because a hex escape
     * would swallow the following letters. */
    "<\357\275\234end\342\226\201of\342\226\201sentence\357\275\234>",
};

static uint64_t hash_key(const char *key, uint32_t n_bytes, uint32_t tag) {
    /* FNV-1a, 64 bit, with the tag folded in last. */
    uint64_t hash = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < n_bytes; i++) {
        hash ^= (uint8_t)key[i];
        hash *= 0x100000001b3ull;
    }
    hash ^= tag;
    hash *= 0x100000001b3ull;
    return hash ^ (hash >> 29);
}

quill_status quill__string_map_init(quill__string_map *map, size_t n_expected) {
    size_t n_slots = 16;
    while (n_slots < n_expected * 2 + 1) {
        n_slots *= 2;
    }
    map->slots = quill__calloc(n_slots, sizeof(*map->slots));
    map->n_slots = map->slots != NULL ? n_slots : 0;
    map->n_used = 0;
    if (map->slots == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for a hash map of %zu "
                               "slots", n_slots);
    }
    return QUILL_OK;
}

void quill__string_map_release(quill__string_map *map) {
    quill__free(map->slots);
    map->slots = NULL;
    map->n_slots = 0;
    map->n_used = 0;
}

static quill__string_map_entry *find_slot(const quill__string_map *map, const char *key,
                                          uint32_t n_bytes, uint32_t tag) {
    size_t mask = map->n_slots - 1;
    size_t index = (size_t)hash_key(key, n_bytes, tag) & mask;
    for (;;) {
        quill__string_map_entry *entry = &map->slots[index];
        if (entry->key == NULL) {
            return entry;
        }
        if (entry->n_bytes == n_bytes && entry->tag == tag &&
            memcmp(entry->key, key, n_bytes) == 0) {
            return entry;
        }
        index = (index + 1) & mask;
    }
}

quill_status quill__string_map_put(quill__string_map *map, const char *key, uint32_t n_bytes,
                                   uint32_t tag, int32_t value) {
    /* The map is sized once for its expected count; keep it at most half full. */
    if ((map->n_used + 1) * 2 > map->n_slots) {
        quill__string_map bigger;
        quill_status status = quill__string_map_init(&bigger, map->n_slots);
        if (status != QUILL_OK) {
            return status;
        }
        for (size_t i = 0; i < map->n_slots; i++) {
            const quill__string_map_entry *old = &map->slots[i];
            if (old->key != NULL) {
                *find_slot(&bigger, old->key, old->n_bytes, old->tag) = *old;
                bigger.n_used++;
            }
        }
        quill__string_map_release(map);
        *map = bigger;
    }

    quill__string_map_entry *entry = find_slot(map, key, n_bytes, tag);
    if (entry->key == NULL) {
        map->n_used++;
    }
    entry->key = key;
    entry->n_bytes = n_bytes;
    entry->tag = tag;
    entry->value = value;
    return QUILL_OK;
}

int32_t quill__string_map_get(const quill__string_map *map, const char *key, uint32_t n_bytes,
                              uint32_t tag) {
    if (map->n_slots == 0) {
        return -1;
    }
    const quill__string_map_entry *entry = find_slot(map, key, n_bytes, tag);
    return entry->key != NULL ? entry->value : -1;
}

quill_status quill__token_list_push(quill__token_list *list, int32_t id) {
    if (list->n_ids == list->capacity) {
        int64_t capacity = list->capacity > 0 ? list->capacity * 2 : 64;
        int32_t *ids = quill__realloc_array(list->ids, (size_t)capacity, sizeof(*ids));
        if (ids == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %lld token ids",
                                   (long long)capacity);
        }
        list->ids = ids;
        list->capacity = capacity;
    }
    list->ids[list->n_ids++] = id;
    return QUILL_OK;
}

size_t quill__utf8_sequence_length(uint8_t lead) {
    static const uint8_t lengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lengths[lead >> 4];
}

uint32_t quill__utf8_decode(const char *text, size_t n_bytes, size_t *n_used) {
    const uint8_t *bytes = (const uint8_t *)text;
    size_t length = quill__utf8_sequence_length(bytes[0]);
    *n_used = 1;
    if (length == 1) {
        return bytes[0] < 0x80 ? bytes[0] : 0xFFFD;
    }
    if (length > n_bytes) {
        return 0xFFFD;
    }
    uint32_t codepoint = bytes[0] & (0x7F >> length);
    for (size_t i = 1; i < length; i++) {
        if ((bytes[i] & 0xC0) != 0x80) {
            return 0xFFFD;
        }
        codepoint = (codepoint << 6) | (bytes[i] & 0x3F);
    }
    *n_used = length;
    return codepoint;
}

size_t quill__utf8_encode(uint32_t codepoint, char *out) {
    if (codepoint < 0x80) {
        out[0] = (char)codepoint;
        return 1;
    }
    if (codepoint < 0x800) {
        out[0] = (char)(0xC0 | (codepoint >> 6));
        out[1] = (char)(0x80 | (codepoint & 0x3F));
        return 2;
    }
    if (codepoint < 0x10000) {
        out[0] = (char)(0xE0 | (codepoint >> 12));
        out[1] = (char)(0x80 | ((codepoint >> 6) & 0x3F));
        out[2] = (char)(0x80 | (codepoint & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (codepoint >> 18));
    out[1] = (char)(0x80 | ((codepoint >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((codepoint >> 6) & 0x3F));
    out[3] = (char)(0x80 | (codepoint & 0x3F));
    return 4;
}

void quill__vocab_spec_init(quill__vocab_spec *spec) {
    memset(spec, 0, sizeof(*spec));
    spec->bos = -2;
    spec->eos = -2;
    spec->eot = -2;
    spec->eom = -2;
    spec->unk = -2;
    spec->sep = -2;
    spec->pad = -2;
    spec->add_bos = -1;
    spec->add_eos = -1;
    spec->add_space_prefix = -1;
}

int32_t quill__tokenizer_lookup(const quill_tokenizer *tokenizer, const char *text,
                                size_t n_bytes) {
    if (n_bytes > UINT32_MAX) {
        return -1;
    }
    return quill__string_map_get(&tokenizer->token_ids, text, (uint32_t)n_bytes, 0);
}

/* Copies the token texts into one block; an empty text becomes "[EMPTY_<id>]" as in llama.cpp,
 * so that every id keeps a distinct, non-empty text. */
static quill_status copy_texts(quill_tokenizer *tokenizer, const quill__vocab_spec *spec) {
    size_t n_total = 0;
    for (int32_t i = 0; i < spec->n_tokens; i++) {
        size_t n_bytes = spec->text_bytes[i] > 0 ? spec->text_bytes[i] : 24;
        if (!quill__size_add(n_total, n_bytes + 1, &n_total)) {
            return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: token texts overflow size_t");
        }
    }
    tokenizer->text_storage = quill__malloc(n_total > 0 ? n_total : 1);
    tokenizer->texts = quill__malloc_array((size_t)spec->n_tokens, sizeof(char *));
    tokenizer->text_bytes = quill__malloc_array((size_t)spec->n_tokens, sizeof(uint32_t));
    if (tokenizer->text_storage == NULL || tokenizer->texts == NULL ||
        tokenizer->text_bytes == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %d token texts "
                               "(%zu bytes)", spec->n_tokens, n_total);
    }

    char *cursor = tokenizer->text_storage;
    for (int32_t i = 0; i < spec->n_tokens; i++) {
        uint32_t n_bytes = spec->text_bytes[i];
        if (n_bytes == 0) {
            n_bytes = (uint32_t)snprintf(cursor, 24, "[EMPTY_%d]", (int)i);
        } else {
            memcpy(cursor, spec->texts[i], n_bytes);
            cursor[n_bytes] = '\0';
        }
        tokenizer->texts[i] = cursor;
        tokenizer->text_bytes[i] = n_bytes;
        if (n_bytes > tokenizer->max_token_bytes) {
            tokenizer->max_token_bytes = n_bytes;
        }
        cursor += n_bytes + 1;
    }
    return QUILL_OK;
}

/* Applies the type's default special ids and flags, then the file's values. */
static quill_status apply_specials(quill_tokenizer *tokenizer, const quill__vocab_spec *spec) {
    tokenizer->eot = -1;
    tokenizer->eom = -1;
    tokenizer->sep = -1;
    tokenizer->pad = -1;
    if (tokenizer->type == QUILL_VOCAB_SPM) {
        tokenizer->bos = 1;
        tokenizer->eos = 2;
        tokenizer->unk = 0;
        tokenizer->add_bos = true;
        tokenizer->add_space_prefix = true;
    } else if (tokenizer->type == QUILL_VOCAB_WORDPIECE) {
        /* BERT's [CLS], [SEP], [UNK] and [PAD] ids. */
        tokenizer->bos = 101;
        tokenizer->eos = 102;
        tokenizer->unk = 100;
        tokenizer->sep = 102;
        tokenizer->pad = 0;
        tokenizer->add_bos = true;
        tokenizer->add_eos = true;
    } else {
        /* NOTE: llama.cpp defaults BOS and EOS of a BPE vocabulary to id 11; Quill uses none
         * unless the file names them. */
        tokenizer->bos = -1;
        tokenizer->eos = -1;
        tokenizer->unk = -1;
        tokenizer->add_bos = quill__pretokenizer_adds_bos(tokenizer->pre_name);
        tokenizer->ignore_merges = quill__pretokenizer_ignores_merges(tokenizer->pre_name);
    }

    struct {
        const char *key;
        int32_t value;
        int32_t *target;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", spec->bos, &tokenizer->bos},
        {"tokenizer.ggml.eos_token_id", spec->eos, &tokenizer->eos},
        {"tokenizer.ggml.eot_token_id", spec->eot, &tokenizer->eot},
        {"tokenizer.ggml.eom_token_id", spec->eom, &tokenizer->eom},
        {"tokenizer.ggml.unknown_token_id", spec->unk, &tokenizer->unk},
        {"tokenizer.ggml.seperator_token_id", spec->sep, &tokenizer->sep},
        {"tokenizer.ggml.padding_token_id", spec->pad, &tokenizer->pad},
    };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        if (ids[i].value == -2) {
            continue;
        }
        /* Converters write 0xFFFFFFFF (read as INT32_MAX) for "no such token", and llama.cpp
         * keeps the vocabulary type's default for any id past the vocabulary, so such files load
         * there; an id out of range therefore leaves the default in place here too. */
        if (ids[i].value < 0 || ids[i].value >= tokenizer->n_vocab) {
            continue;
        }
        *ids[i].target = ids[i].value;
    }
    /* Defaults that point past a tiny vocabulary mean "none". */
    int32_t *all[] = {&tokenizer->bos, &tokenizer->eos, &tokenizer->unk, &tokenizer->sep,
                      &tokenizer->pad};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (*all[i] >= tokenizer->n_vocab) {
            *all[i] = -1;
        }
    }

    if (spec->add_bos >= 0) {
        tokenizer->add_bos = spec->add_bos != 0;
    }
    if (spec->add_eos >= 0) {
        tokenizer->add_eos = spec->add_eos != 0;
    }
    if (spec->add_space_prefix >= 0 && tokenizer->type == QUILL_VOCAB_SPM) {
        tokenizer->add_space_prefix = spec->add_space_prefix != 0;
    }
    return QUILL_OK;
}

/* Marks end-of-generation tokens. A token with a known end-of-turn text becomes a control
 * token, as llama.cpp overrides it, so it is never produced from plain text. */
static void mark_eog(quill_tokenizer *tokenizer) {
    for (size_t i = 0; i < sizeof(eog_texts) / sizeof(eog_texts[0]); i++) {
        int32_t id = quill__tokenizer_lookup(tokenizer, eog_texts[i], strlen(eog_texts[i]));
        if (id >= 0) {
            tokenizer->is_eog[id] = 1;
            tokenizer->kinds[id] = QUILL_TOKEN_CONTROL;
        }
    }
    int32_t keyed[] = {tokenizer->eos, tokenizer->eot, tokenizer->eom};
    for (size_t i = 0; i < sizeof(keyed) / sizeof(keyed[0]); i++) {
        if (keyed[i] >= 0) {
            tokenizer->is_eog[keyed[i]] = 1;
        }
    }
}

static int compare_special(const void *a, const void *b, void *context) {
    const quill_tokenizer *tokenizer = context;
    int32_t id_a = *(const int32_t *)a;
    int32_t id_b = *(const int32_t *)b;
    if (tokenizer->text_bytes[id_a] != tokenizer->text_bytes[id_b]) {
        return tokenizer->text_bytes[id_a] > tokenizer->text_bytes[id_b] ? -1 : 1;
    }
    return id_a < id_b ? -1 : (id_a > id_b ? 1 : 0);
}

/* Lists the tokens that are matched in text before encoding (control, user-defined and
 * unknown), longest text first, as llama.cpp's special-token cache. */
static quill_status collect_specials(quill_tokenizer *tokenizer) {
    int32_t n_special = 0;
    for (int32_t i = 0; i < tokenizer->n_vocab; i++) {
        uint8_t kind = tokenizer->kinds[i];
        if (kind == QUILL_TOKEN_CONTROL || kind == QUILL_TOKEN_USER_DEFINED ||
            kind == QUILL_TOKEN_UNKNOWN) {
            n_special++;
        }
    }
    tokenizer->special_ids = quill__malloc_array((size_t)n_special + 1, sizeof(int32_t));
    if (tokenizer->special_ids == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %d special tokens",
                               (int)n_special);
    }
    for (int32_t i = 0; i < tokenizer->n_vocab; i++) {
        uint8_t kind = tokenizer->kinds[i];
        if (kind == QUILL_TOKEN_CONTROL || kind == QUILL_TOKEN_USER_DEFINED ||
            kind == QUILL_TOKEN_UNKNOWN) {
            tokenizer->special_ids[tokenizer->n_special++] = i;
        }
    }
    qsort_r(tokenizer->special_ids, (size_t)tokenizer->n_special, sizeof(int32_t),
            compare_special, tokenizer);
    return QUILL_OK;
}

/* Finds the <0xNN> byte tokens of an SPM vocabulary. */
static void find_byte_tokens(quill_tokenizer *tokenizer) {
    for (int byte = 0; byte < 256; byte++) {
        char text[8];
        snprintf(text, sizeof(text), "<0x%02X>", byte);
        tokenizer->byte_tokens[byte] = quill__tokenizer_lookup(tokenizer, text, 6);
    }
}

static quill_status parse_type(const char *model_name, quill_vocab_type *type) {
    if (model_name != NULL && strcmp(model_name, "llama") == 0) {
        *type = QUILL_VOCAB_SPM;
    } else if (model_name != NULL && strcmp(model_name, "gpt2") == 0) {
        *type = QUILL_VOCAB_BPE;
    } else if (model_name != NULL && strcmp(model_name, "bert") == 0) {
        *type = QUILL_VOCAB_WORDPIECE;
    } else {
        return quill_error_set(QUILL_ERR_UNSUPPORTED, "tokenizer: tokenizer.ggml.model '%s' is "
                               "not supported; the supported models are llama (SentencePiece), "
                               "gpt2 (byte-level BPE) and bert (WordPiece)",
                               model_name != NULL ? model_name : "(missing)");
    }
    return QUILL_OK;
}

static quill_status fill_tables(quill_tokenizer *tokenizer, const quill__vocab_spec *spec) {
    size_t n_tokens = (size_t)spec->n_tokens;
    tokenizer->scores = quill__calloc(n_tokens, sizeof(float));
    tokenizer->kinds = quill__malloc(n_tokens);
    tokenizer->is_eog = quill__calloc(n_tokens, 1);
    if (tokenizer->scores == NULL || tokenizer->kinds == NULL || tokenizer->is_eog == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu tokens",
                               n_tokens);
    }
    for (size_t i = 0; i < n_tokens; i++) {
        tokenizer->scores[i] = spec->scores != NULL ? spec->scores[i] : 0.0f;
        int32_t kind = spec->kinds != NULL ? spec->kinds[i] : QUILL_TOKEN_NORMAL;
        /* Unknown type numbers (0 = undefined in GGUF) are treated as unused. */
        if (kind < QUILL_TOKEN_NORMAL || kind > QUILL_TOKEN_BYTE) {
            kind = QUILL_TOKEN_UNUSED;
        }
        tokenizer->kinds[i] = (uint8_t)kind;
    }

    quill_status status = copy_texts(tokenizer, spec);
    if (status != QUILL_OK) {
        return status;
    }
    status = quill__string_map_init(&tokenizer->token_ids, n_tokens);
    for (int32_t i = 0; status == QUILL_OK && i < spec->n_tokens; i++) {
        status = quill__string_map_put(&tokenizer->token_ids, tokenizer->texts[i],
                                       tokenizer->text_bytes[i], 0, i);
    }
    return status;
}

quill_status quill__tokenizer_create(const quill__vocab_spec *spec, quill_tokenizer **out) {
    quill_tokenizer *tokenizer = NULL;
    quill_status status = QUILL_OK;
    *out = NULL;

    if (spec->n_tokens <= 0) {
        return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: the vocabulary has no tokens "
                               "(tokenizer.ggml.tokens is empty)");
    }
    tokenizer = quill__calloc(1, sizeof(*tokenizer));
    if (tokenizer == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory");
    }
    tokenizer->n_vocab = spec->n_tokens;
    status = parse_type(spec->model_name, &tokenizer->type);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    tokenizer->type_name = quill__strdup(spec->model_name);
    tokenizer->pre_name = quill__strdup(spec->pre_name != NULL ? spec->pre_name : "default");
    if (tokenizer->type_name == NULL || tokenizer->pre_name == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory");
        goto cleanup;
    }

    status = fill_tables(tokenizer, spec);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    status = apply_specials(tokenizer, spec);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    mark_eog(tokenizer);
    status = collect_specials(tokenizer);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    find_byte_tokens(tokenizer);
    tokenizer->max_piece_bytes = tokenizer->max_token_bytes;

    if (tokenizer->type == QUILL_VOCAB_BPE) {
        status = quill__bpe_init(tokenizer, spec);
        if (status != QUILL_OK) {
            goto cleanup;
        }
    }

    *out = tokenizer;
    tokenizer = NULL;

cleanup:
    quill_tokenizer_destroy(tokenizer);
    return status;
}

void quill_tokenizer_destroy(quill_tokenizer *tokenizer) {
    if (tokenizer == NULL) {
        return;
    }
    quill__bpe_release(tokenizer);
    quill__string_map_release(&tokenizer->token_ids);
    quill__free(tokenizer->special_ids);
    quill__free(tokenizer->is_eog);
    quill__free(tokenizer->kinds);
    quill__free(tokenizer->scores);
    quill__free(tokenizer->text_bytes);
    quill__free(tokenizer->texts);
    quill__free(tokenizer->text_storage);
    quill__free(tokenizer->pre_name);
    quill__free(tokenizer->type_name);
    quill__free(tokenizer);
}

quill_vocab_type quill_tokenizer_type(const quill_tokenizer *tokenizer) {
    return tokenizer->type;
}

const char *quill_tokenizer_type_name(const quill_tokenizer *tokenizer) {
    return tokenizer->type_name;
}

const char *quill_tokenizer_pre_name(const quill_tokenizer *tokenizer) {
    return tokenizer->pre_name;
}

int32_t quill_tokenizer_n_vocab(const quill_tokenizer *tokenizer) {
    return tokenizer->n_vocab;
}

int32_t quill_tokenizer_bos(const quill_tokenizer *tokenizer) {
    return tokenizer->bos;
}

int32_t quill_tokenizer_eos(const quill_tokenizer *tokenizer) {
    return tokenizer->eos;
}

bool quill_tokenizer_is_eog(const quill_tokenizer *tokenizer, int32_t token) {
    return token >= 0 && token < tokenizer->n_vocab && tokenizer->is_eog[token] != 0;
}

bool quill_tokenizer_adds_bos(const quill_tokenizer *tokenizer) {
    return tokenizer->add_bos;
}

bool quill_tokenizer_adds_eos(const quill_tokenizer *tokenizer) {
    return tokenizer->add_eos;
}

quill_token_kind quill_tokenizer_token_kind(const quill_tokenizer *tokenizer, int32_t token) {
    if (token < 0 || token >= tokenizer->n_vocab) {
        return QUILL_TOKEN_UNUSED;
    }
    return (quill_token_kind)tokenizer->kinds[token];
}

const char *quill_tokenizer_token_text(const quill_tokenizer *tokenizer, int32_t token) {
    if (token < 0 || token >= tokenizer->n_vocab) {
        return NULL;
    }
    return tokenizer->texts[token];
}

int32_t quill_tokenizer_find_token(const quill_tokenizer *tokenizer, const char *text) {
    return quill__tokenizer_lookup(tokenizer, text, strlen(text));
}

void quill_tokens_free(int32_t *tokens) {
    quill__free(tokens);
}

void quill_text_free(char *text) {
    quill__free(text);
}
