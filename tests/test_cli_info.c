/*
 * Tests of `quill info` through the built binary (QUILL_BINARY): text and JSON output for a
 * generated model, and one-line errors with the right exit code for corrupt files and misuse.
 */
#include "test_support.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gguf/gguf_writer.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

static char *model_path;
static char *corrupt_path;
static char *stderr_path;

/* Writes a two-layer llama-shaped model with a vocabulary and a chat template. */
static void write_model(const char *path) {
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "general.architecture", "llama"),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "general.name", "info test"), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.block_count", 2), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.embedding_length", 64), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.feed_forward_length", 128),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.attention.head_count", 4),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.attention.head_count_kv", 2),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_u32(writer, "llama.context_length", 256), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_f32(writer, "llama.rope.freq_base", 500000.0f),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "gpt2"),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.ggml.pre", "llama-bpe"),
                     QUILL_OK);
    const char *tokens[] = {"a", "b", "c"};
    assert_int_equal(quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", tokens,
                                                         3),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "tokenizer.chat_template",
                                                   "{{ messages }}"),
                     QUILL_OK);
    static float values[64 * 3];
    int64_t ne_embd[2] = {64, 3};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "token_embd.weight", QUILL_TYPE_F32, 2,
                                                   ne_embd, values, sizeof(values)),
                     QUILL_OK);
    static uint8_t blocks[2 * 4 * 18];
    int64_t ne_q[2] = {64, 4};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "blk.0.attn_q.weight", QUILL_TYPE_Q4_0,
                                                   2, ne_q, blocks, sizeof(blocks)),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "blk.1.attn_q.weight", QUILL_TYPE_Q4_0,
                                                   2, ne_q, blocks, sizeof(blocks)),
                     QUILL_OK);
    assert_int_equal(quill__gguf_writer_write_file(writer, path), QUILL_OK);
    quill__gguf_writer_destroy(writer);
}

/* Runs `quill info ARGS`, storing stdout (returned) and the exit status; stderr goes to
 * stderr_path. */
static char *run_info(const char *args, int *exit_status) {
    char command[2048];
    int n = snprintf(command, sizeof(command), "'%s' info %s 2>'%s'", quill_test_binary(), args,
                     stderr_path);
    assert_true(n > 0 && (size_t)n < sizeof(command));
    char *output = quill_test_run_capture(command, exit_status);
    assert_non_null(output);
    return output;
}

static char *read_stderr(void) {
    size_t n_bytes = 0;
    char *text = quill_test_read_file(stderr_path, &n_bytes);
    assert_non_null(text);
    return text;
}

/* Checks that stderr contains exactly one line containing part. */
static void assert_one_error_line(const char *part) {
    char *text = read_stderr();
    char *newline = strchr(text, '\n');
    assert_non_null(newline);
    assert_string_equal(newline + 1, "");
    if (strstr(text, part) == NULL) {
        print_error("stderr: %s", text);
    }
    assert_non_null(strstr(text, part));
    free(text);
}

static void test_info_text_output(void **state) {
    (void)state;
    char args[1024];
    snprintf(args, sizeof(args), "-m '%s'", model_path);
    int exit_status = -1;
    char *output = run_info(args, &exit_status);
    assert_int_equal(exit_status, 0);
    assert_non_null(strstr(output, "architecture:     llama\n"));
    assert_non_null(strstr(output, "name:             info test\n"));
    assert_non_null(strstr(output, "layers:           2\n"));
    assert_non_null(strstr(output, "n_kv_heads:       2\n"));
    assert_non_null(strstr(output, "head_dim:         16\n"));
    assert_non_null(strstr(output, "rope freq base:   500000\n"));
    assert_non_null(strstr(output, "parameters:       704 (704)\n"));
    assert_non_null(strstr(output, "tensor types:     F32: 1, Q4_0: 2\n"));
    assert_non_null(strstr(output, "vocabulary:       gpt2, 3 tokens\n"));
    assert_non_null(strstr(output, "pre-tokenizer:    llama-bpe\n"));
    assert_non_null(strstr(output, "chat template:    present (14 bytes)\n"));
    free(output);
}

