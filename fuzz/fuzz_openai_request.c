/*
 * libFuzzer target: OpenAI request bodies for /v1/chat/completions and /v1/completions.
 * The work is done by quill_fuzz_openai_request in fuzz_entries.c, which the regression test also
 * runs.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_entries.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    quill_fuzz_openai_request(data, size);
    return 0;
}
