/*
 * AVX2 + FMA + F16C variant of quill__attention_heads (ops.h): the same chunked online softmax
 * per head as the reference, with 8-wide dot products (F16 rows widened by vcvtph2ps) and
 * 8-wide accumulation of V rows. For F16 rows the heads of a GQA group share each widened K and
 * V element. Each dot product sums eight lanes and then reduces them in a fixed order, and the
 * softmax weights come from quill_x86_exp_8 rather than expf. Results therefore differ from the
 * reference in the last bits but never between calls, and a head gets the same bits in any
 * group. Call only on CPUs with AVX2, FMA and F16C. Stateless.
 */
#include "kernels/ops.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#include "kernels/avx2/x86_common.h"
#include "quill/tensor_type.h"

/* Inlined even where large, so that the head and key counts, passed as constants, unroll the
 * loops over them and keep the accumulator arrays in registers. */
#define ATTENTION_INLINE static inline __attribute__((always_inline))

/* The per-head softmax steps keep one head per lane of an 8-lane vector. */
_Static_assert(QUILL_ATTENTION_MAX_HEADS <= 8, "attention: more heads per call than AVX2 lanes");

/* Sum of the eight lanes: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two. */
static inline float horizontal_sum(__m256 v) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

/* Lane m of the result is horizontal_sum(x[m]) with the same bits: the same additions of the
 * same pairs, done for eight vectors at once after transposing them. Float addition is
 * commutative, so swapping the operands of a pair changes no bit. */
