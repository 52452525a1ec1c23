/*
 * Kernel entry points used by the model: number conversions, row quantization, dot products and
 * matrix multiplication over every supported tensor type. Each call goes through the dispatch
 * table (scalar reference or an ISA variant chosen once at start-up). Stateless: safe from any
 * thread; quill__matmul splits its work over the pool it is given.
 */
#ifndef QUILL_KERNELS_H
#define QUILL_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/threadpool.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

/* Detects the CPU's features and selects the kernel variant, once per process (later calls
 * only repeat the outcome). Returns QUILL_OK; or QUILL_ERR_UNSUPPORTED when QUILL_KERNELS forces
 * a variant this CPU or build cannot run, or QUILL_ERR_INVALID_ARG for an unknown name, with a
 * message listing the available variants. After a failure the kernels use the scalar reference,
 * so callers may continue, but the CLI and server should report the error and stop. Safe from
 * any thread. */
quill_status quill__kernels_init(void);

/* Returns the name of the selected variant: "ref", "avx2", "avx512" or "neon". Borrowed: static
 * string. */
const char *quill__kernels_variant_name(void);

/* IEEE half and bfloat16 conversions (round to nearest even on the way down). */
float quill__fp16_to_fp32(uint16_t value);
uint16_t quill__fp32_to_fp16(float value);
float quill__bf16_to_fp32(uint16_t value);
uint16_t quill__fp32_to_bf16(float value);

/* Converts n elements of a row of `type` to f32. n must be a multiple of the block size.
 * Returns QUILL_ERR_UNSUPPORTED for types without kernels. */
quill_status quill__dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);

/* Quantizes n f32 values (a multiple of the block size) into a row of `type`, choosing scales
 * as llama.cpp's reference quantizers do. Supported for every type with kernels, including the
 * activation types Q8_0, Q8_1 and Q8_K. */
quill_status quill__quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* The type that activations are quantized to before a dot product with a weight row of
 * weight_type: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F32 for
 * F32/F16/BF16 weights. */
uint32_t quill__vec_dot_type(uint32_t weight_type);

/* Dot product of n elements: one weight row of weight_type with one activation row already in
 * quill__vec_dot_type(weight_type). */
float quill__vec_dot(uint32_t weight_type, int64_t n, const void *weight_row,
                     const void *activation_row);

/* A weight matrix in the mapping: n_rows rows of n_cols elements, each row_bytes long. */
typedef struct quill_matrix {
    uint32_t type;     /* quill_type */
    int64_t n_rows;    /* output features */
    int64_t n_cols;    /* input features, a multiple of the type's block size */
    const void *data;  /* [n_rows][row_bytes] */
    size_t row_bytes;  /* bytes per row */
    bool is_packed;    /* rows interleaved in groups of 8 (kernels/packed.h) */
} quill_matrix;

/* Returns true when the selected kernels multiply weights of `type` in the packed row-group
 * layout (kernels/packed.h) and n_rows is a whole number of groups. */
bool quill__matrix_wants_packing(uint32_t type, int64_t n_rows);

/* Repacks a matrix for which quill__matrix_wants_packing holds, in place: its data must be
 * writable and is then no longer in the original row layout. Sets is_packed. Returns
 * QUILL_ERR_NOMEM when the one-group scratch cannot be allocated (the matrix is unchanged). */
quill_status quill__matrix_pack(quill_matrix *matrix);

/* Converts row `row` of a matrix, packed or not, to f32 (n_cols values into dst). */
quill_status quill__matrix_dequantize_row(const quill_matrix *matrix, int64_t row, float *dst);

/* Bytes of scratch that quill__matmul needs for n_tokens activation rows (their quantized
 * copies). */
size_t quill__matmul_scratch_bytes(const quill_matrix *weights, int64_t n_tokens);

/* y[t][r] = dot(W[r], x[t]) for t < n_tokens, r < n_rows.
 * x: f32 [n_tokens][x_stride], first n_cols used; y: f32 [n_tokens][y_stride], first n_rows
 * written. scratch: quill__matmul_scratch_bytes bytes, 64-byte aligned.
 * Batch-invariant: y[t] is bit-identical whatever n_tokens is and whichever thread computes it.
 * A weight type without a dot product, or n_cols not a multiple of its block size, writes NaN to
 * every output. */
void quill__matmul(quill_threadpool *pool, const quill_matrix *weights, const float *x,
                   int64_t x_stride, int64_t n_tokens, float *y, int64_t y_stride, void *scratch);

/* The two halves of quill__matmul, for callers that run several matrices in one pool run
 * (Q, K and V, or gate and up, over the same activations): prepare once on one thread, then
 * any threads compute disjoint row ranges of any matrices that share the activations.
 *
 * quill__matmul_prepare quantizes the n_tokens activation rows of x (f32 [n_tokens][x_stride],
 * first n_cols used) into scratch (quill__matmul_scratch_bytes(weights, n_tokens) bytes, 64-byte
 * aligned) on the calling thread; for types whose activations stay f32 (F32, F16, BF16) it
 * writes nothing. Matrices with the same quill__vec_dot_type and n_cols share one prepared
 * scratch. Weights without a dot product are a no-op here and give NaN in quill__matmul_rows.
 *
 * quill__matmul_rows computes y[t][r] for t < n_tokens and r in [row_begin, row_end) (clamped
 * to [0, n_rows)) on the calling thread, reading x and the prepared scratch; both must stay
 * unchanged while any thread computes. The values equal quill__matmul's bit for bit, whatever
 * the ranges. */
void quill__matmul_prepare(const quill_matrix *weights, const float *x, int64_t x_stride,
                           int64_t n_tokens, void *scratch);
void quill__matmul_rows(const quill_matrix *weights, const float *x, int64_t x_stride,
                        int64_t n_tokens, const void *scratch, int64_t row_begin, int64_t row_end,
                        float *y, int64_t y_stride);

#endif
