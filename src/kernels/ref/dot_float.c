/*
 * Dot products of F32, F16 and BF16 weight rows with f32 activations. One f32 accumulator,
 * summed in element order; the ISA variants use several lanes and differ by rounding only.
 * Stateless.
 */
#include "kernels/blocks.h"
#include "kernels/ref/kernels_ref.h"

float quill__dot_f32_f32_ref(int64_t n, const void *weights, const void *activations) {
    const uint8_t *w = weights;
    const float *x = activations;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        sum += quill__load_f32(w + 4 * i) * x[i];
    }
    return sum;
}

float quill__dot_f16_f32_ref(int64_t n, const void *weights, const void *activations) {
    const uint8_t *w = weights;
    const float *x = activations;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        sum += quill__load_fp16(w + 2 * i) * x[i];
    }
    return sum;
}

float quill__dot_bf16_f32_ref(int64_t n, const void *weights, const void *activations) {
    const uint8_t *w = weights;
    const float *x = activations;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        sum += quill__bf16_to_fp32((uint16_t)(w[2 * i] | (w[2 * i + 1] << 8))) * x[i];
    }
    return sum;
}
