/*
 * AVX-512 VNNI tiles of packed Q4_1 and Q5_1 weights with Q8_1 activations, and of packed Q5_0
 * weights with prepared Q8_0 activations (layouts in kernels/packed.h). As for the other packed
 * types, a one-group tile in 256-bit vectors (packed_tile_legacy in avx2/packed_group_tiles.h,
 * shared with the AVX2 kernels) serves decode and an odd last group, and a two-group tile here in
 * 512-bit vectors serves prefill and batched decode. Its lanes repeat the one-group operations.
 *
 * Per group block (8 rows of one block of 32) the weights are unpacked once into 8 vectors of 32
 * unsigned levels: the low or high nibbles of a chunk, ORed with the fifth bits for Q5_0 and
 * Q5_1. For each token, 8 vpdpbusd against 4 broadcast activation bytes each leave the 8 rows'
 * exact block sums in the 8 lanes (Q5_0 starts from -16 times the activation sum). Then one
 * conversion, one scale product (d_w of the 8 rows times d_x) and one FMA update the 8 (row,
 * token) accumulators, and for Q4_1 and Q5_1 a second FMA adds m_w * s_x. This is the per-pair
 * arithmetic of the VNNI vec_dot (avx2/dot_q4_q5_q8_impl.h, is_exact), so every value equals the
 * unpacked row's bit for bit.
 */
#include "kernels/avx512/kernels_avx512.h"

#include <stdbool.h>

#define QUILL_X86_USE_VNNI 1
#include "kernels/avx512/packed_tiles.h"
#include "kernels/blocks.h"
#include "kernels/packed.h"

/* The packed weight types of this file. */
enum { PACKED_Q4_1, PACKED_Q5_0, PACKED_Q5_1 };

/* Computes packed_tile_legacy's values for two consecutive groups at once (16 rows, group_bytes
 * apart), group 0 in lanes 0-7 and group 1 in lanes 8-15 of 512-bit vectors. Each lane takes
 * exactly the operations of packed_tile_legacy, so the values are the same. */
QUILL_X86_INLINE void packed_tile_legacy_x2(bool has_min, bool has_qh, int64_t n_blocks,
                                            const uint8_t *group, size_t group_bytes,
                                            const uint8_t *activations, size_t activation_row_bytes,
                                            int n_tokens, float *y, int64_t y_stride) {
    const legacy_group_layout layout = legacy_group_layout_of(has_min, has_qh);
    /* Q5_0 only: the f32 scales, then the Q4_0 offsets of the prepared rows (packed.h). */
    const size_t extras = quill__q8_0_prepared_extras_offset(n_blocks);
    const size_t offsets = extras + (size_t)n_blocks * 4u;
    const __m512i low_mask = _mm512_set1_epi8(0x0f);
    __m512 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm512_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *first = group + (size_t)b * layout.group_block_bytes;
        const uint8_t *second = first + group_bytes;
        prefetch_pair_block(group, group_bytes, b, n_blocks, layout.group_block_bytes, n_tokens);
        __m512 d_w = _mm512_cvtph_ps(join_halves_128(_mm_loadu_si128((const __m128i *)first),
                                                     _mm_loadu_si128((const __m128i *)second)));
        __m512 m_w = _mm512_setzero_ps();
        if (has_min) {
            m_w = _mm512_cvtph_ps(join_halves_128(_mm_loadu_si128((const __m128i *)(first + 16)),
                                                  _mm_loadu_si128((const __m128i *)(second + 16))));
        }
        __m512i levels[8];
        for (int k = 0; k < 4; k++) {
            __m512i pairs =
                join_halves(_mm256_loadu_si256((const __m256i *)(first + layout.qs + 32 * k)),
                            _mm256_loadu_si256((const __m256i *)(second + layout.qs + 32 * k)));
            levels[k] = _mm512_and_si512(pairs, low_mask);
            levels[k + 4] = _mm512_and_si512(_mm512_srli_epi16(pairs, 4), low_mask);
        }
        if (has_qh) {
            __m512i qh = join_halves(_mm256_loadu_si256((const __m256i *)(first + layout.qh)),
                                     _mm256_loadu_si256((const __m256i *)(second + layout.qh)));
            for (int c = 0; c < 8; c++) {
                levels[c] = _mm512_or_si512(levels[c], fifth_bits_512(qh, c));
            }
        }

        for (int t = 0; t < n_tokens; t++) {
            const uint8_t *row = activations + (size_t)t * activation_row_bytes;
            const int8_t *x;
            __m512i start;
            float d_x;
            if (has_min) {
                const quill_block_q8_1 *block = (const quill_block_q8_1 *)row + b;
                x = block->qs;
                start = _mm512_setzero_si512();
                d_x = quill_x86_load_fp16(block->d);
            } else {
                int32_t offset_q4;
                x = (const int8_t *)(row + (size_t)b * sizeof(quill_block_q8_0) + 2);
                memcpy(&d_x, row + extras + (size_t)b * 4u, sizeof(d_x));
                memcpy(&offset_q4, row + offsets + (size_t)b * 4u, sizeof(offset_q4));
                start = _mm512_set1_epi32(2 * offset_q4);
            }
            __m512i low = start;
            __m512i high = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) {
                low = _mm512_dpbusd_epi32(low, levels[k], broadcast_4_bytes_512(x + 4 * k));
                high =
                    _mm512_dpbusd_epi32(high, levels[k + 4], broadcast_4_bytes_512(x + 16 + 4 * k));
            }
            __m512 sums = _mm512_cvtepi32_ps(_mm512_add_epi32(low, high));
            __m512 scale = _mm512_mul_ps(d_w, _mm512_set1_ps(d_x));
            acc[t] = _mm512_fmadd_ps(scale, sums, acc[t]);
            if (has_min) {
                const quill_block_q8_1 *block = (const quill_block_q8_1 *)row + b;
                acc[t] =
                    _mm512_fmadd_ps(m_w, _mm512_set1_ps(quill_x86_load_fp16(block->s)), acc[t]);
            }
        }
    }

    store_tile_x2(acc, n_tokens, y, y_stride);
}

/* One tile of any kind of this file: 16 rows when group_pair_bytes (the distance to the next
 * group) is not 0, else 8. */
QUILL_X86_INLINE void packed_tile_kind(int kind, int64_t n_blocks, const uint8_t *group,
                                       size_t group_pair_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride) {
    const bool has_min = kind != PACKED_Q5_0;
    const bool has_qh = kind != PACKED_Q4_1;
    if (group_pair_bytes > 0) {
        packed_tile_legacy_x2(has_min, has_qh, n_blocks, group, group_pair_bytes, activations,
                              activation_row_bytes, n_tokens, y, y_stride);
    } else {
        packed_tile_legacy(has_min, has_qh, n_blocks, group, activations, activation_row_bytes,
                           n_tokens, y, y_stride);
    }
}

void quill__gemm_packed_q4_1_q8_1_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(PACKED_Q4_1, true, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q5_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(PACKED_Q5_0, true, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q5_1_q8_1_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
    gemm_packed(PACKED_Q5_1, true, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}
