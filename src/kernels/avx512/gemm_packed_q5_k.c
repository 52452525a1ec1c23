/*
 * AVX-512 VNNI tiles of packed Q5_K weights with Q8_K activations (layout in kernels/packed.h).
 * The tiles are gemm_packed.c's Q4_K tiles with a fifth bit: each level vector ORs bit j of the
 * group's qh chunk, moved to bit 4, into sub-block j's nibbles. The scales, mins and float steps
 * are Q4_K's, so every (row, token) value equals the VNNI vec_dot on the unpacked row
 * (avx2/dot_k_impl.h, is_exact_k) bit for bit. As for the other packed types, a one-group tile
 * in 256-bit vectors serves decode and an odd last group, and a two-group tile in 512-bit
 * vectors serves prefill and batched decode. The one-group tile unpacks sub-blocks 2g and
 * 2g + 1 together from one load of their nibble and fifth-bit chunks, which raised decode from
 * 24 to 28-29 GB/s (1 thread, 8192 x 2048, AMD EPYC). The two-group tile keeps one sub-block at
 * a time, because 16 level vectors of 512 bits and its 16 token registers would not fit.
 */
#include "kernels/avx512/kernels_avx512.h"

#include <stdbool.h>

#define QUILL_X86_USE_VNNI 1
#include "kernels/avx2/x86_common.h"
#include "kernels/blocks.h"
#include "kernels/packed.h"

/* Tokens per register tile, as in gemm_packed.c. */
enum { PACKED_TILE_TOKENS = 8 };

/* Prefetch distance and the token counts that use it, as in gemm_packed.c (measured there). */
enum { PREFETCH_BYTES = 32768, PREFETCH_MIN_TOKENS = 2, PREFETCH_MAX_TOKENS = 8 };

/* Q5_K group block offsets and size (packed.h). */
enum {
    Q5_K_DMIN = 16,
    Q5_K_LOW_PLANE = 32,
    Q5_K_HIGH_PLANE = 96,
    Q5_K_QH = 128,
    Q5_K_QS = 384,
};
enum { GROUP_BLOCK_Q5_K = QUILL_PACK_ROWS * sizeof(quill_block_q5_k) };

QUILL_X86_INLINE __m256i broadcast_4_bytes(const int8_t *bytes) {
    int32_t value;
    memcpy(&value, bytes, sizeof(value));
    return _mm256_set1_epi32(value);
}

/* Joins two 128-bit halves into one 256-bit vector, first in the low half. */
QUILL_X86_INLINE __m256i join_halves_128(__m128i first, __m128i second) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(first), second, 1);
}

/* Joins two 256-bit halves into one 512-bit vector, first in lanes 0-7. */
QUILL_X86_INLINE __m512i join_halves(__m256i first, __m256i second) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(first), second, 1);
}

/* Bit j (< 8) of each byte of qh, moved to bit 4: 16-bit shifts carry bits between bytes only
 * where the mask clears them. */
QUILL_X86_INLINE __m256i fifth_bits(__m256i qh, int j) {
    __m256i moved = j >= 4 ? _mm256_srli_epi16(qh, j - 4) : _mm256_slli_epi16(qh, 4 - j);
    return _mm256_and_si256(moved, _mm256_set1_epi8(0x10));
}

QUILL_X86_INLINE __m512i fifth_bits_512(__m512i qh, int j) {
    __m512i moved = j >= 4 ? _mm512_srli_epi16(qh, j - 4) : _mm512_slli_epi16(qh, 4 - j);
    return _mm512_and_si512(moved, _mm512_set1_epi8(0x10));
}

/* The 8 rows' scales and mins of one Q5_K super-block, decoded as in gemm_packed.c: scales[j] holds
 * sc_j of row r in int32 lane r; min_pairs[i] holds m_{2i} and m_{2i+1} of row r as the int16 pair
 * of lane r. */
typedef struct k_scales {
    __m256i scales[8];
    __m256i min_pairs[4];
} k_scales;

