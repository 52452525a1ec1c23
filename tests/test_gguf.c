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

/* Encodes one scalar of each fixed-size type as raw payloads and reads them back. */
static void test_writer_round_trip_every_value_type(void **state) {
    (void)state;
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint64_t u64 = 0xfffffffffffffff0ull;
    int64_t i64 = -5000000000ll;
    double f64 = 2.5e300;
    assert_int_equal(quill__gguf_writer_set_raw(writer, "t.u8", QUILL_GGUF_UINT8, &u8, 1), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_raw(writer, "t.i8", QUILL_GGUF_INT8, &i8, 1), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_raw(writer, "t.u16", QUILL_GGUF_UINT16, &u16, 2),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_raw(writer, "t.i16", QUILL_GGUF_INT16, &i16, 2),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "t.u32", 4000000000u), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_i32(writer, "t.i32", -2000000000), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_f32(writer, "t.f32", 1.5f), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_bool(writer, "t.bool", true), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "t.string", "hello"), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u64(writer, "t.u64", u64), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_raw(writer, "t.i64", QUILL_GGUF_INT64, &i64, 8),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_raw(writer, "t.f64", QUILL_GGUF_FLOAT64, &f64, 8),
                     QUILL_OK);
    int32_t ints[] = {-1, 0, 7};
    assert_int_equal(quill__gguf_writer_set_i32_array(writer, "t.i32_array", ints, 3), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "t.replaced", 1), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "t.replaced", 2), QUILL_OK);

    /* [[1, 2], [], [["x", "yz"]]] : an array of arrays with a nested string array. */
    byte_builder nested = {.length = 0};
    put_u32(&nested, QUILL_GGUF_ARRAY);
    put_u64(&nested, 3);
    put_u32(&nested, QUILL_GGUF_UINT16);
    put_u64(&nested, 2);
    put_bytes(&nested, "\x01\x00\x02\x00", 4);
    put_u32(&nested, QUILL_GGUF_INT8);
    put_u64(&nested, 0);
    put_u32(&nested, QUILL_GGUF_ARRAY);
    put_u64(&nested, 1);
    put_u32(&nested, QUILL_GGUF_STRING);
    put_u64(&nested, 2);
    put_string(&nested, "x");
    put_string(&nested, "yz");
    assert_int_equal(quill__gguf_writer_set_raw(writer, "t.nested", QUILL_GGUF_ARRAY, nested.data,
                                                nested.length),
                     QUILL_OK);
    void *data = NULL;
    size_t n_bytes = 0;
    assert_int_equal(quill__gguf_writer_write_memory(writer, &data, &n_bytes), QUILL_OK);
    quill__gguf_writer_destroy(writer);

    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open_memory(data, n_bytes, "types.gguf", &file), QUILL_OK);
    assert_int_equal(quill_gguf_n_kv(file), 15);
    int64_t i = 0;
    uint64_t u = 0;
    uint32_t u32 = 0;
    double d = 0.0;
    bool flag = false;
    assert_int_equal(quill_gguf_get_i64(file, "t.u8", &i), QUILL_OK);
    assert_int_equal(i, 200);
    assert_int_equal(quill_gguf_get_i64(file, "t.i8", &i), QUILL_OK);
    assert_int_equal(i, -100);
    assert_int_equal(quill_gguf_get_i64(file, "t.u16", &i), QUILL_OK);
    assert_int_equal(i, 60000);
    assert_int_equal(quill_gguf_get_i64(file, "t.i16", &i), QUILL_OK);
    assert_int_equal(i, -30000);
    assert_int_equal(quill_gguf_get_u32(file, "t.u32", &u32), QUILL_OK);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(quill_gguf_get_i64(file, "t.i32", &i), QUILL_OK);
    assert_int_equal(i, -2000000000);
    assert_int_equal(quill_gguf_get_f64(file, "t.f32", &d), QUILL_OK);
    assert_float_equal(d, 1.5, 0.0);
    assert_int_equal(quill_gguf_get_bool(file, "t.bool", &flag), QUILL_OK);
    assert_true(flag);
    assert_int_equal(quill_gguf_get_u64(file, "t.u64", &u), QUILL_OK);
    assert_true(u == 0xfffffffffffffff0ull);
    assert_int_equal(quill_gguf_get_i64(file, "t.i64", &i), QUILL_OK);
    assert_true(i == -5000000000ll);
    assert_int_equal(quill_gguf_get_f64(file, "t.f64", &d), QUILL_OK);
    assert_float_equal(d, 2.5e300, 0.0);
    assert_int_equal(quill_gguf_get_u32(file, "t.replaced", &u32), QUILL_OK);
    assert_int_equal(u32, 2);
    int64_t index = quill_gguf_find_key(file, "t.bool");
    assert_true(index >= 0);
    assert_int_equal(quill_gguf_kv_type(file, index), QUILL_GGUF_BOOL);
    assert_int_equal(quill_gguf_kv_number(file, index, &d), QUILL_OK);
    assert_float_equal(d, 1.0, 0.0);
    const char *text = NULL;
    size_t n_text = 0;
    index = quill_gguf_find_key(file, "t.string");
    assert_string_equal(quill_gguf_key(file, index), "t.string");
    assert_int_equal(quill_gguf_kv_string(file, index, &text, &n_text), QUILL_OK);
    assert_int_equal(n_text, 5);

    quill_gguf_array array;
    assert_int_equal(quill_gguf_get_array(file, "t.i32_array", &array), QUILL_OK);
    assert_int_equal(quill_gguf_array_int(&array, 0), -1);
    assert_int_equal(quill_gguf_array_int(&array, 2), 7);

    assert_int_equal(quill_gguf_get_array(file, "t.nested", &array), QUILL_OK);
    assert_int_equal(array.item_type, QUILL_GGUF_ARRAY);
    assert_int_equal(array.n_items, 3);
    quill_gguf_array inner;
    quill_gguf_array_array(&array, 0, &inner);
    assert_int_equal(inner.item_type, QUILL_GGUF_UINT16);
    assert_int_equal(inner.n_items, 2);
    assert_int_equal(quill_gguf_array_int(&inner, 1), 2);
    quill_gguf_array_array(&array, 1, &inner);
    assert_int_equal(inner.n_items, 0);
    quill_gguf_array_array(&array, 2, &inner);
    assert_int_equal(inner.item_type, QUILL_GGUF_ARRAY);
    quill_gguf_array strings;
    quill_gguf_array_array(&inner, 0, &strings);
    assert_int_equal(strings.item_type, QUILL_GGUF_STRING);
    quill_gguf_array_string(&strings, 1, &text, &n_text);
    assert_int_equal(n_text, 2);
    assert_memory_equal(text, "yz", 2);

    quill_gguf_close(file);
    quill__free(data);
}

