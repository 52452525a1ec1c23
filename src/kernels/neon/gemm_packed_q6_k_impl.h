/*
 * The NEON tile of packed Q6_K weights with Q8_K activations (layout in kernels/packed.h), part
 * of gemm_packed_impl.h and compiled with it for both paths (SDOT and the ARMv8.0 widening
 * multiply).
 *
 * A group block (8 rows of one super-block) is read in 8 passes, in address order. Pass (g, part)
 * joins the high bits (part 0) of section g with its low-nibble part 1 or 2 into 16 vectors of
 * levels q - 32 in [-32, 31]: 4 chunks x 2 row halves of sub-block j = g + 4 (part - 1) (low
 * nibbles) and as many of sub-block j + 8 (high nibbles). For each token and each of the two
 * sub-blocks, dot_4_chunks leaves the 8 rows' exact sums of (q - 32) * q_x in two int32x4, which
 * are multiplied by the rows' int8 scales and added to the super-block's int32 sum. Its terms are
 * at most 16 * 128 * 32 * 128 = 2^23 per sub-block and 2^27 per super-block, so it is exact, and
 * equals the integer of the NEON vec_dot (dot_k.c). Then per token one scale product (d_w of the
 * 8 rows times d_x) and one fused multiply-add per row half: acc = fma(d_w * d_x, (float)isum,
 * acc), as the vec_dot does, so every value equals the unpacked row's bit for bit.
 */
#ifndef QUILL_KERNELS_NEON_GEMM_PACKED_Q6_K_IMPL_H
#define QUILL_KERNELS_NEON_GEMM_PACKED_Q6_K_IMPL_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/blocks.h"
#include "kernels/neon/gemm_packed_common.h"
#include "kernels/packed.h"

/* Q6_K group block bytes and offsets (packed.h): fp16 d of the 8 rows, the int8 sub-block scales
 * (byte 8j + r: sub-block j of row r), then 4 sections of a high-bit part and two low-nibble
 * parts. */
enum {
    GROUP_BLOCK_Q6_K = QUILL_PACK_ROWS * sizeof(quill_block_q6_k),
    Q6_K_SCALES = 16,
    Q6_K_SECTIONS = 144,
    Q6_K_SECTION_BYTES = 384,
    Q6_K_PART_BYTES = 128,
};

/* Returns the int8 scales of sub-block j for rows 4h .. 4h + 3 (out[h]) as int32 lanes. */
QUILL_NEON_INLINE void load_q6_k_scales(const uint8_t *block, int j, int32x4_t out[2]) {
    int16x8_t scales = vmovl_s8(vld1_s8((const int8_t *)(block + Q6_K_SCALES + 8 * j)));
    out[0] = vmovl_s16(vget_low_s16(scales));
    out[1] = vmovl_s16(vget_high_s16(scales));
}

/* Unpacks pass (g, part) of a Q6_K group block: levels[h][k] (k < 4) contains chunk k of rows
 * 4h .. 4h + 3 of sub-block g + 4 (part - 1), levels[h][4 + k] the same chunk of the sub-block 8
 * further on. Part 1 pairs its low nibbles with high-bit bits 0-1 and its high nibbles with bits
 * 4-5; part 2 uses bits 2-3 and 6-7. */
