/*
 * Tensor element types, numbered as in GGUF files (the ggml type ids), and their block layout.
 * A quantized type stores elements in blocks: block_elements values share scales and take
 * block_bytes bytes. Immutable tables; safe from any thread.
 */
#ifndef QUILL_TENSOR_TYPE_H
#define QUILL_TENSOR_TYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"

QUILL_EXTERN_C_BEGIN

typedef enum quill_type {
    QUILL_TYPE_F32 = 0,
    QUILL_TYPE_F16 = 1,
    QUILL_TYPE_Q4_0 = 2,
    QUILL_TYPE_Q4_1 = 3,
    QUILL_TYPE_Q5_0 = 6,
    QUILL_TYPE_Q5_1 = 7,
    QUILL_TYPE_Q8_0 = 8,
    QUILL_TYPE_Q8_1 = 9,
    QUILL_TYPE_Q2_K = 10,
    QUILL_TYPE_Q3_K = 11,
    QUILL_TYPE_Q4_K = 12,
    QUILL_TYPE_Q5_K = 13,
    QUILL_TYPE_Q6_K = 14,
    QUILL_TYPE_Q8_K = 15,
    QUILL_TYPE_I8 = 24,
    QUILL_TYPE_I16 = 25,
    QUILL_TYPE_I32 = 26,
    QUILL_TYPE_I64 = 27,
    QUILL_TYPE_F64 = 28,
    QUILL_TYPE_BF16 = 30,
    QUILL_TYPE_COUNT = 40, /* one past the largest id this table covers */
} quill_type;

typedef struct quill_type_traits {
    const char *name;       /* "Q4_K", as llama.cpp and GGUF tools print it */
    int64_t block_elements; /* elements per block; 1 for plain types */
    size_t block_bytes;     /* bytes per block */
    bool is_quantized;      /* block-quantized (scales inside blocks) */
    bool is_supported;      /* Quill has kernels for tensors of this type */
} quill_type_traits;

/* Returns the traits of a type id read from a file, or NULL for an id no GGUF writer uses. */
QUILL_API const quill_type_traits *quill_type_traits_get(uint32_t type);

/* Returns the type's name, or "unknown" for an unknown id. */
QUILL_API const char *quill_type_name(uint32_t type);

/* Stores the bytes of a row of n_elements elements; fails (returns false) when n_elements is
 * not a multiple of the block size, the type is unknown, or the size overflows. */
QUILL_API bool quill_type_row_bytes(uint32_t type, int64_t n_elements, size_t *n_bytes);

QUILL_EXTERN_C_END

#endif
