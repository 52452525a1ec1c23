/*
 * AVX-512 VNNI tiles of packed Q4_0 and Q8_0 weights with prepared Q8_0 activations, and of
 * packed Q4_K and Q5_K weights with Q8_K activations (layouts in kernels/packed.h). Each kind has a
 * one-group tile in 256-bit vectors (decode, and an odd last group), which the AVX2 kernels
 * share (avx2/packed_group_tiles.h), and a two-group tile here in 512-bit vectors (prefill and
 * batched decode), whose lanes repeat the one-group operations.
 *
 * Per group block (8 rows) the weights are unpacked once into 8 vectors of 32 unsigned levels,
 * chunk k holding elements 4k .. 4k + 3 of each row and chunk k + 4 elements 16 + 4k ..
 * 16 + 4k + 3. For each token, 8 vpdpbusd against 4 broadcast activation bytes each start from
 * the block's prepared offset (-8 or -128 times the activation sum). They leave the 8 rows'
 * exact block sums in the 8 lanes. Then one conversion, one scale product (d_w of the 8 rows
 * times d_x) and one FMA update the 8 (row, token) accumulators. This is the per-pair
 * arithmetic of the VNNI vec_dot (avx2/dot_q4_q5_q8_impl.h, is_exact), so every value equals
 * the unpacked row's bit for bit.
 */
#include "kernels/avx512/kernels_avx512.h"

#include <stdbool.h>

#define QUILL_X86_USE_VNNI 1
#include "kernels/avx512/packed_tiles.h"
#include "kernels/blocks.h"
#include "kernels/packed.h"

/* The packed weight types. */
enum { PACKED_Q4_0, PACKED_Q8_0, PACKED_Q4_K, PACKED_Q5_K };

/* Computes packed_tile's values for two consecutive groups at once (16 rows, group_bytes apart),
 * group 0 in lanes 0-7 and group 1 in lanes 8-15 of 512-bit vectors. Each lane takes exactly the
 * operations of packed_tile, so the values are the same. The activation broadcasts, offsets
 * and scales now serve 16 rows instead of 8. */
QUILL_X86_INLINE void packed_tile_x2(int is_q8, int64_t n_blocks, const uint8_t *group,
                                     size_t group_bytes, const uint8_t *activations,
                                     size_t activation_row_bytes, int n_tokens, float *y,
                                     int64_t y_stride) {
    const size_t group_block_bytes = is_q8 ? GROUP_BLOCK_Q8_0 : GROUP_BLOCK_Q4_0;
    const size_t extras = quill__q8_0_prepared_extras_offset(n_blocks);
    const size_t offsets = extras + (size_t)n_blocks * 4u * (is_q8 ? 2u : 1u);
    const __m512i low_mask = _mm512_set1_epi8(0x0f);
    __m512 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm512_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *first = group + (size_t)b * group_block_bytes;
        const uint8_t *second = first + group_bytes;
        prefetch_pair_block(group, group_bytes, b, n_blocks, group_block_bytes, n_tokens);
        __m512 d_w = _mm512_cvtph_ps(join_halves_128(_mm_loadu_si128((const __m128i *)first),
                                                     _mm_loadu_si128((const __m128i *)second)));
        __m512i levels[8];
        for (int k = 0; k < (is_q8 ? 8 : 4); k++) {
            __m512i both = join_halves(_mm256_loadu_si256((const __m256i *)(first + 16 + 32 * k)),
                                       _mm256_loadu_si256((const __m256i *)(second + 16 + 32 * k)));
            if (is_q8) {
                levels[k] = both;
            } else {
                levels[k] = _mm512_and_si512(both, low_mask);
                levels[k + 4] = _mm512_and_si512(_mm512_srli_epi16(both, 4), low_mask);
            }
        }

        for (int t = 0; t < n_tokens; t++) {
            const uint8_t *row = activations + (size_t)t * activation_row_bytes;
            const int8_t *x = (const int8_t *)(row + (size_t)b * sizeof(quill_block_q8_0) + 2);
            float d_x;
            int32_t offset;
            memcpy(&d_x, row + extras + (size_t)b * 4u, sizeof(d_x));
            memcpy(&offset, row + offsets + (size_t)b * 4u, sizeof(offset));
            __m512i low = _mm512_set1_epi32(offset);
            __m512i high = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) {
                int32_t low_bytes;
                int32_t high_bytes;
                memcpy(&low_bytes, x + 4 * k, sizeof(low_bytes));
                memcpy(&high_bytes, x + 16 + 4 * k, sizeof(high_bytes));
                low = _mm512_dpbusd_epi32(low, levels[k], _mm512_set1_epi32(low_bytes));
                high = _mm512_dpbusd_epi32(high, levels[k + 4], _mm512_set1_epi32(high_bytes));
            }
            __m512 sums = _mm512_cvtepi32_ps(_mm512_add_epi32(low, high));
            __m512 scale = _mm512_mul_ps(d_w, _mm512_set1_ps(d_x));
            acc[t] = _mm512_fmadd_ps(scale, sums, acc[t]);
        }
    }

    store_tile_x2(acc, n_tokens, y, y_stride);
}

