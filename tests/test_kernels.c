/*
 * Tests of the scalar reference kernels and the dispatch layer: fp16/bf16 conversions, the
 * quantize/dequantize round trip of every format within its error bound, dot products against
 * the dequantized f32 dot, exact integer sums on unit-scale blocks, matmul batch and thread
 * invariance, and the QUILL_KERNELS selection errors. The ISA variants are compared with these
 * kernels in test_kernels_simd.c.
 */
#include "test_support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/threadpool.h"
#include "kernels/blocks.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

/* Argument that turns this program into a probe of quill__kernels_init (see main). */
#define PROBE_ARGUMENT "--probe-kernels-init"

/* xorshift64* with a fixed seed per test, so failures reproduce. */
typedef struct rng {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *generator) {
    generator->state ^= generator->state >> 12;
    generator->state ^= generator->state << 25;
    generator->state ^= generator->state >> 27;
    return generator->state * 0x2545F4914F6CDD1DULL;
}

/* Returns a float uniform in [-1, 1). */
static float rng_uniform(rng *generator) {
    return (float)((double)(rng_next(generator) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Fills n values block by block: uniform values times a per-block magnitude in [0.01, 10] plus a
 * per-block offset, so that blocks have different ranges and the offset formats see min != 0. */
static void fill_random(rng *generator, float *x, int64_t n, int64_t block) {
    for (int64_t b = 0; b < n; b += block) {
        float magnitude = powf(10.0f, 2.0f * rng_uniform(generator) - 0.5f);
        float offset = 0.3f * magnitude * rng_uniform(generator);
        for (int64_t i = b; i < b + block && i < n; i++) {
            x[i] = magnitude * rng_uniform(generator) + offset;
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

/* ---- fp16 and bf16 ---- */

static uint32_t float_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof(bits));
    return bits;
}

static float float_from_bits(uint32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof(value));
    return value;
}

static void test_fp16_round_trip_all_values(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float value = quill__fp16_to_fp32((uint16_t)h);
        bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
        if (is_nan) {
            assert_true(isnan(value));
            uint16_t back = quill__fp32_to_fp16(value);
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
            continue;
        }
        assert_int_equal(quill__fp32_to_fp16(value), h);
    }
}

static void test_fp16_known_values(void **state) {
    (void)state;
    assert_true(quill__fp16_to_fp32(0x3c00) == 1.0f);
    assert_true(quill__fp16_to_fp32(0xc000) == -2.0f);
    assert_true(quill__fp16_to_fp32(0x7bff) == 65504.0f);
    assert_true(quill__fp16_to_fp32(0x0001) == ldexpf(1.0f, -24));
    assert_true(quill__fp16_to_fp32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(quill__fp16_to_fp32(0x0400) == ldexpf(1.0f, -14));
    assert_true(isinf(quill__fp16_to_fp32(0x7c00)));
    assert_true(quill__fp16_to_fp32(0xfc00) < 0.0f);
    assert_int_equal(float_bits(quill__fp16_to_fp32(0x8000)), 0x80000000u);
}

static void test_fp16_rounding_edges(void **state) {
    (void)state;
    /* Ties go to the even mantissa: 1 + 2^-11 is halfway between 0x3c00 and 0x3c01. */
    assert_int_equal(quill__fp32_to_fp16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    assert_int_equal(quill__fp32_to_fp16(1.0f + 3.0f * ldexpf(1.0f, -11)), 0x3c02);
    assert_int_equal(quill__fp32_to_fp16(nextafterf(1.0f + ldexpf(1.0f, -11), 2.0f)), 0x3c01);
    /* Overflow: 65520 ties to infinity, just below it rounds to the largest half. */
    assert_int_equal(quill__fp32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(quill__fp32_to_fp16(nextafterf(65520.0f, 0.0f)), 0x7bff);
    assert_int_equal(quill__fp32_to_fp16(65520.0f), 0x7c00);
    assert_int_equal(quill__fp32_to_fp16(-1e10f), 0xfc00);
    assert_int_equal(quill__fp32_to_fp16(INFINITY), 0x7c00);
    assert_int_equal(quill__fp32_to_fp16(-INFINITY), 0xfc00);
    /* Subnormals: 2^-25 ties to zero, just above it rounds to the smallest subnormal, 1.5
     * units tie to 2 units, and the largest subnormal plus half a unit becomes 2^-14. */
    assert_int_equal(quill__fp32_to_fp16(ldexpf(1.0f, -25)), 0x0000);
    assert_int_equal(quill__fp32_to_fp16(nextafterf(ldexpf(1.0f, -25), 1.0f)), 0x0001);
    assert_int_equal(quill__fp32_to_fp16(ldexpf(3.0f, -25)), 0x0002);
    assert_int_equal(quill__fp32_to_fp16(ldexpf(2047.0f, -25)), 0x0400);
    assert_int_equal(quill__fp32_to_fp16(-ldexpf(1.0f, -30)), 0x8000);
    assert_int_equal(quill__fp32_to_fp16(1e-45f), 0x0000);
    /* NaN stays a NaN. */
    uint16_t nan_half = quill__fp32_to_fp16(NAN);
    assert_int_equal(nan_half & 0x7c00, 0x7c00);
    assert_int_not_equal(nan_half & 0x3ff, 0);
    uint16_t payload_nan = quill__fp32_to_fp16(float_from_bits(0x7f800001));
    assert_int_not_equal(payload_nan & 0x3ff, 0);
}

#if defined(__FLT16_MAX__)
/* Compares with the compiler's _Float16 conversion (libgcc's correctly rounded __truncsfhf2) on
 * random bit patterns, which covers every exponent range. */
static void test_fp16_matches_compiler(void **state) {
    (void)state;
    rng generator = {0x1234567};
    for (int i = 0; i < 200000; i++) {
        float value = float_from_bits((uint32_t)rng_next(&generator));
        if (isnan(value)) {
            continue;
        }
        _Float16 expected = (_Float16)value;
        uint16_t expected_bits;
        memcpy(&expected_bits, &expected, sizeof(expected_bits));
        assert_int_equal(quill__fp32_to_fp16(value), expected_bits);
    }
}
#endif

static void test_bf16_round_trip_and_rounding(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        bool is_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0;
        float value = quill__bf16_to_fp32((uint16_t)h);
        if (is_nan) {
            assert_true(isnan(value));
            continue;
        }
        assert_int_equal(quill__fp32_to_bf16(value), h);
    }
    assert_int_equal(quill__fp32_to_bf16(1.0f), 0x3f80);
    /* 0x3f808000 is halfway between 0x3f80 and 0x3f81: ties to even. */
    assert_int_equal(quill__fp32_to_bf16(float_from_bits(0x3f808000)), 0x3f80);
    assert_int_equal(quill__fp32_to_bf16(float_from_bits(0x3f818000)), 0x3f82);
    assert_int_equal(quill__fp32_to_bf16(float_from_bits(0x3f808001)), 0x3f81);
    assert_int_equal(quill__fp32_to_bf16(float_from_bits(0x7f7fffff)), 0x7f80);
    assert_int_equal(quill__fp32_to_bf16(float_from_bits(0x00000001)), 0x0000);
    assert_int_equal(quill__fp32_to_bf16(float_from_bits(0x00018000)), 0x0002);
    uint16_t nan_half = quill__fp32_to_bf16(float_from_bits(0x7f800001));
    assert_int_equal(nan_half & 0x7f80, 0x7f80);
    assert_int_not_equal(nan_half & 0x7f, 0);
}

/* ---- quantize / dequantize round trip ---- */

/* Returns the largest |x| of n values, and stores min and max. */
static float block_range(const float *x, int64_t n, float *min, float *max) {
    float amax = 0.0f;
    *min = x[0];
    *max = x[0];
    for (int64_t i = 0; i < n; i++) {
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        *min = x[i] < *min ? x[i] : *min;
        *max = x[i] > *max ? x[i] : *max;
    }
    return amax;
}

/* Returns the largest error allowed for any element of a block of x quantized to type, or a
 * negative value for the K-quants, which are checked by RMS error instead. Every bound is the
 * rounding error of the level (half a step, or a whole step where the format clamps the far
 * end) plus level * |d - fp16(d)| <= level * d * 2^-11 from storing d as fp16, plus
 * |min| * 2^-11 where the offset is stored as fp16, plus 1e-6 * amax for f32 arithmetic. */
static double max_error_bound(uint32_t type, const float *x, int64_t n) {
    float min;
    float max;
    double amax = block_range(x, n, &min, &max);
    double fp16_error = 1.0 / 2048.0;
    double slack = 1e-6 * amax;
    double d;
    switch (type) {
    case QUILL_TYPE_F32:
        return 0.0;
    case QUILL_TYPE_F16:
        return amax * fp16_error;
    case QUILL_TYPE_BF16:
        return amax / 256.0;
    case QUILL_TYPE_Q8_0:
    case QUILL_TYPE_Q8_1:
        d = amax / 127.0;
        return d * (0.5 + 127.0 * fp16_error) + slack;
    case QUILL_TYPE_Q8_K:
        /* f32 scale: only the level rounding. */
        return amax / 254.0 + slack;
    case QUILL_TYPE_Q4_0:
        /* d = amax / 8; the end opposite the largest value is clamped from +8 to +7. */
        d = amax / 8.0;
        return d * (1.0 + 8.0 * fp16_error) + slack;
    case QUILL_TYPE_Q5_0:
        d = amax / 16.0;
        return d * (1.0 + 16.0 * fp16_error) + slack;
    case QUILL_TYPE_Q4_1:
        d = ((double)max - min) / 15.0;
        return d * (0.5 + 15.0 * fp16_error) + fabs(min) * fp16_error + slack;
    case QUILL_TYPE_Q5_1:
        d = ((double)max - min) / 31.0;
        return d * (0.5 + 31.0 * fp16_error) + fabs(min) * fp16_error + slack;
    default:
        return -1.0;
    }
}

/* Relative RMS error allowed for the K-quants on uniform data: a uniform quantizer with L levels
 * over [-a, a] has RMS error (2a / (L - 1)) / sqrt(12) against an RMS signal of a / sqrt(3), i.e.
 * 1 / (L - 1). The scale search only lowers the error; 6-bit sub-block scales and offset blocks
 * (fill_random adds up to 30% offsets, spending part of the range) cost the 1.6x margin. */
static double k_quant_rms_bound(uint32_t type) {
    switch (type) {
    case QUILL_TYPE_Q4_K:
        return 1.6 / 15.0;
    case QUILL_TYPE_Q5_K:
        return 1.6 / 31.0;
    default:
        return 1.6 / 63.0;
    }
}

static const uint32_t round_trip_types[] = {
    QUILL_TYPE_F32,  QUILL_TYPE_F16,  QUILL_TYPE_BF16, QUILL_TYPE_Q4_0, QUILL_TYPE_Q4_1,
    QUILL_TYPE_Q5_0, QUILL_TYPE_Q5_1, QUILL_TYPE_Q8_0, QUILL_TYPE_Q8_1, QUILL_TYPE_Q8_K,
    QUILL_TYPE_Q4_K, QUILL_TYPE_Q5_K, QUILL_TYPE_Q6_K,
};

static void check_round_trip(uint32_t type, int64_t n, rng *generator) {
    int64_t block = block_size_of(type) > 32 ? block_size_of(type) : 32;
    float *x = quill__malloc_array((size_t)n, sizeof(float));
    float *y = quill__malloc_array((size_t)n, sizeof(float));
    void *q = quill__malloc(row_bytes_of(type, n));
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(q);
    fill_random(generator, x, n, block);

    assert_int_equal(quill__quantize_row(type, x, q, n), QUILL_OK);
    assert_int_equal(quill__dequantize_row(type, q, y, n), QUILL_OK);

    for (int64_t b = 0; b < n; b += block) {
        double bound = max_error_bound(type, x + b, block);
        if (bound >= 0.0) {
            for (int64_t i = b; i < b + block; i++) {
                if (fabs((double)x[i] - y[i]) > bound) {
                    print_error("%s element %lld: x=%g dequantized=%g bound=%g\n",
                                quill_type_name(type), (long long)i, x[i], y[i], bound);
                }
                assert_true(fabs((double)x[i] - y[i]) <= bound);
            }
            continue;
        }
        double error2 = 0.0;
        double signal2 = 0.0;
        for (int64_t i = b; i < b + block; i++) {
            error2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            signal2 += (double)x[i] * x[i];
        }
        double relative_rms = sqrt(error2 / signal2);
        if (relative_rms > k_quant_rms_bound(type)) {
            print_error("%s block at %lld: relative RMS error %g > %g\n", quill_type_name(type),
                        (long long)b, relative_rms, k_quant_rms_bound(type));
        }
        assert_true(relative_rms <= k_quant_rms_bound(type));
    }
    quill__free(q);
    quill__free(y);
    quill__free(x);
}

static void test_quantize_round_trip_within_bound(void **state) {
    (void)state;
    rng generator = {42};
    for (size_t t = 0; t < sizeof(round_trip_types) / sizeof(round_trip_types[0]); t++) {
        uint32_t type = round_trip_types[t];
        int64_t block = block_size_of(type) > 32 ? block_size_of(type) : 32;
        /* Several row lengths: one block, a few, and many. */
        const int64_t n_blocks[] = {1, 3, 16};
        for (size_t k = 0; k < 3; k++) {
            check_round_trip(type, n_blocks[k] * block, &generator);
        }
    }
}

static void test_quantize_zero_block_is_zero(void **state) {
    (void)state;
    float x[512] = {0};
    float y[512];
    uint8_t q[2048];
    for (size_t t = 0; t < sizeof(round_trip_types) / sizeof(round_trip_types[0]); t++) {
        uint32_t type = round_trip_types[t];
        memset(y, 0xff, sizeof(y));
        assert_int_equal(quill__quantize_row(type, x, q, 512), QUILL_OK);
        assert_int_equal(quill__dequantize_row(type, q, y, 512), QUILL_OK);
        for (int i = 0; i < 512; i++) {
            assert_true(y[i] == 0.0f);
        }
    }
}

/* Q8_0 picks d = amax / 127 and q = round(x / d): a block of integers up to 127 comes back as
 * exactly those integers, and the packed bytes are those values. */
static void test_quantize_q8_0_exact_layout(void **state) {
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++) {
        x[i] = (float)(i * 8 - 127);
    }
    x[31] = 127.0f;
    quill_block_q8_0 block;
    assert_int_equal(quill__quantize_row(QUILL_TYPE_Q8_0, x, &block, 32), QUILL_OK);
    assert_int_equal(block.d[0] | (block.d[1] << 8), 0x3c00);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(block.qs[i], (int)x[i]);
    }
}

/* Q4_0 maps the largest-magnitude value to level 0: d = max / -8. Element j is the low nibble of
 * qs[j] and element j + 16 the high nibble. */
static void test_quantize_q4_0_exact_layout(void **state) {
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++) {
        x[i] = (float)((i * 7) % 16 - 8);
    }
    quill_block_q4_0 block;
    assert_int_equal(quill__quantize_row(QUILL_TYPE_Q4_0, x, &block, 32), QUILL_OK);
    assert_int_equal(block.d[0] | (block.d[1] << 8), 0x3c00);
    for (int j = 0; j < 16; j++) {
        assert_int_equal(block.qs[j] & 0x0f, (int)x[j] + 8);
        assert_int_equal(block.qs[j] >> 4, (int)x[j + 16] + 8);
    }
}

/* Q8_K maps the largest-magnitude value to -127 and stores the sums of each 16 values. */
static void test_quantize_q8_k_sums(void **state) {
    (void)state;
    rng generator = {7};
    float x[256];
    fill_random(&generator, x, 256, 256);
    quill_block_q8_k block;
    assert_int_equal(quill__quantize_row(QUILL_TYPE_Q8_K, x, &block, 256), QUILL_OK);
    int n_at_minus_127 = 0;
    for (int group = 0; group < 16; group++) {
        int32_t sum = 0;
        for (int j = 0; j < 16; j++) {
            sum += block.qs[16 * group + j];
            n_at_minus_127 += block.qs[16 * group + j] == -127;
        }
        assert_int_equal(quill__load_i16(&block.bsums[2 * group]), sum);
    }
    assert_true(n_at_minus_127 >= 1);
}

/* ---- dot products ---- */

static const uint32_t weight_types[] = {
    QUILL_TYPE_F32,  QUILL_TYPE_F16,  QUILL_TYPE_BF16, QUILL_TYPE_Q4_0,
    QUILL_TYPE_Q4_1, QUILL_TYPE_Q5_0, QUILL_TYPE_Q5_1, QUILL_TYPE_Q8_0,
    QUILL_TYPE_Q4_K, QUILL_TYPE_Q5_K, QUILL_TYPE_Q6_K,
};
enum { N_WEIGHT_TYPES = sizeof(weight_types) / sizeof(weight_types[0]) };

static void test_vec_dot_types(void **state) {
    (void)state;
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_F32), QUILL_TYPE_F32);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_F16), QUILL_TYPE_F32);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_BF16), QUILL_TYPE_F32);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q4_0), QUILL_TYPE_Q8_0);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q5_0), QUILL_TYPE_Q8_0);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q8_0), QUILL_TYPE_Q8_0);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q4_1), QUILL_TYPE_Q8_1);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q5_1), QUILL_TYPE_Q8_1);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q4_K), QUILL_TYPE_Q8_K);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q5_K), QUILL_TYPE_Q8_K);
    assert_int_equal(quill__vec_dot_type(QUILL_TYPE_Q6_K), QUILL_TYPE_Q8_K);
}

