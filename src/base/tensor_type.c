/*
 * Block layouts of the ggml tensor types. Sizes are fixed by the GGUF format; the comment on
 * each row gives the block structure.
 */
#include "quill/tensor_type.h"

#include "base/alloc.h"

static const quill_type_traits type_table[QUILL_TYPE_COUNT] = {
    [QUILL_TYPE_F32] = {"F32", 1, 4, false, true},
    [QUILL_TYPE_F16] = {"F16", 1, 2, false, true},
    /* fp16 d; 16 bytes of 4-bit values */
    [QUILL_TYPE_Q4_0] = {"Q4_0", 32, 18, true, true},
    /* fp16 d, fp16 m; 16 bytes of 4-bit values */
    [QUILL_TYPE_Q4_1] = {"Q4_1", 32, 20, true, true},
    /* fp16 d; 4 bytes of high bits; 16 bytes of low nibbles */
    [QUILL_TYPE_Q5_0] = {"Q5_0", 32, 22, true, true},
    /* fp16 d, fp16 m; 4 bytes of high bits; 16 bytes of low nibbles */
    [QUILL_TYPE_Q5_1] = {"Q5_1", 32, 24, true, true},
    /* fp16 d; 32 int8 */
    [QUILL_TYPE_Q8_0] = {"Q8_0", 32, 34, true, true},
    /* fp16 d, fp16 s (d * sum of qs); 32 int8 */
    [QUILL_TYPE_Q8_1] = {"Q8_1", 32, 36, true, true},
    /* 16 bytes scales, 64 bytes 2-bit values, fp16 d, fp16 dmin */
    [QUILL_TYPE_Q2_K] = {"Q2_K", 256, 84, true, false},
    /* 32 bytes high bits, 64 bytes 2-bit values, 12 bytes scales, fp16 d */
    [QUILL_TYPE_Q3_K] = {"Q3_K", 256, 110, true, false},
    /* fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles */
    [QUILL_TYPE_Q4_K] = {"Q4_K", 256, 144, true, true},
    /* as Q4_K plus 32 bytes of high bits */
    [QUILL_TYPE_Q5_K] = {"Q5_K", 256, 176, true, true},
    /* 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, fp16 d */
    [QUILL_TYPE_Q6_K] = {"Q6_K", 256, 210, true, true},
    /* f32 d, 256 int8, 16 int16 sums of 16 */
    [QUILL_TYPE_Q8_K] = {"Q8_K", 256, 292, true, true},
    [QUILL_TYPE_I8] = {"I8", 1, 1, false, false},
    [QUILL_TYPE_I16] = {"I16", 1, 2, false, false},
    [QUILL_TYPE_I32] = {"I32", 1, 4, false, false},
    [QUILL_TYPE_I64] = {"I64", 1, 8, false, false},
    [QUILL_TYPE_F64] = {"F64", 1, 8, false, false},
    [QUILL_TYPE_BF16] = {"BF16", 1, 2, false, true},
};

const quill_type_traits *quill_type_traits_get(uint32_t type) {
    if (type >= QUILL_TYPE_COUNT || type_table[type].name == NULL) {
        return NULL;
    }
    return &type_table[type];
}

const char *quill_type_name(uint32_t type) {
    const quill_type_traits *traits = quill_type_traits_get(type);
    return traits == NULL ? "unknown" : traits->name;
}

bool quill_type_row_bytes(uint32_t type, int64_t n_elements, size_t *n_bytes) {
    const quill_type_traits *traits = quill_type_traits_get(type);
    *n_bytes = 0;
    if (traits == NULL || n_elements < 0 || n_elements % traits->block_elements != 0) {
        return false;
    }
    return quill__size_mul((size_t)(n_elements / traits->block_elements), traits->block_bytes,
                           n_bytes);
}
