/*
 * One-group tiles of packed weights (layouts in kernels/packed.h): y for the 8 rows of one row
 * group and up to PACKED_TILE_TOKENS tokens, in 256-bit vectors. Included by the AVX2 packed
 * kernels (avx2/gemm_packed.c) and, after defining QUILL_X86_USE_VNNI to 1, by the AVX-512
 * ones (avx512/gemm_packed*.c, which add two-group tiles in 512-bit vectors).
 *
 * Per group block, the weights are unpacked once into vectors of unsigned levels, chunk c
 * holding 4 consecutive elements of each row in 32-bit lane r. For each token, group_dot
 * multiplies them with 4 broadcast activation bytes per chunk and leaves the 8 rows' exact int32
 * block (or sub-block) sums in the 8 lanes. With VNNI one vpdpbusd does this per chunk. Without
 * VNNI, maddubs gives int16 pair sums, which add over several chunks while they cannot overflow,
 * and one madd with 1 widens them. Both give the same integers, so both builds compute the per-pair
 * arithmetic of packed.h, which is the exact vec_dot's (avx2/dot_q4_q5_q8_impl.h is_exact,
 * avx2/dot_k_impl.h), and each value equals the unpacked row's bit for bit.
 *
 * The maddubs path needs levels <= 63 (2 * 63 * 127 < 32767), so it serves Q4_0, Q4_1, Q5_0,
 * Q5_1, Q4_K, Q5_K and Q6_K but not packed Q8_0, whose levels are q + 128.
 */
#ifndef QUILL_KERNELS_AVX2_PACKED_GROUP_TILES_H
#define QUILL_KERNELS_AVX2_PACKED_GROUP_TILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/avx2/x86_common.h"
#include "kernels/blocks.h"
#include "kernels/packed.h"

/* Tokens per register tile. With VNNI (32 vector registers): 8 level vectors, 8 accumulators and
 * a few temporaries use 22. AVX2 has 16 registers, so some level vectors and accumulators stay
 * in L1 between uses. Those loads cost less than the activation broadcasts and scale products
 * that smaller tiles repeat. AVX2 prefill of 8192 x 2048 matrices (64 tokens, 1 thread, AMD
 * EPYC) ran at 166 GFLOP/s with 4 tokens against 187 with 8 for Q4_K, 125 against 143 for Q6_K
 * and about 180 against 189 for Q4_0. */
enum { PACKED_TILE_TOKENS = 8 };

/* Software prefetch of the group stream, PREFETCH_BYTES ahead, for tiles of 2 to 8 tokens
 * (batched decode): there the weights stream from memory once while the arithmetic per byte
 * is 2-8 times decode's, and the hardware prefetchers fall behind. Measured with the AVX-512
 * tiles on an 8192 x 2048 Q4_0 matrix with 8 tokens and 2 threads (AMD EPYC), in group pairs.
 * Results: 515 GFLOP/s 4 KB ahead, 528 at 8 KB, 644 at 16 KB and 629-659 at 32 KB. Single groups
 * ran at 375 without prefetch and 510 at 4 KB. One-token decode is faster without it (the hardware
 * prefetchers keep up with a single stream). Prefill runs full token tiles over weights its first
 * tile brought into cache, where the extra prefetches cost nothing measurable. */
enum { PREFETCH_BYTES = 32768, PREFETCH_MIN_TOKENS = 2, PREFETCH_MAX_TOKENS = 8 };

/* Group block bytes and offsets of each packed type (packed.h). */
enum { GROUP_BLOCK_Q4_0 = 144, GROUP_BLOCK_Q8_0 = 272 };
enum { GROUP_BLOCK_Q4_1 = 160, GROUP_BLOCK_Q5_0 = 176, GROUP_BLOCK_Q5_1 = 192 };
enum { Q4_K_QS = 128, GROUP_BLOCK_Q4_K = QUILL_PACK_ROWS * sizeof(quill_block_q4_k) };
enum {
    Q5_K_QH = 128,
    Q5_K_QS = 384,
    GROUP_BLOCK_Q5_K = QUILL_PACK_ROWS * sizeof(quill_block_q5_k)
};
enum { Q6_K_SCALES = 16, Q6_K_SECTIONS = 144, Q6_K_SECTION_BYTES = 384, Q6_K_PART_BYTES = 128 };
enum { GROUP_BLOCK_Q6_K = QUILL_PACK_ROWS * sizeof(quill_block_q6_k) };

/* Chunks whose maddubs pair sums add in int16 without overflow on the maddubs path: 8 for
 * 4-bit levels (8 * 2 * 15 * 127 = 30480), 4 for 5-bit (31496) and 2 for 6-bit (32004). */