/* Decodes the low and high planes of a group block (packed.h) into k_scales. */
QUILL_X86_INLINE void decode_k_scales(const uint8_t *block, k_scales *out) {
    const __m256i mask4 = _mm256_set1_epi8(0x0f);
    const __m256i mask2 = _mm256_set1_epi8(0x03);
    __m256i low_0_3 = _mm256_loadu_si256((const __m256i *)(block + Q5_K_LOW_PLANE));
    __m256i low_4_7 = _mm256_loadu_si256((const __m256i *)(block + Q5_K_LOW_PLANE + 32));
    __m256i high = _mm256_loadu_si256((const __m256i *)(block + Q5_K_HIGH_PLANE));
    /* Byte 8j + r of each vector: sc_j or m_j of row r, for j in 0..3 or 4..7. */
    __m256i top_sc_0_3 = _mm256_slli_epi16(_mm256_and_si256(high, mask2), 4);
    __m256i top_m_0_3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 2), mask2), 4);
    __m256i top_sc_4_7 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 4), mask2), 4);
    __m256i top_m_4_7 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 6), mask2), 4);
    __m256i sc_0_3 = _mm256_or_si256(_mm256_and_si256(low_0_3, mask4), top_sc_0_3);
    __m256i sc_4_7 = _mm256_or_si256(_mm256_and_si256(low_4_7, mask4), top_sc_4_7);
    __m256i m_0_3 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low_0_3, 4), mask4), top_m_0_3);
    __m256i m_4_7 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low_4_7, 4), mask4), top_m_4_7);

    const __m128i halves_sc[4] = {
        _mm256_castsi256_si128(sc_0_3), _mm256_extracti128_si256(sc_0_3, 1),
        _mm256_castsi256_si128(sc_4_7), _mm256_extracti128_si256(sc_4_7, 1)};
    const __m128i halves_m[4] = {_mm256_castsi256_si128(m_0_3), _mm256_extracti128_si256(m_0_3, 1),
                                 _mm256_castsi256_si128(m_4_7), _mm256_extracti128_si256(m_4_7, 1)};
    for (int i = 0; i < 4; i++) {
        /* Half i holds sub-blocks 2i (bytes 0-7) and 2i + 1 (bytes 8-15). */
        out->scales[2 * i] = _mm256_cvtepu8_epi32(halves_sc[i]);
        out->scales[2 * i + 1] = _mm256_cvtepu8_epi32(_mm_srli_si128(halves_sc[i], 8));
        __m128i pairs = _mm_unpacklo_epi8(halves_m[i], _mm_srli_si128(halves_m[i], 8));
        out->min_pairs[i] = _mm256_cvtepu8_epi16(pairs);
    }
}

/* y[t * y_stride + r] for the 8 rows of one Q5_K group and tokens [0, n_tokens), n_tokens <=
 * PACKED_TILE_TOKENS, with Q8_K activation rows. */
