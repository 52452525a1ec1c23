/*
 * AVX2 + FMA + F16C variant of quill__attention_head (ops.h): the same chunked online softmax
 * as the reference, with 8-wide dot products (F16 rows widened by vcvtph2ps) and 8-wide
 * accumulation of V rows. Each dot product sums eight lanes and then reduces them in a fixed
 * order, so results differ from the reference in the last bits but never between calls.
 * Call only on CPUs with AVX2, FMA and F16C. Stateless.
 */
#include "kernels/ops.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#include "quill/tensor_type.h"

/* Sum of the eight lanes: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two. */
static inline float horizontal_sum(__m256 v) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

static inline float dot_row(const float *q, const uint8_t *row, uint32_t type, int32_t head_dim) {
    __m256 acc = _mm256_setzero_ps();
    int32_t i = 0;
    float tail = 0.0f;
    if (type == QUILL_TYPE_F32) {
        const float *k = (const float *)row;
        for (; i + 8 <= head_dim; i += 8) {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
        }
        for (; i < head_dim; i++) {
            tail += q[i] * k[i];
        }
        return horizontal_sum(acc) + tail;
    }
    const uint16_t *k = (const uint16_t *)row;
    for (; i + 8 <= head_dim; i += 8) {
        __m256 keys = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i)));
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), keys, acc);
    }
    for (; i < head_dim; i++) {
        tail += q[i] * _cvtsh_ss(k[i]);
    }
    return horizontal_sum(acc) + tail;
}

static inline void add_scaled_row(float *out, float weight, const uint8_t *row, uint32_t type,
                                  int32_t head_dim) {
    const __m256 w = _mm256_set1_ps(weight);
    int32_t i = 0;
    if (type == QUILL_TYPE_F32) {
        const float *v = (const float *)row;
        for (; i + 8 <= head_dim; i += 8) {
            _mm256_storeu_ps(out + i,
                             _mm256_fmadd_ps(w, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
        }
        for (; i < head_dim; i++) {
            out[i] += weight * v[i];
        }
        return;
    }
    const uint16_t *v = (const uint16_t *)row;
    for (; i + 8 <= head_dim; i += 8) {
        __m256 values = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(w, values, _mm256_loadu_ps(out + i)));
    }
    for (; i < head_dim; i++) {
        out[i] += weight * _cvtsh_ss(v[i]);
    }
}

static inline void scale_row(float *out, float factor, int32_t head_dim) {
    const __m256 f = _mm256_set1_ps(factor);
    int32_t i = 0;
    for (; i + 8 <= head_dim; i += 8) {
        _mm256_storeu_ps(out + i, _mm256_mul_ps(f, _mm256_loadu_ps(out + i)));
    }
    for (; i < head_dim; i++) {
        out[i] *= factor;
    }
}

/* Scores of four consecutive F16 keys, computed side by side. Each score takes dot_row's
 * operations in its order (one 8-lane accumulator over the head, horizontal_sum, the zero
 * tail), so its bits equal dot_row's. head_dim must be a multiple of 8. */
static inline void dot_rows_f16_x4(const float *q, const uint8_t *row, size_t row_bytes,
                                   int32_t head_dim, float scale, float *scores) {
    const uint16_t *k0 = (const uint16_t *)row;
    const uint16_t *k1 = (const uint16_t *)(row + row_bytes);
    const uint16_t *k2 = (const uint16_t *)(row + 2 * row_bytes);
    const uint16_t *k3 = (const uint16_t *)(row + 3 * row_bytes);
    __m256 acc0 = _mm256_setzero_ps();
    __m256 acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps();
    __m256 acc3 = _mm256_setzero_ps();
    for (int32_t i = 0; i < head_dim; i += 8) {
        __m256 query = _mm256_loadu_ps(q + i);
        acc0 = _mm256_fmadd_ps(query, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k0 + i))),
                               acc0);
        acc1 = _mm256_fmadd_ps(query, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k1 + i))),
                               acc1);
        acc2 = _mm256_fmadd_ps(query, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k2 + i))),
                               acc2);
        acc3 = _mm256_fmadd_ps(query, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k3 + i))),
                               acc3);
    }
    const float tail = 0.0f;
    scores[0] = scale * (horizontal_sum(acc0) + tail);
    scores[1] = scale * (horizontal_sum(acc1) + tail);
    scores[2] = scale * (horizontal_sum(acc2) + tail);
    scores[3] = scale * (horizontal_sum(acc3) + tail);
}