static void test_writer_round_trip_every_tensor_type(void **state) {
    (void)state;
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    static uint8_t payload[2 * 292];
    for (size_t i = 0; i < sizeof(payload); i++) {
        payload[i] = (uint8_t)(i * 7);
    }
    int n_types = 0;
    for (uint32_t type = 0; type < QUILL_TYPE_COUNT; type++) {
        const quill_type_traits *traits = quill_type_traits_get(type);
        if (traits == NULL) {
            continue;
        }
        char name[32];
        snprintf(name, sizeof(name), "tensor.%s", traits->name);
        int64_t ne[2] = {traits->block_elements, 2};
        assert_int_equal(quill__gguf_writer_add_tensor(writer, name, type, 2, ne, payload,
                                                       2 * traits->block_bytes),
                         QUILL_OK);
        n_types++;
    }
    void *data = NULL;
    size_t n_bytes = 0;
    assert_int_equal(quill__gguf_writer_write_memory(writer, &data, &n_bytes), QUILL_OK);
    quill__gguf_writer_destroy(writer);

    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open_memory(data, n_bytes, "types.gguf", &file), QUILL_OK);
    assert_int_equal(quill_gguf_n_tensors(file), n_types);
    for (int64_t i = 0; i < quill_gguf_n_tensors(file); i++) {
        const quill_gguf_tensor *tensor = quill_gguf_tensor_at(file, i);
        const quill_type_traits *traits = quill_type_traits_get(tensor->type);
        assert_non_null(traits);
        assert_int_equal(tensor->n_bytes, 2 * traits->block_bytes);
        assert_memory_equal(tensor->data, payload, tensor->n_bytes);
        assert_int_equal(tensor->offset % 32, 0);
        assert_ptr_equal(quill_gguf_find_tensor(file, tensor->name), tensor);
    }
    assert_null(quill_gguf_tensor_at(file, n_types));
    quill_gguf_close(file);
    quill__free(data);
}

