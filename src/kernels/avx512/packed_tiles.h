/*
 * Inline pieces shared by the AVX-512 packed tiles, gemm_packed.c (Q4_0, Q8_0, Q4_K, Q5_K),
 * gemm_packed_q4_1_q5.c (Q4_1, Q5_0, Q5_1) and gemm_packed_q6_k.c: 512-bit vector joins,
 * broadcasts and fifth-bit extraction. The one-group tiles, the tile size, the prefetch
 * distance, the scale decoder and the tile walk come from avx2/packed_group_tiles.h. Include
 * after defining QUILL_X86_USE_VNNI to 1.
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

/* Returns fifth_bits (avx2/packed_group_tiles.h) for 512-bit vectors. */
QUILL_X86_INLINE __m512i fifth_bits_512(__m512i qh, int j) {
    __m512i moved = j >= 4 ? _mm512_srli_epi16(qh, j - 4) : _mm512_slli_epi16(qh, 4 - j);
    return _mm512_and_si512(moved, _mm512_set1_epi8(0x10));
}

/* Stores a two-group tile's accumulators: lanes 0-15 of acc[t] are rows 0-15 of token t, which
 * are consecutive in y. */
QUILL_X86_INLINE void store_tile_x2(const __m512 *acc, int n_tokens, float *y, int64_t y_stride) {
    for (int t = 0; t < n_tokens; t++) {
        _mm512_storeu_ps(y + t * y_stride, acc[t]);
    }
}

/* Prefetches for a two-group tile what prefetch_group_block does for one group: half of
 * PREFETCH_BYTES ahead in each group's own stream, continuing into the next group pair (2 *
 * group_bytes on) past the last block. The groups of a pair are group_bytes apart. Once a group
 * is larger than PREFETCH_BYTES (rows of more than about 7300 Q4_0 elements), a fixed distance
 * from the first group's block lands in the second group, which its own stream has already
 * read. A 2048 x 8192 Q4_0 matrix (8 tokens, 2 threads, AMD EPYC) ran at 517-539 GFLOP/s
 * that way, against 650-666 for 8192 x 2048. */
QUILL_X86_INLINE void prefetch_pair_block(const uint8_t *group, size_t group_bytes, int64_t block,
                                          int64_t n_blocks, size_t group_block_bytes,
                                          int n_tokens) {
    if (n_tokens < PREFETCH_MIN_TOKENS || n_tokens > PREFETCH_MAX_TOKENS) {
        return;
    }
    int64_t target = block + (int64_t)(PREFETCH_BYTES / (2 * group_block_bytes));
    const uint8_t *first = group + (size_t)(target / n_blocks) * 2 * group_bytes +
                           (size_t)(target % n_blocks) * group_block_bytes;
    for (size_t line = 0; line < group_block_bytes; line += 64) {
        _mm_prefetch((const char *)first + line, _MM_HINT_T0);
        _mm_prefetch((const char *)first + group_bytes + line, _MM_HINT_T0);
    }
}

#endif