/* Allowed |vec_dot - exact| where exact is the double-precision dot of the dequantized rows.
 * The kernels add one f32 rounding per product or block term and per accumulation step, so the
 * error is at most about (n_terms + 4) * 2^-24 * sum |w_i x_i|. Q4_1 and Q5_1 apply their offset
 * through s = fp16(d_x * sum q_x), computed from d_x before its fp16 rounding: that term carries
 * up to 2 * 2^-11 * |m| * |s| per block. A BF16 kernel may round the activations to bf16 for
 * the BF16 dot instruction: at most 2^-9 * |w_i x_i| more per product. */
static double dot_tolerance(uint32_t type, int64_t n, const float *w, const float *x,
                            const void *activation_row) {
    double sum_abs = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum_abs += fabs((double)w[i] * x[i]);
    }
    int64_t n_terms = block_size_of(type) == 1 ? n : n / block_size_of(type);
    double tolerance = (double)(n_terms + 4) * ldexp(1.0, -24) * sum_abs * 2.0;
    if (type == QUILL_TYPE_BF16) {
        tolerance += ldexp(1.0, -9) * sum_abs;
    }
    if (type == QUILL_TYPE_Q4_1 || type == QUILL_TYPE_Q5_1) {
        const quill_block_q8_1 *blocks = activation_row;
        for (int64_t b = 0; b < n / 32; b++) {
            float min;
            float max;
            block_range(w + 32 * b, 32, &min, &max);
            double offset_bound = fabs((double)min) + fabs((double)max);
            tolerance += 2.0 / 2048.0 * offset_bound * fabs(quill__load_fp16(blocks[b].s));
        }
    }
    return tolerance + 1e-30;
}

