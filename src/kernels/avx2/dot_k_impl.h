/*
 * Dot products and tiles of the K-quants (Q4_K, Q5_K, Q6_K; super-blocks of 256) with Q8_K
 * activations, for x86 with AVX2; included by avx2/dot_k.c and avx512/dot_k.c, which define
 * QUILL_X86_NAME(stem) to append their suffix.
 *
 * Per (row, token) pair and super-block: eight exact int32 lanes, lane k holding the sum over
 * each 32-value sub-block's bytes 4k .. 4k + 3 of scale * level * q_x (Q6_K: scale * (level -
 * 32) * q_x). Their horizontal sum is the exact integer isum of the super-block, and Q4_K / Q5_K
 * also form the exact integer sum of min_j * activation sums. Then acc = fma(d_w * d_x, isum,
 * acc) and, for Q4_K / Q5_K, acc = fma(-(dmin_w * d_x), mins, acc) on a scalar in super-block
 * order. Tiles compute every pair with exactly these operations, so vec_dot (a 1 x 1 tile) and
 * every tile shape give bit-identical values.
 */
#include <math.h>

#include "kernels/avx2/x86_common.h"
#include "kernels/blocks.h"

enum {
    KIND_Q4_K,
    KIND_Q5_K,
    KIND_Q6_K,
};

#if QUILL_X86_USE_VNNI
enum { TILE_ROWS = 4, TILE_TOKENS = 4 };
#else
enum { TILE_ROWS = 4, TILE_TOKENS = 2 };
#endif

/* One weight super-block unpacked for reuse across the tokens of a tile. */
typedef struct unpacked_k {
    __m256i levels[8]; /* u8 levels of elements 32k .. 32k + 31 */
    __m256i scales[8]; /* int16 scales for the 16 int16 pair sums of levels[k] */
    __m256i mins;      /* Q4_K / Q5_K: int16 min of sub-block i / 2 in lane i (Q6_K: unused) */
    float d;           /* super-block scale */
    float dmin;        /* super-block min scale (0 for Q6_K) */
} unpacked_k;

QUILL_X86_INLINE size_t k_block_bytes(int kind) {
    if (kind == KIND_Q4_K) {
        return sizeof(quill_block_q4_k);
    }
    return kind == KIND_Q5_K ? sizeof(quill_block_q5_k) : sizeof(quill_block_q6_k);
}

/* Unpacks the nibbles (and for Q5_K the fifth bits) and the 6-bit scales of a Q4_K / Q5_K
 * super-block. */
QUILL_X86_INLINE void unpack_q4_q5_k(int kind, const uint8_t *block, unpacked_k *out) {
    const uint8_t *packed_scales = block + 4;
    const uint8_t *qh = block + 16;
    const uint8_t *qs = kind == KIND_Q4_K ? block + 16 : block + 48;
    out->d = quill_x86_load_fp16(block);
    out->dmin = quill_x86_load_fp16(block + 2);
    __m256i high_bits = _mm256_setzero_si256();
    if (kind == KIND_Q5_K) {
        high_bits = _mm256_loadu_si256((const __m256i *)qh);
    }
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    for (int group = 0; group < 4; group++) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(qs + 32 * group));
        out->levels[2 * group] = _mm256_and_si256(bytes, low_mask);
        out->levels[2 * group + 1] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_mask);
    }
    /* Unpack the 6-bit scales and mins into bytes 0-7 and 8-15 of four words: sub-blocks 0-3
     * keep both in the low 6 bits of words 0 and 1; sub-blocks 4-7 have their low 4 bits in
     * word 2 and their top 2 bits in the top bits of words 0 and 1 (see
     * quill__q4_k_scale_min). */
    uint32_t words[4];
    memcpy(words, packed_scales, 12);
    const uint32_t low6 = 0x3f3f3f3f;
    const uint32_t low4 = 0x0f0f0f0f;
    const uint32_t low2 = 0x03030303;
    words[3] = ((words[2] >> 4) & low4) | (((words[1] >> 6) & low2) << 4);
    uint32_t mins_0_3 = words[1] & low6;
    words[1] = (words[2] & low4) | (((words[0] >> 6) & low2) << 4);
    words[2] = mins_0_3;
    words[0] &= low6;
    __m256i scales_mins = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)words));

    /* Broadcast each scale to 16 int16 lanes; repeat each min twice to match the pairs of
     * 16-value activation sums. */
    __m256i scales_both = _mm256_permute2x128_si256(scales_mins, scales_mins, 0x00);
    for (int j = 0; j < 8; j++) {
        __m256i pick = _mm256_set1_epi16((short)(((2 * j + 1) << 8) | (2 * j)));
        out->scales[j] = _mm256_shuffle_epi8(scales_both, pick);
    }
    __m128i mins = _mm256_extracti128_si256(scales_mins, 1);
    out->mins = _mm256_set_m128i(_mm_unpackhi_epi16(mins, mins), _mm_unpacklo_epi16(mins, mins));

    if (kind == KIND_Q5_K) {
        for (int j = 0; j < 8; j++) {
            /* Bit j of each qh byte, moved to bit 4: 16-bit shifts only move bits between
             * the two bytes above bit 0, which the mask clears. */
            __m256i bit = _mm256_and_si256(_mm256_srli_epi16(high_bits, j), _mm256_set1_epi8(1));
            out->levels[j] = _mm256_or_si256(out->levels[j], _mm256_slli_epi16(bit, 4));
        }
    }
}