static void test_info_json_output(void **state) {
    (void)state;
    char args[1024];
    snprintf(args, sizeof(args), "--json -m '%s'", model_path);
    int exit_status = -1;
    char *output = run_info(args, &exit_status);
    assert_int_equal(exit_status, 0);
    json_object *root = json_tokener_parse(output);
    assert_non_null(root);
    json_object *value = NULL;
    assert_true(json_object_object_get_ex(root, "gguf_version", &value));
    assert_int_equal(json_object_get_int(value), 3);
    assert_true(json_object_object_get_ex(root, "n_heads", &value));
    assert_int_equal(json_object_get_int(value), 4);
    assert_true(json_object_object_get_ex(root, "n_params", &value));
    assert_int_equal(json_object_get_int64(value), 704);
    json_object *types = NULL;
    assert_true(json_object_object_get_ex(root, "tensor_types", &types));
    assert_true(json_object_object_get_ex(types, "Q4_0", &value));
    assert_int_equal(json_object_get_int(value), 2);
    json_object *vocab = NULL;
    assert_true(json_object_object_get_ex(root, "vocab", &vocab));
    assert_true(json_object_object_get_ex(vocab, "n_tokens", &value));
    assert_int_equal(json_object_get_int(value), 3);
    json_object *chat_template = NULL;
    assert_true(json_object_object_get_ex(root, "chat_template", &chat_template));
    assert_true(json_object_object_get_ex(chat_template, "present", &value));
    assert_true(json_object_get_boolean(value));
    json_object_put(root);
    free(output);
}

static void test_info_corrupt_file(void **state) {
    (void)state;
    char args[1024];
    snprintf(args, sizeof(args), "-m '%s'", corrupt_path);
    int exit_status = -1;
    char *output = run_info(args, &exit_status);
    assert_int_equal(exit_status, 1);
    assert_string_equal(output, "");
    assert_one_error_line("the file is truncated, download it again");
    free(output);
}

static void test_info_missing_file(void **state) {
    (void)state;
    int exit_status = -1;
    char *output = run_info("-m /nonexistent/model.gguf", &exit_status);
    assert_int_equal(exit_status, 1);
    assert_one_error_line("/nonexistent/model.gguf: no such file");
    free(output);
}

static void test_info_usage_errors(void **state) {
    (void)state;
    int exit_status = -1;
    char *output = run_info("--frobnicate", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_one_error_line("unknown option '--frobnicate'");
    free(output);

    output = run_info("", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_one_error_line("pass exactly one of -m MODEL");
    free(output);

    output = run_info("-m", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_one_error_line("-m needs a value");
    free(output);

    output = run_info("--help", &exit_status);
    assert_int_equal(exit_status, 0);
    assert_non_null(strstr(output, "usage: quill info -m MODEL [--json]"));
    free(output);
}

static void test_info_invalid_hub_reference(void **state) {
    (void)state;
    int exit_status = -1;
    char *output = run_info("-hf '../evil'", &exit_status);
    assert_int_equal(exit_status, 2);
    assert_one_error_line("hub: invalid reference '../evil'");
    free(output);
}

/* Writes the model and a copy cut 40 bytes short, which ends inside its last tensor. */
static int group_setup(void **state) {
    (void)state;
    model_path = quill_test_tmp_path("info-model.gguf");
    corrupt_path = quill_test_tmp_path("info-corrupt.gguf");
    stderr_path = quill_test_tmp_path("info-stderr.txt");
    write_model(model_path);
    size_t n_bytes = 0;
    char *bytes = quill_test_read_file(model_path, &n_bytes);
    assert_non_null(bytes);
    assert_true(n_bytes > 40);
    assert_int_equal(quill_test_write_file(corrupt_path, bytes, n_bytes - 40), 0);
    free(bytes);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    remove(model_path);
    remove(corrupt_path);
    remove(stderr_path);
    free(model_path);
    free(corrupt_path);
    free(stderr_path);
    return 0;
}

int main(void) {
    if (quill_test_binary() == NULL) {
        printf("skipping: QUILL_BINARY is not set, so the quill binary cannot be run\n");
        return QUILL_TEST_SKIP_CODE;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_text_output),
        cmocka_unit_test(test_info_json_output),
        cmocka_unit_test(test_info_corrupt_file),
        cmocka_unit_test(test_info_missing_file),
        cmocka_unit_test(test_info_usage_errors),
        cmocka_unit_test(test_info_invalid_hub_reference),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
