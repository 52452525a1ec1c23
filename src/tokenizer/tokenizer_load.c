/*
 * quill_tokenizer_load: reads the tokenizer.ggml.* metadata of a GGUF file into a
 * quill__vocab_spec (borrowing the strings from the mapping) and builds the tokenizer from it.
 * The tokenizer copies everything, so the file may be closed afterwards.
 */
#include "quill/tokenizer.h"

#include <string.h>

#include "base/alloc.h"
#include "quill/status.h"
#include "tokenizer/tokenizer_internal.h"

/* Everything the spec borrows or that load allocates for it. */
typedef struct load_state {
    quill__vocab_spec spec;
    char *model_name;         /* NUL-terminated copy */
    char *pre_name;           /* NUL-terminated copy, or NULL */
    const char **texts;       /* [n_tokens] borrowed from the mapping */
    uint32_t *text_bytes;     /* [n_tokens] */
    float *scores;            /* [n_tokens] or NULL */
    int32_t *kinds;           /* [n_tokens] or NULL */
    const char **merges;      /* [n_merges] borrowed from the mapping */
    uint32_t *merge_bytes;    /* [n_merges] */
} load_state;

static void load_state_release(load_state *state) {
    quill__free(state->merge_bytes);
    quill__free(state->merges);
    quill__free(state->kinds);
    quill__free(state->scores);
    quill__free(state->text_bytes);
    quill__free(state->texts);
    quill__free(state->pre_name);
    quill__free(state->model_name);
}

static quill_status read_string(const quill_gguf *file, const char *key, bool is_required,
                                char **out) {
    const char *data = NULL;
    size_t n_bytes = 0;
    *out = NULL;
    quill_status status = quill_gguf_get_string(file, key, &data, &n_bytes);
    if (status == QUILL_ERR_NOT_FOUND && !is_required) {
        return QUILL_OK;
    }
    if (status == QUILL_ERR_NOT_FOUND) {
        return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: %s has no %s; the file has no "
                               "vocabulary, use a model file converted with its tokenizer",
                               quill_gguf_path(file), key);
    }
    if (status != QUILL_OK) {
        return status;
    }
    *out = quill__strndup(data, n_bytes);
    if (*out == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory");
    }
    return QUILL_OK;
}

static quill_status read_array(const quill_gguf *file, const char *key, uint64_t n_expected,
                               bool is_numeric, quill_gguf_array *array, bool *is_present) {
    *is_present = false;
    quill_status status = quill_gguf_get_array(file, key, array);
    if (status == QUILL_ERR_NOT_FOUND) {
        return QUILL_OK;
    }
    if (status != QUILL_OK) {
        return status;
    }
    bool type_ok = is_numeric ? array->item_type != QUILL_GGUF_STRING &&
                                    array->item_type != QUILL_GGUF_ARRAY
                              : array->item_type == QUILL_GGUF_STRING;
    if (!type_ok) {
        return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: %s in %s has elements of type %d, "
                               "expected %s", key, quill_gguf_path(file), (int)array->item_type,
                               is_numeric ? "numbers" : "strings");
    }
    if (n_expected > 0 && array->n_items != n_expected) {
        return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: %s in %s has %llu entries but "
                               "tokenizer.ggml.tokens has %llu; the file is inconsistent",
                               key, quill_gguf_path(file), (unsigned long long)array->n_items,
                               (unsigned long long)n_expected);
    }
    *is_present = true;
    return QUILL_OK;
}

static quill_status read_tokens(const quill_gguf *file, load_state *state) {
    quill_gguf_array array;
    bool is_present = false;
    quill_status status = read_array(file, "tokenizer.ggml.tokens", 0, false, &array,
                                     &is_present);
    if (status == QUILL_OK && !is_present) {
        status = quill_error_set(QUILL_ERR_FORMAT, "tokenizer: %s has no tokenizer.ggml.tokens; "
                                 "use a model file converted with its tokenizer",
                                 quill_gguf_path(file));
    }
    if (status == QUILL_OK && (array.n_items == 0 || array.n_items > INT32_MAX)) {
        status = quill_error_set(QUILL_ERR_FORMAT, "tokenizer: tokenizer.ggml.tokens in %s has "
                                 "%llu entries; expected 1 to %d", quill_gguf_path(file),
                                 (unsigned long long)array.n_items, INT32_MAX);
    }
    if (status != QUILL_OK) {
        return status;
    }

    size_t n_tokens = (size_t)array.n_items;
    state->texts = quill__malloc_array(n_tokens, sizeof(char *));
    state->text_bytes = quill__malloc_array(n_tokens, sizeof(uint32_t));
    if (state->texts == NULL || state->text_bytes == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu tokens",
                               n_tokens);
    }
    for (size_t i = 0; i < n_tokens; i++) {
        size_t n_bytes = 0;
        quill_gguf_array_string(&array, i, &state->texts[i], &n_bytes);
        if (n_bytes > UINT32_MAX || memchr(state->texts[i], '\0', n_bytes) != NULL) {
            return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: token %zu in %s is %zu bytes "
                                   "long or contains a NUL byte; the vocabulary is corrupt", i,
                                   quill_gguf_path(file), n_bytes);
        }
        state->text_bytes[i] = (uint32_t)n_bytes;
    }
    state->spec.n_tokens = (int32_t)n_tokens;
    state->spec.texts = state->texts;
    state->spec.text_bytes = state->text_bytes;
    return QUILL_OK;
}

