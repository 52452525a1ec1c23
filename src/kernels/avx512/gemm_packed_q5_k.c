/*
 * AVX-512 VNNI tiles of packed Q5_K weights with Q8_K activations (layout in kernels/packed.h).
 * The tiles are gemm_packed.c's Q4_K tiles with a fifth bit: each level vector ORs bit j of the
 * group's qh chunk, moved to bit 4, into sub-block j's nibbles. The scales, mins and float steps
 * are Q4_K's, so every (row, token) value equals the VNNI vec_dot on the unpacked row
 * (avx2/dot_k_impl.h) bit for bit. As for the other packed types, a one-group tile
 * in 256-bit vectors (avx2/packed_group_tiles.h, shared with the AVX2 kernels) serves decode
 * and an odd last group, and a two-group tile here in 512-bit vectors serves prefill and
 * batched decode. The one-group tile unpacks sub-blocks 2g and
 * 2g + 1 together from one load of their nibble and fifth-bit chunks, which raised decode from
 * 24 to 28-29 GB/s (1 thread, 8192 x 2048, AMD EPYC). The two-group tile keeps one sub-block at
 * a time, because 16 level vectors of 512 bits and its 16 token registers would not fit.
 */
#include "kernels/avx512/kernels_avx512.h"

#include <stdbool.h>

#define QUILL_X86_USE_VNNI 1
#include "kernels/avx512/packed_tiles.h"
#include "kernels/blocks.h"
#include "kernels/packed.h"

/* As fifth_bits (avx2/packed_group_tiles.h) in 512-bit vectors. */
QUILL_X86_INLINE __m512i fifth_bits_512(__m512i qh, int j) {
    __m512i moved = j >= 4 ? _mm512_srli_epi16(qh, j - 4) : _mm512_slli_epi16(qh, 4 - j);
    return _mm512_and_si512(moved, _mm512_set1_epi8(0x10));
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
            join_halves_128(_mm_loadu_si128((const __m128i *)(first + K_GROUP_DMIN)),
                            _mm_loadu_si128((const __m128i *)(second + K_GROUP_DMIN))));
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

/* One tile (packed_tiles.h); the file has one kind. */
QUILL_X86_INLINE void packed_tile_kind(int kind, int64_t n_blocks, const uint8_t *group,
                                       size_t group_pair_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride) {
    (void)kind;
    if (group_pair_bytes > 0) {
        packed_tile_q5_k_x2(n_blocks, group, group_pair_bytes, activations, activation_row_bytes,
                            n_tokens, y, y_stride);
    } else {
        packed_tile_q5_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
    }
}

void quill__gemm_packed_q5_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(0, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}
