/*
 * libFuzzer target: GGUF files opened from memory, their metadata, tensors, tokenizer and chat
 * template. The work is done by quill_fuzz_gguf in fuzz_entries.c, which the regression test also
 * runs.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_entries.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    quill_fuzz_gguf(data, size);
    return 0;
}