static void check_vec_dot(uint32_t type, int64_t n, rng *generator) {
    uint32_t activation_type = quill__vec_dot_type(type);
    float *w = quill__malloc_array((size_t)n, sizeof(float));
    float *x = quill__malloc_array((size_t)n, sizeof(float));
    float *w_dequantized = quill__malloc_array((size_t)n, sizeof(float));
    float *x_dequantized = quill__malloc_array((size_t)n, sizeof(float));
    void *w_row = quill__malloc(row_bytes_of(type, n));
    void *x_row = quill__malloc(row_bytes_of(activation_type, n));
    assert_non_null(w_row);
    assert_non_null(x_row);
    fill_random(generator, w, n, 32);
    fill_random(generator, x, n, 32);

    assert_int_equal(quill__quantize_row(type, w, w_row, n), QUILL_OK);
    assert_int_equal(quill__quantize_row(activation_type, x, x_row, n), QUILL_OK);
    assert_int_equal(quill__dequantize_row(type, w_row, w_dequantized, n), QUILL_OK);
    assert_int_equal(quill__dequantize_row(activation_type, x_row, x_dequantized, n), QUILL_OK);

    double exact = 0.0;
    for (int64_t i = 0; i < n; i++) {
        exact += (double)w_dequantized[i] * x_dequantized[i];
    }
    double got = quill__vec_dot(type, n, w_row, x_row);
    double tolerance = dot_tolerance(type, n, w_dequantized, x_dequantized, x_row);
    if (fabs(got - exact) > tolerance) {
        print_error("%s n=%lld: vec_dot=%.9g exact=%.9g tolerance=%g\n", quill_type_name(type),
                    (long long)n, got, exact, tolerance);
    }
    assert_true(fabs(got - exact) <= tolerance);

    quill__free(x_row);
    quill__free(w_row);
    quill__free(x_dequantized);
    quill__free(w_dequantized);
    quill__free(x);
    quill__free(w);
}