QUILL_X86_INLINE void packed_tile_q5_k(int64_t n_blocks, const uint8_t *group,
                                       const uint8_t *activations, size_t activation_row_bytes,
                                       int n_tokens, float *y, int64_t y_stride) {
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    __m256 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm256_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * GROUP_BLOCK_Q5_K;
        if (n_tokens >= PREFETCH_MIN_TOKENS && n_tokens <= PREFETCH_MAX_TOKENS) {
            for (size_t line = 0; line < GROUP_BLOCK_Q5_K; line += 64) {
                _mm_prefetch((const char *)block + PREFETCH_BYTES + line, _MM_HINT_T0);
            }
        }
        k_scales scales;
        decode_k_scales(block, &scales);
        __m256i isum[PACKED_TILE_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            isum[t] = _mm256_setzero_si256();
        }
        for (int g = 0; g < 4; g++) {
            /* Sub-blocks 2g and 2g + 1: the low and high nibbles of chunks 8g .. 8g + 7, and
             * bits 2g and 2g + 1 of the fifth-bit chunks, unpacked from one load of each. */
            const uint8_t *chunks = block + Q5_K_QS + 32 * 8 * g;
            __m256i levels[2][8];
            for (int c = 0; c < 8; c++) {
                __m256i pairs = _mm256_loadu_si256((const __m256i *)(chunks + 32 * c));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(block + Q5_K_QH + 32 * c));
                levels[0][c] =
                    _mm256_or_si256(_mm256_and_si256(pairs, low_mask), fifth_bits(qh, 2 * g));
                levels[1][c] =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(pairs, 4), low_mask),
                                    fifth_bits(qh, 2 * g + 1));
            }
            for (int half = 0; half < 2; half++) {
                const int j = 2 * g + half;
                for (int t = 0; t < n_tokens; t++) {
                    const quill_block_q8_k *x =
                        (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) +
                        b;
                    const int8_t *values = x->qs + 32 * j;
                    __m256i low = _mm256_setzero_si256();
                    __m256i high = _mm256_setzero_si256();
                    for (int c = 0; c < 4; c++) {
                        low = _mm256_dpbusd_epi32(low, levels[half][c],
                                                  broadcast_4_bytes(values + 4 * c));
                        high = _mm256_dpbusd_epi32(high, levels[half][c + 4],
                                                   broadcast_4_bytes(values + 16 + 4 * c));
                    }
                    __m256i sums = _mm256_add_epi32(low, high);
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(sums, scales.scales[j]));
                }
            }
        }
        __m256 d_w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));
        __m256 dmin_w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + Q5_K_DMIN)));
        for (int t = 0; t < n_tokens; t++) {
            const quill_block_q8_k *x =
                (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
            /* Activation sums of the 8 sub-blocks as int16 (at most 32 * 128 in magnitude). */
            __m128i sub_sums = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)x->bsums),
                                              _mm_loadu_si128((const __m128i *)(x->bsums + 16)));
            __m256i mins = _mm256_setzero_si256();
            mins =
                _mm256_dpwssd_epi32(mins, scales.min_pairs[0], _mm256_broadcastd_epi32(sub_sums));
            mins = _mm256_dpwssd_epi32(mins, scales.min_pairs[1],
                                       _mm256_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0x55)));
            mins = _mm256_dpwssd_epi32(mins, scales.min_pairs[2],
                                       _mm256_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0xaa)));
            mins = _mm256_dpwssd_epi32(mins, scales.min_pairs[3],
                                       _mm256_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0xff)));
            float d_x;
            memcpy(&d_x, x->d, sizeof(d_x));
            __m256 d_x8 = _mm256_set1_ps(d_x);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d_w, d_x8), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            acc[t] =
                _mm256_fnmadd_ps(_mm256_mul_ps(dmin_w, d_x8), _mm256_cvtepi32_ps(mins), acc[t]);
        }
    }

    for (int t = 0; t < n_tokens; t++) {
        _mm256_storeu_ps(y + t * y_stride, acc[t]);
    }
}

/* As packed_tile_q5_k for two consecutive groups (16 rows, group_bytes apart) in 512-bit
 * vectors, group 0 in lanes 0-7: every lane takes packed_tile_q5_k's operations, so the values
 * are the same. */
