/*
 * Tests of the ISA kernel variants against the scalar reference. Activation quantizers and half
 * conversions must be bit-identical, and dot products exact on integer-valued blocks and within
 * a stated float bound on random data. Gemm tiles must equal the variant's own vec_dot bit for
 * bit, and matmul must be batch- and thread-invariant per variant. Rows sit at unaligned addresses
 * and data include zeros, tiny and large magnitudes and exact rounding ties. Variants this CPU or
 * build cannot run are printed as skipped.
 */
#include "test_support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/threadpool.h"
#include "kernels/blocks.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/packed.h"
#if defined(QUILL_HAVE_NEON)
#include "kernels/neon/kernels_neon.h"
#endif
#include "quill/status.h"
#include "quill/tensor_type.h"

typedef struct rng {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *generator) {
    generator->state ^= generator->state >> 12;
    generator->state ^= generator->state << 25;
    generator->state ^= generator->state >> 27;
    return generator->state * 0x2545F4914F6CDD1DULL;
}

static float rng_uniform(rng *generator) {
    return (float)((double)(rng_next(generator) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Fills n values in blocks of 32 whose magnitudes vary, mostly within 10^[-2.5, 1.5]. One block
 * in eight is all zeros, one tiny (1e-7, so fp16 scales are subnormal), one large (1e5), and one
 * an exact rounding-tie pattern: integers and halves with amax 127, so x / d lands on .5. */
static void fill_extreme(rng *generator, float *x, int64_t n) {
    for (int64_t b = 0; b < n; b += 32) {
        uint64_t pick = rng_next(generator) % 8;
        float magnitude = powf(10.0f, 2.0f * rng_uniform(generator) - 0.5f);
        if (pick == 1) {
            magnitude = 1e-7f;
        } else if (pick == 2) {
            magnitude = 1e5f;
        }
        for (int64_t i = b; i < b + 32 && i < n; i++) {
            if (pick == 0) {
                x[i] = 0.0f;
            } else if (pick == 3) {
                x[i] = (float)((int)(rng_next(generator) % 253) - 126) * 0.5f;
            } else {
                x[i] = magnitude * rng_uniform(generator);
            }
        }
        if (pick == 3) {
            x[b] = 127.0f;
        }
    }
}

static size_t row_bytes_of(uint32_t type, int64_t n) {
    size_t n_bytes = 0;
    assert_true(quill_type_row_bytes(type, n, &n_bytes));
    return n_bytes;
}

static int64_t block_size_of(uint32_t type) {
    return quill_type_traits_get(type)->block_elements;
}

/* The variants to compare with the reference; those this machine cannot run are printed. */
static int collect_variants(const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT]) {
    int n_tables = 0;
    for (int v = QUILL_KERNEL_VARIANT_REF + 1; v < QUILL_KERNEL_VARIANT_COUNT; v++) {
        const quill_kernel_table *table = quill__kernels_variant_table((quill_kernel_variant)v);
        if (table == NULL) {
            print_message("[ SKIPPED  ] variant %s: not supported by this CPU or build\n",
                          quill__kernels_variant_label((quill_kernel_variant)v));
            continue;
        }
        tables[n_tables++] = table;
    }
    return n_tables;
}

static const uint32_t weight_types[] = {
    QUILL_TYPE_F32,  QUILL_TYPE_F16,  QUILL_TYPE_BF16, QUILL_TYPE_Q4_0,
    QUILL_TYPE_Q4_1, QUILL_TYPE_Q5_0, QUILL_TYPE_Q5_1, QUILL_TYPE_Q8_0,
    QUILL_TYPE_Q4_K, QUILL_TYPE_Q5_K, QUILL_TYPE_Q6_K,
};
enum { N_WEIGHT_TYPES = sizeof(weight_types) / sizeof(weight_types[0]) };

/* ---- activation quantizers ---- */

static void test_simd_quantize_matches_ref(void **state) {
    (void)state;
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    const quill_kernel_table *ref = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF);
    const uint32_t types[] = {QUILL_TYPE_Q8_0, QUILL_TYPE_Q8_1, QUILL_TYPE_Q8_K};
    rng generator = {11};
    enum { N = 2048 };
    /* One spare float in front, so the input row starts 4 bytes off the 32-byte alignment,
     * and one spare byte so the output starts at an odd address. */
    float *x_buffer = quill__malloc_array(N + 1, sizeof(float));
    uint8_t *expected = quill__malloc(4096);
    uint8_t *got_buffer = quill__malloc(4097);
    assert_non_null(x_buffer);
    assert_non_null(expected);
    assert_non_null(got_buffer);
    float *x = x_buffer + 1;
    uint8_t *got = got_buffer + 1;

    for (int trial = 0; trial < 8; trial++) {
        fill_extreme(&generator, x, N);
        for (size_t k = 0; k < 3; k++) {
            size_t n_bytes = row_bytes_of(types[k], N);
            ref->types[types[k]].quantize_row(x, expected, N);
            for (int v = 0; v < n_tables; v++) {
                memset(got, 0xa5, n_bytes);
                tables[v]->types[types[k]].quantize_row(x, got, N);
                assert_memory_equal(got, expected, n_bytes);
            }
        }
    }
    quill__free(got_buffer);
    quill__free(expected);
    quill__free(x_buffer);
}

/* Exact ties: x / d is k + 0.5 for Q8_0 (roundf rounds away from zero) and for Q8_K (ties go
 * to even), checked on the bytes. */
static void test_simd_quantize_rounding_ties(void **state) {
    (void)state;
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    float x[256];
    for (int i = 0; i < 256; i++) {
        x[i] = (float)((i % 9) - 4) + 0.5f;
    }
    x[0] = 127.0f;
    x[32] = 127.0f;
    for (int v = 0; v < n_tables; v++) {
        quill_block_q8_0 q8_0[8];
        tables[v]->types[QUILL_TYPE_Q8_0].quantize_row(x, q8_0, 256);
        /* x[1] = -2.5 rounds to -3, x[5] = 1.5 rounds to 2, x[6] = 2.5 rounds to 3. */
        assert_int_equal(q8_0[0].qs[1], -3);
        assert_int_equal(q8_0[0].qs[5], 2);
        assert_int_equal(q8_0[0].qs[6], 3);

        quill_block_q8_k q8_k;
        tables[v]->types[QUILL_TYPE_Q8_K].quantize_row(x, &q8_k, 256);
        /* Scale -1: -2.5 -> 2.5 -> 2 (even), 1.5 -> -1.5 -> -2, 2.5 -> -2.5 -> -2. */
        assert_int_equal(q8_k.qs[1], 2);
        assert_int_equal(q8_k.qs[5], -2);
        assert_int_equal(q8_k.qs[6], -2);
        assert_int_equal(q8_k.qs[0], -127);
    }
}

/* Half-precision row conversions must match the reference bit for bit on every kind of input:
 * random bit patterns cover NaN, infinities, subnormals and values that overflow fp16. */
static void test_simd_half_conversions_match_ref(void **state) {
    (void)state;
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    const quill_kernel_table *ref = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF);
    const uint32_t types[] = {QUILL_TYPE_F16, QUILL_TYPE_BF16};
    rng generator = {17};
    enum { N = 1003 };
    uint32_t *bits = quill__malloc_array(N + 1, sizeof(uint32_t));
    uint8_t *halves = quill__malloc(2 * N + 1);
    uint8_t *expected_halves = quill__malloc(2 * N);
    float *expected = quill__malloc_array(N, sizeof(float));
    float *got = quill__malloc_array(N + 1, sizeof(float));
    assert_non_null(bits);
    assert_non_null(halves);
    assert_non_null(expected_halves);
    assert_non_null(expected);
    assert_non_null(got);
    for (int i = 0; i <= N; i++) {
        bits[i] = (uint32_t)rng_next(&generator);
        if (i % 3 == 0) {
            /* Bias towards the fp16 range, where rounding matters most. */
            bits[i] = (bits[i] & 0x807fffff) | ((uint32_t)(100 + i % 45) << 23);
        }
    }
    const float *x = (const float *)(bits + 1);

    for (size_t k = 0; k < 2; k++) {
        uint32_t type = types[k];
        ref->types[type].quantize_row(x, expected_halves, N);
        ref->types[type].dequantize_row(expected_halves, expected, N);
        for (int v = 0; v < n_tables; v++) {
            /* Odd output address for the halves, 4-byte offset for the floats. */
            tables[v]->types[type].quantize_row(x, halves + 1, N);
            assert_memory_equal(halves + 1, expected_halves, 2 * N);
            tables[v]->types[type].dequantize_row(halves + 1, got + 1, N);
            assert_memory_equal(got + 1, expected, N * sizeof(float));
        }
    }
    quill__free(got);
    quill__free(expected);
    quill__free(expected_halves);
    quill__free(halves);
    quill__free(bits);
}

