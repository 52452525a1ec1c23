/*
 * Inline helpers shared by the NEON quantized dot products. Products of two int8 values go
 * through a widening multiply (vmull_s8): |a * b| <= 128 * 128 = 16384 fits an int16 lane. Each
 * pair of products is then added into int32 lanes (vpadalq_s16), so every block sum is exact.
 * ARMv8.0 base instructions only.
 */
#ifndef QUILL_KERNELS_NEON_COMMON_H
#define QUILL_KERNELS_NEON_COMMON_H

#include <arm_neon.h>
#include <stdint.h>

/* Adds the 16 products w[i] * x[i] to the four int32 lanes of acc. */
static inline int32x4_t quill__neon_dot_16(int32x4_t acc, int8x16_t w, int8x16_t x) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    return vpadalq_s16(acc, vmull_s8(vget_high_s8(w), vget_high_s8(x)));
}

/* Returns the four int32 lane sums of the 32 products of two int8 blocks, each given as two
 * 16-byte halves. */
static inline int32x4_t quill__neon_dot_32(int8x16_t w_low, int8x16_t w_high, int8x16_t x_low,
                                           int8x16_t x_high) {
    int32x4_t sums = quill__neon_dot_16(vdupq_n_s32(0), w_low, x_low);
    return quill__neon_dot_16(sums, w_high, x_high);
}

/* Returns the low nibbles of 16 bytes as int8 levels in [0, 15]. */
static inline int8x16_t quill__neon_low_nibbles(uint8x16_t packed) {
    return vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0f)));
}

/* Returns the high nibbles of 16 bytes as int8 levels in [0, 15]. */
static inline int8x16_t quill__neon_high_nibbles(uint8x16_t packed) {
    return vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));
}

#endif
