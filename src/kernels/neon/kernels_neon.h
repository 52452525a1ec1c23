/*
 * The AArch64 NEON kernels: the same contracts as the reference kernels of the same stem
 * (ref/kernels_ref.h). NEON is part of every AArch64 CPU, so the variant needs no run-time
 * check. The code uses the ARMv8.0 base set, so every AArch64 CPU runs it, except the packed
 * tiles of gemm_packed_dotprod.c, which use SDOT and which the table takes only where the CPU
 * reports it (Linux HWCAP_ASIMDDP). Both paths give the same results. No SVE. Every weight
 * type with a dot product has a NEON version: dot_float.c (F32, F16, BF16), dot_q4_q5_q8.c (Q4_0,
 * Q4_1, Q5_0, Q5_1, Q8_0) and dot_k.c (Q4_K, Q5_K, Q6_K). quant_q8.c quantizes activations and
 * gemm_packed.c multiplies packed Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights.
 * attention.c is the NEON variant of quill__attention_heads. Stateless: safe from any thread.
 */
#ifndef QUILL_KERNELS_NEON_H
#define QUILL_KERNELS_NEON_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

float quill__dot_f32_f32_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_f16_f32_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_bf16_f32_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q4_0_q8_0_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q4_1_q8_1_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q5_0_q8_0_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q5_1_q8_1_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q8_0_q8_0_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q4_k_q8_k_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q5_k_q8_k_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q6_k_q8_k_neon(int64_t n, const void *weights, const void *activations);

/* Activation quantizers, bit-identical to the reference ones (quant_q8.c). */
void quill__quantize_q8_0_neon(const float *src, void *dst, int64_t n);
void quill__quantize_q8_1_neon(const float *src, void *dst, int64_t n);
void quill__quantize_q8_k_neon(const float *src, void *dst, int64_t n);

/* Tiles of packed weights (kernels/packed.h, quill_kernel_type_ops.gemm_packed; gemm_packed.c),
 * bit-identical to the vec_dot of the same type on the unpacked rows. */
void quill__gemm_packed_q4_0_q8_0_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);
void quill__gemm_packed_q4_1_q8_1_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);
void quill__gemm_packed_q5_0_q8_0_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);
void quill__gemm_packed_q5_1_q8_1_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);
void quill__gemm_packed_q8_0_q8_0_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);
void quill__gemm_packed_q4_k_q8_k_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);
void quill__gemm_packed_q5_k_q8_k_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);
void quill__gemm_packed_q6_k_q8_k_neon(int64_t n, const void *weights, size_t weight_row_bytes,
                                       int64_t n_rows, const void *activations,
                                       size_t activation_row_bytes, int64_t n_tokens, float *y,
                                       int64_t y_stride);

/* The same tiles built for the dot-product extension (gemm_packed_dotprod.c), with the same
 * results. Call only on CPUs that have SDOT. */
void quill__gemm_packed_q4_0_q8_0_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);
void quill__gemm_packed_q4_1_q8_1_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);
void quill__gemm_packed_q5_0_q8_0_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);
void quill__gemm_packed_q5_1_q8_1_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);
void quill__gemm_packed_q8_0_q8_0_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);
void quill__gemm_packed_q4_k_q8_k_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);
void quill__gemm_packed_q5_k_q8_k_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);
void quill__gemm_packed_q6_k_q8_k_neon_dotprod(int64_t n, const void *weights,
                                               size_t weight_row_bytes, int64_t n_rows,
                                               const void *activations, size_t activation_row_bytes,
                                               int64_t n_tokens, float *y, int64_t y_stride);

/* The NEON variants of quill__attention_heads and quill__attention_head (ops.h, attention.c),
 * which ops.c selects when the dispatch table is the NEON one. Same arguments and limits as the
 * reference variants: 1 <= n_heads <= QUILL_ATTENTION_MAX_HEADS. */
void quill__attention_heads_neon(const float *q, int32_t n_heads, int64_t q_stride,
                                 int32_t head_dim, const quill_attention_keys *keys, int64_t n_keys,
                                 float scale, float *scores, float *out, int64_t out_stride);
void quill__attention_head_neon(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                                int64_t n_keys, float scale, float *scores, float *out);

#endif
