/*
 * Attention of the query heads of one GQA group over a paged K/V history, with an online
 * softmax per head. Keys are visited in position order in chunks of QUILL_ATTENTION_CHUNK
 * positions (the last one shorter), which may span several blocks, and the heads take each chunk
 * one after another. A chunk's scores go to a small buffer, and the running max, sum and output
 * are rescaled when the max grows. All sums are f32 in position order, so the result does not
 * depend on the batch the query came in. F16 rows are widened through a table built once.
 */
#include "kernels/ops.h"

#include <math.h>
#include <pthread.h>

#include "kernels/kernels.h"
#include "quill/tensor_type.h"

static float fp16_table[1 << 16]; /* f32 value of each half bit pattern; written once */
static pthread_once_t fp16_table_once = PTHREAD_ONCE_INIT;

static void build_fp16_table(void) {
    for (uint32_t bits = 0; bits < (1u << 16); bits++) {
        fp16_table[bits] = quill__fp16_to_fp32((uint16_t)bits);
    }
}

/* Dot product of q with one stored row, in index order. */
static float dot_row(const float *q, const uint8_t *row, uint32_t type, int32_t head_dim) {
    float sum = 0.0f;
    if (type == QUILL_TYPE_F32) {
        const float *k = (const float *)row;
        for (int32_t i = 0; i < head_dim; i++) {
            sum += q[i] * k[i];
        }
        return sum;
    }
    const uint16_t *k = (const uint16_t *)row;
    for (int32_t i = 0; i < head_dim; i++) {
        sum += q[i] * fp16_table[k[i]];
    }
    return sum;
}

/* out[i] += weight * v[i]. */
static void add_scaled_row(float *out, float weight, const uint8_t *row, uint32_t type,
                           int32_t head_dim) {
    if (type == QUILL_TYPE_F32) {
        const float *v = (const float *)row;
        for (int32_t i = 0; i < head_dim; i++) {
            out[i] += weight * v[i];
        }
        return;
    }
    const uint16_t *v = (const uint16_t *)row;
    for (int32_t i = 0; i < head_dim; i++) {
        out[i] += weight * fp16_table[v[i]];
    }
}

void quill__attention_heads_ref(const float *q, int32_t n_heads, int64_t q_stride,
                                int32_t head_dim, const quill_attention_keys *keys, int64_t n_keys,
                                float scale, float *scores, float *out, int64_t out_stride) {
    pthread_once(&fp16_table_once, build_fp16_table);
    float running_max[QUILL_ATTENTION_MAX_HEADS];
    float running_sum[QUILL_ATTENTION_MAX_HEADS];
    for (int32_t h = 0; h < n_heads; h++) {
        for (int32_t i = 0; i < head_dim; i++) {
            out[h * out_stride + i] = 0.0f;
        }
        running_max[h] = -INFINITY;
        running_sum[h] = 0.0f;
    }

    for (int64_t position = 0; position < n_keys;) {
        /* The chunk: keys [position, end), positions c * QUILL_ATTENTION_CHUNK up to the next
         * multiple, across as many blocks as they span. */
        int64_t end = (position / QUILL_ATTENTION_CHUNK + 1) * QUILL_ATTENTION_CHUNK;
        if (end > n_keys) {
            end = n_keys;
        }
        int64_t n_chunk = end - position;

        /* Each head runs the one-head steps on its own query, scores and output, so the group
         * changes none of its bits. */
        for (int32_t h = 0; h < n_heads; h++) {
            const float *head_q = q + h * q_stride;
            float *head_out = out + h * out_stride;

            /* Scaled scores and their max. */
            float chunk_max = -INFINITY;
            for (int64_t j = 0; j < n_chunk; j++) {
                scores[j] = scale * dot_row(head_q, quill__attention_row(keys, keys->k_data,
                                                                         position + j),
                                            keys->type, head_dim);
                chunk_max = scores[j] > chunk_max ? scores[j] : chunk_max;
            }

            /* Rescale what was accumulated under the old max, then add this chunk. */
            if (chunk_max > running_max[h]) {
                float correction = expf(running_max[h] - chunk_max);
                running_sum[h] *= correction;
                for (int32_t i = 0; i < head_dim; i++) {
                    head_out[i] *= correction;
                }
                running_max[h] = chunk_max;
            }
            for (int64_t j = 0; j < n_chunk; j++) {
                float weight = expf(scores[j] - running_max[h]);
                running_sum[h] += weight;
                add_scaled_row(head_out, weight,
                               quill__attention_row(keys, keys->v_data, position + j), keys->type,
                               head_dim);
            }
        }
        position = end;
    }

    for (int32_t h = 0; h < n_heads; h++) {
        if (running_sum[h] > 0.0f) {
            float inverse = 1.0f / running_sum[h];
            for (int32_t i = 0; i < head_dim; i++) {
                out[h * out_stride + i] *= inverse;
            }
        }
    }
}

void quill__attention_head_ref(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                               int64_t n_keys, float scale, float *scores, float *out) {
    quill__attention_heads_ref(q, 1, head_dim, head_dim, keys, n_keys, scale, scores, out,
                               head_dim);
}
