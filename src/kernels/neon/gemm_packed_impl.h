/*
 * NEON tiles of packed Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights (layouts in
 * kernels/packed.h): y for the 8 rows of a row group and up to TILE_TOKENS tokens per pass over
 * the group's blocks. The Q6_K tile is in gemm_packed_q6_k_impl.h.
 *
 * A packed chunk is 32 bytes: 4 consecutive bytes of each of the 8 rows, so its first 16 bytes
 * contain rows 0-3 and its last 16 rows 4-7. Per group block, the weights are unpacked once into
 * int8 level vectors of 4 rows each, and every token of the tile reuses them. A 4-byte group of
 * one row meets 4 consecutive activation bytes, which is the operation of SDOT (by element): one
 * vdotq_laneq_s32 adds 4 rows' 4-byte products to their 4 int32 lanes. Without the dot-product
 * extension (ARMv8.0), vmull_s8 or vmlal_s8 form the products in int16 lanes and pairwise adds
 * fold them into the same lanes (gemm_packed_common.h). Both give the exact int32 block (or
 * sub-block) sums, so both give the same bits. The choice is made at compile time: gemm_packed.c
 * includes this file for the build's target, and gemm_packed_dotprod.c includes it compiled for
 * the dot-product extension, with NEON_PACKED_NAME adding "_dotprod" to the entry points. The
 * table takes those where the CPU reports SDOT (table_neon.c).
 *
 * The float step is the per-pair arithmetic of packed.h, lane by lane, which is also what the
 * NEON vec_dot of each type computes (dot_q4_q5_q8.c, dot_k.c): per block acc = fma(d_w * d_x,
 * (float)sum, acc) from acc = 0, for Q4_1 and Q5_1 then acc = fma(m_w, s_x, acc), and for Q4_K
 * and Q5_K per super-block also acc = fma(-(dmin_w * d_x), (float)mins, acc). Each (row, token)
 * value thus equals vec_dot on the unpacked row, bit for bit. Activations are Q8_0 rows with
 * their prepared extras (packed.h), from which the f32 d_x (and the Q5_0 level offset) is read,
 * Q8_1 rows (Q4_1, Q5_1) or Q8_K rows. Stateless: safe from any thread.
 */
#ifndef QUILL_KERNELS_NEON_GEMM_PACKED_IMPL_H
#define QUILL_KERNELS_NEON_GEMM_PACKED_IMPL_H

#include "kernels/neon/kernels_neon.h"

#include <arm_neon.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/blocks.h"
#include "kernels/neon/gemm_packed_common.h"
#include "kernels/neon/gemm_packed_q6_k_impl.h"
#include "kernels/packed.h"

/* Group block bytes and offsets of the K-quants (packed.h). Q5_K has the Q4_K header, then the
 * fifth bits, then the nibbles. */
enum {
    GROUP_BLOCK_Q4_K = QUILL_PACK_ROWS * sizeof(quill_block_q4_k),
    GROUP_BLOCK_Q5_K = QUILL_PACK_ROWS * sizeof(quill_block_q5_k),
    Q4_K_DMIN = 16,
    Q4_K_LOW_PLANE = 32,
    Q4_K_HIGH_PLANE = 96,
    Q4_K_QS = 128,
    Q5_K_QH = 128,
    Q5_K_QS = 384,
};

/* The packed weight types of this file. */
typedef enum packed_kind {
    PACKED_Q4_0,
    PACKED_Q4_1,
    PACKED_Q5_0,
    PACKED_Q5_1,
    PACKED_Q8_0,
    PACKED_Q4_K,
    PACKED_Q5_K,
    PACKED_Q6_K,
} packed_kind;

/* Where the fields of a legacy group block (blocks of 32) sit (packed.h): the fp16 d of the 8
 * rows at byte 0, then the fp16 m (Q4_1, Q5_1), the fifth bits (Q5_0, Q5_1) and the level
 * chunks. Offset 0 marks a field that the kind lacks. */
typedef struct legacy_group_layout {
    size_t block_bytes; /* bytes of one group block */
    size_t m;           /* offset of the 8 fp16 m, or 0 */
    size_t qh;          /* offset of the 32 fifth-bit bytes, or 0 */
    size_t qs;          /* offset of the level chunks */
} legacy_group_layout;

