/*
 * The scale searches behind the K-quant quantizers, following llama.cpp's make_qkx2_quants
 * (asymmetric, used by Q4_K and Q5_K) and make_qx_quants (symmetric, used by Q6_K). Both try a
 * few scales near the naive one and keep the least-squares best, so that Quill's quantized
 * files and activations match llama.cpp's. Stateless.
 */
#include <math.h>

#include "kernels/blocks.h"
#include "kernels/ref/kernels_ref.h"

/* Values below this magnitude count as an all-zero group (ggml's GROUP_MAX_EPS). */
#define QUILL_GROUP_MAX_EPS 1e-15f

static int clamp_int(int value, int low, int high) {
    if (value < low) {
        return low;
    }
    return value > high ? high : value;
}

/* Returns the weighted squared error of x ~ scale * levels + offset. */
static float fit_error(int n, const float *x, const float *weights, const uint8_t *levels,
                       float scale, float offset) {
    float error = 0.0f;
    for (int i = 0; i < n; i++) {
        float diff = scale * (float)levels[i] + offset - x[i];
        error += weights[i] * (diff * diff);
    }
    return error;
}

float quill__fit_scale_min(int n, int n_max, const float *x, const float *weights, uint8_t *levels,
                           float *min_out, uint8_t *levels_trial, float range_min, float range_step,
                           int n_steps) {
    /* Range, weight total and weighted sum; the offset never goes above zero. */
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) {
            min = x[i];
        }
        if (x[i] > max) {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if (min > 0.0f) {
        min = 0.0f;
    }
    if (max == min) {
        memset(levels, 0, (size_t)n);
        *min_out = -min;
        return 0.0f;
    }

    /* First guess: spread [min, max] over the n_max + 1 levels. */
    float inverse = (float)n_max / (max - min);
    float scale = 1.0f / inverse;
    for (int i = 0; i < n; i++) {
        levels[i] = (uint8_t)clamp_int(quill__nearest_int(inverse * (x[i] - min)), 0, n_max);
    }
    float best_error = fit_error(n, x, weights, levels, scale, min);

    /* Trial scales: round with each, then fit scale and offset by weighted least squares. */
    for (int step = 0; step <= n_steps; step++) {
        inverse = (range_min + range_step * (float)step + (float)n_max) / (max - min);
        float sum_l = 0.0f;
        float sum_l2 = 0.0f;
        float sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            int level = clamp_int(quill__nearest_int(inverse * (x[i] - min)), 0, n_max);
            levels_trial[i] = (uint8_t)level;
            sum_l += weights[i] * (float)level;
            sum_l2 += weights[i] * (float)level * (float)level;
            sum_xl += weights[i] * (float)level * x[i];
        }
        float determinant = sum_w * sum_l2 - sum_l * sum_l;
        if (!(determinant > 0.0f)) {
            continue;
        }
        float trial_scale = (sum_w * sum_xl - sum_x * sum_l) / determinant;
        float trial_min = (sum_l2 * sum_x - sum_l * sum_xl) / determinant;
        if (trial_min > 0.0f) {
            trial_min = 0.0f;
            trial_scale = sum_xl / sum_l2;
        }
        float trial_error = fit_error(n, x, weights, levels_trial, trial_scale, trial_min);
        if (trial_error < best_error) {
            memcpy(levels, levels_trial, (size_t)n);
            best_error = trial_error;
            scale = trial_scale;
            min = trial_min;
        }
    }
    *min_out = -min;
    return scale;
}

/* Stores round(inverse * x) clamped to [-n_max, n_max - 1] for each value and accumulates the
 * x^2-weighted sums sum(w x l) and sum(w l^2). */
static void round_symmetric(int n, int n_max, const float *x, float inverse, int8_t *levels,
                            float *sum_xl, float *sum_l2) {
    *sum_xl = 0.0f;
    *sum_l2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int level = clamp_int(quill__nearest_int(inverse * x[i]), -n_max, n_max - 1);
        float weight = x[i] * x[i];
        if (levels != NULL) {
            levels[i] = (int8_t)(level + n_max);
        }
        *sum_xl += weight * x[i] * (float)level;
        *sum_l2 += weight * (float)level * (float)level;
    }
}

float quill__fit_scale_symmetric(int n, int n_max, const float *x, int8_t *levels) {
    /* The value of largest magnitude maps to level -n_max. */
    float max = 0.0f;
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float magnitude = fabsf(x[i]);
        if (magnitude > amax) {
            amax = magnitude;
            max = x[i];
        }
    }
    if (amax < QUILL_GROUP_MAX_EPS) {
        memset(levels, 0, (size_t)n);
        return 0.0f;
    }

    float sum_xl;
    float sum_l2;
    round_symmetric(n, n_max, x, -(float)n_max / max, levels, &sum_xl, &sum_l2);
    float scale = sum_l2 != 0.0f ? sum_xl / sum_l2 : 0.0f;
    float best = scale * sum_xl;

    /* Nudge the inverse scale by tenths of a level and keep the best least-squares fit, which
     * maximizes sum_xl^2 / sum_l2. */
    for (int step = -9; step <= 9; step++) {
        if (step == 0) {
            continue;
        }
        float inverse = -((float)n_max + 0.1f * (float)step) / max;
        round_symmetric(n, n_max, x, inverse, NULL, &sum_xl, &sum_l2);
        if (sum_l2 > 0.0f && sum_xl * sum_xl > best * sum_l2) {
            round_symmetric(n, n_max, x, inverse, levels, &sum_xl, &sum_l2);
            scale = sum_xl / sum_l2;
            best = scale * sum_xl;
        }
    }
    return scale;
}
