/*
 * CPU feature detection and the dispatch table, plus the kernels.h entry points that route
 * through it. Detection and table filling run once per process under pthread_once; afterwards
 * every table is read-only, so all functions here are safe from any thread.
 */
#include "kernels/dispatch.h"

#if defined(QUILL_HAVE_X86)
#include <cpuid.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static pthread_once_t dispatch_once = PTHREAD_ONCE_INIT;
/* Written only inside dispatch_once, read-only afterwards. */
static quill_kernel_table variant_tables[QUILL_KERNEL_VARIANT_COUNT];
static bool variant_available[QUILL_KERNEL_VARIANT_COUNT];
static const quill_kernel_table *selected_table;
static quill_status selection_status;
static char selection_message[256];

static const char *const variant_labels[QUILL_KERNEL_VARIANT_COUNT] = {
    [QUILL_KERNEL_VARIANT_REF] = "ref",
    [QUILL_KERNEL_VARIANT_AVX2] = "avx2",
    [QUILL_KERNEL_VARIANT_AVX512] = "avx512",
    [QUILL_KERNEL_VARIANT_NEON] = "neon",
};

#if defined(QUILL_HAVE_X86)
bool quill__cpu_has_f16c(void) {
    /* CPUID leaf 1, ECX bit 29. Read directly because clang before version 15 does not accept
     * "f16c" in __builtin_cpu_supports. */
    unsigned int eax = 0;
    unsigned int ebx = 0;
    unsigned int ecx = 0;
    unsigned int edx = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) {
        return false;
    }
    return (ecx & (1u << 29)) != 0;
}
#endif

/* Marks the variants this CPU and build can run and fills their tables. */
static void detect_variants(void) {
    quill__kernel_table_fill_ref(&variant_tables[QUILL_KERNEL_VARIANT_REF]);
    variant_available[QUILL_KERNEL_VARIANT_REF] = true;

#if defined(QUILL_HAVE_X86)
    __builtin_cpu_init();
    bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    quill__cpu_has_f16c();
    bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    bool has_avx512_bf16 = has_avx512 && __builtin_cpu_supports("avx512bf16");
    if (has_avx2) {
        quill__kernel_table_fill_avx2(&variant_tables[QUILL_KERNEL_VARIANT_AVX2]);
        variant_available[QUILL_KERNEL_VARIANT_AVX2] = true;
    }
    if (has_avx512) {
        quill__kernel_table_fill_avx512(&variant_tables[QUILL_KERNEL_VARIANT_AVX512],
                                        has_avx512_bf16);
        variant_available[QUILL_KERNEL_VARIANT_AVX512] = true;
    }
#endif
#if defined(QUILL_HAVE_NEON)
    /* NEON is part of the AArch64 base architecture. */
    quill__kernel_table_fill_neon(&variant_tables[QUILL_KERNEL_VARIANT_NEON]);
    variant_available[QUILL_KERNEL_VARIANT_NEON] = true;
#endif
}

/* Stores the names of the available variants, space-separated, in text. */
static void list_available(char *text, size_t n_bytes) {
    size_t used = 0;
    text[0] = '\0';
    for (int v = 0; v < QUILL_KERNEL_VARIANT_COUNT; v++) {
        if (!variant_available[v] || used >= n_bytes) {
            continue;
        }
        int written =
            snprintf(text + used, n_bytes - used, "%s%s", used > 0 ? " " : "", variant_labels[v]);
        if (written > 0) {
            used += (size_t)written;
        }
    }
}