QUILL_NEON_INLINE legacy_group_layout legacy_group_layout_of(packed_kind kind) {
    switch (kind) {
    case PACKED_Q4_1:
        return (legacy_group_layout){.block_bytes = 160, .m = 16, .qh = 0, .qs = 32};
    case PACKED_Q5_0:
        return (legacy_group_layout){.block_bytes = 176, .m = 0, .qh = 16, .qs = 48};
    case PACKED_Q5_1:
        return (legacy_group_layout){.block_bytes = 192, .m = 16, .qh = 32, .qs = 64};
    case PACKED_Q8_0:
        return (legacy_group_layout){.block_bytes = 272, .m = 0, .qh = 0, .qs = 16};
    default: /* PACKED_Q4_0 */
        return (legacy_group_layout){.block_bytes = 144, .m = 0, .qh = 0, .qs = 16};
    }
}

/* Returns bit c of each qh byte moved to bit 4: the fifth bits of level vector c (packed.h). */
QUILL_NEON_INLINE uint8x16_t fifth_bits(uint8x16_t qh, int c) {
    return vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(4 - c))), vdupq_n_u8(0x10));
}

/* Unpacks the levels of a legacy group block: levels[h][c] contains the 4 rows of half h (rows
 * 4h .. 4h + 3) for the activation bytes 4c .. 4c + 3. Nibble chunk k < 4 contains elements
 * 4k .. 4k + 3 in its low nibbles and 16 + 4k .. 16 + 4k + 3 in its high nibbles. Q4_0 levels
 * are q - 8. Q4_1 levels are the nibbles. Q5_0 and Q5_1 levels are the nibbles with the fifth
 * bit of level vector c taken from bit c of the qh bytes, so they stay in [0, 31]. The Q4_1 and
 * Q5_1 offset m enters through s_x, and the Q5_0 offset -16 through the activation sum. Q8_0
 * chunk k contains elements 4k .. 4k + 3 as q + 128, so XOR 0x80 restores q. */
QUILL_NEON_INLINE void unpack_legacy_levels(packed_kind kind, legacy_group_layout layout,
                                            const uint8_t *block, int8x16_t levels[2][8]) {
    const uint8_t *qs = block + layout.qs;
    if (kind == PACKED_Q8_0) {
        const uint8x16_t sign = vdupq_n_u8(0x80);
        QUILL_NEON_UNROLL
        for (int c = 0; c < 8; c++) {
            QUILL_NEON_UNROLL
            for (int h = 0; h < 2; h++) {
                levels[h][c] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(qs + 32 * c + 16 * h), sign));
            }
        }
        return;
    }
    const uint8x16_t low_mask = vdupq_n_u8(0x0f);
    const int8x16_t offset = vdupq_n_s8(kind == PACKED_Q4_0 ? 8 : 0);
    QUILL_NEON_UNROLL
    for (int k = 0; k < 4; k++) {
        QUILL_NEON_UNROLL
        for (int h = 0; h < 2; h++) {
            uint8x16_t pairs = vld1q_u8(qs + 32 * k + 16 * h);
            uint8x16_t low = vandq_u8(pairs, low_mask);
            uint8x16_t high = vshrq_n_u8(pairs, 4);
            if (layout.qh != 0) {
                uint8x16_t qh = vld1q_u8(block + layout.qh + 16 * h);
                low = vorrq_u8(low, fifth_bits(qh, k));
                high = vorrq_u8(high, fifth_bits(qh, k + 4));
            }
            levels[h][k] = vsubq_s8(vreinterpretq_s8_u8(low), offset);
            levels[h][k + 4] = vsubq_s8(vreinterpretq_s8_u8(high), offset);
        }
    }
}

/* One token's activation block b for a legacy tile: the 32 values, d_x, for Q4_1 and Q5_1 s_x,
 * and the int32 lanes the block sums start from (Q5_0: -16 times the value sum, else 0). */
typedef struct legacy_activation {
    const int8_t *x;
    float d_x;
    float s_x;
    int32x4_t start;
} legacy_activation;

/* Reads block b of an activation row: a Q8_1 row for Q4_1 and Q5_1, else a prepared Q8_0 row
 * (block b at 34 b, its f32 scale and Q4_0 level offset in the extras, packed.h). */
