/*
 * The AVX2 entries of the dispatch table: the reference kernels, with the dot products, gemm
 * tiles, packed tiles and activation quantizers that have AVX2 versions replaced.
 */
#include "kernels/dispatch.h"

#include "kernels/avx2/kernels_avx2.h"

static void set_dot(quill_kernel_table *table, quill_type type, quill_kernel_vec_dot_fn vec_dot,
                    quill_kernel_gemm_fn gemm) {
    table->types[type].vec_dot = vec_dot;
    table->types[type].gemm = gemm;
}

void quill__kernel_table_fill_avx2(quill_kernel_table *table) {
    quill__kernel_table_fill_ref(table);
    table->variant = QUILL_KERNEL_VARIANT_AVX2;
    table->name = "avx2";

    set_dot(table, QUILL_TYPE_F32, quill__dot_f32_f32_avx2, quill__gemm_f32_f32_avx2);
    set_dot(table, QUILL_TYPE_F16, quill__dot_f16_f32_avx2, quill__gemm_f16_f32_avx2);
    set_dot(table, QUILL_TYPE_BF16, quill__dot_bf16_f32_avx2, quill__gemm_bf16_f32_avx2);
    set_dot(table, QUILL_TYPE_Q4_0, quill__dot_q4_0_q8_0_avx2, quill__gemm_q4_0_q8_0_avx2);
    set_dot(table, QUILL_TYPE_Q4_1, quill__dot_q4_1_q8_1_avx2, quill__gemm_q4_1_q8_1_avx2);
    set_dot(table, QUILL_TYPE_Q5_0, quill__dot_q5_0_q8_0_avx2, quill__gemm_q5_0_q8_0_avx2);
    set_dot(table, QUILL_TYPE_Q5_1, quill__dot_q5_1_q8_1_avx2, quill__gemm_q5_1_q8_1_avx2);
    set_dot(table, QUILL_TYPE_Q8_0, quill__dot_q8_0_q8_0_avx2, quill__gemm_q8_0_q8_0_avx2);
    set_dot(table, QUILL_TYPE_Q4_K, quill__dot_q4_k_q8_k_avx2, quill__gemm_q4_k_q8_k_avx2);
    set_dot(table, QUILL_TYPE_Q5_K, quill__dot_q5_k_q8_k_avx2, quill__gemm_q5_k_q8_k_avx2);
    set_dot(table, QUILL_TYPE_Q6_K, quill__dot_q6_k_q8_k_avx2, quill__gemm_q6_k_q8_k_avx2);

    /* Packed Q8_0 stays row-major: its levels q + 128 would saturate maddubs (gemm_packed.c). */
    table->types[QUILL_TYPE_Q4_0].gemm_packed = quill__gemm_packed_q4_0_q8_0_avx2;
    table->types[QUILL_TYPE_Q4_1].gemm_packed = quill__gemm_packed_q4_1_q8_1_avx2;
    table->types[QUILL_TYPE_Q5_0].gemm_packed = quill__gemm_packed_q5_0_q8_0_avx2;
    table->types[QUILL_TYPE_Q5_1].gemm_packed = quill__gemm_packed_q5_1_q8_1_avx2;
    table->types[QUILL_TYPE_Q4_K].gemm_packed = quill__gemm_packed_q4_k_q8_k_avx2;
    table->types[QUILL_TYPE_Q5_K].gemm_packed = quill__gemm_packed_q5_k_q8_k_avx2;
    table->types[QUILL_TYPE_Q6_K].gemm_packed = quill__gemm_packed_q6_k_q8_k_avx2;

    table->types[QUILL_TYPE_Q8_0].quantize_row = quill__quantize_q8_0_avx2;
    table->types[QUILL_TYPE_Q8_1].quantize_row = quill__quantize_q8_1_avx2;
    table->types[QUILL_TYPE_Q8_K].quantize_row = quill__quantize_q8_k_avx2;

    table->types[QUILL_TYPE_F16].dequantize_row = quill__dequantize_f16_avx2;
    table->types[QUILL_TYPE_F16].quantize_row = quill__quantize_f16_avx2;
    table->types[QUILL_TYPE_BF16].dequantize_row = quill__dequantize_bf16_avx2;
    table->types[QUILL_TYPE_BF16].quantize_row = quill__quantize_bf16_avx2;
}
