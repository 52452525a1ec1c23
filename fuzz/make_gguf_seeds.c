/*
 * Writes the seed corpus of the GGUF fuzz target: small files made with Quill's GGUF writer
 * that reach the tokenizer loaders, the chat template and the tensor table. Every file stays
 * under 64 KiB so that the corpus is cheap to commit and mutate.
 *
 * Usage: fuzz_make_gguf_seeds <output folder>. The files have no .gguf suffix because the
 * repository ignores *.gguf outside tests/data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gguf/gguf_writer.h"
#include "quill/status.h"
#include "quill/tensor_type.h"
#include "quill/tokenizer.h"
#include "tiny_model.h"

enum { MAX_SEED_BYTES = 64 << 10 };

/* Saves a writer's file as <folder>/<name>; returns 0 on success. Destroys writer. */
static int save_writer(quill_gguf_writer *writer, const char *folder, const char *name) {
    void *data = NULL;
    size_t n_bytes = 0;
    char path[4096];
    int result = 1;
    FILE *stream = NULL;

    if (writer == NULL) {
        fprintf(stderr, "make_gguf_seeds: %s: %s\n", name, quill_error_message());
        return 1;
    }
    if (quill__gguf_writer_write_memory(writer, &data, &n_bytes) != QUILL_OK) {
        fprintf(stderr, "make_gguf_seeds: %s: %s\n", name, quill_error_message());
        goto cleanup;
    }
    if (n_bytes > MAX_SEED_BYTES) {
        fprintf(stderr, "make_gguf_seeds: %s has %zu bytes, more than the %d allowed\n", name,
                n_bytes, MAX_SEED_BYTES);
        goto cleanup;
    }
    snprintf(path, sizeof(path), "%s/%s", folder, name);
    stream = fopen(path, "wb");
    if (stream == NULL || fwrite(data, 1, n_bytes, stream) != n_bytes) {
        fprintf(stderr, "make_gguf_seeds: failed to write %s\n", path);
        goto cleanup;
    }
    result = 0;

cleanup:
    if (stream != NULL && fclose(stream) != 0) {
        result = 1;
    }
    quill__free(data);
    quill__gguf_writer_destroy(writer);
    return result;
}

/* A SentencePiece vocabulary with byte tokens, scores, a chat template and one F32 tensor. */
static quill_gguf_writer *spm_seed(void) {
    static const char *const words[] = {"\xe2\x96\x81",   "h",         "e", "\xe2\x96\x81h",
                                        "\xe2\x96\x81he", "<|im_end|>"};
    enum { N_TOKENS = 3 + 256 + 6 };
    const char *texts[N_TOKENS];
    float scores[N_TOKENS];
    int32_t kinds[N_TOKENS];
    char byte_texts[256][8];
    quill_gguf_writer *writer = NULL;

    texts[0] = "<unk>";
    texts[1] = "<s>";
    texts[2] = "</s>";
    kinds[0] = QUILL_TOKEN_UNKNOWN;
    kinds[1] = QUILL_TOKEN_CONTROL;
    kinds[2] = QUILL_TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(byte_texts[b], sizeof(byte_texts[b]), "<0x%02X>", b);
        texts[3 + b] = byte_texts[b];
        kinds[3 + b] = QUILL_TOKEN_BYTE;
    }
    for (int i = 0; i < 6; i++) {
        texts[259 + i] = words[i];
        kinds[259 + i] = QUILL_TOKEN_NORMAL;
    }
    kinds[N_TOKENS - 1] = QUILL_TOKEN_CONTROL;
    for (int i = 0; i < N_TOKENS; i++) {
        scores[i] = -(float)i;
    }
    float weights[8] = {1.0f, -1.0f, 0.5f, 0.25f, 2.0f, 3.0f, -4.0f, 0.0f};
    int64_t ne[2] = {4, 2};

    if (quill__gguf_writer_create(&writer) != QUILL_OK) {
        return NULL;
    }
    if (quill__gguf_writer_set_string(writer, "general.architecture", "llama") != QUILL_OK ||
        quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "llama") != QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts, N_TOKENS) !=
            QUILL_OK ||
        quill__gguf_writer_set_f32_array(writer, "tokenizer.ggml.scores", scores, N_TOKENS) !=
            QUILL_OK ||
        quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds, N_TOKENS) !=
            QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.bos_token_id", 1) != QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.eos_token_id", 2) != QUILL_OK ||
        quill__gguf_writer_set_bool(writer, "tokenizer.ggml.add_bos_token", true) != QUILL_OK ||
        quill__gguf_writer_set_string(writer, "tokenizer.chat_template",
                                      "{% for m in messages %}<|im_start|>{{ m.role }}\n"
                                      "{{ m.content }}<|im_end|>\n{% endfor %}") != QUILL_OK ||
        quill__gguf_writer_add_tensor(writer, "token_embd.weight", QUILL_TYPE_F32, 2, ne, weights,
                                      sizeof(weights)) != QUILL_OK) {
        quill__gguf_writer_destroy(writer);
        return NULL;
    }
    return writer;
}

/* A byte-level BPE vocabulary with merges over plain ASCII characters. */
static quill_gguf_writer *bpe_seed(const char *pre) {
    static const char *const texts[] = {
        "a", "b", "c", "\xc4\xa0", "ab", "\304\240a", "\304\240ab", "1", "2", "!", "<|endoftext|>"};
    static const char *const merges[] = {"\xc4\xa0 a", "a b", "\304\240a b"};
    int32_t kinds[11] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, QUILL_TOKEN_CONTROL};
    quill_gguf_writer *writer = NULL;

    if (quill__gguf_writer_create(&writer) != QUILL_OK) {
        return NULL;
    }
    if (quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "gpt2") != QUILL_OK ||
        quill__gguf_writer_set_string(writer, "tokenizer.ggml.pre", pre) != QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts, 11) !=
            QUILL_OK ||
        quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds, 11) !=
            QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.merges", merges, 3) !=
            QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.eos_token_id", 10) != QUILL_OK) {
        quill__gguf_writer_destroy(writer);
        return NULL;
    }
    return writer;
}

