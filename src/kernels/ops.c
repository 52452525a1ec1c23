/*
 * Variant selection for the ops of ops.h that have ISA variants (attention, the SwiGLU gate), following the
 * choice the kernel dispatch table made once per process. Safe from any thread: the choice is
 * made under pthread_once and never changes.
 */
#include "kernels/ops.h"

#include <pthread.h>

#include "kernels/dispatch.h"
#if defined(QUILL_HAVE_NEON)
#include "kernels/neon/kernels_neon.h"
#endif

typedef void (*attention_heads_fn)(const float *q, int32_t n_heads, int64_t q_stride,
                                   int32_t head_dim, const quill_attention_keys *keys,
                                   int64_t n_keys, float scale, float *scores, float *out,
                                   int64_t out_stride);

typedef void (*silu_mul_fn)(const float *gate, const float *up, float *out, int64_t n);

static attention_heads_fn attention_heads = quill__attention_heads_ref; /* set once */
static silu_mul_fn silu_mul = quill__silu_mul_ref;                       /* set once */
static pthread_once_t select_once = PTHREAD_ONCE_INIT;

static void select_variants(void) {
    const quill_kernel_table *table = quill__kernels_table();
    bool is_x86_simd = table->variant == QUILL_KERNEL_VARIANT_AVX2 ||
                       table->variant == QUILL_KERNEL_VARIANT_AVX512;
    if (is_x86_simd && quill__attention_has_avx2()) {
        attention_heads = quill__attention_heads_avx2;
        silu_mul = quill__silu_mul_avx2;
    }
#if defined(QUILL_HAVE_NEON)
    if (table->variant == QUILL_KERNEL_VARIANT_NEON) {
        attention_heads = quill__attention_heads_neon;
    }
#endif
}

bool quill__attention_has_avx2(void) {
#if defined(QUILL_HAVE_X86)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           quill__cpu_has_f16c();
#else
    return false;
#endif
}

#if !defined(QUILL_HAVE_X86)
/* Builds without the x86 kernel folder never select these; they exist so the symbols
 * resolve. */
void quill__attention_head_avx2(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                                int64_t n_keys, float scale, float *scores, float *out) {
    quill__attention_head_ref(q, head_dim, keys, n_keys, scale, scores, out);
}

void quill__attention_heads_avx2(const float *q, int32_t n_heads, int64_t q_stride,
                                 int32_t head_dim, const quill_attention_keys *keys,
                                 int64_t n_keys, float scale, float *scores, float *out,
                                 int64_t out_stride) {
    quill__attention_heads_ref(q, n_heads, q_stride, head_dim, keys, n_keys, scale, scores, out,
                               out_stride);
}

void quill__silu_mul_avx2(const float *gate, const float *up, float *out, int64_t n) {
    quill__silu_mul_ref(gate, up, out, n);
}
#endif

void quill__silu_mul(const float *gate, const float *up, float *out, int64_t n) {
    pthread_once(&select_once, select_variants);
    silu_mul(gate, up, out, n);
}

void quill__attention_head(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                           int64_t n_keys, float scale, float *scores, float *out) {
    pthread_once(&select_once, select_variants);
    attention_heads(q, 1, head_dim, head_dim, keys, n_keys, scale, scores, out, head_dim);
}

void quill__attention_heads(const float *q, int32_t n_heads, int64_t q_stride, int32_t head_dim,
                            const quill_attention_keys *keys, int64_t n_keys, float scale,
                            float *scores, float *out, int64_t out_stride) {
    pthread_once(&select_once, select_variants);
    /* Each head's result depends only on its own query, so splitting a large group into calls
     * of at most QUILL_ATTENTION_MAX_HEADS heads changes no bits. */
    for (int32_t first = 0; first < n_heads; first += QUILL_ATTENTION_MAX_HEADS) {
        int32_t n_part = n_heads - first;
        if (n_part > QUILL_ATTENTION_MAX_HEADS) {
            n_part = QUILL_ATTENTION_MAX_HEADS;
        }
        attention_heads(q + first * q_stride, n_part, q_stride, head_dim, keys, n_keys, scale,
                        scores, out + first * out_stride, out_stride);
    }
}
