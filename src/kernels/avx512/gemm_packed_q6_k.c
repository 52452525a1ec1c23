/*
 * AVX-512 VNNI tiles of packed Q6_K weights with Q8_K activations (layout in kernels/packed.h).
 * As for the other packed types, a one-group tile in 256-bit vectors (avx2/packed_group_tiles.h,
 * shared with the AVX2 kernels) serves decode and an odd last group, and a two-group tile here
 * in 512-bit vectors serves prefill and batched decode. Its lanes repeat the one-group
 * operations.
 *
 * A group block (8 rows of one super-block) is read in 8 passes, in address order. Pass (g, part)
 * joins the high bits (part 0) of section g with its low-nibble part 1 or 2 into 8 vectors of
 * unsigned 6-bit levels, 4 of sub-block j = g + 4 (part - 1) (low nibbles) and 4 of sub-block
 * j + 8 (high nibbles). For each token and each of the two sub-blocks, 4 vpdpbusd against 4
 * broadcast activation bytes each start from -32 times the sub-block's activation sum (Q8_K bsums).
 * They leave the 8 rows' exact sums of (q - 32) * q_x in the 8 lanes, which are multiplied by the
 * rows' int8 scales and added to the super-block's int32 sum. Then one conversion, one scale
 * product (d_w of the 8 rows times d_x) and one FMA update the 8 (row, token) accumulators. This
 * is the per-pair arithmetic of the VNNI vec_dot (avx2/dot_k_impl.h), so every value
 * equals the unpacked row's bit for bit.
 */
#include "kernels/avx512/kernels_avx512.h"

#include <stdbool.h>

#define QUILL_X86_USE_VNNI 1
#include "kernels/avx512/packed_tiles.h"
#include "kernels/blocks.h"
#include "kernels/packed.h"

/* Computes packed_tile_q6_k's values for two consecutive groups (16 rows, group_bytes apart) in
 * 512-bit vectors, group 0 in lanes 0-7: every lane takes packed_tile_q6_k's operations, so the
 * values are the same. */
QUILL_X86_INLINE void packed_tile_q6_k_x2(int64_t n_blocks, const uint8_t *group,
                                          size_t group_bytes, const uint8_t *activations,
                                          size_t activation_row_bytes, int n_tokens, float *y,
                                          int64_t y_stride) {
    __m512 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm512_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *first = group + (size_t)b * GROUP_BLOCK_Q6_K;
        const uint8_t *second = first + group_bytes;
        prefetch_pair_block(group, group_bytes, b, n_blocks, GROUP_BLOCK_Q6_K, n_tokens);
        __m512i isum[PACKED_TILE_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            isum[t] = _mm512_setzero_si512();
        }
        for (int pass = 0; pass < 8; pass++) {
            const int part = 1 + pass % 2;
            const int j = pass / 2 + 4 * (part - 1);
            __m256i first_low[4];
            __m256i first_high[4];
            __m256i second_low[4];
            __m256i second_high[4];
            unpack_pass(first, pass / 2, part, first_low, first_high);
            unpack_pass(second, pass / 2, part, second_low, second_high);
            __m512i low_levels[4];
            __m512i high_levels[4];
            for (int c = 0; c < 4; c++) {
                low_levels[c] = join_halves(first_low[c], second_low[c]);
                high_levels[c] = join_halves(first_high[c], second_high[c]);
            }
            const __m512i low_scales = join_halves(load_scales(first, j), load_scales(second, j));
            const __m512i high_scales =
                join_halves(load_scales(first, j + 8), load_scales(second, j + 8));
            for (int t = 0; t < n_tokens; t++) {
                const quill_block_q8_k *x =
                    (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
                const int8_t *low_values = x->qs + 16 * j;
                const int8_t *high_values = x->qs + 16 * (j + 8);
                __m512i low = _mm512_set1_epi32(level_offset(x, j));
                __m512i high = _mm512_set1_epi32(level_offset(x, j + 8));
                for (int c = 0; c < 4; c++) {
                    low = _mm512_dpbusd_epi32(low, low_levels[c],
                                              broadcast_4_bytes_512(low_values + 4 * c));
                    high = _mm512_dpbusd_epi32(high, high_levels[c],
                                               broadcast_4_bytes_512(high_values + 4 * c));
                }
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(low, low_scales));
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(high, high_scales));
            }
        }
        __m512 d_w = _mm512_cvtph_ps(join_halves_128(_mm_loadu_si128((const __m128i *)first),
                                                     _mm_loadu_si128((const __m128i *)second)));
        for (int t = 0; t < n_tokens; t++) {
            const quill_block_q8_k *x =
                (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
            __m512 scale = _mm512_mul_ps(d_w, _mm512_set1_ps(quill__load_f32(x->d)));
            acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum[t]), acc[t]);
        }
    }

    store_tile_x2(acc, n_tokens, y, y_stride);
}

/* Computes one tile (packed_group_tiles.h). The file has one kind. */
QUILL_X86_INLINE void packed_tile_kind(int kind, int64_t n_blocks, const uint8_t *group,
                                       size_t group_pair_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride) {
    (void)kind;
    if (group_pair_bytes > 0) {
        packed_tile_q6_k_x2(n_blocks, group, group_pair_bytes, activations, activation_row_bytes,
                            n_tokens, y, y_stride);
    } else {
        packed_tile_q6_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
    }
}

void quill__gemm_packed_q6_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(0, true, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}
