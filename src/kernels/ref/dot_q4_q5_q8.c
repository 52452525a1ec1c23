/*
 * Dot products of the legacy block formats (blocks of 32) with Q8_0 or Q8_1 activations, as
 * llama.cpp computes them: an exact int32 sum of level products per block, scaled by the two
 * fp16 scales and added to one f32 accumulator in block order. Q4_1 and Q5_1 add their offset
 * through the activation block's s = d_x * sum(q_x). Stateless.
 */
#include "kernels/blocks.h"
#include "kernels/ref/kernels_ref.h"

/* Returns sum(levels[j] * x[j]) over a block of 32. */
static int32_t dot_block(const int levels[32], const int8_t x[32]) {
    int32_t sum = 0;
    for (int j = 0; j < QUILL_QK; j++) {
        sum += levels[j] * x[j];
    }
    return sum;
}

/* Stores the 32 nibbles of a Q4 block minus offset. */
static void unpack_q4(const uint8_t qs[16], int offset, int levels[32]) {
    for (int j = 0; j < 16; j++) {
        levels[j] = (qs[j] & 0x0f) - offset;
        levels[j + 16] = (qs[j] >> 4) - offset;
    }
}

/* Stores the 32 5-bit levels of a Q5 block minus offset. */
static void unpack_q5(const uint8_t qs[16], const uint8_t qh_bytes[4], int offset, int levels[32]) {
    uint32_t qh = quill__load_u32(qh_bytes);
    for (int j = 0; j < 16; j++) {
        levels[j] = ((qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4)) - offset;
        levels[j + 16] = ((qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - offset;
    }
}

float quill__dot_q4_0_q8_0_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q4_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    float sum = 0.0f;
    int levels[QUILL_QK];
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        unpack_q4(w[b].qs, 8, levels);
        int32_t block_sum = dot_block(levels, x[b].qs);
        sum += (float)block_sum * (quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d));
    }
    return sum;
}

float quill__dot_q4_1_q8_1_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q4_1 *w = weights;
    const quill_block_q8_1 *x = activations;
    float sum = 0.0f;
    int levels[QUILL_QK];
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        unpack_q4(w[b].qs, 0, levels);
        int32_t block_sum = dot_block(levels, x[b].qs);
        sum += (quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d)) * (float)block_sum +
               quill__load_fp16(w[b].m) * quill__load_fp16(x[b].s);
    }
    return sum;
}

float quill__dot_q5_0_q8_0_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q5_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    float sum = 0.0f;
    int levels[QUILL_QK];
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        unpack_q5(w[b].qs, w[b].qh, 16, levels);
        int32_t block_sum = dot_block(levels, x[b].qs);
        sum += (float)block_sum * (quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d));
    }
    return sum;
}

float quill__dot_q5_1_q8_1_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q5_1 *w = weights;
    const quill_block_q8_1 *x = activations;
    float sum = 0.0f;
    int levels[QUILL_QK];
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        unpack_q5(w[b].qs, w[b].qh, 0, levels);
        int32_t block_sum = dot_block(levels, x[b].qs);
        sum += (quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d)) * (float)block_sum +
               quill__load_fp16(w[b].m) * quill__load_fp16(x[b].s);
    }
    return sum;
}

float quill__dot_q8_0_q8_0_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q8_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        int32_t block_sum = 0;
        for (int j = 0; j < QUILL_QK; j++) {
            block_sum += w[b].qs[j] * x[b].qs[j];
        }
        sum += (float)block_sum * (quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d));
    }
    return sum;
}
