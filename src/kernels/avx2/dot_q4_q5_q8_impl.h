/*
 * Dot products and tiles of the legacy block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; blocks of
 * 32) with Q8_0 / Q8_1 activations, for x86 with AVX2 (and, through QUILL_X86_USE_VNNI, the
 * AVX-512 VNNI variant). Included by avx2/dot_q4_q5_q8.c and avx512/dot_q4_q5_q8.c, which
 * define QUILL_X86_NAME(stem) to append their suffix.
 *
 * Per (row, token) pair and block: eight exact int32 lane sums of level products (see
 * x86_common.h), reduced to the block's exact integer sum, then acc = fma(d_w * d_x, (float)sum,
 * acc) on a scalar in block order from acc = 0; Q4_1 / Q5_1 then add acc = fma(m_w, s_x, acc)
 * (is_exact below). Only AVX2's Q8_0 keeps the 8 lanes: acc = fma(d_w * d_x, float(lanes), acc)
 * on an 8-lane f32 accumulator in block order, and the result is hsum(acc). A tile computes each
 * pair with exactly these operations, so vec_dot (a 1 x 1 tile) and every tile shape give
 * bit-identical values. Blocks may sit at any address (unaligned loads only).
 */
#include <math.h>

#include "kernels/avx2/x86_common.h"
#include "kernels/blocks.h"

/* Weight formats handled by tile_legacy. */
enum {
    KIND_Q4_0,
    KIND_Q4_1,
    KIND_Q5_0,
    KIND_Q5_1,
    KIND_Q8_0,
};

/* Rows and tokens per register tile: R * T accumulators plus R unpacked weight blocks must fit
 * in the 16 (AVX2) or 32 (AVX-512) vector registers. */
#if QUILL_X86_USE_VNNI
enum { TILE_ROWS = 4, TILE_TOKENS = 4 };
#else
enum { TILE_ROWS = 4, TILE_TOKENS = 2 };
#endif
/* Rows per tile for a single token (decode): more independent accumulator chains. */
enum { DECODE_ROWS = 8 };

QUILL_X86_INLINE size_t weight_block_bytes(int kind) {
    switch (kind) {
    case KIND_Q4_0:
        return sizeof(quill_block_q4_0);
    case KIND_Q4_1:
        return sizeof(quill_block_q4_1);
    case KIND_Q5_0:
        return sizeof(quill_block_q5_0);
    case KIND_Q5_1:
        return sizeof(quill_block_q5_1);
    default:
        return sizeof(quill_block_q8_0);
    }
}

QUILL_X86_INLINE int has_offset(int kind) {
    return kind == KIND_Q4_1 || kind == KIND_Q5_1;
}

/* The packed types (Q4_0, Q4_1, Q5_0 and Q5_1 in both builds, Q8_0 with VNNI only, as AVX2 does
 * not pack it) use the arithmetic of the packed kernels (packed.h), so that packed and unpacked
 * rows give the same values: per block the exact integer sum of the 32 products, then
 * acc = fma(d_w * d_x, (float)sum, acc) and for Q4_1 / Q5_1 acc = fma(m_w, s_x, acc), on a
 * scalar in block order.
 * NOTE: the horizontal sum per pair and block slows the AVX2 row-major Q4_0 tiles from 16 to
 * 11.5 GB/s decode and from 66 to 38 GFLOP/s prefill (tools/bench_kernels.c, 8192 x 2048, 1
 * thread, AMD EPYC). Q4_1, Q5_0 and Q5_1 went from 13-17 to 10-13 GB/s and from 46-84 to 29-43
 * GFLOP/s in both variants (medians of 3). Only matrices that are not packed (row counts not a
 * multiple of 8) still use them. */
QUILL_X86_INLINE int is_exact(int kind) {
    return kind != KIND_Q8_0 || QUILL_X86_USE_VNNI;
}

/* Unpacks one weight block into 32 level bytes (unsigned for Q4/Q5, signed for Q8_0), its
 * scale and its offset (0 for the symmetric formats). */