/* ---- dot products ---- */

/* Allowed |variant - ref| on random data. Both add the same per-block terms (each an exact
 * integer sum scaled by d_w * d_x), only associated differently. So each result is within
 * (n_terms + 8) * 2^-24 * M of the exact value, where M bounds the sum of the terms' magnitudes.
 * M = sum |x_i| * 2 * max|w| over each block of 32, because a level times its scale is at most
 * |w| plus the block offset, and the offset is at most max|w|. The difference is at most twice
 * that bound. BF16 kernels may round the activations to bf16 for the BF16 dot instruction,
 * which adds at most 2^-9 * |w_i * x_i| per product, within 2^-9 * M in all. */
static double variant_tolerance(uint32_t type, int64_t n, const float *w, const float *x) {
    double magnitude = 0.0;
    for (int64_t b = 0; b < n; b += 32) {
        double max_w = 0.0;
        double sum_x = 0.0;
        for (int64_t i = b; i < b + 32 && i < n; i++) {
            max_w = fabs((double)w[i]) > max_w ? fabs((double)w[i]) : max_w;
            sum_x += fabs((double)x[i]);
        }
        magnitude += 2.0 * max_w * sum_x;
    }
    int64_t n_terms = block_size_of(type) == 1 ? n : n / block_size_of(type);
    double rounding = type == QUILL_TYPE_BF16 ? ldexp(1.0, -9) * magnitude : 0.0;
    return 2.0 * (double)(n_terms + 8) * ldexp(1.0, -24) * magnitude + rounding + 1e-30;
}

/* Quantized rows for one weight type: weights and activations both from fill_extreme, copied to
 * odd addresses. */
typedef struct dot_rows {
    uint32_t type;
    uint32_t activation_type;
    int64_t n;
    float *w_dequantized; /* f32 [n] */
    float *x_dequantized; /* f32 [n] */
    float *x;             /* f32 [n], the unquantized activations */
    uint8_t *w_buffer;    /* row bytes + 1 */
    uint8_t *x_buffer;    /* row bytes + 1 */
} dot_rows;

static void dot_rows_init(dot_rows *rows, uint32_t type, int64_t n, rng *generator) {
    const quill_kernel_table *ref = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF);
    rows->type = type;
    rows->activation_type = ref->types[type].vec_dot_type;
    rows->n = n;
    rows->w_dequantized = quill__malloc_array((size_t)n, sizeof(float));
    rows->x_dequantized = quill__malloc_array((size_t)n, sizeof(float));
    rows->x = quill__malloc_array((size_t)n + 1, sizeof(float));
    rows->w_buffer = quill__malloc(row_bytes_of(type, n) + 1);
    rows->x_buffer = quill__malloc(row_bytes_of(rows->activation_type, n) + 1);
    assert_non_null(rows->w_dequantized);
    assert_non_null(rows->x_dequantized);
    assert_non_null(rows->x);
    assert_non_null(rows->w_buffer);
    assert_non_null(rows->x_buffer);

    float *w = quill__malloc_array((size_t)n, sizeof(float));
    assert_non_null(w);
    fill_extreme(generator, w, n);
    /* Keep weights within fp16 range of the scales: 1e5 blocks become 1e3. */
    for (int64_t i = 0; i < n; i++) {
        w[i] = fabsf(w[i]) > 1e4f ? w[i] * 1e-2f : w[i];
    }
    fill_extreme(generator, rows->x, n);
    ref->types[type].quantize_row(w, rows->w_buffer + 1, n);
    ref->types[type].dequantize_row(rows->w_buffer + 1, rows->w_dequantized, n);
    if (rows->activation_type == QUILL_TYPE_F32) {
        /* f32 activations must be float-aligned: use the row in place. */
        memcpy(rows->x_dequantized, rows->x, (size_t)n * sizeof(float));
    } else {
        ref->types[rows->activation_type].quantize_row(rows->x, rows->x_buffer + 1, n);
        ref->types[rows->activation_type].dequantize_row(rows->x_buffer + 1, rows->x_dequantized,
                                                         n);
    }
    quill__free(w);
}

static const void *dot_rows_activations(const dot_rows *rows) {
    if (rows->activation_type == QUILL_TYPE_F32) {
        return rows->x;
    }
    return rows->x_buffer + 1;
}

static void dot_rows_release(dot_rows *rows) {
    quill__free(rows->x_buffer);
    quill__free(rows->w_buffer);
    quill__free(rows->x);
    quill__free(rows->x_dequantized);
    quill__free(rows->w_dequantized);
}

static void test_simd_vec_dot_close_to_ref(void **state) {
    (void)state;
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    const quill_kernel_table *ref = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF);
    rng generator = {31};
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        uint32_t type = weight_types[t];
        /* Several multiples of the block size; plain types also get lengths that are not a
         * multiple of the vector width. */
        const int64_t lengths_blocks[] = {256, 512, 768, 2048};
        const int64_t lengths_plain[] = {1, 7, 33, 100, 255, 2051};
        const int64_t *lengths = block_size_of(type) == 1 ? lengths_plain : lengths_blocks;
        int n_lengths = block_size_of(type) == 1 ? 6 : 4;
        for (int k = 0; k < n_lengths; k++) {
            dot_rows rows;
            dot_rows_init(&rows, type, lengths[k], &generator);
            float expected =
                ref->types[type].vec_dot(rows.n, rows.w_buffer + 1, dot_rows_activations(&rows));
            double tolerance =
                variant_tolerance(type, rows.n, rows.w_dequantized, rows.x_dequantized);
            for (int v = 0; v < n_tables; v++) {
                float got = tables[v]->types[type].vec_dot(rows.n, rows.w_buffer + 1,
                                                           dot_rows_activations(&rows));
                if (!isfinite(expected)) {
                    /* Q8_1's fp16 s overflows when |d_x * sum(q_x)| > 65504 (1e5 blocks), in
                     * llama.cpp too; the variants must then agree on the infinity or NaN. */
                    assert_int_equal(isnan(got) != 0, isnan(expected) != 0);
                    assert_true(isnan(got) || got == expected);
                    continue;
                }
                if (!(fabs((double)got - expected) <= tolerance)) {
                    print_error("%s %s n=%lld: got %.9g, ref %.9g, tolerance %g\n", tables[v]->name,
                                quill_type_name(type), (long long)rows.n, got, expected, tolerance);
                }
                assert_true(fabs((double)got - expected) <= tolerance);
            }
            dot_rows_release(&rows);
        }
    }
}

