/*
 * Inline pieces shared by the AVX-512 packed tiles, gemm_packed.c (Q4_0, Q8_0, Q4_K, Q5_K) and
 * gemm_packed_q6_k.c: 512-bit vector joins and broadcasts. The one-group tiles, the tile size,
 * the prefetch distance, the scale decoder and the tile walk come from avx2/packed_group_tiles.h.
 * Include after defining QUILL_X86_USE_VNNI to 1.
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

#endif
