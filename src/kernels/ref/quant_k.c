/*
 * The K-quant weight formats Q4_K, Q5_K and Q6_K (super-blocks of 256; layouts in
 * kernels/blocks.h). The quantizers follow llama.cpp's quantize_row_q*_K_ref: a scale search per
 * sub-block (quant_k_search.c), sub-block scales quantized to 6 or 8 bits against an fp16
 * super-block scale, then every value re-rounded with the final scales. Stateless.
 */
#include <math.h>

#include "kernels/blocks.h"
#include "kernels/ref/kernels_ref.h"

/* Sub-blocks of 32 in a Q4_K / Q5_K super-block. */
enum { QUILL_K_SUBS = QUILL_QK_K / 32 };

static int clamp_level(int value, int high) {
    if (value < 0) {
        return 0;
    }
    return value > high ? high : value;
}

/* Chooses 8 sub-block (scale, min) pairs for one super-block of 256 values, packs them with
 * fp16 d and dmin, and stores the final levels (in [0, n_max]) in levels[256]. */
static void quantize_scales_mins(const float *x, int n_max, float range_min, int n_steps,
                                 uint8_t d_bytes[2], uint8_t dmin_bytes[2], uint8_t packed[12],
                                 uint8_t levels[QUILL_QK_K]) {
    float scales[QUILL_K_SUBS];
    float mins[QUILL_K_SUBS];
    float weights[32];
    uint8_t levels_trial[32];
    float max_scale = 0.0f;
    float max_min = 0.0f;

    /* Per sub-block fit, weighting each value by rms(sub-block) + |x|. */
    for (int j = 0; j < QUILL_K_SUBS; j++) {
        const float *sub = x + 32 * j;
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++) {
            sum_x2 += sub[l] * sub[l];
        }
        float rms = sqrtf(sum_x2 / 32.0f);
        for (int l = 0; l < 32; l++) {
            weights[l] = rms + fabsf(sub[l]);
        }
        scales[j] = quill__fit_scale_min(32, n_max, sub, weights, levels + 32 * j, &mins[j],
                                         levels_trial, range_min, 0.1f, n_steps);
        if (scales[j] > max_scale) {
            max_scale = scales[j];
        }
        if (mins[j] > max_min) {
            max_min = mins[j];
        }
    }

    /* Quantize scales and mins to 6 bits against the largest of each and pack them. */
    float inverse_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    float inverse_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    memset(packed, 0, 12);
    for (int j = 0; j < QUILL_K_SUBS; j++) {
        uint8_t scale = (uint8_t)quill__nearest_int(inverse_scale * scales[j]);
        uint8_t min = (uint8_t)quill__nearest_int(inverse_min * mins[j]);
        scale = scale < 63 ? scale : 63;
        min = min < 63 ? min : 63;
        if (j < 4) {
            packed[j] = scale;
            packed[j + 4] = min;
        } else {
            packed[j + 4] = (uint8_t)((scale & 0x0f) | ((min & 0x0f) << 4));
            packed[j - 4] |= (uint8_t)((scale >> 4) << 6);
            packed[j] |= (uint8_t)((min >> 4) << 6);
        }
    }
    quill__store_fp16(d_bytes, max_scale / 63.0f);
    quill__store_fp16(dmin_bytes, max_min / 63.0f);

    /* Re-round every value with the scales as stored; a zero scale keeps the search's levels. */
    float d = quill__load_fp16(d_bytes);
    float dmin = quill__load_fp16(dmin_bytes);
    for (int j = 0; j < QUILL_K_SUBS; j++) {
        uint8_t scale;
        uint8_t min;
        quill__q4_k_scale_min(j, packed, &scale, &min);
        float sub_d = d * (float)scale;
        if (sub_d == 0.0f) {
            continue;
        }
        float sub_m = dmin * (float)min;
        for (int l = 0; l < 32; l++) {
            int level = quill__nearest_int((x[32 * j + l] + sub_m) / sub_d);
            levels[32 * j + l] = (uint8_t)clamp_level(level, n_max);
        }
    }
}

void quill__dequantize_q4_k_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q4_k *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        const quill_block_q4_k *block = &blocks[b];
        float d = quill__load_fp16(block->d);
        float dmin = quill__load_fp16(block->dmin);
        float *y = dst + b * QUILL_QK_K;
        for (int j = 0; j < QUILL_K_SUBS; j++) {
            uint8_t scale;
            uint8_t min;
            quill__q4_k_scale_min(j, block->scales, &scale, &min);
            float sub_d = d * (float)scale;
            float sub_m = dmin * (float)min;
            const uint8_t *qs = block->qs + 32 * (j / 2);
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                y[32 * j + l] = sub_d * (float)((qs[l] >> shift) & 0x0f) - sub_m;
            }
        }
    }
}

void quill__quantize_q4_k_ref(const float *src, void *dst, int64_t n) {
    quill_block_q4_k *blocks = dst;
    uint8_t levels[QUILL_QK_K];
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        quill_block_q4_k *block = &blocks[b];
        quantize_scales_mins(src + b * QUILL_QK_K, 15, -1.0f, 20, block->d, block->dmin,
                             block->scales, levels);
        /* Group g of 32 bytes: sub-block 2g in the low nibbles, 2g + 1 in the high ones. */
        for (int group = 0; group < 4; group++) {
            for (int l = 0; l < 32; l++) {
                block->qs[32 * group + l] =
                    (uint8_t)(levels[64 * group + l] | (levels[64 * group + 32 + l] << 4));
            }
        }
    }
}

