/*
 * The scalar reference kernels, written for clarity; every ISA variant is tested against them.
 * Row functions take n elements, a multiple of the type's block size (checked by the callers in
 * dispatch.c). Stateless: safe from any thread.
 */
#ifndef QUILL_KERNELS_REF_H
#define QUILL_KERNELS_REF_H

#include <stdint.h>

/* Plain types (fp16.c). */
void quill__dequantize_f32_ref(const void *src, float *dst, int64_t n);
void quill__quantize_f32_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_f16_ref(const void *src, float *dst, int64_t n);
void quill__quantize_f16_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_bf16_ref(const void *src, float *dst, int64_t n);
void quill__quantize_bf16_ref(const float *src, void *dst, int64_t n);

/* The 8-bit activation types (quant_q8.c). */
void quill__dequantize_q8_0_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q8_0_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_q8_1_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q8_1_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_q8_k_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q8_k_ref(const float *src, void *dst, int64_t n);

/* The legacy 4- and 5-bit types (quant_q4_q5.c). */
void quill__dequantize_q4_0_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q4_0_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_q4_1_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q4_1_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_q5_0_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q5_0_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_q5_1_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q5_1_ref(const float *src, void *dst, int64_t n);

/* The K-quants (quant_k.c), with the scale searches of quant_k_search.c. */
void quill__dequantize_q4_k_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q4_k_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_q5_k_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q5_k_ref(const float *src, void *dst, int64_t n);
void quill__dequantize_q6_k_ref(const void *src, float *dst, int64_t n);
void quill__quantize_q6_k_ref(const float *src, void *dst, int64_t n);

/* Fits w ~ scale * L - min over n values with L in [0, n_max] minimizing the weighted squared
 * error, as ggml's make_qkx2_quants: a first guess from the range, then n_steps + 1 trial
 * scales (n_max + range_min + range_step * i) / (max - min), each refined by least squares.
 * Stores the levels in levels[n], uses levels_trial[n] as scratch, stores min (>= 0) and
 * returns scale. */
float quill__fit_scale_min(int n, int n_max, const float *x, const float *weights, uint8_t *levels,
                           float *min, uint8_t *levels_trial, float range_min, float range_step,
                           int n_steps);

/* Fits w ~ scale * (L - n_max) with L in [0, 2 n_max - 1], weighting each value by x^2, as
 * ggml's make_qx_quants with rmse_type 1: the symmetric guess -n_max / max and 18 trial scales
 * around it, keeping the one with the best least-squares fit. Stores the levels in levels[n]
 * and returns scale (0 for an all-zero group). */
float quill__fit_scale_symmetric(int n, int n_max, const float *x, int8_t *levels);

/* Dot products of one weight row and one activation row (dot_float.c, dot_q4_q5_q8.c,
 * dot_k.c): the weight type first, then the activation type. */
float quill__dot_f32_f32_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_f16_f32_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_bf16_f32_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q4_0_q8_0_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q4_1_q8_1_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q5_0_q8_0_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q5_1_q8_1_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q8_0_q8_0_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q4_k_q8_k_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q5_k_q8_k_ref(int64_t n, const void *weights, const void *activations);
float quill__dot_q6_k_q8_k_ref(int64_t n, const void *weights, const void *activations);

#endif