QUILL_X86_INLINE void packed_tile_q5_k_x2(int64_t n_blocks, const uint8_t *group,
                                          size_t group_bytes, const uint8_t *activations,
                                          size_t activation_row_bytes, int n_tokens, float *y,
                                          int64_t y_stride) {
    const __m512i low_mask = _mm512_set1_epi8(0x0f);
    __m512 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm512_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *first = group + (size_t)b * GROUP_BLOCK_Q5_K;
        const uint8_t *second = first + group_bytes;
        if (n_tokens >= PREFETCH_MIN_TOKENS && n_tokens <= PREFETCH_MAX_TOKENS) {
            for (size_t line = 0; line < GROUP_BLOCK_Q5_K; line += 64) {
                _mm_prefetch((const char *)first + PREFETCH_BYTES + line, _MM_HINT_T0);
                _mm_prefetch((const char *)second + PREFETCH_BYTES + line, _MM_HINT_T0);
            }
        }
        k_scales first_scales;
        k_scales second_scales;
        decode_k_scales(first, &first_scales);
        decode_k_scales(second, &second_scales);
        __m512i scales[8];
        __m512i min_pairs[4];
        for (int j = 0; j < 8; j++) {
            scales[j] = join_halves(first_scales.scales[j], second_scales.scales[j]);
        }
        for (int i = 0; i < 4; i++) {
            min_pairs[i] = join_halves(first_scales.min_pairs[i], second_scales.min_pairs[i]);
        }

        __m512i isum[PACKED_TILE_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            isum[t] = _mm512_setzero_si512();
        }
        for (int j = 0; j < 8; j++) {
            size_t chunks = Q5_K_QS + 32 * 8 * (size_t)(j / 2);
            __m512i levels[8];
            for (int c = 0; c < 8; c++) {
                __m512i pairs =
                    join_halves(_mm256_loadu_si256((const __m256i *)(first + chunks + 32 * c)),
                                _mm256_loadu_si256((const __m256i *)(second + chunks + 32 * c)));
                __m512i nibbles = j % 2 == 0
                                      ? _mm512_and_si512(pairs, low_mask)
                                      : _mm512_and_si512(_mm512_srli_epi16(pairs, 4), low_mask);
                __m512i qh =
                    join_halves(_mm256_loadu_si256((const __m256i *)(first + Q5_K_QH + 32 * c)),
                                _mm256_loadu_si256((const __m256i *)(second + Q5_K_QH + 32 * c)));
                levels[c] = _mm512_or_si512(nibbles, fifth_bits_512(qh, j));
            }
            for (int t = 0; t < n_tokens; t++) {
                const quill_block_q8_k *x =
                    (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
                const int8_t *values = x->qs + 32 * j;
                __m512i low = _mm512_setzero_si512();
                __m512i high = _mm512_setzero_si512();
                for (int c = 0; c < 4; c++) {
                    int32_t low_bytes;
                    int32_t high_bytes;
                    memcpy(&low_bytes, values + 4 * c, sizeof(low_bytes));
                    memcpy(&high_bytes, values + 16 + 4 * c, sizeof(high_bytes));
                    low = _mm512_dpbusd_epi32(low, levels[c], _mm512_set1_epi32(low_bytes));
                    high = _mm512_dpbusd_epi32(high, levels[c + 4], _mm512_set1_epi32(high_bytes));
                }
                __m512i sums = _mm512_add_epi32(low, high);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(sums, scales[j]));
            }
        }
        __m512 d_w = _mm512_cvtph_ps(join_halves_128(_mm_loadu_si128((const __m128i *)first),
                                                     _mm_loadu_si128((const __m128i *)second)));
        __m512 dmin_w = _mm512_cvtph_ps(
            join_halves_128(_mm_loadu_si128((const __m128i *)(first + Q5_K_DMIN)),
                            _mm_loadu_si128((const __m128i *)(second + Q5_K_DMIN))));
        for (int t = 0; t < n_tokens; t++) {
            const quill_block_q8_k *x =
                (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
            __m128i sub_sums = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)x->bsums),
                                              _mm_loadu_si128((const __m128i *)(x->bsums + 16)));
            __m512i mins = _mm512_setzero_si512();
            mins = _mm512_dpwssd_epi32(mins, min_pairs[0], _mm512_broadcastd_epi32(sub_sums));
            mins = _mm512_dpwssd_epi32(mins, min_pairs[1],
                                       _mm512_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0x55)));
            mins = _mm512_dpwssd_epi32(mins, min_pairs[2],
                                       _mm512_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0xaa)));
            mins = _mm512_dpwssd_epi32(mins, min_pairs[3],
                                       _mm512_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0xff)));
            float d_x;
            memcpy(&d_x, x->d, sizeof(d_x));
            __m512 d_x16 = _mm512_set1_ps(d_x);
            acc[t] =
                _mm512_fmadd_ps(_mm512_mul_ps(d_w, d_x16), _mm512_cvtepi32_ps(isum[t]), acc[t]);
            acc[t] =
                _mm512_fnmadd_ps(_mm512_mul_ps(dmin_w, d_x16), _mm512_cvtepi32_ps(mins), acc[t]);
        }
    }

    for (int t = 0; t < n_tokens; t++) {
        _mm256_storeu_ps(y + t * y_stride, _mm512_castps512_ps256(acc[t]));
        _mm256_storeu_ps(y + t * y_stride + 8, _mm512_extractf32x8_ps(acc[t], 1));
    }
}