enum { CHUNKS_PER_SUM_4_BIT = 8, CHUNKS_PER_SUM_5_BIT = 4, CHUNKS_PER_SUM_6_BIT = 2 };

/* Returns the 4 bytes at `bytes` in every 32-bit lane. */
QUILL_X86_INLINE __m256i broadcast_4_bytes(const int8_t *bytes) {
    int32_t value;
    memcpy(&value, bytes, sizeof(value));
    return _mm256_set1_epi32(value);
}

/* Prefetches one group block PREFETCH_BYTES ahead when the tile has 2 to 8 tokens. */
QUILL_X86_INLINE void prefetch_group_block(const uint8_t *block, size_t group_block_bytes,
                                           int n_tokens) {
    if (n_tokens >= PREFETCH_MIN_TOKENS && n_tokens <= PREFETCH_MAX_TOKENS) {
        for (size_t line = 0; line < group_block_bytes; line += 64) {
            _mm_prefetch((const char *)block + PREFETCH_BYTES + line, _MM_HINT_T0);
        }
    }
}

/* Returns start + in lane r the sum over chunks c < n_chunks of the products of bytes 4r .. 4r + 3
 * of levels[c] (unsigned) with the 4 activation bytes at x + 4c: exact int32. On the maddubs path
 * chunks_per_sum (CHUNKS_PER_SUM_*, a divisor of n_chunks) chunks add in int16. With VNNI, 8
 * chunks run as two chains of 4, which halves the dependent latency. */
QUILL_X86_INLINE __m256i group_dot(__m256i start, const __m256i *levels, int n_chunks,
                                   int chunks_per_sum, const int8_t *x) {
#if QUILL_X86_USE_VNNI
    (void)chunks_per_sum;
    if (n_chunks == 8) {
        __m256i low = start;
        __m256i high = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            low = _mm256_dpbusd_epi32(low, levels[c], broadcast_4_bytes(x + 4 * c));
            high = _mm256_dpbusd_epi32(high, levels[c + 4], broadcast_4_bytes(x + 16 + 4 * c));
        }
        return _mm256_add_epi32(low, high);
    }
    __m256i sum = start;
    for (int c = 0; c < n_chunks; c++) {
        sum = _mm256_dpbusd_epi32(sum, levels[c], broadcast_4_bytes(x + 4 * c));
    }
    return sum;
#else
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i sum = start;
    for (int first = 0; first < n_chunks; first += chunks_per_sum) {
        __m256i pairs = _mm256_maddubs_epi16(levels[first], broadcast_4_bytes(x + 4 * first));
        for (int c = first + 1; c < first + chunks_per_sum; c++) {
            pairs = _mm256_add_epi16(pairs,
                                     _mm256_maddubs_epi16(levels[c], broadcast_4_bytes(x + 4 * c)));
        }
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, ones));
    }
    return sum;
#endif
}

/* Returns a sub-block scale of the 8 rows (int32 lane r, |scale| < 32768) in the form that
 * group_dot_scaled takes: unchanged with VNNI, else repeated in both int16 halves of the lane. */
QUILL_X86_INLINE __m256i group_scale(__m256i scales) {
#if QUILL_X86_USE_VNNI
    return scales;
#else
    return _mm256_blend_epi16(scales, _mm256_slli_epi32(scales, 16), 0xaa);
#endif
}

/* Returns isum + in lane r scale_r * (offset + the group_dot sum of the chunks): exact int32. scale
 * comes from group_scale. offset must be even with |offset| / 2 <= 32767. With VNNI, offset
 * starts the dot chain and one vpmulld applies the scale. On the maddubs path, madd multiplies
 * each int16 pair sum by the scale. */
QUILL_X86_INLINE __m256i group_dot_scaled(__m256i isum, const __m256i *levels, int n_chunks,
                                          int chunks_per_sum, const int8_t *x, int32_t offset,
                                          __m256i scale) {
#if QUILL_X86_USE_VNNI
    __m256i sum = group_dot(_mm256_set1_epi32(offset), levels, n_chunks, chunks_per_sum, x);
    return _mm256_add_epi32(isum, _mm256_mullo_epi32(sum, scale));
#else
    for (int first = 0; first < n_chunks; first += chunks_per_sum) {
        __m256i pairs = _mm256_maddubs_epi16(levels[first], broadcast_4_bytes(x + 4 * first));
        for (int c = first + 1; c < first + chunks_per_sum; c++) {
            pairs = _mm256_add_epi16(pairs,
                                     _mm256_maddubs_epi16(levels[c], broadcast_4_bytes(x + 4 * c)));
        }
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, scale));
    }
    if (offset != 0) {
        /* scale * offset as the madd of (scale, scale) with (offset / 2, offset / 2). */
        isum = _mm256_add_epi32(isum,
                                _mm256_madd_epi16(scale, _mm256_set1_epi16((int16_t)(offset / 2))));
    }
    return isum;
