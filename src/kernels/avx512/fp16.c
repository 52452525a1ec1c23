/*
 * AVX-512 row conversions of F16 and BF16. The code is avx2/fp16_impl.h, built here with
 * AVX-512 flags.
 */
#include "kernels/avx512/kernels_avx512.h"

#define QUILL_X86_USE_VNNI 1
#define QUILL_X86_NAME(stem) stem##_avx512
#include "kernels/avx2/fp16_impl.h"
