/*
 * The NEON entries of the dispatch table: the reference kernels, with the dot products that
 * have NEON versions replaced. No gemm tiles: matmul calls the dot product per (row, token).
 */
#include "kernels/dispatch.h"

#include "kernels/neon/kernels_neon.h"

void quill__kernel_table_fill_neon(quill_kernel_table *table) {
    quill__kernel_table_fill_ref(table);
    table->variant = QUILL_KERNEL_VARIANT_NEON;
    table->name = "neon";
    table->types[QUILL_TYPE_F32].vec_dot = quill__dot_f32_f32_neon;
    table->types[QUILL_TYPE_F16].vec_dot = quill__dot_f16_f32_neon;
    table->types[QUILL_TYPE_Q4_0].vec_dot = quill__dot_q4_0_q8_0_neon;
    table->types[QUILL_TYPE_Q8_0].vec_dot = quill__dot_q8_0_q8_0_neon;
}