static inline __m256 horizontal_sums_x8(const __m256 x[8]) {
    /* Halves: vector m's lanes 0..3 plus its lanes 4..7, for m and m + 4 side by side. */
    __m256 halves[4];
    for (int m = 0; m < 4; m++) {
        __m256 low = _mm256_permute2f128_ps(x[m], x[m + 4], 0x20);
        __m256 high = _mm256_permute2f128_ps(x[m], x[m + 4], 0x31);
        halves[m] = _mm256_add_ps(low, high);
    }
    /* Pairs: (0 + 2, 1 + 3) of each half sum, for vectors (m, m + 1) and (m + 4, m + 5). */
    __m256 pairs[2];
    for (int m = 0; m < 2; m++) {
        __m256 even = _mm256_shuffle_ps(halves[2 * m], halves[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0));
        __m256 odd = _mm256_shuffle_ps(halves[2 * m], halves[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2));
        pairs[m] = _mm256_add_ps(even, odd);
    }
    /* The last two: lanes in vector order 0..3 | 4..7. */
    __m256 first = _mm256_shuffle_ps(pairs[0], pairs[1], _MM_SHUFFLE(2, 0, 2, 0));
    __m256 second = _mm256_shuffle_ps(pairs[0], pairs[1], _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_add_ps(first, second);
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

/* Prefetches the first slice_bytes of each of n rows, row_bytes apart, into the L1 cache, or
 * into L2 when to_l2 is true. */
static inline void prefetch_rows(const uint8_t *row, size_t row_bytes, int64_t n,
                                 size_t slice_bytes, bool to_l2) {
    for (int64_t j = 0; j < n; j++) {
        for (size_t offset = 0; offset < slice_bytes; offset += 64) {
            const char *line = (const char *)row + (size_t)j * row_bytes + offset;
            if (to_l2) {
                _mm_prefetch(line, _MM_HINT_T1);
            } else {
                _mm_prefetch(line, _MM_HINT_T0);
            }
        }
    }
}

/* K rows are prefetched this many blocks ahead of the block being scored. */
enum { K_PREFETCH_BLOCKS = 2 };

/* Prefetches the K rows of block `index` of the sequence (positions index * block_tokens up to
 * n_keys), slice_bytes of each, into L1, when the block contains any of the first n_keys
 * positions. */
static inline void prefetch_block(const quill_attention_keys *keys, const uint8_t *base,
                                  int64_t index, int64_t n_keys, size_t slice_bytes) {
    int64_t begin = index * keys->block_tokens;
    if (begin >= n_keys) {
        return;
    }
    int64_t end = begin + keys->block_tokens < n_keys ? begin + keys->block_tokens : n_keys;
    prefetch_rows(quill__attention_row(keys, base, begin), keys->row_bytes, end - begin,
                  slice_bytes, false);
}

/* Scores of n_keys consecutive F16 K rows for each of n_heads queries, computed side by side from
 * one widening of each K element. The score of key k for head h goes to
 * scores[k * n_heads + h]. Each score takes dot_row's operations in its order (one 8-lane
 * accumulator over the head, horizontal_sum, the zero tail), so its bits equal dot_row's.
 * head_dim must be a multiple of 8. Live registers: n_heads * n_keys accumulators, a widened
 * key and, when n_keys > 1, n_heads queries, which must fit in AVX2's 16. */
ATTENTION_INLINE void dot_rows_f16_group(const float *q, int64_t q_stride, const uint8_t *row,
                                         size_t row_bytes, int32_t head_dim, float scale,
                                         float *scores, const int n_heads, const int n_keys) {
    __m256 acc[QUILL_ATTENTION_MAX_HEADS][8];
    for (int h = 0; h < n_heads; h++) {
        for (int k = 0; k < n_keys; k++) {
            acc[h][k] = _mm256_setzero_ps();
        }
    }
    for (int32_t i = 0; i < head_dim; i += 8) {
        for (int k = 0; k < n_keys; k++) {
            const uint16_t *key = (const uint16_t *)(row + (size_t)k * row_bytes);
            __m256 widened = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(key + i)));
            for (int h = 0; h < n_heads; h++) {
                acc[h][k] = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * q_stride + i), widened,
                                            acc[h][k]);
            }
        }
    }
    const float tail = 0.0f;
    if (n_heads * n_keys == 8) {
        /* The eight scores are adjacent in scores: reduce them together. */
        __m256 sums[8];
        for (int m = 0; m < 8; m++) {
            sums[m] = acc[m % n_heads][m / n_heads];
        }
        __m256 dots = _mm256_add_ps(horizontal_sums_x8(sums), _mm256_set1_ps(tail));
        _mm256_storeu_ps(scores, _mm256_mul_ps(_mm256_set1_ps(scale), dots));
        return;
    }
    for (int k = 0; k < n_keys; k++) {
        for (int h = 0; h < n_heads; h++) {
            scores[k * n_heads + h] = scale * (horizontal_sum(acc[h][k]) + tail);
        }
    }
}

/* Scores of a chunk of n_chunk F16 keys for n_heads queries, n_keys_step keys at a time. */
ATTENTION_INLINE void score_chunk_f16_group(const float *q, int64_t q_stride, const uint8_t *row,
                                            size_t row_bytes, int32_t head_dim, float scale,
                                            int64_t n_chunk, float *scores, const int n_heads,
                                            const int n_keys_step) {
    int64_t j = 0;
    for (; j + n_keys_step <= n_chunk; j += n_keys_step) {
        dot_rows_f16_group(q, q_stride, row + (size_t)j * row_bytes, row_bytes, head_dim, scale,
                           scores + j * n_heads, n_heads, n_keys_step);
    }
    for (; j < n_chunk; j++) {
        dot_rows_f16_group(q, q_stride, row + (size_t)j * row_bytes, row_bytes, head_dim, scale,
                           scores + j * n_heads, n_heads, 1);
    }
}

/* Scores of a chunk of F16 keys, scores[j * n_heads + h]. The keys per step keep the
 * accumulators (heads times keys) near eight, which hides the FMA latency within the register
 * budget of dot_rows_f16_group. Exactly eight lets it reduce the eight sums together. */