/* Unit-scale blocks (d = dmin = 1, f32 d_x = 1) make every float step exact, so the variants
 * must return exactly the reference's integer. Activations stay in [-7, 7] so sums stay below
 * 2^24 (see test_kernels.c). */
static void fill_unit_rows(uint32_t type, uint32_t activation_type, int64_t n, rng *generator,
                           uint8_t *w_row, uint8_t *x_row) {
    const uint8_t one[2] = {0x00, 0x3c};
    size_t w_bytes = row_bytes_of(type, n);
    for (size_t i = 0; i < w_bytes; i++) {
        w_row[i] = (uint8_t)rng_next(generator);
    }
    size_t block_bytes = quill_type_traits_get(type)->block_bytes;
    for (size_t offset = 0; offset < w_bytes; offset += block_bytes) {
        if (type == QUILL_TYPE_Q6_K) {
            memcpy(((quill_block_q6_k *)(w_row + offset))->d, one, 2);
            continue;
        }
        memcpy(w_row + offset, one, 2);
        if (type == QUILL_TYPE_Q4_1 || type == QUILL_TYPE_Q5_1 || type == QUILL_TYPE_Q4_K ||
            type == QUILL_TYPE_Q5_K) {
            memcpy(w_row + offset + 2, one, 2);
        }
    }

    int64_t x_block = block_size_of(activation_type);
    for (int64_t b = 0; b < n / x_block; b++) {
        if (activation_type == QUILL_TYPE_Q8_K) {
            quill_block_q8_k *block = (quill_block_q8_k *)x_row + b;
            quill__store_f32(block->d, 1.0f);
            for (int group = 0; group < 16; group++) {
                int32_t sum = 0;
                for (int j = 0; j < 16; j++) {
                    block->qs[16 * group + j] = (int8_t)((int)(rng_next(generator) % 15) - 7);
                    sum += block->qs[16 * group + j];
                }
                quill__store_i16(&block->bsums[2 * group], sum);
            }
            continue;
        }
        size_t stride = activation_type == QUILL_TYPE_Q8_1 ? 36 : 34;
        uint8_t *block = x_row + (size_t)b * stride;
        int8_t *qs = (int8_t *)(block + stride - 32);
        int32_t sum = 0;
        memcpy(block, one, 2);
        for (int j = 0; j < 32; j++) {
            qs[j] = (int8_t)((int)(rng_next(generator) % 15) - 7);
            sum += qs[j];
        }
        if (activation_type == QUILL_TYPE_Q8_1) {
            quill__store_fp16(block + 2, (float)sum);
        }
    }
}

static void test_simd_vec_dot_integer_exact(void **state) {
    (void)state;
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    const quill_kernel_table *ref = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF);
    rng generator = {4242};
    enum { N = 512 };
    uint8_t *w_buffer = quill__malloc(N * 2 + 1);
    uint8_t *x_buffer = quill__malloc(N * 2 + 1);
    assert_non_null(w_buffer);
    assert_non_null(x_buffer);
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        uint32_t type = weight_types[t];
        uint32_t activation_type = ref->types[type].vec_dot_type;
        if (activation_type == QUILL_TYPE_F32) {
            continue;
        }
        for (int trial = 0; trial < 16; trial++) {
            fill_unit_rows(type, activation_type, N, &generator, w_buffer + 1, x_buffer + 1);
            float expected = ref->types[type].vec_dot(N, w_buffer + 1, x_buffer + 1);
            for (int v = 0; v < n_tables; v++) {
                float got = tables[v]->types[type].vec_dot(N, w_buffer + 1, x_buffer + 1);
                if (got != expected) {
                    print_error("%s %s trial %d: got %.1f, ref %.1f\n", tables[v]->name,
                                quill_type_name(type), trial, got, expected);
                }
                assert_true(got == expected);
            }
        }
    }
    quill__free(x_buffer);
    quill__free(w_buffer);
}

/* ---- gemm and matmul ---- */

enum { MAX_TOKENS = 64, N_ROWS = 37 };

/* A weight matrix of N_ROWS rows at an odd address and MAX_TOKENS activation rows. */
typedef struct simd_matmul_case {
    quill_matrix weights;
    uint8_t *weight_buffer; /* [N_ROWS][row_bytes] + 1 */
    float *x;               /* f32 [MAX_TOKENS][x_stride] */
    int64_t x_stride;
    int64_t y_stride;
} simd_matmul_case;

static void simd_case_init(simd_matmul_case *test_case, uint32_t type, int64_t n_cols,
                           rng *generator) {
    const quill_kernel_table *ref = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF);
    size_t row_bytes = row_bytes_of(type, n_cols);
    test_case->weight_buffer = quill__malloc(row_bytes * N_ROWS + 1);
    test_case->x_stride = n_cols + 1;
    test_case->y_stride = N_ROWS + 3;
    test_case->x = quill__malloc_array((size_t)(MAX_TOKENS * test_case->x_stride), sizeof(float));
    float *w = quill__malloc_array((size_t)n_cols, sizeof(float));
    assert_non_null(test_case->weight_buffer);
    assert_non_null(test_case->x);
    assert_non_null(w);
    for (int r = 0; r < N_ROWS; r++) {
        fill_extreme(generator, w, n_cols);
        for (int64_t i = 0; i < n_cols; i++) {
            w[i] = fabsf(w[i]) > 1e4f ? w[i] * 1e-2f : w[i];
        }
        ref->types[type].quantize_row(w, test_case->weight_buffer + 1 + (size_t)r * row_bytes,
                                      n_cols);
    }
    fill_extreme(generator, test_case->x, MAX_TOKENS * test_case->x_stride - 1);
    quill__free(w);
    test_case->weights = (quill_matrix){
        .type = type,
        .n_rows = N_ROWS,
        .n_cols = n_cols,
        .data = test_case->weight_buffer + 1,
        .row_bytes = row_bytes,
    };
}

static void simd_case_release(simd_matmul_case *test_case) {
    quill__free(test_case->x);
    quill__free(test_case->weight_buffer);
}

static float *simd_run(const quill_kernel_table *table, quill_threadpool *pool,
                       const simd_matmul_case *test_case, int64_t first, int64_t n_tokens) {
    size_t scratch_bytes = quill__matmul_scratch_bytes(&test_case->weights, n_tokens);
    void *scratch = quill__aligned_alloc(64, scratch_bytes > 0 ? scratch_bytes : 64);
    float *y = quill__malloc_array((size_t)(n_tokens * test_case->y_stride), sizeof(float));
    assert_non_null(scratch);
    assert_non_null(y);
    quill__matmul_with_table(table, pool, &test_case->weights,
                             test_case->x + first * test_case->x_stride, test_case->x_stride,
                             n_tokens, y, test_case->y_stride, scratch);
    quill__free(scratch);
    return y;
}

