/*
 * Activation quantization to Q8_0, Q8_1 and Q8_K with AVX2, bit-identical to the reference
 * quantizers (same scale arithmetic, same rounding: roundf for Q8_0 / Q8_1, ties to even for
 * Q8_K), so the dot products see the same integers whichever variant quantized them. Included
 * by avx2/quant_q8.c and avx512/quant_q8.c, which define QUILL_X86_NAME(stem). Input rows may
 * sit at any address.
 */
#include <math.h>

#include "kernels/avx2/x86_common.h"
#include "kernels/blocks.h"

/* Returns the largest |x| of n (a multiple of 8) values; max is exact in any order. */
QUILL_X86_INLINE float max_abs_n(const float *x, int n) {
    const __m256 sign_mask = _mm256_set1_ps(-0.0f);
    __m256 max = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        max = _mm256_max_ps(max, _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x + i)));
    }
    __m128 half = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps(max, 1));
    half = _mm_max_ps(half, _mm_movehl_ps(half, half));
    half = _mm_max_ss(half, _mm_movehdup_ps(half));
    return _mm_cvtss_f32(half);
}

/* roundf on eight lanes: truncate, then step away from zero when the dropped fraction is at
 * least one half (x - trunc(x) is exact). */
QUILL_X86_INLINE __m256 round_half_away(__m256 v) {
    __m256 truncated = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 fraction = _mm256_sub_ps(v, truncated);
    const __m256 sign_mask = _mm256_set1_ps(-0.0f);
    __m256 is_half_or_more =
        _mm256_cmp_ps(_mm256_andnot_ps(sign_mask, fraction), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign_mask), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(truncated, _mm256_and_ps(is_half_or_more, step));
}

/* Packs four vectors of eight integral floats (elements 0-31, in [-128, 127]) into 32 bytes in
 * element order. */
QUILL_X86_INLINE __m256i pack_32(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    __m256i i0 = _mm256_cvttps_epi32(v0);
    __m256i i1 = _mm256_cvttps_epi32(v1);
    __m256i i2 = _mm256_cvttps_epi32(v2);
    __m256i i3 = _mm256_cvttps_epi32(v3);
    /* packs work within 128-bit lanes; the permute restores element order. */
    __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Quantizes 32 values with d = amax / 127 and q = roundf(x / d); returns d, stores q and, when
 * sum is not NULL, sum(q). */
QUILL_X86_INLINE float quantize_32(const float *x, int8_t *q, int32_t *sum) {
    float d = max_abs_n(x, 32) / 127.0f;
    __m256 inverse = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256 v[4];
    for (int k = 0; k < 4; k++) {
        v[k] = round_half_away(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), inverse));
    }
    __m256i bytes = pack_32(v[0], v[1], v[2], v[3]);
    _mm256_storeu_si256((__m256i *)q, bytes);
    if (sum != NULL) {
        __m256i words = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes),
                                          _mm256_set1_epi16(1));
        *sum = quill_x86_hsum_i32(words);
    }
    return d;
}

void QUILL_X86_NAME(quill__quantize_q8_0)(const float *src, void *dst, int64_t n) {
    quill_block_q8_0 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        float d = quantize_32(src + b * QUILL_QK, blocks[b].qs, NULL);
        quill__store_fp16(blocks[b].d, d);
    }
}

void QUILL_X86_NAME(quill__quantize_q8_1)(const float *src, void *dst, int64_t n) {
    quill_block_q8_1 *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++) {
        int32_t sum = 0;
        float d = quantize_32(src + b * QUILL_QK, blocks[b].qs, &sum);
        quill__store_fp16(blocks[b].d, d);
        quill__store_fp16(blocks[b].s, (float)sum * d);
    }
}

/* As the reference: the first value of largest magnitude maps to -127, q = nearest (ties to
 * even) of x * (-127 / max) clamped to 127, d = 1 / scale. */
void QUILL_X86_NAME(quill__quantize_q8_k)(const float *src, void *dst, int64_t n) {
    quill_block_q8_k *blocks = dst;
    for (int64_t b = 0; b < n / QUILL_QK_K; b++) {
        const float *x = src + b * QUILL_QK_K;
        quill_block_q8_k *block = &blocks[b];
        float amax = max_abs_n(x, QUILL_QK_K);
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
        __m256 scale_v = _mm256_set1_ps(scale);
        const __m256 limit = _mm256_set1_ps(127.0f);
        for (int k = 0; k < QUILL_QK_K / 32; k++) {
            __m256 v[4];
            for (int i = 0; i < 4; i++) {
                __m256 scaled = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * k + 8 * i), scale_v);
                v[i] = _mm256_min_ps(
                    _mm256_round_ps(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), limit);
            }
            _mm256_storeu_si256((__m256i *)(block->qs + 32 * k), pack_32(v[0], v[1], v[2], v[3]));
        }
        for (int group = 0; group < QUILL_QK_K / 16; group++) {
            __m128i bytes = _mm_loadu_si128((const __m128i *)(block->qs + 16 * group));
            __m256i words = _mm256_cvtepi8_epi16(bytes);
            __m256i pairs = _mm256_madd_epi16(words, _mm256_set1_epi16(1));
            quill__store_i16(&block->bsums[2 * group], quill_x86_hsum_i32(pairs));
        }
        quill__store_f32(block->d, 1.0f / scale);
    }
}