static void score_chunk_f16(const float *q, int32_t n_heads, int64_t q_stride, const uint8_t *row,
                            size_t row_bytes, int32_t head_dim, float scale, int64_t n_chunk,
                            float *scores) {
    switch (n_heads) {
    case 1:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 1, 8);
        break;
    case 2:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 2, 4);
        break;
    case 3:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 3, 2);
        break;
    case 4:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 4, 2);
        break;
    case 5:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 5, 1);
        break;
    case 6:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 6, 1);
        break;
    case 7:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 7, 1);
        break;
    default:
        score_chunk_f16_group(q, q_stride, row, row_bytes, head_dim, scale, n_chunk, scores, 8, 1);
        break;
    }
}

/* out_h += sum_j weights[j * n_heads + h] * V row j for each head h, over n rows of F16 values,
 * restricted to the n_vectors 8-element vectors that start at vector first_vector. The
 * accumulators stay in registers across the rows, and each V element is widened once for all
 * heads. Each element gets add_scaled_row's fused multiply-adds in the same row order, so the
 * bits match calling it row by row. Live registers: n_heads * n_vectors accumulators, a widened
 * vector and the broadcast weights. */
ATTENTION_INLINE void add_rows_f16_group(float *out, int64_t out_stride, const float *weights,
                                         const uint8_t *row, size_t row_bytes, int64_t n,
                                         int32_t first_vector, const int n_heads,
                                         const int n_vectors) {
    __m256 acc[QUILL_ATTENTION_MAX_HEADS][8];
    float *first = out + 8 * first_vector;
    for (int h = 0; h < n_heads; h++) {
        for (int b = 0; b < n_vectors; b++) {
            acc[h][b] = _mm256_loadu_ps(first + h * out_stride + 8 * b);
        }
    }
    for (int64_t j = 0; j < n; j++) {
        const uint16_t *v = (const uint16_t *)(row + (size_t)j * row_bytes) + 8 * first_vector;
        const float *row_weights = weights + j * n_heads;
        for (int b = 0; b < n_vectors; b++) {
            __m256 values = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + 8 * b)));
            for (int h = 0; h < n_heads; h++) {
                acc[h][b] = _mm256_fmadd_ps(_mm256_set1_ps(row_weights[h]), values, acc[h][b]);
            }
        }
    }
    for (int h = 0; h < n_heads; h++) {
        for (int b = 0; b < n_vectors; b++) {
            _mm256_storeu_ps(first + h * out_stride + 8 * b, acc[h][b]);
        }
    }
}

/* Adds a chunk of n F16 V rows to every head's output, n_vectors_step vectors of the head at a
 * time. */
ATTENTION_INLINE void add_chunk_f16_group(float *out, int64_t out_stride, const float *weights,
                                          const uint8_t *row, size_t row_bytes, int64_t n,
                                          int32_t head_dim, const int n_heads,
                                          const int n_vectors_step) {
    const int32_t n_vectors = head_dim / 8;
    int32_t b = 0;
    for (; b + n_vectors_step <= n_vectors; b += n_vectors_step) {
        add_rows_f16_group(out, out_stride, weights, row, row_bytes, n, b, n_heads,
                           n_vectors_step);
    }
    for (; b < n_vectors; b++) {
        add_rows_f16_group(out, out_stride, weights, row, row_bytes, n, b, n_heads, 1);
    }
}

/* Adds a chunk of F16 V rows, weighted by weights[j * n_heads + h], to each head's output. The
 * vectors per step keep the accumulators (heads times vectors) at eight or fewer. */
static void add_chunk_f16(float *out, int32_t n_heads, int64_t out_stride, const float *weights,
                          const uint8_t *row, size_t row_bytes, int64_t n, int32_t head_dim) {
    switch (n_heads) {
    case 1:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 1, 8);
        break;
    case 2:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 2, 4);
        break;
    case 3:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 3, 2);
        break;
    case 4:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 4, 2);
        break;
    case 5:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 5, 1);
        break;
    case 6:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 6, 1);
        break;
    case 7:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 7, 1);
        break;
    default:
        add_chunk_f16_group(out, out_stride, weights, row, row_bytes, n, head_dim, 8, 1);
        break;
    }
}

