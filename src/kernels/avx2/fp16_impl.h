/*
 * Row conversions between f32 and F16 / BF16 with AVX2 + F16C, bit-identical to the reference
 * (ref/fp16.c): vcvtps2ph with round-to-nearest-even handles subnormals, overflow to infinity and
 * NaN (quiet bit set, top payload bits kept) exactly as the reference does, and BF16 narrowing
 * uses the same integer rounding. Any n is accepted (a scalar tail finishes the row); pointers
 * may sit at any address. Included by avx2/fp16.c and avx512/fp16.c, which define
 * QUILL_X86_NAME(stem).
 */
#include "kernels/avx2/x86_common.h"
#include "kernels/blocks.h"

void QUILL_X86_NAME(quill__dequantize_f16)(const void *src, float *dst, int64_t n) {
    const uint8_t *bytes = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i halves = _mm_loadu_si128((const __m128i *)(bytes + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(halves));
    }
    for (; i < n; i++) {
        dst[i] = quill__load_fp16(bytes + 2 * i);
    }
}

void QUILL_X86_NAME(quill__quantize_f16)(const float *src, void *dst, int64_t n) {
    uint8_t *bytes = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i halves = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(bytes + 2 * i), halves);
    }
    for (; i < n; i++) {
        quill__store_fp16(bytes + 2 * i, src[i]);
    }
}

void QUILL_X86_NAME(quill__dequantize_bf16)(const void *src, float *dst, int64_t n) {
    const uint8_t *bytes = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i halves = _mm_loadu_si128((const __m128i *)(bytes + 2 * i));
        __m256i widened = _mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(widened));
    }
    for (; i < n; i++) {
        dst[i] = quill__bf16_to_fp32((uint16_t)(bytes[2 * i] | (bytes[2 * i + 1] << 8)));
    }
}

/* Rounds the low 16 bits to nearest even (bits + 0x7fff + bit 16), or keeps a NaN quiet, then
 * takes the high halves. */
void QUILL_X86_NAME(quill__quantize_bf16)(const float *src, void *dst, int64_t n) {
    uint8_t *bytes = dst;
    const __m256i magnitude_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i infinity = _mm256_set1_epi32(0x7f800000);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i bits = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
        __m256i rounded =
            _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
        __m256i quiet_nan = _mm256_or_si256(bits, _mm256_set1_epi32(0x00400000));
        __m256i is_nan =
            _mm256_cmpgt_epi32(_mm256_and_si256(bits, magnitude_mask), infinity);
        __m256i result = _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quiet_nan, is_nan), 16);
        /* Narrow the eight 32-bit lanes to 16 bits in order. */
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(result),
                                          _mm256_extracti128_si256(result, 1));
        _mm_storeu_si128((__m128i *)(bytes + 2 * i), packed);
    }
    for (; i < n; i++) {
        uint16_t half = quill__fp32_to_bf16(src[i]);
        bytes[2 * i] = (uint8_t)(half & 0xff);
        bytes[2 * i + 1] = (uint8_t)(half >> 8);
    }
}
