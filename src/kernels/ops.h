/*
 * Element-wise and per-row ops of the forward pass: RMSNorm, RoPE (normal and NeoX layouts),
 * softmax, SwiGLU, vector add, and attention of one query head, or of the query heads of one
 * GQA group, over a paged K/V history.
 * Each follows ggml's CPU arithmetic where that is cheap to match (double sum in RMSNorm,
 * iterated RoPE angles), so that Quill's logits stay close to llama.cpp's.
 *
 * NOTE: apart from attention, only the scalar versions in src/kernels/ref/ exist, and callers
 * use them directly without the dispatch table. Their per-token cost is small next to
 * quill__matmul.
 *
 * Stateless apart from a conversion table built once (pthread_once): safe from any thread.
 */
#ifndef QUILL_OPS_H
#define QUILL_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* y[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i] for i < n. The sum of squares is taken in
 * double, in index order. y may alias x. weight may be NULL (no scaling). */
void quill__rms_norm(const float *x, const float *weight, float *y, int64_t n, float eps);

/* RoPE pair layouts, numbered as ggml's rope modes. */
typedef enum quill_rope_mode {
    QUILL_ROPE_MODE_NORMAL = 0, /* rotate (x[2i], x[2i+1]) */
    QUILL_ROPE_MODE_NEOX = 2,   /* rotate (x[i], x[i + n_rot/2]) */
} quill_rope_mode;

/* Fills cos_sin (f32 [n_rot/2][2]: cos, sin) for one position. Pair i turns by
 * position * freq_base^(-2i/n_rot) / freq_factors[i], the angle being iterated as ggml does
 * (theta *= freq_base^(-2/n_rot) in f32). freq_factors (f32 [n_rot/2]) may be NULL. */
void quill__rope_angles(int64_t position, int32_t n_rot, float freq_base, const float *freq_factors,
                        float *cos_sin);

/* Rotates the first n_rot elements of each of n_heads heads of x (f32 [n_heads][head_dim]) in
 * place by the angles of quill__rope_angles; elements n_rot..head_dim-1 stay unchanged. */
void quill__rope_apply(float *x, int32_t n_heads, int32_t head_dim, int32_t n_rot,
                       quill_rope_mode mode, const float *cos_sin);

/* In-place softmax of x[n] in f32: subtract the max, exponentiate, divide by the sum (taken in
 * double, in index order). */
void quill__softmax(float *x, int64_t n);

/* out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias gate or up.
 * Dispatched like attention: the AVX2 variant (a vector exp, within a few float ulps of the
 * reference's expf) when the kernel table selected AVX2 or AVX-512. */
void quill__silu_mul(const float *gate, const float *up, float *out, int64_t n);
void quill__silu_mul_ref(const float *gate, const float *up, float *out, int64_t n);
void quill__silu_mul_avx2(const float *gate, const float *up, float *out, int64_t n);

/* y[i] += x[i] for i < n. */
void quill__vec_add(float *y, const float *x, int64_t n);

/* One KV head's history in a paged cache. Key p (the key at position p) sits in slot
 * p % block_tokens of block blocks[p / block_tokens]. Its K row starts at
 *   k_data + block * block_stride_bytes + slot * row_bytes
 * and holds head_dim elements of `type`, already offset to this head. V rows follow the same
 * rule from v_data. */
typedef struct quill_attention_keys {
    uint32_t type;             /* QUILL_TYPE_F16 or QUILL_TYPE_F32 */
    const uint8_t *k_data;     /* this head's K elements in slot 0 of block 0 */
    const uint8_t *v_data;     /* this head's V elements in slot 0 of block 0 */
    size_t block_stride_bytes; /* bytes from one block to the next */
    size_t row_bytes;          /* bytes from one slot to the next */
    int32_t block_tokens;      /* slots per block */
    const int32_t *blocks;     /* the sequence's block table */
} quill_attention_keys;

/* Keys per softmax chunk in quill__attention_head(s); scores has room for one chunk per head. */
enum { QUILL_ATTENTION_CHUNK = 256 };

/* Returns the start of the K or V row (base: keys->k_data or keys->v_data) of position p. */
static inline const uint8_t *quill__attention_row(const quill_attention_keys *keys,
                                                  const uint8_t *base, int64_t p) {
    return base + (size_t)keys->blocks[p / keys->block_tokens] * keys->block_stride_bytes +
           (size_t)(p % keys->block_tokens) * keys->row_bytes;
}

/* Most query heads the variants of quill__attention_heads take per call. The dispatching
 * quill__attention_heads splits a larger group into calls of at most this many heads. */
enum { QUILL_ATTENTION_MAX_HEADS = 8 };

/* out[head_dim] = sum_p softmax_p(scale * q . k_p) * v_p over positions p in [0, n_keys).
 * q: f32 [head_dim]; scores: f32 [QUILL_ATTENTION_CHUNK] scratch. Keys are visited in position
 * order in chunks of QUILL_ATTENTION_CHUNK positions (chunk c holds positions c * 256 up to the
 * next multiple or n_keys, across blocks), and an online softmax rescales the running sum and
 * output between chunks. The result therefore
 * depends only on q, the stored keys and n_keys, so it has the same bits whatever batch the
 * query came in. It is quill__attention_heads with one head. */
void quill__attention_head(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                           int64_t n_keys, float scale, float *scores, float *out);

/* Attention of n_heads >= 1 query heads that share one KV head (a GQA group), so each K and V
 * element is read and widened once for the whole group. Head h reads q + h * q_stride
 * (f32 [head_dim]) and writes out + h * out_stride (f32 [head_dim]). scores: f32
 * [min(n_heads, QUILL_ATTENTION_MAX_HEADS) * QUILL_ATTENTION_CHUNK] scratch. Each head's output
 * has the same bits as quill__attention_head gives for that head alone: every head keeps its
 * own chunking and operation order, and sharing a widened element changes no value. */
void quill__attention_heads(const float *q, int32_t n_heads, int64_t q_stride, int32_t head_dim,
                            const quill_attention_keys *keys, int64_t n_keys, float scale,
                            float *scores, float *out, int64_t out_stride);

/* The variants behind quill__attention_head(s). The dispatcher picks the AVX2 ones when the
 * kernel dispatch table (dispatch.h) selected AVX2 or AVX-512, so QUILL_KERNELS=ref forces the
 * reference here too. Exposed for tests that compare them. The AVX2 ones need AVX2, FMA and
 * F16C. The _heads variants take 1 <= n_heads <= QUILL_ATTENTION_MAX_HEADS, and each _head
 * variant is its _heads variant with one head. */
void quill__attention_head_ref(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                               int64_t n_keys, float scale, float *scores, float *out);
void quill__attention_head_avx2(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                                int64_t n_keys, float scale, float *scores, float *out);
void quill__attention_heads_ref(const float *q, int32_t n_heads, int64_t q_stride,
                                int32_t head_dim, const quill_attention_keys *keys, int64_t n_keys,
                                float scale, float *scores, float *out, int64_t out_stride);
void quill__attention_heads_avx2(const float *q, int32_t n_heads, int64_t q_stride,
                                 int32_t head_dim, const quill_attention_keys *keys,
                                 int64_t n_keys, float scale, float *scores, float *out,
                                 int64_t out_stride);

/* True when this build and CPU can run quill__attention_head_avx2. */
bool quill__attention_has_avx2(void);

#endif
