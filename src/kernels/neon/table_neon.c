/*
 * The NEON entries of the dispatch table: the reference table with every dot product and the
 * activation quantizers (Q8_0, Q8_1, Q8_K) replaced by their NEON versions. Activation types,
 * weight quantizers and dequantizers stay the reference ones. Every weight type with a packed
 * layout (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) has packed tiles (gemm_packed), so the
 * model loader repacks those weights into row groups. The table takes the SDOT build of the
 * tiles where the CPU has the dot-product extension, else the build's own. F32, F16 and BF16
 * weights have no tiles, and matmul calls their dot product per (row, token).
 */
#include "kernels/dispatch.h"

#include <stdbool.h>

#if defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "kernels/neon/kernels_neon.h"

/* Returns true when the CPU has SDOT. Only Linux reports it here (HWCAP_ASIMDDP). Elsewhere
 * only a build that targets the extension uses it, through the build's own tiles. */
static bool cpu_has_dotprod(void) {
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    return false;
#endif
}

void quill__kernel_table_fill_neon(quill_kernel_table *table) {
    quill__kernel_table_fill_ref(table);
    table->variant = QUILL_KERNEL_VARIANT_NEON;
    table->name = "neon";
    table->types[QUILL_TYPE_F32].vec_dot = quill__dot_f32_f32_neon;
    table->types[QUILL_TYPE_F16].vec_dot = quill__dot_f16_f32_neon;
    table->types[QUILL_TYPE_BF16].vec_dot = quill__dot_bf16_f32_neon;
    table->types[QUILL_TYPE_Q4_0].vec_dot = quill__dot_q4_0_q8_0_neon;
    table->types[QUILL_TYPE_Q4_1].vec_dot = quill__dot_q4_1_q8_1_neon;
    table->types[QUILL_TYPE_Q5_0].vec_dot = quill__dot_q5_0_q8_0_neon;
    table->types[QUILL_TYPE_Q5_1].vec_dot = quill__dot_q5_1_q8_1_neon;
    table->types[QUILL_TYPE_Q8_0].vec_dot = quill__dot_q8_0_q8_0_neon;
    table->types[QUILL_TYPE_Q4_K].vec_dot = quill__dot_q4_k_q8_k_neon;
    table->types[QUILL_TYPE_Q5_K].vec_dot = quill__dot_q5_k_q8_k_neon;
    table->types[QUILL_TYPE_Q6_K].vec_dot = quill__dot_q6_k_q8_k_neon;
    table->types[QUILL_TYPE_Q8_0].quantize_row = quill__quantize_q8_0_neon;
    table->types[QUILL_TYPE_Q8_1].quantize_row = quill__quantize_q8_1_neon;
    table->types[QUILL_TYPE_Q8_K].quantize_row = quill__quantize_q8_k_neon;
    table->types[QUILL_TYPE_Q4_0].gemm_packed = quill__gemm_packed_q4_0_q8_0_neon;
    table->types[QUILL_TYPE_Q4_1].gemm_packed = quill__gemm_packed_q4_1_q8_1_neon;
    table->types[QUILL_TYPE_Q5_0].gemm_packed = quill__gemm_packed_q5_0_q8_0_neon;
    table->types[QUILL_TYPE_Q5_1].gemm_packed = quill__gemm_packed_q5_1_q8_1_neon;
    table->types[QUILL_TYPE_Q8_0].gemm_packed = quill__gemm_packed_q8_0_q8_0_neon;
    table->types[QUILL_TYPE_Q4_K].gemm_packed = quill__gemm_packed_q4_k_q8_k_neon;
    table->types[QUILL_TYPE_Q5_K].gemm_packed = quill__gemm_packed_q5_k_q8_k_neon;
    table->types[QUILL_TYPE_Q6_K].gemm_packed = quill__gemm_packed_q6_k_q8_k_neon;
    if (cpu_has_dotprod()) {
        table->types[QUILL_TYPE_Q4_0].gemm_packed = quill__gemm_packed_q4_0_q8_0_neon_dotprod;
        table->types[QUILL_TYPE_Q4_1].gemm_packed = quill__gemm_packed_q4_1_q8_1_neon_dotprod;
        table->types[QUILL_TYPE_Q5_0].gemm_packed = quill__gemm_packed_q5_0_q8_0_neon_dotprod;
        table->types[QUILL_TYPE_Q5_1].gemm_packed = quill__gemm_packed_q5_1_q8_1_neon_dotprod;
        table->types[QUILL_TYPE_Q8_0].gemm_packed = quill__gemm_packed_q8_0_q8_0_neon_dotprod;
        table->types[QUILL_TYPE_Q4_K].gemm_packed = quill__gemm_packed_q4_k_q8_k_neon_dotprod;
        table->types[QUILL_TYPE_Q5_K].gemm_packed = quill__gemm_packed_q5_k_q8_k_neon_dotprod;
        table->types[QUILL_TYPE_Q6_K].gemm_packed = quill__gemm_packed_q6_k_q8_k_neon_dotprod;
    }
}
