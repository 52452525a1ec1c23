/*
 * NEON dot products of the K-quants (Q4_K, Q5_K, Q6_K) with Q8_K activations. Per super-block
 * of 256, the levels are unpacked to int8 and each sub-block's exact int32 sum is formed as in
 * neon_common.h. The sums are then multiplied by their sub-block scales in int32 lanes. For
 * Q4_K and Q5_K the min term, sum(min_j * activation sum of sub-block j), comes from the bsums.
 * Both integers are exact: each element adds at most |scale * level * q_x| <= 128 * 32 * 128 =
 * 2^19 (Q6_K), so a super-block stays below 2^27. The float step thus uses the reference's
 * integers, in super-block order from 0, as explicit fused multiply-adds (the per-pair arithmetic
 * of kernels/packed.h, which the packed tiles in gemm_packed.c repeat): acc = fma(d_w * d_x,
 * (float)scaled, acc), then for Q4_K and Q5_K acc = fma(-(dmin_w * d_x), (float)mins, acc).
 * Blocks may sit at any address. Matmul calls these per (row, token), so every batch shape
 * gives the same bits.
 */
#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "kernels/blocks.h"
#include "kernels/neon/neon_common.h"

/* Returns sum(mins[j] * (activation sum of sub-block j)) over the 8 sub-blocks of 32. bsums
 * contains 16 little-endian int16 sums of 16 values. They are widened to int32 before the pairs
 * are added, so any bsums give the exact result.
 * NOTE: the int16 lanes are read by reinterpreting the bytes, which assumes a little-endian
 * target (aarch64, not aarch64_be). */
static inline int32_t mins_dot(const uint8_t mins[8], const uint8_t bsums[32]) {
    int16x8_t sums_low = vreinterpretq_s16_u8(vld1q_u8(bsums));
    int16x8_t sums_high = vreinterpretq_s16_u8(vld1q_u8(bsums + 16));
    /* Sub-blocks 0-3 from bsums 0-7, sub-blocks 4-7 from bsums 8-15. */
    int32x4_t sub_low =
        vpaddq_s32(vmovl_s16(vget_low_s16(sums_low)), vmovl_s16(vget_high_s16(sums_low)));
    int32x4_t sub_high =
        vpaddq_s32(vmovl_s16(vget_low_s16(sums_high)), vmovl_s16(vget_high_s16(sums_high)));
    uint16x8_t mins_wide = vmovl_u8(vld1_u8(mins));
    int32x4_t mins_low = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(mins_wide)));
    int32x4_t mins_high = vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(mins_wide)));
    return vaddvq_s32(vmlaq_s32(vmulq_s32(sub_low, mins_low), sub_high, mins_high));
}

/* Unpacks the 8 six-bit scales and mins of a Q4_K or Q5_K super-block. */
static inline void unpack_scales_mins(const uint8_t packed[12], uint8_t scales[8],
                                      uint8_t mins[8]) {
    for (int j = 0; j < 8; j++) {
        quill__q4_k_scale_min(j, packed, &scales[j], &mins[j]);
    }
}

/* Adds the scaled sums of sub-blocks 2g and 2g + 1 to acc. levels contains their 64 levels in
 * element order (four vectors of 16) and x their 64 activations. */
static inline int32x4_t add_scaled_pair(int32x4_t acc, const int8x16_t levels[4], const int8_t *x,
                                        const uint8_t scales[2]) {
    int32x4_t first = quill__neon_dot_32(levels[0], levels[1], vld1q_s8(x), vld1q_s8(x + 16));
    int32x4_t second = quill__neon_dot_32(levels[2], levels[3], vld1q_s8(x + 32), vld1q_s8(x + 48));
    acc = vmlaq_n_s32(acc, first, scales[0]);
    return vmlaq_n_s32(acc, second, scales[1]);
}

/* Returns the Q4_K dot product, or Q5_K's when is_q5: Q5_K levels are Q4_K's nibbles with a fifth
 * bit from qh. Blocks are read through byte offsets because the two block types place qs
 * differently. */