static void test_vec_dot_matches_dequantized(void **state) {
    (void)state;
    rng generator = {99};
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        int64_t block = block_size_of(weight_types[t]) > 32 ? 256 : 32;
        const int64_t n_blocks[] = {1, 2, 5, 16};
        for (size_t k = 0; k < 4; k++) {
            check_vec_dot(weight_types[t], n_blocks[k] * block, &generator);
        }
    }
}

/* Builds unit-scale rows whose dot is an exact integer below 2^24, so any error in the integer
 * part (a wrong nibble, bit or scale) shows as an exact mismatch. Weight blocks get d = dmin =
 * 1.0 and random levels and sub-block scales (all 6 or 8 bits); activation blocks get d = 1 and
 * levels in [-7, 7]. The largest case, Q6_K over 512 values, stays below 512 * 128 * 32 * 7 <
 * 2^24. The expected value is the dequantized integer dot. */
static void fill_unit_weights(uint32_t type, int64_t n, rng *generator, uint8_t *row) {
    size_t n_bytes = row_bytes_of(type, n);
    for (size_t i = 0; i < n_bytes; i++) {
        row[i] = (uint8_t)rng_next(generator);
    }
    const uint8_t one[2] = {0x00, 0x3c};
    size_t block_bytes = quill_type_traits_get(type)->block_bytes;
    for (size_t offset = 0; offset < n_bytes; offset += block_bytes) {
        uint8_t *block = row + offset;
        switch (type) {
        case QUILL_TYPE_Q4_0:
        case QUILL_TYPE_Q5_0:
        case QUILL_TYPE_Q8_0:
            memcpy(block, one, 2);
            break;
        case QUILL_TYPE_Q4_1:
        case QUILL_TYPE_Q5_1:
        case QUILL_TYPE_Q4_K:
        case QUILL_TYPE_Q5_K:
            memcpy(block, one, 2);
            memcpy(block + 2, one, 2);
            break;
        case QUILL_TYPE_Q6_K:
            memcpy(((quill_block_q6_k *)block)->d, one, 2);
            break;
        default:
            break;
        }
    }
}

