/*
 * Variant selection for the ops of ops.h that have ISA variants (attention), following the
 * choice the kernel dispatch table made once per process. Safe from any thread: the choice is
 * made under pthread_once and never changes.
 */
#include "kernels/ops.h"

#include <pthread.h>

#include "kernels/dispatch.h"

typedef void (*attention_head_fn)(const float *q, int32_t head_dim,
                                  const quill_attention_keys *keys, int64_t n_keys, float scale,
                                  float *scores, float *out);

static attention_head_fn attention_head = quill__attention_head_ref; /* set once */
static pthread_once_t select_once = PTHREAD_ONCE_INIT;

static void select_variants(void) {
    const quill_kernel_table *table = quill__kernels_table();
    bool is_x86_simd = table->variant == QUILL_KERNEL_VARIANT_AVX2 ||
                       table->variant == QUILL_KERNEL_VARIANT_AVX512;
    if (is_x86_simd && quill__attention_has_avx2()) {
        attention_head = quill__attention_head_avx2;
    }
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
/* Builds without the x86 kernel folder never select this; it exists so the symbol resolves. */
void quill__attention_head_avx2(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                                int64_t n_keys, float scale, float *scores, float *out) {
    quill__attention_head_ref(q, head_dim, keys, n_keys, scale, scores, out);
}
#endif

void quill__attention_head(const float *q, int32_t head_dim, const quill_attention_keys *keys,
                           int64_t n_keys, float scale, float *scores, float *out) {
    pthread_once(&select_once, select_variants);
    attention_head(q, head_dim, keys, n_keys, scale, scores, out);
}
