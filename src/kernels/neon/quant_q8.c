/*
 * NEON activation quantization to Q8_0, Q8_1 and Q8_K, bit-identical to the reference quantizers
 * (ref/quant_q8.c): the scales come from the same scalar expressions, and the rounding
 * instructions round as the reference does. FCVTAS rounds half away from zero as roundf does
 * for Q8_0 and Q8_1, and FCVTNS rounds half to even as quill__nearest_int does for Q8_K. Input
 * rows may sit at any address. ARMv8.0 base instructions only. Stateless: safe from any thread.
 */
#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "kernels/blocks.h"

/* Returns the largest |x| of n (a multiple of 16) values. The maximum is exact in any order.
 * FMAXNM skips a quiet NaN as the reference's `>` comparison does. */
static inline float max_abs(const float *x, int n) {
    float32x4_t max = vdupq_n_f32(0.0f);
    for (int i = 0; i < n; i += 16) {
        float32x4_t a = vmaxnmq_f32(vabsq_f32(vld1q_f32(x + i)), vabsq_f32(vld1q_f32(x + i + 4)));
        float32x4_t b =
            vmaxnmq_f32(vabsq_f32(vld1q_f32(x + i + 8)), vabsq_f32(vld1q_f32(x + i + 12)));
        max = vmaxnmq_f32(max, vmaxnmq_f32(a, b));
    }
    return vmaxnmvq_f32(max);
}

/* Narrows eight vectors of int32 levels (elements 0-31 in order, each in [-127, 127]) into
 * *low (elements 0-15) and *high (elements 16-31). */
static inline void narrow_32(const int32x4_t levels[8], int8x16_t *low, int8x16_t *high) {
    int16x8_t words[4];
    for (int k = 0; k < 4; k++) {
        words[k] = vqmovn_high_s32(vqmovn_s32(levels[2 * k]), levels[2 * k + 1]);
    }
    *low = vqmovn_high_s16(vqmovn_s16(words[0]), words[1]);
    *high = vqmovn_high_s16(vqmovn_s16(words[2]), words[3]);
}

/* Quantizes 32 values with d = amax / 127 and q = roundf(x / d), stores q and returns d. When
 * sum is not NULL, also stores sum(q) there. */
static inline float quantize_32(const float *x, int8_t *q, int32_t *sum) {
    float d = max_abs(x, 32) / 127.0f;
    float32x4_t inverse = vdupq_n_f32(d != 0.0f ? 1.0f / d : 0.0f);
    int32x4_t levels[8];
    for (int k = 0; k < 8; k++) {
        levels[k] = vcvtaq_s32_f32(vmulq_f32(vld1q_f32(x + 4 * k), inverse));
    }
    int8x16_t low;
    int8x16_t high;
    narrow_32(levels, &low, &high);
    vst1q_s8(q, low);
    vst1q_s8(q + 16, high);
    if (sum != NULL) {
        *sum = (int32_t)vaddlvq_s8(low) + (int32_t)vaddlvq_s8(high);
    }
    return d;
}

void quill__quantize_q8_0_neon(const float *src, void *dst, int64_t n) {
    quill_block_q8_0 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quantize_32(src + b * QUILL_QK, blocks[b].qs, NULL);
        quill__store_fp16(blocks[b].d, d);
    }
}

void quill__quantize_q8_1_neon(const float *src, void *dst, int64_t n) {
    quill_block_q8_1 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        int32_t sum = 0;
        float d = quantize_32(src + b * QUILL_QK, blocks[b].qs, &sum);
        quill__store_fp16(blocks[b].d, d);
        quill__store_fp16(blocks[b].s, (float)sum * d);
    }
}

/* As the reference: the first value of largest magnitude, max, maps to -127. q = nearest (ties
 * to even) of x * (-127 / max), clamped to 127, and d = 1 / scale. */
void quill__quantize_q8_k_neon(const float *src, void *dst, int64_t n) {
    quill_block_q8_k *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        const float *x = src + b * QUILL_QK_K;
        quill_block_q8_k *block = &blocks[b];
        float amax = max_abs(x, QUILL_QK_K);
        if (amax == 0.0f) {
            memset(block, 0, sizeof(*block));
            continue;
        }
        float max = 0.0f;
        for (int j = 0; j < QUILL_QK_K; j++) {
            if (fabsf(x[j]) == amax) {
                max = x[j];
                break;
            }
        }

        float scale = -127.0f / max;
        float32x4_t scale_v = vdupq_n_f32(scale);
        const int32x4_t limit = vdupq_n_s32(127);
        for (int k = 0; k < QUILL_QK_K / 32; k++) {
            int32x4_t levels[8];
            for (int i = 0; i < 8; i++) {
                float32x4_t scaled = vmulq_f32(vld1q_f32(x + 32 * k + 4 * i), scale_v);
                levels[i] = vminq_s32(vcvtnq_s32_f32(scaled), limit);
            }
            int8x16_t low;
            int8x16_t high;
            narrow_32(levels, &low, &high);
            vst1q_s8(block->qs + 32 * k, low);
            vst1q_s8(block->qs + 32 * k + 16, high);
            /* The sums of each 16 values, |sum| <= 16 * 127. */
            quill__store_i16(&block->bsums[4 * k], vaddlvq_s8(low));
            quill__store_i16(&block->bsums[4 * k + 2], vaddlvq_s8(high));
        }
        quill__store_f32(block->d, 1.0f / scale);
    }
}