static void fill_unit_activations(uint32_t type, int64_t n, rng *generator, uint8_t *row) {
    const uint8_t one[2] = {0x00, 0x3c};
    for (int64_t b = 0; b < n / block_size_of(type); b++) {
        if (type == QUILL_TYPE_Q8_K) {
            quill_block_q8_k *block = (quill_block_q8_k *)row + b;
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
        int8_t *qs;
        if (type == QUILL_TYPE_Q8_1) {
            quill_block_q8_1 *block = (quill_block_q8_1 *)row + b;
            memcpy(block->d, one, 2);
            qs = block->qs;
        } else {
            quill_block_q8_0 *block = (quill_block_q8_0 *)row + b;
            memcpy(block->d, one, 2);
            qs = block->qs;
        }
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            qs[j] = (int8_t)((int)(rng_next(generator) % 15) - 7);
            sum += qs[j];
        }
        if (type == QUILL_TYPE_Q8_1) {
            quill__store_fp16(((quill_block_q8_1 *)row + b)->s, (float)sum);
        }
    }
}

static void test_vec_dot_integer_sums_exact(void **state) {
    (void)state;
    rng generator = {2024};
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        uint32_t type = weight_types[t];
        uint32_t activation_type = quill__vec_dot_type(type);
        if (activation_type == QUILL_TYPE_F32) {
            continue;
        }
        int64_t n = 512;
        uint8_t *w_row = quill__malloc(row_bytes_of(type, n));
        uint8_t *x_row = quill__malloc(row_bytes_of(activation_type, n));
        float w[512];
        float x[512];
        assert_non_null(w_row);
        assert_non_null(x_row);
        for (int trial = 0; trial < 20; trial++) {
            fill_unit_weights(type, n, &generator, w_row);
            fill_unit_activations(activation_type, n, &generator, x_row);
            assert_int_equal(quill__dequantize_row(type, w_row, w, n), QUILL_OK);
            assert_int_equal(quill__dequantize_row(activation_type, x_row, x, n), QUILL_OK);
            double expected = 0.0;
            for (int i = 0; i < n; i++) {
                expected += (double)w[i] * x[i];
            }
            float got = quill__vec_dot(type, n, w_row, x_row);
            if ((double)got != expected) {
                print_error("%s trial %d: vec_dot=%.1f expected=%.1f\n", quill_type_name(type),
                            trial, got, expected);
            }
            assert_true((double)got == expected);
        }
        quill__free(x_row);
        quill__free(w_row);
    }
}

static void test_vec_dot_unsupported_type_is_nan(void **state) {
    (void)state;
    uint8_t row[84] = {0};
    assert_true(isnan(quill__vec_dot(QUILL_TYPE_Q2_K, 256, row, row)));
    assert_true(isnan(quill__vec_dot(1000, 256, row, row)));
}

/* ---- row API errors ---- */

static void test_quantize_row_rejects_unsupported_type(void **state) {
    (void)state;
    float x[256] = {0};
    uint8_t q[512];
    assert_int_equal(quill__quantize_row(QUILL_TYPE_Q2_K, x, q, 256), QUILL_ERR_UNSUPPORTED);
    assert_non_null(strstr(quill_error_message(), "Q2_K"));
    assert_int_equal(quill__dequantize_row(77, q, x, 256), QUILL_ERR_UNSUPPORTED);
    assert_non_null(strstr(quill_error_message(), "no kernels"));
}

static void test_quantize_row_rejects_partial_block(void **state) {
    (void)state;
    float x[64] = {0};
    uint8_t q[64];
    assert_int_equal(quill__quantize_row(QUILL_TYPE_Q4_0, x, q, 33), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "not a multiple"));
    assert_int_equal(quill__dequantize_row(QUILL_TYPE_Q4_K, q, x, 64), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "256"));
}

/* ---- matmul ---- */

typedef struct matmul_case {
    uint32_t type;
    int64_t n_rows;
    int64_t n_cols;
    int64_t x_stride; /* floats between activation rows, >= n_cols */
    int64_t y_stride; /* floats between output rows, >= n_rows */
    float *x;         /* f32 [64][x_stride] */
    quill_matrix weights;
    void *weight_data; /* [n_rows][row_bytes] */
} matmul_case;

enum { MATMUL_MAX_TOKENS = 64 };

static void matmul_case_init(matmul_case *test_case, uint32_t type, int64_t n_rows, int64_t n_cols,
                             rng *generator) {
    test_case->type = type;
    test_case->n_rows = n_rows;
    test_case->n_cols = n_cols;
    test_case->x_stride = n_cols + 3;
    test_case->y_stride = n_rows + 5;
    size_t row_bytes = row_bytes_of(type, n_cols);
    test_case->weight_data = quill__malloc(row_bytes * (size_t)n_rows);
    test_case->x =
        quill__malloc_array((size_t)(MATMUL_MAX_TOKENS * test_case->x_stride), sizeof(float));
    float *w = quill__malloc_array((size_t)n_cols, sizeof(float));
    assert_non_null(test_case->weight_data);
    assert_non_null(test_case->x);
    assert_non_null(w);
    for (int64_t r = 0; r < n_rows; r++) {
        fill_random(generator, w, n_cols, 32);
        assert_int_equal(quill__quantize_row(type, w,
                                             (char *)test_case->weight_data + (size_t)r * row_bytes,
                                             n_cols),
                         QUILL_OK);
    }
    fill_random(generator, test_case->x, MATMUL_MAX_TOKENS * test_case->x_stride, 32);
    quill__free(w);
    test_case->weights = (quill_matrix){
        .type = type,
        .n_rows = n_rows,
        .n_cols = n_cols,
        .data = test_case->weight_data,
        .row_bytes = row_bytes,
    };
}

