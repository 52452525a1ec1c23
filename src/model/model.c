/*
 * Model loader: opens the GGUF file (mapped read-only), reads the hyper-parameters of a llama,
 * qwen2 or qwen3 model, checks every tensor the forward pass reads (presence, type, shape) and
 * points the weights into the mapping, then loads the tokenizer. The model is immutable after
 * load: safe from any thread.
 */
#include "quill/model.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/alloc.h"
#include "kernels/kernels.h"
#include "model/model_internal.h"
#include "quill/tensor_type.h"

enum {
    KEY_BYTES = 128,
    TENSOR_NAME_BYTES = 96,
    /* Bound on every width and count read from a file, so that products of two of them stay far
     * from int64 overflow and shapes stay in int32. */
    HPARAM_MAX = 1 << 24,
};

typedef struct loader {
    quill_model *model; /* being filled */
    const char *path;   /* for messages */
} loader;

quill_model_params quill_model_params_default(void) {
    quill_model_params params = {.use_mlock = false};
    return params;
}

/* Reads the integer <arch>.<suffix> into *out, range-checked to [1, HPARAM_MAX]. A missing key
 * gets default_value when has_default is set, else fails naming the key. */
static quill_status read_count(const loader *load, const char *suffix, bool has_default,
                               int64_t default_value, int32_t *out) {
    char key[KEY_BYTES];
    snprintf(key, sizeof(key), "%s.%s", load->model->arch_name, suffix);
    int64_t value = 0;
    quill_status status = quill_gguf_get_i64(load->model->file, key, &value);
    if (status == QUILL_ERR_NOT_FOUND && has_default) {
        value = default_value;
    } else if (status == QUILL_ERR_NOT_FOUND) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: metadata key '%s' is missing in '%s'; the file is not a "
                               "complete %s model",
                               key, load->path, load->model->arch_name);
    } else if (status != QUILL_OK) {
        return status;
    }
    if (value < 1 || value > HPARAM_MAX) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: metadata key '%s' is %lld in '%s'; expected a value in "
                               "[1, %d]",
                               key, (long long)value, load->path, HPARAM_MAX);
    }
    *out = (int32_t)value;
    return QUILL_OK;
}

/* Reads the float <arch>.<suffix>; a missing key gets default_value when has_default is set. */
static quill_status read_float(const loader *load, const char *suffix, bool has_default,
                               float default_value, float *out) {
    char key[KEY_BYTES];
    snprintf(key, sizeof(key), "%s.%s", load->model->arch_name, suffix);
    quill_status status = quill_gguf_get_f32(load->model->file, key, out);
    if (status == QUILL_ERR_NOT_FOUND && has_default) {
        *out = default_value;
        return QUILL_OK;
    }
    if (status == QUILL_ERR_NOT_FOUND) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: metadata key '%s' is missing in '%s'; the file is not a "
                               "complete %s model",
                               key, load->path, load->model->arch_name);
    }
    if (status == QUILL_OK && !(*out > 0.0f && *out < 1e30f)) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: metadata key '%s' is %g in '%s'; expected a positive "
                               "finite value",
                               key, (double)*out, load->path);
    }
    return status;
}

/* Copies a borrowed string of the file into a new NUL-terminated string, or NULL when absent. */
static quill_status copy_string(const quill_gguf *file, const char *key, char **out) {
    const char *data = NULL;
    size_t n_bytes = 0;
    *out = NULL;
    quill_status status = quill_gguf_get_string(file, key, &data, &n_bytes);
    if (status == QUILL_ERR_NOT_FOUND) {
        return QUILL_OK;
    }
    if (status != QUILL_OK) {
        return status;
    }
    *out = quill__strndup(data, n_bytes);
    if (*out == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "model: out of memory copying '%s'", key);
    }
    return QUILL_OK;
}

static quill_status read_architecture(loader *load) {
    quill_model *model = load->model;
    const char *data = NULL;
    size_t n_bytes = 0;
    quill_status status =
        quill_gguf_get_string(model->file, "general.architecture", &data, &n_bytes);
    if (status == QUILL_ERR_NOT_FOUND) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: metadata key 'general.architecture' is missing in '%s'; "
                               "the file is not a model",
                               load->path);
    }
    if (status != QUILL_OK) {
        return status;
    }
    model->traits = quill__arch_find(data, n_bytes);
    if (model->traits == NULL) {
        int n_shown = n_bytes > 64 ? 64 : (int)n_bytes;
        return quill_error_set(QUILL_ERR_UNSUPPORTED,
                               "model: architecture '%.*s' is not supported; supported: %s",
                               n_shown, data, quill__arch_supported_names());
    }
    model->arch_name = quill__strdup(model->traits->name);
    if (model->arch_name == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "model: out of memory");
    }
    return QUILL_OK;
}