#endif
}

/* Offsets in a Q4_K or Q5_K group block (packed.h): the 8 rows' fp16 dmin, then the low and
 * high planes of their 6-bit sub-block scales and mins. */
enum { K_GROUP_DMIN = 16, K_GROUP_LOW_PLANE = 32, K_GROUP_HIGH_PLANE = 96 };

/* The 8 rows' scales and mins of one Q4_K or Q5_K super-block: scales[j] holds sc_j of row r in
 * int32 lane r; min_pairs[i] holds m_{2i} and m_{2i+1} of row r as the int16 pair of lane r. */
typedef struct k_scales {
    __m256i scales[8];
    __m256i min_pairs[4];
} k_scales;

/* Decodes the low and high planes of a Q4_K or Q5_K group block into k_scales. */
QUILL_X86_INLINE void decode_k_scales(const uint8_t *block, k_scales *out) {
    const __m256i mask4 = _mm256_set1_epi8(0x0f);
    const __m256i mask2 = _mm256_set1_epi8(0x03);
    __m256i low_0_3 = _mm256_loadu_si256((const __m256i *)(block + K_GROUP_LOW_PLANE));
    __m256i low_4_7 = _mm256_loadu_si256((const __m256i *)(block + K_GROUP_LOW_PLANE + 32));
    __m256i high = _mm256_loadu_si256((const __m256i *)(block + K_GROUP_HIGH_PLANE));
    /* Byte 8j + r of each vector: sc_j or m_j of row r, for j in 0..3 or 4..7. */
    __m256i top_sc_0_3 = _mm256_slli_epi16(_mm256_and_si256(high, mask2), 4);
    __m256i top_m_0_3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 2), mask2), 4);
    __m256i top_sc_4_7 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 4), mask2), 4);
    __m256i top_m_4_7 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, 6), mask2), 4);
    __m256i sc_0_3 = _mm256_or_si256(_mm256_and_si256(low_0_3, mask4), top_sc_0_3);
    __m256i sc_4_7 = _mm256_or_si256(_mm256_and_si256(low_4_7, mask4), top_sc_4_7);
    __m256i m_0_3 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low_0_3, 4), mask4), top_m_0_3);
    __m256i m_4_7 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low_4_7, 4), mask4), top_m_4_7);

    const __m128i halves_sc[4] = {
        _mm256_castsi256_si128(sc_0_3), _mm256_extracti128_si256(sc_0_3, 1),
        _mm256_castsi256_si128(sc_4_7), _mm256_extracti128_si256(sc_4_7, 1)};
    const __m128i halves_m[4] = {_mm256_castsi256_si128(m_0_3), _mm256_extracti128_si256(m_0_3, 1),
                                 _mm256_castsi256_si128(m_4_7), _mm256_extracti128_si256(m_4_7, 1)};
    for (int i = 0; i < 4; i++) {
        /* Half i holds sub-blocks 2i (bytes 0-7) and 2i + 1 (bytes 8-15). */
        out->scales[2 * i] = _mm256_cvtepu8_epi32(halves_sc[i]);
        out->scales[2 * i + 1] = _mm256_cvtepu8_epi32(_mm_srli_si128(halves_sc[i], 8));
        __m128i pairs = _mm_unpacklo_epi8(halves_m[i], _mm_srli_si128(halves_m[i], 8));
        out->min_pairs[i] = _mm256_cvtepu8_epi16(pairs);
    }
}

/* Returns the 8 rows' mins term of one Q4_K or Q5_K super-block for one token: in lane r the exact
 * sum_j m_j * (activation sum of sub-block j) of row r. */
QUILL_X86_INLINE __m256i k_mins(const k_scales *scales, const quill_block_q8_k *x) {
    /* Activation sums of the 8 sub-blocks as int16 (at most 32 * 128 in magnitude). */
    __m128i sub_sums = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)x->bsums),
                                      _mm_loadu_si128((const __m128i *)(x->bsums + 16)));
    __m256i mins = _mm256_setzero_si256();
    mins = quill_x86_madd_i16_add(mins, scales->min_pairs[0], _mm256_broadcastd_epi32(sub_sums));
    mins = quill_x86_madd_i16_add(mins, scales->min_pairs[1],
                                  _mm256_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0x55)));
    mins = quill_x86_madd_i16_add(mins, scales->min_pairs[2],
                                  _mm256_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0xaa)));
    mins = quill_x86_madd_i16_add(mins, scales->min_pairs[3],
                                  _mm256_broadcastd_epi32(_mm_shuffle_epi32(sub_sums, 0xff)));
    return mins;
}

