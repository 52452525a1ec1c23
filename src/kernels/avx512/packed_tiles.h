/*
 * Inline pieces shared by the AVX-512 packed tiles: gemm_packed.c (Q4_0, Q8_0, Q4_K),
 * gemm_packed_q5_k.c and gemm_packed_q6_k.c. They hold the tile size, the prefetch distance,
 * vector joins and broadcasts, the decoder of the scale planes that Q4_K and Q5_K group blocks
 * share (kernels/packed.h), and the walk of a rows x tokens range in tiles. Include after
 * defining QUILL_X86_USE_VNNI to 1.
 */
#ifndef QUILL_KERNELS_AVX512_PACKED_TILES_H
#define QUILL_KERNELS_AVX512_PACKED_TILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/avx2/x86_common.h"
#include "kernels/packed.h"

/* Tokens per register tile: 8 level vectors, 8 accumulators and a few temporaries use 22 of the
 * 32 vector registers. */
enum { PACKED_TILE_TOKENS = 8 };

/* Software prefetch of the group stream, PREFETCH_BYTES ahead, for tiles of 2 to 8 tokens
 * (batched decode): there the weights stream from memory once while the arithmetic per byte
 * is 2-8 times decode's, and the hardware prefetchers fall behind. Measured on an 8192 x 2048
 * Q4_0 matrix with 8 tokens and 2 threads (AMD EPYC), in group pairs: 515 GFLOP/s 4 KB ahead,
 * 528 at 8 KB, 644 at 16 KB and 629-659 at 32 KB. Single groups ran at 375 without prefetch
 * and 510 at 4 KB.
 * One-token decode is faster without it (the hardware prefetchers keep up with a single
 * stream). Prefill runs 8-token tiles over weights its first tile brought into cache, where
 * the extra prefetches cost nothing measurable. */
enum { PREFETCH_BYTES = 32768, PREFETCH_MIN_TOKENS = 2, PREFETCH_MAX_TOKENS = 8 };

/* Returns the 4 bytes at `bytes` in every 32-bit lane. */
QUILL_X86_INLINE __m256i broadcast_4_bytes(const int8_t *bytes) {
    int32_t value;
    memcpy(&value, bytes, sizeof(value));
    return _mm256_set1_epi32(value);
}

QUILL_X86_INLINE __m512i broadcast_4_bytes_512(const int8_t *bytes) {
    int32_t value;
    memcpy(&value, bytes, sizeof(value));
    return _mm512_set1_epi32(value);
}

/* Joins two 128-bit halves into one 256-bit vector, first in the low half. */
QUILL_X86_INLINE __m256i join_halves_128(__m128i first, __m128i second) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(first), second, 1);
}

/* Joins two 256-bit halves into one 512-bit vector, first in lanes 0-7. */
QUILL_X86_INLINE __m512i join_halves(__m256i first, __m256i second) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(first), second, 1);
}

/* Offsets in a Q4_K or Q5_K group block (packed.h): the 8 rows' fp16 dmin, then the low and
 * high planes of their 6-bit sub-block scales and mins. */
enum { K_GROUP_DMIN = 16, K_GROUP_LOW_PLANE = 32, K_GROUP_HIGH_PLANE = 96 };

/* The 8 rows' scales and mins of one Q4_K or Q5_K super-block: scales[j] holds sc_j of row r in
 * int32 lane r; min_pairs[i] holds m_{2i} and m_{2i+1} of row r as the int16 pair of lane r. */
typedef struct k_scales {
    __m256i scales[8];
    __m256i min_pairs[4];
} k_scales;

/* Decodes the low and high planes of a Q4_K or Q5_K group block into k_scales. */
QUILL_X86_INLINE void decode_k_scales(const uint8_t *block, k_scales *out) {
    const __m256i mask4 = _mm256_set1_epi8(0x0f);
    const __m256i mask2 = _mm256_set1_epi8(0x03);
    __m256i low_0_3 = _mm256_loadu_si256((const __m256i *)(block + K_GROUP_LOW_PLANE));
    __m256i low_4_7 = _mm256_loadu_si256((const __m256i *)(block + K_GROUP_LOW_PLANE + 32));
    __m256i high = _mm256_loadu_si256((const __m256i *)(block + K_GROUP_HIGH_PLANE));
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

/* One tile of a packed kind (the including file's own numbering): 16 rows when group_pair_bytes
 * (the distance to the next group) is not 0, else 8, and n_tokens (1 .. PACKED_TILE_TOKENS)
 * tokens. Each tile file defines it; gemm_packed below calls it with constant token counts. */
QUILL_X86_INLINE void packed_tile_kind(int kind, int64_t n_blocks, const uint8_t *group,
                                       size_t group_pair_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride);

/* One tile of n_tokens (1 .. PACKED_TILE_TOKENS) tokens, with the token count turned into a
 * constant so that the tile's loops unroll. */
QUILL_X86_INLINE void packed_tile_tokens(int kind, int64_t n_blocks, const uint8_t *group,
                                         size_t group_pair_bytes, const uint8_t *x,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
/* One case per token count, so each call gets a constant count. */
#define PACKED_TILE_CASE(count)                                                                    \
    case count:                                                                                    \
        packed_tile_kind(kind, n_blocks, group, group_pair_bytes, x, activation_row_bytes, count,  \
                         y, y_stride);                                                             \
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
        packed_tile_kind(kind, n_blocks, group, group_pair_bytes, x, activation_row_bytes,
                         PACKED_TILE_TOKENS, y, y_stride);
        break;
    }
#undef PACKED_TILE_CASE
}

/* Walks a rows x tokens range of n_blocks blocks per row: pairs of groups (16 rows) while two
 * remain, else single groups, each in token tiles. Pairs halve the activation broadcasts and
 * scalings per row. An 8192 x 2048 Q4_0 matrix at 64 tokens went from 506 to 666 GFLOP/s with them
 * (2 threads, AMD EPYC). At 8 tokens, with the prefetch of PREFETCH_BYTES, it went from 510 to
 * about 640. One-token decode streams at memory speed either way and keeps single groups. */
QUILL_X86_INLINE void gemm_packed(int kind, int64_t n_blocks, const void *weights,
                                  size_t weight_row_bytes, int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride) {
    const size_t group_bytes = QUILL_PACK_ROWS * weight_row_bytes;
    int64_t row = 0;
    while (row + QUILL_PACK_ROWS <= n_rows) {
        const bool is_pair = n_tokens > 1 && row + 2 * QUILL_PACK_ROWS <= n_rows;
        const uint8_t *group = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
        for (int64_t token = 0; token < n_tokens; token += PACKED_TILE_TOKENS) {
            int64_t left = n_tokens - token;
            packed_tile_tokens(kind, n_blocks, group, is_pair ? group_bytes : 0,
                               (const uint8_t *)activations + (size_t)token * activation_row_bytes,
                               activation_row_bytes,
                               left < PACKED_TILE_TOKENS ? left : PACKED_TILE_TOKENS,
                               y + token * y_stride + row, y_stride);
        }
        row += is_pair ? 2 * QUILL_PACK_ROWS : QUILL_PACK_ROWS;
    }
}

#endif
