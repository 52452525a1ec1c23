/*
 * RMSNorm, as ggml_compute_forward_rms_norm_f32 followed by the weight multiply: the sum of
 * squares is accumulated in double, the scale is computed in f32. Stateless.
 */
#include "kernels/ops.h"

#include <math.h>

void quill__rms_norm(const float *x, const float *weight, float *y, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += (double)(x[i] * x[i]);
    }
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);

    if (weight == NULL) {
        for (int64_t i = 0; i < n; i++) {
            y[i] = x[i] * scale;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        y[i] = (x[i] * scale) * weight[i];
    }
}