/* Unpacks the 6-bit levels and int8 scales of a Q6_K super-block: vector k holds elements
 * 32k .. 32k + 31, whose two halves use scales 2k and 2k + 1. */
QUILL_X86_INLINE void unpack_q6_k(const uint8_t *block, unpacked_k *out) {
    const quill_block_q6_k *q6 = (const quill_block_q6_k *)block;
    out->d = quill_x86_load_fp16(q6->d);
    out->dmin = 0.0f;

    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    const __m256i two_bits = _mm256_set1_epi8(0x30);
    for (int half = 0; half < 2; half++) {
        __m256i ql_0 = _mm256_loadu_si256((const __m256i *)(q6->ql + 64 * half));
        __m256i ql_32 = _mm256_loadu_si256((const __m256i *)(q6->ql + 64 * half + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(q6->qh + 32 * half));
        __m256i *levels = out->levels + 4 * half;
        levels[0] = _mm256_or_si256(_mm256_and_si256(ql_0, low_mask),
                                    _mm256_and_si256(_mm256_slli_epi16(qh, 4), two_bits));
        levels[1] = _mm256_or_si256(_mm256_and_si256(ql_32, low_mask),
                                    _mm256_and_si256(_mm256_slli_epi16(qh, 2), two_bits));
        levels[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_0, 4), low_mask),
                                    _mm256_and_si256(qh, two_bits));
        levels[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_32, 4), low_mask),
                                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits));
    }

    /* Scales 0-7 and 8-15 as int16, each group in both 128-bit lanes. Vector k takes scale 2k
     * in its low lane and 2k + 1 in its high lane. */
    __m256i scales = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)q6->scales));
    __m256i scales_0_7 = _mm256_permute2x128_si256(scales, scales, 0x00);
    __m256i scales_8_15 = _mm256_permute2x128_si256(scales, scales, 0x11);
    for (int k = 0; k < 8; k++) {
        int i = 4 * (k % 4);
        __m256i pick = _mm256_set_m128i(_mm_set1_epi16((short)(((i + 3) << 8) | (i + 2))),
                                        _mm_set1_epi16((short)(((i + 1) << 8) | i)));
        out->scales[k] = _mm256_shuffle_epi8(k < 4 ? scales_0_7 : scales_8_15, pick);
    }

    out->mins = _mm256_setzero_si256();
}

/* One Q8_K activation block loaded for the rows of a tile. */
typedef struct activation_k {
    __m256i values[8]; /* q_x of elements 32k .. 32k + 31 */
    __m256i offset[8]; /* Q6_K: 32 * (pair sums of q_x), which recentres the levels */
    __m256i sums;      /* the 16 int16 sums of q_x over 16-value groups */
    float d;           /* block scale */
} activation_k;