static quill_status read_scores_and_kinds(const quill_gguf *file, load_state *state) {
    size_t n_tokens = (size_t)state->spec.n_tokens;
    quill_gguf_array array;
    bool is_present = false;

    quill_status status = read_array(file, "tokenizer.ggml.scores", n_tokens, true, &array,
                                     &is_present);
    if (status == QUILL_OK && is_present) {
        state->scores = quill__malloc_array(n_tokens, sizeof(float));
        if (state->scores == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory");
        }
        for (size_t i = 0; i < n_tokens; i++) {
            state->scores[i] = (float)quill_gguf_array_float(&array, i);
        }
        state->spec.scores = state->scores;
    }
    if (status != QUILL_OK) {
        return status;
    }

    status = read_array(file, "tokenizer.ggml.token_type", n_tokens, true, &array, &is_present);
    if (status == QUILL_OK && is_present) {
        state->kinds = quill__malloc_array(n_tokens, sizeof(int32_t));
        if (state->kinds == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory");
        }
        for (size_t i = 0; i < n_tokens; i++) {
            state->kinds[i] = (int32_t)quill_gguf_array_int(&array, i);
        }
        state->spec.kinds = state->kinds;
    }
    return status;
}

static quill_status read_merges(const quill_gguf *file, load_state *state) {
    quill_gguf_array array;
    bool is_present = false;
    quill_status status = read_array(file, "tokenizer.ggml.merges", 0, false, &array,
                                     &is_present);
    if (status != QUILL_OK || !is_present) {
        return status;
    }
    size_t n_merges = (size_t)array.n_items;
    state->merges = quill__malloc_array(n_merges + 1, sizeof(char *));
    state->merge_bytes = quill__malloc_array(n_merges + 1, sizeof(uint32_t));
    if (state->merges == NULL || state->merge_bytes == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu merges",
                               n_merges);
    }
    for (size_t i = 0; i < n_merges; i++) {
        size_t n_bytes = 0;
        quill_gguf_array_string(&array, i, &state->merges[i], &n_bytes);
        if (n_bytes > UINT32_MAX) {
            return quill_error_set(QUILL_ERR_FORMAT, "tokenizer: merge %zu in %s is too long",
                                   i, quill_gguf_path(file));
        }
        state->merge_bytes[i] = (uint32_t)n_bytes;
    }
    state->spec.n_merges = (int64_t)n_merges;
    state->spec.merges = state->merges;
    state->spec.merge_bytes = state->merge_bytes;
    return QUILL_OK;
}

static quill_status read_id(const quill_gguf *file, const char *key, int32_t *out) {
    uint32_t value = 0;
    quill_status status = quill_gguf_get_u32(file, key, &value);
    if (status == QUILL_ERR_NOT_FOUND) {
        return QUILL_OK;
    }
    if (status != QUILL_OK) {
        return status;
    }
    *out = value > INT32_MAX ? INT32_MAX : (int32_t)value;
    return QUILL_OK;
}

static quill_status read_flag(const quill_gguf *file, const char *key, int *out) {
    bool value = false;
    quill_status status = quill_gguf_get_bool(file, key, &value);
    if (status == QUILL_ERR_NOT_FOUND) {
        return QUILL_OK;
    }
    if (status == QUILL_OK) {
        *out = value ? 1 : 0;
    }
    return status;
}

static quill_status read_specials(const quill_gguf *file, quill__vocab_spec *spec) {
    struct {
        const char *key;
        int32_t *target;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", &spec->bos},
        {"tokenizer.ggml.eos_token_id", &spec->eos},
        {"tokenizer.ggml.eot_token_id", &spec->eot},
        {"tokenizer.ggml.eom_token_id", &spec->eom},
        {"tokenizer.ggml.unknown_token_id", &spec->unk},
        {"tokenizer.ggml.seperator_token_id", &spec->sep},
        {"tokenizer.ggml.separator_token_id", &spec->sep},
        {"tokenizer.ggml.padding_token_id", &spec->pad},
    };
    quill_status status = QUILL_OK;
    for (size_t i = 0; status == QUILL_OK && i < sizeof(ids) / sizeof(ids[0]); i++) {
        status = read_id(file, ids[i].key, ids[i].target);
    }
    if (status == QUILL_OK) {
        status = read_flag(file, "tokenizer.ggml.add_bos_token", &spec->add_bos);
    }
    if (status == QUILL_OK) {
        status = read_flag(file, "tokenizer.ggml.add_eos_token", &spec->add_eos);
    }
    if (status == QUILL_OK) {
        status = read_flag(file, "tokenizer.ggml.add_space_prefix", &spec->add_space_prefix);
    }
    return status;
}

quill_status quill_tokenizer_load(const quill_gguf *file, quill_tokenizer **out) {
    load_state state;
    memset(&state, 0, sizeof(state));
    quill__vocab_spec_init(&state.spec);
    *out = NULL;

    if (file == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: no GGUF file given");
    }
    quill_status status = read_string(file, "tokenizer.ggml.model", true, &state.model_name);
    if (status == QUILL_OK) {
        status = read_string(file, "tokenizer.ggml.pre", false, &state.pre_name);
    }
    if (status == QUILL_OK) {
        status = read_tokens(file, &state);
    }
    if (status == QUILL_OK) {
        status = read_scores_and_kinds(file, &state);
    }
    if (status == QUILL_OK) {
        status = read_merges(file, &state);
    }
    if (status == QUILL_OK) {
        status = read_specials(file, &state.spec);
    }
    if (status == QUILL_OK) {
        state.spec.model_name = state.model_name;
        state.spec.pre_name = state.pre_name;
        status = quill__tokenizer_create(&state.spec, out);
    }
    load_state_release(&state);
    return status;
}