/* The vocabulary size: <arch>.vocab_size, else the length of tokenizer.ggml.tokens. */
static quill_status read_vocab_size(const loader *load, int32_t *n_vocab) {
    char key[KEY_BYTES];
    snprintf(key, sizeof(key), "%s.vocab_size", load->model->arch_name);
    if (quill_gguf_find_key(load->model->file, key) >= 0) {
        return read_count(load, "vocab_size", false, 0, n_vocab);
    }
    quill_gguf_array tokens;
    quill_status status = quill_gguf_get_array(load->model->file, "tokenizer.ggml.tokens", &tokens);
    if (status == QUILL_ERR_NOT_FOUND) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: neither '%s' nor 'tokenizer.ggml.tokens' is in '%s'; the "
                               "vocabulary size is unknown",
                               key, load->path);
    }
    if (status != QUILL_OK) {
        return status;
    }
    if (tokens.n_items < 1 || tokens.n_items > HPARAM_MAX) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: tokenizer.ggml.tokens has %llu entries in '%s'; expected "
                               "[1, %d]",
                               (unsigned long long)tokens.n_items, load->path, HPARAM_MAX);
    }
    *n_vocab = (int32_t)tokens.n_items;
    return QUILL_OK;
}

static quill_status check_hparams(const loader *load) {
    const quill_model_info *info = &load->model->info;
    if (info->n_heads % info->n_kv_heads != 0) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: %d query heads are not a multiple of %d KV heads in '%s'",
                               info->n_heads, info->n_kv_heads, load->path);
    }
    if (info->n_rot > info->head_dim || info->n_rot % 2 != 0) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: rope.dimension_count %d must be even and at most the head "
                               "size %d in '%s'",
                               info->n_rot, info->head_dim, load->path);
    }
    if ((int64_t)info->n_heads * info->head_dim > HPARAM_MAX) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: %d heads of %d elements exceed %d elements in '%s'",
                               info->n_heads, info->head_dim, HPARAM_MAX, load->path);
    }
    return QUILL_OK;
}

static quill_status read_hparams(loader *load) {
    quill_model_info *info = &load->model->info;
    int32_t context_length = 0;
    quill_status status = read_count(load, "block_count", false, 0, &info->n_layers);
    if (status == QUILL_OK) {
        status = read_count(load, "embedding_length", false, 0, &info->n_embd);
    }
    if (status == QUILL_OK) {
        status = read_count(load, "feed_forward_length", false, 0, &info->n_ff);
    }
    if (status == QUILL_OK) {
        status = read_count(load, "attention.head_count", false, 0, &info->n_heads);
    }
    if (status == QUILL_OK) {
        status =
            read_count(load, "attention.head_count_kv", true, info->n_heads, &info->n_kv_heads);
    }
    if (status == QUILL_OK) {
        status = read_count(load, "attention.key_length", true, info->n_embd / info->n_heads,
                            &info->head_dim);
    }
    if (status == QUILL_OK) {
        status = read_count(load, "rope.dimension_count", true, info->head_dim, &info->n_rot);
    }
    if (status == QUILL_OK) {
        status = read_count(load, "context_length", false, 0, &context_length);
    }
    if (status == QUILL_OK) {
        status = read_float(load, "rope.freq_base", true, 10000.0f, &info->rope_freq_base);
    }
    if (status == QUILL_OK) {
        status = read_float(load, "attention.layer_norm_rms_epsilon", false, 0.0f, &info->rms_eps);
    }
    if (status == QUILL_OK) {
        status = read_vocab_size(load, &info->n_vocab);
    }
    if (status == QUILL_OK) {
        status = check_hparams(load);
    }
    info->n_ctx_train = context_length;
    return status;
}