/* out += sum_j weights[j] * V row j over n rows of F16 values, for a head of n_vectors * 8
 * elements held in registers across the rows. Each element gets add_scaled_row's fused
 * multiply-adds in the same row order, so the bits match calling it row by row. */
static inline void add_scaled_rows_f16(float *out, const float *weights, const uint8_t *row,
                                       size_t row_bytes, int64_t n, const int n_vectors) {
    __m256 acc[16];
    for (int b = 0; b < n_vectors; b++) {
        acc[b] = _mm256_loadu_ps(out + 8 * b);
    }
    for (int64_t j = 0; j < n; j++) {
        const uint16_t *v = (const uint16_t *)(row + (size_t)j * row_bytes);
        const __m256 w = _mm256_set1_ps(weights[j]);
        for (int b = 0; b < n_vectors; b++) {
            __m256 values = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + 8 * b)));
            acc[b] = _mm256_fmadd_ps(w, values, acc[b]);
        }
    }
    for (int b = 0; b < n_vectors; b++) {
        _mm256_storeu_ps(out + 8 * b, acc[b]);
    }
}

void quill__attention_head_avx2(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                                int64_t n_keys, float scale, float *scores, float *out) {
    for (int32_t i = 0; i < head_dim; i++) {
        out[i] = 0.0f;
    }
    float running_max = -INFINITY;
    float running_sum = 0.0f;

    int64_t position = 0;
    while (position < n_keys) {
        /* The chunk: keys [position, end) inside one block. */
        int64_t block_index = position / keys->block_tokens;
        int64_t slot = position % keys->block_tokens;
        int64_t end = (block_index + 1) * keys->block_tokens;
        if (end > position + QUILL_ATTENTION_CHUNK) {
            end = position + QUILL_ATTENTION_CHUNK;
        }
        if (end > n_keys) {
            end = n_keys;
        }
        int64_t n_chunk = end - position;
        size_t block_offset = (size_t)keys->blocks[block_index] * keys->block_stride_bytes;
        const uint8_t *k_row = keys->k_data + block_offset + (size_t)slot * keys->row_bytes;
        const uint8_t *v_row = keys->v_data + block_offset + (size_t)slot * keys->row_bytes;

        /* Scaled scores and their max. */
        const bool is_f16_x8 = keys->type == QUILL_TYPE_F16 && head_dim % 8 == 0;
        int64_t j = 0;
        if (is_f16_x8) {
            for (; j + 4 <= n_chunk; j += 4) {
                dot_rows_f16_x4(q, k_row + (size_t)j * keys->row_bytes, keys->row_bytes, head_dim,
                                scale, scores + j);
            }
        }
        for (; j < n_chunk; j++) {
            scores[j] =
                scale * dot_row(q, k_row + (size_t)j * keys->row_bytes, keys->type, head_dim);
        }
        float chunk_max = -INFINITY;
        for (j = 0; j < n_chunk; j++) {
            chunk_max = scores[j] > chunk_max ? scores[j] : chunk_max;
        }

        /* Rescale what was accumulated under the old max, then add this chunk. */
        if (chunk_max > running_max) {
            float correction = expf(running_max - chunk_max);
            running_sum *= correction;
            scale_row(out, correction, head_dim);
            running_max = chunk_max;
        }
        if (is_f16_x8 && (head_dim == 64 || head_dim == 128)) {
            /* Weights first (the running sum in key order), then V with the head in
             * registers. */
            for (j = 0; j < n_chunk; j++) {
                scores[j] = expf(scores[j] - running_max);
                running_sum += scores[j];
            }
            if (head_dim == 64) {
                add_scaled_rows_f16(out, scores, v_row, keys->row_bytes, n_chunk, 8);
            } else {
                add_scaled_rows_f16(out, scores, v_row, keys->row_bytes, n_chunk, 16);
            }
            position = end;
            continue;
        }
        for (j = 0; j < n_chunk; j++) {
            float weight = expf(scores[j] - running_max);
            running_sum += weight;
            add_scaled_row(out, weight, v_row + (size_t)j * keys->row_bytes, keys->type, head_dim);
        }
        position = end;
    }

    if (running_sum > 0.0f) {
        scale_row(out, 1.0f / running_sum, head_dim);
    }
}
