/*
 * AVX-512 activation quantization to Q8_0, Q8_1 and Q8_K. The code is avx2/quant_q8_impl.h,
 * built here with AVX-512 flags; the bytes equal the reference quantizers' output.
 */
#include "kernels/avx512/kernels_avx512.h"

#define QUILL_X86_USE_VNNI 1
#define QUILL_X86_NAME(stem) stem##_avx512
#include "kernels/avx2/quant_q8_impl.h"