QUILL_NEON_INLINE legacy_activation legacy_activation_at(packed_kind kind, const uint8_t *row,
                                                         int64_t b, int64_t n_blocks) {
    legacy_activation out = {.s_x = 0.0f, .start = vdupq_n_s32(0)};
    if (kind == PACKED_Q4_1 || kind == PACKED_Q5_1) {
        const quill_block_q8_1 *block = (const quill_block_q8_1 *)row + b;
        out.x = block->qs;
        out.d_x = quill__load_fp16(block->d);
        out.s_x = quill__load_fp16(block->s);
        return out;
    }
    const size_t extras = quill__q8_0_prepared_extras_offset(n_blocks);
    out.x = (const int8_t *)(row + (size_t)b * sizeof(quill_block_q8_0) + 2);
    memcpy(&out.d_x, row + extras + (size_t)b * 4u, sizeof(out.d_x));
    if (kind == PACKED_Q5_0) {
        int32_t offset_q4;
        memcpy(&offset_q4, row + extras + (size_t)(n_blocks + b) * 4u, sizeof(offset_q4));
        out.start = vdupq_n_s32(2 * offset_q4);
    }
    return out;
}

/* Computes y[t * y_stride + r] for the 8 rows of one legacy group and tokens [0, n_tokens),
 * n_tokens <= TILE_TOKENS (a constant at each call site, so the loops unroll). */
QUILL_NEON_INLINE void tile_legacy(packed_kind kind, int64_t n_blocks, const uint8_t *group,
                                   const uint8_t *activations, size_t activation_row_bytes,
                                   int n_tokens, float *y, int64_t y_stride) {
    const legacy_group_layout layout = legacy_group_layout_of(kind);
    /* Every level but Q8_0's is in [-8, 31] (unpack_legacy_levels). */
    const int is_narrow = kind != PACKED_Q8_0;
    float32x4_t acc[TILE_TOKENS][2];
    QUILL_NEON_UNROLL
    for (int t = 0; t < n_tokens; t++) {
        acc[t][0] = vdupq_n_f32(0.0f);
        acc[t][1] = vdupq_n_f32(0.0f);
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * layout.block_bytes;
        const float32x4_t d_w[2] = {load_fp16_4(block), load_fp16_4(block + 8)};
        float32x4_t m_w[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        if (layout.m != 0) {
            m_w[0] = load_fp16_4(block + layout.m);
            m_w[1] = load_fp16_4(block + layout.m + 8);
        }
        int8x16_t levels[2][8];
        unpack_legacy_levels(kind, layout, block, levels);

        QUILL_NEON_UNROLL
        for (int t = 0; t < n_tokens; t++) {
            const legacy_activation x = legacy_activation_at(
                kind, activations + (size_t)t * activation_row_bytes, b, n_blocks);
            int8x16_t x_low = vld1q_s8(x.x);
            int8x16_t x_high = vld1q_s8(x.x + 16);
            QUILL_NEON_UNROLL
            for (int h = 0; h < 2; h++) {
                int32x4_t sums = dot_8_chunks(x.start, levels[h], x_low, x_high, is_narrow);
                acc[t][h] = vfmaq_f32(acc[t][h], vmulq_n_f32(d_w[h], x.d_x), vcvtq_f32_s32(sums));
                if (layout.m != 0) {
                    acc[t][h] = vfmaq_f32(acc[t][h], m_w[h], vdupq_n_f32(x.s_x));
                }
            }
        }
    }

    QUILL_NEON_UNROLL
    for (int t = 0; t < n_tokens; t++) {
        store_rows(y + t * y_stride, acc[t][0], acc[t][1]);
    }
}

/* The 8 rows' 6-bit scales and mins of one Q4_K super-block, as int32 lanes: scales[j][h] contains
 * sc_j of rows 4h .. 4h + 3, mins[j][h] likewise m_j. */
typedef struct k_scales {
    int32x4_t scales[8][2];
    int32x4_t mins[8][2];
} k_scales;

/* Widens bytes 8p .. 8p + 7 (p = 0 or 1: sub-block 2i + p of a pair vector) into two int32x4. */
QUILL_NEON_INLINE void widen_8(uint8x16_t pair, int p, int32x4_t out[2]) {
    uint16x8_t words = vmovl_u8(p == 0 ? vget_low_u8(pair) : vget_high_u8(pair));
    out[0] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(words)));
    out[1] = vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(words)));
}

/* Decodes the low and high planes of a Q4_K group block (packed.h). Low plane byte 8j + r is
 * (sc_j & 15) | (m_j & 15) << 4 of row r. High plane byte 8j + r (j < 4) contains the top 2 bits
 * of sc_j, m_j, sc_{j+4} and m_{j+4}, from bit 0 up. */