static void test_writer_file_round_trip_custom_alignment(void **state) {
    (void)state;
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "general.alignment", 64), QUILL_OK);
    float values[3] = {1.0f, 2.0f, 3.0f};
    int64_t ne[1] = {3};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "a", QUILL_TYPE_F32, 1, ne, values,
                                                   sizeof(values)),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "b", QUILL_TYPE_F32, 1, ne, values,
                                                   sizeof(values)),
                     QUILL_OK);
    char *path = quill_test_tmp_path("alignment.gguf");
    assert_int_equal(quill__gguf_writer_write_file(writer, path), QUILL_OK);
    quill__gguf_writer_destroy(writer);

    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open(path, &file), QUILL_OK);
    assert_int_equal(quill_gguf_alignment(file), 64);
    assert_int_equal(quill_gguf_tensor_at(file, 1)->offset, 64);
    assert_int_equal(((uintptr_t)quill_gguf_tensor_at(file, 1)->data) % 64, 0);
    assert_string_equal(quill_gguf_path(file), path);
    quill_gguf_close(file);
    remove(path);
    free(path);
}

static void test_writer_rejects_bad_tensors(void **state) {
    (void)state;
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    uint8_t bytes[64] = {0};
    int64_t ne[1] = {16};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "q", QUILL_TYPE_Q4_0, 1, ne, bytes, 18),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "block size"));
    int64_t ne_f32[1] = {4};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "f", QUILL_TYPE_F32, 1, ne_f32, bytes, 12),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "need 16"));
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "f", QUILL_TYPE_F32, 1, ne_f32, bytes, 16),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "f", QUILL_TYPE_F32, 1, ne_f32, bytes, 16),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "already added"));
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "g", QUILL_TYPE_F32, 5, ne_f32, bytes, 16),
                     QUILL_ERR_INVALID_ARG);
    quill__gguf_writer_destroy(writer);
}

static void test_getters_type_mismatch_and_missing(void **state) {
    (void)state;
    void *data = NULL;
    size_t n_bytes = 0;
    build_small_model(&data, &n_bytes);
    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open_memory(data, n_bytes, "small.gguf", &file), QUILL_OK);

    uint32_t value = 7;
    quill_error_clear();
    assert_int_equal(quill_gguf_get_u32(file, "llama.missing", &value), QUILL_ERR_NOT_FOUND);
    assert_int_equal(value, 0);
    assert_string_equal(quill_error_message(), "");
    assert_int_equal(quill_gguf_get_u32(file, "general.name", &value), QUILL_ERR_FORMAT);
    assert_non_null(strstr(quill_error_message(), "key 'general.name' has type string"));
    float number = 0.0f;
    assert_int_equal(quill_gguf_get_f32(file, "llama.block_count", &number), QUILL_ERR_FORMAT);
    bool flag = true;
    assert_int_equal(quill_gguf_get_bool(file, "llama.block_count", &flag), QUILL_ERR_FORMAT);
    assert_false(flag);
    quill_gguf_array array;
    assert_int_equal(quill_gguf_get_array(file, "general.name", &array), QUILL_ERR_FORMAT);
    const char *text = NULL;
    size_t n_text = 0;
    assert_int_equal(quill_gguf_get_string(file, "llama.block_count", &text, &n_text),
                     QUILL_ERR_FORMAT);
    assert_null(text);
    double d = 0.0;
    int64_t index = quill_gguf_find_key(file, "general.name");
    assert_int_equal(quill_gguf_kv_number(file, index, &d), QUILL_ERR_FORMAT);
    assert_int_equal(quill_gguf_kv_array(file, index, &array), QUILL_ERR_FORMAT);
    assert_int_equal(quill_gguf_kv_string(file, 99, &text, &n_text), QUILL_ERR_INVALID_ARG);
    assert_null(quill_gguf_key(file, -1));
    quill_gguf_close(file);
    quill__free(data);
}

