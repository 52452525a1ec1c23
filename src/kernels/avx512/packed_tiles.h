/*
 * Inline pieces shared by the AVX-512 packed tiles, gemm_packed.c (Q4_0, Q8_0, Q4_K, Q5_K) and
 * gemm_packed_q6_k.c: 512-bit vector joins and broadcasts, and the walk of a rows x tokens range
 * in tiles. The one-group tiles, the tile size, the prefetch distance and the scale decoder come
 * from avx2/packed_group_tiles.h. Include after defining QUILL_X86_USE_VNNI to 1.
 */
#ifndef QUILL_KERNELS_AVX512_PACKED_TILES_H
#define QUILL_KERNELS_AVX512_PACKED_TILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/avx2/packed_group_tiles.h"
#include "kernels/packed.h"

/* Returns the 4 bytes at `bytes` in every 32-bit lane. */
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