/* Every output equals the variant's vec_dot on the variant's own quantized activations. */
static void check_matmul_equals_vec_dot(const quill_kernel_table *table,
                                        const simd_matmul_case *test_case, const float *y,
                                        int64_t n_tokens) {
    uint32_t type = test_case->weights.type;
    uint32_t activation_type = table->types[type].vec_dot_type;
    int64_t n_cols = test_case->weights.n_cols;
    uint8_t *activation = quill__malloc(row_bytes_of(activation_type, n_cols) + 64);
    assert_non_null(activation);
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *x = test_case->x + t * test_case->x_stride;
        const void *activation_row = x;
        if (activation_type != QUILL_TYPE_F32) {
            table->types[activation_type].quantize_row(x, activation, n_cols);
            activation_row = activation;
        }
        for (int64_t r = 0; r < N_ROWS; r++) {
            const uint8_t *w_row =
                (const uint8_t *)test_case->weights.data + (size_t)r * test_case->weights.row_bytes;
            float expected = table->types[type].vec_dot(n_cols, w_row, activation_row);
            float got = y[t * test_case->y_stride + r];
            if (memcmp(&got, &expected, sizeof(got)) != 0) {
                print_error("%s %s token %lld row %lld: gemm %.9g, vec_dot %.9g\n", table->name,
                            quill_type_name(type), (long long)t, (long long)r, got, expected);
            }
            assert_memory_equal(&got, &expected, sizeof(got));
        }
    }
    quill__free(activation);
}

static quill_threadpool *create_pool(int n_threads) {
    quill_threadpool_params params = quill__threadpool_params_default();
    params.n_threads = n_threads;
    params.use_pinning = false;
    params.spin_us = 0;
    quill_threadpool *pool = NULL;
    assert_int_equal(quill__threadpool_create(&params, &pool), QUILL_OK);
    return pool;
}

static void test_simd_matmul_gemm_and_invariance(void **state) {
    (void)state;
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    quill_threadpool *pool = create_pool(3);
    rng generator = {555};
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        uint32_t type = weight_types[t];
        /* 19 blocks of 32: two groups of 8 and a tail in the AVX-512 Q4_0 decode tile. */
        int64_t n_cols = block_size_of(type) == 256 ? 512 : (block_size_of(type) == 32 ? 608 : 75);
        simd_matmul_case test_case;
        simd_case_init(&test_case, type, n_cols, &generator);
        for (int v = 0; v < n_tables; v++) {
            float *all = simd_run(tables[v], NULL, &test_case, 0, MAX_TOKENS);
            check_matmul_equals_vec_dot(tables[v], &test_case, all, MAX_TOKENS);

            /* Batch of 7 from token 9 and single tokens: the same rows, bit for bit. */
            float *seven = simd_run(tables[v], NULL, &test_case, 9, 7);
            for (int64_t k = 0; k < 7; k++) {
                assert_memory_equal(seven + k * test_case.y_stride,
                                    all + (9 + k) * test_case.y_stride, N_ROWS * sizeof(float));
            }
            quill__free(seven);
            float *single = simd_run(tables[v], NULL, &test_case, 63, 1);
            assert_memory_equal(single, all + 63 * test_case.y_stride, N_ROWS * sizeof(float));
            quill__free(single);

            float *threaded = simd_run(tables[v], pool, &test_case, 0, MAX_TOKENS);
            for (int64_t k = 0; k < MAX_TOKENS; k++) {
                assert_memory_equal(threaded + k * test_case.y_stride, all + k * test_case.y_stride,
                                    N_ROWS * sizeof(float));
            }
            quill__free(threaded);
            quill__free(all);
        }
        simd_case_release(&test_case);
    }
    quill__threadpool_destroy(pool);
}

/* Checks one packed type at n_rows rows (a multiple of QUILL_PACK_ROWS). Unpacking restores the
 * original rows byte for byte, and row dequantization reads packed rows correctly. Every variant
 * that multiplies packed weights gives its own vec_dot on the unpacked rows bit for bit, for
 * decode, partial token tiles, full tiles and several threads. */
static void check_packed_matmul(uint32_t type, int64_t n_rows, rng *generator,
                                quill_threadpool *pool) {
    /* 608 columns: 19 blocks of 32; the K-quants take 768, 3 super-blocks. */
    enum { PACKED_COLS_LEGACY = 608, PACKED_COLS_K = 768 };
    const int64_t token_counts[] = {1, 2, 5, 8, 13, MAX_TOKENS};
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    const int64_t n_cols = block_size_of(type) == 256 ? PACKED_COLS_K : PACKED_COLS_LEGACY;
    size_t row_bytes = row_bytes_of(type, n_cols);
    size_t matrix_bytes = row_bytes * (size_t)n_rows;
    uint8_t *original = quill__malloc(matrix_bytes);
    uint8_t *packed_buffer = quill__malloc(matrix_bytes + 1);
    float *w = quill__malloc_array(n_cols, sizeof(float));
    float *expected_row = quill__malloc_array(n_cols, sizeof(float));
    float *got_row = quill__malloc_array(n_cols, sizeof(float));
    uint8_t *unpacked = quill__malloc(row_bytes);
    uint8_t *pack_scratch = quill__malloc(row_bytes * QUILL_PACK_ROWS);
    float *x = quill__malloc_array((size_t)MAX_TOKENS * n_cols, sizeof(float));
    assert_true(original && packed_buffer && w && expected_row && got_row && unpacked &&
                pack_scratch && x);
    for (int64_t r = 0; r < n_rows; r++) {
        fill_extreme(generator, w, n_cols);
        for (int64_t i = 0; i < n_cols; i++) {
            w[i] = fabsf(w[i]) > 1e4f ? w[i] * 1e-2f : w[i];
        }
        quill__quantize_row(type, w, original + (size_t)r * row_bytes, n_cols);
    }
    fill_extreme(generator, x, (int64_t)MAX_TOKENS * n_cols);
    uint8_t *packed = packed_buffer + 1;
    memcpy(packed, original, matrix_bytes);
    quill__pack_rows(type, packed, row_bytes, n_rows, n_cols, pack_scratch);
    assert_true(memcmp(packed, original, matrix_bytes) != 0);
    quill_matrix matrix = {.type = type,
                           .n_rows = n_rows,
                           .n_cols = n_cols,
                           .data = packed,
                           .row_bytes = row_bytes,
                           .is_packed = true};
    for (int64_t r = 0; r < n_rows; r++) {
        quill__packed_row_unpack(type, packed, row_bytes, r, n_cols, unpacked);
        assert_memory_equal(unpacked, original + (size_t)r * row_bytes, row_bytes);
        assert_int_equal(quill__matrix_dequantize_row(&matrix, r, got_row), QUILL_OK);
        assert_int_equal(
            quill__dequantize_row(type, original + (size_t)r * row_bytes, expected_row, n_cols),
            QUILL_OK);
        assert_memory_equal(got_row, expected_row, n_cols * sizeof(float));
    }

    int n_checked = 0;
    for (int v = 0; v < n_tables; v++) {
        const quill_kernel_type_ops *ops = &tables[v]->types[type];
        if (ops->gemm_packed == NULL) {
            continue;
        }
        n_checked++;
        uint8_t *activation = quill__malloc(row_bytes_of(ops->vec_dot_type, n_cols));
        assert_non_null(activation);
        for (size_t c = 0; c < sizeof(token_counts) / sizeof(token_counts[0]); c++) {
            int64_t n_tokens = token_counts[c];
            size_t scratch_bytes = quill__matmul_scratch_bytes(&matrix, n_tokens);
            void *scratch = quill__aligned_alloc(64, scratch_bytes);
            float *y = quill__malloc_array((size_t)(n_tokens * n_rows), sizeof(float));
            assert_non_null(scratch);
            assert_non_null(y);
            quill__matmul_with_table(tables[v], c % 2 == 0 ? pool : NULL, &matrix, x, n_cols,
                                     n_tokens, y, n_rows, scratch);
            for (int64_t t = 0; t < n_tokens; t++) {
                tables[v]->types[ops->vec_dot_type].quantize_row(x + t * n_cols, activation,
                                                                 n_cols);
                for (int64_t r = 0; r < n_rows; r++) {
                    float expected =
                        ops->vec_dot(n_cols, original + (size_t)r * row_bytes, activation);
                    if (memcmp(&y[t * n_rows + r], &expected, sizeof(float)) != 0) {
                        print_error("%s %s rows=%lld tokens=%lld: y[%lld][%lld] = %.9g, vec_dot "
                                    "%.9g\n",
                                    tables[v]->name, quill_type_name(type), (long long)n_rows,
                                    (long long)n_tokens, (long long)t, (long long)r,
                                    y[t * n_rows + r], expected);
                    }
                    assert_memory_equal(&y[t * n_rows + r], &expected, sizeof(float));
                }
            }
            quill__free(y);
            quill__free(scratch);
        }
        quill__free(activation);
    }
    /* The check must have run wherever the selected kernels pack this type. */
    assert_true(n_checked > 0 || !quill__matrix_wants_packing(type, n_rows));
    quill__free(x);
    quill__free(pack_scratch);
    quill__free(unpacked);
    quill__free(got_row);
    quill__free(expected_row);
    quill__free(w);
    quill__free(packed_buffer);
    quill__free(original);
}