/* Computes y[t * y_stride + r] for the 8 rows of one Q4_0 (or, with VNNI only, Q8_0) group and
 * tokens [0, n_tokens), n_tokens <= PACKED_TILE_TOKENS (a constant at each call site, so the loops
 * unroll), with prepared Q8_0 activation rows. Per block and token the dot starts from the
 * prepared offset (-8 or -128 times the activation sum), then one conversion, one scale product
 * (d_w of the 8 rows times d_x) and one FMA update the 8 (row, token) accumulators. */
QUILL_X86_INLINE void packed_tile(int is_q8, int64_t n_blocks, const uint8_t *group,
                                  const uint8_t *activations, size_t activation_row_bytes,
                                  int n_tokens, float *y, int64_t y_stride) {
    const size_t group_block_bytes = is_q8 ? GROUP_BLOCK_Q8_0 : GROUP_BLOCK_Q4_0;
    const size_t extras = quill__q8_0_prepared_extras_offset(n_blocks);
    /* The f32 scales, then the Q4_0 offsets, then the Q8_0 offsets (packed.h). */
    const size_t offsets = extras + (size_t)n_blocks * 4u * (is_q8 ? 2u : 1u);
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    __m256 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm256_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * group_block_bytes;
        prefetch_group_block(block, group_block_bytes, n_tokens);
        __m256 d_w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));
        /* For k < 4, chunk k contains elements 4k .. 4k + 3 and chunk k + 4 elements 16 + 4k ..
         * 16 + 4k + 3. */
        __m256i levels[8];
        if (is_q8) {
            for (int k = 0; k < 8; k++) {
                levels[k] = _mm256_loadu_si256((const __m256i *)(block + 16 + 32 * k));
            }
        } else {
            for (int k = 0; k < 4; k++) {
                __m256i pairs = _mm256_loadu_si256((const __m256i *)(block + 16 + 32 * k));
                levels[k] = _mm256_and_si256(pairs, low_mask);
                levels[k + 4] = _mm256_and_si256(_mm256_srli_epi16(pairs, 4), low_mask);
            }
        }

        for (int t = 0; t < n_tokens; t++) {
            const uint8_t *row = activations + (size_t)t * activation_row_bytes;
            const int8_t *x = (const int8_t *)(row + (size_t)b * sizeof(quill_block_q8_0) + 2);
            float d_x;
            int32_t offset;
            memcpy(&d_x, row + extras + (size_t)b * 4u, sizeof(d_x));
            memcpy(&offset, row + offsets + (size_t)b * 4u, sizeof(offset));
            __m256i sums_i32 =
                group_dot(_mm256_set1_epi32(offset), levels, 8, CHUNKS_PER_SUM_4_BIT, x);
            __m256 sums = _mm256_cvtepi32_ps(sums_i32);
            __m256 scale = _mm256_mul_ps(d_w, _mm256_set1_ps(d_x));
            acc[t] = _mm256_fmadd_ps(scale, sums, acc[t]);
        }
    }

    for (int t = 0; t < n_tokens; t++) {
        _mm256_storeu_ps(y + t * y_stride, acc[t]);
    }
}

/* Adds one Q4_K or Q5_K super-block's float terms to the 8 (row, token) accumulators:
 * acc = fma(d_w * d_x, isum, acc), then acc = fma(-(dmin_w * d_x), mins, acc). */
QUILL_X86_INLINE void k_accumulate(const uint8_t *block, const k_scales *scales,
                                   const uint8_t *activations, size_t activation_row_bytes,
                                   int64_t b, int n_tokens, const __m256i *isum, __m256 *acc) {
    __m256 d_w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));
    __m256 dmin_w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + K_GROUP_DMIN)));
    for (int t = 0; t < n_tokens; t++) {
        const quill_block_q8_k *x =
            (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
        __m256i mins = k_mins(scales, x);
        float d_x;
        memcpy(&d_x, x->d, sizeof(d_x));
        __m256 d_x8 = _mm256_set1_ps(d_x);
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d_w, d_x8), _mm256_cvtepi32_ps(isum[t]), acc[t]);
        acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin_w, d_x8), _mm256_cvtepi32_ps(mins), acc[t]);
    }
}

/* Computes y[t * y_stride + r] for the 8 rows of one Q4_K group and tokens [0, n_tokens), n_tokens
 * <= PACKED_TILE_TOKENS, with Q8_K activation rows. */
