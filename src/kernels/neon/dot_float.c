/*
 * NEON dot products of F32, F16 and BF16 weight rows with f32 activations. Four 4-lane f32
 * accumulators take 16 elements per step and are summed in a fixed order. The last n % 16
 * elements are added one by one. So the result differs from the reference's single accumulator
 * by rounding only. Weights may sit at any address. Matmul calls these per (row, token), so
 * every batch shape gives the same bits.
 */
#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <string.h>

#include "kernels/blocks.h"

/* The element formats a weight row can have. */
typedef enum weight_format {
    WEIGHT_FORMAT_F32,
    WEIGHT_FORMAT_F16,
    WEIGHT_FORMAT_BF16,
} weight_format;

/* Sum of the four lanes: (0 + 2) + (1 + 3). */
static inline float lanes_sum(float32x4_t v) {
    float32x2_t pairs = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(pairs, 0) + vget_lane_f32(pairs, 1);
}

/* The four accumulators folded in a fixed order: (0 + 1) + (2 + 3). */
static inline float accumulators_sum(const float32x4_t acc[4]) {
    return lanes_sum(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
}

/* Loads 4 weights from w (bytes in `format`, any alignment) as f32. */
static inline float32x4_t load_weights_4(const uint8_t *w, weight_format format) {
    if (format == WEIGHT_FORMAT_F32) {
        float values[4];
        memcpy(values, w, sizeof(values));
        return vld1q_f32(values);
    }
    uint16_t halves[4];
    memcpy(halves, w, sizeof(halves));
    if (format == WEIGHT_FORMAT_F16) {
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(halves)));
    }
    /* A bfloat16 is the top half of an f32. */
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(halves), 16));
}

/* Returns weight i of a row in `format` as f32. */
static inline float load_weight(const uint8_t *w, int64_t i, weight_format format) {
    if (format == WEIGHT_FORMAT_F32) {
        return quill__load_f32(w + 4 * i);
    }
    if (format == WEIGHT_FORMAT_F16) {
        return quill__load_fp16(w + 2 * i);
    }
    return quill__bf16_to_fp32((uint16_t)(w[2 * i] | (w[2 * i + 1] << 8)));
}

/* Dot product of n weights in `format` with f32 activations. */
static inline float dot_float(int64_t n, const uint8_t *w, const float *x, weight_format format) {
    const size_t element_bytes = format == WEIGHT_FORMAT_F32 ? 4 : 2;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f),
                          vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int k = 0; k < 4; k++) {
            float32x4_t values = load_weights_4(w + element_bytes * (size_t)(i + 4 * k), format);
            acc[k] = vfmaq_f32(acc[k], values, vld1q_f32(x + i + 4 * k));
        }
    }
    float sum = accumulators_sum(acc);
    for (; i < n; i++) {
        sum += load_weight(w, i, format) * x[i];
    }
    return sum;
}

float quill__dot_f32_f32_neon(int64_t n, const void *weights, const void *activations) {
    return dot_float(n, weights, activations, WEIGHT_FORMAT_F32);
}

float quill__dot_f16_f32_neon(int64_t n, const void *weights, const void *activations) {
    return dot_float(n, weights, activations, WEIGHT_FORMAT_F16);
}

float quill__dot_bf16_f32_neon(int64_t n, const void *weights, const void *activations) {
    return dot_float(n, weights, activations, WEIGHT_FORMAT_BF16);
}
