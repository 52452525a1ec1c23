/*
 * AVX2 tiles of packed Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K weights (layouts in
 * kernels/packed.h): the one-group tiles of packed_group_tiles.h on the maddubs path, which give
 * the exact integer sums of the VNNI instructions. AVX2 has no 512-bit vectors to pair groups, so
 * the walk takes one group (8 rows) at a time. Packed Q8_0 stays row-major here: its levels q + 128
 * would saturate maddubs.
 */
#include "kernels/avx2/kernels_avx2.h"

#include "kernels/avx2/packed_group_tiles.h"
#include "kernels/blocks.h"
#include "kernels/packed.h"

/* The packed weight types of this file. */
enum { PACKED_Q4_0, PACKED_Q4_1, PACKED_Q5_0, PACKED_Q5_1, PACKED_Q4_K, PACKED_Q5_K, PACKED_Q6_K };

/* Computes one tile (packed_group_tiles.h) of 8 rows, because AVX2 has no group pairs. */
QUILL_X86_INLINE void packed_tile_kind(int kind, int64_t n_blocks, const uint8_t *group,
                                       size_t group_pair_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride) {
    (void)group_pair_bytes;
    switch (kind) {
    case PACKED_Q4_0:
        packed_tile(0, n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
        break;
    case PACKED_Q4_1:
        packed_tile_legacy(true, false, n_blocks, group, activations, activation_row_bytes,
                           n_tokens, y, y_stride);
        break;
    case PACKED_Q5_0:
        packed_tile_legacy(false, true, n_blocks, group, activations, activation_row_bytes,
                           n_tokens, y, y_stride);
        break;
    case PACKED_Q5_1:
        packed_tile_legacy(true, true, n_blocks, group, activations, activation_row_bytes, n_tokens,
                           y, y_stride);
        break;
    case PACKED_Q4_K:
        packed_tile_q4_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
        break;
    case PACKED_Q5_K:
        packed_tile_q5_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
        break;
    default:
        packed_tile_q6_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
        break;
    }
}

void quill__gemm_packed_q4_0_q8_0_avx2(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride) {
    gemm_packed(PACKED_Q4_0, false, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q4_k_q8_k_avx2(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride) {
    gemm_packed(PACKED_Q4_K, false, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q5_k_q8_k_avx2(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride) {
    gemm_packed(PACKED_Q5_K, false, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q6_k_q8_k_avx2(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride) {
    gemm_packed(PACKED_Q6_K, false, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q4_1_q8_1_avx2(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride) {
    gemm_packed(PACKED_Q4_1, false, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q5_0_q8_0_avx2(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride) {
    gemm_packed(PACKED_Q5_0, false, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void quill__gemm_packed_q5_1_q8_1_avx2(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride) {
    gemm_packed(PACKED_Q5_1, false, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}