void quill__attention_heads_avx2(const float *q, int32_t n_heads, int64_t q_stride,
                                 int32_t head_dim, const quill_attention_keys *keys,
                                 int64_t n_keys, float scale, float *scores, float *out,
                                 int64_t out_stride) {
    /* Eight entries because the per-head steps read and write them as one 8-lane vector. */
    float running_max[8];
    float running_sum[8] = {0.0f};
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
    /* Bytes of this KV head's slice of a K or V row. */
    const size_t row_slice_bytes =
        (size_t)head_dim * (keys->type == QUILL_TYPE_F32 ? sizeof(float) : sizeof(uint16_t));
    /* Lanes 0 .. n_heads - 1, one per head, for the per-head softmax steps. */
    const __m256i head_lanes =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n_heads), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));

    for (int64_t b = 1; b < K_PREFETCH_BLOCKS; b++) {
        prefetch_block(keys, keys->k_data, b, n_keys, row_slice_bytes);
    }
    for (int64_t position = 0; position < n_keys;) {
        /* The chunk: keys [position, end), positions c * QUILL_ATTENTION_CHUNK up to the next
         * multiple. Rows are contiguous only inside a block, so the row loops below run per
         * block segment of the chunk. */
        int64_t end = (position / QUILL_ATTENTION_CHUNK + 1) * QUILL_ATTENTION_CHUNK;
        if (end > n_keys) {
            end = n_keys;
        }
        int64_t n_chunk = end - position;

        /* Scaled scores, scores[j * n_heads + h] for key j of the chunk and head h. */
        for (int64_t segment = position; segment < end;) {
            int64_t segment_end = (segment / keys->block_tokens + 1) * keys->block_tokens;
            segment_end = segment_end > end ? end : segment_end;
            const uint8_t *k_row = quill__attention_row(keys, keys->k_data, segment);
            /* Blocks sit anywhere in the pool, so the hardware prefetchers miss the jump to
             * the next one. Fetch K rows K_PREFETCH_BLOCKS blocks ahead into L1 and this
             * segment's V rows into L2 ahead of their loops. V is read only after the whole
             * chunk's scores, and a chunk's V slices (up to 32 KB) would push the K rows out of
             * L1. Decode after a 3000-token prompt, one thread, 4-head groups (AMD EPYC): 42-48
             * ns per key and group with K one block ahead and V into L1, 32 with K two blocks
             * ahead and V into L2. */
            prefetch_block(keys, keys->k_data, segment / keys->block_tokens + K_PREFETCH_BLOCKS,
                           n_keys, row_slice_bytes);
            prefetch_rows(quill__attention_row(keys, keys->v_data, segment), keys->row_bytes,
                          segment_end - segment, row_slice_bytes, true);
            float *segment_scores = scores + (segment - position) * n_heads;
            if (is_f16_x8) {
                score_chunk_f16(q, n_heads, q_stride, k_row, keys->row_bytes, head_dim, scale,
                                segment_end - segment, segment_scores);
            } else {
                for (int32_t h = 0; h < n_heads; h++) {
                    for (int64_t j = 0; j < segment_end - segment; j++) {
                        segment_scores[j * n_heads + h] =
                            scale * dot_row(q + h * q_stride, k_row + (size_t)j * keys->row_bytes,
                                            keys->type, head_dim);
                    }
                }
            }
            segment = segment_end;
        }

        /* Lane h of these vectors is head h. Each lane takes its max and its sum in key order,
         * so a head's bits do not depend on the other heads of the call. _mm256_max_ps(a, b)
         * returns a > b ? a : b, as the scalar max of the reference does. */
        __m256 chunk_maxes = _mm256_set1_ps(-INFINITY);
        for (int64_t j = 0; j < n_chunk; j++) {
            chunk_maxes =
                _mm256_max_ps(_mm256_maskload_ps(scores + j * n_heads, head_lanes), chunk_maxes);
        }
        float chunk_max[8];
        _mm256_storeu_ps(chunk_max, chunk_maxes);

        /* Per head: rescale what was accumulated under the old max. */
        for (int32_t h = 0; h < n_heads; h++) {
            if (chunk_max[h] > running_max[h]) {
                float correction = expf(running_max[h] - chunk_max[h]);
                running_sum[h] *= correction;
                scale_row(out + h * out_stride, correction, head_dim);
                running_max[h] = chunk_max[h];
            }
        }

        /* Turn the scores into weights, eight consecutive scores per vector whatever keys and
         * heads they belong to: each lane's exp depends on its own score and its head's max
         * only. Masked stores cost several cycles each on some CPUs (AMD), so only the last
         * partial vector takes one. Lane i of the vector at offset o of scores is head
         * (o + i) % n_heads, whose max is repeated_max[o % n_heads + i]. */
        float repeated_max[QUILL_ATTENTION_MAX_HEADS + 8];
        for (int32_t k = 0; k < n_heads + 8; k++) {
            repeated_max[k] = running_max[k % n_heads];
        }
        const int64_t n_scores = n_chunk * n_heads;
        int64_t offset = 0;
        int32_t phase = 0;
        for (; offset + 8 <= n_scores; offset += 8) {
            __m256 values = _mm256_sub_ps(_mm256_loadu_ps(scores + offset),
                                          _mm256_loadu_ps(repeated_max + phase));
            _mm256_storeu_ps(scores + offset, quill_x86_exp_8(values));
            phase = (phase + 8) % n_heads;
        }
        if (offset < n_scores) {
            const __m256i tail_lanes = _mm256_cmpgt_epi32(
                _mm256_set1_epi32((int32_t)(n_scores - offset)),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            __m256 values = _mm256_sub_ps(_mm256_maskload_ps(scores + offset, tail_lanes),
                                          _mm256_loadu_ps(repeated_max + phase));
            _mm256_maskstore_ps(scores + offset, tail_lanes, quill_x86_exp_8(values));
        }
        /* Then add the weights to the running sums in key order. */
        __m256 sums = _mm256_maskload_ps(running_sum, head_lanes);
        for (int64_t j = 0; j < n_chunk; j++) {
            sums = _mm256_add_ps(sums, _mm256_maskload_ps(scores + j * n_heads, head_lanes));
        }
        _mm256_maskstore_ps(running_sum, head_lanes, sums);

        /* This chunk's weighted V rows, block segment by block segment in key order. */
        for (int64_t segment = position; segment < end;) {
            int64_t segment_end = (segment / keys->block_tokens + 1) * keys->block_tokens;
            segment_end = segment_end > end ? end : segment_end;
            const uint8_t *v_row = quill__attention_row(keys, keys->v_data, segment);
            const float *weights = scores + (segment - position) * n_heads;
            if (is_f16_x8) {
                add_chunk_f16(out, n_heads, out_stride, weights, v_row, keys->row_bytes,
                              segment_end - segment, head_dim);
            } else {
                for (int32_t h = 0; h < n_heads; h++) {
                    for (int64_t j = 0; j < segment_end - segment; j++) {
                        add_scaled_row(out + h * out_stride, weights[j * n_heads + h],
                                       v_row + (size_t)j * keys->row_bytes, keys->type, head_dim);
                    }
                }
            }
            segment = segment_end;
        }
        position = end;
    }

    for (int32_t h = 0; h < n_heads; h++) {
        if (running_sum[h] > 0.0f) {
            scale_row(out + h * out_stride, 1.0f / running_sum[h], head_dim);
        }
    }
}

void quill__attention_head_avx2(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                                int64_t n_keys, float scale, float *scores, float *out) {
    quill__attention_heads_avx2(q, 1, head_dim, head_dim, keys, n_keys, scale, scores, out,
                                head_dim);
}