/* Every packed type at 8 rows (one group), 16 (one pair of groups) and 56 (3 pairs and a single
 * group, so both tile shapes run). */
static void test_simd_packed_matmul_equals_unpacked(void **state) {
    (void)state;
    const uint32_t packed_types[] = {QUILL_TYPE_Q4_0, QUILL_TYPE_Q4_1, QUILL_TYPE_Q5_0,
                                     QUILL_TYPE_Q5_1, QUILL_TYPE_Q8_0, QUILL_TYPE_Q4_K,
                                     QUILL_TYPE_Q5_K, QUILL_TYPE_Q6_K};
    const int64_t row_counts[] = {8, 16, 56};
    quill_threadpool *pool = create_pool(3);
    rng generator = {777};
    for (size_t k = 0; k < sizeof(packed_types) / sizeof(packed_types[0]); k++) {
        for (size_t c = 0; c < sizeof(row_counts) / sizeof(row_counts[0]); c++) {
            check_packed_matmul(packed_types[k], row_counts[c], &generator, pool);
        }
    }
    quill__threadpool_destroy(pool);
}

/* Writes a row of all-maximum levels (fill 0xff) or all-zero levels (fill 0x00) with the
 * scale and min fields set to small normal fp16 values. Q6_K sub-block scales are -128 in the
 * first case and 127 in the second, the extremes of their int8 range. */
static void fill_extreme_levels_row(uint32_t type, uint8_t *row, int64_t n_cols, uint8_t fill) {
    const float scale = 0.01f;
    memset(row, fill, row_bytes_of(type, n_cols));
    for (int64_t b = 0; b < n_cols / block_size_of(type); b++) {
        if (type == QUILL_TYPE_Q4_0) {
            quill__store_fp16(((quill_block_q4_0 *)row)[b].d, scale);
        } else if (type == QUILL_TYPE_Q4_1) {
            quill__store_fp16(((quill_block_q4_1 *)row)[b].d, scale);
            quill__store_fp16(((quill_block_q4_1 *)row)[b].m, -scale);
        } else if (type == QUILL_TYPE_Q5_0) {
            quill__store_fp16(((quill_block_q5_0 *)row)[b].d, scale);
        } else if (type == QUILL_TYPE_Q5_1) {
            quill__store_fp16(((quill_block_q5_1 *)row)[b].d, scale);
            quill__store_fp16(((quill_block_q5_1 *)row)[b].m, -scale);
        } else if (type == QUILL_TYPE_Q4_K) {
            quill__store_fp16(((quill_block_q4_k *)row)[b].d, scale);
            quill__store_fp16(((quill_block_q4_k *)row)[b].dmin, scale);
        } else if (type == QUILL_TYPE_Q5_K) {
            quill__store_fp16(((quill_block_q5_k *)row)[b].d, scale);
            quill__store_fp16(((quill_block_q5_k *)row)[b].dmin, scale);
        } else if (type == QUILL_TYPE_Q6_K) {
            quill_block_q6_k *block = &((quill_block_q6_k *)row)[b];
            quill__store_fp16(block->d, scale);
            memset(block->scales, fill == 0xff ? 0x80 : 0x7f, sizeof(block->scales));
        }
    }
}

/* Packed tiles stay exact at the extremes of their integer ranges. Maximum levels (15, 31, 63)
 * meet activations that are all +127 or all -127, where int16 partial sums on the maddubs path
 * would overflow first, and zero levels meet the largest Q6_K offsets. */
static void test_simd_packed_matmul_extreme_levels(void **state) {
    (void)state;
    enum { EXTREME_ROWS = 24, EXTREME_TOKENS = 5, EXTREME_COLS = 512 };
    const uint32_t packed_types[] = {QUILL_TYPE_Q4_0, QUILL_TYPE_Q4_1, QUILL_TYPE_Q5_0,
                                     QUILL_TYPE_Q5_1, QUILL_TYPE_Q4_K, QUILL_TYPE_Q5_K,
                                     QUILL_TYPE_Q6_K};
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    float *x = quill__malloc_array((size_t)EXTREME_TOKENS * EXTREME_COLS, sizeof(float));
    float *y = quill__malloc_array((size_t)EXTREME_TOKENS * EXTREME_ROWS, sizeof(float));
    assert_non_null(x);
    assert_non_null(y);
    for (int t = 0; t < EXTREME_TOKENS; t++) {
        for (int64_t i = 0; i < EXTREME_COLS; i++) {
            x[t * EXTREME_COLS + i] = t % 2 == 0 ? 1.0f : -1.0f;
        }
    }

    for (size_t k = 0; k < sizeof(packed_types) / sizeof(packed_types[0]); k++) {
        uint32_t type = packed_types[k];
        size_t row_bytes = row_bytes_of(type, EXTREME_COLS);
        uint8_t *original = quill__malloc(row_bytes * EXTREME_ROWS);
        uint8_t *packed = quill__malloc(row_bytes * EXTREME_ROWS);
        uint8_t *pack_scratch = quill__malloc(row_bytes * QUILL_PACK_ROWS);
        assert_true(original && packed && pack_scratch);
        for (int r = 0; r < EXTREME_ROWS; r++) {
            fill_extreme_levels_row(type, original + (size_t)r * row_bytes, EXTREME_COLS,
                                    r % 3 == 2 ? 0x00 : 0xff);
        }
        memcpy(packed, original, row_bytes * EXTREME_ROWS);
        quill__pack_rows(type, packed, row_bytes, EXTREME_ROWS, EXTREME_COLS, pack_scratch);
        quill_matrix matrix = {.type = type,
                               .n_rows = EXTREME_ROWS,
                               .n_cols = EXTREME_COLS,
                               .data = packed,
                               .row_bytes = row_bytes,
                               .is_packed = true};

        for (int v = 0; v < n_tables; v++) {
            const quill_kernel_type_ops *ops = &tables[v]->types[type];
            if (ops->gemm_packed == NULL) {
                continue;
            }
            uint8_t *activation = quill__malloc(row_bytes_of(ops->vec_dot_type, EXTREME_COLS));
            void *scratch =
                quill__aligned_alloc(64, quill__matmul_scratch_bytes(&matrix, EXTREME_TOKENS));
            assert_non_null(activation);
            assert_non_null(scratch);
            for (int64_t n_tokens = 1; n_tokens <= EXTREME_TOKENS; n_tokens += 2) {
                quill__matmul_with_table(tables[v], NULL, &matrix, x, EXTREME_COLS, n_tokens, y,
                                         EXTREME_ROWS, scratch);
                for (int64_t t = 0; t < n_tokens; t++) {
                    tables[v]->types[ops->vec_dot_type].quantize_row(x + t * EXTREME_COLS,
                                                                     activation, EXTREME_COLS);
                    for (int64_t r = 0; r < EXTREME_ROWS; r++) {
                        float expected = ops->vec_dot(EXTREME_COLS,
                                                      original + (size_t)r * row_bytes, activation);
                        assert_memory_equal(&y[t * EXTREME_ROWS + r], &expected, sizeof(float));
                    }
                }
            }
            quill__free(scratch);
            quill__free(activation);
        }
        quill__free(pack_scratch);
        quill__free(packed);
        quill__free(original);
    }
    quill__free(y);
    quill__free(x);
}

