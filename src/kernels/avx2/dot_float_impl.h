/*
 * Dot products and tiles of F32, F16 and BF16 weight rows with f32 activations, for x86 with
 * AVX2 + FMA + F16C; included by avx2/dot_float.c and avx512/dot_float.c, which define
 * QUILL_X86_NAME(stem) to append their suffix.
 *
 * Per (row, token) pair: one 8-lane f32 accumulator, acc = fma(w[8i..8i+7], x[8i..8i+7], acc)
 * for i in order, then the n % 8 tail added in element order to a scalar sum; the result is
 * hsum(acc) + tail. Any n is accepted and rows may sit at any address. Tiles compute every
 * pair with exactly these operations, so vec_dot (a 1 x 1 tile) and every tile shape give
 * bit-identical values.
 */
#include "kernels/avx2/x86_common.h"
#include "kernels/blocks.h"

enum {
    KIND_F32,
    KIND_F16,
    KIND_BF16,
};

#if QUILL_X86_USE_VNNI
enum { TILE_ROWS = 4, TILE_TOKENS = 4 };
#else
enum { TILE_ROWS = 4, TILE_TOKENS = 2 };
#endif

/* Loads eight weights starting at element i as f32. */
QUILL_X86_INLINE __m256 load_weights8(int kind, const uint8_t *row, int64_t i) {
    if (kind == KIND_F32) {
        return _mm256_loadu_ps((const float *)(row + 4 * i));
    }
    __m128i halves = _mm_loadu_si128((const __m128i *)(row + 2 * i));
    if (kind == KIND_F16) {
        return _mm256_cvtph_ps(halves);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

QUILL_X86_INLINE float load_weight1(int kind, const uint8_t *row, int64_t i) {
    if (kind == KIND_F32) {
        return quill__load_f32(row + 4 * i);
    }
    if (kind == KIND_F16) {
        return quill_x86_load_fp16(row + 2 * i);
    }
    return quill__bf16_to_fp32((uint16_t)(row[2 * i] | (row[2 * i + 1] << 8)));
}

/* Computes the pairs of rows [0, n_rows) x tokens [0, n_tokens). When prefetch is not NULL,
 * every 32 elements also prefetch the next n_rows * weight_row_bytes bytes from there, spread
 * evenly over the row (decode streams weights from memory; see quill_x86_prefetch_step).
 * Prefetching never changes a value. */
QUILL_X86_INLINE void tile_float(int kind, int64_t n, const uint8_t *weights,
                                 size_t weight_row_bytes, int n_rows, const uint8_t *activations,
                                 size_t activation_row_bytes, int n_tokens, float *y,
                                 int64_t y_stride, const uint8_t *prefetch) {
    const size_t element_bytes = kind == KIND_F32 ? 4 : 2;
    const size_t step_bytes = (size_t)n_rows * 32 * element_bytes;
    __m256 acc[TILE_ROWS][TILE_TOKENS];
    for (int r = 0; r < n_rows; r++) {
        for (int t = 0; t < n_tokens; t++) {
            acc[r][t] = _mm256_setzero_ps();
        }
    }

    int64_t n_vector = n - n % 8;
    for (int64_t i = 0; i < n_vector; i += 8) {
        if (prefetch != NULL && i % 32 == 0) {
            quill_x86_prefetch_step(prefetch + (size_t)(i / 32) * step_bytes, step_bytes,
                                    (size_t)n_rows * weight_row_bytes);
        }
        __m256 w[TILE_ROWS];
        for (int r = 0; r < n_rows; r++) {
            w[r] = load_weights8(kind, weights + (size_t)r * weight_row_bytes, i);
        }
        for (int t = 0; t < n_tokens; t++) {
            const float *x_row = (const float *)(activations + (size_t)t * activation_row_bytes);
            __m256 x = _mm256_loadu_ps(x_row + i);
            for (int r = 0; r < n_rows; r++) {
                acc[r][t] = _mm256_fmadd_ps(w[r], x, acc[r][t]);
            }
        }
    }

    for (int r = 0; r < n_rows; r++) {
        const uint8_t *w_row = weights + (size_t)r * weight_row_bytes;
        for (int t = 0; t < n_tokens; t++) {
            const float *x_row = (const float *)(activations + (size_t)t * activation_row_bytes);
            float tail = 0.0f;
            for (int64_t i = n_vector; i < n; i++) {
                tail += load_weight1(kind, w_row, i) * x_row[i];
            }
            y[t * y_stride + r] = quill_x86_hsum(acc[r][t]) + tail;
        }
    }
}

QUILL_X86_INLINE void gemm_float(int kind, int64_t n, const void *weights, size_t weight_row_bytes,
                                 int64_t n_rows, const void *activations,
                                 size_t activation_row_bytes, int64_t n_tokens, float *y,
                                 int64_t y_stride) {
    for (int64_t row = 0; row < n_rows; row += TILE_ROWS) {
        const uint8_t *w = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
        int rows = n_rows - row < TILE_ROWS ? (int)(n_rows - row) : TILE_ROWS;
        for (int64_t token = 0; token < n_tokens; token += TILE_TOKENS) {
            const uint8_t *x = (const uint8_t *)activations + (size_t)token * activation_row_bytes;
            int tokens = n_tokens - token < TILE_TOKENS ? (int)(n_tokens - token) : TILE_TOKENS;
            float *y_tile = y + token * y_stride + row;
            if (rows == TILE_ROWS && tokens == TILE_TOKENS) {
                tile_float(kind, n, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes,
                           TILE_TOKENS, y_tile, y_stride, NULL);
            } else if (rows == TILE_ROWS && tokens == 1) {
                /* Decode reads each tile once, straight from memory. */
                const uint8_t *next = n_tokens == 1 ? w + 2 * TILE_ROWS * weight_row_bytes : NULL;
                tile_float(kind, n, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes, 1,
                           y_tile, y_stride, next);
            } else {
                tile_float(kind, n, w, weight_row_bytes, rows, x, activation_row_bytes, tokens,
                           y_tile, y_stride, NULL);
            }
        }
    }
}

#define QUILL_DEFINE_FLOAT(kind, stem)                                                             \
    float QUILL_X86_NAME(quill__dot_##stem)(int64_t n, const void *weights,                        \
                                            const void *activations) {                             \
        float result;                                                                              \
        tile_float(kind, n, weights, 0, 1, activations, 0, 1, &result, 0, NULL);                   \
        return result;                                                                             \
    }                                                                                              \
    void QUILL_X86_NAME(quill__gemm_##stem)(int64_t n, const void *weights,                        \
                                            size_t weight_row_bytes, int64_t n_rows,               \
                                            const void *activations, size_t activation_row_bytes,  \
                                            int64_t n_tokens, float *y, int64_t y_stride) {        \
        gemm_float(kind, n, weights, weight_row_bytes, n_rows, activations, activation_row_bytes,  \
                   n_tokens, y, y_stride);                                                         \
    }

QUILL_DEFINE_FLOAT(KIND_F32, f32_f32)
QUILL_DEFINE_FLOAT(KIND_F16, f16_f32)
QUILL_DEFINE_FLOAT(KIND_BF16, bf16_f32)