QUILL_X86_INLINE void packed_tile_q4_k(int64_t n_blocks, const uint8_t *group,
                                       const uint8_t *activations, size_t activation_row_bytes,
                                       int n_tokens, float *y, int64_t y_stride) {
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    __m256 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm256_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * GROUP_BLOCK_Q4_K;
        prefetch_group_block(block, GROUP_BLOCK_Q4_K, n_tokens);
        k_scales scales;
        decode_k_scales(block, &scales);
        __m256i isum[PACKED_TILE_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            isum[t] = _mm256_setzero_si256();
        }
        for (int j = 0; j < 8; j++) {
            /* Sub-block j: the low (even j) or high (odd j) nibbles of chunks 8(j/2) .. +7. */
            const uint8_t *chunks = block + Q4_K_QS + 32 * 8 * (j / 2);
            __m256i levels[8];
            for (int c = 0; c < 8; c++) {
                __m256i pairs = _mm256_loadu_si256((const __m256i *)(chunks + 32 * c));
                levels[c] = j % 2 == 0 ? _mm256_and_si256(pairs, low_mask)
                                       : _mm256_and_si256(_mm256_srli_epi16(pairs, 4), low_mask);
            }
            const __m256i scale = group_scale(scales.scales[j]);
            for (int t = 0; t < n_tokens; t++) {
                const quill_block_q8_k *x =
                    (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
                isum[t] = group_dot_scaled(isum[t], levels, 8, CHUNKS_PER_SUM_4_BIT, x->qs + 32 * j,
                                           0, scale);
            }
        }
        k_accumulate(block, &scales, activations, activation_row_bytes, b, n_tokens, isum, acc);
    }

    for (int t = 0; t < n_tokens; t++) {
        _mm256_storeu_ps(y + t * y_stride, acc[t]);
    }
}

/* Bit j (< 8) of each byte of qh, moved to bit 4: 16-bit shifts carry bits between bytes only
 * where the mask clears them. */
QUILL_X86_INLINE __m256i fifth_bits(__m256i qh, int j) {
    __m256i moved = j >= 4 ? _mm256_srli_epi16(qh, j - 4) : _mm256_slli_epi16(qh, 4 - j);
    return _mm256_and_si256(moved, _mm256_set1_epi8(0x10));
}

/* Where the fields of a Q4_1, Q5_0 or Q5_1 group block sit (packed.h), and which activations the
 * type takes: with a min (Q4_1, Q5_1) Q8_1 blocks, else prepared Q8_0 rows. */
typedef struct legacy_group_layout {
    bool has_min;             /* Q4_1, Q5_1: fp16 m of the 8 rows at byte 16 */
    bool has_qh;              /* Q5_0, Q5_1: 32 bytes of fifth bits */
    size_t group_block_bytes; /* GROUP_BLOCK_Q4_1, _Q5_0 or _Q5_1 */
    size_t qh;                /* offset of the fifth bits */
    size_t qs;                /* offset of the nibble chunks */
    int chunks_per_sum;       /* CHUNKS_PER_SUM_4_BIT or _5_BIT */
} legacy_group_layout;

QUILL_X86_INLINE legacy_group_layout legacy_group_layout_of(bool has_min, bool has_qh) {
    legacy_group_layout layout = {
        .has_min = has_min,
        .has_qh = has_qh,
        .group_block_bytes = GROUP_BLOCK_Q5_0,
        .qh = has_min ? 32u : 16u,
        .chunks_per_sum = has_qh ? CHUNKS_PER_SUM_5_BIT : CHUNKS_PER_SUM_4_BIT,
    };
    if (has_min) {
        layout.group_block_bytes = has_qh ? GROUP_BLOCK_Q5_1 : GROUP_BLOCK_Q4_1;
    }
    layout.qs = layout.qh + (has_qh ? 32u : 0u);
    return layout;
}

/* Computes y[t * y_stride + r] for the 8 rows of one Q4_1 (has_min), Q5_0 (has_qh) or Q5_1 (both)
 * group and tokens [0, n_tokens), n_tokens <= PACKED_TILE_TOKENS. Level vector c contains the low
 * nibbles of chunk c (c < 4) or the high nibbles of chunk c - 4, ORed with bit c of every
 * fifth-bit byte moved to bit 4. Q5_0 takes prepared Q8_0 rows, and its dot starts from twice the
 * prepared Q4_0 offset (-16 times the activation sum), then acc = fma(d_w * d_x, sum, acc). Q4_1
 * and Q5_1 take Q8_1 rows: acc = fma(d_w * d_x, sum, acc), then acc = fma(m_w, s_x, acc). This is
 * the exact vec_dot's arithmetic (avx2/dot_q4_q5_q8_impl.h). */
