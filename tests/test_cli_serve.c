/*
 * Tests of `quill serve` flag handling: usage errors exit with status 2 and name the flag, a
 * model that cannot be loaded exits with status 1, and --help exits with 0. These run the built
 * binary and never bind a port, because every case fails before the server starts.
 */
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct serve_case {
    const char *arguments;     /* after `quill serve` */
    int expected_status;       /* process exit status */
    const char *expected_text; /* part of stderr */
} serve_case;

static char *run_serve(const char *arguments, int *status) {
    char command[1024];
    snprintf(command, sizeof(command), "'%s' serve %s 2>&1", quill_test_binary(), arguments);
    return quill_test_run_capture(command, status);
}

static void test_serve_usage_errors(void **state) {
    (void)state;
    const serve_case cases[] = {
        {"--bogus", 2, "unknown option '--bogus'"},
        {"-m model.gguf --ctx 1", 2, "--ctx"},
        {"-m model.gguf --ctx 999999999", 2, "from 2 to 16777216"},
        {"-m model.gguf --model-alias ''", 2, "--model-alias is empty"},
        {"-m model.gguf --queue-limit -1", 2, "--queue-limit"},
        {"-m model.gguf --api-key ''", 2, "--api-key"},
        {"-m model.gguf --port 70000", 2, "--port"},
        {"-m model.gguf --parallel 0", 2, "--parallel"},
        {"-m model.gguf --price-input -1", 2, "--price-input"},
        {"-hf ../evil", 2, "invalid reference"},
        {"-m a.gguf -hf owner/repo", 2, "exactly one of -m"},
        {"", 2, "exactly one of -m"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int status = -1;
        char *output = run_serve(cases[i].arguments, &status);
        assert_non_null(output);
        if (strstr(output, cases[i].expected_text) == NULL) {
            print_error("case '%s' printed: %s\n", cases[i].arguments, output);
        }
        assert_int_equal(status, cases[i].expected_status);
        assert_non_null(strstr(output, cases[i].expected_text));
        free(output);
    }
}

static void test_serve_missing_model_fails(void **state) {
    (void)state;
    int status = -1;
    char *output = run_serve("-m /nonexistent/model.gguf --port 0", &status);
    assert_non_null(output);
    assert_int_equal(status, 1);
    assert_non_null(strstr(output, "/nonexistent/model.gguf"));
    free(output);
}

static void test_serve_help_succeeds(void **state) {
    (void)state;
    int status = -1;
    char *output = run_serve("--help", &status);
    assert_non_null(output);
    assert_int_equal(status, 0);
    assert_non_null(strstr(output, "--cache-mem"));
    free(output);
}

int main(void) {
    if (quill_test_binary() == NULL) {
        printf("SKIP: QUILL_BINARY is not set; run this test through ctest\n");
        return QUILL_TEST_SKIP_CODE;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve_usage_errors),
        cmocka_unit_test(test_serve_missing_model_fails),
        cmocka_unit_test(test_serve_help_succeeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
