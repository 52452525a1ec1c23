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
        float chunk_max = -INFINITY;
        for (int64_t j = 0; j < n_chunk; j++) {
            scores[j] =
                scale * dot_row(q, k_row + (size_t)j * keys->row_bytes, keys->type, head_dim);
            chunk_max = scores[j] > chunk_max ? scores[j] : chunk_max;
        }

        /* Rescale what was accumulated under the old max, then add this chunk. */
        if (chunk_max > running_max) {
            float correction = expf(running_max - chunk_max);
            running_sum *= correction;
            scale_row(out, correction, head_dim);
            running_max = chunk_max;
        }
        for (int64_t j = 0; j < n_chunk; j++) {
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