QUILL_X86_INLINE void load_activation_k(int kind, const quill_block_q8_k *x, activation_k *out) {
    out->d = quill__load_f32(x->d);
    out->sums = _mm256_loadu_si256((const __m256i *)x->bsums);
    for (int k = 0; k < 8; k++) {
        out->values[k] = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * k));
        if (kind == KIND_Q6_K) {
            out->offset[k] = _mm256_maddubs_epi16(_mm256_set1_epi8(32), out->values[k]);
        }
    }
}

QUILL_X86_INLINE void unpack_k(int kind, const uint8_t *block, unpacked_k *out) {
    if (kind == KIND_Q6_K) {
        unpack_q6_k(block, out);
    } else {
        unpack_q4_q5_k(kind, block, out);
    }
}

/* Adds one super-block of a (row, token) pair to its f32 sum (the file comment's arithmetic,
 * which is the packed kernels' of packed.h, so packed and unpacked rows give the same values).
 * NOTE: the horizontal sum per pair and super-block costs the row-major Q5_K and Q6_K tiles
 * 15-18% of their prefill rate (AVX-512: Q5_K 77 -> 65, Q6_K 90 -> 73 GFLOP/s; 64 tokens,
 * 8192 x 2048, 1 thread, AMD EPYC). Only matrices that are not packed (row counts not a multiple
 * of 8) still use these tiles. */
QUILL_X86_INLINE void accumulate_k(int kind, const unpacked_k *w, const activation_k *x,
                                   float *sum) {
    __m256i lanes = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        __m256i pairs = _mm256_maddubs_epi16(w->levels[k], x->values[k]);
        if (kind == KIND_Q6_K) {
            pairs = _mm256_sub_epi16(pairs, x->offset[k]);
        }
        lanes = quill_x86_madd_i16_add(lanes, pairs, w->scales[k]);
    }
    *sum = fmaf(w->d * x->d, (float)quill_x86_hsum_i32(lanes), *sum);
    if (kind != KIND_Q6_K) {
        /* sum_j min_j * (sums of q_x over sub-block j), exact in int32. Q6_K has no mins, and
         * an FMA with a zero product could still turn -0 into +0. */
        int32_t mins = quill_x86_hsum_i32(_mm256_madd_epi16(w->mins, x->sums));
        *sum = fmaf(-(w->dmin * x->d), (float)mins, *sum);
    }
}

/* Computes the pairs of rows [0, n_rows) x tokens [0, n_tokens), bounds at most the tile.
 * When prefetch is not NULL, each super-block step also prefetches the next n_rows *
 * weight_row_bytes bytes from there, spread evenly over the steps (decode streams weights from
 * memory; see quill_x86_prefetch_step). Prefetching never changes a value. */
