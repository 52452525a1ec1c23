/*
 * Row-group packing of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights (layouts in
 * packed.h), its inverse, and the extras of prepared Q8_0 activation rows. Scalar code: packing
 * runs once per matrix at load time and unpacking once per embedding lookup, both far from the hot
 * loops.
 */
#include "kernels/packed.h"

#include <stddef.h>
#include <string.h>

#include "base/alloc.h"
#include "kernels/blocks.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "quill/tensor_type.h"

/* Bytes of each row's block. */
static size_t block_bytes(uint32_t type) {
    switch (type) {
    case QUILL_TYPE_Q4_0:
        return sizeof(quill_block_q4_0);
    case QUILL_TYPE_Q4_1:
        return sizeof(quill_block_q4_1);
    case QUILL_TYPE_Q5_0:
        return sizeof(quill_block_q5_0);
    case QUILL_TYPE_Q5_1:
        return sizeof(quill_block_q5_1);
    case QUILL_TYPE_Q4_K:
        return sizeof(quill_block_q4_k);
    case QUILL_TYPE_Q5_K:
        return sizeof(quill_block_q5_k);
    case QUILL_TYPE_Q6_K:
        return sizeof(quill_block_q6_k);
    default:
        return sizeof(quill_block_q8_0);
    }
}

/* Elements per block of a packed type. */
static int64_t block_elements(uint32_t type) {
    return type == QUILL_TYPE_Q4_K || type == QUILL_TYPE_Q5_K || type == QUILL_TYPE_Q6_K
               ? QUILL_QK_K
               : QUILL_QK;
}

/* Bytes of the largest block of a packed type (Q6_K). */
enum { MAX_BLOCK_BYTES = sizeof(quill_block_q6_k) };

/* Where the fields of a legacy block (32 elements: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) sit in the row
 * block and in the group block (packed.h). The fp16 fields (d, and m for Q4_1 and Q5_1) come
 * first in both. */
typedef struct legacy_layout {
    int n_fp16_fields; /* fp16 fields per block: 1 (d) or 2 (d, m) */
    bool has_qh;       /* Q5_0 and Q5_1: a 4-byte qh of fifth bits follows the fp16 fields */
    size_t qs;         /* offset of the level bytes in the row block */
    size_t n_qs;       /* level bytes per row block: 16 nibble pairs, or 32 for Q8_0 */
    size_t group_qh;   /* offset of the fifth-bit bytes in the group block */
    size_t group_qs;   /* offset of the level chunks in the group block */
} legacy_layout;

static legacy_layout legacy_layout_of(uint32_t type) {
    legacy_layout layout = {
        .n_fp16_fields = type == QUILL_TYPE_Q4_1 || type == QUILL_TYPE_Q5_1 ? 2 : 1,
        .has_qh = type == QUILL_TYPE_Q5_0 || type == QUILL_TYPE_Q5_1,
        .n_qs = type == QUILL_TYPE_Q8_0 ? 32u : 16u,
    };
    layout.qs = 2u * (size_t)layout.n_fp16_fields + (layout.has_qh ? 4u : 0u);
    layout.group_qh = 2u * QUILL_PACK_ROWS * (size_t)layout.n_fp16_fields;
    layout.group_qs = layout.group_qh + (layout.has_qh ? 4u * QUILL_PACK_ROWS : 0u);
    return layout;
}

/* Offset in the group block of row r's level byte `value_byte` (an index into qs). */
static size_t packed_offset(const legacy_layout *layout, size_t value_byte, int row) {
    return layout->group_qs + 32u * (value_byte / 4u) + 4u * (size_t)row + value_byte % 4u;
}

/* Q8_0 stores q + 128 as an unsigned byte, the other legacy types their nibble pairs unchanged. */
static uint8_t value_mask(uint32_t type) {
    return type == QUILL_TYPE_Q8_0 ? 0x80 : 0x00;
}

/* Moves row r's legacy block `block` into group block `out`. The fifth bits of element e = 4c + i
 * (the little-endian uint32 qh, bit e) go to bit c of group byte 4r + i, so that level vector c of
 * a tile takes its fifth bits from one shift of the 32 qh bytes. */