/* One tile: 16 rows when group_pair_bytes (the distance to the next group) is not 0, else 8. */
QUILL_X86_INLINE void packed_tile_q5_k_any(int64_t n_blocks, const uint8_t *group,
                                           size_t group_pair_bytes, const uint8_t *activations,
                                           size_t activation_row_bytes, int n_tokens, float *y,
                                           int64_t y_stride) {
    if (group_pair_bytes > 0) {
        packed_tile_q5_k_x2(n_blocks, group, group_pair_bytes, activations, activation_row_bytes,
                            n_tokens, y, y_stride);
    } else {
        packed_tile_q5_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
    }
}

/* One tile of n_tokens (1 .. PACKED_TILE_TOKENS) tokens, with the token count turned into a
 * constant so that the tile's loops unroll. */
QUILL_X86_INLINE void packed_tile_tokens(int64_t n_blocks, const uint8_t *group,
                                         size_t group_pair_bytes, const uint8_t *x,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
/* One case per token count, so each call gets a constant count. */
#define PACKED_TILE_CASE(count)                                                                    \
    case count:                                                                                    \
        packed_tile_q5_k_any(n_blocks, group, group_pair_bytes, x, activation_row_bytes, count, y, \
                             y_stride);                                                            \
        break
    switch (n_tokens) {
        PACKED_TILE_CASE(1);
        PACKED_TILE_CASE(2);
        PACKED_TILE_CASE(3);
        PACKED_TILE_CASE(4);
        PACKED_TILE_CASE(5);
        PACKED_TILE_CASE(6);
        PACKED_TILE_CASE(7);
    default:
        packed_tile_q5_k_any(n_blocks, group, group_pair_bytes, x, activation_row_bytes,
                             PACKED_TILE_TOKENS, y, y_stride);
        break;
    }
#undef PACKED_TILE_CASE
}

/* Walks a rows x tokens range as gemm_packed.c does: pairs of groups (16 rows) while two remain
 * and more than one token runs, else single groups, each in token tiles. */
void quill__gemm_packed_q5_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    const int64_t n_blocks = n / QUILL_QK_K;
    const size_t group_bytes = QUILL_PACK_ROWS * weight_row_bytes;
    int64_t row = 0;
    while (row + QUILL_PACK_ROWS <= n_rows) {
        const bool is_pair = n_tokens > 1 && row + 2 * QUILL_PACK_ROWS <= n_rows;
        const uint8_t *group = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
        for (int64_t token = 0; token < n_tokens; token += PACKED_TILE_TOKENS) {
            int64_t left = n_tokens - token;
            packed_tile_tokens(n_blocks, group, is_pair ? group_bytes : 0,
                               (const uint8_t *)activations + (size_t)token * activation_row_bytes,
                               activation_row_bytes,
                               left < PACKED_TILE_TOKENS ? left : PACKED_TILE_TOKENS,
                               y + token * y_stride + row, y_stride);
        }
        row += is_pair ? 2 * QUILL_PACK_ROWS : QUILL_PACK_ROWS;
    }
}