static void test_getters_integer_range(void **state) {
    (void)state;
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_i32(writer, "negative", -1), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u64(writer, "large", 1ull << 40), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u64(writer, "huge", UINT64_MAX), QUILL_OK);
    void *data = NULL;
    size_t n_bytes = 0;
    assert_int_equal(quill__gguf_writer_write_memory(writer, &data, &n_bytes), QUILL_OK);
    quill__gguf_writer_destroy(writer);
    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open_memory(data, n_bytes, "range.gguf", &file), QUILL_OK);

    uint32_t u32 = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    assert_int_equal(quill_gguf_get_u32(file, "negative", &u32), QUILL_ERR_FORMAT);
    assert_non_null(strstr(quill_error_message(), "value -1"));
    assert_int_equal(quill_gguf_get_u64(file, "negative", &u64), QUILL_ERR_FORMAT);
    assert_int_equal(quill_gguf_get_u32(file, "large", &u32), QUILL_ERR_FORMAT);
    assert_int_equal(quill_gguf_get_i64(file, "large", &i64), QUILL_OK);
    assert_true(i64 == (1ll << 40));
    assert_int_equal(quill_gguf_get_u64(file, "huge", &u64), QUILL_OK);
    assert_true(u64 == UINT64_MAX);
    assert_int_equal(quill_gguf_get_i64(file, "huge", &i64), QUILL_ERR_FORMAT);
    assert_int_equal(quill_gguf_get_u32(file, "huge", &u32), QUILL_ERR_FORMAT);
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

static void put_tensor_info(byte_builder *builder, const char *name, uint32_t n_dims,
                            const uint64_t *ne, uint32_t type, uint64_t offset) {
    put_string(builder, name);
    put_u32(builder, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) {
        put_u64(builder, ne[d]);
    }
    put_u32(builder, type);
    put_u64(builder, offset);
}

/* Pads to 32 bytes and appends n_data_bytes of data. */
static void put_data(byte_builder *builder, size_t n_data_bytes) {
    while (builder->length % 32 != 0) {
        put_bytes(builder, "\0", 1);
    }
    for (size_t i = 0; i < n_data_bytes; i++) {
        put_bytes(builder, "\x11", 1);
    }
}

static void test_open_truncated_header(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 3, 0, 0);
    expect_open_error(builder.data, 6, QUILL_ERR_FORMAT, "too short for a GGUF header");
    expect_open_error(builder.data, 12, QUILL_ERR_FORMAT, "tensor count at byte 8 needs 8 bytes");
    expect_open_error(builder.data, 20, QUILL_ERR_FORMAT, "metadata count");
    put_header(&builder, 4, 0, 0);
    expect_open_error(builder.data, builder.length, QUILL_ERR_UNSUPPORTED,
                      "unsupported version 4");
}

static void test_open_absurd_counts(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 3, 0, 1000000000000ull);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "claims 1000000000000 metadata entries");
    put_header(&builder, 3, UINT64_MAX, 0);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "claims 18446744073709551615 tensors");

    put_header(&builder, 3, 0, 1);
    put_string(&builder, "big.array");
    put_u32(&builder, QUILL_GGUF_ARRAY);
    put_u32(&builder, QUILL_GGUF_UINT32);
    put_u64(&builder, 1000000000000000ull);
    put_u32(&builder, 5);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "key 'big.array' claims 1000000000000000 items of type u32");

    put_header(&builder, 3, 0, 1);
    put_string(&builder, "big.strings");
    put_u32(&builder, QUILL_GGUF_ARRAY);
    put_u32(&builder, QUILL_GGUF_STRING);
    put_u64(&builder, 1);
    put_u64(&builder, 1ull << 62);
    put_bytes(&builder, "abc", 3);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "big.strings at byte 67 needs 4611686018427387904 bytes");
}

