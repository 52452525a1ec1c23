/*
 * The legacy 4- and 5-bit weight formats, blocks of 32 with an fp16 scale: Q4_0 and Q5_0 are
 * symmetric (w = (q - 8) d, (q - 16) d), Q4_1 and Q5_1 carry an fp16 offset (w = q d + m). The
 * quantizers choose scales as llama.cpp's quantize_row_q*_ref do. Stateless.
 */
#include <float.h>
#include <math.h>

#include "kernels/blocks.h"
#include "kernels/ref/kernels_ref.h"

/* Returns the value of largest magnitude among n values (its sign kept). */
static float signed_max_abs(const float *x, int n) {
    float amax = 0.0f;
    float max = 0.0f;
    for (int i = 0; i < n; i++) {
        float magnitude = fabsf(x[i]);
        if (magnitude > amax) {
            amax = magnitude;
            max = x[i];
        }
    }
    return max;
}

/* Stores the minimum and maximum of n values. */
static void min_max(const float *x, int n, float *min, float *max) {
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        if (x[i] < *min) {
            *min = x[i];
        }
        if (x[i] > *max) {
            *max = x[i];
        }
    }
}

/* Returns the 5-bit level of element j from its nibble and bit j of qh. */
static int level_q5(const uint8_t qs[16], uint32_t qh, int j) {
    int nibble = j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4;
    return nibble | (int)(((qh >> j) & 1) << 4);
}

/* Packs 32 5-bit levels into nibbles and the high-bit word. */
static void pack_q5(const uint8_t levels[32], uint8_t qs[16], uint8_t qh_bytes[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((levels[j] & 0x0f) | ((levels[j + 16] & 0x0f) << 4));
        qh |= (uint32_t)(levels[j] >> 4) << j;
        qh |= (uint32_t)(levels[j + 16] >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; k++) {
        qh_bytes[k] = (uint8_t)(qh >> (8 * k));
    }
}

void quill__dequantize_q4_0_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q4_0 *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quill__load_fp16(blocks[b].d);
        float *y = dst + b * QUILL_QK;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((blocks[b].qs[j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((blocks[b].qs[j] >> 4) - 8) * d;
        }
    }
}

/* d = max / -8, where max is the value of largest magnitude: it maps to level 0 (-8 d) and the
 * opposite end gets +7 d. Levels are truncated x / d + 8.5, i.e. rounded half up. */
void quill__quantize_q4_0_ref(const float *src, void *dst, int64_t n) {
    quill_block_q4_0 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        const float *x = src + b * QUILL_QK;
        float d = signed_max_abs(x, QUILL_QK) / -8.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        quill__store_fp16(blocks[b].d, d);
        for (int j = 0; j < 16; j++) {
            int low = (int8_t)(x[j] * inverse + 8.5f);
            int high = (int8_t)(x[j + 16] * inverse + 8.5f);
            low = low < 15 ? low : 15;
            high = high < 15 ? high : 15;
            blocks[b].qs[j] = (uint8_t)(low | (high << 4));
        }
    }
}

void quill__dequantize_q4_1_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q4_1 *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quill__load_fp16(blocks[b].d);
        float m = quill__load_fp16(blocks[b].m);
        float *y = dst + b * QUILL_QK;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(blocks[b].qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(blocks[b].qs[j] >> 4) * d + m;
        }
    }
}

/* d = (max - min) / 15, m = min, levels (x - min) / d rounded half up. */
void quill__quantize_q4_1_ref(const float *src, void *dst, int64_t n) {
    quill_block_q4_1 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        const float *x = src + b * QUILL_QK;
        float min;
        float max;
        min_max(x, QUILL_QK, &min, &max);
        float d = (max - min) / 15.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        quill__store_fp16(blocks[b].d, d);
        quill__store_fp16(blocks[b].m, min);
        for (int j = 0; j < 16; j++) {
            int low = (int8_t)((x[j] - min) * inverse + 0.5f);
            int high = (int8_t)((x[j + 16] - min) * inverse + 0.5f);
            low = low < 15 ? low : 15;
            high = high < 15 ? high : 15;
            blocks[b].qs[j] = (uint8_t)(low | (high << 4));
        }
    }
}

void quill__dequantize_q5_0_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q5_0 *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quill__load_fp16(blocks[b].d);
        uint32_t qh = quill__load_u32(blocks[b].qh);
        for (int j = 0; j < QUILL_QK; j++) {
            dst[b * QUILL_QK + j] = (float)(level_q5(blocks[b].qs, qh, j) - 16) * d;
        }
    }
}

/* As Q4_0 with 32 levels: d = max / -16, levels truncated x / d + 16.5, at most 31. */
void quill__quantize_q5_0_ref(const float *src, void *dst, int64_t n) {
    quill_block_q5_0 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        const float *x = src + b * QUILL_QK;
        float d = signed_max_abs(x, QUILL_QK) / -16.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t levels[QUILL_QK];
        for (int j = 0; j < QUILL_QK; j++) {
            int level = (int8_t)(x[j] * inverse + 16.5f);
            levels[j] = (uint8_t)(level < 31 ? level : 31);
        }
        quill__store_fp16(blocks[b].d, d);
        pack_q5(levels, blocks[b].qs, blocks[b].qh);
    }
}

void quill__dequantize_q5_1_ref(const void *src, float *dst, int64_t n) {
    const quill_block_q5_1 *blocks = src;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quill__load_fp16(blocks[b].d);
        float m = quill__load_fp16(blocks[b].m);
        uint32_t qh = quill__load_u32(blocks[b].qh);
        for (int j = 0; j < QUILL_QK; j++) {
            dst[b * QUILL_QK + j] = (float)level_q5(blocks[b].qs, qh, j) * d + m;
        }
    }
}

/* As Q4_1 with 32 levels: d = (max - min) / 31, levels (x - min) / d rounded half up. */
void quill__quantize_q5_1_ref(const float *src, void *dst, int64_t n) {
    quill_block_q5_1 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        const float *x = src + b * QUILL_QK;
        float min;
        float max;
        min_max(x, QUILL_QK, &min, &max);
        float d = (max - min) / 31.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t levels[QUILL_QK];
        for (int j = 0; j < QUILL_QK; j++) {
            int level = (int)((x[j] - min) * inverse + 0.5f);
            levels[j] = (uint8_t)(level < 31 ? level : 31);
        }
        quill__store_fp16(blocks[b].d, d);
        quill__store_fp16(blocks[b].m, min);
        pack_q5(levels, blocks[b].qs, blocks[b].qh);
    }
}
