/*
 * NEON dot products for the weight types most models use: F32 and F16 against f32
 * activations, Q4_0 and Q8_0 against Q8_0 activations. The float dots keep four 4-lane
 * accumulators, summed in a fixed order. The quantized dots form each block's exact int32 sum
 * with widening multiplies (vmull_s8) and pairwise accumulation (vpadalq_s16). They then add
 * d_w * d_x * sum to one f32 accumulator in block order, as the reference does. Matmul calls
 * these per (row, token), so every batch shape gives the same bits. The other types use the
 * reference kernels.
 */
#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/blocks.h"

/* Sum of the four lanes: (0 + 2) + (1 + 3). */
static inline float lanes_sum(float32x4_t v) {
    float32x2_t pairs = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(pairs, 0) + vget_lane_f32(pairs, 1);
}

/* The four accumulators folded in a fixed order: (0 + 1) + (2 + 3). */
static inline float accumulators_sum(const float32x4_t acc[4]) {
    return lanes_sum(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
}

/* Loads 4 weights from w (F32 or F16 bytes, any alignment) as f32. */
static inline float32x4_t load_weights_4(const uint8_t *w, bool is_f16) {
    if (is_f16) {
        uint16_t halves[4];
        memcpy(halves, w, sizeof(halves));
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(halves)));
    }
    float values[4];
    memcpy(values, w, sizeof(values));
    return vld1q_f32(values);
}

/* Dot product of n F32 or F16 weights with f32 activations. */
static inline float dot_float(int64_t n, const uint8_t *w, const float *x, bool is_f16) {
    const size_t element_bytes = is_f16 ? 2 : 4;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f),
                          vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int k = 0; k < 4; k++) {
            float32x4_t values = load_weights_4(w + element_bytes * (size_t)(i + 4 * k), is_f16);
            acc[k] = vfmaq_f32(acc[k], values, vld1q_f32(x + i + 4 * k));
        }
    }
    float sum = accumulators_sum(acc);
    for (; i < n; i++) {
        float weight = is_f16 ? quill__load_fp16(w + 2 * i) : quill__load_f32(w + 4 * i);
        sum += weight * x[i];
    }
    return sum;
}

float quill__dot_f32_f32_neon(int64_t n, const void *weights, const void *activations) {
    return dot_float(n, weights, activations, false);
}

float quill__dot_f16_f32_neon(int64_t n, const void *weights, const void *activations) {
    return dot_float(n, weights, activations, true);
}

/* Exact sum of the 32 products of two int8 blocks, given as two 16-byte halves each. */
static inline int32_t block_sum(int8x16_t w_low, int8x16_t w_high, int8x16_t x_low,
                                int8x16_t x_high) {
    int32x4_t sums = vdupq_n_s32(0);
    sums = vpadalq_s16(sums, vmull_s8(vget_low_s8(w_low), vget_low_s8(x_low)));
    sums = vpadalq_s16(sums, vmull_s8(vget_high_s8(w_low), vget_high_s8(x_low)));
    sums = vpadalq_s16(sums, vmull_s8(vget_low_s8(w_high), vget_low_s8(x_high)));
    sums = vpadalq_s16(sums, vmull_s8(vget_high_s8(w_high), vget_high_s8(x_high)));
    return vaddvq_s32(sums);
}

float quill__dot_q4_0_q8_0_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q4_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    const uint8x16_t low_mask = vdupq_n_u8(0x0f);
    const int8x16_t offset = vdupq_n_s8(8);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        uint8x16_t packed = vld1q_u8(w[b].qs);
        /* Elements 0-15 are the low nibbles, 16-31 the high ones; levels are q - 8. */
        int8x16_t low = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, low_mask)), offset);
        int8x16_t high = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), offset);
        int32_t block = block_sum(low, high, vld1q_s8(x[b].qs), vld1q_s8(x[b].qs + 16));
        sum += quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d) * (float)block;
    }
    return sum;
}

float quill__dot_q8_0_q8_0_neon(int64_t n, const void *weights, const void *activations) {
    const quill_block_q8_0 *w = weights;
    const quill_block_q8_0 *x = activations;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        int32_t block = block_sum(vld1q_s8(w[b].qs), vld1q_s8(w[b].qs + 16), vld1q_s8(x[b].qs),
                                  vld1q_s8(x[b].qs + 16));
        sum += quill__load_fp16(w[b].d) * quill__load_fp16(x[b].d) * (float)block;
    }
    return sum;
}