QUILL_NEON_INLINE void decode_k_scales(const uint8_t *block, k_scales *out) {
    const uint8x16_t mask4 = vdupq_n_u8(0x0f);
    const uint8x16_t mask2 = vdupq_n_u8(0x03);
    QUILL_NEON_UNROLL
    for (int i = 0; i < 2; i++) {
        /* Vector i of a plane covers sub-blocks 2i and 2i + 1 (low) or 2i + 4 and 2i + 5. */
        uint8x16_t low_first = vld1q_u8(block + Q4_K_LOW_PLANE + 16 * i);
        uint8x16_t low_second = vld1q_u8(block + Q4_K_LOW_PLANE + 32 + 16 * i);
        uint8x16_t high = vld1q_u8(block + Q4_K_HIGH_PLANE + 16 * i);
        uint8x16_t sc_first =
            vorrq_u8(vandq_u8(low_first, mask4), vshlq_n_u8(vandq_u8(high, mask2), 4));
        uint8x16_t m_first =
            vorrq_u8(vshrq_n_u8(low_first, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(high, 2), mask2), 4));
        uint8x16_t sc_second = vorrq_u8(vandq_u8(low_second, mask4),
                                        vshlq_n_u8(vandq_u8(vshrq_n_u8(high, 4), mask2), 4));
        uint8x16_t m_second =
            vorrq_u8(vshrq_n_u8(low_second, 4), vshlq_n_u8(vshrq_n_u8(high, 6), 4));
        QUILL_NEON_UNROLL
        for (int p = 0; p < 2; p++) {
            widen_8(sc_first, p, out->scales[2 * i + p]);
            widen_8(m_first, p, out->mins[2 * i + p]);
            widen_8(sc_second, p, out->scales[2 * i + p + 4]);
            widen_8(m_second, p, out->mins[2 * i + p + 4]);
        }
    }
}

/* Returns in lane r (rows 4h .. 4h + 3) sum_j m_j * (activation sum of sub-block j), exact:
 * the 16 int16 bsums are widened before each pair is added. */
QUILL_NEON_INLINE int32x4_t k_mins(const k_scales *scales, int h, const uint8_t *bsums) {
    int32x4_t sub_low = vpaddlq_s16(vreinterpretq_s16_u8(vld1q_u8(bsums)));
    int32x4_t sub_high = vpaddlq_s16(vreinterpretq_s16_u8(vld1q_u8(bsums + 16)));
    int32x4_t mins = vmulq_laneq_s32(scales->mins[0][h], sub_low, 0);
    mins = vmlaq_laneq_s32(mins, scales->mins[1][h], sub_low, 1);
    mins = vmlaq_laneq_s32(mins, scales->mins[2][h], sub_low, 2);
    mins = vmlaq_laneq_s32(mins, scales->mins[3][h], sub_low, 3);
    mins = vmlaq_laneq_s32(mins, scales->mins[4][h], sub_high, 0);
    mins = vmlaq_laneq_s32(mins, scales->mins[5][h], sub_high, 1);
    mins = vmlaq_laneq_s32(mins, scales->mins[6][h], sub_high, 2);
    return vmlaq_laneq_s32(mins, scales->mins[7][h], sub_high, 3);
}

/* Adds scale times the exact level sums of sub-block j = 2g + nibble of the 8 rows to isum[t]
 * for tokens t < n_tokens. chunks points at the group block's chunk 8g: sub-block 2g sits in
 * the low nibbles of chunks 8g .. 8g + 7 and sub-block 2g + 1 in their high nibbles. For Q5_K,
 * qh points at the group block's 8 fifth-bit chunks, and it is NULL for Q4_K. Bit j of byte i of
 * chunk c of row r is bit 4 of element 4c + i of sub-block j, so the levels stay in [0, 31]. */