/* Fails unless the tensor's data can be read as f32 in place. */
static quill_status check_f32_data(const loader *load, const quill_gguf_tensor *tensor) {
    if (tensor->type != QUILL_TYPE_F32) {
        return quill_error_set(QUILL_ERR_UNSUPPORTED,
                               "model: tensor '%s' has type %s in '%s'; norm weights, biases and "
                               "rope_freqs must be F32",
                               tensor->name, quill_type_name(tensor->type), load->path);
    }
    if ((uintptr_t)tensor->data % sizeof(float) != 0) {
        return quill_error_set(QUILL_ERR_FORMAT, "model: tensor '%s' is not 4-byte aligned in '%s'",
                               tensor->name, load->path);
    }
    return QUILL_OK;
}

/* Points *out at the tensor `name`. A missing tensor fails when is_required, else leaves *out
 * NULL and returns QUILL_OK. */
static quill_status find_tensor(const loader *load, const char *name, bool is_required,
                                const quill_gguf_tensor **out) {
    *out = quill_gguf_find_tensor(load->model->file, name);
    if (*out == NULL && is_required) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: tensor '%s' is missing in '%s'; the %s architecture needs "
                               "it",
                               name, load->path, load->model->arch_name);
    }
    return QUILL_OK;
}

/* Points *out at the f32 vector `name` of n elements. A missing tensor fails when is_required,
 * else leaves *out NULL. */
static quill_status find_vector(const loader *load, const char *name, int64_t n, bool is_required,
                                const float **out) {
    *out = NULL;
    const quill_gguf_tensor *tensor = NULL;
    quill_status status = find_tensor(load, name, is_required, &tensor);
    if (status != QUILL_OK || tensor == NULL) {
        return status;
    }
    if (tensor->n_dims != 1 || tensor->ne[0] != n) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: tensor '%s' has shape [%lld, %lld] (GGUF order) but [%lld] "
                               "was expected in '%s'",
                               name, (long long)tensor->ne[0], (long long)tensor->ne[1],
                               (long long)n, load->path);
    }
    status = check_f32_data(load, tensor);
    if (status == QUILL_OK) {
        *out = tensor->data;
    }
    return status;
}

/* Fills *out with the matrix `name` of n_rows outputs by n_cols inputs (GGUF shape
 * [n_cols, n_rows]). A missing tensor fails when is_required, else leaves out->data NULL. */
static quill_status find_matrix(const loader *load, const char *name, int64_t n_rows,
                                int64_t n_cols, bool is_required, quill_matrix *out) {
    memset(out, 0, sizeof(*out));
    const quill_gguf_tensor *tensor = NULL;
    quill_status status = find_tensor(load, name, is_required, &tensor);
    if (status != QUILL_OK || tensor == NULL) {
        return status;
    }
    if (tensor->n_dims != 2 || tensor->ne[0] != n_cols || tensor->ne[1] != n_rows) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: tensor '%s' has shape [%lld, %lld, %lld] (GGUF order, "
                               "inputs first) but [%lld, %lld] was expected in '%s'",
                               name, (long long)tensor->ne[0], (long long)tensor->ne[1],
                               (long long)tensor->ne[2], (long long)n_cols, (long long)n_rows,
                               load->path);
    }
    const quill_type_traits *traits = quill_type_traits_get(tensor->type);
    if (traits == NULL || !traits->is_supported || tensor->type == QUILL_TYPE_Q8_1 ||
        tensor->type == QUILL_TYPE_Q8_K) {
        return quill_error_set(QUILL_ERR_UNSUPPORTED,
                               "model: tensor '%s' has type %s in '%s', which Quill has no "
                               "kernels for; requantize the model to a supported type",
                               name, quill_type_name(tensor->type), load->path);
    }
    size_t row_bytes = 0;
    if (!quill_type_row_bytes(tensor->type, n_cols, &row_bytes)) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "model: tensor '%s' has rows of %lld elements in '%s', not a "
                               "multiple of the %s block of %lld",
                               name, (long long)n_cols, load->path, traits->name,
                               (long long)traits->block_elements);
    }
    if (tensor->type == QUILL_TYPE_F32 && (uintptr_t)tensor->data % sizeof(float) != 0) {
        return check_f32_data(load, tensor);
    }
    out->type = tensor->type;
    out->n_rows = n_rows;
    out->n_cols = n_cols;
    out->data = tensor->data;
    out->row_bytes = row_bytes;
    return QUILL_OK;
}

/* Writes "blk.<layer>.<suffix>" into name. */
static const char *layer_tensor_name(char *name, size_t name_bytes, int32_t layer,
                                     const char *suffix) {
    snprintf(name, name_bytes, "blk.%d.%s", layer, suffix);
    return name;
}

