/*
 * The AArch64 NEON kernels: the same contracts as the reference kernels of the same stem
 * (ref/kernels_ref.h). NEON is part of every AArch64 CPU, so the variant needs no run-time
 * check. Only instructions of the ARMv8.0 base set are used (no dot-product extension), so
 * every AArch64 CPU runs them. Stateless: safe from any thread.
 */
#ifndef QUILL_KERNELS_NEON_H
#define QUILL_KERNELS_NEON_H

#include <stdint.h>

float quill__dot_f32_f32_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_f16_f32_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q4_0_q8_0_neon(int64_t n, const void *weights, const void *activations);
float quill__dot_q8_0_q8_0_neon(int64_t n, const void *weights, const void *activations);

#endif
