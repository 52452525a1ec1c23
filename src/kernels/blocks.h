/*
 * Byte layouts of the ggml quantized blocks that the kernels read and write, and small helpers
 * shared by every kernel variant. Every struct has alignment 1 (byte arrays only), so a block may
 * start at any address: rows of 18-byte Q4_0 blocks sit at odd offsets in a mapped file. Multi-byte
 * fields are little-endian and read with the load helpers below, never through casts.
 */
#ifndef QUILL_KERNELS_BLOCKS_H
#define QUILL_KERNELS_BLOCKS_H

#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

/* Elements per block of the legacy formats (Q4_0 ... Q8_1) and of the K-quants. */
enum { QUILL_QK = 32, QUILL_QK_K = 256 };

/* Q4_0, 18 bytes: w = (q - 8) * d, q in [0, 15]. Element j sits in the low nibble of qs[j],
 * element j + 16 in the high nibble. */
typedef struct quill_block_q4_0 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t qs[16]; /* nibbles */
} quill_block_q4_0;

/* Q4_1, 20 bytes: w = q * d + m, q in [0, 15], nibbles as Q4_0. */
typedef struct quill_block_q4_1 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t m[2];   /* fp16 offset (the block minimum) */
    uint8_t qs[16]; /* nibbles */
} quill_block_q4_1;

/* Q5_0, 22 bytes: w = (q - 16) * d, q in [0, 31]. The low 4 bits are nibbles as Q4_0; bit 4 of
 * element j is bit j of the little-endian uint32 qh. */
typedef struct quill_block_q5_0 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t qh[4];  /* bit 4 of each element */
    uint8_t qs[16]; /* low nibbles */
} quill_block_q5_0;

/* Q5_1, 24 bytes: w = q * d + m, q as Q5_0. */
typedef struct quill_block_q5_1 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t m[2];   /* fp16 offset */
    uint8_t qh[4];  /* bit 4 of each element */
    uint8_t qs[16]; /* low nibbles */
} quill_block_q5_1;

/* Q8_0, 34 bytes: w = q * d. */
typedef struct quill_block_q8_0 {
    uint8_t d[2];  /* fp16 scale */
    int8_t qs[32]; /* values */
} quill_block_q8_0;

/* Q8_1, 36 bytes: as Q8_0 plus s = d * sum(qs), used by the dots with Q4_1 and Q5_1 to apply
 * their offset m without touching the values. */
typedef struct quill_block_q8_1 {
    uint8_t d[2];  /* fp16 scale */
    uint8_t s[2];  /* fp16 d * sum(qs) */
    int8_t qs[32]; /* values */
} quill_block_q8_1;

/* Q4_K, 144 bytes: 8 sub-blocks of 32. Sub-block j has a 6-bit scale sc_j and min m_j packed in
 * scales[12] (see quill__q4_k_scale_min); w = d * sc_j * q - dmin * m_j with q in [0, 15]. Each
 * 32-byte group of qs holds two sub-blocks: 2g in the low nibbles, 2g + 1 in the high ones. */
typedef struct quill_block_q4_k {
    uint8_t d[2];       /* fp16 super-block scale of the sub-block scales */
    uint8_t dmin[2];    /* fp16 super-block scale of the sub-block mins */
    uint8_t scales[12]; /* 8 x 6-bit scales and 8 x 6-bit mins */
    uint8_t qs[128];    /* nibbles */
} quill_block_q4_k;

/* Q5_K, 176 bytes: as Q4_K with a fifth bit: bit 4 of element l of sub-block j is bit j of
 * qh[l % 32], so q is in [0, 31]. */
typedef struct quill_block_q5_k {
    uint8_t d[2];       /* fp16 super-block scale of the sub-block scales */
    uint8_t dmin[2];    /* fp16 super-block scale of the sub-block mins */
    uint8_t scales[12]; /* packed as Q4_K */
    uint8_t qh[32];     /* fifth bits */
    uint8_t qs[128];    /* low nibbles */
} quill_block_q5_k;