/* A WordPiece vocabulary. */
static quill_gguf_writer *wordpiece_seed(void) {
    static const char *const texts[] = {"[PAD]", "[UNK]",          "[CLS]",
                                        "[SEP]", "\xe2\x96\x81hi", "ing"};
    int32_t kinds[6] = {3, 3, 3, 3, 1, 1};
    quill_gguf_writer *writer = NULL;

    if (quill__gguf_writer_create(&writer) != QUILL_OK) {
        return NULL;
    }
    if (quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "bert") != QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts, 6) !=
            QUILL_OK ||
        quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds, 6) !=
            QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.seperator_token_id", 3) != QUILL_OK) {
        quill__gguf_writer_destroy(writer);
        return NULL;
    }
    return writer;
}

/* Every scalar and array value type, nested arrays and quantized tensors, without a
 * tokenizer. */
static quill_gguf_writer *value_types_seed(void) {
    quill_gguf_writer *writer = NULL;
    uint8_t u8 = 200;
    int16_t i16 = -3;
    uint64_t u64 = 1ull << 40;
    double f64 = 2.5;
    /* A nested array: ARRAY of 2 arrays, each of type INT32 with 2 items. */
    uint8_t nested[4 + 8 + (4 + 8 + 8) * 2];
    uint32_t outer_type = 5;
    uint64_t outer_count = 2;
    size_t n_nested = 0;
    memcpy(nested + n_nested, &(uint32_t){9}, 4);
    n_nested += 4;
    memcpy(nested + n_nested, &outer_count, 8);
    n_nested += 8;
    for (int a = 0; a < 2; a++) {
        uint64_t inner_count = 2;
        int32_t items[2] = {a, -a};
        memcpy(nested + n_nested, &outer_type, 4);
        n_nested += 4;
        memcpy(nested + n_nested, &inner_count, 8);
        n_nested += 8;
        memcpy(nested + n_nested, items, 8);
        n_nested += 8;
    }
    uint8_t q8_block[34] = {0};
    q8_block[1] = 0x3c; /* f16 scale 1.0 */
    for (int i = 0; i < 32; i++) {
        q8_block[2 + i] = (uint8_t)(i - 16);
    }
    int64_t ne[1] = {32};

    if (quill__gguf_writer_create(&writer) != QUILL_OK) {
        return NULL;
    }
    if (quill__gguf_writer_set_raw(writer, "test.u8", QUILL_GGUF_UINT8, &u8, 1) != QUILL_OK ||
        quill__gguf_writer_set_raw(writer, "test.i16", QUILL_GGUF_INT16, &i16, 2) != QUILL_OK ||
        quill__gguf_writer_set_raw(writer, "test.u64", QUILL_GGUF_UINT64, &u64, 8) != QUILL_OK ||
        quill__gguf_writer_set_raw(writer, "test.f64", QUILL_GGUF_FLOAT64, &f64, 8) != QUILL_OK ||
        quill__gguf_writer_set_raw(writer, "test.nested", QUILL_GGUF_ARRAY, nested, n_nested) !=
            QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "general.alignment", 64) != QUILL_OK ||
        quill__gguf_writer_set_f32(writer, "test.f32", 0.125f) != QUILL_OK ||
        quill__gguf_writer_set_i32(writer, "test.i32", -7) != QUILL_OK ||
        quill__gguf_writer_add_tensor(writer, "blk.0.attn_q.weight", QUILL_TYPE_Q8_0, 1, ne,
                                      q8_block, sizeof(q8_block)) != QUILL_OK) {
        quill__gguf_writer_destroy(writer);
        return NULL;
    }
    return writer;
}

/* Copies a tiny model written by the test helper into the corpus. */
static int save_tiny_model(const char *folder, const char *name, const char *arch) {
    char path[4096];
    quill_test_tiny_model_params params = quill_test_tiny_model_params_default();
    params.arch = arch;
    params.type = QUILL_TYPE_Q8_0;
    params.n_layers = 1;
    params.n_embd = 32;
    params.n_heads = 2;
    params.n_kv_heads = 1;
    params.n_ff = 32;
    params.n_vocab = 300;
    params.has_output = false;
    params.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
    snprintf(path, sizeof(path), "%s/%s", folder, name);
    if (quill_test_write_tiny_model(path, &params) != 0) {
        fprintf(stderr, "make_gguf_seeds: %s: %s\n", name, quill_error_message());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <output folder>\n", argv[0]);
        return 2;
    }
    const char *folder = argv[1];
    int n_failed = 0;
    n_failed += save_writer(spm_seed(), folder, "spm-vocab");
    n_failed += save_writer(bpe_seed("gpt-2"), folder, "bpe-gpt2-vocab");
    n_failed += save_writer(bpe_seed("llama-bpe"), folder, "bpe-llama3-vocab");
    n_failed += save_writer(wordpiece_seed(), folder, "wordpiece-vocab");
    n_failed += save_writer(value_types_seed(), folder, "value-types");
    n_failed += save_tiny_model(folder, "tiny-llama-q8_0", "llama");
    n_failed += save_tiny_model(folder, "tiny-qwen3-q8_0", "qwen3");
    return n_failed == 0 ? 0 : 1;
}
