/*
 * Parity tests of the tokenizers against llama.cpp's vocabulary test set
 * (testdata/llama.cpp-vocab: ggml-vocab-X.gguf with X.gguf.inp / X.gguf.out) and llama2.c's
 * Llama 2 vectors, from QUILL_TEST_DATA_DIR. The test skips (exit 77) when the folder is absent.
 *
 * `test_tokenizer_vectors --bench` instead times encoding of about 1 MB of text with the Llama 2
 * (SPM) and Llama 3 (BPE) vocabularies and prints MB/s. It is run by hand, never by CTest.
 */
#include "test_support.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "quill/gguf.h"
#include "quill/tokenizer.h"

#define VOCAB_DIR "testdata/llama.cpp-vocab/"
#define CASE_SEPARATOR "\n__ggml_vocab_test__\n"

/* One vocabulary of the set: the GGUF it loads and the name of its .inp/.out pair. */
typedef struct vocab_case {
    const char *vocab;         /* ggml-vocab-<vocab>.gguf */
    const char *vectors;       /* ggml-vocab-<vectors>.gguf.inp/.out */
    bool check_round_trip;     /* the normalizer keeps text unchanged */
} vocab_case;

static const vocab_case vocab_cases[] = {
    {"llama-spm", "llama-spm", true},
    {"phi-3", "phi-3", true},
    {"gpt-2", "gpt-2", true},
    {"falcon", "falcon", true},
    {"deepseek-llm", "deepseek-llm", true},
    {"deepseek-coder", "deepseek-coder", true},
    {"mpt", "mpt", true},
    {"starcoder", "starcoder", true},
    {"refact", "refact", true},
    {"llama-bpe", "llama-bpe", true},
    {"qwen2", "qwen2", true},
    /* DeepSeek-R1-Distill-Qwen uses Qwen2's tokenizer, and the rebuilt qwen2 file serves both. */
    {"qwen2", "deepseek-r1-qwen", true},
    {"bert-bge", "bert-bge", false},
};

static char *vocab_path(const char *name, const char *suffix) {
    char relative[256];
    snprintf(relative, sizeof(relative), VOCAB_DIR "ggml-vocab-%s%s", name, suffix);
    return quill_test_data_path(relative);
}

static quill_tokenizer *load_tokenizer(const char *path) {
    quill_gguf *file = NULL;
    quill_tokenizer *tokenizer = NULL;
    if (quill_gguf_open(path, &file) != QUILL_OK) {
        fail_msg("cannot open %s: %s", path, quill_error_message());
    }
    if (quill_tokenizer_load(file, &tokenizer) != QUILL_OK) {
        fail_msg("cannot load the tokenizer of %s: %s", path, quill_error_message());
    }
    quill_gguf_close(file);
    return tokenizer;
}

/* Splits the .inp text into cases; returns their count. Pointers go into `inputs`, which is
 * modified in place. */
static size_t split_inputs(char *inputs, char **cases, size_t max_cases) {
    size_t n_cases = 0;
    char *cursor = inputs;
    for (;;) {
        char *separator = strstr(cursor, CASE_SEPARATOR);
        if (separator == NULL || n_cases == max_cases) {
            break;
        }
        *separator = '\0';
        cases[n_cases++] = cursor;
        cursor = separator + strlen(CASE_SEPARATOR);
    }
    return n_cases;
}

/* Parses one .out line of space-separated ids. */
static int64_t parse_ids(const char *line, int32_t *ids, int64_t max_ids) {
    int64_t n_ids = 0;
    const char *cursor = line;
    while (*cursor != '\0' && *cursor != '\n' && n_ids < max_ids) {
        char *end = NULL;
        long value = strtol(cursor, &end, 10);
        if (end == cursor) {
            break;
        }
        ids[n_ids++] = (int32_t)value;
        cursor = end;
    }
    return n_ids;
}

static bool ids_equal(const int32_t *a, int64_t n_a, const int32_t *b, int64_t n_b) {
    return n_a == n_b && (n_a == 0 || memcmp(a, b, (size_t)n_a * sizeof(int32_t)) == 0);
}