/* Q6_K, 210 bytes: 16 sub-blocks of 16 with int8 scales; w = d * scales[j] * (q - 32), q in
 * [0, 63]. Each half of 128 elements uses 64 bytes of ql and 32 of qh. For l < 32, the low 4 bits
 * of elements l, l + 32, l + 64 and l + 96 are the low nibble of ql[l], the low nibble of
 * ql[l + 32], the high nibble of ql[l] and the high nibble of ql[l + 32]. Their top 2 bits are
 * bits 0-1, 2-3, 4-5 and 6-7 of qh[l]. */
typedef struct quill_block_q6_k {
    uint8_t ql[128];   /* low 4 bits */
    uint8_t qh[64];    /* high 2 bits */
    int8_t scales[16]; /* sub-block scales */
    uint8_t d[2];      /* fp16 super-block scale */
} quill_block_q6_k;

/* Q8_K, 292 bytes, activations only: w = q * d with an f32 d, plus the sums of each 16 values,
 * which the K-quant dots use for the min terms. */
typedef struct quill_block_q8_k {
    uint8_t d[4];      /* f32 scale */
    int8_t qs[256];    /* values */
    uint8_t bsums[32]; /* 16 x little-endian int16 sum of qs[16 j .. 16 j + 15] */
} quill_block_q8_k;

_Static_assert(sizeof(quill_block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(quill_block_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(quill_block_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(quill_block_q5_1) == 24, "Q5_1 block is 24 bytes");
_Static_assert(sizeof(quill_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(quill_block_q8_1) == 36, "Q8_1 block is 36 bytes");
_Static_assert(sizeof(quill_block_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(quill_block_q5_k) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(quill_block_q6_k) == 210, "Q6_K block is 210 bytes");
_Static_assert(sizeof(quill_block_q8_k) == 292, "Q8_K block is 292 bytes");

static inline float quill__load_fp16(const uint8_t bytes[2]) {
    return quill__fp16_to_fp32((uint16_t)(bytes[0] | (bytes[1] << 8)));
}

static inline void quill__store_fp16(uint8_t bytes[2], float value) {
    uint16_t half = quill__fp32_to_fp16(value);
    bytes[0] = (uint8_t)(half & 0xff);
    bytes[1] = (uint8_t)(half >> 8);
}

static inline float quill__load_f32(const uint8_t bytes[4]) {
    float value;
    memcpy(&value, bytes, sizeof(value));
    return value;
}

static inline void quill__store_f32(uint8_t bytes[4], float value) {
    memcpy(bytes, &value, sizeof(value));
}

static inline int32_t quill__load_i16(const uint8_t *bytes) {
    return (int16_t)(uint16_t)(bytes[0] | (bytes[1] << 8));
}

static inline void quill__store_i16(uint8_t *bytes, int32_t value) {
    uint16_t bits = (uint16_t)(int16_t)value;
    bytes[0] = (uint8_t)(bits & 0xff);
    bytes[1] = (uint8_t)(bits >> 8);
}

static inline uint32_t quill__load_u32(const uint8_t bytes[4]) {
    return (uint32_t)bytes[0] | ((uint32_t)bytes[1] << 8) | ((uint32_t)bytes[2] << 16) |
           ((uint32_t)bytes[3] << 24);
}

/* Rounds to the nearest integer, ties to even, as ggml's nearest_int: adding 1.5 * 2^23 puts
 * the integer part in the low mantissa bits. Valid for |value| <= 2^22 - 1. */
static inline int quill__nearest_int(float value) {
    float shifted = value + 12582912.f;
    int32_t bits;
    memcpy(&bits, &shifted, sizeof(bits));
    return (bits & 0x007fffff) - 0x00400000;
}

/* Unpacks the 6-bit scale and min of sub-block j (< 8) of a Q4_K or Q5_K block: sub-blocks 0-3
 * keep them in the low 6 bits of bytes j and j + 4; sub-blocks 4-7 keep their low 4 bits in the
 * nibbles of byte j + 4 and their top 2 bits in the top bits of bytes j - 4 and j. */
static inline void quill__q4_k_scale_min(int j, const uint8_t scales[12], uint8_t *scale,
                                         uint8_t *min) {
    if (j < 4) {
        *scale = scales[j] & 63;
        *min = scales[j + 4] & 63;
    } else {
        *scale = (uint8_t)((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
        *min = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

#endif