/* Computes packed_tile_q4_k's values, or packed_tile_q5_k's when is_q5, for two consecutive groups
 * (16 rows, group_bytes apart) in 512-bit vectors, group 0 in lanes 0-7: every lane takes the
 * one-group tile's operations, so the values are the same. Q5_K levels are Q4_K's nibbles with bit
 * j of the qh chunk ORed in as bit 4. It keeps one sub-block at a time, because 16 level vectors of
 * 512 bits and the 16 token registers would not fit. */
QUILL_X86_INLINE void packed_tile_k_x2(int is_q5, int64_t n_blocks, const uint8_t *group,
                                       size_t group_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride) {
    const size_t group_block_bytes = is_q5 ? GROUP_BLOCK_Q5_K : GROUP_BLOCK_Q4_K;
    const size_t qs = is_q5 ? Q5_K_QS : Q4_K_QS;
    const __m512i low_mask = _mm512_set1_epi8(0x0f);
    __m512 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm512_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *first = group + (size_t)b * group_block_bytes;
        const uint8_t *second = first + group_bytes;
        prefetch_pair_block(group, group_bytes, b, n_blocks, group_block_bytes, n_tokens);
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
            size_t chunks = qs + 32 * 8 * (size_t)(j / 2);
            __m512i levels[8];
            for (int c = 0; c < 8; c++) {
                __m512i pairs =
                    join_halves(_mm256_loadu_si256((const __m256i *)(first + chunks + 32 * c)),
                                _mm256_loadu_si256((const __m256i *)(second + chunks + 32 * c)));
                levels[c] = j % 2 == 0 ? _mm512_and_si512(pairs, low_mask)
                                       : _mm512_and_si512(_mm512_srli_epi16(pairs, 4), low_mask);
                if (is_q5) {
                    __m512i qh = join_halves(
                        _mm256_loadu_si256((const __m256i *)(first + Q5_K_QH + 32 * c)),
                        _mm256_loadu_si256((const __m256i *)(second + Q5_K_QH + 32 * c)));
                    levels[c] = _mm512_or_si512(levels[c], fifth_bits_512(qh, j));
                }
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

    store_tile_x2(acc, n_tokens, y, y_stride);
}

/* One tile of any packed kind: 16 rows when group_pair_bytes (the distance to the next group)
 * is not 0, else 8. */
QUILL_X86_INLINE void packed_tile_kind(int kind, int64_t n_blocks, const uint8_t *group,
                                       size_t group_pair_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride) {
    if ((kind == PACKED_Q4_K || kind == PACKED_Q5_K) && group_pair_bytes > 0) {
        packed_tile_k_x2(kind == PACKED_Q5_K, n_blocks, group, group_pair_bytes, activations,
                         activation_row_bytes, n_tokens, y, y_stride);
    } else if (kind == PACKED_Q4_K) {
        packed_tile_q4_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
    } else if (kind == PACKED_Q5_K) {
        packed_tile_q5_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
    } else if (group_pair_bytes > 0) {
        packed_tile_x2(kind == PACKED_Q8_0, n_blocks, group, group_pair_bytes, activations,
                       activation_row_bytes, n_tokens, y, y_stride);
    } else {
        packed_tile(kind == PACKED_Q8_0, n_blocks, group, activations, activation_row_bytes,
                    n_tokens, y, y_stride);
    }
}

void quill__gemm_packed_q4_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(PACKED_Q4_0, true, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q8_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(PACKED_Q8_0, true, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q4_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(PACKED_Q4_K, true, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q5_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(PACKED_Q5_K, true, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}
