/*
 * NEON dot products of the legacy block formats (blocks of 32) with Q8_0 or Q8_1 activations:
 * Q4_0, Q5_0 and Q8_0 against Q8_0, Q4_1 and Q5_1 against Q8_1. Each block's levels are
 * unpacked to int8 and its exact int32 sum formed as in neon_common.h. Then the block's term is
 * added to one f32 accumulator in block order from 0 with explicit fused multiply-adds, the
 * per-pair arithmetic of kernels/packed.h: acc = fma(d_w * d_x, (float)sum, acc), and for Q4_1
 * and Q5_1 then acc = fma(m_w, s_x, acc). The packed tiles (gemm_packed.c) compute the same
 * operations in the same order, and an explicit fmaf keeps the bits independent of the
 * compiler's contraction setting. Blocks may sit at any address. Matmul calls these per (row,
 * token), so every batch shape gives the same bits.
 */
#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <math.h>

#include "kernels/blocks.h"
#include "kernels/neon/neon_common.h"

/* Byte k of a half block tests bit k % 8 of its qh byte. */
static const uint8_t bit_masks[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};

/* Returns the fifth bits of 16 elements of a Q5 block: byte k is 0x10 where bit k of bits
 * (16 consecutive bits of qh) is set, else 0. */
static inline uint8x16_t fifth_bits(uint32_t bits) {
    uint8x16_t bytes =
        vcombine_u8(vdup_n_u8((uint8_t)(bits & 0xff)), vdup_n_u8((uint8_t)((bits >> 8) & 0xff)));
    return vandq_u8(vtstq_u8(bytes, vld1q_u8(bit_masks)), vdupq_n_u8(0x10));
}

/* Stores the 32 levels q in [0, 31] of a Q5 block: elements 0-15 in *low, 16-31 in *high. */
static inline void unpack_q5(const uint8_t qs[16], const uint8_t qh_bytes[4], int8x16_t *low,
                             int8x16_t *high) {
    uint8x16_t packed = vld1q_u8(qs);
    uint32_t qh = quill__load_u32(qh_bytes);
    *low = vorrq_s8(quill__neon_low_nibbles(packed), vreinterpretq_s8_u8(fifth_bits(qh)));
    *high = vorrq_s8(quill__neon_high_nibbles(packed), vreinterpretq_s8_u8(fifth_bits(qh >> 16)));
}

float quill__dot_q4_0_q8_0_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q4_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    const int8x16_t offset = vdupq_n_s8(8);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        uint8x16_t packed = vld1q_u8(w[b].qs);
        /* Elements 0-15 are the low nibbles, 16-31 the high ones; levels are q - 8. */
        int8x16_t low = vsubq_s8(quill__neon_low_nibbles(packed), offset);
        int8x16_t high = vsubq_s8(quill__neon_high_nibbles(packed), offset);
        int32_t block =
            vaddvq_s32(quill__neon_dot_32(low, high, vld1q_s8(x[b].qs), vld1q_s8(x[b].qs + 16)));
        sum = fmaf(quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d), (float)block, sum);
    }
    return sum;
}

float quill__dot_q4_1_q8_1_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q4_1 *w = weights;
    const quill_block_q8_1 *x = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        /* Levels are the nibbles themselves; the offset m enters through s = d_x * sum(q_x). */
        uint8x16_t packed = vld1q_u8(w[b].qs);
        int32_t block = vaddvq_s32(quill__neon_dot_32(quill__neon_low_nibbles(packed),
                                                      quill__neon_high_nibbles(packed),
                                                      vld1q_s8(x[b].qs), vld1q_s8(x[b].qs + 16)));
        sum = fmaf(quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d), (float)block, sum);
        sum = fmaf(quill__load_fp16(w[b].m), quill__load_fp16(x[b].s), sum);
    }
    return sum;
}

float quill__dot_q5_0_q8_0_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q5_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    const int8x16_t offset = vdupq_n_s8(16);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        int8x16_t low;
        int8x16_t high;
        unpack_q5(w[b].qs, w[b].qh, &low, &high);
        int32_t block = vaddvq_s32(quill__neon_dot_32(vsubq_s8(low, offset), vsubq_s8(high, offset),
                                                      vld1q_s8(x[b].qs), vld1q_s8(x[b].qs + 16)));
        sum = fmaf(quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d), (float)block, sum);
    }
    return sum;
}

float quill__dot_q5_1_q8_1_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q5_1 *w = weights;
    const quill_block_q8_1 *x = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        int8x16_t low;
        int8x16_t high;
        unpack_q5(w[b].qs, w[b].qh, &low, &high);
        int32_t block =
            vaddvq_s32(quill__neon_dot_32(low, high, vld1q_s8(x[b].qs), vld1q_s8(x[b].qs + 16)));
        sum = fmaf(quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d), (float)block, sum);
        sum = fmaf(quill__load_fp16(w[b].m), quill__load_fp16(x[b].s), sum);
    }
    return sum;
}

float quill__dot_q8_0_q8_0_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q8_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        int32_t block = vaddvq_s32(quill__neon_dot_32(vld1q_s8(w[b].qs), vld1q_s8(w[b].qs + 16),
                                                      vld1q_s8(x[b].qs), vld1q_s8(x[b].qs + 16)));
        sum = fmaf(quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d), (float)block, sum);
    }
    return sum;
}
