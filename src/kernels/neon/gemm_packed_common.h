/*
 * Inline pieces shared by the NEON packed tiles (gemm_packed_impl.h, gemm_packed_q6_k_impl.h):
 * the tile size, the chunk dot products, fp16 loads and output stores. The dot products use SDOT
 * where the including file is compiled for the dot-product extension (__ARM_FEATURE_DOTPROD),
 * else the widening multiply of the ARMv8.0 base set. Both give exact int32 sums, so both paths
 * give the same bits.
 */
#ifndef QUILL_KERNELS_NEON_GEMM_PACKED_COMMON_H
#define QUILL_KERNELS_NEON_GEMM_PACKED_COMMON_H

#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/blocks.h"
#include "kernels/packed.h"

#define QUILL_NEON_INLINE static inline __attribute__((always_inline))
/* Unrolls the loop that follows: at -O2 GCC keeps short loops over registers rolled, and then
 * arrays of vectors indexed by the loop variable live on the stack. */
#define QUILL_NEON_UNROLL _Pragma("GCC unroll 16")

/* Tokens per pass over a group's blocks. With 4 tokens, the 16 level vectors of a block (8 chunks
 * of 2 row halves), 2 accumulators per token and a few temporaries come to about 30 of the 32
 * vector registers. GCC 12 (-O2) still keeps a few accumulators on the stack between blocks. */
enum { TILE_TOKENS = 4 };

/* Returns start + in lane r the sum over chunks c < 8 of the products of bytes 4r .. 4r + 3 of
 * levels[c] with the activation bytes 4c .. 4c + 3 of x_low (c < 4) or x_high (c >= 4, bytes
 * 4c - 16 ..): exact int32. is_narrow: every |level| <= 31, so 8 products of one int16 lane
 * (at most 8 * 31 * 128 = 31744 in magnitude) add without overflow on the widening path. */
QUILL_NEON_INLINE int32x4_t dot_8_chunks(int32x4_t start, const int8x16_t levels[8],
                                         int8x16_t x_low, int8x16_t x_high, int is_narrow) {
#if defined(__ARM_FEATURE_DOTPROD)
    (void)is_narrow;
    int32x4_t first = vdotq_laneq_s32(start, levels[0], x_low, 0);
    int32x4_t second = vdotq_laneq_s32(vdupq_n_s32(0), levels[4], x_high, 0);
    first = vdotq_laneq_s32(first, levels[1], x_low, 1);
    second = vdotq_laneq_s32(second, levels[5], x_high, 1);
    first = vdotq_laneq_s32(first, levels[2], x_low, 2);
    second = vdotq_laneq_s32(second, levels[6], x_high, 2);
    first = vdotq_laneq_s32(first, levels[3], x_low, 3);
    second = vdotq_laneq_s32(second, levels[7], x_high, 3);
    return vaddq_s32(first, second);
#else
    /* The activation bytes of chunk c repeated in all four 32-bit lanes. */
    int8x16_t x_chunks[8] = {
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_low), 0)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_low), 1)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_low), 2)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_low), 3)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_high), 0)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_high), 1)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_high), 2)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x_high), 3)),
    };
    /* The lanes of pairs_01 are row 0 bytes 0-1, row 0 bytes 2-3, row 1 bytes 0-1 and row 1
     * bytes 2-3. pairs_23 has the same for rows 2 and 3. */
    int32x4_t pairs_01;
    int32x4_t pairs_23;
    if (is_narrow) {
        int16x8_t products_01 = vmull_s8(vget_low_s8(levels[0]), vget_low_s8(x_chunks[0]));
        int16x8_t products_23 = vmull_high_s8(levels[0], x_chunks[0]);
        QUILL_NEON_UNROLL
        for (int c = 1; c < 8; c++) {
            products_01 = vmlal_s8(products_01, vget_low_s8(levels[c]), vget_low_s8(x_chunks[c]));
            products_23 = vmlal_high_s8(products_23, levels[c], x_chunks[c]);
        }
        pairs_01 = vpaddlq_s16(products_01);
        pairs_23 = vpaddlq_s16(products_23);
    } else {
        /* One product can reach 128 * 128 = 16384, so each chunk is widened at once. */
        pairs_01 = vdupq_n_s32(0);
        pairs_23 = vdupq_n_s32(0);
        QUILL_NEON_UNROLL
        for (int c = 0; c < 8; c++) {
            pairs_01 =
                vpadalq_s16(pairs_01, vmull_s8(vget_low_s8(levels[c]), vget_low_s8(x_chunks[c])));
            pairs_23 = vpadalq_s16(pairs_23, vmull_high_s8(levels[c], x_chunks[c]));
        }
    }
    return vaddq_s32(start, vpaddq_s32(pairs_01, pairs_23));
#endif
}

/* Returns start + in lane r the sum over chunks c < 4 of the products of bytes 4r .. 4r + 3 of
 * levels[c] with the activation bytes 4c .. 4c + 3 of x: exact int32. Every |level| must be at
 * most 63, so that 4 products of one int16 lane (at most 4 * 63 * 128 = 32256 in magnitude) add
 * without overflow on the widening path. */
QUILL_NEON_INLINE int32x4_t dot_4_chunks(int32x4_t start, const int8x16_t levels[4], int8x16_t x) {
#if defined(__ARM_FEATURE_DOTPROD)
    int32x4_t sums = vdotq_laneq_s32(start, levels[0], x, 0);
    sums = vdotq_laneq_s32(sums, levels[1], x, 1);
    sums = vdotq_laneq_s32(sums, levels[2], x, 2);
    return vdotq_laneq_s32(sums, levels[3], x, 3);
#else
    /* The activation bytes of chunk c repeated in all four 32-bit lanes. */
    int8x16_t x_chunks[4] = {
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), 0)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), 1)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), 2)),
        vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), 3)),
    };
    /* Lanes as in dot_8_chunks: pairs of bytes of rows 0 and 1, then of rows 2 and 3. */
    int16x8_t products_01 = vmull_s8(vget_low_s8(levels[0]), vget_low_s8(x_chunks[0]));
    int16x8_t products_23 = vmull_high_s8(levels[0], x_chunks[0]);
    QUILL_NEON_UNROLL
    for (int c = 1; c < 4; c++) {
        products_01 = vmlal_s8(products_01, vget_low_s8(levels[c]), vget_low_s8(x_chunks[c]));
        products_23 = vmlal_high_s8(products_23, levels[c], x_chunks[c]);
    }
    return vaddq_s32(start, vpaddq_s32(vpaddlq_s16(products_01), vpaddlq_s16(products_23)));
#endif
}

/* Returns 4 fp16 values at `bytes` (any alignment) as f32. Exact. */
QUILL_NEON_INLINE float32x4_t load_fp16_4(const uint8_t *bytes) {
    return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(bytes)));
}

/* Stores the 8 rows of one token: rows 0-3 from low, rows 4-7 from high. */
QUILL_NEON_INLINE void store_rows(float *y, float32x4_t low, float32x4_t high) {
    vst1q_f32(y, low);
    vst1q_f32(y + 4, high);
}

/* Returns the Q8_K block b of activation row t. */
QUILL_NEON_INLINE const quill_block_q8_k *
q8_k_block(const uint8_t *activations, size_t activation_row_bytes, int t, int64_t b) {
    return (const quill_block_q8_k *)(activations + (size_t)t * activation_row_bytes) + b;
}

#endif