QUILL_X86_INLINE void tile_k(int kind, int64_t n_blocks, const uint8_t *weights,
                             size_t weight_row_bytes, int n_rows, const uint8_t *activations,
                             size_t activation_row_bytes, int n_tokens, float *y, int64_t y_stride,
                             const uint8_t *prefetch) {
    const size_t w_bytes = k_block_bytes(kind);
    float sum[TILE_ROWS][TILE_TOKENS];
    for (int r = 0; r < n_rows; r++) {
        for (int t = 0; t < n_tokens; t++) {
            sum[r][t] = 0.0f;
        }
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        if (prefetch != NULL) {
            quill_x86_prefetch_step(prefetch + (size_t)b * (size_t)n_rows * w_bytes,
                                    (size_t)n_rows * w_bytes, (size_t)n_rows * weight_row_bytes);
        }
        if (n_tokens == 1) {
            /* Decode: unpack one row at a time so the block stays in registers. */
            activation_k x;
            load_activation_k(kind, (const quill_block_q8_k *)activations + b, &x);
            for (int r = 0; r < n_rows; r++) {
                unpacked_k w;
                unpack_k(kind, weights + (size_t)r * weight_row_bytes + (size_t)b * w_bytes, &w);
                accumulate_k(kind, &w, &x, &sum[r][0]);
            }
            continue;
        }

        unpacked_k unpacked[TILE_ROWS];
        for (int r = 0; r < n_rows; r++) {
            unpack_k(kind, weights + (size_t)r * weight_row_bytes + (size_t)b * w_bytes,
                     &unpacked[r]);
        }
        for (int t = 0; t < n_tokens; t++) {
            activation_k x;
            load_activation_k(
                kind, (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b,
                &x);
            for (int r = 0; r < n_rows; r++) {
                accumulate_k(kind, &unpacked[r], &x, &sum[r][t]);
            }
        }
    }

    for (int r = 0; r < n_rows; r++) {
        for (int t = 0; t < n_tokens; t++) {
            y[t * y_stride + r] = sum[r][t];
        }
    }
}

QUILL_X86_INLINE void gemm_k(int kind, int64_t n, const void *weights, size_t weight_row_bytes,
                             int64_t n_rows, const void *activations, size_t activation_row_bytes,
                             int64_t n_tokens, float *y, int64_t y_stride) {
    int64_t n_blocks = n / QUILL_QK_K;
    for (int64_t row = 0; row < n_rows; row += TILE_ROWS) {
        const uint8_t *w = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
        int rows = n_rows - row < TILE_ROWS ? (int)(n_rows - row) : TILE_ROWS;
        for (int64_t token = 0; token < n_tokens; token += TILE_TOKENS) {
            const uint8_t *x = (const uint8_t *)activations + (size_t)token * activation_row_bytes;
            int tokens = n_tokens - token < TILE_TOKENS ? (int)(n_tokens - token) : TILE_TOKENS;
            float *y_tile = y + token * y_stride + row;
            if (rows == TILE_ROWS && tokens == TILE_TOKENS) {
                tile_k(kind, n_blocks, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes,
                       TILE_TOKENS, y_tile, y_stride, NULL);
            } else if (rows == TILE_ROWS && tokens == 1) {
                /* Decode reads each tile once, straight from memory. Prefetching two tiles
                 * ahead (4 to 7 KB per tile) hides more latency than one: Q6_K 16 -> 19.7 GB/s
                 * on a 32768 x 2048 matrix, AMD EPYC. */
                const uint8_t *next = n_tokens == 1 ? w + 2 * TILE_ROWS * weight_row_bytes : NULL;
                tile_k(kind, n_blocks, w, weight_row_bytes, TILE_ROWS, x, activation_row_bytes, 1,
                       y_tile, y_stride, next);
            } else {
                tile_k(kind, n_blocks, w, weight_row_bytes, rows, x, activation_row_bytes, tokens,
                       y_tile, y_stride, NULL);
            }
        }
    }
}

#define QUILL_DEFINE_K(kind, stem)                                                                 \
    float QUILL_X86_NAME(quill__dot_##stem)(int64_t n, const void *weights,                        \
                                            const void *activations) {                             \
        float result;                                                                              \
        tile_k(kind, n / QUILL_QK_K, weights, 0, 1, activations, 0, 1, &result, 0, NULL);          \
        return result;                                                                             \
    }                                                                                              \
    void QUILL_X86_NAME(quill__gemm_##stem)(int64_t n, const void *weights,                        \
                                            size_t weight_row_bytes, int64_t n_rows,               \
                                            const void *activations, size_t activation_row_bytes,  \
                                            int64_t n_tokens, float *y, int64_t y_stride) {        \
        gemm_k(kind, n, weights, weight_row_bytes, n_rows, activations, activation_row_bytes,      \
               n_tokens, y, y_stride);                                                             \
    }

QUILL_DEFINE_K(KIND_Q4_K, q4_k_q8_k)
QUILL_DEFINE_K(KIND_Q5_K, q5_k_q8_k)
QUILL_DEFINE_K(KIND_Q6_K, q6_k_q8_k)
