/*
 * Dot products of the K-quants with Q8_K activations, as llama.cpp computes them. Per
 * super-block of 256: an exact int32 sum of sub-block scale * sum(level * q_x), and for Q4_K /
 * Q5_K an exact int32 sum of sub-block min * (sum of the 32 q_x, from the activation's bsums).
 * Then sum += d_w * d_x * scaled - dmin_w * d_x * mins, one f32 accumulator in block order.
 * Stateless.
 */
#include "kernels/blocks.h"
#include "kernels/ref/kernels_ref.h"

/* Returns sum(levels[j] * x[j]) over n values. */
static int32_t dot_levels(const int8_t *levels, const int8_t *x, int n) {
    int32_t sum = 0;
    for (int j = 0; j < n; j++) {
        sum += levels[j] * x[j];
    }
    return sum;
}

/* Returns the sum of the 32 activation values of sub-block j from the Q8_K block's bsums. */
static int32_t activation_sum32(const quill_block_q8_k *x, int j) {
    return quill__load_i16(&x->bsums[4 * j]) + quill__load_i16(&x->bsums[4 * j + 2]);
}

/* Stores the integer sums of a Q4_K or Q5_K super-block given its unpacked levels. */
static void sums_scale_min(const int8_t levels[QUILL_QK_K], const uint8_t packed[12],
                           const quill_block_q8_k *x, int32_t *scaled, int32_t *mins) {
    *scaled = 0;
    *mins = 0;
    for (int j = 0; j < QUILL_QK_K / 32; j++) {
        uint8_t scale;
        uint8_t min;
        quill__q4_k_scale_min(j, packed, &scale, &min);
        *scaled += scale * dot_levels(levels + 32 * j, x->qs + 32 * j, 32);
        *mins += min * activation_sum32(x, j);
    }
}

float quill__dot_q4_k_q8_k_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q4_k *w = weights;
    const quill_block_q8_k *x = activations;
    int8_t levels[QUILL_QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        for (int i = 0; i < QUILL_QK_K; i++) {
            levels[i] = (int8_t)((w[b].qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0x0f);
        }
        int32_t scaled;
        int32_t mins;
        sums_scale_min(levels, w[b].scales, &x[b], &scaled, &mins);
        float d_x = quill__load_f32(x[b].d);
        sum += quill__load_fp16(w[b].d) * d_x * (float)scaled -
               quill__load_fp16(w[b].dmin) * d_x * (float)mins;
    }
    return sum;
}

float quill__dot_q5_k_q8_k_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q5_k *w = weights;
    const quill_block_q8_k *x = activations;
    int8_t levels[QUILL_QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        for (int i = 0; i < QUILL_QK_K; i++) {
            int sub = i / 32;
            int low = (w[b].qs[32 * (i / 64) + i % 32] >> (4 * (sub % 2))) & 0x0f;
            int high = (w[b].qh[i % 32] >> sub) & 1;
            levels[i] = (int8_t)(low | (high << 4));
        }
        int32_t scaled;
        int32_t mins;
        sums_scale_min(levels, w[b].scales, &x[b], &scaled, &mins);
        float d_x = quill__load_f32(x[b].d);
        sum += quill__load_fp16(w[b].d) * d_x * (float)scaled -
               quill__load_fp16(w[b].dmin) * d_x * (float)mins;
    }
    return sum;
}

float quill__dot_q6_k_q8_k_ref(int64_t n, const void *weights, const void *activations) {
    const quill_block_q6_k *w = weights;
    const quill_block_q8_k *x = activations;
    int8_t levels[QUILL_QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        /* Levels in [-32, 31]: unpack through the dequantizer's bit layout. */
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = w[b].ql + 64 * half;
            const uint8_t *qh = w[b].qh + 32 * half;
            int8_t *level = levels + 128 * half;
            for (int l = 0; l < 32; l++) {
                level[l] = (int8_t)(((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32);
                level[l + 32] = (int8_t)(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
                level[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                level[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        int32_t scaled = 0;
        for (int j = 0; j < QUILL_QK_K / 16; j++) {
            scaled += w[b].scales[j] * dot_levels(levels + 16 * j, x[b].qs + 16 * j, 16);
        }
        sum += quill__load_fp16(w[b].d) * quill__load_f32(x[b].d) * (float)scaled;
    }
    return sum;
}
