/*
 * The AVX2 entries of the dispatch table: the reference kernels, with the types that have AVX2
 * kernels replaced.
 */
#include "kernels/dispatch.h"

void quill__kernel_table_fill_avx2(quill_kernel_table *table) {
    quill__kernel_table_fill_ref(table);
    table->variant = QUILL_KERNEL_VARIANT_AVX2;
    table->name = "avx2";
}