static void matmul_case_release(matmul_case *test_case) {
    quill__free(test_case->x);
    quill__free(test_case->weight_data);
}

/* Runs quill__matmul for tokens [first, first + n_tokens) and returns the outputs in a new
 * buffer f32 [n_tokens][y_stride]; the padding after n_rows is filled with a sentinel. */
static float *run_matmul(const quill_kernel_table *table, quill_threadpool *pool,
                         const matmul_case *test_case, int64_t first, int64_t n_tokens) {
    size_t scratch_bytes = quill__matmul_scratch_bytes(&test_case->weights, n_tokens);
    void *scratch = quill__aligned_alloc(64, scratch_bytes > 0 ? scratch_bytes : 64);
    float *y = quill__malloc_array((size_t)(n_tokens * test_case->y_stride), sizeof(float));
    assert_non_null(scratch);
    assert_non_null(y);
    for (int64_t i = 0; i < n_tokens * test_case->y_stride; i++) {
        y[i] = -12345.0f;
    }
    quill__matmul_with_table(table, pool, &test_case->weights,
                             test_case->x + first * test_case->x_stride, test_case->x_stride,
                             n_tokens, y, test_case->y_stride, scratch);
    quill__free(scratch);
    return y;
}

/* Asserts that rows [0, n_tokens) of a equal rows [first, first + n_tokens) of b bit for bit. */
static void assert_rows_identical(const matmul_case *test_case, const float *a, const float *b,
                                  int64_t first, int64_t n_tokens) {
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *row_a = a + t * test_case->y_stride;
        const float *row_b = b + (first + t) * test_case->y_stride;
        assert_memory_equal(row_a, row_b, (size_t)test_case->n_rows * sizeof(float));
    }
}

static const int64_t matmul_n_rows = 37; /* not a multiple of any tile */

static void test_matmul_matches_vec_dot(void **state) {
    (void)state;
    rng generator = {5};
    const quill_kernel_table *table = quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF);
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        uint32_t type = weight_types[t];
        int64_t n_cols = block_size_of(type) > 32 ? 512 : 96;
        matmul_case test_case;
        matmul_case_init(&test_case, type, matmul_n_rows, n_cols, &generator);
        int64_t n_tokens = 9;
        float *y = run_matmul(table, NULL, &test_case, 0, n_tokens);

        uint32_t activation_type = table->types[type].vec_dot_type;
        void *activation = quill__malloc(row_bytes_of(activation_type, n_cols));
        assert_non_null(activation);
        for (int64_t token = 0; token < n_tokens; token++) {
            const float *x = test_case.x + token * test_case.x_stride;
            table->types[activation_type].quantize_row(x, activation, n_cols);
            for (int64_t r = 0; r < matmul_n_rows; r++) {
                const char *weight_row =
                    (const char *)test_case.weight_data + (size_t)r * test_case.weights.row_bytes;
                float expected = table->types[type].vec_dot(n_cols, weight_row, activation);
                assert_true(y[token * test_case.y_stride + r] == expected);
            }
            /* Padding past n_rows is left alone. */
            for (int64_t r = matmul_n_rows; r < test_case.y_stride; r++) {
                assert_true(y[token * test_case.y_stride + r] == -12345.0f);
            }
        }
        quill__free(activation);
        quill__free(y);
        matmul_case_release(&test_case);
    }
}

/* Checks that y[t] is bit-identical for n_tokens 64, 7 and 1, and for 1, 2 and 3 threads. */
static void check_matmul_invariance(const quill_kernel_table *table, quill_threadpool *pool_2,
                                    quill_threadpool *pool_3, uint32_t type, int64_t n_cols,
                                    rng *generator) {
    matmul_case test_case;
    matmul_case_init(&test_case, type, matmul_n_rows, n_cols, generator);
    float *all = run_matmul(table, NULL, &test_case, 0, MATMUL_MAX_TOKENS);

    float *seven = run_matmul(table, NULL, &test_case, 20, 7);
    assert_rows_identical(&test_case, seven, all, 20, 7);
    quill__free(seven);

    const int64_t singles[] = {0, 31, 32, 63};
    for (size_t k = 0; k < 4; k++) {
        float *single = run_matmul(table, NULL, &test_case, singles[k], 1);
        assert_rows_identical(&test_case, single, all, singles[k], 1);
        quill__free(single);
    }

    float *threads_2 = run_matmul(table, pool_2, &test_case, 0, MATMUL_MAX_TOKENS);
    assert_rows_identical(&test_case, threads_2, all, 0, MATMUL_MAX_TOKENS);
    quill__free(threads_2);
    float *threads_3 = run_matmul(table, pool_3, &test_case, 5, 13);
    assert_rows_identical(&test_case, threads_3, all, 5, 13);
    quill__free(threads_3);

    quill__free(all);
    matmul_case_release(&test_case);
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

static void test_matmul_batch_and_thread_invariant(void **state) {
    (void)state;
    rng generator = {77};
    quill_threadpool *pool_2 = create_pool(2);
    quill_threadpool *pool_3 = create_pool(3);
    const quill_kernel_table *table = quill__kernels_table();
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        int64_t n_cols = block_size_of(weight_types[t]) > 32 ? 256 : 64;
        check_matmul_invariance(table, pool_2, pool_3, weight_types[t], n_cols, &generator);
    }
    quill__threadpool_destroy(pool_3);
    quill__threadpool_destroy(pool_2);
}