QUILL_NEON_INLINE void add_sub_block(int32x4_t isum[TILE_TOKENS][2], const uint8_t *chunks,
                                     const uint8_t *qh, int nibble, int j, const int32x4_t scale[2],
                                     const uint8_t *activations, size_t activation_row_bytes,
                                     int64_t b, int n_tokens) {
    /* levels[h][c] contains rows 4h .. 4h + 3 of chunk 8g + c, unpacked once for all tokens. */
    const uint8x16_t low_mask = vdupq_n_u8(0x0f);
    const int8x16_t qh_shift = vdupq_n_s8((int8_t)(4 - j));
    const uint8x16_t bit_4 = vdupq_n_u8(0x10);
    int8x16_t levels[2][8];
    QUILL_NEON_UNROLL
    for (int c = 0; c < 8; c++) {
        QUILL_NEON_UNROLL
        for (int h = 0; h < 2; h++) {
            uint8x16_t pairs = vld1q_u8(chunks + 32 * c + 16 * h);
            uint8x16_t nibbles = nibble == 0 ? vandq_u8(pairs, low_mask) : vshrq_n_u8(pairs, 4);
            if (qh != NULL) {
                /* Bit j to bit 4: a negative shift count shifts right. */
                uint8x16_t fifth = vshlq_u8(vld1q_u8(qh + 32 * c + 16 * h), qh_shift);
                nibbles = vorrq_u8(nibbles, vandq_u8(fifth, bit_4));
            }
            levels[h][c] = vreinterpretq_s8_u8(nibbles);
        }
    }

    QUILL_NEON_UNROLL
    for (int t = 0; t < n_tokens; t++) {
        const int8_t *x = q8_k_block(activations, activation_row_bytes, t, b)->qs + 32 * j;
        int8x16_t x_low = vld1q_s8(x);
        int8x16_t x_high = vld1q_s8(x + 16);
        QUILL_NEON_UNROLL
        for (int h = 0; h < 2; h++) {
            int32x4_t sums = dot_8_chunks(vdupq_n_s32(0), levels[h], x_low, x_high, 1);
            isum[t][h] = vmlaq_s32(isum[t][h], sums, scale[h]);
        }
    }
}

/* Computes y[t * y_stride + r] for the 8 rows of one Q4_K group, or Q5_K group when is_q5, and
 * tokens [0, n_tokens), n_tokens <= TILE_TOKENS, with Q8_K activation rows. Per super-block each
 * token gets the exact isum = sum_j sc_j * (sub-block j level sums) and mins, then the two fused
 * multiply-adds. */
QUILL_NEON_INLINE void tile_q4_q5_k(bool is_q5, int64_t n_blocks, const uint8_t *group,
                                    const uint8_t *activations, size_t activation_row_bytes,
                                    int n_tokens, float *y, int64_t y_stride) {
    const size_t group_block_bytes = is_q5 ? GROUP_BLOCK_Q5_K : GROUP_BLOCK_Q4_K;
    const size_t qs = is_q5 ? Q5_K_QS : Q4_K_QS;
    float32x4_t acc[TILE_TOKENS][2];
    QUILL_NEON_UNROLL
    for (int t = 0; t < n_tokens; t++) {
        acc[t][0] = vdupq_n_f32(0.0f);
        acc[t][1] = vdupq_n_f32(0.0f);
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * group_block_bytes;
        const uint8_t *qh = is_q5 ? block + Q5_K_QH : NULL;
        k_scales scales;
        decode_k_scales(block, &scales);
        int32x4_t isum[TILE_TOKENS][2];
        QUILL_NEON_UNROLL
        for (int t = 0; t < n_tokens; t++) {
            isum[t][0] = vdupq_n_s32(0);
            isum[t][1] = vdupq_n_s32(0);
        }
        for (int g = 0; g < 4; g++) {
            const uint8_t *chunks = block + qs + 32 * 8 * g;
            add_sub_block(isum, chunks, qh, 0, 2 * g, scales.scales[2 * g], activations,
                          activation_row_bytes, b, n_tokens);
            add_sub_block(isum, chunks, qh, 1, 2 * g + 1, scales.scales[2 * g + 1], activations,
                          activation_row_bytes, b, n_tokens);
        }

        /* acc = fma(d_w * d_x, isum, acc), then acc = fma(-(dmin_w * d_x), mins, acc). */
        const float32x4_t d_w[2] = {load_fp16_4(block), load_fp16_4(block + 8)};
        const float32x4_t dmin_w[2] = {load_fp16_4(block + Q4_K_DMIN),
                                       load_fp16_4(block + Q4_K_DMIN + 8)};
        QUILL_NEON_UNROLL
        for (int t = 0; t < n_tokens; t++) {
            const quill_block_q8_k *x = q8_k_block(activations, activation_row_bytes, t, b);
            float d_x = quill__load_f32(x->d);
            QUILL_NEON_UNROLL
            for (int h = 0; h < 2; h++) {
                int32x4_t mins = k_mins(&scales, h, x->bsums);
                float32x4_t scale = vmulq_n_f32(d_w[h], d_x);
                float32x4_t min_scale = vnegq_f32(vmulq_n_f32(dmin_w[h], d_x));
                acc[t][h] = vfmaq_f32(acc[t][h], scale, vcvtq_f32_s32(isum[t][h]));
                acc[t][h] = vfmaq_f32(acc[t][h], min_scale, vcvtq_f32_s32(mins));
            }
        }
    }

    QUILL_NEON_UNROLL
    for (int t = 0; t < n_tokens; t++) {
        store_rows(y + t * y_stride, acc[t][0], acc[t][1]);
    }
}