static inline float dot_q4_q5_k(int64_t n, const void *weights, const void *activations,
                                bool is_q5) {
    const uint8_t *blocks = weights;
    const quill_block_q8_k *x = activations;
    const size_t block_bytes = is_q5 ? sizeof(quill_block_q5_k) : sizeof(quill_block_q4_k);
    const size_t qs_offset =
        is_q5 ? offsetof(quill_block_q5_k, qs) : offsetof(quill_block_q4_k, qs);
    const uint8x16_t bit_0 = vdupq_n_u8(1);
    const uint8x16_t bit_1 = vdupq_n_u8(2);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        /* d, dmin and scales are at the same offsets in both block types. */
        const quill_block_q4_k *w = (const quill_block_q4_k *)(blocks + (size_t)b * block_bytes);
        const uint8_t *qs = (const uint8_t *)w + qs_offset;
        uint8_t scales[8];
        uint8_t mins[8];
        unpack_scales_mins(w->scales, scales, mins);

        /* Group g (32 bytes of qs) contains sub-block 2g in its low nibbles, 2g + 1 in its high.
         * For Q5_K, bit j of qh[l] is bit 4 of element l of sub-block j: shifting qh right by 2
         * after each group brings the bits of sub-blocks 2g and 2g + 1 to bits 0 and 1. */
        uint8x16_t qh_low = vdupq_n_u8(0);
        uint8x16_t qh_high = vdupq_n_u8(0);
        if (is_q5) {
            const quill_block_q5_k *w5 = (const quill_block_q5_k *)w;
            qh_low = vld1q_u8(w5->qh);
            qh_high = vld1q_u8(w5->qh + 16);
        }
        int32x4_t scaled_lanes = vdupq_n_s32(0);
        for (int g = 0; g < 4; g++) {
            uint8x16_t packed_low = vld1q_u8(qs + 32 * g);
            uint8x16_t packed_high = vld1q_u8(qs + 32 * g + 16);
            int8x16_t levels[4] = {
                quill__neon_low_nibbles(packed_low),
                quill__neon_low_nibbles(packed_high),
                quill__neon_high_nibbles(packed_low),
                quill__neon_high_nibbles(packed_high),
            };
            if (is_q5) {
                const uint8x16_t fifth[4] = {
                    vshlq_n_u8(vandq_u8(qh_low, bit_0), 4),
                    vshlq_n_u8(vandq_u8(qh_high, bit_0), 4),
                    vshlq_n_u8(vandq_u8(qh_low, bit_1), 3),
                    vshlq_n_u8(vandq_u8(qh_high, bit_1), 3),
                };
                for (int k = 0; k < 4; k++) {
                    levels[k] = vorrq_s8(levels[k], vreinterpretq_s8_u8(fifth[k]));
                }
                qh_low = vshrq_n_u8(qh_low, 2);
                qh_high = vshrq_n_u8(qh_high, 2);
            }
            scaled_lanes = add_scaled_pair(scaled_lanes, levels, x[b].qs + 64 * g, scales + 2 * g);
        }
        int32_t scaled = vaddvq_s32(scaled_lanes);
        int32_t mins_sum = mins_dot(mins, x[b].bsums);

        float d_x = quill__load_f32(x[b].d);
        sum = fmaf(quill__load_fp16(w->d) * d_x, (float)scaled, sum);
        sum = fmaf(-(quill__load_fp16(w->dmin) * d_x), (float)mins_sum, sum);
    }
    return sum;
}

float quill__dot_q4_k_q8_k_neon(int64_t n, const void *weights, const void *activations) {
    return dot_q4_q5_k(n, weights, activations, false);
}

float quill__dot_q5_k_q8_k_neon(int64_t n, const void *weights, const void *activations) {
    return dot_q4_q5_k(n, weights, activations, true);
}

float quill__dot_q6_k_q8_k_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q6_k *w = weights;
    const quill_block_q8_k *x = activations;
    const uint8x16_t low_mask = vdupq_n_u8(0x0f);
    const int8x16_t offset = vdupq_n_s8(32);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        int32x4_t scaled_lanes = vdupq_n_s32(0);
        for (int half = 0; half < 2; half++) {
            /* Each half of 128 elements: 64 bytes of ql, 32 of qh, 8 sub-blocks of 16. The
             * top 2 bits of elements l, l + 32, l + 64, l + 96 are bits 0-1, 2-3, 4-5, 6-7 of
             * qh[l], and each is moved to bits 4-5 of its level. */
            const uint8_t *ql = w[b].ql + 64 * half;
            uint8x16_t ql_0 = vld1q_u8(ql);
            uint8x16_t ql_1 = vld1q_u8(ql + 16);
            uint8x16_t ql_2 = vld1q_u8(ql + 32);
            uint8x16_t ql_3 = vld1q_u8(ql + 48);
            uint8x16_t qh_0 = vld1q_u8(w[b].qh + 32 * half);
            uint8x16_t qh_1 = vld1q_u8(w[b].qh + 32 * half + 16);
            const uint8x16_t levels_unsigned[8] = {
                vorrq_u8(vandq_u8(ql_0, low_mask), vshlq_n_u8(vandq_u8(qh_0, vdupq_n_u8(0x03)), 4)),
                vorrq_u8(vandq_u8(ql_1, low_mask), vshlq_n_u8(vandq_u8(qh_1, vdupq_n_u8(0x03)), 4)),
                vorrq_u8(vandq_u8(ql_2, low_mask), vshlq_n_u8(vandq_u8(qh_0, vdupq_n_u8(0x0c)), 2)),
                vorrq_u8(vandq_u8(ql_3, low_mask), vshlq_n_u8(vandq_u8(qh_1, vdupq_n_u8(0x0c)), 2)),
                vorrq_u8(vshrq_n_u8(ql_0, 4), vandq_u8(qh_0, vdupq_n_u8(0x30))),
                vorrq_u8(vshrq_n_u8(ql_1, 4), vandq_u8(qh_1, vdupq_n_u8(0x30))),
                vorrq_u8(vshrq_n_u8(ql_2, 4), vshrq_n_u8(vandq_u8(qh_0, vdupq_n_u8(0xc0)), 2)),
                vorrq_u8(vshrq_n_u8(ql_3, 4), vshrq_n_u8(vandq_u8(qh_1, vdupq_n_u8(0xc0)), 2)),
            };
            const int8_t *x_half = x[b].qs + 128 * half;
            const int8_t *scales = w[b].scales + 8 * half;
            for (int k = 0; k < 8; k++) {
                /* Levels q - 32 in [-32, 31]. */
                int8x16_t levels = vsubq_s8(vreinterpretq_s8_u8(levels_unsigned[k]), offset);
                int32x4_t sub =
                    quill__neon_dot_16(vdupq_n_s32(0), levels, vld1q_s8(x_half + 16 * k));
                scaled_lanes = vmlaq_n_s32(scaled_lanes, sub, scales[k]);
            }
        }
        int32_t scaled = vaddvq_s32(scaled_lanes);
        sum = fmaf(quill__load_fp16(w[b].d) * quill__load_f32(x[b].d), (float)scaled, sum);
    }
    return sum;
}
