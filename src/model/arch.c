/*
 * The table of supported architectures. Adding one means a row here plus whatever tensors and
 * forward-pass steps it needs in model.c and context.c.
 */
#include "model/arch.h"

#include <string.h>

static const quill_arch_traits arch_table[] = {
    {QUILL_ARCH_LLAMA, "llama", QUILL_ROPE_NORMAL, false, false},
    {QUILL_ARCH_QWEN2, "qwen2", QUILL_ROPE_NEOX, true, false},
    {QUILL_ARCH_QWEN3, "qwen3", QUILL_ROPE_NEOX, false, true},
};

const quill_arch_traits *quill__arch_find(const char *name, size_t n_bytes) {
    for (size_t i = 0; i < sizeof(arch_table) / sizeof(arch_table[0]); i++) {
        if (strlen(arch_table[i].name) == n_bytes &&
            memcmp(arch_table[i].name, name, n_bytes) == 0) {
            return &arch_table[i];
        }
    }
    return NULL;
}

const char *quill__arch_supported_names(void) {
    return "llama, qwen2, qwen3";
}
