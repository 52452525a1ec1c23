/*
 * libFuzzer target: chat template sources, parsed and rendered with a fixed conversation.
 * The work is done by quill_fuzz_chat_template in fuzz_entries.c, which the regression test also
 * runs.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_entries.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    quill_fuzz_chat_template(data, size);
    return 0;
}
