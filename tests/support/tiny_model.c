/*
 * Writes tiny random-weight models through the GGUF writer. Weights come from a splitmix64
 * stream seeded by (seed, tensor name), are uniform with a standard deviation that keeps
 * activations finite (1/sqrt(inputs) for matrices), and are quantized with quill__quantize_row.
 */
#include "tiny_model.h"

#include "test_support.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "gguf/gguf_writer.h"
#include "kernels/kernels.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

enum { NAME_BYTES = 96, PIECE_BYTES = 16 };

typedef struct tiny_writer {
    quill_gguf_writer *writer;                  /* output */
    const quill_test_tiny_model_params *params; /* the model's shape and knobs */
} tiny_writer;

quill_test_tiny_model_params quill_test_tiny_model_params_default(void) {
    quill_test_tiny_model_params params = {
        .arch = "llama",
        .type = QUILL_TYPE_F32,
        .n_layers = 2,
        .n_embd = 64,
        .n_heads = 4,
        .n_kv_heads = 2,
        .head_dim = 0,
        .n_ff = 128,
        .n_vocab = 320,
        .n_ctx = 256,
        .rope_freq_base = 10000.0f,
        .rms_eps = 1e-5f,
        .has_output = true,
        .has_rope_freqs = false,
        .chat_template = NULL,
        .seed = 1,
        .omit_tensor = NULL,
        .misshape_tensor = NULL,
        .omit_key = NULL,
    };
    return params;
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Seeds a stream from the model seed and the tensor name (FNV-1a of the name). */
static uint64_t stream_seed(uint64_t seed, const char *name) {
    uint64_t hash = 0xcbf29ce484222325ull;
    for (const char *c = name; *c != '\0'; c++) {
        hash = (hash ^ (uint8_t)*c) * 0x100000001b3ull;
    }
    return hash ^ (seed * 0x9e3779b97f4a7c15ull);
}

/* Uniform in [-1, 1). */
static float next_uniform(uint64_t *state) {
    return (float)((double)(splitmix64(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static bool is_name(const char *name, const char *other) {
    return other != NULL && strcmp(name, other) == 0;
}

/* Adds a tensor of n_rows x n_cols (ne = {n_cols, n_rows}; n_rows 1 and is_vector for a
 * vector) filled with center + U(-1, 1) * amplitude, stored as `type`. */
static quill_status add_tensor(tiny_writer *tiny, const char *name, uint32_t type, int64_t n_cols,
                               int64_t n_rows, bool is_vector, float center, float amplitude) {
    const quill_test_tiny_model_params *params = tiny->params;
    quill_status status = QUILL_OK;
    float *values = NULL;
    void *data = NULL;
    if (is_name(name, params->omit_tensor)) {
        return QUILL_OK;
    }
    if (is_name(name, params->misshape_tensor)) {
        if (is_vector) {
            n_cols += quill_type_traits_get(type)->block_elements;
        } else {
            n_rows += 1;
        }
    }

    size_t n_values = (size_t)(n_cols * n_rows);
    size_t row_bytes = 0;
    if (!quill_type_row_bytes(type, n_cols, &row_bytes)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "tiny_model: tensor '%s' has rows of %lld elements, not a "
                               "multiple of the %s block size",
                               name, (long long)n_cols, quill_type_name(type));
    }
    values = quill__malloc_array(n_values, sizeof(float));
    data = quill__malloc_array((size_t)n_rows, row_bytes);
    if (values == NULL || data == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "tiny_model: out of memory");
        goto cleanup;
    }
    uint64_t state = stream_seed(params->seed, name);
    for (size_t i = 0; i < n_values; i++) {
        values[i] = center + amplitude * next_uniform(&state);
    }

    if (type == QUILL_TYPE_F32) {
        memcpy(data, values, n_values * sizeof(float));
    } else {
        status = quill__quantize_row(type, values, data, (int64_t)n_values);
        if (status != QUILL_OK) {
            goto cleanup;
        }
    }
    int64_t ne[2] = {n_cols, n_rows};
    status = quill__gguf_writer_add_tensor(tiny->writer, name, type, is_vector ? 1 : 2, ne, data,
                                           (size_t)n_rows * row_bytes);

cleanup:
    quill__free(data);
    quill__free(values);
    return status;
}

/* A weight matrix of n_rows outputs and n_cols inputs with std 1/sqrt(n_cols)
 * (uniform amplitude sqrt(3) times that). */
static quill_status add_matrix(tiny_writer *tiny, const char *name, int64_t n_cols,
                               int64_t n_rows) {
    float amplitude = sqrtf(3.0f / (float)n_cols);
    return add_tensor(tiny, name, tiny->params->type, n_cols, n_rows, false, 0.0f, amplitude);
}

/* An F32 vector: norm weights near 1, biases near 0. */
static quill_status add_vector(tiny_writer *tiny, const char *name, int64_t n, float center,
                               float amplitude) {
    return add_tensor(tiny, name, QUILL_TYPE_F32, n, 1, true, center, amplitude);
}

/* Writes "blk.<layer>.<suffix>" into name and returns name. */
static const char *layer_name(char *name, size_t name_bytes, int32_t layer, const char *suffix) {
    snprintf(name, name_bytes, "blk.%d.%s", layer, suffix);
    return name;
}

static quill_status add_layer(tiny_writer *tiny, int32_t layer, int32_t head_dim) {
    const quill_test_tiny_model_params *params = tiny->params;
    const int64_t q_dim = (int64_t)params->n_heads * head_dim;
    const int64_t kv_dim = (int64_t)params->n_kv_heads * head_dim;
    char name[NAME_BYTES];
    quill_status status = QUILL_OK;

    status = add_vector(tiny, layer_name(name, sizeof(name), layer, "attn_norm.weight"),
                        params->n_embd, 1.0f, 0.1f);
    if (status == QUILL_OK) {
        status = add_matrix(tiny, layer_name(name, sizeof(name), layer, "attn_q.weight"),
                            params->n_embd, q_dim);
    }
    if (status == QUILL_OK) {
        status = add_matrix(tiny, layer_name(name, sizeof(name), layer, "attn_k.weight"),
                            params->n_embd, kv_dim);
    }
    if (status == QUILL_OK) {
        status = add_matrix(tiny, layer_name(name, sizeof(name), layer, "attn_v.weight"),
                            params->n_embd, kv_dim);
    }
    if (status == QUILL_OK) {
        status = add_matrix(tiny, layer_name(name, sizeof(name), layer, "attn_output.weight"),
                            q_dim, params->n_embd);
    }
    if (status == QUILL_OK && strcmp(params->arch, "qwen2") == 0) {
        status = add_vector(tiny, layer_name(name, sizeof(name), layer, "attn_q.bias"), q_dim, 0.0f,
                            0.2f);
        if (status == QUILL_OK) {
            status = add_vector(tiny, layer_name(name, sizeof(name), layer, "attn_k.bias"), kv_dim,
                                0.0f, 0.2f);
        }
        if (status == QUILL_OK) {
            status = add_vector(tiny, layer_name(name, sizeof(name), layer, "attn_v.bias"), kv_dim,
                                0.0f, 0.2f);
        }
    }
    if (status == QUILL_OK && strcmp(params->arch, "qwen3") == 0) {
        status = add_vector(tiny, layer_name(name, sizeof(name), layer, "attn_q_norm.weight"),
                            head_dim, 1.0f, 0.1f);
        if (status == QUILL_OK) {
            status = add_vector(tiny, layer_name(name, sizeof(name), layer, "attn_k_norm.weight"),
                                head_dim, 1.0f, 0.1f);
        }
    }
    if (status == QUILL_OK) {
        status = add_vector(tiny, layer_name(name, sizeof(name), layer, "ffn_norm.weight"),
                            params->n_embd, 1.0f, 0.1f);
    }
    if (status == QUILL_OK) {
        status = add_matrix(tiny, layer_name(name, sizeof(name), layer, "ffn_gate.weight"),
                            params->n_embd, params->n_ff);
    }
    if (status == QUILL_OK) {
        status = add_matrix(tiny, layer_name(name, sizeof(name), layer, "ffn_up.weight"),
                            params->n_embd, params->n_ff);
    }
    if (status == QUILL_OK) {
        status = add_matrix(tiny, layer_name(name, sizeof(name), layer, "ffn_down.weight"),
                            params->n_ff, params->n_embd);
    }
    return status;
}

/* Writes the piece text of id (>= QUILL_TEST_TINY_FIRST_PIECE) into piece. */
static void piece_text(int32_t id, char *piece, size_t piece_bytes) {
    int32_t index = id - QUILL_TEST_TINY_FIRST_PIECE;
    bool has_space = index % 2 == 0;
    int32_t letters = index / 2;
    const char *space = has_space ? "\xe2\x96\x81" : "";
    if (letters < 26) {
        snprintf(piece, piece_bytes, "%s%c", space, 'a' + letters);
        return;
    }
    letters -= 26;
    snprintf(piece, piece_bytes, "%s%c%c", space, 'a' + (letters / 26) % 26, 'a' + letters % 26);
}

static quill_status add_vocabulary(tiny_writer *tiny) {
    const quill_test_tiny_model_params *params = tiny->params;
    quill_status status = QUILL_OK;
    int32_t n_vocab = params->n_vocab;
    char **texts = quill__calloc((size_t)n_vocab, sizeof(char *));
    float *scores = quill__malloc_array((size_t)n_vocab, sizeof(float));
    int32_t *kinds = quill__malloc_array((size_t)n_vocab, sizeof(int32_t));
    if (texts == NULL || scores == NULL || kinds == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "tiny_model: out of memory");
        goto cleanup;
    }

    /* Token types as in tokenizer.ggml.token_type: 1 normal, 2 unknown, 3 control, 6 byte. */
    for (int32_t id = 0; id < n_vocab; id++) {
        char text[PIECE_BYTES];
        if (id == 0) {
            snprintf(text, sizeof(text), "<unk>");
            kinds[id] = 2;
        } else if (id == 1 || id == 2) {
            snprintf(text, sizeof(text), id == 1 ? "<s>" : "</s>");
            kinds[id] = 3;
        } else if (id < QUILL_TEST_TINY_FIRST_PIECE) {
            snprintf(text, sizeof(text), "<0x%02X>", id - 3);
            kinds[id] = 6;
        } else {
            piece_text(id, text, sizeof(text));
            kinds[id] = 1;
        }
        scores[id] = id < QUILL_TEST_TINY_FIRST_PIECE ? 0.0f : -(float)id;
        texts[id] = quill__strdup(text);
        if (texts[id] == NULL) {
            status = quill_error_set(QUILL_ERR_NOMEM, "tiny_model: out of memory");
            goto cleanup;
        }
    }

    status = quill__gguf_writer_set_string(tiny->writer, "tokenizer.ggml.model", "llama");
    if (status == QUILL_OK) {
        status = quill__gguf_writer_set_string_array(tiny->writer, "tokenizer.ggml.tokens",
                                                     (const char *const *)texts, (uint64_t)n_vocab);
    }
    if (status == QUILL_OK) {
        status = quill__gguf_writer_set_f32_array(tiny->writer, "tokenizer.ggml.scores", scores,
                                                  (uint64_t)n_vocab);
    }
    if (status == QUILL_OK) {
        status = quill__gguf_writer_set_i32_array(tiny->writer, "tokenizer.ggml.token_type", kinds,
                                                  (uint64_t)n_vocab);
    }
    if (status == QUILL_OK) {
        status = quill__gguf_writer_set_u32(tiny->writer, "tokenizer.ggml.unknown_token_id", 0);
    }
    if (status == QUILL_OK) {
        status = quill__gguf_writer_set_u32(tiny->writer, "tokenizer.ggml.bos_token_id", 1);
    }
    if (status == QUILL_OK) {
        status = quill__gguf_writer_set_u32(tiny->writer, "tokenizer.ggml.eos_token_id", 2);
    }
    if (status == QUILL_OK && params->chat_template != NULL) {
        status = quill__gguf_writer_set_string(tiny->writer, "tokenizer.chat_template",
                                               params->chat_template);
    }

cleanup:
    if (texts != NULL) {
        for (int32_t id = 0; id < n_vocab; id++) {
            quill__free(texts[id]);
        }
    }
    quill__free(texts);
    quill__free(scores);
    quill__free(kinds);
    return status;
}

/* Sets <arch>.<suffix> unless it is the key to leave out. */
static quill_status set_arch_u32(tiny_writer *tiny, const char *suffix, uint32_t value) {
    char key[NAME_BYTES];
    snprintf(key, sizeof(key), "%s.%s", tiny->params->arch, suffix);
    if (is_name(key, tiny->params->omit_key)) {
        return QUILL_OK;
    }
    return quill__gguf_writer_set_u32(tiny->writer, key, value);
}

static quill_status set_arch_f32(tiny_writer *tiny, const char *suffix, float value) {
    char key[NAME_BYTES];
    snprintf(key, sizeof(key), "%s.%s", tiny->params->arch, suffix);
    if (is_name(key, tiny->params->omit_key)) {
        return QUILL_OK;
    }
    return quill__gguf_writer_set_f32(tiny->writer, key, value);
}

static quill_status add_metadata(tiny_writer *tiny, int32_t head_dim) {
    const quill_test_tiny_model_params *params = tiny->params;
    char name[NAME_BYTES];
    snprintf(name, sizeof(name), "tiny-%s", params->arch);
    quill_status status =
        quill__gguf_writer_set_string(tiny->writer, "general.architecture", params->arch);
    if (status == QUILL_OK) {
        status = quill__gguf_writer_set_string(tiny->writer, "general.name", name);
    }
    if (status == QUILL_OK) {
        status = set_arch_u32(tiny, "block_count", (uint32_t)params->n_layers);
    }
    if (status == QUILL_OK) {
        status = set_arch_u32(tiny, "context_length", (uint32_t)params->n_ctx);
    }
    if (status == QUILL_OK) {
        status = set_arch_u32(tiny, "embedding_length", (uint32_t)params->n_embd);
    }
    if (status == QUILL_OK) {
        status = set_arch_u32(tiny, "feed_forward_length", (uint32_t)params->n_ff);
    }
    if (status == QUILL_OK) {
        status = set_arch_u32(tiny, "attention.head_count", (uint32_t)params->n_heads);
    }
    if (status == QUILL_OK) {
        status = set_arch_u32(tiny, "attention.head_count_kv", (uint32_t)params->n_kv_heads);
    }
    if (status == QUILL_OK && params->head_dim != 0) {
        status = set_arch_u32(tiny, "attention.key_length", (uint32_t)head_dim);
        if (status == QUILL_OK) {
            status = set_arch_u32(tiny, "attention.value_length", (uint32_t)head_dim);
        }
    }
    if (status == QUILL_OK) {
        status = set_arch_u32(tiny, "rope.dimension_count", (uint32_t)head_dim);
    }
    if (status == QUILL_OK) {
        status = set_arch_f32(tiny, "rope.freq_base", params->rope_freq_base);
    }
    if (status == QUILL_OK) {
        status = set_arch_f32(tiny, "attention.layer_norm_rms_epsilon", params->rms_eps);
    }
    return status;
}

static quill_status add_tensors(tiny_writer *tiny, int32_t head_dim) {
    const quill_test_tiny_model_params *params = tiny->params;
    /* Embeddings with std 1 (amplitude sqrt(3)), as a trained model's rows are O(1) after the
     * first norm anyway. */
    quill_status status = add_tensor(tiny, "token_embd.weight", params->type, params->n_embd,
                                     params->n_vocab, false, 0.0f, 1.7f);
    if (status == QUILL_OK) {
        status = add_vector(tiny, "output_norm.weight", params->n_embd, 1.0f, 0.1f);
    }
    if (status == QUILL_OK && params->has_output) {
        status = add_matrix(tiny, "output.weight", params->n_embd, params->n_vocab);
    }
    if (status == QUILL_OK && params->has_rope_freqs) {
        /* Factors between 1 and 4, as Llama 3's long-wavelength scaling. */
        status = add_vector(tiny, "rope_freqs.weight", head_dim / 2, 2.5f, 1.5f);
    }
    for (int32_t layer = 0; layer < params->n_layers && status == QUILL_OK; layer++) {
        status = add_layer(tiny, layer, head_dim);
    }
    return status;
}

int quill_test_write_tiny_model(const char *path, const quill_test_tiny_model_params *params) {
    if (path == NULL || params == NULL || params->arch == NULL || params->n_heads < 1 ||
        params->n_vocab < QUILL_TEST_TINY_FIRST_PIECE) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "tiny_model: invalid parameters (path, arch, n_heads >= 1, "
                               "n_vocab >= %d are required)",
                               QUILL_TEST_TINY_FIRST_PIECE);
    }
    int32_t head_dim = params->head_dim != 0 ? params->head_dim : params->n_embd / params->n_heads;
    tiny_writer tiny = {.writer = NULL, .params = params};
    quill_status status = quill__gguf_writer_create(&tiny.writer);
    if (status != QUILL_OK) {
        return status;
    }
    status = add_metadata(&tiny, head_dim);
    if (status == QUILL_OK) {
        status = add_vocabulary(&tiny);
    }
    if (status == QUILL_OK) {
        status = add_tensors(&tiny, head_dim);
    }
    if (status == QUILL_OK) {
        status = quill__gguf_writer_write_file(tiny.writer, path);
    }
    quill__gguf_writer_destroy(tiny.writer);
    return status;
}

int quill_test_load_tiny_model(const char *name, const quill_test_tiny_model_params *params,
                               char **path, quill_model **model) {
    *path = quill_test_tmp_path(name);
    *model = NULL;
    if (*path == NULL || quill_test_write_tiny_model(*path, params) != 0) {
        fprintf(stderr, "cannot write the tiny model %s: %s\n", name, quill_error_message());
        return -1;
    }
    quill_model_params load_params = quill_model_params_default();
    if (quill_model_load(*path, &load_params, model) != QUILL_OK) {
        fprintf(stderr, "cannot load the tiny model %s: %s\n", name, quill_error_message());
        return -1;
    }
    return 0;
}
