/*
 * NEON variant of quill__attention_heads (ops.h): the reference's chunked online softmax per head,
 * with 8-element steps in the dot products (F16 rows widened by FCVTL) and fused multiply-adds
 * when V rows are accumulated. For F16 rows whose head_dim is a multiple of 8, the heads of a GQA
 * group share each widened K and V element. The softmax steps (max, expf, sums in key order) are
 * the reference's. Each score sums two 4-lane accumulators and reduces them in a fixed order, so
 * results differ from the reference in the last bits but never between calls. A head also gets
 * the same bits in any group, because the path it takes depends only on the element type and
 * head_dim, and every head keeps its own operations in their order. Stateless: safe from any
 * thread.
 */
#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kernels.h"
#include "quill/tensor_type.h"

/* Inlined even where large, so that the head and key counts, passed as constants, unroll the
 * loops over them and keep the accumulator arrays in registers. */
#define ATTENTION_INLINE static inline __attribute__((always_inline))
/* Unrolls the loop that follows: at -O2 GCC keeps short loops over vector arrays rolled, which
 * puts the arrays on the stack. */
#define ATTENTION_UNROLL _Pragma("GCC unroll 16")

/* Returns the 8 f16 values at `bytes` (any alignment) as two f32 vectors: elements 0-3 in *low
 * and 4-7 in *high. Exact. */
ATTENTION_INLINE void load_f16_8(const uint8_t *bytes, float32x4_t *low, float32x4_t *high) {
    float16x8_t halves = vreinterpretq_f16_u8(vld1q_u8(bytes));
    *low = vcvt_f32_f16(vget_low_f16(halves));
    *high = vcvt_high_f32_f16(halves);
}

/* Returns the score sum of two accumulators: the lane sums s = low + high, then (s0 + s1) +
 * (s2 + s3). */
ATTENTION_INLINE float reduce(float32x4_t low, float32x4_t high) {
    float32x4_t sums = vaddq_f32(low, high);
    float32x4_t pairs = vpaddq_f32(sums, sums);
    return vgetq_lane_f32(pairs, 0) + vgetq_lane_f32(pairs, 1);
}

/* Returns the f32 value of element i of a row of `type`. */
static inline float row_element(const uint8_t *row, uint32_t type, int32_t i) {
    if (type == QUILL_TYPE_F32) {
        float value;
        memcpy(&value, row + 4 * (size_t)i, sizeof(value));
        return value;
    }
    return quill__fp16_to_fp32((uint16_t)(row[2 * i] | (row[2 * i + 1] << 8)));
}

/* Loads elements i .. i + 7 of a row of `type` as f32. */
ATTENTION_INLINE void load_8(const uint8_t *row, uint32_t type, int32_t i, float32x4_t *low,
                             float32x4_t *high) {
    if (type == QUILL_TYPE_F32) {
        *low = vreinterpretq_f32_u8(vld1q_u8(row + 4 * (size_t)i));
        *high = vreinterpretq_f32_u8(vld1q_u8(row + 4 * (size_t)i + 16));
        return;
    }
    load_f16_8(row + 2 * (size_t)i, low, high);
}

/* Returns q . row over head_dim elements: two 4-lane accumulators over 8-element steps, reduced,
 * plus the last head_dim % 8 products added one by one. */
static float dot_row(const float *q, const uint8_t *row, uint32_t type, int32_t head_dim) {
    float32x4_t acc_low = vdupq_n_f32(0.0f);
    float32x4_t acc_high = vdupq_n_f32(0.0f);
    int32_t i = 0;
    for (; i + 8 <= head_dim; i += 8) {
        float32x4_t low;
        float32x4_t high;
        load_8(row, type, i, &low, &high);
        acc_low = vfmaq_f32(acc_low, vld1q_f32(q + i), low);
        acc_high = vfmaq_f32(acc_high, vld1q_f32(q + i + 4), high);
    }
    float tail = 0.0f;
    for (; i < head_dim; i++) {
        tail += q[i] * row_element(row, type, i);
    }
    return reduce(acc_low, acc_high) + tail;
}

/* out[i] = fma(weight, v[i], out[i]) for i < head_dim. */
static void add_scaled_row(float *out, float weight, const uint8_t *row, uint32_t type,
                           int32_t head_dim) {
    int32_t i = 0;
    for (; i + 8 <= head_dim; i += 8) {
        float32x4_t low;
        float32x4_t high;
        load_8(row, type, i, &low, &high);
        vst1q_f32(out + i, vfmaq_n_f32(vld1q_f32(out + i), low, weight));
        vst1q_f32(out + i + 4, vfmaq_n_f32(vld1q_f32(out + i + 4), high, weight));
    }
    for (; i < head_dim; i++) {
        out[i] = fmaf(weight, row_element(row, type, i), out[i]);
    }
}