QUILL_X86_INLINE void packed_tile_legacy(bool has_min, bool has_qh, int64_t n_blocks,
                                         const uint8_t *group, const uint8_t *activations,
                                         size_t activation_row_bytes, int n_tokens, float *y,
                                         int64_t y_stride) {
    const legacy_group_layout layout = legacy_group_layout_of(has_min, has_qh);
    /* Q5_0 only: the f32 scales, then the Q4_0 offsets of the prepared rows (packed.h). */
    const size_t extras = quill__q8_0_prepared_extras_offset(n_blocks);
    const size_t offsets = extras + (size_t)n_blocks * 4u;
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    __m256 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm256_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * layout.group_block_bytes;
        prefetch_group_block(block, layout.group_block_bytes, n_tokens);
        __m256 d_w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));
        __m256 m_w = has_min ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(block + 16)))
                             : _mm256_setzero_ps();
        __m256i levels[8];
        for (int k = 0; k < 4; k++) {
            __m256i pairs = _mm256_loadu_si256((const __m256i *)(block + layout.qs + 32 * k));
            levels[k] = _mm256_and_si256(pairs, low_mask);
            levels[k + 4] = _mm256_and_si256(_mm256_srli_epi16(pairs, 4), low_mask);
        }
        if (has_qh) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(block + layout.qh));
            for (int c = 0; c < 8; c++) {
                levels[c] = _mm256_or_si256(levels[c], fifth_bits(qh, c));
            }
        }

        for (int t = 0; t < n_tokens; t++) {
            const uint8_t *row = activations + (size_t)t * activation_row_bytes;
            if (has_min) {
                const quill_block_q8_1 *x = (const quill_block_q8_1 *)row + b;
                __m256i sums =
                    group_dot(_mm256_setzero_si256(), levels, 8, layout.chunks_per_sum, x->qs);
                __m256 scale = _mm256_mul_ps(d_w, _mm256_set1_ps(quill_x86_load_fp16(x->d)));
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[t]);
                acc[t] = _mm256_fmadd_ps(m_w, _mm256_set1_ps(quill_x86_load_fp16(x->s)), acc[t]);
                continue;
            }
            const int8_t *x = (const int8_t *)(row + (size_t)b * sizeof(quill_block_q8_0) + 2);
            float d_x;
            int32_t offset_q4;
            memcpy(&d_x, row + extras + (size_t)b * 4u, sizeof(d_x));
            memcpy(&offset_q4, row + offsets + (size_t)b * 4u, sizeof(offset_q4));
            __m256i sums =
                group_dot(_mm256_set1_epi32(2 * offset_q4), levels, 8, layout.chunks_per_sum, x);
            __m256 scale = _mm256_mul_ps(d_w, _mm256_set1_ps(d_x));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[t]);
        }
    }

    for (int t = 0; t < n_tokens; t++) {
        _mm256_storeu_ps(y + t * y_stride, acc[t]);
    }
}

/* Computes y[t * y_stride + r] for the 8 rows of one Q5_K group and tokens [0, n_tokens), n_tokens
 * <= PACKED_TILE_TOKENS, with Q8_K activation rows: the Q4_K tile with a fifth bit, which each
 * level vector ORs from bit j of the group's qh chunk into sub-block j's nibbles. Sub-blocks 2g
 * and 2g + 1 unpack together from one load of their nibble and fifth-bit chunks, which raised
 * the AVX-512 decode from 24 to 28-29 GB/s (1 thread, 8192 x 2048, AMD EPYC). */
QUILL_X86_INLINE void packed_tile_q5_k(int64_t n_blocks, const uint8_t *group,
                                       const uint8_t *activations, size_t activation_row_bytes,
                                       int n_tokens, float *y, int64_t y_stride) {
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    __m256 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm256_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * GROUP_BLOCK_Q5_K;
        prefetch_group_block(block, GROUP_BLOCK_Q5_K, n_tokens);
        k_scales scales;
        decode_k_scales(block, &scales);
        __m256i isum[PACKED_TILE_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            isum[t] = _mm256_setzero_si256();
        }
        for (int g = 0; g < 4; g++) {
            const uint8_t *chunks = block + Q5_K_QS + 32 * 8 * g;
            __m256i levels[2][8];
            for (int c = 0; c < 8; c++) {
                __m256i pairs = _mm256_loadu_si256((const __m256i *)(chunks + 32 * c));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(block + Q5_K_QH + 32 * c));
                levels[0][c] =
                    _mm256_or_si256(_mm256_and_si256(pairs, low_mask), fifth_bits(qh, 2 * g));
                levels[1][c] =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(pairs, 4), low_mask),
                                    fifth_bits(qh, 2 * g + 1));
            }
            for (int half = 0; half < 2; half++) {
                const int j = 2 * g + half;
                const __m256i scale = group_scale(scales.scales[j]);
                for (int t = 0; t < n_tokens; t++) {
                    const quill_block_q8_k *x =
                        (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) +
                        b;
                    isum[t] = group_dot_scaled(isum[t], levels[half], 8, CHUNKS_PER_SUM_5_BIT,
                                               x->qs + 32 * j, 0, scale);
                }
            }
        }
        k_accumulate(block, &scales, activations, activation_row_bytes, b, n_tokens, isum, acc);
    }

    for (int t = 0; t < n_tokens; t++) {
        _mm256_storeu_ps(y + t * y_stride, acc[t]);
    }
}

