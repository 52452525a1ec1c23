/*
 * The kernel dispatch table: one set of function pointers per tensor type, filled once per
 * process for the best kernel variant the CPU supports (or the one QUILL_KERNELS forces). Every
 * caller of the kernels.h entry points goes through it. Tables are immutable after
 * initialization: safe from any thread.
 */
#ifndef QUILL_KERNELS_DISPATCH_H
#define QUILL_KERNELS_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

typedef enum quill_kernel_variant {
    QUILL_KERNEL_VARIANT_REF = 0, /* portable scalar C */
    QUILL_KERNEL_VARIANT_AVX2,    /* x86-64 AVX2 + FMA + F16C */
    QUILL_KERNEL_VARIANT_AVX512,  /* x86-64 AVX-512 F/BW/VL/DQ + VNNI */
    QUILL_KERNEL_VARIANT_NEON,    /* AArch64 NEON */
    QUILL_KERNEL_VARIANT_COUNT,
} quill_kernel_variant;

/* Converts n elements (a multiple of the block size) of a row to f32. */
typedef void (*quill_kernel_dequantize_fn)(const void *src, float *dst, int64_t n);
/* Quantizes n f32 values (a multiple of the block size) into a row. */
typedef void (*quill_kernel_quantize_fn)(const float *src, void *dst, int64_t n);
/* Returns the dot product of one weight row and one activation row of n elements. */
typedef float (*quill_kernel_vec_dot_fn)(int64_t n, const void *weights, const void *activations);
/* Computes a tile: y[t * y_stride + r] = vec_dot(n, weight row r, activation row t) for
 * r < n_rows, t < n_tokens, with results bit-identical to the type's vec_dot, so that tiling
 * never changes a value. Rows are weight_row_bytes / activation_row_bytes apart. */
typedef void (*quill_kernel_gemm_fn)(int64_t n, const void *weights, size_t weight_row_bytes,
                                     int64_t n_rows, const void *activations,
                                     size_t activation_row_bytes, int64_t n_tokens, float *y,
                                     int64_t y_stride);

typedef struct quill_kernel_type_ops {
    uint32_t vec_dot_type;                     /* activation type of vec_dot */
    quill_kernel_dequantize_fn dequantize_row; /* NULL when the type has no kernels */
    quill_kernel_quantize_fn quantize_row;     /* NULL when the type has no kernels */
    quill_kernel_vec_dot_fn vec_dot;           /* NULL for activation-only types */
    quill_kernel_gemm_fn gemm;                 /* NULL: quill__matmul loops over vec_dot */
    /* Tiles of packed weights (kernels/packed.h): weights point at a row group, n_rows is a
     * multiple of 8, activations are rows of vec_dot_type (Q8_0 rows with their prepared extras,
     * or Q8_K rows). Results equal vec_dot on the same rows unpacked, bit for bit. NULL: the type
     * is never packed. */
    quill_kernel_gemm_fn gemm_packed;
} quill_kernel_type_ops;

typedef struct quill_kernel_table {
    quill_kernel_variant variant;
    const char *name;                              /* "ref", "avx2", "avx512", "neon" */
    quill_kernel_type_ops types[QUILL_TYPE_COUNT]; /* indexed by quill_type */
} quill_kernel_table;

/* Returns the selected table (initializing on first use). Borrowed: valid for the process. */
const quill_kernel_table *quill__kernels_table(void);

/* Returns the table of a given variant, or NULL when this CPU or build cannot run it. For tests
 * and benchmarks that compare variants. Borrowed: valid for the process. */
const quill_kernel_table *quill__kernels_variant_table(quill_kernel_variant variant);

/* Returns the variant's name ("ref", "avx2", ...). */
const char *quill__kernels_variant_label(quill_kernel_variant variant);

/* As quill__matmul (kernels.h) but with an explicit table, so tests can compare variants. */
void quill__matmul_with_table(const quill_kernel_table *table, quill_threadpool *pool,
                              const quill_matrix *weights, const float *x, int64_t x_stride,
                              int64_t n_tokens, float *y, int64_t y_stride, void *scratch);

/* Fills a table with the reference kernels (ref/table_ref.c). ISA variants start from it and
 * replace what they accelerate. */
void quill__kernel_table_fill_ref(quill_kernel_table *table);

/* Fill a table with the AVX2 kernels (avx2/table_avx2.c) or the AVX-512 kernels
 * (avx512/table_avx512.c; has_bf16 enables the AVX512_BF16 dot). Call only on CPUs that have
 * the features, because the functions use them. */
void quill__kernel_table_fill_avx2(quill_kernel_table *table);
/* Fills a table with the NEON kernels (neon/table_neon.c); built on AArch64 only. */
void quill__kernel_table_fill_neon(quill_kernel_table *table);
void quill__kernel_table_fill_avx512(quill_kernel_table *table, bool has_bf16);

#if defined(QUILL_HAVE_X86)
/* Returns true when the CPU has the F16C half-precision conversion instructions. */
bool quill__cpu_has_f16c(void);
#endif

#endif