static void test_open_bad_keys(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 3, 0, 1);
    put_u64(&builder, 100);
    put_bytes(&builder, "general", 7);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "metadata key at byte 32 needs 100 bytes but the file has 39 bytes");

    put_header(&builder, 3, 0, 1);
    put_u64(&builder, 3);
    put_bytes(&builder, "a\0b", 3);
    put_u32(&builder, QUILL_GGUF_UINT8);
    put_bytes(&builder, "\x01", 1);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "metadata key 0 contains a NUL byte");

    put_header(&builder, 3, 0, 2);
    put_string(&builder, "twice");
    put_u32(&builder, QUILL_GGUF_UINT8);
    put_bytes(&builder, "\x01", 1);
    put_string(&builder, "twice");
    put_u32(&builder, QUILL_GGUF_UINT8);
    put_bytes(&builder, "\x02", 1);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "metadata key 'twice' appears twice (entries 0 and 1)");

    put_header(&builder, 3, 0, 1);
    put_string(&builder, "odd.type");
    put_u32(&builder, 13);
    put_u32(&builder, 0);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "key 'odd.type' has unknown value type 13");
}

static void test_open_bad_values(void **state) {
    (void)state;
    byte_builder builder;
    put_header(&builder, 3, 0, 1);
    put_string(&builder, "flag");
    put_u32(&builder, QUILL_GGUF_BOOL);
    put_bytes(&builder, "\x02", 1);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "key 'flag' has invalid bool value 2");

    put_header(&builder, 3, 0, 1);
    put_string(&builder, "flags");
    put_u32(&builder, QUILL_GGUF_ARRAY);
    put_u32(&builder, QUILL_GGUF_BOOL);
    put_u64(&builder, 3);
    put_bytes(&builder, "\x01\x00\xff", 3);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "invalid bool value 255 (item 2)");

    put_header(&builder, 3, 0, 1);
    put_string(&builder, "deep");
    put_u32(&builder, QUILL_GGUF_ARRAY);
    for (int depth = 0; depth < 12; depth++) {
        put_u32(&builder, QUILL_GGUF_ARRAY);
        put_u64(&builder, 1);
    }
    put_u32(&builder, QUILL_GGUF_UINT8);
    put_u64(&builder, 0);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "nests arrays deeper than 8 levels");

    put_header(&builder, 3, 0, 1);
    put_string(&builder, "general.alignment");
    put_u32(&builder, QUILL_GGUF_UINT32);
    put_u32(&builder, 48);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "general.alignment is 48; expected a power of two");

    put_header(&builder, 3, 0, 1);
    put_string(&builder, "general.alignment");
    put_u32(&builder, QUILL_GGUF_STRING);
    put_string(&builder, "32");
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "general.alignment has type string");
}

static void test_open_bad_tensor_shapes(void **state) {
    (void)state;
    byte_builder builder;
    uint64_t ne[5] = {8, 2, 1, 1, 1};
    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 0, ne, QUILL_TYPE_F32, 0);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "tensor 't' has 0 dimensions; expected 1 to 4");

    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 5, ne, QUILL_TYPE_F32, 0);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT, "has 5 dimensions");

    uint64_t ne_zero[2] = {8, 0};
    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 2, ne_zero, QUILL_TYPE_F32, 0);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "invalid dimension ne[1] = 0");

    uint64_t ne_overflow[3] = {1ull << 32, 1ull << 30, 4};
    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 3, ne_overflow, QUILL_TYPE_F32, 0);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "invalid dimension ne[2] = 4");

    uint64_t ne_huge[1] = {UINT64_MAX};
    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 1, ne_huge, QUILL_TYPE_F32, 0);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "invalid dimension ne[0] = -1");

    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 2, ne, 4, 0);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_UNSUPPORTED,
                      "tensor 't' has unknown type id 4");

    uint64_t ne_q4[1] = {16};
    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 1, ne_q4, QUILL_TYPE_Q4_0, 0);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "rows of 16 elements, not a multiple of the block size 32");
}