/* Returns -32 times the Q8_K activation sum of Q6_K sub-block j (16 elements): the start of its
 * level sums, which recentres the unsigned levels q to q - 32. */
QUILL_X86_INLINE int32_t level_offset(const quill_block_q8_k *x, int j) {
    return -32 * quill__load_i16(x->bsums + 2 * j);
}

/* Loads the int8 scales of Q6_K sub-block j of the 8 rows of a group block, as int32 lane r. */
QUILL_X86_INLINE __m256i load_scales(const uint8_t *block, int j) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(block + Q6_K_SCALES + 8 * j)));
}

/* Unpacks the 8 level vectors of pass (g, part), part 1 or 2, of a Q6_K group block: low[c] holds
 * elements 4c .. 4c + 3 of sub-block j = g + 4 (part - 1), and high[c] the same elements of
 * sub-block j + 8, for row r in bytes 4r .. 4r + 3. */
QUILL_X86_INLINE void unpack_pass(const uint8_t *block, int g, int part, __m256i low[4],
                                  __m256i high[4]) {
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    const __m256i top_mask = _mm256_set1_epi8(0x30);
    const uint8_t *section = block + Q6_K_SECTIONS + Q6_K_SECTION_BYTES * g;
    for (int c = 0; c < 4; c++) {
        const uint8_t *low_chunk = section + Q6_K_PART_BYTES * part + 32 * c;
        __m256i nibbles = _mm256_loadu_si256((const __m256i *)low_chunk);
        /* After the shift, bits 0-1 and 4-5 of each byte are the top bits of the low- and
         * high-nibble levels. 16-bit shifts carry bits between bytes only where the masks clear
         * them. */
        __m256i top = _mm256_loadu_si256((const __m256i *)(section + 32 * c));
        top = part == 1 ? top : _mm256_srli_epi16(top, 2);
        low[c] = _mm256_or_si256(_mm256_and_si256(nibbles, low_mask),
                                 _mm256_and_si256(_mm256_slli_epi16(top, 4), top_mask));
        high[c] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(nibbles, 4), low_mask),
                                  _mm256_and_si256(top, top_mask));
    }
}

/* Computes y[t * y_stride + r] for the 8 rows of one Q6_K group and tokens [0, n_tokens), n_tokens
 * <= PACKED_TILE_TOKENS, with Q8_K activation rows. A group block is read in 8 passes in address
 * order. Pass (g, part) joins the high bits (part 0) of section g with its low-nibble part 1 or
 * 2 into 4 level vectors of sub-block j = g + 4 (part - 1) and 4 of sub-block j + 8. For each
 * token and sub-block, the dot of (q - 32) with the activations, times the rows' int8 scales,
 * adds to the super-block's int32 sum. Then one conversion, one scale product (d_w of the 8
 * rows times d_x) and one FMA update the 8 (row, token) accumulators. */
QUILL_X86_INLINE void packed_tile_q6_k(int64_t n_blocks, const uint8_t *group,
                                       const uint8_t *activations, size_t activation_row_bytes,
                                       int n_tokens, float *y, int64_t y_stride) {
    __m256 acc[PACKED_TILE_TOKENS];
    for (int t = 0; t < n_tokens; t++) {
        acc[t] = _mm256_setzero_ps();
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * GROUP_BLOCK_Q6_K;
        prefetch_group_block(block, GROUP_BLOCK_Q6_K, n_tokens);
        __m256i isum[PACKED_TILE_TOKENS];
        for (int t = 0; t < n_tokens; t++) {
            isum[t] = _mm256_setzero_si256();
        }
        for (int pass = 0; pass < 8; pass++) {
            const int part = 1 + pass % 2;
            const int j = pass / 2 + 4 * (part - 1);
            __m256i low_levels[4];
            __m256i high_levels[4];
            unpack_pass(block, pass / 2, part, low_levels, high_levels);
            const __m256i low_scales = group_scale(load_scales(block, j));
            const __m256i high_scales = group_scale(load_scales(block, j + 8));
            for (int t = 0; t < n_tokens; t++) {
                const quill_block_q8_k *x =
                    (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
                isum[t] = group_dot_scaled(isum[t], low_levels, 4, CHUNKS_PER_SUM_6_BIT,
                                           x->qs + 16 * j, level_offset(x, j), low_scales);
                isum[t] =
                    group_dot_scaled(isum[t], high_levels, 4, CHUNKS_PER_SUM_6_BIT,
                                     x->qs + 16 * (j + 8), level_offset(x, j + 8), high_scales);
            }
        }
        __m256 d_w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block));
        for (int t = 0; t < n_tokens; t++) {
            const quill_block_q8_k *x =
                (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
            __m256 scale = _mm256_mul_ps(d_w, _mm256_set1_ps(quill__load_f32(x->d)));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(isum[t]), acc[t]);
        }
    }

    for (int t = 0; t < n_tokens; t++) {
        _mm256_storeu_ps(y + t * y_stride, acc[t]);
    }
}