QUILL_NEON_INLINE void unpack_q6_k_pass(const uint8_t *block, int g, int part,
                                        int8x16_t levels[2][8]) {
    const uint8_t *section = block + Q6_K_SECTIONS + Q6_K_SECTION_BYTES * g;
    const uint8x16_t low_mask = vdupq_n_u8(0x0f);
    const uint8x16_t top_mask = vdupq_n_u8(0x30);
    const int8x16_t offset = vdupq_n_s8(32);
    /* Shifts that bring the two high bits of each sub-block to bits 4-5. */
    const int8x16_t low_shift = vdupq_n_s8((int8_t)(part == 1 ? 4 : 2));
    const int8x16_t high_shift = vdupq_n_s8((int8_t)(part == 1 ? 0 : -2));
    QUILL_NEON_UNROLL
    for (int k = 0; k < 4; k++) {
        QUILL_NEON_UNROLL
        for (int h = 0; h < 2; h++) {
            uint8x16_t high_bits = vld1q_u8(section + 32 * k + 16 * h);
            uint8x16_t nibbles = vld1q_u8(section + Q6_K_PART_BYTES * part + 32 * k + 16 * h);
            uint8x16_t low = vorrq_u8(vandq_u8(nibbles, low_mask),
                                      vandq_u8(vshlq_u8(high_bits, low_shift), top_mask));
            uint8x16_t high = vorrq_u8(vshrq_n_u8(nibbles, 4),
                                       vandq_u8(vshlq_u8(high_bits, high_shift), top_mask));
            levels[h][k] = vsubq_s8(vreinterpretq_s8_u8(low), offset);
            levels[h][k + 4] = vsubq_s8(vreinterpretq_s8_u8(high), offset);
        }
    }
}

/* Computes y[t * y_stride + r] for the 8 rows of one Q6_K group and tokens [0, n_tokens),
 * n_tokens <= TILE_TOKENS (a constant at each call site, so the loops unroll). */
QUILL_NEON_INLINE void tile_q6_k(int64_t n_blocks, const uint8_t *group, const uint8_t *activations,
                                 size_t activation_row_bytes, int n_tokens, float *y,
                                 int64_t y_stride) {
    float32x4_t acc[TILE_TOKENS][2];
    QUILL_NEON_UNROLL
    for (int t = 0; t < n_tokens; t++) {
        acc[t][0] = vdupq_n_f32(0.0f);
        acc[t][1] = vdupq_n_f32(0.0f);
    }

    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *block = group + (size_t)b * GROUP_BLOCK_Q6_K;
        int32x4_t isum[TILE_TOKENS][2];
        QUILL_NEON_UNROLL
        for (int t = 0; t < n_tokens; t++) {
            isum[t][0] = vdupq_n_s32(0);
            isum[t][1] = vdupq_n_s32(0);
        }
        for (int pass = 0; pass < 8; pass++) {
            const int g = pass / 2;
            const int part = 1 + pass % 2;
            const int j = g + 4 * (part - 1);
            int8x16_t levels[2][8];
            unpack_q6_k_pass(block, g, part, levels);
            int32x4_t low_scales[2];
            int32x4_t high_scales[2];
            load_q6_k_scales(block, j, low_scales);
            load_q6_k_scales(block, j + 8, high_scales);

            QUILL_NEON_UNROLL
            for (int t = 0; t < n_tokens; t++) {
                const int8_t *x = q8_k_block(activations, activation_row_bytes, t, b)->qs;
                int8x16_t x_low = vld1q_s8(x + 16 * j);
                int8x16_t x_high = vld1q_s8(x + 16 * (j + 8));
                QUILL_NEON_UNROLL
                for (int h = 0; h < 2; h++) {
                    int32x4_t low = dot_4_chunks(vdupq_n_s32(0), levels[h], x_low);
                    int32x4_t high = dot_4_chunks(vdupq_n_s32(0), levels[h] + 4, x_high);
                    isum[t][h] = vmlaq_s32(isum[t][h], low, low_scales[h]);
                    isum[t][h] = vmlaq_s32(isum[t][h], high, high_scales[h]);
                }
            }
        }

        const float32x4_t d_w[2] = {load_fp16_4(block), load_fp16_4(block + 8)};
        QUILL_NEON_UNROLL
        for (int t = 0; t < n_tokens; t++) {
            float d_x = quill__load_f32(q8_k_block(activations, activation_row_bytes, t, b)->d);
            QUILL_NEON_UNROLL
            for (int h = 0; h < 2; h++) {
                acc[t][h] =
                    vfmaq_f32(acc[t][h], vmulq_n_f32(d_w[h], d_x), vcvtq_f32_s32(isum[t][h]));
            }
        }
    }

    QUILL_NEON_UNROLL
    for (int t = 0; t < n_tokens; t++) {
        store_rows(y + t * y_stride, acc[t][0], acc[t][1]);
    }
}

#endif
