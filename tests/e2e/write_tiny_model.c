/*
 * Writes the tests' tiny random llama model (no chat template, so the server uses ChatML) to the
 * path given as the only argument, for the end-to-end tests that start `quill serve` on it.
 * Exits with 0 on success, 1 when the file cannot be written, 2 on misuse.
 */
#include <stdio.h>

#include "quill/status.h"
#include "tiny_model.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTPUT.gguf\n", argv[0]);
        return 2;
    }
    quill_test_tiny_model_params params = quill_test_tiny_model_params_default();
    if (quill_test_write_tiny_model(argv[1], &params) != 0) {
        fprintf(stderr, "%s: cannot write '%s': %s\n", argv[0], argv[1], quill_error_message());
        return 1;
    }
    return 0;
}
