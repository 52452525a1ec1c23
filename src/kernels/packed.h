/*
 * Weight matrices repacked for integer dot-product instructions ("row groups"). Groups of
 * QUILL_PACK_ROWS consecutive rows are interleaved block by block, so one 32-byte vector contains
 * 4 bytes of each of 8 rows. One u8 x s8 dot-product instruction (vpdpbusd, or maddubs and madd
 * on AVX2) against 4 broadcast activation bytes then leaves one row's partial sum in each 32-bit
 * lane. A block's 8 rows thus end as 8 exact int32 sums in one vector, converted and scaled with
 * one instruction each, where the row-major layout needs a horizontal reduction or a vector FMA
 * per (row, token) pair.
 *
 * Layout of one group block (the 8 rows' block b; the group's blocks follow in order, so a group
 * occupies exactly the bytes of its 8 rows and repacking works in place):
 * - Q4_0, 144 bytes: fp16 d of rows 0..7 (16 bytes), then for chunk k = 0..3 and row r = 0..7
 *   the 4 bytes qs[4k .. 4k + 3] of row r at 16 + 32k + 4r. The low nibbles of chunk k are
 *   elements 4k .. 4k + 3 and the high nibbles elements 16 + 4k .. 16 + 4k + 3.
 * - Q4_1, 160 bytes: fp16 d of rows 0..7 (16 bytes), fp16 m of rows 0..7 (16 bytes), then the
 *   nibble chunks as Q4_0 from byte 32 (chunk k, row r at 32 + 32k + 4r).
 * - Q5_0, 176 bytes: fp16 d of rows 0..7 (16 bytes), then the fifth bits (32 bytes): byte 16 + 4r
 *   + i has in bit c (c = 0..7) the fifth bit of element 4c + i of row r, that is bit 4c + i of
 *   its little-endian uint32 qh. Then the nibble chunks as Q4_0 from byte 48. Level vector c of
 *   a tile (chunk c's low nibbles for c < 4, chunk c - 4's high nibbles after) thus takes its
 *   fifth bits from bit c of every byte, as Q5_K does.
 * - Q5_1, 192 bytes: fp16 d and fp16 m of rows 0..7 as Q4_1 (32 bytes), the fifth bits as Q5_0
 *   from byte 32, then the nibble chunks from byte 64.
 * - Q8_0, 272 bytes: fp16 d of rows 0..7, then for chunk k = 0..7 and row r the 4 values
 *   qs[4k .. 4k + 3] of row r, each XOR 0x80 (q + 128 as an unsigned byte), at 16 + 32k + 4r.
 * - Q4_K, 1152 bytes per super-block of 256: fp16 d of rows 0..7 (16 bytes), fp16 dmin of rows
 *   0..7 (16 bytes), then the 6-bit sub-block scales sc_j and mins m_j (j = 0..7) as a low
 *   plane of 64 bytes, byte 8j + r = (sc_j & 15) | (m_j & 15) << 4 of row r, and a high plane
 *   of 32 bytes, byte 8j + r (j < 4) = sc_j >> 4 | (m_j >> 4) << 2 | (sc_{j+4} >> 4) << 4 |
 *   (m_{j+4} >> 4) << 6; then for chunk c = 0..31 and row r the 4 bytes qs[4c .. 4c + 3] of row
 *   r at 128 + 32c + 4r. The low nibbles of chunks 8g .. 8g + 7 are sub-block 2g, the high
 *   nibbles sub-block 2g + 1.
 * - Q5_K, 1408 bytes per super-block of 256: the first 128 bytes as Q4_K, then for chunk c =
 *   0..7 and row r the 4 bytes qh[4c .. 4c + 3] of row r at 128 + 32c + 4r (bit j of qh[l] is
 *   bit 4 of element l of sub-block j), then the nibble chunks as Q4_K from byte 384.
 * - Q6_K, 1680 bytes per super-block of 256, with 6-bit levels q_e (element e = 0..255): fp16 d
 *   of rows 0..7 (16 bytes), then the int8 scale of sub-block j (elements 16j .. 16j + 15) of
 *   row r at byte 16 + 8j + r (128 bytes). Then 4 sections of 384 bytes, section g = 0..3 at
 *   144 + 384g holding sub-blocks g, g + 4, g + 8 and g + 12 in three parts of 128 bytes. In
 *   each part, chunk k = 0..3 holds for row r, at 32k + 4r + i (i = 0..3), bits of element
 *   e = 16g + 4k + i and of elements e + 64, e + 128 and e + 192. Part 0: q_e >> 4 in
 *   bits 0-1, q_{e+64} >> 4 in bits 2-3, q_{e+128} >> 4 in bits 4-5, q_{e+192} >> 4 in bits 6-7.
 *   Part 1: q_e & 15 in the low nibble, q_{e+128} & 15 in the high nibble. Part 2: q_{e+64} & 15
 *   and q_{e+192} & 15 likewise. A tile thus reads each group block in address order.
 *
 * The dot products of a packed row compute, per (row, token) pair, exactly what the x86 vec_dot
 * of the same variant computes for the same row in the original layout (AVX-512 VNNI packs all
 * eight types, AVX2 all but Q8_0, whose levels q + 128 would saturate maddubs). For Q4_0, Q5_0
 * and Q8_0 (Q8_0 activations): per block the exact integer sum of level products, then
 * acc = fma(d_w * d_x, (float)sum, acc) in block order from acc = 0. The unsigned levels are
 * corrected with the activation block sums that matmul prepares beside the quantized activations
 * (quill__q8_0_prepared_*; Q5_0 starts from twice the Q4_0 offset, -16 times the sum). For Q4_1
 * and Q5_1 (Q8_1 activations with fp16 d_x and s_x = d_x * sum of the block's values): per block
 * the exact integer sum of the unsigned level products, then acc = fma(d_w * d_x, (float)sum,
 * acc) and acc = fma(m_w, s_x, acc), in block order from acc = 0. For Q4_K, per super-block:
 * the exact integer isum = sum_j sc_j * (sum of level products of sub-block j) and mins = sum_j
 * m_j * (activation sum of sub-block j), then acc = fma(d_w * d_x, (float)isum, acc) and
 * acc = fma(-(dmin_w * d_x), (float)mins, acc) in super-block order from acc = 0. Q5_K does the
 * same with its 5-bit levels. For Q6_K, per super-block: the exact integer isum = sum_j sc_j *
 * (sum of level products of sub-block j - 32 * bsums_j), where bsums_j is the Q8_K activation
 * sum of the same 16 elements, then acc = fma(d_w * d_x, (float)isum, acc) in super-block order
 * from acc = 0.
 */