static void pack_legacy_block(uint32_t type, const legacy_layout *layout, const uint8_t *block,
                              int r, uint8_t *out) {
    for (int h = 0; h < layout->n_fp16_fields; h++) {
        memcpy(out + 2 * QUILL_PACK_ROWS * h + 2 * r, block + 2 * h, 2);
    }
    if (layout->has_qh) {
        uint32_t qh = quill__load_u32(block + 2 * layout->n_fp16_fields);
        for (int i = 0; i < 4; i++) {
            uint8_t spread = 0;
            for (int c = 0; c < 8; c++) {
                spread |= (uint8_t)(((qh >> (4 * c + i)) & 1u) << c);
            }
            out[layout->group_qh + 4 * (size_t)r + (size_t)i] = spread;
        }
    }
    const uint8_t mask = value_mask(type);
    for (size_t i = 0; i < layout->n_qs; i++) {
        out[packed_offset(layout, i, r)] = block[layout->qs + i] ^ mask;
    }
}

/* Inverts pack_legacy_block. */
static void unpack_legacy_block(uint32_t type, const legacy_layout *layout,
                                const uint8_t *group_block, int r, uint8_t *block) {
    for (int h = 0; h < layout->n_fp16_fields; h++) {
        memcpy(block + 2 * h, group_block + 2 * QUILL_PACK_ROWS * h + 2 * r, 2);
    }
    if (layout->has_qh) {
        uint32_t qh = 0;
        for (int i = 0; i < 4; i++) {
            uint8_t spread = group_block[layout->group_qh + 4 * (size_t)r + (size_t)i];
            for (int c = 0; c < 8; c++) {
                qh |= (uint32_t)((spread >> c) & 1u) << (4 * c + i);
            }
        }
        uint8_t *qh_bytes = block + 2 * layout->n_fp16_fields;
        for (int i = 0; i < 4; i++) {
            qh_bytes[i] = (uint8_t)(qh >> (8 * i));
        }
    }
    const uint8_t mask = value_mask(type);
    for (size_t i = 0; i < layout->n_qs; i++) {
        block[layout->qs + i] = group_block[packed_offset(layout, i, r)] ^ mask;
    }
}

bool quill__pack_type_supported(uint32_t type) {
    return type == QUILL_TYPE_Q4_0 || type == QUILL_TYPE_Q4_1 || type == QUILL_TYPE_Q5_0 ||
           type == QUILL_TYPE_Q5_1 || type == QUILL_TYPE_Q8_0 || type == QUILL_TYPE_Q4_K ||
           type == QUILL_TYPE_Q5_K || type == QUILL_TYPE_Q6_K;
}

/* Q4_K group block offsets (packed.h). */
enum {
    Q4_K_DMIN = 16,
    Q4_K_LOW_PLANE = 32,
    Q4_K_HIGH_PLANE = 96,
    Q4_K_QS = 128,
};

/* Q5_K group block offsets (packed.h): the Q4_K layout with the fifth bits before the nibbles. */
enum {
    Q5_K_QH = 128,
    Q5_K_QS = 384,
};

/* Offset of the nibbles (qs) in a Q4_K or Q5_K block. */
static size_t k_block_qs(uint32_t type) {
    return type == QUILL_TYPE_Q5_K ? offsetof(quill_block_q5_k, qs)
                                   : offsetof(quill_block_q4_k, qs);
}

/* Offset of the nibbles in a Q4_K or Q5_K group block. */
static size_t k_group_qs(uint32_t type) {
    return type == QUILL_TYPE_Q5_K ? Q5_K_QS : Q4_K_QS;
}

/* Moves row r's Q4_K or Q5_K super-block `block` into group block `out`. */
static void pack_q4_k_block(uint32_t type, const uint8_t *block, int r, uint8_t *out) {
    memcpy(out + 2 * r, block, 2);
    memcpy(out + Q4_K_DMIN + 2 * r, block + 2, 2);
    uint8_t sc[8];
    uint8_t m[8];
    for (int j = 0; j < 8; j++) {
        quill__q4_k_scale_min(j, block + 4, &sc[j], &m[j]);
        out[Q4_K_LOW_PLANE + 8 * j + r] = (uint8_t)((sc[j] & 15) | (m[j] & 15) << 4);
    }
    for (int j = 0; j < 4; j++) {
        out[Q4_K_HIGH_PLANE + 8 * j + r] =
            (uint8_t)(sc[j] >> 4 | (m[j] >> 4) << 2 | (sc[j + 4] >> 4) << 4 | (m[j + 4] >> 4) << 6);
    }
    if (type == QUILL_TYPE_Q5_K) {
        for (int c = 0; c < 8; c++) {
            memcpy(out + Q5_K_QH + 32 * c + 4 * r, block + offsetof(quill_block_q5_k, qh) + 4 * c,
                   4);
        }
    }
    for (int c = 0; c < 32; c++) {
        memcpy(out + k_group_qs(type) + 32 * c + 4 * r, block + k_block_qs(type) + 4 * c, 4);
    }
}