/* Computes one group's tile of n_tokens <= TILE_TOKENS tokens. */
QUILL_NEON_INLINE void tile_kind(packed_kind kind, int64_t n_blocks, const uint8_t *group,
                                 const uint8_t *activations, size_t activation_row_bytes,
                                 int n_tokens, float *y, int64_t y_stride) {
    if (kind == PACKED_Q4_K || kind == PACKED_Q5_K) {
        tile_q4_q5_k(kind == PACKED_Q5_K, n_blocks, group, activations, activation_row_bytes,
                     n_tokens, y, y_stride);
    } else if (kind == PACKED_Q6_K) {
        tile_q6_k(n_blocks, group, activations, activation_row_bytes, n_tokens, y, y_stride);
    } else {
        tile_legacy(kind, n_blocks, group, activations, activation_row_bytes, n_tokens, y,
                    y_stride);
    }
}

/* Walks the row groups; for each, the tokens in tiles of TILE_TOKENS, so a group's weights stay
 * in cache while its token tiles read them. n_rows is a multiple of QUILL_PACK_ROWS. */
QUILL_NEON_INLINE void gemm_packed(packed_kind kind, int64_t n_blocks, const void *weights,
                                   size_t weight_row_bytes, int64_t n_rows, const void *activations,
                                   size_t activation_row_bytes, int64_t n_tokens, float *y,
                                   int64_t y_stride) {
    for (int64_t row = 0; row + QUILL_PACK_ROWS <= n_rows; row += QUILL_PACK_ROWS) {
        const uint8_t *group = (const uint8_t *)weights + (size_t)row * weight_row_bytes;
        for (int64_t token = 0; token < n_tokens; token += TILE_TOKENS) {
            const uint8_t *rows =
                (const uint8_t *)activations + (size_t)token * activation_row_bytes;
            float *out = y + token * y_stride + row;
            switch (n_tokens - token < TILE_TOKENS ? n_tokens - token : TILE_TOKENS) {
            case 1:
                tile_kind(kind, n_blocks, group, rows, activation_row_bytes, 1, out, y_stride);
                break;
            case 2:
                tile_kind(kind, n_blocks, group, rows, activation_row_bytes, 2, out, y_stride);
                break;
            case 3:
                tile_kind(kind, n_blocks, group, rows, activation_row_bytes, 3, out, y_stride);
                break;
            default:
                tile_kind(kind, n_blocks, group, rows, activation_row_bytes, TILE_TOKENS, out,
                          y_stride);
                break;
            }
        }
    }
}

void NEON_PACKED_NAME(quill__gemm_packed_q4_0_q8_0_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q4_0, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void NEON_PACKED_NAME(quill__gemm_packed_q4_1_q8_1_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q4_1, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void NEON_PACKED_NAME(quill__gemm_packed_q5_0_q8_0_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q5_0, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void NEON_PACKED_NAME(quill__gemm_packed_q5_1_q8_1_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q5_1, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void NEON_PACKED_NAME(quill__gemm_packed_q8_0_q8_0_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q8_0, n / QUILL_QK, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void NEON_PACKED_NAME(quill__gemm_packed_q4_k_q8_k_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q4_K, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void NEON_PACKED_NAME(quill__gemm_packed_q5_k_q8_k_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q5_K, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

void NEON_PACKED_NAME(quill__gemm_packed_q6_k_q8_k_neon)(int64_t n, const void *weights,
                                                         size_t weight_row_bytes, int64_t n_rows,
                                                         const void *activations,
                                                         size_t activation_row_bytes,
                                                         int64_t n_tokens, float *y,
                                                         int64_t y_stride) {
    gemm_packed(PACKED_Q6_K, n / QUILL_QK_K, weights, weight_row_bytes, n_rows, activations,
                activation_row_bytes, n_tokens, y, y_stride);
}

#endif