/* out[i] *= factor for i < head_dim. */
static void scale_row(float *out, float factor, int32_t head_dim) {
    int32_t i = 0;
    for (; i + 4 <= head_dim; i += 4) {
        vst1q_f32(out + i, vmulq_n_f32(vld1q_f32(out + i), factor));
    }
    for (; i < head_dim; i++) {
        out[i] *= factor;
    }
}

/* Scores of n_keys consecutive F16 K rows for each of n_heads queries, from one widening of each
 * K element: scores[k * n_heads + h] = scale * (q_h . key k). Each score takes dot_row's
 * operations in dot_row's order (head_dim is a multiple of 8, so there is no tail), so its bits
 * equal dot_row's. Live registers: 2 * n_heads * n_keys accumulators, two widened vectors per key
 * and the queries. */
ATTENTION_INLINE void dot_rows_f16_group(const float *q, int64_t q_stride, const uint8_t *row,
                                         size_t row_bytes, int32_t head_dim, float scale,
                                         float *scores, const int n_heads, const int n_keys) {
    float32x4_t acc[QUILL_ATTENTION_MAX_HEADS][4][2];
    ATTENTION_UNROLL
    for (int h = 0; h < n_heads; h++) {
        ATTENTION_UNROLL
        for (int k = 0; k < n_keys; k++) {
            acc[h][k][0] = vdupq_n_f32(0.0f);
            acc[h][k][1] = vdupq_n_f32(0.0f);
        }
    }
    for (int32_t i = 0; i < head_dim; i += 8) {
        ATTENTION_UNROLL
        for (int k = 0; k < n_keys; k++) {
            float32x4_t low;
            float32x4_t high;
            load_f16_8(row + (size_t)k * row_bytes + 2 * (size_t)i, &low, &high);
            ATTENTION_UNROLL
            for (int h = 0; h < n_heads; h++) {
                const float *head_q = q + h * q_stride + i;
                acc[h][k][0] = vfmaq_f32(acc[h][k][0], vld1q_f32(head_q), low);
                acc[h][k][1] = vfmaq_f32(acc[h][k][1], vld1q_f32(head_q + 4), high);
            }
        }
    }
    ATTENTION_UNROLL
    for (int k = 0; k < n_keys; k++) {
        ATTENTION_UNROLL
        for (int h = 0; h < n_heads; h++) {
            scores[k * n_heads + h] = scale * reduce(acc[h][k][0], acc[h][k][1]);
        }
    }
}

/* Scores of n F16 keys for n_heads queries, n_keys_step keys at a time. */
ATTENTION_INLINE void score_rows_f16_group(const float *q, int64_t q_stride, const uint8_t *row,
                                           size_t row_bytes, int32_t head_dim, float scale,
                                           int64_t n, float *scores, const int n_heads,
                                           const int n_keys_step) {
    int64_t j = 0;
    for (; j + n_keys_step <= n; j += n_keys_step) {
        dot_rows_f16_group(q, q_stride, row + (size_t)j * row_bytes, row_bytes, head_dim, scale,
                           scores + j * n_heads, n_heads, n_keys_step);
    }
    for (; j < n; j++) {
        dot_rows_f16_group(q, q_stride, row + (size_t)j * row_bytes, row_bytes, head_dim, scale,
                           scores + j * n_heads, n_heads, 1);
    }
}

/* Scores of n F16 keys, scores[j * n_heads + h]. The keys per step keep the accumulators (2 per
 * head and key) near eight, enough independent FMA chains to hide their latency. */
static void score_rows_f16(const float *q, int32_t n_heads, int64_t q_stride, const uint8_t *row,
                           size_t row_bytes, int32_t head_dim, float scale, int64_t n,
                           float *scores) {
    switch (n_heads) {
    case 1:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 1, 4);
        break;
    case 2:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 2, 2);
        break;
    case 3:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 3, 1);
        break;
    case 4:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 4, 1);
        break;
    case 5:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 5, 1);
        break;
    case 6:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 6, 1);
        break;
    case 7:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 7, 1);
        break;
    default:
        score_rows_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n, scores, 8, 1);
        break;
    }
}

/* out_h += sum_j weights[j * n_heads + h] * V row j for each head h, over n F16 rows, restricted
 * to the n_vectors 8-element vectors that start at vector first_vector. The accumulators stay in
 * registers across the rows, and each V element is widened once for all heads. Each element gets
 * add_scaled_row's fused multiply-adds in the same row order, so the bits match calling it row by
 * row. Live registers: 2 * n_heads * n_vectors accumulators and two widened vectors. */
