/*
 * Rotary position embedding. The angles follow ggml's rope cache (ggml-cpu ops.cpp,
 * ggml_rope_cache_init without YaRN): theta starts at the position and is multiplied by
 * freq_base^(-2/n_rot) once per pair in f32, and frequency factors divide it. Stateless.
 */
#include "kernels/ops.h"

#include <math.h>

void quill__rope_angles(int64_t position, int32_t n_rot, float freq_base, const float *freq_factors,
                        float *cos_sin) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta = (float)position;
    for (int32_t i = 0; i < n_rot / 2; i++) {
        float factor = freq_factors != NULL ? freq_factors[i] : 1.0f;
        float angle = theta / factor;
        cos_sin[2 * i] = cosf(angle);
        cos_sin[2 * i + 1] = sinf(angle);
        theta *= theta_scale;
    }
}

void quill__rope_apply(float *x, int32_t n_heads, int32_t head_dim, int32_t n_rot,
                       quill_rope_mode mode, const float *cos_sin) {
    /* Pair i is (x[2i], x[2i+1]) in the normal layout and (x[i], x[i + n_rot/2]) in NeoX. */
    const int32_t n_pairs = n_rot / 2;
    const int32_t first_stride = mode == QUILL_ROPE_MODE_NEOX ? 1 : 2;
    const int32_t partner_offset = mode == QUILL_ROPE_MODE_NEOX ? n_pairs : 1;
    for (int32_t head = 0; head < n_heads; head++) {
        float *v = x + (int64_t)head * head_dim;
        for (int32_t i = 0; i < n_pairs; i++) {
            float cos_theta = cos_sin[2 * i];
            float sin_theta = cos_sin[2 * i + 1];
            int32_t first = i * first_stride;
            float x0 = v[first];
            float x1 = v[first + partner_offset];
            v[first] = x0 * cos_theta - x1 * sin_theta;
            v[first + partner_offset] = x0 * sin_theta + x1 * cos_theta;
        }
    }
}
