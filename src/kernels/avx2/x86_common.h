/*
 * Inline helpers shared by the AVX2 kernels and, compiled with AVX-512 flags, by the AVX-512
 * kernels (which define QUILL_X86_USE_VNNI to 1 before including this file). Every integer dot
 * helper returns eight exact int32 lane sums with a fixed lane mapping: lane k of a 32-byte
 * block holds the sum over bytes 4k .. 4k + 3. The maddubs and VNNI paths give the same lane
 * values, so the float arithmetic that follows, and thus each result, is the same in both
 * variants.
 */
#ifndef QUILL_KERNELS_X86_COMMON_H
#define QUILL_KERNELS_X86_COMMON_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef QUILL_X86_USE_VNNI
#define QUILL_X86_USE_VNNI 0
#endif

#define QUILL_X86_INLINE static inline __attribute__((always_inline))

/* Lane sums of u8 * s8 products. The maddubs path cannot saturate for the callers' ranges:
 * pairs of u <= 128 and |s| <= 127 stay within 2 * 128 * 127 = 32512. */
QUILL_X86_INLINE __m256i quill_x86_dot_u8_s8(__m256i unsigned_bytes, __m256i signed_bytes) {
#if QUILL_X86_USE_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned_bytes, signed_bytes);
#else
    __m256i pairs = _mm256_maddubs_epi16(unsigned_bytes, signed_bytes);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
#endif
}

/* start + the lane sums of u8 * s8 products (exact int32, as quill_x86_dot_u8_s8). */
QUILL_X86_INLINE __m256i quill_x86_dot_u8_s8_add(__m256i start, __m256i unsigned_bytes,
                                                 __m256i signed_bytes) {
#if QUILL_X86_USE_VNNI
    return _mm256_dpbusd_epi32(start, unsigned_bytes, signed_bytes);
#else
    return _mm256_add_epi32(start, quill_x86_dot_u8_s8(unsigned_bytes, signed_bytes));
#endif
}

/* start + the int16 pair products of a and b summed per int32 lane (exact, as madd_epi16). */
QUILL_X86_INLINE __m256i quill_x86_madd_i16_add(__m256i start, __m256i a, __m256i b) {
#if QUILL_X86_USE_VNNI
    return _mm256_dpwssd_epi32(start, a, b);
#else
    return _mm256_add_epi32(start, _mm256_madd_epi16(a, b));
#endif
}

/* Lane sums of s8 * s8 products: |a| times b with a's sign moved onto b. Requires b != -128,
 * which holds for activations from the Q8 quantizers (they clamp to [-127, 127]). */
QUILL_X86_INLINE __m256i quill_x86_dot_s8_s8(__m256i a, __m256i b) {
    __m256i magnitude = _mm256_sign_epi8(a, a);
    __m256i signed_b = _mm256_sign_epi8(b, a);
    return quill_x86_dot_u8_s8(magnitude, signed_b);
}

/* Horizontal sum of eight floats in a fixed order: halves, then pairs, then the last two. */
QUILL_X86_INLINE float quill_x86_hsum(__m256 v) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

/* Horizontal sum of eight int32 lanes (exact). */
QUILL_X86_INLINE int32_t quill_x86_hsum_i32(__m256i v) {
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0x4e));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0xb1));
    return _mm_cvtsi128_si32(sum);
}

/* Expands 16 bytes of nibble pairs into 32 bytes: low nibbles of bytes 0-15 first, then the
 * high nibbles, which is the ggml order of elements j and j + 16. */
QUILL_X86_INLINE __m256i quill_x86_nibbles_32(const uint8_t *qs) {
    __m128i packed = _mm_loadu_si128((const __m128i *)qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

/* Expands the 32 bits of a little-endian uint32 into 32 bytes, byte j = 0x10 when bit j is
 * set, else 0: the fifth bits of a Q5_0 / Q5_1 block. */
QUILL_X86_INLINE __m256i quill_x86_bits_to_0x10(const uint8_t qh_bytes[4]) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof(qh));
    const __m256i byte_index = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                                 0x0101010101010101LL, 0x0000000000000000LL);
    __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int32_t)qh), byte_index);
    const __m256i bit_of_byte = _mm256_set1_epi64x((int64_t)0x8040201008040201ULL);
    __m256i is_set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit_of_byte), bit_of_byte);
    return _mm256_and_si256(is_set, _mm256_set1_epi8(0x10));
}

/* Loads an fp16 value from unaligned bytes. */
QUILL_X86_INLINE float quill_x86_load_fp16(const uint8_t bytes[2]) {
    uint16_t half;
    memcpy(&half, bytes, sizeof(half));
    return _cvtsh_ss(half);
}

/* Prefetches the 64-byte lines that hold [from, from + n_bytes): into L1 when the whole next
 * tile (tile_bytes) fits beside the current one in a 32 KB L1 cache, else into L2. Decode
 * streams each weight tile from memory once, and a tile of short rows reads as several
 * interleaved streams that the hardware prefetchers follow poorly. Measured on AMD EPYC, 1
 * thread, matrices 4x its L3: L1 for 8-row Q4_0 tiles of 2048 columns (9 KB), L2 for 8-row Q8_0
 * tiles of 2048 columns (17 KB; 18 -> 26 GB/s) and Q4_0 tiles of 8192 columns. */
QUILL_X86_INLINE void quill_x86_prefetch_step(const uint8_t *from, size_t n_bytes,
                                              size_t tile_bytes) {
    for (size_t offset = 0; offset < n_bytes + 63; offset += 64) {
        if (tile_bytes <= 12 * 1024) {
            _mm_prefetch((const char *)from + offset, _MM_HINT_T0);
        } else {
            _mm_prefetch((const char *)from + offset, _MM_HINT_T1);
        }
    }
}

/* exp(x) for 8 lanes: the usual range reduction, exp(x) = 2^k * exp(r) with k = round(x / ln 2)
 * and |r| <= ln(2) / 2 (r from a two-part ln 2), and a degree-6 polynomial for exp(r) (the Cephes
 * expf coefficients, relative error below 2e-7 on the reduced range). Each lane depends on its
 * own argument only. +inf above 88.7228 where expf overflows too. Other arguments are
 * clamped to [-87.3, 88.72], so 2^k (k in [-126, 128]) is built from exponent bits as
 * 2^(k - s) * (1 + s) with s = 1 for positive k, which never leaves the normal range. Below
 * -87.3 the result stays at exp(-87.3), which 1 + exp(-x) absorbs exactly as it absorbs the
 * reference's smaller values. */
QUILL_X86_INLINE __m256 quill_x86_exp_8(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_high = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_low = _mm256_set1_ps(-2.12194440e-4f);
    __m256 overflow = _mm256_cmp_ps(x, _mm256_set1_ps(88.7228f), _CMP_GT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.72f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2_high, x);
    r = _mm256_fnmadd_ps(k, ln2_low, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256 s = _mm256_min_ps(_mm256_max_ps(k, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
    __m256i exponent = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_sub_ps(k, s)),
                                        _mm256_set1_epi32(127));
    __m256 power = _mm256_castsi256_ps(_mm256_slli_epi32(exponent, 23));
    __m256 result = _mm256_mul_ps(_mm256_mul_ps(p, power), _mm256_add_ps(s, _mm256_set1_ps(1.0f)));
    return _mm256_blendv_ps(result, _mm256_set1_ps(INFINITY), overflow);
}

#endif
