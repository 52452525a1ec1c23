/*
 * AVX-512 dot products of the K-quants. The code is avx2/dot_k_impl.h, built here with AVX-512
 * flags, which gives larger tiles (32 vector registers). The sub-block scales are applied to
 * int16 pair sums, so these kernels keep maddubs instead of VNNI.
 */
#include "kernels/avx512/kernels_avx512.h"

#define QUILL_X86_USE_VNNI 1
#define QUILL_X86_NAME(stem) stem##_avx512
#include "kernels/avx2/dot_k_impl.h"