static void run_vocab_case(const vocab_case *entry) {
    char *gguf_path = vocab_path(entry->vocab, ".gguf");
    char *inp_path = vocab_path(entry->vectors, ".gguf.inp");
    char *out_path = vocab_path(entry->vectors, ".gguf.out");
    if (gguf_path == NULL || inp_path == NULL || out_path == NULL) {
        printf("vocab %-16s skipped: files absent\n", entry->vectors);
        free(gguf_path);
        free(inp_path);
        free(out_path);
        return;
    }
    quill_tokenizer *tokenizer = load_tokenizer(gguf_path);
    size_t n_inputs = 0;
    size_t n_outputs = 0;
    char *inputs = quill_test_read_file(inp_path, &n_inputs);
    char *outputs = quill_test_read_file(out_path, &n_outputs);
    assert_non_null(inputs);
    assert_non_null(outputs);

    char *cases[128];
    size_t n_cases = split_inputs(inputs, cases, 128);
    size_t n_passed = 0;
    size_t n_round_trips = 0;
    char *line = outputs;
    int32_t *expected = malloc(sizeof(int32_t) * 65536);
    for (size_t i = 0; i < n_cases; i++) {
        char *line_end = strchr(line, '\n');
        int64_t n_expected = parse_ids(line, expected, 65536);
        int32_t *tokens = NULL;
        int64_t n_tokens = 0;
        quill_status status = quill_tokenizer_encode(tokenizer, cases[i], strlen(cases[i]), 0,
                                                     &tokens, &n_tokens);
        if (status != QUILL_OK) {
            fail_msg("vocab %s case %zu: %s", entry->vectors, i, quill_error_message());
        }
        if (ids_equal(tokens, n_tokens, expected, n_expected)) {
            n_passed++;
        } else {
            printf("vocab %s case %zu differs: text '%s'\n  expected:", entry->vectors, i,
                   cases[i]);
            for (int64_t k = 0; k < n_expected; k++) {
                printf(" %d", expected[k]);
            }
            printf("\n  actual:  ");
            for (int64_t k = 0; k < n_tokens; k++) {
                printf(" %d", tokens[k]);
            }
            printf("\n");
        }
        if (entry->check_round_trip) {
            char *text = NULL;
            size_t n_bytes = 0;
            assert_int_equal(quill_tokenizer_decode(tokenizer, tokens, n_tokens, false, &text,
                                                    &n_bytes),
                             QUILL_OK);
            if (n_bytes == strlen(cases[i]) && memcmp(text, cases[i], n_bytes) == 0) {
                n_round_trips++;
            } else {
                printf("vocab %s case %zu round trip differs: '%s' -> '%s'\n", entry->vectors,
                       i, cases[i], text);
            }
            quill_text_free(text);
        }
        quill_tokens_free(tokens);
        line = line_end != NULL ? line_end + 1 : line + strlen(line);
    }
    printf("vocab %-16s %zu/%zu cases pass", entry->vectors, n_passed, n_cases);
    if (entry->check_round_trip) {
        printf(", %zu/%zu round trips", n_round_trips, n_cases);
    }
    printf("\n");
    assert_int_equal(n_cases, 46);
    assert_int_equal(n_passed, n_cases);
    if (entry->check_round_trip) {
        assert_int_equal(n_round_trips, n_cases);
    }

    free(expected);
    free(outputs);
    free(inputs);
    quill_tokenizer_destroy(tokenizer);
    free(gguf_path);
    free(inp_path);
    free(out_path);
}

static void test_vectors_llama_cpp_vocabularies(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(vocab_cases) / sizeof(vocab_cases[0]); i++) {
        run_vocab_case(&vocab_cases[i]);
    }
}

