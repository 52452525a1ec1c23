/*
 * Replays every fuzz seed (fuzz/corpus/<target>/) and every saved fuzzer crash
 * (tests/data/fuzz/<target>/) through the entry functions the libFuzzer targets call, so the
 * normal suite catches a regression without clang or libFuzzer. A replayed input passes when it
 * returns: the bugs these inputs once hit were crashes and sanitizer reports, which the
 * ASan build of this test sees again.
 *
 * The folders are found under QUILL_SOURCE_DIR, which CTest sets.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

/* The shared entry functions are compiled into this program directly, because the test build
 * links only libquill and the test support library, not the fuzz folder's code. */
#include "../fuzz/fuzz_entries.c"

typedef void (*fuzz_entry)(const uint8_t *data, size_t n_bytes);

/* Replays every regular file of <source>/<folder>/<target>/ through entry; returns the count.
 * A missing folder counts zero. */
static int replay_folder(const char *folder, const char *target, fuzz_entry entry) {
    const char *source = getenv("QUILL_SOURCE_DIR");
    char path[4096];
    int n_replayed = 0;

    assert_non_null(source);
    snprintf(path, sizeof(path), "%s/%s/%s", source, folder, target);
    DIR *directory = opendir(path);
    if (directory == NULL) {
        return 0;
    }
    for (struct dirent *entry_info = readdir(directory); entry_info != NULL;
         entry_info = readdir(directory)) {
        if (entry_info->d_name[0] == '.') {
            continue;
        }
        char file_path[4096 + 256];
        snprintf(file_path, sizeof(file_path), "%s/%s", path, entry_info->d_name);
        size_t n_bytes = 0;
        char *data = quill_test_read_file(file_path, &n_bytes);
        if (data == NULL) {
            fail_msg("cannot read fuzz input %s", file_path);
        }
        /* An exact-size copy, so that ASan sees a read past the input's end. */
        uint8_t *input = malloc(n_bytes > 0 ? n_bytes : 1);
        assert_non_null(input);
        memcpy(input, data, n_bytes);
        print_message("replay %s\n", file_path);
        entry(input, n_bytes);
        free(input);
        free(data);
        n_replayed++;
    }
    closedir(directory);
    return n_replayed;
}

/* Replays a target's seeds and saved crashes; the seed folder must not be empty. */
static void replay_target(const char *target, fuzz_entry entry) {
    int n_seeds = replay_folder("fuzz/corpus", target, entry);
    int n_crashes = replay_folder("tests/data/fuzz", target, entry);
    print_message("%s: %d seeds, %d saved crashes\n", target, n_seeds, n_crashes);
    assert_true(n_seeds > 0);
}

static void test_replay_gguf_inputs(void **state) {
    (void)state;
    replay_target("gguf", quill_fuzz_gguf);
}

static void test_replay_chat_template_inputs(void **state) {
    (void)state;
    replay_target("chat_template", quill_fuzz_chat_template);
}

static void test_replay_tokenizer_inputs(void **state) {
    (void)state;
    replay_target("tokenizer", quill_fuzz_tokenizer);
}

static void test_replay_openai_request_inputs(void **state) {
    (void)state;
    replay_target("openai_request", quill_fuzz_openai_request);
}

/* Empty and one-byte inputs reach every entry's early exits. */
static void test_entries_accept_tiny_inputs(void **state) {
    (void)state;
    const uint8_t byte = 0xff;
    quill_fuzz_gguf(&byte, 0);
    quill_fuzz_gguf(&byte, 1);
    quill_fuzz_chat_template(&byte, 0);
    quill_fuzz_chat_template(&byte, 1);
    quill_fuzz_tokenizer(&byte, 0);
    quill_fuzz_tokenizer(&byte, 1);
    quill_fuzz_openai_request(&byte, 0);
    quill_fuzz_openai_request(&byte, 1);
}

/* Every built-in vocabulary loads, so no selector value silently skips the tokenizer. */
static void test_builtin_vocabs_load(void **state) {
    (void)state;
    pthread_once(&fuzz_vocabs_once, build_vocabs);
    for (int slot = 0; slot < N_BUILTIN_VOCABS; slot++) {
        if (fuzz_vocabs[slot] == NULL) {
            fail_msg("built-in fuzz vocabulary %d did not load: %s", slot, quill_error_message());
        }
    }
}

int main(void) {
    if (getenv("QUILL_SOURCE_DIR") == NULL) {
        printf("skip: QUILL_SOURCE_DIR is not set, so the fuzz inputs cannot be found\n");
        return QUILL_TEST_SKIP_CODE;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_vocabs_load),
        cmocka_unit_test(test_entries_accept_tiny_inputs),
        cmocka_unit_test(test_replay_gguf_inputs),
        cmocka_unit_test(test_replay_chat_template_inputs),
        cmocka_unit_test(test_replay_tokenizer_inputs),
        cmocka_unit_test(test_replay_openai_request_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