#ifndef QUILL_KERNELS_PACKED_H
#define QUILL_KERNELS_PACKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/status.h"

/* Rows per packed group. */
enum { QUILL_PACK_ROWS = 8 };

/* Returns true when the layout above is defined for weights of `type` (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q4_K, Q5_K, Q6_K). */
bool quill__pack_type_supported(uint32_t type);

/* Repacks n_rows rows of `type` (n_rows a multiple of QUILL_PACK_ROWS, rows row_bytes apart and
 * n_cols elements long) in place. scratch: QUILL_PACK_ROWS * row_bytes bytes. */
void quill__pack_rows(uint32_t type, void *data, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                      void *scratch);

/* Writes row `row` of a packed matrix in the original block layout into dst (row_bytes bytes):
 * the exact inverse of quill__pack_rows. */
void quill__packed_row_unpack(uint32_t type, const void *data, size_t row_bytes, int64_t row,
                              int64_t n_cols, void *dst);

/* A prepared Q8_0 activation row, as quill__matmul_prepare writes it for every Q8_0 activation
 * type, starts with the Q8_0 blocks (34 bytes each, the row that vec_dot reads). From
 * quill__q8_0_prepared_extras_offset on follow three arrays of n_blocks entries. They contain
 * each block's f32 scale, -8 times its value sum (int32, the Q4_0 level offset) and -128 times
 * its value sum (int32, the Q8_0 packed-level offset). */
static inline size_t quill__q8_0_prepared_extras_offset(int64_t n_blocks) {
    size_t bytes = (size_t)n_blocks * 34u;
    return (bytes + 63u) / 64u * 64u;
}

/* Bytes of one prepared Q8_0 activation row of n_blocks blocks, a multiple of 64. */
static inline size_t quill__q8_0_prepared_row_bytes(int64_t n_blocks) {
    size_t bytes = quill__q8_0_prepared_extras_offset(n_blocks) + (size_t)n_blocks * 12u;
    return (bytes + 63u) / 64u * 64u;
}

/* Fills the extras of a prepared row whose n_blocks Q8_0 blocks are already in place. */
void quill__q8_0_prepare_extras(void *row, int64_t n_blocks);

#endif