static void test_vectors_llama2c_prompts(void **state) {
    (void)state;
    char *json_path = quill_test_data_path("testdata/llama2c/tokenizer-llama2-vectors.json");
    char *gguf_path = vocab_path("llama-spm", ".gguf");
    if (json_path == NULL || gguf_path == NULL) {
        printf("llama2.c vectors skipped: files absent\n");
        free(json_path);
        free(gguf_path);
        return;
    }
    quill_tokenizer *tokenizer = load_tokenizer(gguf_path);
    json_object *root = json_object_from_file(json_path);
    assert_non_null(root);
    json_object *cases = json_object_object_get(root, "cases");
    size_t n_cases = json_object_array_length(cases);
    assert_int_equal(n_cases, 5);

    for (size_t i = 0; i < n_cases; i++) {
        json_object *item = json_object_array_get_idx(cases, i);
        const char *text = json_object_get_string(json_object_object_get(item, "text"));
        json_object *ids = json_object_object_get(item, "ids");
        int32_t *tokens = NULL;
        int64_t n_tokens = 0;
        assert_int_equal(quill_tokenizer_encode(tokenizer, text, strlen(text),
                                                QUILL_TOKENIZE_ADD_SPECIAL, &tokens, &n_tokens),
                         QUILL_OK);
        assert_int_equal(n_tokens, (int64_t)json_object_array_length(ids));
        for (int64_t k = 0; k < n_tokens; k++) {
            assert_int_equal(tokens[k],
                             json_object_get_int(json_object_array_get_idx(ids, (size_t)k)));
        }
        quill_tokens_free(tokens);
    }
    printf("llama2.c vectors: %zu/%zu cases pass\n", n_cases, n_cases);

    json_object_put(root);
    quill_tokenizer_destroy(tokenizer);
    free(json_path);
    free(gguf_path);
}

/* Times encoding of about 1 MB built from the .inp cases; prints MB/s. */
static int run_bench(void) {
    const char *names[] = {"llama-spm", "llama-bpe"};
    char *inp_path = vocab_path("llama-spm", ".gguf.inp");
    if (inp_path == NULL) {
        fprintf(stderr, "bench: %s not found under QUILL_TEST_DATA_DIR\n",
                VOCAB_DIR "ggml-vocab-llama-spm.gguf.inp");
        return 1;
    }
    size_t n_sample = 0;
    char *sample = quill_test_read_file(inp_path, &n_sample);
    size_t n_text = 0;
    size_t target_bytes = 1u << 20;
    char *text = malloc(target_bytes + n_sample + 1);
    while (n_text < target_bytes) {
        memcpy(text + n_text, sample, n_sample);
        n_text += n_sample;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *path = vocab_path(names[i], ".gguf");
        if (path == NULL) {
            fprintf(stderr, "bench: vocabulary %s not found\n", names[i]);
            continue;
        }
        quill_gguf *file = NULL;
        quill_tokenizer *tokenizer = NULL;
        if (quill_gguf_open(path, &file) != QUILL_OK ||
            quill_tokenizer_load(file, &tokenizer) != QUILL_OK) {
            fprintf(stderr, "bench: %s\n", quill_error_message());
            return 1;
        }
        quill_gguf_close(file);
        struct timespec start;
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        int32_t *tokens = NULL;
        int64_t n_tokens = 0;
        quill_status status = quill_tokenizer_encode(tokenizer, text, n_text, 0, &tokens,
                                                     &n_tokens);
        clock_gettime(CLOCK_MONOTONIC, &end);
        double seconds = (double)(end.tv_sec - start.tv_sec) +
                         (double)(end.tv_nsec - start.tv_nsec) * 1e-9;
        printf("bench %-10s %zu bytes -> %lld tokens in %.3f s: %.2f MB/s (status %d)\n",
               names[i], n_text, (long long)n_tokens, seconds,
               (double)n_text / 1e6 / seconds, (int)status);
        quill_tokens_free(tokens);
        quill_tokenizer_destroy(tokenizer);
        free(path);
    }
    free(text);
    free(sample);
    free(inp_path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        return run_bench();
    }
    char *folder = quill_test_data_path_or_skip(VOCAB_DIR "ggml-vocab-llama-spm.gguf");
    free(folder);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_llama_cpp_vocabularies),
        cmocka_unit_test(test_vectors_llama2c_prompts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
