/*
 * libFuzzer target: text encoded and decoded with the built-in vocabularies and QUILL_FUZZ_VOCABS.
 * The work is done by quill_fuzz_tokenizer in fuzz_entries.c, which the regression test also runs.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_entries.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    quill_fuzz_tokenizer(data, size);
    return 0;
}
