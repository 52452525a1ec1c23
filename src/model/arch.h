/*
 * The architectures Quill runs and how they differ from plain Llama: the RoPE pair layout,
 * Q/K/V biases (qwen2) and per-head RMSNorm on Q and K (qwen3). Immutable table: safe from any
 * thread.
 */
#ifndef QUILL_ARCH_H
#define QUILL_ARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "quill/model.h"

typedef struct quill_arch_traits {
    quill_arch arch;               /* enum value */
    const char *name;              /* general.architecture and the metadata key prefix */
    quill_rope_layout rope_layout; /* NORMAL for llama (the converter permutes Q/K rows), NEOX
                                      for the Qwen models */
    bool has_qkv_bias;             /* blk.N.attn_{q,k,v}.bias present */
    bool has_qk_norm;              /* blk.N.attn_{q,k}_norm.weight present */
} quill_arch_traits;

/* Returns the traits of the architecture named by n_bytes bytes at name, or NULL when Quill
 * does not support it. */
const quill_arch_traits *quill__arch_find(const char *name, size_t n_bytes);

/* The supported names for messages: "llama, qwen2, qwen3". */
const char *quill__arch_supported_names(void);

#endif