static void test_open_bad_tensor_placement(void **state) {
    (void)state;
    byte_builder builder;
    uint64_t ne[2] = {8, 2};
    put_header(&builder, 3, 2, 0);
    put_tensor_info(&builder, "t", 2, ne, QUILL_TYPE_F32, 0);
    put_tensor_info(&builder, "t", 2, ne, QUILL_TYPE_F32, 64);
    put_data(&builder, 128);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "tensor 't' appears twice (entries 0 and 1)");

    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 2, ne, QUILL_TYPE_F32, 4);
    put_data(&builder, 128);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "tensor 't' starts at data offset 4, not a multiple of the alignment 32");

    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "blk.3.ffn_up.weight", 2, ne, QUILL_TYPE_F32, 0);
    put_data(&builder, 40);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT,
                      "tensor 'blk.3.ffn_up.weight' ends at byte 160 but the file has 136 bytes; "
                      "the file is truncated, download it again");

    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 2, ne, QUILL_TYPE_F32, UINT64_MAX - 31);
    put_data(&builder, 64);
    expect_open_error(builder.data, builder.length, QUILL_ERR_FORMAT, "tensor 't' ends at byte");

    put_header(&builder, 3, 1, 0);
    put_tensor_info(&builder, "t", 2, ne, QUILL_TYPE_F32, 0);
    expect_open_error(builder.data, builder.length - 5, QUILL_ERR_FORMAT,
                      "tensor offset at byte");
    expect_open_error(builder.data, 56, QUILL_ERR_FORMAT, "tensor type at byte 53");
    expect_open_error(builder.data, 50, QUILL_ERR_FORMAT, "header claims 1 tensors");
}

/* ---- Truncation, bit flips and allocation failures ----------------------------------------- */

static uint64_t next_random(uint64_t *seed) {
    /* xorshift64: a fixed-seed sequence, so failures reproduce. */
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    return *seed;
}

/* Reads every byte an accessor can reach in an array, so ASan reports any read outside the file. */
static unsigned walk_array(const quill_gguf_array *array, int depth) {
    unsigned sum = 0;
    for (uint64_t i = 0; i < array->n_items; i++) {
        if (array->item_type == QUILL_GGUF_STRING) {
            const char *text = NULL;
            size_t n_text = 0;
            quill_gguf_array_string(array, i, &text, &n_text);
            sum += n_text > 0 ? (unsigned char)text[0] + (unsigned char)text[n_text - 1] : 0;
        } else if (array->item_type == QUILL_GGUF_ARRAY) {
            quill_gguf_array inner;
            quill_gguf_array_array(array, i, &inner);
            sum += depth < 16 ? walk_array(&inner, depth + 1) : 0;
        } else {
            sum += (unsigned)quill_gguf_array_int(array, i);
            sum += (unsigned)quill_gguf_array_float(array, i);
        }
    }
    return sum;
}

static unsigned walk_file(const quill_gguf *file) {
    unsigned sum = 0;
    for (int64_t i = 0; i < quill_gguf_n_kv(file); i++) {
        sum += (unsigned)strlen(quill_gguf_key(file, i));
        quill_gguf_array array;
        const char *text = NULL;
        size_t n_text = 0;
        double number = 0.0;
        if (quill_gguf_kv_array(file, i, &array) == QUILL_OK) {
            sum += walk_array(&array, 0);
        } else if (quill_gguf_kv_string(file, i, &text, &n_text) == QUILL_OK && n_text > 0) {
            sum += (unsigned char)text[n_text - 1];
        } else if (quill_gguf_kv_number(file, i, &number) == QUILL_OK) {
            sum += number > 0.0 ? 1u : 0u;
        }
    }
    for (int64_t i = 0; i < quill_gguf_n_tensors(file); i++) {
        const quill_gguf_tensor *tensor = quill_gguf_tensor_at(file, i);
        const uint8_t *bytes = tensor->data;
        sum += bytes[0] + bytes[tensor->n_bytes - 1];
        assert_ptr_equal(quill_gguf_find_tensor(file, tensor->name), tensor);
    }
    return sum;
}

/* Opens bytes, which must be an exact-size heap block so that ASan catches any read past the
 * end: succeeds cleanly or fails with a one-line message. */
static void open_must_not_crash(const uint8_t *bytes, size_t n_bytes) {
    quill_gguf *file = NULL;
    quill_status status = quill_gguf_open_memory(bytes, n_bytes, "fuzz.gguf", &file);
    if (status == QUILL_OK) {
        assert_non_null(file);
        (void)walk_file(file);
        quill_gguf_close(file);
    } else {
        assert_null(file);
        assert_true(strlen(quill_error_message()) > 0);
        assert_null(strchr(quill_error_message(), '\n'));
    }
}

