/*
 * Helper of tests/neon/run.sh, which checks packed NEON matrices against the reference kernels
 * under qemu-user. There test_model's own packed-against-reference tests skip, because they start
 * test_model again as a child process, which needs binfmt_misc. run.sh instead runs
 * `test_model --probe-logits MODEL OUT` once per kernel variant and compares the logit files with
 * this program.
 *
 *   packed_logits write TYPE PATH     writes the tiny model of test_model's packing tests
 *                                     (n_embd 256, n_ff 512, every matrix repacked) in TYPE,
 *                                     a type name such as q5_k
 *   packed_logits compare A B BOUND   exits 1 unless the two f32 files have the same size and
 *                                     max |a - b| <= BOUND
 *
 * Exits with 0 on success, 1 on a failed check or write, 2 on misuse.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "quill/status.h"
#include "quill/tensor_type.h"
#include "test_support.h"
#include "tiny_model.h"

/* Returns the type named `name` (quill_type_name spelling, any case), or QUILL_TYPE_COUNT. */
static uint32_t type_from_name(const char *name) {
    for (uint32_t type = 0; type < QUILL_TYPE_COUNT; type++) {
        const char *type_name = quill_type_name(type);
        if (type_name != NULL && strcasecmp(type_name, name) == 0) {
            return type;
        }
    }
    return QUILL_TYPE_COUNT;
}

static int write_model(const char *type_name, const char *path) {
    uint32_t type = type_from_name(type_name);
    if (type == QUILL_TYPE_COUNT) {
        fprintf(stderr,
                "packed_logits: unknown tensor type '%s'; expected a name such as q4_0 or q6_k\n",
                type_name);
        return 2;
    }
    quill_test_tiny_model_params params = quill_test_tiny_model_params_default();
    params.type = type;
    params.n_embd = 256;
    params.n_ff = 512;
    if (quill_test_write_tiny_model(path, &params) != 0) {
        fprintf(stderr, "packed_logits: writing '%s' failed: %s\n", path, quill_error_message());
        return 1;
    }
    return 0;
}

static int compare_logits(const char *expected_path, const char *got_path, const char *bound) {
    char *end = NULL;
    double max_allowed = strtod(bound, &end);
    if (end == bound || *end != '\0' || !(max_allowed >= 0.0)) {
        fprintf(stderr, "packed_logits: invalid bound '%s'; expected a number >= 0\n", bound);
        return 2;
    }
    size_t expected_bytes = 0;
    size_t got_bytes = 0;
    float *expected = (float *)quill_test_read_file(expected_path, &expected_bytes);
    float *got = (float *)quill_test_read_file(got_path, &got_bytes);
    int result = 1;
    if (expected == NULL || got == NULL) {
        fprintf(stderr, "packed_logits: reading '%s' or '%s' failed\n", expected_path, got_path);
        goto cleanup;
    }
    if (expected_bytes != got_bytes || expected_bytes == 0) {
        fprintf(stderr, "packed_logits: '%s' has %zu bytes, '%s' %zu; expected the same size\n",
                expected_path, expected_bytes, got_path, got_bytes);
        goto cleanup;
    }
    double max_error = 0.0;
    for (size_t i = 0; i < expected_bytes / sizeof(float); i++) {
        double error = fabs((double)got[i] - expected[i]);
        /* A NaN fails the check: it is not <= any bound. */
        max_error = error > max_error || isnan(error) ? error : max_error;
    }
    printf("%s against %s: max |logit difference| = %g (bound %g)\n", got_path, expected_path,
           max_error, max_allowed);
    result = max_error <= max_allowed ? 0 : 1;

cleanup:
    free(got);
    free(expected);
    return result;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "write") == 0) {
        return write_model(argv[2], argv[3]);
    }
    if (argc == 5 && strcmp(argv[1], "compare") == 0) {
        return compare_logits(argv[2], argv[3], argv[4]);
    }
    fprintf(stderr, "usage: %s write TYPE PATH | compare EXPECTED GOT BOUND\n", argv[0]);
    return 2;
}
