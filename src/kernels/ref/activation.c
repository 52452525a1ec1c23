/*
 * The SwiGLU gate (SiLU of the gate times the up projection) and the residual add, as ggml's
 * ggml_silu_f32 and ggml_vec_add_f32. Stateless.
 */
#include "kernels/ops.h"

#include <math.h>

void quill__silu_mul_ref(const float *gate, const float *up, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}

void quill__vec_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] += x[i];
    }
}