ATTENTION_INLINE void add_rows_f16_group(float *out, int64_t out_stride, const float *weights,
                                         const uint8_t *row, size_t row_bytes, int64_t n,
                                         int32_t first_vector, const int n_heads,
                                         const int n_vectors) {
    float32x4_t acc[QUILL_ATTENTION_MAX_HEADS][8][2];
    float *first = out + 8 * first_vector;
    ATTENTION_UNROLL
    for (int h = 0; h < n_heads; h++) {
        ATTENTION_UNROLL
        for (int b = 0; b < n_vectors; b++) {
            acc[h][b][0] = vld1q_f32(first + h * out_stride + 8 * b);
            acc[h][b][1] = vld1q_f32(first + h * out_stride + 8 * b + 4);
        }
    }
    for (int64_t j = 0; j < n; j++) {
        const uint8_t *v = row + (size_t)j * row_bytes + 16 * (size_t)first_vector;
        const float *row_weights = weights + j * n_heads;
        ATTENTION_UNROLL
        for (int b = 0; b < n_vectors; b++) {
            float32x4_t low;
            float32x4_t high;
            load_f16_8(v + 16 * b, &low, &high);
            ATTENTION_UNROLL
            for (int h = 0; h < n_heads; h++) {
                acc[h][b][0] = vfmaq_n_f32(acc[h][b][0], low, row_weights[h]);
                acc[h][b][1] = vfmaq_n_f32(acc[h][b][1], high, row_weights[h]);
            }
        }
    }
    ATTENTION_UNROLL
    for (int h = 0; h < n_heads; h++) {
        ATTENTION_UNROLL
        for (int b = 0; b < n_vectors; b++) {
            vst1q_f32(first + h * out_stride + 8 * b, acc[h][b][0]);
            vst1q_f32(first + h * out_stride + 8 * b + 4, acc[h][b][1]);
        }
    }
}

/* Adds n F16 V rows to every head's output, n_vectors_step vectors of the head at a time. */
ATTENTION_INLINE void add_rows_f16_steps(float *out, int64_t out_stride, const float *weights,
                                         const uint8_t *row, size_t row_bytes, int64_t n,
                                         int32_t head_dim, const int n_heads,
                                         const int n_vectors_step) {
    const int32_t n_vectors = head_dim / 8;
    int32_t b = 0;
    for (; b + n_vectors_step <= n_vectors; b += n_vectors_step) {
        add_rows_f16_group(out, out_stride, weights, row, row_bytes, n, b, n_heads, n_vectors_step);
    }
    for (; b < n_vectors; b++) {
        add_rows_f16_group(out, out_stride, weights, row, row_bytes, n, b, n_heads, 1);
    }
}

/* Adds n F16 V rows, weighted by weights[j * n_heads + h], to each head's output. The vectors
 * per step keep the accumulators (2 per head and vector) at 16 or fewer. */
static void add_rows_f16(float *out, int32_t n_heads, int64_t out_stride, const float *weights,
                         const uint8_t *row, size_t row_bytes, int64_t n, int32_t head_dim) {
    switch (n_heads) {
    case 1:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 1, 8);
        break;
    case 2:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 2, 4);
        break;
    case 3:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 3, 2);
        break;
    case 4:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 4, 2);
        break;
    case 5:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 5, 1);
        break;
    case 6:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 6, 1);
        break;
    case 7:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 7, 1);
        break;
    default:
        add_rows_f16_steps(out, out_stride, weights, row, row_bytes, n, head_dim, 8, 1);
        break;
    }
}

/* Returns the end of the block segment that starts at position: the next block boundary, or end
 * when that comes first. Rows are contiguous only inside a block. */
static int64_t segment_end_of(const quill_attention_keys *keys, int64_t position, int64_t end) {
    int64_t segment_end = (position / keys->block_tokens + 1) * keys->block_tokens;
    return segment_end > end ? end : segment_end;
}

/* Writes the scaled scores of keys [position, end) to scores[j * n_heads + h], j counted from
 * position, block segment by block segment. */
static void score_chunk(const float *q, int32_t n_heads, int64_t q_stride, int32_t head_dim,
                        const quill_attention_keys *keys, int64_t position, int64_t end,
                        float scale, bool is_f16_x8, float *scores) {
    for (int64_t segment = position; segment < end;) {
        int64_t segment_end = segment_end_of(keys, segment, end);
        const uint8_t *k_row = quill__attention_row(keys, keys->k_data, segment);
        float *segment_scores = scores + (segment - position) * n_heads;
        int64_t n = segment_end - segment;
        if (is_f16_x8) {
            score_rows_f16(q, n_heads, q_stride, k_row, keys->row_bytes, head_dim, scale, n,
                           segment_scores);
        } else {
            for (int32_t h = 0; h < n_heads; h++) {
                for (int64_t j = 0; j < n; j++) {
                    segment_scores[j * n_heads + h] =
                        scale * dot_row(q + h * q_stride, k_row + (size_t)j * keys->row_bytes,
                                        keys->type, head_dim);
                }
            }
        }
        segment = segment_end;
    }
}

