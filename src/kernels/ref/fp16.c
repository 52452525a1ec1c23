/*
 * IEEE binary16 and bfloat16 conversions, exact in both directions: narrowing rounds to nearest
 * with ties to even, keeps subnormals, maps overflow to infinity and keeps NaN a (quiet) NaN.
 * Also the row conversions of the plain types F32, F16 and BF16. Stateless.
 */
#include "kernels/kernels.h"

#include <string.h>

#include "kernels/ref/kernels_ref.h"

float quill__fp16_to_fp32(uint16_t value) {
    uint32_t sign = (uint32_t)(value & 0x8000) << 16;
    uint32_t exponent = (value >> 10) & 0x1f;
    uint32_t mantissa = value & 0x3ff;
    uint32_t bits;

    if (exponent == 0x1f) {
        bits = sign | 0x7f800000 | (mantissa << 13);
    } else if (exponent != 0) {
        /* Rebias the exponent from 15 to 127. */
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        /* Subnormal mantissa * 2^-24: shift the leading one into the implicit bit. */
        uint32_t shifts = 0;
        while ((mantissa & 0x400) == 0) {
            mantissa <<= 1;
            shifts++;
        }
        bits = sign | ((113 - shifts) << 23) | ((mantissa & 0x3ff) << 13);
    }

    float result;
    memcpy(&result, &bits, sizeof(result));
    return result;
}

/* Shifts value right by shift bits (1..31), rounding to nearest with ties to even. */
static uint32_t shift_right_round_even(uint32_t value, uint32_t shift) {
    uint32_t result = value >> shift;
    uint32_t remainder = value & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (remainder > half || (remainder == half && (result & 1) != 0)) {
        result++;
    }
    return result;
}

uint16_t quill__fp32_to_fp16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof(bits));
    uint32_t sign = (bits >> 16) & 0x8000;
    uint32_t magnitude = bits & 0x7fffffff;

    /* NaN stays NaN: set the quiet bit and keep the top payload bits. */
    if (magnitude > 0x7f800000) {
        return (uint16_t)(sign | 0x7e00 | ((magnitude >> 13) & 0x3ff));
    }
    /* 65520 (0x477ff000) is halfway between the largest half, 65504, and 2^16; ties go to the
     * even neighbour, which is infinity. */
    if (magnitude >= 0x477ff000) {
        return (uint16_t)(sign | 0x7c00);
    }
    /* Normal halves: rebias the exponent and round off 13 mantissa bits. A carry out of the
     * mantissa correctly bumps the exponent. */
    if (magnitude >= 0x38800000) {
        return (uint16_t)(sign | shift_right_round_even(magnitude - 0x38000000, 13));
    }
    /* Below 2^-25 everything rounds to zero; 2^-25 itself ties to the even zero. */
    if (magnitude <= 0x33000000) {
        return (uint16_t)sign;
    }
    /* Subnormal halves count units of 2^-24: (1.m * 2^(e - 127)) / 2^-24. The result may round
     * up to 0x400, the smallest normal, which is the correct encoding. */
    uint32_t exponent = magnitude >> 23;
    uint32_t mantissa = (magnitude & 0x7fffff) | 0x800000;
    return (uint16_t)(sign | shift_right_round_even(mantissa, 126 - exponent));
}

float quill__bf16_to_fp32(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof(result));
    return result;
}

uint16_t quill__fp32_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof(bits));
    if ((bits & 0x7fffffff) > 0x7f800000) {
        return (uint16_t)((bits >> 16) | 0x40);
    }
    /* Round to nearest even on the low 16 bits; overflow carries into infinity. */
    uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
    return (uint16_t)((bits + rounding) >> 16);
}

void quill__dequantize_f32_ref(const void *src, float *dst, int64_t n) {
    memmove(dst, src, (size_t)n * sizeof(float));
}

void quill__quantize_f32_ref(const float *src, void *dst, int64_t n) {
    memmove(dst, src, (size_t)n * sizeof(float));
}

void quill__dequantize_f16_ref(const void *src, float *dst, int64_t n) {
    const uint8_t *bytes = src;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = quill__fp16_to_fp32((uint16_t)(bytes[2 * i] | (bytes[2 * i + 1] << 8)));
    }
}

void quill__quantize_f16_ref(const float *src, void *dst, int64_t n) {
    uint8_t *bytes = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t half = quill__fp32_to_fp16(src[i]);
        bytes[2 * i] = (uint8_t)(half & 0xff);
        bytes[2 * i + 1] = (uint8_t)(half >> 8);
    }
}

void quill__dequantize_bf16_ref(const void *src, float *dst, int64_t n) {
    const uint8_t *bytes = src;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = quill__bf16_to_fp32((uint16_t)(bytes[2 * i] | (bytes[2 * i + 1] << 8)));
    }
}

void quill__quantize_bf16_ref(const float *src, void *dst, int64_t n) {
    uint8_t *bytes = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t half = quill__fp32_to_bf16(src[i]);
        bytes[2 * i] = (uint8_t)(half & 0xff);
        bytes[2 * i + 1] = (uint8_t)(half >> 8);
    }
}