/* Opens an exact-size heap copy of the first n_bytes of bytes. */
static void open_prefix_must_not_crash(const uint8_t *bytes, size_t n_bytes) {
    uint8_t *copy = malloc(n_bytes == 0 ? 1 : n_bytes);
    assert_non_null(copy);
    memcpy(copy, bytes, n_bytes);
    open_must_not_crash(copy, n_bytes);
    free(copy);
}

/* Truncates at every offset of a small file, or at n_cases random offsets within the header of
 * a large one, then flips one bit at each of n_cases offsets within the first header_bytes. */
static void truncate_and_flip(const uint8_t *bytes, size_t n_bytes, size_t header_bytes,
                              size_t n_cases, uint64_t seed) {
    for (size_t i = 0; i < n_cases; i++) {
        size_t cut = n_bytes <= n_cases ? i : (size_t)(next_random(&seed) % (header_bytes + 64));
        open_prefix_must_not_crash(bytes, cut < n_bytes ? cut : n_bytes - 1);
    }
    uint8_t *copy = malloc(n_bytes);
    assert_non_null(copy);
    memcpy(copy, bytes, n_bytes);
    for (size_t i = 0; i < n_cases; i++) {
        size_t at = header_bytes <= n_cases ? i % header_bytes
                                            : (size_t)(next_random(&seed) % header_bytes);
        uint8_t mask = (uint8_t)(1u << (next_random(&seed) % 8));
        copy[at] ^= mask;
        open_must_not_crash(copy, n_bytes);
        copy[at] ^= mask;
    }
    free(copy);
}

/* Builds a model with a nested array, a string array, a bool and a quantized tensor. */
static void build_rich_model(void **data, size_t *n_bytes) {
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    byte_builder nested = {.length = 0};
    put_u32(&nested, QUILL_GGUF_ARRAY);
    put_u64(&nested, 2);
    put_u32(&nested, QUILL_GGUF_STRING);
    put_u64(&nested, 2);
    put_string(&nested, "ab");
    put_string(&nested, "c");
    put_u32(&nested, QUILL_GGUF_BOOL);
    put_u64(&nested, 2);
    put_bytes(&nested, "\x01\x00", 2);
    assert_int_equal(quill__gguf_writer_set_raw(writer, "test.nested", QUILL_GGUF_ARRAY,
                                                nested.data, nested.length),
                     QUILL_OK);
    const char *tokens[] = {"x", "yy", "zzz"};
    assert_int_equal(quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", tokens,
                                                         3),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_bool(writer, "test.flag", true), QUILL_OK);
    uint8_t block[2 * 18] = {0};
    int64_t ne_q[2] = {32, 2};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "q", QUILL_TYPE_Q4_0, 2, ne_q, block,
                                                   sizeof(block)),
                     QUILL_OK);
    float values[5] = {1, 2, 3, 4, 5};
    int64_t ne_f[1] = {5};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "f", QUILL_TYPE_F32, 1, ne_f, values,
                                                   sizeof(values)),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_write_memory(writer, data, n_bytes), QUILL_OK);
    quill__gguf_writer_destroy(writer);
}

static void test_fuzz_generated_file(void **state) {
    (void)state;
    void *data = NULL;
    size_t n_bytes = 0;
    build_rich_model(&data, &n_bytes);
    open_prefix_must_not_crash(data, n_bytes);
    truncate_and_flip(data, n_bytes, n_bytes, n_bytes, 0x9e3779b97f4a7c15ull);
    quill__free(data);
}

