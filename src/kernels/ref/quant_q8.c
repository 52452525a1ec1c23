/*
 * The 8-bit formats that activations are quantized to before a dot product: Q8_0 and Q8_1
 * (blocks of 32, fp16 scale) and Q8_K (blocks of 256, f32 scale, with sums of 16 for the
 * K-quant min terms). Scales follow llama.cpp's quantize_row_q8_*_ref exactly, so dot products
 * reproduce llama.cpp's integer sums. Stateless.
 */
#include <math.h>

#include "kernels/blocks.h"
#include "kernels/ref/kernels_ref.h"

/* Returns the largest |x[i]| over n values. */
static float max_abs(const float *x, int n) {
    float result = 0.0f;
    for (int i = 0; i < n; i++) {
        float magnitude = fabsf(x[i]);
        if (magnitude > result) {
            result = magnitude;
        }
    }
    return result;
}

void quill__dequantize_q8_0_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q8_0 *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quill__load_fp16(blocks[b].d);
        for (int j = 0; j < QUILL_QK; j++) {
            dst[b * QUILL_QK + j] = (float)blocks[b].qs[j] * d;
        }
    }
}

/* d = amax / 127 and q = round(x / d) (ties away from zero), so |x - q d| <= d / 2 before the
 * fp16 rounding of d. */
void quill__quantize_q8_0_ref(const float *src, void *dst, int64_t n) {
    quill_block_q8_0 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        const float *x = src + b * QUILL_QK;
        float d = max_abs(x, QUILL_QK) / 127.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        quill__store_fp16(blocks[b].d, d);
        for (int j = 0; j < QUILL_QK; j++) {
            blocks[b].qs[j] = (int8_t)roundf(x[j] * inverse);
        }
    }
}

void quill__dequantize_q8_1_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q8_1 *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quill__load_fp16(blocks[b].d);
        for (int j = 0; j < QUILL_QK; j++) {
            dst[b * QUILL_QK + j] = (float)blocks[b].qs[j] * d;
        }
    }
}

/* As Q8_0, plus s = d * sum(q) with the unrounded f32 d, as llama.cpp stores it. */
void quill__quantize_q8_1_ref(const float *src, void *dst, int64_t n) {
    quill_block_q8_1 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        const float *x = src + b * QUILL_QK;
        float d = max_abs(x, QUILL_QK) / 127.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QUILL_QK; j++) {
            blocks[b].qs[j] = (int8_t)roundf(x[j] * inverse);
            sum += blocks[b].qs[j];
        }
        quill__store_fp16(blocks[b].d, d);
        quill__store_fp16(blocks[b].s, (float)sum * d);
    }
}

void quill__dequantize_q8_k_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q8_k *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        float d = quill__load_f32(blocks[b].d);
        for (int j = 0; j < QUILL_QK_K; j++) {
            dst[b * QUILL_QK_K + j] = (float)blocks[b].qs[j] * d;
        }
    }
}

/* The value of largest magnitude, max, maps to -127 exactly: scale = -127 / max, q =
 * nearest_int(x * scale) clamped to 127 (so -128 never appears), d = 1 / scale. */
void quill__quantize_q8_k_ref(const float *src, void *dst, int64_t n) {
    quill_block_q8_k *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        const float *x = src + b * QUILL_QK_K;
        quill_block_q8_k *block = &blocks[b];

        float max = 0.0f;
        float amax = 0.0f;
        for (int j = 0; j < QUILL_QK_K; j++) {
            float magnitude = fabsf(x[j]);
            if (magnitude > amax) {
                amax = magnitude;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(block, 0, sizeof(*block));
            continue;
        }

        float scale = -127.0f / max;
        for (int j = 0; j < QUILL_QK_K; j++) {
            int level = quill__nearest_int(scale * x[j]);
            block->qs[j] = (int8_t)(level < 127 ? level : 127);
        }
        for (int group = 0; group < QUILL_QK_K / 16; group++) {
            int32_t sum = 0;
            for (int j = 0; j < 16; j++) {
                sum += block->qs[group * 16 + j];
            }
            quill__store_i16(&block->bsums[2 * group], sum);
        }
        quill__store_f32(block->d, 1.0f / scale);
    }
}