/* Wide f32 rows make the activation groups smaller than the batch (32 tokens of 32 KB each), so
 * a 70-token batch is split into three groups; each output must still equal vec_dot. */
static void test_matmul_token_groups_invariant(void **state) {
    (void)state;
    enum { N_ROWS = 5, N_COLS = 8192, N_TOKENS = 70 };
    rng generator = {123};
    float *w = quill__malloc_array((size_t)N_ROWS * N_COLS, sizeof(float));
    float *x = quill__malloc_array((size_t)N_TOKENS * N_COLS, sizeof(float));
    float *y = quill__malloc_array((size_t)N_TOKENS * N_ROWS, sizeof(float));
    assert_non_null(w);
    assert_non_null(x);
    assert_non_null(y);
    fill_random(&generator, w, (int64_t)N_ROWS * N_COLS, 32);
    fill_random(&generator, x, (int64_t)N_TOKENS * N_COLS, 32);
    quill_matrix weights = {.type = QUILL_TYPE_F32, .n_rows = N_ROWS, .n_cols = N_COLS,
                            .data = w, .row_bytes = N_COLS * sizeof(float)};
    quill__matmul(NULL, &weights, x, N_COLS, N_TOKENS, y, N_ROWS, NULL);
    for (int t = 0; t < N_TOKENS; t++) {
        for (int r = 0; r < N_ROWS; r++) {
            float expected = quill__vec_dot(QUILL_TYPE_F32, N_COLS, w + (size_t)r * N_COLS,
                                            x + (size_t)t * N_COLS);
            assert_true(y[t * N_ROWS + r] == expected);
        }
    }
    quill__free(y);
    quill__free(x);
    quill__free(w);
}

static void test_matmul_invalid_weights_write_nan(void **state) {
    (void)state;
    uint8_t data[2 * 292] = {0};
    float x[2 * 256] = {0};
    float y[2 * 2];
    quill_matrix weights = {.type = QUILL_TYPE_Q8_K, .n_rows = 2, .n_cols = 256, .data = data,
                            .row_bytes = 292};
    quill__matmul(NULL, &weights, x, 256, 2, y, 2, NULL);
    for (int i = 0; i < 4; i++) {
        assert_true(isnan(y[i]));
    }

    /* A Q4_0 row of 100 values is not a whole number of 32-value blocks. */
    weights.type = QUILL_TYPE_Q4_0;
    weights.n_cols = 100;
    quill__matmul(NULL, &weights, x, 256, 2, y, 2, NULL);
    for (int i = 0; i < 4; i++) {
        assert_true(isnan(y[i]));
    }
}

/* Prepared activations and row ranges ([0, 5), [5, 22), [22, 37), with an empty and a clamped
 * range) give quill__matmul's outputs bit for bit, for decode and a batch. */
static void test_matmul_rows_match_matmul(void **state) {
    (void)state;
    rng generator = {909};
    const int64_t bounds[] = {0, 5, 5, 22, matmul_n_rows + 4};
    const int64_t token_counts[] = {1, 9};
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        uint32_t type = weight_types[t];
        int64_t n_cols = block_size_of(type) > 32 ? 256 : 96;
        matmul_case test_case;
        matmul_case_init(&test_case, type, matmul_n_rows, n_cols, &generator);
        for (size_t k = 0; k < 2; k++) {
            int64_t n_tokens = token_counts[k];
            float *expected = run_matmul(quill__kernels_table(), NULL, &test_case, 3, n_tokens);
            size_t scratch_bytes = quill__matmul_scratch_bytes(&test_case.weights, n_tokens);
            void *scratch = quill__aligned_alloc(64, scratch_bytes > 0 ? scratch_bytes : 64);
            float *y = quill__malloc_array((size_t)(n_tokens * test_case.y_stride), sizeof(float));
            assert_non_null(scratch);
            assert_non_null(y);
            for (int64_t i = 0; i < n_tokens * test_case.y_stride; i++) {
                y[i] = -12345.0f;
            }
            const float *x = test_case.x + 3 * test_case.x_stride;
            quill__matmul_prepare(&test_case.weights, x, test_case.x_stride, n_tokens, scratch);
            for (size_t b = 0; b + 1 < sizeof(bounds) / sizeof(bounds[0]); b++) {
                quill__matmul_rows(&test_case.weights, x, test_case.x_stride, n_tokens, scratch,
                                   bounds[b], bounds[b + 1], y, test_case.y_stride);
            }
            assert_memory_equal(y, expected,
                                (size_t)(n_tokens * test_case.y_stride) * sizeof(float));
            quill__free(y);
            quill__free(scratch);
            quill__free(expected);
        }
        matmul_case_release(&test_case);
    }
}

/* A weight type without a dot product gives NaN in the requested rows only. */
static void test_matmul_rows_invalid_weights_write_nan(void **state) {
    (void)state;
    uint8_t data[3 * 292] = {0};
    float x[256] = {0};
    float y[3] = {1.0f, 1.0f, 1.0f};
    quill_matrix weights = {.type = QUILL_TYPE_Q8_K, .n_rows = 3, .n_cols = 256, .data = data,
                            .row_bytes = 292};
    quill__matmul_prepare(&weights, x, 256, 1, NULL);
    quill__matmul_rows(&weights, x, 256, 1, NULL, 1, 2, y, 3);
    assert_true(y[0] == 1.0f);
    assert_true(isnan(y[1]));
    assert_true(y[2] == 1.0f);
}