/* Packed Q8_0 tiles stay exact at the ends of the int8 range: levels -128, 127 and 0 meet
 * activations that are all +127 or all -127. One product then reaches 128 * 127, so int16
 * sums of two products would overflow, and on x86 the stored level q + 128 spans 0 to 255. */
static void test_simd_packed_q8_0_extreme_levels(void **state) {
    (void)state;
    enum { EXTREME_ROWS = 24, EXTREME_TOKENS = 5, EXTREME_COLS = 512 };
    const uint8_t level_bytes[] = {0x80, 0x7f, 0x00};
    const quill_kernel_table *tables[QUILL_KERNEL_VARIANT_COUNT];
    int n_tables = collect_variants(tables);
    size_t row_bytes = row_bytes_of(QUILL_TYPE_Q8_0, EXTREME_COLS);
    uint8_t *original = quill__malloc(row_bytes * EXTREME_ROWS);
    uint8_t *packed = quill__malloc(row_bytes * EXTREME_ROWS);
    uint8_t *pack_scratch = quill__malloc(row_bytes * QUILL_PACK_ROWS);
    uint8_t *activation = quill__malloc(row_bytes);
    float *x = quill__malloc_array((size_t)EXTREME_TOKENS * EXTREME_COLS, sizeof(float));
    float *y = quill__malloc_array((size_t)EXTREME_TOKENS * EXTREME_ROWS, sizeof(float));
    assert_true(original && packed && pack_scratch && activation && x && y);
    for (int t = 0; t < EXTREME_TOKENS; t++) {
        for (int64_t i = 0; i < EXTREME_COLS; i++) {
            x[t * EXTREME_COLS + i] = t % 2 == 0 ? 1.0f : -1.0f;
        }
    }
    for (int r = 0; r < EXTREME_ROWS; r++) {
        quill_block_q8_0 *blocks = (quill_block_q8_0 *)(original + (size_t)r * row_bytes);
        for (int64_t b = 0; b < EXTREME_COLS / 32; b++) {
            memset(blocks[b].qs, level_bytes[r % 3], sizeof(blocks[b].qs));
            quill__store_fp16(blocks[b].d, 0.01f);
        }
    }
    memcpy(packed, original, row_bytes * EXTREME_ROWS);
    quill__pack_rows(QUILL_TYPE_Q8_0, packed, row_bytes, EXTREME_ROWS, EXTREME_COLS, pack_scratch);
    quill_matrix matrix = {.type = QUILL_TYPE_Q8_0,
                           .n_rows = EXTREME_ROWS,
                           .n_cols = EXTREME_COLS,
                           .data = packed,
                           .row_bytes = row_bytes,
                           .is_packed = true};

    for (int v = 0; v < n_tables; v++) {
        const quill_kernel_type_ops *ops = &tables[v]->types[QUILL_TYPE_Q8_0];
        if (ops->gemm_packed == NULL) {
            continue;
        }
        void *scratch =
            quill__aligned_alloc(64, quill__matmul_scratch_bytes(&matrix, EXTREME_TOKENS));
        assert_non_null(scratch);
        quill__matmul_with_table(tables[v], NULL, &matrix, x, EXTREME_COLS, EXTREME_TOKENS, y,
                                 EXTREME_ROWS, scratch);
        for (int64_t t = 0; t < EXTREME_TOKENS; t++) {
            tables[v]->types[QUILL_TYPE_Q8_0].quantize_row(x + t * EXTREME_COLS, activation,
                                                           EXTREME_COLS);
            for (int64_t r = 0; r < EXTREME_ROWS; r++) {
                float expected =
                    ops->vec_dot(EXTREME_COLS, original + (size_t)r * row_bytes, activation);
                assert_memory_equal(&y[t * EXTREME_ROWS + r], &expected, sizeof(float));
            }
        }
        /* Row 0 (levels -128) against token 0 (+127): 16 blocks whose exact integer sum is
         * -128 * 127 * 32, each times d_w * d_x. */
        float exact = 16.0f * (-128.0f * 127.0f * 32.0f) *
                      (quill__fp16_to_fp32(quill__fp32_to_fp16(0.01f)) *
                       quill__fp16_to_fp32(quill__fp32_to_fp16(1.0f / 127.0f)));
        assert_float_equal(y[0], exact, fabsf(exact) * 1e-5f);
        quill__free(scratch);
    }
    quill__free(y);
    quill__free(x);
    quill__free(activation);
    quill__free(pack_scratch);
    quill__free(packed);
    quill__free(original);
}

/* Packing then unpacking restores every row byte for byte from any bytes, not only from those
 * the quantizers write: random bytes reach every bit of every field (each 6-bit level, negative
 * scales, every fp16 pattern). */
static void test_simd_packed_round_trip_random_bytes(void **state) {
    (void)state;
    enum { ROUND_TRIP_ROWS = 16, ROUND_TRIP_COLS = 512 };
    const uint32_t packed_types[] = {QUILL_TYPE_Q4_0, QUILL_TYPE_Q4_1, QUILL_TYPE_Q5_0,
                                     QUILL_TYPE_Q5_1, QUILL_TYPE_Q8_0, QUILL_TYPE_Q4_K,
                                     QUILL_TYPE_Q5_K, QUILL_TYPE_Q6_K};
    rng generator = {4242};
    for (size_t k = 0; k < sizeof(packed_types) / sizeof(packed_types[0]); k++) {
        uint32_t type = packed_types[k];
        assert_true(quill__pack_type_supported(type));
        size_t row_bytes = row_bytes_of(type, ROUND_TRIP_COLS);
        size_t matrix_bytes = row_bytes * ROUND_TRIP_ROWS;
        uint8_t *original = quill__malloc(matrix_bytes);
        uint8_t *packed = quill__malloc(matrix_bytes);
        uint8_t *unpacked = quill__malloc(row_bytes);
        uint8_t *pack_scratch = quill__malloc(row_bytes * QUILL_PACK_ROWS);
        assert_true(original && packed && unpacked && pack_scratch);
        for (size_t i = 0; i < matrix_bytes; i++) {
            original[i] = (uint8_t)rng_next(&generator);
        }
        memcpy(packed, original, matrix_bytes);
        quill__pack_rows(type, packed, row_bytes, ROUND_TRIP_ROWS, ROUND_TRIP_COLS, pack_scratch);
        assert_true(memcmp(packed, original, matrix_bytes) != 0);
        for (int64_t r = 0; r < ROUND_TRIP_ROWS; r++) {
            quill__packed_row_unpack(type, packed, row_bytes, r, ROUND_TRIP_COLS, unpacked);
            assert_memory_equal(unpacked, original + (size_t)r * row_bytes, row_bytes);
        }
        quill__free(pack_scratch);
        quill__free(unpacked);
        quill__free(packed);
        quill__free(original);
    }
}