static void test_fuzz_real_files(void **state) {
    (void)state;
    const char *names[] = {"models/stories260K.gguf", "models/llama-2-tiny-random.gguf"};
    const size_t n_cases[] = {1000, 200};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *path = quill_test_data_path(names[i]);
        if (path == NULL) {
            print_message("skipping %s: fixture absent\n", names[i]);
            continue;
        }
        size_t n_bytes = 0;
        char *bytes = quill_test_read_file(path, &n_bytes);
        assert_non_null(bytes);
        quill_gguf *file = NULL;
        assert_int_equal(quill_gguf_open_memory(bytes, n_bytes, names[i], &file), QUILL_OK);
        size_t header_bytes = n_bytes;
        for (int64_t t = 0; t < quill_gguf_n_tensors(file); t++) {
            size_t start = (size_t)((const char *)quill_gguf_tensor_at(file, t)->data - bytes);
            header_bytes = start < header_bytes ? start : header_bytes;
        }
        quill_gguf_close(file);
        truncate_and_flip((const uint8_t *)bytes, n_bytes, header_bytes, n_cases[i], 12345 + i);
        free(bytes);
        free(path);
    }
}

static void test_open_allocation_failures(void **state) {
    (void)state;
    void *data = NULL;
    size_t n_bytes = 0;
    build_rich_model(&data, &n_bytes);
    int n_failures = 0;
    for (int64_t n_successes = 0; n_successes < 1000; n_successes++) {
        quill_gguf *file = NULL;
        quill__alloc_fail_after(n_successes);
        quill_status status = quill_gguf_open_memory(data, n_bytes, "alloc.gguf", &file);
        quill__alloc_fail_after(-1);
        if (status == QUILL_OK) {
            quill_gguf_close(file);
            break;
        }
        assert_int_equal(status, QUILL_ERR_NOMEM);
        assert_null(file);
        assert_non_null(strstr(quill_error_message(), "out of memory"));
        n_failures++;
    }
    assert_true(n_failures > 5);
    quill__free(data);
}

static void test_writer_allocation_failures(void **state) {
    (void)state;
    for (int64_t n_successes = 0; n_successes < 1000; n_successes++) {
        quill__alloc_fail_after(n_successes);
        void *data = NULL;
        size_t n_bytes = 0;
        quill_gguf_writer *writer = NULL;
        quill_status status = quill__gguf_writer_create(&writer);
        const char *tokens[] = {"a", "b"};
        int64_t ne[1] = {2};
        float values[2] = {1, 2};
        if (status == QUILL_OK) {
            status = quill__gguf_writer_set_string(writer, "general.name", "x");
        }
        if (status == QUILL_OK) {
            status = quill__gguf_writer_set_string_array(writer, "tokens", tokens, 2);
        }
        if (status == QUILL_OK) {
            status = quill__gguf_writer_add_tensor(writer, "t", QUILL_TYPE_F32, 1, ne, values,
                                                   sizeof(values));
        }
        if (status == QUILL_OK) {
            status = quill__gguf_writer_write_memory(writer, &data, &n_bytes);
        }
        quill__alloc_fail_after(-1);
        quill__gguf_writer_destroy(writer);
        quill__free(data);
        if (status == QUILL_OK) {
            break;
        }
        assert_int_equal(status, QUILL_ERR_NOMEM);
    }
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
        cmocka_unit_test(test_writer_round_trip_every_value_type),
        cmocka_unit_test(test_writer_round_trip_every_tensor_type),
        cmocka_unit_test(test_writer_file_round_trip_custom_alignment),
        cmocka_unit_test(test_writer_rejects_bad_tensors),
        cmocka_unit_test(test_getters_type_mismatch_and_missing),
        cmocka_unit_test(test_getters_integer_range),
        cmocka_unit_test(test_open_bad_magic),
        cmocka_unit_test(test_open_truncated_header),
        cmocka_unit_test(test_open_absurd_counts),
        cmocka_unit_test(test_open_bad_keys),
        cmocka_unit_test(test_open_bad_values),
        cmocka_unit_test(test_open_bad_tensor_shapes),
        cmocka_unit_test(test_open_bad_tensor_placement),
        cmocka_unit_test(test_open_real_models),
        cmocka_unit_test(test_fuzz_generated_file),
        cmocka_unit_test(test_fuzz_real_files),
        cmocka_unit_test(test_open_allocation_failures),
        cmocka_unit_test(test_writer_allocation_failures),
        cmocka_unit_test(test_open_legacy_version_1_file),
        cmocka_unit_test(test_open_version_1_rejected),
        cmocka_unit_test(test_open_big_endian_rejected),
        cmocka_unit_test(test_open_truncated_string_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
