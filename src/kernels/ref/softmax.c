/*
 * Softmax of one row in f32, with the sum taken in double as ggml_vec_soft_max_f32 does.
 * Stateless.
 */
#include "kernels/ops.h"

#include <math.h>

void quill__softmax(float *x, int64_t n) {
    if (n <= 0) {
        return;
    }
    float max = x[0];
    for (int64_t i = 1; i < n; i++) {
        max = x[i] > max ? x[i] : max;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    const float inverse = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) {
        x[i] *= inverse;
    }
}