/* ---- attention ---- */

#if defined(QUILL_HAVE_NEON)
/* One KV head's keys (the second of two heads in each row) in blocks laid out in reverse order,
 * and n_heads queries q_stride floats apart. */
typedef struct attention_fixture {
    uint8_t *storage;          /* [n_blocks][K rows, then V rows][2 heads][head_dim] */
    int32_t *blocks;           /* block table */
    float *q;                  /* f32 [n_heads][q_stride] */
    quill_attention_keys keys; /* the second head of each row */
} attention_fixture;

/* Shapes of the attention tests. Blocks of 7 keys end inside a key step, and 300- and 512-key
 * blocks split into 256-key chunks. The V steps do not divide the 5 and 9 vectors of head_dim 40
 * and 72, and head_dim 20 leaves a tail after the 8-element steps. */
typedef struct attention_case {
    uint32_t type;
    int32_t head_dim;
    int32_t n_keys;
    int32_t block_tokens;
} attention_case;

static const attention_case attention_cases[] = {
    {QUILL_TYPE_F16, 64, 1, 16},     {QUILL_TYPE_F16, 64, 45, 7},  {QUILL_TYPE_F16, 64, 600, 300},
    {QUILL_TYPE_F16, 128, 260, 512}, {QUILL_TYPE_F16, 128, 53, 7}, {QUILL_TYPE_F16, 40, 300, 16},
    {QUILL_TYPE_F16, 72, 100, 300},  {QUILL_TYPE_F16, 20, 37, 16}, {QUILL_TYPE_F32, 64, 600, 300},
    {QUILL_TYPE_F32, 20, 37, 7},
};
enum { N_ATTENTION_CASES = sizeof(attention_cases) / sizeof(attention_cases[0]) };

/* q_stride - head_dim and out_stride - head_dim: padding that must stay unwritten. */
enum { ATTENTION_Q_PADDING = 3, ATTENTION_OUT_PADDING = 5 };

static void attention_fixture_init(attention_fixture *fixture, const attention_case *shape,
                                   int32_t n_heads, int64_t q_stride, rng *generator) {
    const size_t element_bytes = shape->type == QUILL_TYPE_F32 ? 4 : 2;
    const int32_t n_blocks = (shape->n_keys + shape->block_tokens - 1) / shape->block_tokens;
    const size_t head_bytes = (size_t)shape->head_dim * element_bytes;
    const size_t row_bytes = 2 * head_bytes;
    const size_t block_bytes = row_bytes * (size_t)shape->block_tokens * 2;
    fixture->storage = quill__calloc((size_t)n_blocks, block_bytes);
    fixture->blocks = quill__malloc_array((size_t)n_blocks, sizeof(int32_t));
    fixture->q = quill__malloc_array((size_t)n_heads * (size_t)q_stride, sizeof(float));
    assert_non_null(fixture->storage);
    assert_non_null(fixture->blocks);
    assert_non_null(fixture->q);
    for (int32_t b = 0; b < n_blocks; b++) {
        fixture->blocks[b] = n_blocks - 1 - b;
    }
    for (int64_t i = 0; i < (int64_t)n_heads * q_stride; i++) {
        fixture->q[i] = 2.0f * rng_uniform(generator);
    }
    for (int32_t p = 0; p < shape->n_keys; p++) {
        uint8_t *k_row = fixture->storage +
                         (size_t)fixture->blocks[p / shape->block_tokens] * block_bytes +
                         (size_t)(p % shape->block_tokens) * row_bytes + head_bytes;
        uint8_t *v_row = k_row + (size_t)shape->block_tokens * row_bytes;
        for (int32_t i = 0; i < shape->head_dim; i++) {
            float values[2] = {2.0f * rng_uniform(generator), rng_uniform(generator)};
            uint8_t *targets[2] = {k_row + (size_t)i * element_bytes,
                                   v_row + (size_t)i * element_bytes};
            for (int k = 0; k < 2; k++) {
                if (shape->type == QUILL_TYPE_F32) {
                    memcpy(targets[k], &values[k], sizeof(float));
                } else {
                    uint16_t half = quill__fp32_to_fp16(values[k]);
                    memcpy(targets[k], &half, sizeof(half));
                }
            }
        }
    }
    fixture->keys = (quill_attention_keys){
        .type = shape->type,
        .k_data = fixture->storage + head_bytes,
        .v_data = fixture->storage + head_bytes + (size_t)shape->block_tokens * row_bytes,
        .block_stride_bytes = block_bytes,
        .row_bytes = row_bytes,
        .block_tokens = shape->block_tokens,
        .blocks = fixture->blocks,
    };
}

static void attention_fixture_release(attention_fixture *fixture) {
    quill__free(fixture->q);
    quill__free(fixture->blocks);
    quill__free(fixture->storage);
}

/* Runs the NEON variant on n_heads heads of one case. Each head's output must have the bits that
 * the one-head call gives, and the dispatcher, which selects the NEON variant with the NEON
 * table, must give the same bits. The output padding must stay unwritten. */
static void check_attention_neon_group(const attention_case *shape, int32_t n_heads,
                                       rng *generator) {
    const int32_t head_dim = shape->head_dim;
    const int64_t q_stride = head_dim + ATTENTION_Q_PADDING;
    const int64_t out_stride = head_dim + ATTENTION_OUT_PADDING;
    const float scale = 1.0f / sqrtf((float)head_dim);
    attention_fixture fixture;
    attention_fixture_init(&fixture, shape, n_heads, q_stride, generator);
    float *scores = quill__malloc_array((size_t)n_heads * QUILL_ATTENTION_CHUNK, sizeof(float));
    float *out = quill__malloc_array((size_t)n_heads * (size_t)out_stride, sizeof(float));
    float *dispatched = quill__malloc_array((size_t)n_heads * (size_t)out_stride, sizeof(float));
    float *expected = quill__malloc_array((size_t)head_dim, sizeof(float));
    assert_true(scores && out && dispatched && expected);
    for (int64_t i = 0; i < (int64_t)n_heads * out_stride; i++) {
        out[i] = -7.0f;
    }

    quill__attention_heads_neon(fixture.q, n_heads, q_stride, head_dim, &fixture.keys,
                                shape->n_keys, scale, scores, out, out_stride);
    for (int32_t h = 0; h < n_heads; h++) {
        quill__attention_head_neon(fixture.q + h * q_stride, head_dim, &fixture.keys, shape->n_keys,
                                   scale, scores, expected);
        if (memcmp(out + h * out_stride, expected, (size_t)head_dim * sizeof(float)) != 0) {
            print_error("head %d of %d differs: type %u, head_dim %d, %d keys, blocks of %d\n", h,
                        n_heads, shape->type, head_dim, shape->n_keys, shape->block_tokens);
        }
        assert_memory_equal(out + h * out_stride, expected, (size_t)head_dim * sizeof(float));
        for (int64_t i = head_dim; i < out_stride; i++) {
            assert_true(out[h * out_stride + i] == -7.0f);
        }
    }
    if (quill__kernels_table()->variant == QUILL_KERNEL_VARIANT_NEON) {
        memcpy(dispatched, out, (size_t)n_heads * (size_t)out_stride * sizeof(float));
        quill__attention_heads(fixture.q, n_heads, q_stride, head_dim, &fixture.keys, shape->n_keys,
                               scale, scores, dispatched, out_stride);
        assert_memory_equal(dispatched, out, (size_t)n_heads * (size_t)out_stride * sizeof(float));
    }
    quill__free(expected);
    quill__free(dispatched);
    quill__free(out);
    quill__free(scores);
    attention_fixture_release(&fixture);
}
#endif