QUILL_X86_INLINE __m256i unpack_weight(int kind, const uint8_t *block, float *d, float *m) {
    *d = quill_x86_load_fp16(block);
    *m = 0.0f;
    switch (kind) {
    case KIND_Q4_0:
        return quill_x86_nibbles_32(block + 2);
    case KIND_Q4_1:
        *m = quill_x86_load_fp16(block + 2);
        return quill_x86_nibbles_32(block + 4);
    case KIND_Q5_0:
        return _mm256_or_si256(quill_x86_nibbles_32(block + 6), quill_x86_bits_to_0x10(block + 2));
    case KIND_Q5_1:
        *m = quill_x86_load_fp16(block + 2);
        return _mm256_or_si256(quill_x86_nibbles_32(block + 8), quill_x86_bits_to_0x10(block + 4));
    default:
        return _mm256_loadu_si256((const __m256i *)(block + 2));
    }
}

/* Computes the pairs of rows [0, n_rows) x tokens [0, n_tokens) with n_rows <= DECODE_ROWS and
 * n_tokens <= TILE_TOKENS; see the file comment for the per-pair arithmetic. Q4_0 and Q5_0
 * levels are unsigned with an offset of 8 or 16, so their lanes are dot(u, x) - dot(offset, x),
 * the same integers as dot(u - offset, x). When prefetch is not NULL, each block step also
 * prefetches the next n_rows * weight_row_bytes bytes from there, spread evenly over the
 * blocks: decode streams weights from memory, and short rows read as several interleaved
 * streams leave the hardware prefetchers too little to go on (7 GB/s instead of 16 GB/s on an
 * 8192 x 2048 Q4_0 matrix, AMD EPYC). Prefetching never changes a value. */
QUILL_X86_INLINE void tile_legacy(int kind, int64_t n_blocks, const uint8_t *weights,
                                  size_t weight_row_bytes, int n_rows, const uint8_t *activations,
                                  size_t activation_row_bytes, int n_tokens, float *y,
                                  int64_t y_stride, const uint8_t *prefetch) {
    const size_t w_bytes = weight_block_bytes(kind);
    const size_t x_bytes = has_offset(kind) ? sizeof(quill_block_q8_1) : sizeof(quill_block_q8_0);
    const size_t x_qs = has_offset(kind) ? 4 : 2;
    __m256 acc[DECODE_ROWS][TILE_TOKENS];
    /* Per pair: the whole accumulator of the exact kinds. */
    float scalar_sum[DECODE_ROWS][TILE_TOKENS];
    for (int r = 0; r < n_rows; r++) {
        for (int t = 0; t < n_tokens; t++) {
            acc[r][t] = _mm256_setzero_ps();
            scalar_sum[r][t] = 0.0f;
        }
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        if (prefetch != NULL) {
            quill_x86_prefetch_step(prefetch + (size_t)b * (size_t)n_rows * w_bytes,
                                    (size_t)n_rows * w_bytes, (size_t)n_rows * weight_row_bytes);
        }
        /* Unpack this block of every row once; it serves all tokens of the tile. */
        __m256i levels[DECODE_ROWS];
        float d_w[DECODE_ROWS];
        float m_w[DECODE_ROWS];
        for (int r = 0; r < n_rows; r++) {
            const uint8_t *block = weights + (size_t)r * weight_row_bytes + (size_t)b * w_bytes;
            levels[r] = unpack_weight(kind, block, &d_w[r], &m_w[r]);
        }

        for (int t = 0; t < n_tokens; t++) {
            const uint8_t *x_block =
                activations + (size_t)t * activation_row_bytes + (size_t)b * x_bytes;
            __m256i x = _mm256_loadu_si256((const __m256i *)(x_block + x_qs));
            float d_x = quill_x86_load_fp16(x_block);
            float s_x = has_offset(kind) ? quill_x86_load_fp16(x_block + 2) : 0.0f;
            /* -dot(offset, x), the start of every row's lane sums (one VNNI op per row). */
            __m256i offset_lanes = _mm256_setzero_si256();
            if (kind == KIND_Q4_0) {
                offset_lanes = quill_x86_dot_u8_s8(_mm256_set1_epi8(8), x);
            } else if (kind == KIND_Q5_0) {
                offset_lanes = quill_x86_dot_u8_s8(_mm256_set1_epi8(16), x);
            }
            __m256i negative_offset = _mm256_sub_epi32(_mm256_setzero_si256(), offset_lanes);
            for (int r = 0; r < n_rows; r++) {
                __m256i lanes;
                if (kind == KIND_Q8_0) {
                    lanes = quill_x86_dot_s8_s8(levels[r], x);
                } else {
                    lanes = quill_x86_dot_u8_s8_add(negative_offset, levels[r], x);
                }
                if (is_exact(kind)) {
                    float sum = (float)quill_x86_hsum_i32(lanes);
                    scalar_sum[r][t] = fmaf(d_w[r] * d_x, sum, scalar_sum[r][t]);
                    if (has_offset(kind)) {
                        scalar_sum[r][t] = fmaf(m_w[r], s_x, scalar_sum[r][t]);
                    }
                    continue;
                }
                __m256 scale = _mm256_set1_ps(d_w[r] * d_x);
                acc[r][t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes), acc[r][t]);
            }
        }
    }

    for (int r = 0; r < n_rows; r++) {
        for (int t = 0; t < n_tokens; t++) {
            y[t * y_stride + r] =
                is_exact(kind) ? scalar_sum[r][t] : quill_x86_hsum(acc[r][t]) + scalar_sum[r][t];
        }
    }
}