static void test_matmul_scratch_bytes(void **state) {
    (void)state;
    quill_matrix weights = {.type = QUILL_TYPE_Q4_0, .n_rows = 8, .n_cols = 4096};
    /* 128 Q8_0 blocks of 34 bytes = 4352 bytes, then 12 bytes of prepared extras per block,
     * each part rounded up to 64 bytes. */
    assert_int_equal(quill__matmul_scratch_bytes(&weights, 3), 3 * (4352 + 1536));
    weights.n_cols = 64;
    assert_int_equal(quill__matmul_scratch_bytes(&weights, 2), 2 * (128 + 64));
    weights.type = QUILL_TYPE_F16;
    assert_int_equal(quill__matmul_scratch_bytes(&weights, 5), 0);
    weights.type = QUILL_TYPE_Q6_K;
    weights.n_cols = 512;
    assert_int_equal(quill__matmul_scratch_bytes(&weights, 1), 640);
}

/* ---- dispatch ---- */

static void test_kernels_init_default_ok(void **state) {
    (void)state;
    const char *forced = getenv("QUILL_KERNELS");
    if (forced != NULL && forced[0] != '\0') {
        skip();
    }
    assert_int_equal(quill__kernels_init(), QUILL_OK);
    assert_non_null(quill__kernels_variant_name());
    assert_non_null(quill__kernels_variant_table(QUILL_KERNEL_VARIANT_REF));
    assert_string_equal(quill__kernels_variant_label(QUILL_KERNEL_VARIANT_AVX512), "avx512");
}

/* Runs this program as a probe with QUILL_KERNELS=value and returns its output; the probe prints
 * "<status> <variant> <message>". */
static char *run_probe(const char *value, int *exit_status) {
    char self[4096];
    ssize_t length = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(length > 0);
    self[length] = '\0';
    char command[4400];
    int written = snprintf(command, sizeof(command), "QUILL_KERNELS='%s' '%s' %s", value, self,
                           PROBE_ARGUMENT);
    assert_true(written > 0 && (size_t)written < sizeof(command));
    char *output = quill_test_run_capture(command, exit_status);
    assert_non_null(output);
    return output;
}

static void test_kernels_forced_unknown_variant_fails(void **state) {
    (void)state;
    int exit_status = 0;
    char *output = run_probe("sse9", &exit_status);
    assert_int_equal(exit_status, 0);
    assert_non_null(strstr(output, "QUILL_ERR_INVALID_ARG"));
    assert_non_null(strstr(output, "'sse9' is not a kernel variant"));
    assert_non_null(strstr(output, " ref "));
    free(output);
}

static void test_kernels_forced_missing_variant_fails(void **state) {
    (void)state;
#if defined(QUILL_HAVE_X86)
    const char *missing = "neon";
#else
    const char *missing = "avx512";
#endif
    int exit_status = 0;
    char *output = run_probe(missing, &exit_status);
    assert_int_equal(exit_status, 0);
    assert_non_null(strstr(output, "QUILL_ERR_UNSUPPORTED"));
    assert_non_null(strstr(output, "cannot run that variant"));
    free(output);
}

static void test_kernels_forced_ref_selected(void **state) {
    (void)state;
    int exit_status = 0;
    char *output = run_probe("ref", &exit_status);
    assert_int_equal(exit_status, 0);
    assert_non_null(strstr(output, "QUILL_OK ref"));
    free(output);
}

/* The probe: initialize the kernels under the inherited QUILL_KERNELS and print the outcome. */
static int run_kernels_init_probe(void) {
    quill_status status = quill__kernels_init();
    char message[512];
    snprintf(message, sizeof(message), "%s", status == QUILL_OK ? "" : quill_error_message());
    print_message("%s %s %s\n", quill_status_name(status), quill__kernels_variant_name(), message);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], PROBE_ARGUMENT) == 0) {
        return run_kernels_init_probe();
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_round_trip_all_values),
        cmocka_unit_test(test_fp16_known_values),
        cmocka_unit_test(test_fp16_rounding_edges),
#if defined(__FLT16_MAX__)
        cmocka_unit_test(test_fp16_matches_compiler),
#endif
        cmocka_unit_test(test_bf16_round_trip_and_rounding),
        cmocka_unit_test(test_quantize_round_trip_within_bound),
        cmocka_unit_test(test_quantize_zero_block_is_zero),
        cmocka_unit_test(test_quantize_q8_0_exact_layout),
        cmocka_unit_test(test_quantize_q4_0_exact_layout),
        cmocka_unit_test(test_quantize_q8_k_sums),
        cmocka_unit_test(test_vec_dot_types),
        cmocka_unit_test(test_vec_dot_matches_dequantized),
        cmocka_unit_test(test_vec_dot_integer_sums_exact),
        cmocka_unit_test(test_vec_dot_unsupported_type_is_nan),
        cmocka_unit_test(test_quantize_row_rejects_unsupported_type),
        cmocka_unit_test(test_quantize_row_rejects_partial_block),
        cmocka_unit_test(test_matmul_matches_vec_dot),
        cmocka_unit_test(test_matmul_batch_and_thread_invariant),
        cmocka_unit_test(test_matmul_token_groups_invariant),
        cmocka_unit_test(test_matmul_invalid_weights_write_nan),
        cmocka_unit_test(test_matmul_rows_match_matmul),
        cmocka_unit_test(test_matmul_rows_invalid_weights_write_nan),
        cmocka_unit_test(test_matmul_scratch_bytes),
        cmocka_unit_test(test_kernels_init_default_ok),
        cmocka_unit_test(test_kernels_forced_unknown_variant_fails),
        cmocka_unit_test(test_kernels_forced_missing_variant_fails),
        cmocka_unit_test(test_kernels_forced_ref_selected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