static quill_status load_layer_attention(const loader *load, int32_t index,
                                         quill_layer_weights *layer) {
    const quill_model_info *info = &load->model->info;
    const int64_t q_dim = (int64_t)info->n_heads * info->head_dim;
    const int64_t kv_dim = (int64_t)info->n_kv_heads * info->head_dim;
    const bool has_bias = load->model->traits->has_qkv_bias;
    const bool has_norm = load->model->traits->has_qk_norm;
    char name[TENSOR_NAME_BYTES];

    quill_status status =
        find_vector(load, layer_tensor_name(name, sizeof(name), index, "attn_norm.weight"),
                    info->n_embd, true, &layer->attn_norm);
    if (status == QUILL_OK) {
        status = find_matrix(load, layer_tensor_name(name, sizeof(name), index, "attn_q.weight"),
                             q_dim, info->n_embd, true, &layer->attn_q);
    }
    if (status == QUILL_OK) {
        status = find_matrix(load, layer_tensor_name(name, sizeof(name), index, "attn_k.weight"),
                             kv_dim, info->n_embd, true, &layer->attn_k);
    }
    if (status == QUILL_OK) {
        status = find_matrix(load, layer_tensor_name(name, sizeof(name), index, "attn_v.weight"),
                             kv_dim, info->n_embd, true, &layer->attn_v);
    }
    if (status == QUILL_OK) {
        status =
            find_matrix(load, layer_tensor_name(name, sizeof(name), index, "attn_output.weight"),
                        info->n_embd, q_dim, true, &layer->attn_output);
    }
    if (status == QUILL_OK && has_bias) {
        status = find_vector(load, layer_tensor_name(name, sizeof(name), index, "attn_q.bias"),
                             q_dim, true, &layer->q_bias);
    }
    if (status == QUILL_OK && has_bias) {
        status = find_vector(load, layer_tensor_name(name, sizeof(name), index, "attn_k.bias"),
                             kv_dim, true, &layer->k_bias);
    }
    if (status == QUILL_OK && has_bias) {
        status = find_vector(load, layer_tensor_name(name, sizeof(name), index, "attn_v.bias"),
                             kv_dim, true, &layer->v_bias);
    }
    if (status == QUILL_OK && has_norm) {
        status =
            find_vector(load, layer_tensor_name(name, sizeof(name), index, "attn_q_norm.weight"),
                        info->head_dim, true, &layer->q_norm);
    }
    if (status == QUILL_OK && has_norm) {
        status =
            find_vector(load, layer_tensor_name(name, sizeof(name), index, "attn_k_norm.weight"),
                        info->head_dim, true, &layer->k_norm);
    }
    return status;
}

static quill_status load_layer_ffn(const loader *load, int32_t index, quill_layer_weights *layer) {
    const quill_model_info *info = &load->model->info;
    char name[TENSOR_NAME_BYTES];
    quill_status status =
        find_vector(load, layer_tensor_name(name, sizeof(name), index, "ffn_norm.weight"),
                    info->n_embd, true, &layer->ffn_norm);
    if (status == QUILL_OK) {
        status = find_matrix(load, layer_tensor_name(name, sizeof(name), index, "ffn_gate.weight"),
                             info->n_ff, info->n_embd, true, &layer->ffn_gate);
    }
    if (status == QUILL_OK) {
        status = find_matrix(load, layer_tensor_name(name, sizeof(name), index, "ffn_up.weight"),
                             info->n_ff, info->n_embd, true, &layer->ffn_up);
    }
    if (status == QUILL_OK) {
        status = find_matrix(load, layer_tensor_name(name, sizeof(name), index, "ffn_down.weight"),
                             info->n_embd, info->n_ff, true, &layer->ffn_down);
    }
    return status;
}