void quill__dequantize_q5_k_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q5_k *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        const quill_block_q5_k *block = &blocks[b];
        float d = quill__load_fp16(block->d);
        float dmin = quill__load_fp16(block->dmin);
        float *y = dst + b * QUILL_QK_K;
        for (int j = 0; j < QUILL_K_SUBS; j++) {
            uint8_t scale;
            uint8_t min;
            quill__q4_k_scale_min(j, block->scales, &scale, &min);
            float sub_d = d * (float)scale;
            float sub_m = dmin * (float)min;
            const uint8_t *qs = block->qs + 32 * (j / 2);
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                int level = ((qs[l] >> shift) & 0x0f) | (((block->qh[l] >> j) & 1) << 4);
                y[32 * j + l] = sub_d * (float)level - sub_m;
            }
        }
    }
}

void quill__quantize_q5_k_ref(const float *src, void *dst, int64_t n) {
    quill_block_q5_k *blocks = dst;
    uint8_t levels[QUILL_QK_K];
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        quill_block_q5_k *block = &blocks[b];
        quantize_scales_mins(src + b * QUILL_QK_K, 31, -0.5f, 15, block->d, block->dmin,
                             block->scales, levels);
        /* Low nibbles as Q4_K; bit 4 of sub-block j goes to bit j of qh[l]. */
        memset(block->qh, 0, sizeof(block->qh));
        for (int group = 0; group < 4; group++) {
            for (int l = 0; l < 32; l++) {
                int low = levels[64 * group + l];
                int high = levels[64 * group + 32 + l];
                block->qs[32 * group + l] = (uint8_t)((low & 0x0f) | ((high & 0x0f) << 4));
                block->qh[l] |=
                    (uint8_t)(((low >> 4) << (2 * group)) | ((high >> 4) << (2 * group + 1)));
            }
        }
    }
}

/* Returns the 6-bit level (0..63, value + 32) of element i (< 256) of a Q6_K block. */
static int level_q6_k(const quill_block_q6_k *block, int i) {
    int half = i / 128;
    int quarter = (i % 128) / 32;
    int l = i % 32;
    const uint8_t *ql = block->ql + 64 * half;
    const uint8_t *qh = block->qh + 32 * half;
    int byte = ql[l + 32 * (quarter % 2)];
    int low = quarter < 2 ? byte & 0x0f : byte >> 4;
    int high = (qh[l] >> (2 * quarter)) & 3;
    return low | (high << 4);
}

void quill__dequantize_q6_k_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q6_k *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        const quill_block_q6_k *block = &blocks[b];
        float d = quill__load_fp16(block->d);
        for (int i = 0; i < QUILL_QK_K; i++) {
            float sub_d = d * (float)block->scales[i / 16];
            dst[b * QUILL_QK_K + i] = sub_d * (float)(level_q6_k(block, i) - 32);
        }
    }
}

void quill__quantize_q6_k_ref(const float *src, void *dst, int64_t n) {
    quill_block_q6_k *blocks = dst;
    int8_t levels[QUILL_QK_K];
    float scales[QUILL_QK_K / 16];
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        const float *x = src + b * QUILL_QK_K;
        quill_block_q6_k *block = &blocks[b];

        /* Symmetric fit per sub-block of 16; the scale of largest magnitude maps to -128. */
        float max_scale = 0.0f;
        float max_abs_scale = 0.0f;
        for (int j = 0; j < QUILL_QK_K / 16; j++) {
            scales[j] = quill__fit_scale_symmetric(16, 32, x + 16 * j, levels + 16 * j);
            if (fabsf(scales[j]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        memset(block, 0, sizeof(*block));
        if (max_abs_scale < 1e-15f) {
            continue;
        }
        float inverse = -128.0f / max_scale;
        quill__store_fp16(block->d, 1.0f / inverse);
        for (int j = 0; j < QUILL_QK_K / 16; j++) {
            int scale = quill__nearest_int(inverse * scales[j]);
            block->scales[j] = (int8_t)(scale < 127 ? scale : 127);
        }

        /* Re-round with the stored scales; a zero sub-block scale keeps the search's levels. */
        float d = quill__load_fp16(block->d);
        for (int j = 0; j < QUILL_QK_K / 16; j++) {
            float sub_d = d * (float)block->scales[j];
            if (sub_d == 0.0f) {
                continue;
            }
            for (int l = 0; l < 16; l++) {
                int level = quill__nearest_int(x[16 * j + l] / sub_d);
                level = level < -32 ? -32 : (level > 31 ? 31 : level);
                levels[16 * j + l] = (int8_t)(level + 32);
            }
        }

        /* Pack each half of 128: low nibbles of quarters 0/1 and high nibbles of 2/3 share ql;
         * the four 2-bit high parts share qh. */
        for (int half = 0; half < 2; half++) {
            uint8_t *ql = block->ql + 64 * half;
            uint8_t *qh = block->qh + 32 * half;
            const int8_t *level = levels + 128 * half;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((level[l] & 0x0f) | ((level[l + 64] & 0x0f) << 4));
                ql[l + 32] = (uint8_t)((level[l + 32] & 0x0f) | ((level[l + 96] & 0x0f) << 4));
                qh[l] = (uint8_t)((level[l] >> 4) | ((level[l + 32] >> 4) << 2) |
                                  ((level[l + 64] >> 4) << 4) | ((level[l + 96] >> 4) << 6));
            }
        }
    }
}