/* Walks a rows x tokens range in register tiles; full tiles get constant bounds so the
 * compiler keeps the accumulators in registers. */
QUILL_X86_INLINE void gemm_legacy(int kind, int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride) {
    int64_t n_blocks = n / QUILL_QK;
    int64_t row = 0;
    if (n_tokens == 1) {
        for (; row + DECODE_ROWS <= n_rows; row += DECODE_ROWS) {
            const uint8_t *w = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
            tile_legacy(kind, n_blocks, w, weight_row_bytes, DECODE_ROWS, activations,
                        activation_row_bytes, 1, y + row, y_stride,
                        w + DECODE_ROWS * weight_row_bytes);
        }
    }
    for (; row < n_rows; row += TILE_ROWS) {
        const uint8_t *w = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
        int rows = n_rows - row < TILE_ROWS ? (int)(n_rows - row) : TILE_ROWS;
        for (int64_t token = 0; token < n_tokens; token += TILE_TOKENS) {
            const uint8_t *x = (const uint8_t *)activations + (size_t)token * activation_row_bytes;
            int tokens = n_tokens - token < TILE_TOKENS ? (int)(n_tokens - token) : TILE_TOKENS;
            float *y_tile = y + token * y_stride + row;
            if (rows == TILE_ROWS && tokens == TILE_TOKENS) {
                tile_legacy(kind, n_blocks, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes,
                            TILE_TOKENS, y_tile, y_stride, NULL);
            } else if (rows == TILE_ROWS && tokens == 1) {
                tile_legacy(kind, n_blocks, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes,
                            1, y_tile, y_stride, NULL);
            } else {
                tile_legacy(kind, n_blocks, w, weight_row_bytes, rows, x, activation_row_bytes,
                            tokens, y_tile, y_stride, NULL);
            }
        }
    }
}

/* Defines the vec_dot and gemm entry points of one weight format. */
#define QUILL_DEFINE_LEGACY(kind, stem)                                                            \
    float QUILL_X86_NAME(quill__dot_##stem)(int64_t n, const void *weights,                        \
                                            const void *activations) {                             \
        float result;                                                                              \
        tile_legacy(kind, n / QUILL_QK, weights, 0, 1, activations, 0, 1, &result, 0, NULL);       \
        return result;                                                                             \
    }                                                                                              \
    void QUILL_X86_NAME(quill__gemm_##stem)(int64_t n, const void *weights,                        \
                                            size_t weight_row_bytes, int64_t n_rows,               \
                                            const void *activations, size_t activation_row_bytes,  \
                                            int64_t n_tokens, float *y, int64_t y_stride) {        \
        gemm_legacy(kind, n, weights, weight_row_bytes, n_rows, activations, activation_row_bytes, \
                    n_tokens, y, y_stride);                                                        \
    }

QUILL_DEFINE_LEGACY(KIND_Q4_0, q4_0_q8_0)
QUILL_DEFINE_LEGACY(KIND_Q4_1, q4_1_q8_1)
QUILL_DEFINE_LEGACY(KIND_Q5_0, q5_0_q8_0)
QUILL_DEFINE_LEGACY(KIND_Q5_1, q5_1_q8_1)
QUILL_DEFINE_LEGACY(KIND_Q8_0, q8_0_q8_0)