static quill_status load_tensors(loader *load) {
    quill_model *model = load->model;
    quill_model_info *info = &model->info;
    quill_status status = find_matrix(load, "token_embd.weight", info->n_vocab, info->n_embd, true,
                                      &model->token_embd);
    if (status == QUILL_OK) {
        status = find_vector(load, "output_norm.weight", info->n_embd, true, &model->output_norm);
    }
    if (status == QUILL_OK) {
        status =
            find_matrix(load, "output.weight", info->n_vocab, info->n_embd, false, &model->output);
    }
    if (status == QUILL_OK && model->output.data == NULL) {
        model->output = model->token_embd;
        info->has_tied_output = true;
    }
    if (status == QUILL_OK) {
        status = find_vector(load, "rope_freqs.weight", info->n_rot / 2, false, &model->rope_freqs);
        info->has_rope_freqs = model->rope_freqs != NULL;
    }
    if (status != QUILL_OK) {
        return status;
    }

    model->layers = quill__calloc((size_t)info->n_layers, sizeof(quill_layer_weights));
    if (model->layers == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "model: out of memory for %d layers",
                               info->n_layers);
    }
    for (int32_t index = 0; index < info->n_layers && status == QUILL_OK; index++) {
        status = load_layer_attention(load, index, &model->layers[index]);
        if (status == QUILL_OK) {
            status = load_layer_ffn(load, index, &model->layers[index]);
        }
    }
    return status;
}

/* Sums elements and bytes over every tensor of the file. A decode step reads every tensor once,
 * except the token embedding, of which it looks up one row unless the output projection reuses
 * it. Repacking keeps each matrix's byte count, so the file's sizes are the bytes read. */
static void count_weights(quill_model *model) {
    int64_t n_tensors = quill_gguf_n_tensors(model->file);
    for (int64_t i = 0; i < n_tensors; i++) {
        const quill_gguf_tensor *tensor = quill_gguf_tensor_at(model->file, i);
        model->info.n_params += tensor->ne[0] * tensor->ne[1] * tensor->ne[2] * tensor->ne[3];
        model->info.n_weight_bytes += tensor->n_bytes;
    }
    model->info.n_decode_bytes = model->info.n_weight_bytes;
    if (!model->info.has_tied_output) {
        const quill_matrix *embedding = &model->token_embd;
        model->info.n_decode_bytes -= (size_t)embedding->n_rows * embedding->row_bytes;
        model->info.n_decode_bytes += embedding->row_bytes;
    }
    model->info.n_file_bytes = quill_gguf_file_bytes(model->file);
}

/* general.name, else the file's base name without ".gguf". */
static quill_status read_name(quill_model *model, const char *path) {
    quill_status status = copy_string(model->file, "general.name", &model->name);
    if (status != QUILL_OK || model->name != NULL) {
        return status;
    }
    const char *base = strrchr(path, '/');
    base = base == NULL ? path : base + 1;
    size_t n_bytes = strlen(base);
    if (n_bytes > 5 && strcmp(base + n_bytes - 5, ".gguf") == 0) {
        n_bytes -= 5;
    }
    model->name = quill__strndup(base, n_bytes);
    if (model->name == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "model: out of memory");
    }
    return QUILL_OK;
}

/* Huge page size on x86-64 and AArch64 with 4 KiB base pages. */
static const size_t HUGE_PAGE_BYTES = (size_t)2 << 20;

/* Start of every repacked matrix in the arena: a cache line, so that tiles load aligned. */
static const size_t ARENA_ALIGNMENT = 64;

static size_t round_up(size_t n, size_t multiple) {
    return (n + multiple - 1) / multiple * multiple;
}

static size_t matrix_bytes(const quill_matrix *matrix) {
    return (size_t)matrix->n_rows * matrix->row_bytes;
}

/* Calls visit on every weight matrix, each once: a tied output matrix is the embedding matrix
 * itself. */
static quill_status for_each_matrix(quill_model *model,
                                    quill_status (*visit)(quill_model *, quill_matrix *)) {
    quill_status status = visit(model, &model->token_embd);
    if (status == QUILL_OK && !model->info.has_tied_output) {
        status = visit(model, &model->output);
    }
    for (int32_t i = 0; status == QUILL_OK && i < model->info.n_layers; i++) {
        quill_layer_weights *layer = &model->layers[i];
        quill_matrix *matrices[] = {&layer->attn_q,      &layer->attn_k,   &layer->attn_v,
                                    &layer->attn_output, &layer->ffn_gate, &layer->ffn_up,
                                    &layer->ffn_down};
        for (size_t j = 0; status == QUILL_OK && j < sizeof(matrices) / sizeof(matrices[0]); j++) {
            status = visit(model, matrices[j]);
        }
    }
    return status;
}

static bool wants_packing(const quill_matrix *matrix) {
    return quill__matrix_wants_packing(matrix->type, matrix->n_rows);
}

