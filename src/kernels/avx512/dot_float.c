/*
 * AVX-512 dot products of F32, F16 and BF16 rows. The code is avx2/dot_float_impl.h, built here
 * with AVX-512 flags, which gives larger tiles (32 vector registers).
 */
#include "kernels/avx512/kernels_avx512.h"

#define QUILL_X86_USE_VNNI 1
#define QUILL_X86_NAME(stem) stem##_avx512
#include "kernels/avx2/dot_float_impl.h"