static void select_table(void) {
    detect_variants();

    /* Default: the most capable variant available. */
    selected_table = &variant_tables[QUILL_KERNEL_VARIANT_REF];
    for (int v = QUILL_KERNEL_VARIANT_COUNT - 1; v >= 0; v--) {
        if (variant_available[v]) {
            selected_table = &variant_tables[v];
            break;
        }
    }
    selection_status = QUILL_OK;

    const char *forced = getenv("QUILL_KERNELS");
    if (forced == NULL || forced[0] == '\0' || strcmp(forced, "auto") == 0) {
        return;
    }
    char available[64];
    list_available(available, sizeof(available));
    for (int v = 0; v < QUILL_KERNEL_VARIANT_COUNT; v++) {
        if (strcmp(forced, variant_labels[v]) != 0) {
            continue;
        }
        if (variant_available[v]) {
            selected_table = &variant_tables[v];
            return;
        }
        selected_table = &variant_tables[QUILL_KERNEL_VARIANT_REF];
        selection_status = QUILL_ERR_UNSUPPORTED;
        snprintf(selection_message, sizeof(selection_message),
                 "kernels: QUILL_KERNELS=%s but this CPU or build cannot run that variant; "
                 "unset QUILL_KERNELS or set it to one of: %s",
                 forced, available);
        return;
    }
    selected_table = &variant_tables[QUILL_KERNEL_VARIANT_REF];
    selection_status = QUILL_ERR_INVALID_ARG;
    snprintf(selection_message, sizeof(selection_message),
             "kernels: QUILL_KERNELS='%.32s' is not a kernel variant; expected auto, ref, avx2, "
             "avx512 or neon (available here: %s)",
             forced, available);
}

quill_status quill__kernels_init(void) {
    pthread_once(&dispatch_once, select_table);
    if (selection_status != QUILL_OK) {
        return quill_error_set(selection_status, "%s", selection_message);
    }
    return QUILL_OK;
}

const quill_kernel_table *quill__kernels_table(void) {
    pthread_once(&dispatch_once, select_table);
    return selected_table;
}

const quill_kernel_table *quill__kernels_variant_table(quill_kernel_variant variant) {
    pthread_once(&dispatch_once, select_table);
    if ((int)variant < 0 || variant >= QUILL_KERNEL_VARIANT_COUNT || !variant_available[variant]) {
        return NULL;
    }
    return &variant_tables[variant];
}

const char *quill__kernels_variant_label(quill_kernel_variant variant) {
    if ((int)variant < 0 || variant >= QUILL_KERNEL_VARIANT_COUNT) {
        return "unknown";
    }
    return variant_labels[variant];
}

const char *quill__kernels_variant_name(void) {
    return quill__kernels_table()->name;
}

/* Returns the ops of a type with kernels, or NULL after setting an error message. */
static const quill_kernel_type_ops *type_ops_checked(uint32_t type, int64_t n,
                                                     quill_status *status) {
    const quill_type_traits *traits = quill_type_traits_get(type);
    const quill_kernel_type_ops *ops = NULL;
    if (traits != NULL) {
        ops = &quill__kernels_table()->types[type];
    }
    if (ops == NULL || ops->dequantize_row == NULL) {
        *status = quill_error_set(QUILL_ERR_UNSUPPORTED,
                                  "kernels: tensor type %u (%s) has no kernels; convert the "
                                  "model to a supported type such as Q8_0 or F16",
                                  (unsigned)type, quill_type_name(type));
        return NULL;
    }
    if (n < 0 || n % traits->block_elements != 0) {
        *status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                  "kernels: row of %lld elements is not a multiple of the %s "
                                  "block size %lld",
                                  (long long)n, traits->name, (long long)traits->block_elements);
        return NULL;
    }
    *status = QUILL_OK;
    return ops;
}

quill_status quill__dequantize_row(uint32_t type, const void *src, float *dst, int64_t n) {
    quill_status status;
    const quill_kernel_type_ops *ops = type_ops_checked(type, n, &status);
    if (ops != NULL) {
        ops->dequantize_row(src, dst, n);
    }
    return status;
}

quill_status quill__quantize_row(uint32_t type, const float *src, void *dst, int64_t n) {
    quill_status status;
    const quill_kernel_type_ops *ops = type_ops_checked(type, n, &status);
    if (ops != NULL) {
        ops->quantize_row(src, dst, n);
    }
    return status;
}

uint32_t quill__vec_dot_type(uint32_t weight_type) {
    if (quill_type_traits_get(weight_type) == NULL) {
        return QUILL_TYPE_F32;
    }
    return quill__kernels_table()->types[weight_type].vec_dot_type;
}

float quill__vec_dot(uint32_t weight_type, int64_t n, const void *weight_row,
                     const void *activation_row) {
    if (quill_type_traits_get(weight_type) == NULL) {
        return NAN;
    }
    quill_kernel_vec_dot_fn vec_dot = quill__kernels_table()->types[weight_type].vec_dot;
    if (vec_dot == NULL) {
        return NAN;
    }
    return vec_dot(n, weight_row, activation_row);
}