/* Adds the arena bytes of a matrix to repack to arena_bytes, which sizes the arena before it is
 * mapped. */
static quill_status count_arena_bytes(quill_model *model, quill_matrix *matrix) {
    if (wants_packing(matrix)) {
        model->arena_bytes += round_up(matrix_bytes(matrix), ARENA_ALIGNMENT);
    }
    return QUILL_OK;
}

/* Maps an anonymous arena of n_bytes starting on a huge page boundary and
 * advises the kernel to back it with huge pages. Decode streams every weight once per token, and
 * with 4 KiB pages the page walks cap one core's stream: a packed 8192 x 2048 Q4_0 matrix
 * read 24.5-28.6 GB/s on one thread with 4 KiB pages against 33.3-36.5 GB/s with 2 MiB ones (AMD
 * EPYC, transparent_hugepage=madvise). Where huge pages are unavailable the arena keeps base pages.
 */
static quill_status map_arena(quill_model *model, size_t n_bytes, const char *path) {
    size_t mapping_bytes = round_up(n_bytes, HUGE_PAGE_BYTES) + HUGE_PAGE_BYTES;
    void *mapping =
        mmap(NULL, mapping_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping == MAP_FAILED) {
        return quill_error_set(QUILL_ERR_NOMEM,
                               "model: cannot map %zu bytes to repack the weights of '%s'; "
                               "free memory, or set QUILL_KERNELS=avx2 to repack fewer types",
                               mapping_bytes, path);
    }
    model->arena_mapping = mapping;
    model->arena_mapping_bytes = mapping_bytes;
    model->arena = (uint8_t *)round_up((uintptr_t)mapping, HUGE_PAGE_BYTES);
#ifdef MADV_HUGEPAGE
    /* Advice only: a kernel without transparent huge pages rejects it and the arena keeps
     * base pages. */
    (void)madvise(model->arena, round_up(n_bytes, HUGE_PAGE_BYTES), MADV_HUGEPAGE);
#endif
    return QUILL_OK;
}

/* Returns the whole pages of [begin, begin + n_bytes) to the page cache: the process no longer
 * reads a repacked matrix's file bytes, so they leave its resident memory. Pages shared with a
 * neighbouring tensor stay mapped. */
static void release_file_pages(const void *begin, size_t n_bytes) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = round_up((uintptr_t)begin, page);
    uintptr_t end = ((uintptr_t)begin + n_bytes) / page * page;
    if (end > first) {
        /* The mapping is private and never written, so dropping its pages loses nothing, and a
         * failure only leaves them resident. Locked pages (use_mlock) are unlocked first. */
        (void)munlock((void *)first, end - first);
        (void)madvise((void *)first, end - first, MADV_DONTNEED);
    }
}

/* Copies a matrix that the selected kernels multiply faster in row groups into the arena and
 * repacks it there. */
static quill_status pack_matrix(quill_model *model, quill_matrix *matrix) {
    if (!wants_packing(matrix)) {
        return QUILL_OK;
    }
    size_t n_bytes = matrix_bytes(matrix);
    quill_matrix packed = *matrix;
    packed.data = model->arena + model->arena_bytes;
    memcpy((void *)(uintptr_t)packed.data, matrix->data, n_bytes);
    quill_status status = quill__matrix_pack(&packed);
    if (status != QUILL_OK) {
        return status;
    }
    release_file_pages(matrix->data, n_bytes);
    *matrix = packed;
    model->arena_bytes += round_up(n_bytes, ARENA_ALIGNMENT);
    return QUILL_OK;
}

/* Repacks every matrix that gains from it into one anonymous huge-page arena. The copies
 * replace the file's pages in resident memory (release_file_pages), so it stays one copy of
 * the weights. The other matrices are used in place from the file mapping.
 * NOTE: two models loaded from the same file each hold their own repacked copy, where the
 * file mapping would share the page cache. */
static quill_status pack_weights(quill_model *model, const char *path) {
    (void)for_each_matrix(model, count_arena_bytes);
    size_t n_bytes = model->arena_bytes;
    if (n_bytes == 0) {
        return QUILL_OK;
    }
    /* pack_matrix counts the bytes again as it fills the arena. */
    model->arena_bytes = 0;
    quill_status status = map_arena(model, n_bytes, path);
    if (status == QUILL_OK) {
        status = for_each_matrix(model, pack_matrix);
    }
    if (status == QUILL_OK && model->info.has_tied_output) {
        model->output = model->token_embd;
    }
    return status;
}