/* The NEON attention gives a head the same bits in a group of any size as alone. */
static void test_simd_attention_neon_group_invariant(void **state) {
    (void)state;
#if defined(QUILL_HAVE_NEON)
    rng generator = {31337};
    for (size_t c = 0; c < N_ATTENTION_CASES; c++) {
        for (int32_t n_heads = 1; n_heads <= QUILL_ATTENTION_MAX_HEADS; n_heads++) {
            check_attention_neon_group(&attention_cases[c], n_heads, &generator);
        }
    }
#else
    print_message("[ SKIPPED  ] variant neon: not supported by this CPU or build\n");
    skip();
#endif
}

/* The NEON attention stays within the tolerance of the reference that the AVX2 variant meets. */
static void test_simd_attention_neon_near_ref(void **state) {
    (void)state;
#if defined(QUILL_HAVE_NEON)
    enum { N_HEADS = 4 };
    rng generator = {4711};
    for (size_t c = 0; c < N_ATTENTION_CASES; c++) {
        const attention_case *shape = &attention_cases[c];
        const int32_t head_dim = shape->head_dim;
        const float scale = 1.0f / sqrtf((float)head_dim);
        attention_fixture fixture;
        attention_fixture_init(&fixture, shape, N_HEADS, head_dim, &generator);
        float *scores = quill__malloc_array((size_t)N_HEADS * QUILL_ATTENTION_CHUNK, sizeof(float));
        float *out_ref = quill__malloc_array((size_t)N_HEADS * (size_t)head_dim, sizeof(float));
        float *out_neon = quill__malloc_array((size_t)N_HEADS * (size_t)head_dim, sizeof(float));
        assert_true(scores && out_ref && out_neon);
        quill__attention_heads_ref(fixture.q, N_HEADS, head_dim, head_dim, &fixture.keys,
                                   shape->n_keys, scale, scores, out_ref, head_dim);
        quill__attention_heads_neon(fixture.q, N_HEADS, head_dim, head_dim, &fixture.keys,
                                    shape->n_keys, scale, scores, out_neon, head_dim);
        for (int32_t i = 0; i < N_HEADS * head_dim; i++) {
            /* Both are f32 sums over the same terms in different lane orders, with fused
             * multiply-adds on one side. The outputs are weighted means of values in [-1, 1]. */
            assert_float_equal(out_neon[i], out_ref[i], 1e-4);
        }
        quill__free(out_neon);
        quill__free(out_ref);
        quill__free(scores);
        attention_fixture_release(&fixture);
    }
#else
    print_message("[ SKIPPED  ] variant neon: not supported by this CPU or build\n");
    skip();
#endif
}

/* The table quill__kernels_table selects is the most capable available variant unless
 * QUILL_KERNELS forces one. */
static void test_simd_default_is_best_variant(void **state) {
    (void)state;
    const char *forced = getenv("QUILL_KERNELS");
    if (forced != NULL && forced[0] != '\0') {
        skip();
    }
    quill_kernel_variant best = QUILL_KERNEL_VARIANT_REF;
    for (int v = 0; v < QUILL_KERNEL_VARIANT_COUNT; v++) {
        if (quill__kernels_variant_table((quill_kernel_variant)v) != NULL) {
            best = (quill_kernel_variant)v;
        }
    }
    assert_string_equal(quill__kernels_variant_name(), quill__kernels_variant_label(best));
}

/* The NEON table packs every type that has a packed layout, so the model loader repacks all of
 * them on AArch64, and it takes the SDOT tiles either for every type or for none. */
static void test_simd_neon_packs_every_packed_type(void **state) {
    (void)state;
#if defined(QUILL_HAVE_NEON)
    typedef struct neon_tiles {
        uint32_t type;
        quill_kernel_gemm_fn base;    /* the ARMv8.0 widening-multiply build */
        quill_kernel_gemm_fn dotprod; /* the SDOT build */
    } neon_tiles;
    const neon_tiles tiles[] = {
        {QUILL_TYPE_Q4_0, quill__gemm_packed_q4_0_q8_0_neon,
         quill__gemm_packed_q4_0_q8_0_neon_dotprod},
        {QUILL_TYPE_Q4_1, quill__gemm_packed_q4_1_q8_1_neon,
         quill__gemm_packed_q4_1_q8_1_neon_dotprod},
        {QUILL_TYPE_Q5_0, quill__gemm_packed_q5_0_q8_0_neon,
         quill__gemm_packed_q5_0_q8_0_neon_dotprod},
        {QUILL_TYPE_Q5_1, quill__gemm_packed_q5_1_q8_1_neon,
         quill__gemm_packed_q5_1_q8_1_neon_dotprod},
        {QUILL_TYPE_Q8_0, quill__gemm_packed_q8_0_q8_0_neon,
         quill__gemm_packed_q8_0_q8_0_neon_dotprod},
        {QUILL_TYPE_Q4_K, quill__gemm_packed_q4_k_q8_k_neon,
         quill__gemm_packed_q4_k_q8_k_neon_dotprod},
        {QUILL_TYPE_Q5_K, quill__gemm_packed_q5_k_q8_k_neon,
         quill__gemm_packed_q5_k_q8_k_neon_dotprod},
        {QUILL_TYPE_Q6_K, quill__gemm_packed_q6_k_q8_k_neon,
         quill__gemm_packed_q6_k_q8_k_neon_dotprod},
    };
    const size_t n_tiles = sizeof(tiles) / sizeof(tiles[0]);
    const quill_kernel_table *table = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_NEON);
    assert_non_null(table);
    const bool uses_dotprod = table->types[QUILL_TYPE_Q4_0].gemm_packed == tiles[0].dotprod;
    print_message("neon packed tiles: %s\n", uses_dotprod ? "SDOT" : "widening multiply");

    size_t n_packed_types = 0;
    for (uint32_t type = 0; type < QUILL_TYPE_COUNT; type++) {
        n_packed_types += quill__pack_type_supported(type) ? 1 : 0;
    }
    assert_int_equal(n_packed_types, n_tiles);
    for (size_t k = 0; k < n_tiles; k++) {
        assert_true(quill__pack_type_supported(tiles[k].type));
        quill_kernel_gemm_fn expected = uses_dotprod ? tiles[k].dotprod : tiles[k].base;
        assert_true(table->types[tiles[k].type].gemm_packed == expected);
        if (quill__kernels_table() == table) {
            assert_true(quill__matrix_wants_packing(tiles[k].type, QUILL_PACK_ROWS));
        }
    }
#else
    print_message("[ SKIPPED  ] variant neon: not supported by this CPU or build\n");
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simd_quantize_matches_ref),
        cmocka_unit_test(test_simd_quantize_rounding_ties),
        cmocka_unit_test(test_simd_half_conversions_match_ref),
        cmocka_unit_test(test_simd_vec_dot_close_to_ref),
        cmocka_unit_test(test_simd_vec_dot_integer_exact),
        cmocka_unit_test(test_simd_matmul_gemm_and_invariance),
        cmocka_unit_test(test_simd_packed_matmul_equals_unpacked),
        cmocka_unit_test(test_simd_packed_matmul_extreme_levels),
        cmocka_unit_test(test_simd_packed_q8_0_extreme_levels),
        cmocka_unit_test(test_simd_attention_neon_group_invariant),
        cmocka_unit_test(test_simd_attention_neon_near_ref),
        cmocka_unit_test(test_simd_packed_round_trip_random_bytes),
        cmocka_unit_test(test_simd_default_is_best_variant),
        cmocka_unit_test(test_simd_neon_packs_every_packed_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