/* Inverts pack_q4_k_block: re-encodes the 6-bit scales and mins as the original 12 bytes. The
 * 96 bits contain each of the 16 values once (quill__q4_k_scale_min), so the bytes come back
 * exactly; the packed matmul test checks this for every row. */
static void unpack_q4_k_block(uint32_t type, const uint8_t *group_block, int r, uint8_t *block) {
    memcpy(block, group_block + 2 * r, 2);
    memcpy(block + 2, group_block + Q4_K_DMIN + 2 * r, 2);
    uint8_t sc[8];
    uint8_t m[8];
    for (int j = 0; j < 8; j++) {
        uint8_t low = group_block[Q4_K_LOW_PLANE + 8 * j + r];
        uint8_t high = group_block[Q4_K_HIGH_PLANE + 8 * (j % 4) + r] >> (j < 4 ? 0 : 4);
        sc[j] = (uint8_t)((low & 15) | (high & 3) << 4);
        m[j] = (uint8_t)((low >> 4) | ((high >> 2) & 3) << 4);
    }
    uint8_t *scales = block + 4;
    for (int j = 0; j < 4; j++) {
        scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        scales[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
    if (type == QUILL_TYPE_Q5_K) {
        for (int c = 0; c < 8; c++) {
            memcpy(block + offsetof(quill_block_q5_k, qh) + 4 * c,
                   group_block + Q5_K_QH + 32 * c + 4 * r, 4);
        }
    }
    for (int c = 0; c < 32; c++) {
        memcpy(block + k_block_qs(type) + 4 * c, group_block + k_group_qs(type) + 32 * c + 4 * r,
               4);
    }
}

/* Q6_K group block offsets (packed.h): 4 sections of 384 bytes follow the scales, each made of a
 * high-bit part and two low-nibble parts of 128 bytes. */
enum {
    Q6_K_SCALES = 16,
    Q6_K_SECTIONS = 144,
    Q6_K_SECTION_BYTES = 384,
    Q6_K_PART_BYTES = 128,
    Q6_K_GROUP_BLOCK = QUILL_PACK_ROWS * sizeof(quill_block_q6_k),
};

/* Decodes the 256 6-bit levels of a Q6_K block (blocks.h) in element order. */
static void q6_k_levels(const quill_block_q6_k *block, uint8_t levels[QUILL_QK_K]) {
    for (int e = 0; e < QUILL_QK_K; e++) {
        int half = e / 128;
        int quarter = e % 128 / 32;
        int l = e % 32;
        uint8_t low = block->ql[64 * half + 32 * (quarter % 2) + l];
        low = quarter < 2 ? low & 15 : low >> 4;
        uint8_t high = (uint8_t)((block->qh[32 * half + l] >> (2 * quarter)) & 3);
        levels[e] = (uint8_t)(low | high << 4);
    }
}

/* Offset in a Q6_K group block of byte i of chunk k of `part` (0: high bits, 1 and 2: low
 * nibbles) in section g, row r. */
static size_t q6_k_offset(int g, int part, int k, int r, int i) {
    return (size_t)(Q6_K_SECTIONS + Q6_K_SECTION_BYTES * g + Q6_K_PART_BYTES * part + 32 * k +
                    4 * r + i);
}

/* Moves row r's Q6_K super-block `block` into group block `out`. */
static void pack_q6_k_block(const quill_block_q6_k *block, int r, uint8_t *out) {
    memcpy(out + 2 * r, block->d, 2);
    for (int j = 0; j < 16; j++) {
        out[Q6_K_SCALES + 8 * j + r] = (uint8_t)block->scales[j];
    }
    uint8_t levels[QUILL_QK_K];
    q6_k_levels(block, levels);
    for (int g = 0; g < 4; g++) {
        for (int k = 0; k < 4; k++) {
            for (int i = 0; i < 4; i++) {
                /* Element e of sub-block g, and the same element of sub-blocks g + 4, g + 8 and
                 * g + 12 at e + 64, e + 128 and e + 192. */
                const uint8_t *q = levels + 16 * g + 4 * k + i;
                out[q6_k_offset(g, 0, k, r, i)] =
                    (uint8_t)(q[0] >> 4 | (q[64] >> 4) << 2 | (q[128] >> 4) << 4 |
                              (q[192] >> 4) << 6);
                out[q6_k_offset(g, 1, k, r, i)] = (uint8_t)((q[0] & 15) | (q[128] & 15) << 4);
                out[q6_k_offset(g, 2, k, r, i)] = (uint8_t)((q[64] & 15) | (q[192] & 15) << 4);
            }
        }
    }
}

/* Inverts pack_q6_k_block. The parts contain each level's 6 bits once, as ql and qh do, so
 * re-encoding them restores the original bytes exactly. */
static void unpack_q6_k_block(const uint8_t *group_block, int r, quill_block_q6_k *block) {
    memcpy(block->d, group_block + 2 * r, 2);
    for (int j = 0; j < 16; j++) {
        block->scales[j] = (int8_t)group_block[Q6_K_SCALES + 8 * j + r];
    }
    uint8_t levels[QUILL_QK_K];
    for (int g = 0; g < 4; g++) {
        for (int k = 0; k < 4; k++) {
            for (int i = 0; i < 4; i++) {
                uint8_t *q = levels + 16 * g + 4 * k + i;
                uint8_t high = group_block[q6_k_offset(g, 0, k, r, i)];
                uint8_t low_0_128 = group_block[q6_k_offset(g, 1, k, r, i)];
                uint8_t low_64_192 = group_block[q6_k_offset(g, 2, k, r, i)];
                q[0] = (uint8_t)((low_0_128 & 15) | (high & 3) << 4);
                q[64] = (uint8_t)((low_64_192 & 15) | ((high >> 2) & 3) << 4);
                q[128] = (uint8_t)((low_0_128 >> 4) | ((high >> 4) & 3) << 4);
                q[192] = (uint8_t)((low_64_192 >> 4) | ((high >> 6) & 3) << 4);
            }
        }
    }
    memset(block->ql, 0, sizeof(block->ql));
    memset(block->qh, 0, sizeof(block->qh));
    for (int e = 0; e < QUILL_QK_K; e++) {
        int half = e / 128;
        int quarter = e % 128 / 32;
        int l = e % 32;
        uint8_t low = levels[e] & 15;
        block->ql[64 * half + 32 * (quarter % 2) + l] |= (uint8_t)(quarter < 2 ? low : low << 4);
        block->qh[32 * half + l] |= (uint8_t)((levels[e] >> 4) << (2 * quarter));
    }
}

void quill__pack_rows(uint32_t type, void *data, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                      void *scratch) {
    const size_t bytes = block_bytes(type);
    const int64_t n_blocks = n_cols / QUILL_QK;
    const legacy_layout layout = legacy_layout_of(type);
    uint8_t *rows = scratch;
    for (int64_t group = 0; group + QUILL_PACK_ROWS <= n_rows; group += QUILL_PACK_ROWS) {
        uint8_t *out = (uint8_t *)data + (size_t)group * row_bytes;
        memcpy(rows, out, QUILL_PACK_ROWS * row_bytes);
        if (type == QUILL_TYPE_Q4_K || type == QUILL_TYPE_Q5_K) {
            for (int64_t b = 0; b < n_cols / QUILL_QK_K; b++) {
                for (int r = 0; r < QUILL_PACK_ROWS; r++) {
                    pack_q4_k_block(type, rows + (size_t)r * row_bytes + (size_t)b * bytes, r,
                                    out + (size_t)b * QUILL_PACK_ROWS * bytes);
                }
            }
            continue;
        }
        if (type == QUILL_TYPE_Q6_K) {
            for (int64_t b = 0; b < n_cols / QUILL_QK_K; b++) {
                for (int r = 0; r < QUILL_PACK_ROWS; r++) {
                    const uint8_t *block =
                        rows + (size_t)r * row_bytes + (size_t)b * sizeof(quill_block_q6_k);
                    pack_q6_k_block((const quill_block_q6_k *)block, r,
                                    out + (size_t)b * Q6_K_GROUP_BLOCK);
                }
            }
            continue;
        }
        for (int64_t b = 0; b < n_blocks; b++) {
            uint8_t *group_block = out + (size_t)b * QUILL_PACK_ROWS * bytes;
            for (int r = 0; r < QUILL_PACK_ROWS; r++) {
                pack_legacy_block(type, &layout, rows + (size_t)r * row_bytes + (size_t)b * bytes,
                                  r, group_block);
            }
        }
    }
}

void quill__packed_row_unpack(uint32_t type, const void *data, size_t row_bytes, int64_t row,
                              int64_t n_cols, void *dst) {
    const size_t bytes = block_bytes(type);
    const int64_t n_blocks = n_cols / QUILL_QK;
    const legacy_layout layout = legacy_layout_of(type);
    const int r = (int)(row % QUILL_PACK_ROWS);
    const uint8_t *group = (const uint8_t *)data + (size_t)(row - r) * row_bytes;
    uint8_t *out = dst;
    if (type == QUILL_TYPE_Q4_K || type == QUILL_TYPE_Q5_K) {
        for (int64_t b = 0; b < n_cols / QUILL_QK_K; b++) {
            unpack_q4_k_block(type, group + (size_t)b * QUILL_PACK_ROWS * bytes, r,
                              out + (size_t)b * bytes);
        }
        return;
    }
    if (type == QUILL_TYPE_Q6_K) {
        for (int64_t b = 0; b < n_cols / QUILL_QK_K; b++) {
            unpack_q6_k_block(group + (size_t)b * Q6_K_GROUP_BLOCK, r,
                              (quill_block_q6_k *)(out + (size_t)b * sizeof(quill_block_q6_k)));
        }
        return;
    }
    for (int64_t b = 0; b < n_blocks; b++) {
        unpack_legacy_block(type, &layout, group + (size_t)b * QUILL_PACK_ROWS * bytes, r,
                            out + (size_t)b * bytes);
    }
}

void quill__q8_0_prepare_extras(void *row, int64_t n_blocks) {
    uint8_t *bytes = row;
    uint8_t *extras = bytes + quill__q8_0_prepared_extras_offset(n_blocks);
    for (int64_t b = 0; b < n_blocks; b++) {
        const quill_block_q8_0 *block = (const quill_block_q8_0 *)(bytes + (size_t)b * 34u);
        int32_t sum = 0;
        for (int i = 0; i < QUILL_QK; i++) {
            sum += block->qs[i];
        }
        float d = quill__load_fp16(block->d);
        int32_t offset_q4 = -8 * sum;
        int32_t offset_q8 = -128 * sum;
        memcpy(extras + (size_t)b * 4u, &d, sizeof(d));
        memcpy(extras + (size_t)(n_blocks + b) * 4u, &offset_q4, sizeof(offset_q4));
        memcpy(extras + (size_t)(2 * n_blocks + b) * 4u, &offset_q8, sizeof(offset_q8));
    }
}

quill_status quill__matrix_dequantize_row(const quill_matrix *matrix, int64_t row, float *dst) {
    const uint8_t *data = matrix->data;
    if (!matrix->is_packed) {
        return quill__dequantize_row(matrix->type, data + (size_t)row * matrix->row_bytes, dst,
                                     matrix->n_cols);
    }
    /* One block at a time, so no buffer of a whole row is needed. */
    const size_t bytes = block_bytes(matrix->type);
    const int64_t elements = block_elements(matrix->type);
    const int r = (int)(row % QUILL_PACK_ROWS);
    const uint8_t *group = data + (size_t)(row - r) * matrix->row_bytes;
    const int64_t n_blocks = matrix->n_cols / elements;
    for (int64_t b = 0; b < n_blocks; b++) {
        uint8_t block[MAX_BLOCK_BYTES];
        quill__packed_row_unpack(matrix->type, group + (size_t)b * QUILL_PACK_ROWS * bytes,
                                 matrix->row_bytes, r, elements, block);
        quill_status status =
            quill__dequantize_row(matrix->type, block, dst + b * elements, elements);
        if (status != QUILL_OK) {
            return status;
        }
    }
    return QUILL_OK;
}

bool quill__matrix_wants_packing(uint32_t type, int64_t n_rows) {
    return quill__pack_type_supported(type) && n_rows > 0 && n_rows % QUILL_PACK_ROWS == 0 &&
           quill__kernels_table()->types[type].gemm_packed != NULL;
}

quill_status quill__matrix_pack(quill_matrix *matrix) {
    uint8_t *scratch = quill__malloc_array(QUILL_PACK_ROWS, matrix->row_bytes);
    if (scratch == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM,
                               "kernels: out of memory repacking a %lld x %lld "
                               "matrix",
                               (long long)matrix->n_rows, (long long)matrix->n_cols);
    }
    /* The matrix data are writable by the caller's contract; the field is const for readers. */
    quill__pack_rows(matrix->type, (void *)(uintptr_t)matrix->data, matrix->row_bytes,
                     matrix->n_rows, matrix->n_cols, scratch);
    quill__free(scratch);
    matrix->is_packed = true;
    return QUILL_OK;
}
