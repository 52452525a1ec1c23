/*
 * The AVX512 kernels: the same contracts as the reference kernels of the same stem
 * (ref/kernels_ref.h), plus gemm tiles (quill_kernel_gemm_fn in dispatch.h) whose per-(row,
 * token) results equal the type's vec_dot bit for bit. Call only on CPUs with the features
 * that dispatch.c checks. Stateless: safe from any thread.
 */
#ifndef QUILL_KERNELS_AVX512_H
#define QUILL_KERNELS_AVX512_H

#include <stddef.h>
#include <stdint.h>

float quill__dot_f32_f32_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_f32_f32_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                int64_t n_rows, const void *activations,
                                size_t activation_row_bytes, int64_t n_tokens, float *y,
                                int64_t y_stride);
float quill__dot_f16_f32_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_f16_f32_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                int64_t n_rows, const void *activations,
                                size_t activation_row_bytes, int64_t n_tokens, float *y,
                                int64_t y_stride);
float quill__dot_bf16_f32_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_bf16_f32_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                 int64_t n_rows, const void *activations,
                                 size_t activation_row_bytes, int64_t n_tokens, float *y,
                                 int64_t y_stride);
/* BF16 rows with the AVX512_BF16 dot instruction: f32 activations rounded to bf16 (dot_bf16.c).
 * Call only on CPUs that also have AVX512_BF16. */
float quill__dot_bf16_f32_avx512bf16(int64_t n, const void *weights, const void *activations);
void quill__gemm_bf16_f32_avx512bf16(int64_t n, const void *weights, size_t weight_row_bytes,
                                     int64_t n_rows, const void *activations,
                                     size_t activation_row_bytes, int64_t n_tokens, float *y,
                                     int64_t y_stride);
float quill__dot_q4_0_q8_0_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q4_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
float quill__dot_q4_1_q8_1_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q4_1_q8_1_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
float quill__dot_q5_0_q8_0_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q5_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
float quill__dot_q5_1_q8_1_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q5_1_q8_1_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
float quill__dot_q8_0_q8_0_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q8_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
float quill__dot_q4_k_q8_k_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q4_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
float quill__dot_q5_k_q8_k_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q5_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
float quill__dot_q6_k_q8_k_avx512(int64_t n, const void *weights, const void *activations);
void quill__gemm_q6_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                  int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride);
/* Tiles of packed weights (kernels/packed.h, quill_kernel_type_ops.gemm_packed). */
void quill__gemm_packed_q4_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
void quill__gemm_packed_q8_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
void quill__gemm_packed_q4_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
/* Tiles of packed Q5_K (gemm_packed.c) and Q6_K (gemm_packed_q6_k.c) weights. */
void quill__gemm_packed_q5_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
void quill__gemm_packed_q6_k_q8_k_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
/* Tiles of packed Q4_1, Q5_0 and Q5_1 weights (gemm_packed_q4_1_q5.c). */
void quill__gemm_packed_q4_1_q8_1_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
void quill__gemm_packed_q5_0_q8_0_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
void quill__gemm_packed_q5_1_q8_1_avx512(int64_t n, const void *weights, size_t weight_row_bytes,
                                         int64_t n_rows, const void *activations,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride);
void quill__quantize_q8_0_avx512(const float *src, void *dst, int64_t n);
void quill__quantize_q8_1_avx512(const float *src, void *dst, int64_t n);
void quill__quantize_q8_k_avx512(const float *src, void *dst, int64_t n);

/* Row conversions of the half-precision types (fp16.c). */
void quill__dequantize_f16_avx512(const void *src, float *dst, int64_t n);
void quill__quantize_f16_avx512(const float *src, void *dst, int64_t n);
void quill__dequantize_bf16_avx512(const void *src, float *dst, int64_t n);
void quill__quantize_bf16_avx512(const float *src, void *dst, int64_t n);

#endif