/* Adds the V rows of keys [position, end), weighted by weights[j * n_heads + h], to each head's
 * output in key order. */
static void add_chunk(float *out, int32_t n_heads, int64_t out_stride, int32_t head_dim,
                      const quill_attention_keys *keys, int64_t position, int64_t end,
                      bool is_f16_x8, const float *weights) {
    for (int64_t segment = position; segment < end;) {
        int64_t segment_end = segment_end_of(keys, segment, end);
        const uint8_t *v_row = quill__attention_row(keys, keys->v_data, segment);
        const float *segment_weights = weights + (segment - position) * n_heads;
        int64_t n = segment_end - segment;
        if (is_f16_x8) {
            add_rows_f16(out, n_heads, out_stride, segment_weights, v_row, keys->row_bytes, n,
                         head_dim);
        } else {
            for (int32_t h = 0; h < n_heads; h++) {
                for (int64_t j = 0; j < n; j++) {
                    add_scaled_row(out + h * out_stride, segment_weights[j * n_heads + h],
                                   v_row + (size_t)j * keys->row_bytes, keys->type, head_dim);
                }
            }
        }
        segment = segment_end;
    }
}

/* Runs the reference's softmax step for head h over n_chunk scores (stride n_heads). When the
 * chunk raises the max, what was accumulated under the old max is rescaled. Then the scores
 * become weights expf(score - max), which are added to the running sum in key order. */
static void softmax_chunk(float *scores, int32_t n_heads, int32_t h, int64_t n_chunk,
                          int32_t head_dim, float *running_max, float *running_sum,
                          float *head_out) {
    float chunk_max = -INFINITY;
    for (int64_t j = 0; j < n_chunk; j++) {
        float score = scores[j * n_heads + h];
        chunk_max = score > chunk_max ? score : chunk_max;
    }
    if (chunk_max > *running_max) {
        float correction = expf(*running_max - chunk_max);
        *running_sum *= correction;
        scale_row(head_out, correction, head_dim);
        *running_max = chunk_max;
    }
    for (int64_t j = 0; j < n_chunk; j++) {
        float weight = expf(scores[j * n_heads + h] - *running_max);
        scores[j * n_heads + h] = weight;
        *running_sum += weight;
    }
}

void quill__attention_heads_neon(const float *q, int32_t n_heads, int64_t q_stride,
                                 int32_t head_dim, const quill_attention_keys *keys, int64_t n_keys,
                                 float scale, float *scores, float *out, int64_t out_stride) {
    float running_max[QUILL_ATTENTION_MAX_HEADS];
    float running_sum[QUILL_ATTENTION_MAX_HEADS];
    for (int32_t h = 0; h < n_heads; h++) {
        for (int32_t i = 0; i < head_dim; i++) {
            out[h * out_stride + i] = 0.0f;
        }
        running_max[h] = -INFINITY;
        running_sum[h] = 0.0f;
    }
    /* F16 rows of whole 8-element vectors take the grouped paths, which widen each element once
     * for all heads. Other rows run the one-head steps for each head in turn. */
    const bool is_f16_x8 = keys->type == QUILL_TYPE_F16 && head_dim % 8 == 0;

    for (int64_t position = 0; position < n_keys;) {
        /* The chunk: keys [position, end), positions c * QUILL_ATTENTION_CHUNK up to the next
         * multiple, across as many blocks as they span. */
        int64_t end = (position / QUILL_ATTENTION_CHUNK + 1) * QUILL_ATTENTION_CHUNK;
        if (end > n_keys) {
            end = n_keys;
        }
        score_chunk(q, n_heads, q_stride, head_dim, keys, position, end, scale, is_f16_x8, scores);
        for (int32_t h = 0; h < n_heads; h++) {
            softmax_chunk(scores, n_heads, h, end - position, head_dim, &running_max[h],
                          &running_sum[h], out + h * out_stride);
        }
        add_chunk(out, n_heads, out_stride, head_dim, keys, position, end, is_f16_x8, scores);
        position = end;
    }

    for (int32_t h = 0; h < n_heads; h++) {
        if (running_sum[h] > 0.0f) {
            scale_row(out + h * out_stride, 1.0f / running_sum[h], head_dim);
        }
    }
}

void quill__attention_head_neon(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                                int64_t n_keys, float scale, float *scores, float *out) {
    quill__attention_heads_neon(q, 1, head_dim, head_dim, keys, n_keys, scale, scores, out,
                                head_dim);
}
