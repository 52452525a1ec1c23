/*
 * The reference entries of the dispatch table: which scalar kernel serves each tensor type and
 * which activation type its dot product takes.
 */
#include "kernels/dispatch.h"

#include <string.h>

#include "kernels/ref/kernels_ref.h"

static void set_type(quill_kernel_table *table, quill_type type, quill_type vec_dot_type,
                     quill_kernel_dequantize_fn dequantize_row,
                     quill_kernel_quantize_fn quantize_row, quill_kernel_vec_dot_fn vec_dot) {
    quill_kernel_type_ops *ops = &table->types[type];
    ops->vec_dot_type = vec_dot_type;
    ops->dequantize_row = dequantize_row;
    ops->quantize_row = quantize_row;
    ops->vec_dot = vec_dot;
    ops->gemm = NULL;
}

void quill__kernel_table_fill_ref(quill_kernel_table *table) {
    memset(table, 0, sizeof(*table));
    table->variant = QUILL_KERNEL_VARIANT_REF;
    table->name = "ref";

    set_type(table, QUILL_TYPE_F32, QUILL_TYPE_F32, quill__dequantize_f32_ref,
             quill__quantize_f32_ref, quill__dot_f32_f32_ref);
    set_type(table, QUILL_TYPE_F16, QUILL_TYPE_F32, quill__dequantize_f16_ref,
             quill__quantize_f16_ref, quill__dot_f16_f32_ref);
    set_type(table, QUILL_TYPE_BF16, QUILL_TYPE_F32, quill__dequantize_bf16_ref,
             quill__quantize_bf16_ref, quill__dot_bf16_f32_ref);
    set_type(table, QUILL_TYPE_Q4_0, QUILL_TYPE_Q8_0, quill__dequantize_q4_0_ref,
             quill__quantize_q4_0_ref, quill__dot_q4_0_q8_0_ref);
    set_type(table, QUILL_TYPE_Q4_1, QUILL_TYPE_Q8_1, quill__dequantize_q4_1_ref,
             quill__quantize_q4_1_ref, quill__dot_q4_1_q8_1_ref);
    set_type(table, QUILL_TYPE_Q5_0, QUILL_TYPE_Q8_0, quill__dequantize_q5_0_ref,
             quill__quantize_q5_0_ref, quill__dot_q5_0_q8_0_ref);
    set_type(table, QUILL_TYPE_Q5_1, QUILL_TYPE_Q8_1, quill__dequantize_q5_1_ref,
             quill__quantize_q5_1_ref, quill__dot_q5_1_q8_1_ref);
    set_type(table, QUILL_TYPE_Q8_0, QUILL_TYPE_Q8_0, quill__dequantize_q8_0_ref,
             quill__quantize_q8_0_ref, quill__dot_q8_0_q8_0_ref);
    /* Q8_1 and Q8_K are activation formats: no dot product takes them as weights. */
    set_type(table, QUILL_TYPE_Q8_1, QUILL_TYPE_Q8_1, quill__dequantize_q8_1_ref,
             quill__quantize_q8_1_ref, NULL);
    set_type(table, QUILL_TYPE_Q8_K, QUILL_TYPE_Q8_K, quill__dequantize_q8_k_ref,
             quill__quantize_q8_k_ref, NULL);
    set_type(table, QUILL_TYPE_Q4_K, QUILL_TYPE_Q8_K, quill__dequantize_q4_k_ref,
             quill__quantize_q4_k_ref, quill__dot_q4_k_q8_k_ref);
    set_type(table, QUILL_TYPE_Q5_K, QUILL_TYPE_Q8_K, quill__dequantize_q5_k_ref,
             quill__quantize_q5_k_ref, quill__dot_q5_k_q8_k_ref);
    set_type(table, QUILL_TYPE_Q6_K, QUILL_TYPE_Q8_K, quill__dequantize_q6_k_ref,
             quill__quantize_q6_k_ref, quill__dot_q6_k_q8_k_ref);
}
