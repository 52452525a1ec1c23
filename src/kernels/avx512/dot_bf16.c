/*
 * BF16 weight rows against f32 activations with the AVX512_BF16 dot instruction (vdpbf16ps),
 * for CPUs that have it (dispatch.c checks). The instruction multiplies bf16 pairs into f32
 * lanes, 32 products per 512-bit instruction against 16 for an f32 FMA. The activations are
 * therefore rounded to bf16 (nearest even) as they are loaded, as llama.cpp rounds them for
 * BF16 weights. Each product then carries a relative error of at most 2^-9 against the f32
 * activation, the tolerance the SIMD kernel tests allow for this type.
 *
 * Per (row, token) pair: one 16-lane f32 accumulator, acc = dpbf16(acc, w[32i .. 32i + 31],
 * bf16(x[32i .. 32i + 31])) for i in order, the last partial step with the missing elements
 * loaded as zeros, then the two 8-lane halves added and reduced by quill_x86_hsum. Tiles compute
 * every pair with exactly these operations, so vec_dot (a 1 x 1 tile) and every tile shape give
 * bit-identical values.
 */
#include "kernels/avx512/kernels_avx512.h"

#define QUILL_X86_USE_VNNI 1
#include "kernels/avx2/x86_common.h"

/* Rows and tokens per register tile: 16 accumulators, 4 weight vectors and the converted
 * activations use 21-24 of the 32 vector registers. */
enum { TILE_ROWS = 4, TILE_TOKENS = 4 };

/* Elements per step: one 512-bit vector of bf16 weights. */
enum { STEP_ELEMENTS = 32 };

/* Loads up to 32 bf16 weights from element i (n_valid of them; the rest read as zero). */
QUILL_X86_INLINE __m512bh load_weights(const uint8_t *row, int64_t i, int n_valid) {
    const uint8_t *from = row + 2 * i;
    if (n_valid == STEP_ELEMENTS) {
        return (__m512bh)_mm512_loadu_si512((const void *)from);
    }
    __mmask32 mask = (__mmask32)((1ull << n_valid) - 1);
    return (__m512bh)_mm512_maskz_loadu_epi16(mask, (const void *)from);
}

/* Loads up to 32 f32 activations from element i and rounds them to bf16 (the missing elements
 * become zero). Element k of the result pairs with weight element k in vdpbf16ps. */
QUILL_X86_INLINE __m512bh load_activations(const float *x, int64_t i, int n_valid) {
    __m512 low;
    __m512 high;
    if (n_valid == STEP_ELEMENTS) {
        low = _mm512_loadu_ps(x + i);
        high = _mm512_loadu_ps(x + i + 16);
    } else {
        int n_low = n_valid < 16 ? n_valid : 16;
        int n_high = n_valid - n_low;
        low = _mm512_maskz_loadu_ps((__mmask16)((1u << n_low) - 1), x + i);
        high = _mm512_maskz_loadu_ps((__mmask16)((1u << n_high) - 1), x + i + 16);
    }
    /* The second operand fills elements 0-15, the first 16-31. */
    return _mm512_cvtne2ps_pbh(high, low);
}

/* Reduces one accumulator in a fixed order: low half plus high half, then quill_x86_hsum. */
QUILL_X86_INLINE float reduce(__m512 acc) {
    return quill_x86_hsum(
        _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1)));
}

/* Computes the pairs of rows [0, n_rows) x tokens [0, n_tokens). When prefetch is not NULL,
 * each step also prefetches the next tile's bytes from there (decode streams the weights from
 * memory once; see quill_x86_prefetch_step). Prefetching never changes a value. */
QUILL_X86_INLINE void tile_bf16(int64_t n, const uint8_t *weights, size_t weight_row_bytes,
                                int n_rows, const uint8_t *activations, size_t activation_row_bytes,
                                int n_tokens, float *y, int64_t y_stride, const uint8_t *prefetch) {
    const size_t step_bytes = (size_t)n_rows * STEP_ELEMENTS * 2;
    __m512 acc[TILE_ROWS][TILE_TOKENS];
    for (int r = 0; r < n_rows; r++) {
        for (int t = 0; t < n_tokens; t++) {
            acc[r][t] = _mm512_setzero_ps();
        }
    }

    for (int64_t i = 0; i < n; i += STEP_ELEMENTS) {
        int n_valid = n - i < STEP_ELEMENTS ? (int)(n - i) : STEP_ELEMENTS;
        if (prefetch != NULL) {
            quill_x86_prefetch_step(prefetch + (size_t)(i / STEP_ELEMENTS) * step_bytes,
                                    step_bytes, (size_t)n_rows * weight_row_bytes);
        }
        __m512bh w[TILE_ROWS];
        for (int r = 0; r < n_rows; r++) {
            w[r] = load_weights(weights + (size_t)r * weight_row_bytes, i, n_valid);
        }
        for (int t = 0; t < n_tokens; t++) {
            const float *x_row = (const float *)(activations + (size_t)t * activation_row_bytes);
            __m512bh x = load_activations(x_row, i, n_valid);
            for (int r = 0; r < n_rows; r++) {
                acc[r][t] = _mm512_dpbf16_ps(acc[r][t], w[r], x);
            }
        }
    }

    for (int r = 0; r < n_rows; r++) {
        for (int t = 0; t < n_tokens; t++) {
            y[t * y_stride + r] = reduce(acc[r][t]);
        }
    }
}

float quill__dot_bf16_f32_avx512bf16(int64_t n, const void *weights, const void *activations) {
    float result;
    tile_bf16(n, weights, 0, 1, activations, 0, 1, &result, 0, NULL);
    return result;
}

void quill__gemm_bf16_f32_avx512bf16(int64_t n, const void *weights, size_t weight_row_bytes,
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
            /* Constant shapes for the common cases, so that their loops unroll. */
            if (rows == TILE_ROWS && tokens == TILE_TOKENS) {
                tile_bf16(n, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes, TILE_TOKENS,
                          y_tile, y_stride, NULL);
            } else if (rows == TILE_ROWS && tokens == 1) {
                /* Decode reads each tile once, straight from memory: prefetch the tile 4 tiles
                 * ahead. 8192 x 2048, 1 thread (AMD EPYC): 19.7 GB/s without prefetch, 23.3 two
                 * tiles ahead, 24.6-26.2 four tiles ahead. */
                const uint8_t *next = n_tokens == 1 ? w + 4 * TILE_ROWS * weight_row_bytes : NULL;
                tile_bf16(n, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes, 1, y_tile,
                          y_stride, next);
            } else {
                tile_bf16(n, w, weight_row_bytes, rows, x, activation_row_bytes, tokens, y_tile,
                          y_stride, NULL);
            }
        }
    }
}