/* Computes one tile of a packed kind (the including file's own numbering) and n_tokens (1 ..
 * PACKED_TILE_TOKENS) tokens: 8 rows, or with AVX-512 16 rows when group_pair_bytes (the
 * distance to the next group) is not 0. Each tile file defines it, and its walk calls it through
 * packed_tile_tokens. */
QUILL_X86_INLINE void packed_tile_kind(int kind, int64_t n_blocks, const uint8_t *group,
                                       size_t group_pair_bytes, const uint8_t *activations,
                                       size_t activation_row_bytes, int n_tokens, float *y,
                                       int64_t y_stride);

/* Computes one tile of n_tokens (1 .. PACKED_TILE_TOKENS) tokens, with the token count turned into
 * a constant so that the tile's loops unroll. */
QUILL_X86_INLINE void packed_tile_tokens(int kind, int64_t n_blocks, const uint8_t *group,
                                         size_t group_pair_bytes, const uint8_t *x,
                                         size_t activation_row_bytes, int64_t n_tokens, float *y,
                                         int64_t y_stride) {
/* One case per token count, so each call gets a constant count. */
#define PACKED_TILE_CASE(count)                                                                    \
    case count:                                                                                    \
        packed_tile_kind(kind, n_blocks, group, group_pair_bytes, x, activation_row_bytes, count,  \
                         y, y_stride);                                                             \
        break
    switch (n_tokens) {
        PACKED_TILE_CASE(1);
        PACKED_TILE_CASE(2);
        PACKED_TILE_CASE(3);
        PACKED_TILE_CASE(4);
        PACKED_TILE_CASE(5);
        PACKED_TILE_CASE(6);
        PACKED_TILE_CASE(7);
    default:
        packed_tile_kind(kind, n_blocks, group, group_pair_bytes, x, activation_row_bytes,
                         PACKED_TILE_TOKENS, y, y_stride);
        break;
    }
#undef PACKED_TILE_CASE
}

/* Walks a rows x tokens range of n_blocks blocks per row in token tiles: pairs of groups (16
 * rows, 512-bit tiles) while two remain and can_pair is true, else single groups. Pairs halve the
 * activation broadcasts and scalings per row. An 8192 x 2048 Q4_0 matrix at 64 tokens went from 506
 * to 666 GFLOP/s with them (2 threads, AMD EPYC). At 8 tokens, with the prefetch of PREFETCH_BYTES,
 * it went from 510 to about 640. One-token decode streams at memory speed either way and keeps
 * single groups. */
QUILL_X86_INLINE void gemm_packed(int kind, bool can_pair, int64_t n_blocks, const void *weights,
                                  size_t weight_row_bytes, int64_t n_rows, const void *activations,
                                  size_t activation_row_bytes, int64_t n_tokens, float *y,
                                  int64_t y_stride) {
    const size_t group_bytes = QUILL_PACK_ROWS * weight_row_bytes;
    int64_t row = 0;
    while (row + QUILL_PACK_ROWS <= n_rows) {
        const bool is_pair = can_pair && n_tokens > 1 && row + 2 * QUILL_PACK_ROWS <= n_rows;
        const uint8_t *group = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
        for (int64_t token = 0; token < n_tokens; token += PACKED_TILE_TOKENS) {
            int64_t left = n_tokens - token;
            packed_tile_tokens(kind, n_blocks, group, is_pair ? group_bytes : 0,
                               (const uint8_t *)activations + (size_t)token * activation_row_bytes,
                               activation_row_bytes,
                               left < PACKED_TILE_TOKENS ? left : PACKED_TILE_TOKENS,
                               y + token * y_stride + row, y_stride);
        }
        row += is_pair ? 2 * QUILL_PACK_ROWS : QUILL_PACK_ROWS;
    }
}

#endif