/* Locks the mapped tensor data in memory. Runs before pack_weights, which unlocks the file
 * pages of the matrices it repacks; lock_arena then locks their repacked copies. */
static quill_status lock_weights(const quill_model *model, const char *path) {
    int64_t n_tensors = quill_gguf_n_tensors(model->file);
    for (int64_t i = 0; i < n_tensors; i++) {
        const quill_gguf_tensor *tensor = quill_gguf_tensor_at(model->file, i);
        if (tensor->n_bytes > 0 && mlock(tensor->data, tensor->n_bytes) != 0) {
            return quill_error_set(QUILL_ERR_NOMEM,
                                   "model: mlock of %zu bytes of '%s' failed; raise the "
                                   "memlock limit (ulimit -l) or load without mlock",
                                   tensor->n_bytes, path);
        }
    }
    return QUILL_OK;
}

/* Locks the repacked matrices in memory. */
static quill_status lock_arena(const quill_model *model, const char *path) {
    if (model->arena_bytes > 0 && mlock(model->arena, model->arena_bytes) != 0) {
        return quill_error_set(QUILL_ERR_NOMEM,
                               "model: mlock of the %zu repacked bytes of '%s' failed; raise "
                               "the memlock limit (ulimit -l) or load without mlock",
                               model->arena_bytes, path);
    }
    return QUILL_OK;
}

quill_status quill_model_load(const char *path, const quill_model_params *params,
                              quill_model **out) {
    quill_status status = QUILL_OK;
    quill_model *model = NULL;
    loader load = {.model = NULL, .path = path};
    if (out == NULL || path == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "model: path and out must not be NULL");
    }
    *out = NULL;
    quill_model_params defaults = quill_model_params_default();
    if (params == NULL) {
        params = &defaults;
    }

    /* Map the file and read what kind of model it is. */
    model = quill__calloc(1, sizeof(*model));
    if (model == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "model: out of memory");
        goto cleanup;
    }
    status = quill_gguf_open(path, &model->file);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    load.model = model;
    status = read_architecture(&load);
    if (status != QUILL_OK) {
        goto cleanup;
    }

    /* Hyper-parameters, then every tensor against them. */
    model->info.arch = model->traits->arch;
    model->info.rope_layout = model->traits->rope_layout;
    status = read_hparams(&load);
    if (status == QUILL_OK) {
        status = load_tensors(&load);
    }
    if (status == QUILL_OK) {
        status = read_name(model, path);
    }
    if (status == QUILL_OK) {
        status = copy_string(model->file, "tokenizer.chat_template", &model->chat_template);
    }
    if (status == QUILL_OK) {
        status = quill_tokenizer_load(model->file, &model->tokenizer);
    }
    if (status == QUILL_OK && params->use_mlock) {
        status = lock_weights(model, path);
    }
    if (status == QUILL_OK) {
        status = pack_weights(model, path);
    }
    if (status == QUILL_OK && params->use_mlock) {
        status = lock_arena(model, path);
    }
    if (status != QUILL_OK) {
        goto cleanup;
    }

    count_weights(model);
    model->info.arch_name = model->arch_name;
    model->info.name = model->name;
    model->info.has_chat_template = model->chat_template != NULL;
    *out = model;
    model = NULL;

cleanup:
    quill_model_destroy(model);
    return status;
}

void quill_model_destroy(quill_model *model) {
    if (model == NULL) {
        return;
    }
    quill_tokenizer_destroy(model->tokenizer);
    quill__free(model->layers);
    quill__free(model->chat_template);
    quill__free(model->name);
    quill__free(model->arch_name);
    quill_gguf_close(model->file);
    if (model->arena_mapping != NULL) {
        munmap(model->arena_mapping, model->arena_mapping_bytes);
    }
    quill__free(model);
}

const quill_model_info *quill_model_get_info(const quill_model *model) {
    return model == NULL ? NULL : &model->info;
}

const quill_tokenizer *quill_model_tokenizer(const quill_model *model) {
    return model == NULL ? NULL : model->tokenizer;
}

const quill_gguf *quill_model_gguf(const quill_model *model) {
    return model == NULL ? NULL : model->file;
}

const char *quill_model_chat_template(const quill_model *model) {
    return model == NULL ? NULL : model->chat_template;
}
